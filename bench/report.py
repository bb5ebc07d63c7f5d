"""Render the README's benchmark section from bench/results/*.json.

    python -m bench.report      # after `python -m bench.run` and/or `python -m bench.gpu`

`make bench` calls this at its end, so the numbers in the README always come from the
results files in the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

from cgtaylor_cache.nodes.node import DEFAULTS

from .methods import FASTER, STOCHASTIC
from .plots import NAMES, _front
from .trace import DB_GAP, GAP, REFINEMENTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


TABLE_HEAD = ("| method | setting | fewer blocks | speedup (CPU time) | PSNR dB | SSIM | digit kept | "
              "cache / stream (hidden states) |\n|---|---|---|---|---|---|---|---|")
STEP_TARGETS = {28: 2.0, 30: 2.0, 50: 2.5}  # the node default's block-ratio target at each step count
# The targets are set on the models with the real block counts; the 6-block Qwen-layout model's
# results stand in its own table.
TARGET_FAMILIES = ("flux_deep", "wan_deep")


def point_row(p: dict, method: str | None = None) -> str:
    """One benchmark point as a table row; ``method`` overrides the method's name."""
    return (f"| {method or NAMES[p['method']]} | {p['label']} | {p['block_ratio']:.2f}x | {p['wall_speedup']:.2f}x | "
            f"{p['psnr']:.1f} | {p['ssim']:.3f} | {p['accuracy']:.0%} | {p['cache_hidden_states']:.1f} |")


def _db(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} dB"


def evidence_line(family: str, data: dict) -> str:
    ev, info = data["evidence"], data.get("training", {})
    trained = (f"trained {info['steps']} steps ({float(info['seconds']) / 60:.0f} min, final loss {info['final_loss']}); "
               if "seconds" in info else "")
    return (f"**{family}** ({data['blocks']} blocks; {trained}{ev['accuracy_no_cache']:.0%} of uncached samples show "
            f"their digit). The last block's output moves {ev['trained']['step_change']:.1%} per step (random "
            f"initialisation: {ev['random_init']['step_change']:.1%}) and a linear forecast leaves "
            f"{ev['trained']['linear_error_over_change']:.2f} of that change unexplained (random initialisation: "
            f"{ev['random_init']['linear_error_over_change']:.2f}"
            f"{', worse than no forecast' if ev['random_init']['linear_error_over_change'] > 1 else ''}).")


def run_section(family: str, run: dict, report: dict) -> str:
    summary = run["summary"]
    lines = [f"*{family}, {run['sampler']}, {run['steps']} steps, cfg {report['cfg']}, {report['seeds']} seeds x 10 "
             f"digits* (an uncached run: {run['uncached_seconds']:.1f} CPU s):", "", TABLE_HEAD]
    for method in NAMES:
        front = [p for p in _front([p for p in run["points"] if p["method"] == method]) if p["block_ratio"] > 1.01]
        lines += [point_row(p) for p in front]
    lines.append(point_row(run["default"], "node default"))
    if "faster" in run:
        lines.append(point_row(run["faster"], "documented faster setting"))
    if "stochastic" in run:
        lines.append(point_row(run["stochastic"], "documented setting for stochastic samplers"))
    for ratio, at in summary["psnr_at"].items():
        lines.append(("" if ratio != next(iter(summary["psnr_at"])) else "\n") +
                     f"Best PSNR at {ratio}x or more fewer block evaluations: " +
                     ", ".join(f"{NAMES[m]} {_db(v)}" for m, v in at.items()) + ".")
    lines.append(f"CG-Taylor matches or beats {summary['cg_dominates_share']:.0%} of the other methods' points on both axes"
                 + (f"; not: {'; '.join(summary['unmatched'])}." if summary.get("unmatched") else "."))
    if run["default"]["notes"]:
        lines.append("Node default's notes: " + "; ".join(run["default"]["notes"]) + ".")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "not measurable" if ok is None else ("**met**" if ok else "**not met**")


def targets_section(report: dict) -> str:
    """Every target of the deep-model benchmark with its measured value (ratios from one run each)."""
    lines = ["Targets (deep models; every ratio and PSNR from one run of every method on the same noise):", ""]
    for family, data in report["families"].items():
        if family not in TARGET_FAMILIES:
            continue
        runs = data["runs"]
        euler = {r["steps"]: r for r in runs.values() if r["sampler"] == "euler"}
        full = euler.get(max(euler)) if euler else None
        if full is None:
            continue
        s = full["summary"]
        where = f"{family}, euler {full['steps']} steps"
        lines.append(f"- {where}: CG-Taylor on or above every other method's curve: "
                     f"{_verdict(s['cg_dominates_share'] == 1)} ({s['cg_dominates_share']:.0%} of their points matched or beaten"
                     + (f"; not: {'; '.join(s['unmatched'])})." if s.get("unmatched") else ")."))
        for ratio, gap in s["cg_minus_taylorseer_db"].items():
            at = s["psnr_at"][ratio]
            lines.append(f"- {where}: at least 3 dB above TaylorSeer at {ratio}x: {_verdict(None if gap is None else gap >= 3)} "
                         f"(CG-Taylor {_db(at['cg-taylor'])}, TaylorSeer {_db(at['fixed-interval'])}).")
        for steps, run in sorted(euler.items()):
            d, need = run["default"], STEP_TARGETS.get(steps, 2.5)
            lines.append(f"- {family}, euler {steps} steps: node default at least {need:g}x at 40 dB or more: "
                         f"{_verdict(d['block_ratio'] >= need and d['psnr'] >= 40)} ({d['block_ratio']:.2f}x, {d['psnr']:.1f} dB).")
        if "faster" in full:
            f = full["faster"]
            lines.append(f"- {where}: documented faster setting ({f['label']}) at least 3.5x at 35 dB or more: "
                         f"{_verdict(f['block_ratio'] >= 3.5 and f['psnr'] >= 35)} ({f['block_ratio']:.2f}x, {f['psnr']:.1f} dB).")
        for run in runs.values():
            if run["sampler"] == "euler":
                continue
            where = f"{family}, {run['sampler']} {run['steps']} steps"
            if "stochastic" in run:
                st = run["stochastic"]
                lines.append(f"- {where}: documented setting for stochastic samplers ({st['label']}) at least 1.5x at "
                             f"35 dB or more: {_verdict(st['block_ratio'] >= 1.5 and st['psnr'] >= 35)} "
                             f"({st['block_ratio']:.2f}x, {st['psnr']:.1f} dB).")
            default = run["default"]
            noted = any("injects fresh noise" in n for n in default["notes"])
            lines.append(f"- {where}: the node default gets {default['block_ratio']:.2f}x at {default['psnr']:.1f} dB; "
                         f"its log line and the chart's notes {'say' if noted else 'do not say'} that the sampler's "
                         "noise made the gate reject.")
    return "\n".join(lines)


def _changes(settings: dict) -> str:
    """The node inputs a documented setting changes from the default, as the README names them."""
    return ", ".join(f"`{name}` {str(value).lower() if isinstance(value, bool) else value}"
                     for name, value in settings.items() if DEFAULTS.get(name, False) != value)


def settings_table(report: dict) -> str:
    """The node's default and the README's documented choices as measured on each deep model and run."""
    lines = ["The node's settings as measured here (fewer block evaluations, PSNR against no cache):", "",
             f"| model, run | default | faster ({_changes(FASTER)}) | for stochastic samplers ({_changes(STOCHASTIC)}) |",
             "|---|---|---|---|"]
    fmt = lambda p: "—" if p is None else f"{p['block_ratio']:.2f}x, {p['psnr']:.1f} dB"  # noqa: E731
    for family, data in report["families"].items():
        for run in data["runs"].values():
            lines.append(f"| {family}, {run['sampler']} {run['steps']} steps | {fmt(run['default'])} | "
                         f"{fmt(run.get('faster'))} | {fmt(run.get('stochastic'))} |")
    return "\n".join(lines)


def results_section(report: dict) -> str:
    cpu_minutes = sum(r["cpu_seconds"] for d in report["families"].values() for r in d["runs"].values()) / 60
    parts = [f"Tiny trained models with the real block counts: FLUX.1's 19 double + 38 single blocks and Wan 2.1 "
             f"1.3B's 30 blocks, at width 32 (`bench/train.py`, scikit-learn digits). Every method runs through the "
             f"node's own adapter and is compared with the uncached model on the same noise (`make bench`, "
             f"{report['machine']['cpu']}, torch {report['machine']['torch']}, {report['seeds']} seeds x 10 digits per "
             f"point to keep the whole benchmark at about {cpu_minutes:.0f} minutes of one core). Speedups are the "
             "process's CPU time on one thread, which is wall time on an unshared core; the machine was shared, and even "
             "CPU time drifts on it, so the uncached sample is timed again through each run and every speedup is "
             "against the median of those timings. "
             "Each thresholded method is measured on its threshold grid, and then its curve's widest gaps are filled "
             f"by one rule for every method, blind to the others' points (a point between neighbours more than {GAP:g}x "
             f"or, both lossy, {DB_GAP:g} dB apart, at most {REFINEMENTS} per curve: `bench/trace.py`), so that no "
             "method wins or loses by where its grid fell. "
             "Each table names the model, sampler and step count it was measured at; the tables show each method's "
             "best trade-offs (its points that no other point of the same method beats on both axes)."]
    for family, data in report["families"].items():
        parts.append(evidence_line(family, data))
        parts += [run_section(family, run, report) for run in data["runs"].values()]
    parts.append(settings_table(report))
    parts.append(targets_section(report))
    parts.append("![Speed against fidelity per method](bench/results/pareto_full.png)\n\n"
                 "![Samples without cache and with CG-Taylor at the node default](bench/results/samples_full.png)")
    return "\n\n".join(parts)


def gpu_section(results: list[dict]) -> str:
    lines = ["| size | device | full call | gate + forecast (engine) | forecast call | fewer blocks | wall speedup | wall / blocks | cache (bound) | TaylorSeer caches |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['device']} {r['dtype']} | {r['full_call_ms']:.1f} ms | "
            f"{r['engine_ms']:.2f} ms = {r['engine_pct_of_full_call']:.2f}% | "
            f"{r['forecast_call_ms']:.1f} ms | {r['block_ratio']:.2f}x | {r['wall_speedup']:.2f}x | {r['efficiency']:.0%} | "
            f"{r['cache_peak_mb']:.1f} MB ({r['cache_bound_mb']:.1f}) | {r['taylorseer_cache_mb']:.0f} MB |")
    peaks = [r for r in results if "gpu_peak_extra_offloaded_mb" in r]
    if peaks:
        lines += ["", "| size | GPU peak above the model: no node | node, cache on the GPU | node, cache offloaded | "
                  "offloading costs per forecast call | per full call |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['gpu_peak_extra_uncached_mb']:.0f} MB | {r['gpu_peak_extra_mb']:.0f} MB | "
                  f"{r['gpu_peak_extra_offloaded_mb']:.0f} MB | {r['offload_ms_per_forecast_call']:+.1f} ms | "
                  f"{r['offload_ms_per_full_call']:+.1f} ms |" for r in peaks]
    medium = [r for r in results if r["size"] == "medium"]
    if medium:
        m = medium[0]
        lines.append(f"\nTargets on the medium model: wall speedup at least 90% of the block ratio: "
                     f"{'met' if m['efficiency'] >= 0.9 else 'not met'} ({m['efficiency']:.0%}); gate + forecast under "
                     f"2% of a full call: {'met' if m['engine_pct_of_full_call'] < 2 else 'not met'} "
                     f"({m['engine_pct_of_full_call']:.2f}%).")
    return "\n".join(lines)


def offload_section(result: dict) -> str:
    """The engine's own work per call with the last block's cache on the device and offloaded (bench.gpu)."""
    rows = []
    for kind in ("forecast", "full"):
        rows.append(f"| {kind} call | {result[f'gpu_{kind}_ms']:.1f} ms ({result[f'gpu_{kind}_cpu_ms']:.1f} ms) | "
                    f"{result[f'cpu_{kind}_ms']:.1f} ms ({result[f'cpu_{kind}_cpu_ms']:.1f} ms) | "
                    f"{result[f'cpu_{kind}_moved_mb']:.0f} MB |")
    return (f"Offloading the last block's cache, {result['workload']}, {result['dtype']} on {result['device']} "
            "(`python -m bench.gpu --offload`; the engine's own work per call, wall time and the process's CPU "
            "time in brackets):\n\n| call | cache on the device | cache in host memory | copied |\n|---|---|---|---|\n"
            + "\n".join(rows)
            + ("\n\nHere the device is the CPU too, so the difference between the columns is what the copies cost the "
               "CPU; on a GPU the same script also times the transfers." if result["device"] == "cpu" else ""))


def memory_section() -> str:
    return ("Cache memory at FLUX.1, Qwen-Image, Wan and HunyuanVideo sizes, for each placement, next to reuse "
            "caches and TaylorSeer: see [Memory](#memory) (`python -m bench.memory`, from shapes, no GPU needed).")


def section() -> str:
    parts = []
    full = RESULTS / "full.json"
    if full.is_file():
        parts.append(results_section(json.loads(full.read_text())))
    for name, title in (("gpu.json", "On a GPU"), ("gpu_cpu.json", "Per-call cost on this CPU")):
        path = RESULTS / name
        if path.is_file():
            parts.append(f"{title} (`python -m bench.gpu`; random weights, the work per call does not depend on them):"
                         f"\n\n{gpu_section(json.loads(path.read_text()))}")
    for name in ("offload.json", "offload_cpu.json"):
        path = RESULTS / name
        if path.is_file():
            parts.append(offload_section(json.loads(path.read_text())))
    if not (RESULTS / "gpu.json").is_file():
        parts.append("No GPU was lent to the session that produced these results, so there are no GPU timings "
                     "here (FLUX.1-dev 1024x1024 and Wan 1.3B 832x480x33 shapes): `python -m bench.gpu` on a "
                     "CUDA machine measures them. Nothing here estimates them.")
    parts.append(memory_section())
    return "\n\n".join(parts)


def update_readme(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers to fill.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{section()}\n{END}{tail}")
    print(f"updated the benchmark section of {readme}")


if __name__ == "__main__":
    update_readme()
