"""The benchmark: every caching method on the trained tiny models, side by side in one process.

    python -m bench.run            # full sweep (`make bench`): bench/results/full.json, table, plots
    python -m bench.run --quick    # the quick version (`make demo`), under two minutes on 2 CPU cores

Each point samples every digit class for several seeds through the node's own adapter
(nodes/runtime.py) and compares the result with the unpatched model on the same noise:
block evaluations saved, wall-time speedup (median of runs interleaved with uncached runs),
peak cache memory, PSNR, SSIM and how often the nearest-class-mean judge still reads the
intended digit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import cgtaylor_cache  # noqa: F401  (registered by bench/__init__.py)
from cgtaylor_cache.nodes.families import BlockLayout, detect
from cgtaylor_cache.nodes.runtime import CacheRuntime, install

from .digits import CLASSES, TEXT_TOKENS, NearestMeanClassifier, Prompts, decode
from .gpu import Size, hidden_shapes
from .measures import median, psnr, ssim, tensor_bytes
from .methods import Point, node_default, sweep
from .report import TABLE_HEAD, point_row, update_readme
from .standin.patcher import ModelPatcher
from .standin.sampling import Cond, sample
from .weights import FAMILIES, SHIFT, build, load_trained, weights_path

RESULTS = Path(__file__).resolve().parent / "results"
STEPS, CFG = 20, 3.0
LATENT_SHAPE = {"flux": (4, 8, 8), "wan": (4, 3, 8, 8)}
COMPARE_AT = 2.5  # the block-evaluation ratio at which CG-Taylor and TaylorSeer are compared
STREAMS = 2  # cfg > 1: cond and uncond each keep their own caches
RECOMMEND_PSNR = 40.0  # dB against no cache: differences this small are invisible in these samples


@dataclass
class Setup:
    family: str
    patcher: ModelPatcher
    layout: BlockLayout
    positive: Cond
    negative: Cond
    labels: torch.Tensor

    @classmethod
    def load(cls, family: str, model=None) -> Setup:
        flow = model or load_trained(family)
        prompts, labels = Prompts(), torch.arange(CLASSES)
        positive = Cond(prompts.inputs(labels, family))
        negative = Cond(prompts.inputs(torch.full_like(labels, CLASSES), family))
        return cls(family, ModelPatcher(flow), detect(flow.diffusion_model), positive, negative, labels)

    def noise(self, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn((CLASSES, *LATENT_SHAPE[self.family]), generator=generator)

    def sample(self, patcher: ModelPatcher, seed: int, cfg: float = CFG, callback=None) -> torch.Tensor:
        return sample(patcher, self.noise(seed), self.positive, self.negative, cfg=cfg, steps=STEPS,
                      shift=SHIFT[self.family], callback=callback)

    def patched(self, point: Point) -> tuple[ModelPatcher, CacheRuntime, list]:
        reports: list = []
        clone = self.patcher.clone()
        runtime = CacheRuntime(point.new_engine, self.layout, reports.append)
        install(clone, runtime)
        return clone, runtime, reports


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def evaluate(setup: Setup, point: Point, references: dict[int, torch.Tensor], judge, repeats: int) -> dict:
    patcher, runtime, reports = setup.patched(point)
    peak = [0]

    def watch_memory(step, x):
        peak[0] = max(peak[0], tensor_bytes(runtime.engine.cached_tensors()))

    seeds = list(references)
    outputs, speedups = {}, []
    for repeat in range(repeats):  # interleaved with uncached runs, so drifts in machine load hit both alike
        uncached = timed(lambda: setup.sample(setup.patcher, seeds[0]))
        started = time.perf_counter()
        outputs[seeds[0]] = setup.sample(patcher, seeds[0], callback=watch_memory)
        speedups.append(uncached / (time.perf_counter() - started))
    del reports[1:]  # the repeats ran the same seed again: count it once
    for seed in seeds[1:]:
        outputs[seed] = setup.sample(patcher, seed, callback=watch_memory)
    test = torch.cat([decode(outputs[s]) for s in seeds])
    reference = torch.cat([decode(references[s]) for s in seeds])
    labels = setup.labels.repeat(len(seeds))
    calls = sum(r.calls for r in reports)
    blocks_run, blocks_total = sum(r.blocks_run for r in reports), sum(r.blocks_total for r in reports)
    return {
        "method": point.method, "label": point.label, "settings": point.settings,
        "block_ratio": blocks_total / blocks_run, "forecast_share": sum(r.forecast_calls for r in reports) / calls,
        "wall_speedup": median(speedups), "psnr": psnr(test, reference), "ssim": ssim(test, reference),
        "accuracy": float((judge(test) == labels).float().mean()),
        "cache_peak_bytes": peak[0],
        "cache_hidden_states": peak[0] / (last_block_values(setup) * 4 * CLASSES * STREAMS),
        "notes": sorted({n for r in reports for n in r.notes}),
        "outputs": outputs[seeds[0]],
    }


def last_block_values(setup: Setup) -> int:
    """Values in one sample's last-block output: the unit of cache memory, so the cache column
    reads directly against the bound of (first order + 1) + (last order + 1)."""
    params = setup.patcher.get_model_object("diffusion_model").params
    size = Size(setup.family, setup.family, params, LATENT_SHAPE[setup.family], TEXT_TOKENS, STEPS)
    return math.prod(hidden_shapes(size)[1])


def trajectory_smoothness(setup: Setup) -> dict:
    """How much the last block's output moves per step, and how well a linear forecast follows it."""
    states: list[torch.Tensor] = []
    patcher = setup.patcher.clone()

    def record(args, extra):
        out = extra["original_block"](args)
        states.append(out["img"].clone())
        return out

    patcher.set_model_patch_replace(record, "dit", *setup.layout.last)
    setup.sample(patcher, seed=0, cfg=1.0)
    rel = lambda a, b: float((a - b).abs().mean() / b.abs().mean())  # noqa: E731
    change = [rel(states[i + 1], states[i]) for i in range(len(states) - 1)]
    linear = [rel(2 * states[i] - states[i - 1], states[i + 1]) for i in range(1, len(states) - 1)]
    return {"step_change": sum(change) / len(change), "linear_forecast_error": sum(linear) / len(linear)}


def evidence_of_training(setup: Setup, references: dict[int, torch.Tensor], judge) -> dict:
    """Trained features move a lot per step but predictably; random ones barely move and not predictably."""
    decoded = torch.cat([decode(references[s]) for s in references])
    evidence = {"accuracy_no_cache": float((judge(decoded) == setup.labels.repeat(len(references))).float().mean())}
    for name, model in (("trained", None), ("random_init", _random_flow(setup.family))):
        smooth = trajectory_smoothness(setup if model is None else Setup.load(setup.family, model=model))
        smooth["linear_error_over_change"] = smooth["linear_forecast_error"] / smooth["step_change"]
        evidence[name] = smooth
    return evidence


def _random_flow(family: str):
    from .standin.sampling import FlowModel
    from .weights import MULTIPLIER

    torch.manual_seed(0)
    return FlowModel(build(family).eval().requires_grad_(False), MULTIPLIER[family])


def psnr_at(points: list[dict], method: str, ratio: float) -> float | None:
    """Best PSNR the method reaches with at least ``ratio`` times fewer block evaluations."""
    reaching = [p["psnr"] for p in points if p["method"] == method and p["block_ratio"] >= ratio]
    return max(reaching) if reaching else None


def dominance(points: list[dict]) -> float:
    """Share of the other methods' points that some CG-Taylor point matches or beats on both axes."""
    ours = [p for p in points if p["method"] == "cg-taylor"]
    others = [p for p in points if p["method"] != "cg-taylor"]
    beaten = [o for o in others if any(p["block_ratio"] >= o["block_ratio"] and p["psnr"] >= o["psnr"] for p in ours)]
    return len(beaten) / len(others) if others else 1.0


def recommend(points: list[dict], min_psnr: float = RECOMMEND_PSNR) -> dict | None:
    """The CG-Taylor setting that skips the most blocks while staying at least ``min_psnr`` dB from no cache."""
    good = [p for p in points if p["method"] == "cg-taylor" and p["psnr"] >= min_psnr]
    return max(good, key=lambda p: (p["block_ratio"], p["psnr"]), default=None)


def summarise(points: list[dict]) -> dict:
    ours, theirs = psnr_at(points, "cg-taylor", COMPARE_AT), psnr_at(points, "fixed-interval", COMPARE_AT)
    best = recommend(points)
    return {
        "recommended": None if best is None else {k: best[k] for k in ("label", "settings", "block_ratio", "psnr")},
        "psnr_at_2.5x": {m: psnr_at(points, m, COMPARE_AT) for m in ("cg-taylor", "fixed-interval", "fbcache", "input-change")},
        "cg_minus_taylorseer_db_at_2.5x": None if ours is None or theirs is None else ours - theirs,
        "cg_dominates_share": dominance(points),
    }


def table(points: list[dict]) -> str:
    return "\n".join([TABLE_HEAD, *(point_row(p) for p in points)])


def run(quick: bool, families: list[str]) -> dict:
    torch.manual_seed(0)
    seeds = range(2) if quick else range(8)
    repeats = 3 if quick else 5
    judge = NearestMeanClassifier()
    report = {
        "mode": "quick" if quick else "full", "steps": STEPS, "cfg": CFG, "seeds": len(seeds), "classes": CLASSES,
        "timing_repeats": repeats,
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
        "families": {},
    }
    samples = {}
    for family in families:
        setup = Setup.load(family)
        started = time.perf_counter()
        references = {seed: setup.sample(setup.patcher, seed) for seed in seeds}
        default_point = node_default()
        points = [evaluate(setup, point, references, judge, repeats) for point in sweep(quick)]
        default = next((p for p in points if p["method"] == default_point.method and p["settings"] == default_point.settings), None)
        default = default or evaluate(setup, default_point, references, judge, repeats)
        samples[family] = {"no_cache": references[0], "cg_taylor_default": default["outputs"]}
        for p in points + [default]:
            p.pop("outputs", None)
        report["families"][family] = {
            "weights": weights_path(family).name, "blocks": len(setup.layout.keys),
            "evidence": evidence_of_training(setup, references, judge), "points": points, "default": default,
            "summary": summarise(points), "seconds": round(time.perf_counter() - started, 1),
        }
        data = report["families"][family]
        print(f"\n## {family} ({data['blocks']} blocks, {STEPS} steps, cfg {CFG}, {len(seeds)} seed(s) x {CLASSES} digits)")
        print(table(points))
        print(f"node default: {default['label']}")
        print(json.dumps({"evidence": data["evidence"], "summary": data["summary"]}, indent=1))
    return report, samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small sweep, 2 seeds (what `make demo` runs)")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report, samples = run(args.quick, args.families)
    args.out.mkdir(parents=True, exist_ok=True)
    name = report["mode"]
    from .plots import pareto_plot, samples_plot

    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"table_{name}.md").write_text(
        "\n\n".join(f"### {f}\n\n{table(d['points'])}" for f, d in report["families"].items()) + "\n"
    )
    pareto_plot(report, args.out / f"pareto_{name}.png")
    samples_plot(samples, args.out / f"samples_{name}.png")
    print(f"\nwrote {args.out}/{name}.json, table_{name}.md, pareto_{name}.png, samples_{name}.png "
          f"in {time.perf_counter() - started:.0f} s")
    if not args.quick and args.out == RESULTS:
        update_readme()


if __name__ == "__main__":
    main()
