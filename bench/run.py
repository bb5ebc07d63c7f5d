"""The benchmark: every caching method on the trained tiny models, side by side in one process.

    python -m bench.run            # full sweep (`make bench`): bench/results/full.json, table, plots
    python -m bench.run --quick    # the quick version (`make demo`), under two minutes on 2 CPU cores

The full sweep samples the deep models (FLUX.1's 19 + 38 blocks, Wan 2.1 1.3B's 30 blocks), a
deep model with rougher features (``wan_rough``) with euler at 28 or 30 and 50 steps, the Qwen-layout
one at 12, 20, 28 and 50 steps, where block 0 moves from a lot to little per step, and the deep ones at 50 steps
with euler_ancestral, which injects fresh noise every step; the quick one samples the 6-block models
at 20 steps. Each point samples every digit class for a few seeds through the node's own
adapter (nodes/runtime.py) and compares the result with the unpatched model on the same noise:
block evaluations saved, speedup in time, peak cache memory, PSNR (over the batch, and the worst, 10th
percentile and mean image), SSIM and how often the
nearest-class-mean judge still reads the intended digit. Time is the process's CPU time on one
thread (the same as wall time on an unshared core): the machines this runs on are shared, and
another process's load would otherwise decide the speedups. Even CPU time drifts on a shared
machine, so the uncached sample is timed again every ``RETIME_EVERY`` points through a run and
each speedup divides the median of those timings by the point's own. After the sweep the README's parts
are rendered (bench/report.py); `make bench` then has the node default's gate take its exam
(bench/gate_exam.py) and renders them once every part is done.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

import cgtaylor_cache.core as core  # (registered by bench/__init__.py)
from cgtaylor_cache.nodes.node import DEFAULTS

from .digits import CLASSES, TEXT_TOKENS, NearestMeanClassifier, decode
from .gate import gate_report
from .gpu import Size, hidden_shapes
from .measures import per_image_psnr, psnr, ssim, tails, tensor_bytes
from .methods import METHODS, Curve, Point, documented, documented_settings, node_default, sweep
from .report import TABLE_HEAD, point_row, publish
from .runs import (CFG, FULL_FAMILIES, FULL_RUNS, LATENT_SHAPE, QUICK_FAMILIES, QUICK_RUNS, RESULTS, SEEDS, References,
                   Setup, cpu_timed, distinct_notes, forecast_pattern, last_block_states, rounded,
                   run_key)
from .trace import trace
from .weights import LAYOUT, SHIFT, build, training_info, weights_path

COMPARE_AT = (2.5, 3.0)  # block-evaluation ratios at which CG-Taylor and TaylorSeer are compared
RETIME_EVERY = 16  # points between two timings of the uncached sample
STREAMS = 2  # cfg > 1: cond and uncond each keep their own caches
RECOMMEND_PSNR = 40.0  # dB against no cache: differences this small are invisible in these samples
FAST_PSNR = 35.0  # the faster documented setting's bound
SKIPS_NOTHING = 1.01  # block ratios up to this are runs that computed (nearly) every block
# What the results file keeps: measured floats to this many significant digits (the report prints at most
# four), the sample latents (drawn as images) to fewer, and per point everything but its gate record and
# notes, which only the node default's and the documented settings' are read for.
SIGNIFICANT = 7
SAMPLE_DIGITS = 4
POINT_DETAIL = ("gate", "notes")


def evaluate(setup: Setup, point: Point, references: References, judge) -> dict:
    patcher, runtime, reports = setup.patched(point)
    peak = [0]

    def watch_memory(step, x):
        peak[0] = max(peak[0], tensor_bytes(runtime.engine.cached_tensors()))

    seeds = list(references.outputs)
    outputs, seconds = {}, {}
    for seed in seeds:
        outputs[seed], seconds[seed] = cpu_timed(lambda: setup.sample(patcher, seed, callback=watch_memory))
    test = torch.cat([decode(outputs[s]) for s in seeds])
    reference = torch.cat([decode(references.outputs[s]) for s in seeds])
    labels = setup.labels.repeat(len(seeds))
    calls = sum(r.calls for r in reports)
    blocks_run, blocks_total = sum(r.blocks_run for r in reports), sum(r.blocks_total for r in reports)
    return {
        "method": point.method, "label": point.label, "settings": point.settings,
        "block_ratio": blocks_total / blocks_run, "forecast_share": sum(r.forecast_calls for r in reports) / calls,
        "sample_seconds": sum(seconds.values()) / len(seeds),
        "psnr": psnr(test, reference), "images": tails(per_image_psnr(test, reference)), "ssim": ssim(test, reference),
        "accuracy": float((judge(test) == labels).float().mean()),
        "cache_peak_bytes": peak[0],
        "cache_hidden_states": peak[0] / (last_block_values(setup) * 4 * CLASSES * STREAMS),
        "notes": distinct_notes(reports),
        "gate": gate_report(reports),
        "pattern": forecast_pattern(reports[0].to_json()["steps"]),
        "outputs": outputs[seeds[0]],
    }


def last_block_values(setup: Setup) -> int:
    """Values in one sample's last-block output: the unit of cache memory, so the cache column
    reads directly against the bound of (first order + 1) + (last order + 1)."""
    params = setup.patcher.get_model_object("diffusion_model").params
    layout = LAYOUT[setup.family]
    size = Size(setup.family, layout, params, LATENT_SHAPE[layout], TEXT_TOKENS, setup.steps)
    return math.prod(hidden_shapes(size)[1])


def _relative(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    return float((predicted - actual).abs().mean() / actual.abs().mean())


def trajectory_smoothness(setup: Setup) -> dict:
    """How much the last block's output moves per step, and how well a linear forecast follows it."""
    states = last_block_states(setup)
    change = [_relative(states[i + 1], states[i]) for i in range(len(states) - 1)]
    linear = [_relative(2 * states[i] - states[i - 1], states[i + 1]) for i in range(1, len(states) - 1)]
    return {"step_change": sum(change) / len(change), "linear_forecast_error": sum(linear) / len(linear)}


def roughness(setup: Setup, order: int = DEFAULTS["last_block_order"]) -> dict:
    """How far the last block's forecast misses one step ahead, per step of this run: the node default's
    order through the steps before, on the uncached trajectory. Few steps or rough features: far."""
    states = last_block_states(setup)
    errors = []
    for i in range(order + 1, len(states)):
        forecaster = core.TaylorForecaster(order)
        for j in range(i - order - 1, i):
            forecaster.update(states[j], j)
        errors.append(_relative(forecaster.predict(i), states[i]))
    return {"order": order, "min": min(errors), "median": statistics.median(errors), "max": max(errors)}


def evidence_of_training(setup: Setup, references: dict[int, torch.Tensor], judge) -> dict:
    """Trained features move a lot per step but predictably; random ones barely move and not predictably."""
    decoded = torch.cat([decode(references[s]) for s in references])
    read = judge(decoded) == setup.labels.repeat(len(references))
    evidence = {"accuracy_no_cache": int(read.sum()) / len(read)}  # exact: 9 of 10 is 0.9
    for name, model in (("trained", None), ("random_init", _random_flow(setup.family))):
        other = setup if model is None else replace(Setup.load(setup.family, model=model), steps=setup.steps)
        smooth = trajectory_smoothness(other)
        smooth["linear_error_over_change"] = smooth["linear_forecast_error"] / smooth["step_change"]
        evidence[name] = smooth
    return evidence


def _random_flow(family: str):
    from .standin.sampling import FlowModel
    from .weights import MULTIPLIER

    torch.manual_seed(0)
    return FlowModel(build(family).eval().requires_grad_(False), MULTIPLIER[family], SHIFT[family])


def psnr_at(points: list[dict], method: str, ratio: float) -> float | None:
    """Best PSNR the method reaches with at least ``ratio`` times fewer block evaluations."""
    reaching = [p["psnr"] for p in points if p["method"] == method and p["block_ratio"] >= ratio]
    return max(reaching) if reaching else None


def _others(points: list[dict]) -> list[dict]:
    """The other methods' points that skip something: one that skips nothing is the uncached model."""
    return [p for p in points if p["method"] != "cg-taylor" and p["block_ratio"] > SKIPS_NOTHING]


def unmatched(points: list[dict]) -> list[dict]:
    """The other methods' points that no CG-Taylor point matches or beats on both axes."""
    ours = [p for p in points if p["method"] == "cg-taylor"]
    return [o for o in _others(points)
            if not any(p["block_ratio"] >= o["block_ratio"] and p["psnr"] >= o["psnr"] for p in ours)]


def dominance(points: list[dict]) -> float:
    """Share of the other methods' points that some CG-Taylor point matches or beats on both axes."""
    others = _others(points)
    return 1 - len(unmatched(points)) / len(others) if others else 1.0


def recommend(points: list[dict], min_psnr: float = RECOMMEND_PSNR) -> dict | None:
    """The CG-Taylor setting that skips the most blocks while staying at least ``min_psnr`` dB from no cache."""
    good = [p for p in points if p["method"] == "cg-taylor" and p["psnr"] >= min_psnr]
    return max(good, key=lambda p: (p["block_ratio"], p["psnr"]), default=None)


BRIEF = ("label", "settings", "block_ratio", "psnr", "images", "ssim", "wall_speedup")


def _brief(point: dict | None) -> dict | None:
    return None if point is None else {k: point[k] for k in BRIEF if k in point}


def best_reaching(points: list[dict], method: str, ratio: float) -> dict | None:
    """The method's point with the best PSNR among those with at least ``ratio`` times fewer block evaluations."""
    reaching = [p for p in points if p["method"] == method and p["block_ratio"] >= ratio]
    return max(reaching, key=lambda p: (p["psnr"], p["block_ratio"]), default=None)


def summarise(points: list[dict], default: dict) -> dict:
    at = {f"{r:g}": {m: psnr_at(points, m, r) for m in METHODS} for r in COMPARE_AT}
    gap = {r: None if v["cg-taylor"] is None or v["fixed-interval"] is None else v["cg-taylor"] - v["fixed-interval"]
           for r, v in at.items()}
    # Every method at the node default's speed: its best point that skips at least as many blocks.
    at_default = {m: _brief(best_reaching(points + [default], m, default["block_ratio"])) for m in METHODS}
    return {
        "recommended": _brief(recommend(points)),
        "fastest_at_35db": _brief(recommend(points, FAST_PSNR)),
        "psnr_at": at,
        "cg_minus_taylorseer_db": gap,
        "at_default": at_default,
        # a default that forecast nothing is as exact as the best point at its speed (inf - inf is no gap)
        "default_below_best_db": 0.0 if at_default["cg-taylor"]["psnr"] == default["psnr"]
        else at_default["cg-taylor"]["psnr"] - default["psnr"],
        "cg_dominates_share": dominance(points),
        "unmatched": [f"{p['method']} {p['label']} ({p['block_ratio']:.2f}x, {p['psnr']:.1f} dB)" for p in unmatched(points)],
    }


def table(points: list[dict]) -> str:
    return "\n".join([TABLE_HEAD, *(point_row(p) for p in points)])


def run_family(family: str, runs, quick: bool, seeds, judge, checkpoint) -> dict:
    """Every sweep point of every (sampler, steps) run of one model; ``checkpoint`` gets the family's
    results after each run, so that a sweep cut short keeps what it finished."""
    base = Setup.load(family)
    data = {"weights": weights_path(family).name, "blocks": len(base.layout.keys), "training": training_info(family),
            "runs": {}}
    euler_steps = [steps for sampler, steps in runs if sampler == "euler"]
    for sampler, steps in runs:
        setup = replace(base, steps=steps, sampler=sampler)
        started = time.process_time()
        references = References.sample(setup, seeds)
        default_point = node_default()
        evaluated: list[dict] = []

        def measure(point: Point) -> dict:
            if evaluated and len(evaluated) % RETIME_EVERY == 0:
                references.retime(setup)
            evaluated.append(evaluate(setup, point, references, judge))
            return evaluated[-1]

        points = [p for item in sweep(quick, sampler)
                  for p in (trace(item, measure) if isinstance(item, Curve) else [measure(item)])]

        def measured(point: Point) -> dict:
            """The sweep's measurement of ``point`` when it has one, else a new one."""
            found = (p for p in points if p["method"] == point.method and p["settings"] == point.settings)
            return next(found, None) or measure(point)

        default = measured(default_point)
        entry = {"sampler": sampler, "steps": steps, "points": points, "default": default,
                 "roughness": roughness(setup)}
        if sampler == "euler" and steps in (min(euler_steps), max(euler_steps)):  # the fewest and the most
            entry["samples"] = {"no_cache": references.outputs[seeds[0]].tolist(),
                                "cg_taylor_default": default["outputs"].tolist()}
        if not quick:  # the README's documented choices for this kind of sampler
            entry |= {name: measured(documented(settings)) for name, settings in documented_settings(sampler).items()}
        uncached_seconds = references.seconds()  # once every point, the documented one too, is measured
        entry |= {"uncached_seconds": round(uncached_seconds, 3), "uncached_timings": len(references.timings)}
        for p in evaluated:
            p.pop("outputs", None)
            p["wall_speedup"] = uncached_seconds / p["sample_seconds"]
        entry["summary"] = summarise(points, default)
        if sampler == "euler" and steps == max(euler_steps):  # at the most steps it is run with
            data["evidence"] = evidence_of_training(setup, references.outputs, judge)
        entry["cpu_seconds"] = round(time.process_time() - started, 1)
        data["runs"][run_key(sampler, steps)] = entry
        print(f"\n## {family} ({data['blocks']} blocks, {sampler} {steps} steps, cfg {CFG}, {len(seeds)} seed(s) x "
              f"{CLASSES} digits, {entry['cpu_seconds']} CPU s)")
        print(table(points))
        print(point_row(default, "node default"))
        print(json.dumps(entry["summary"], indent=1), flush=True)
        checkpoint(family, data)
    return data


def run(quick: bool, families: list[str], out: Path, only: list[str] | None = None) -> dict:
    """Every family's runs (or those whose key is in ``only``); ``out`` holds the results merged with the
    file's so far after every run."""
    torch.manual_seed(0)
    mode = "quick" if quick else "full"
    seeds = list(range(SEEDS[mode]))
    judge = NearestMeanClassifier()
    report = {
        "mode": mode, "cfg": CFG, "seeds": len(seeds), "classes": CLASSES, "timing": "process CPU time, 1 thread",
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
        "families": {},
    }

    def checkpoint(family: str, data: dict) -> None:
        report["families"][family] = data
        with locked(out):
            out.write_text(json.dumps(stored(merged(report, out)), indent=1))

    for family in families:
        runs = QUICK_RUNS if quick else FULL_RUNS.get(family, (("euler", 50),))
        runs = [r for r in runs if only is None or run_key(*r) in only]
        run_family(family, runs, quick, seeds, judge, checkpoint)
    return merged(report, out)


@contextmanager
def locked(path: Path):
    """``path`` to read and rewrite alone: `make bench` sweeps its families in three processes."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def stored(report: dict) -> dict:
    """What a results file keeps of ``report``: what bench.report, the plots and a later partial run read
    (a point's gate record and notes only on the node default and the documented settings, the other
    points' figures and forecast pattern), every float to ``SIGNIFICANT`` digits and the sample latents
    to ``SAMPLE_DIGITS``. Every `make bench` rewrites bench/results/full.json: kept small, it adds little
    to the repository's history (3.6 MB, 0.4 MB compressed, where everything measured took 29 MB)."""

    def kept(entry: dict) -> dict:
        runs = {key: {**run, "points": [{k: v for k, v in p.items() if k not in POINT_DETAIL} for p in run["points"]],
                      **({"samples": rounded(run["samples"], SAMPLE_DIGITS)} if "samples" in run else {})}
                for key, run in entry["runs"].items()}
        return {**entry, "runs": runs}

    return rounded({**report, "families": {family: kept(entry) for family, entry in report["families"].items()}},
                    SIGNIFICANT)


def merged(report: dict, path: Path) -> dict:
    """A run of some families' runs updates those in the results file and keeps the others that the sweep
    still defines (a run dropped from FULL_RUNS goes: its figures were measured with another node)."""
    if not path.is_file():
        return report
    previous = json.loads(path.read_text())
    if previous.get("mode") != report["mode"] or previous.get("seeds") != report["seeds"]:
        return report
    families = dict(previous.get("families", {}))
    for family, data in report["families"].items():
        swept = {run_key(*r) for r in FULL_RUNS.get(family, ())} | set(data["runs"])
        kept = {key: run for key, run in families.get(family, {}).get("runs", {}).items() if key in swept}
        families[family] = {**families.get(family, {}), **data, "runs": {**kept, **data["runs"]}}
    return {**report, "families": families}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small sweep, 2 seeds (what `make demo` runs)")
    parser.add_argument("--families", nargs="*", help=f"default: {QUICK_FAMILIES} with --quick, else {FULL_FAMILIES}")
    parser.add_argument("--runs", nargs="*", help="only these runs, e.g. euler-50 (default: every run of the families)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-report", action="store_true",
                        help="leave the README and docs/ as they are (`make bench` renders them once every part is done)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # times are CPU times of one thread
    families = args.families or list(QUICK_FAMILIES if args.quick else FULL_FAMILIES)
    started = time.perf_counter()
    name = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    report = run(args.quick, families, path, args.runs)
    from .plots import pareto_plot, samples_plot

    with locked(path):
        report = merged(report, path)  # with what other processes wrote meanwhile
        for data in report["families"].values():  # kept families are summarised by the same rules
            for entry in data["runs"].values():
                entry["summary"] = summarise(entry["points"], entry["default"])
        path.write_text(json.dumps(stored(report), indent=1))
    if args.quick:  # the full run's tables are bench.report's (table_full.md, with the README)
        (args.out / f"table_{name}.md").write_text("\n\n".join(
            f"### {f}, {r['sampler']} {r['steps']} steps\n\n{table(r['points'])}"
            for f, d in report["families"].items() for r in d["runs"].values()) + "\n")
    pareto_plot(report, args.out / f"pareto_{name}.png")
    samples_plot(report, args.out / f"samples_{name}.png")
    print(f"\nwrote {args.out}/{name}.json, table_{name}.md, pareto_{name}.png, samples_{name}.png "
          f"in {time.perf_counter() - started:.0f} s")
    if not args.quick and args.out == RESULTS and not args.no_report:
        publish()


if __name__ == "__main__":
    main()
