"""Render the README's benchmark section from bench/results/*.json.

    python -m bench.report      # after `python -m bench.run` and/or `python -m bench.gpu`

`make bench` calls this at its end, so the numbers in the README always come from the
results files in the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

from .plots import NAMES, _front

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


TABLE_HEAD = ("| method | setting | fewer blocks | wall speedup | PSNR dB | SSIM | digit kept | "
              "cache / stream (hidden states) |\n|---|---|---|---|---|---|---|---|")


def point_row(p: dict, method: str | None = None) -> str:
    """One benchmark point as a table row; ``method`` overrides the method's name."""
    return (f"| {method or NAMES[p['method']]} | {p['label']} | {p['block_ratio']:.2f}x | {p['wall_speedup']:.2f}x | "
            f"{p['psnr']:.1f} | {p['ssim']:.3f} | {p['accuracy']:.0%} | {p['cache_hidden_states']:.1f} |")


def family_section(family: str, data: dict, report: dict) -> str:
    ev, summary = data["evidence"], data["summary"]
    lines = [
        f"**{family}-layout model** ({data['blocks']} blocks; {report['steps']} euler steps, cfg {report['cfg']}, "
        f"{report['seeds']} seeds x 10 digits; wall speedup = median of {report['timing_repeats']} runs interleaved "
        f"with uncached runs). Trained: {ev['accuracy_no_cache']:.0%} of uncached samples show their digit; the "
        f"last block's output moves {ev['trained']['step_change']:.1%} per step (random initialisation: "
        f"{ev['random_init']['step_change']:.1%}) and a linear forecast leaves "
        f"{ev['trained']['linear_error_over_change']:.2f} of that change unexplained (random initialisation: "
        f"{ev['random_init']['linear_error_over_change']:.2f}"
        f"{', worse than no forecast' if ev['random_init']['linear_error_over_change'] > 1 else ''}).",
        "",
        TABLE_HEAD,
    ]
    for method in NAMES:
        front = [p for p in _front([p for p in data["points"] if p["method"] == method]) if p["block_ratio"] > 1.01]
        lines += [point_row(p) for p in front]
    lines.append(point_row(data["default"], "node default"))
    at = summary["psnr_at_2.5x"]
    fmt = lambda v: "not reached" if v is None else f"{v:.1f} dB"  # noqa: E731
    lines += ["", f"Best PSNR at 2.5x or more fewer block evaluations: CG-Taylor {fmt(at['cg-taylor'])}, TaylorSeer "
              f"{fmt(at['fixed-interval'])}, first-block cache {fmt(at['fbcache'])}, input-change "
              f"{fmt(at['input-change'])}. CG-Taylor matches or beats {summary['cg_dominates_share']:.0%} of the "
              "other methods' points on both axes."]
    gap = summary["cg_minus_taylorseer_db_at_2.5x"]
    verdict = "not measurable" if gap is None else f"{'met' if gap >= 3 else 'not met'} ({gap:+.1f} dB)"
    lines.append(f"Target \"at 2.5x, at least 3 dB above TaylorSeer\": {verdict}; target \"on or above every other "
                 f"curve\": {'met' if summary['cg_dominates_share'] == 1 else 'not met'}.")
    return "\n".join(lines)


def gpu_section(results: list[dict]) -> str:
    lines = ["| size | device | full call | gate + forecast (engine) | forecast call | fewer blocks | wall speedup | wall / blocks | cache (bound) | TaylorSeer caches |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['device']} {r['dtype']} | {r['full_call_ms']:.1f} ms | "
            f"{r['engine_ms']:.2f} ms = {r['engine_pct_of_full_call']:.2f}% | "
            f"{r['forecast_call_ms']:.1f} ms | {r['block_ratio']:.2f}x | {r['wall_speedup']:.2f}x | {r['efficiency']:.0%} | "
            f"{r['cache_peak_mb']:.1f} MB ({r['cache_bound_mb']:.1f}) | {r['taylorseer_cache_mb']:.0f} MB |")
    medium = [r for r in results if r["size"] == "medium"]
    if medium:
        m = medium[0]
        lines.append(f"\nTargets on the medium model: wall speedup at least 90% of the block ratio: "
                     f"{'met' if m['efficiency'] >= 0.9 else 'not met'} ({m['efficiency']:.0%}); gate + forecast under "
                     f"2% of a full call: {'met' if m['engine_pct_of_full_call'] < 2 else 'not met'} "
                     f"({m['engine_pct_of_full_call']:.2f}%).")
    return "\n".join(lines)


def memory_section() -> str:
    """Cache memory at the real sizes is arithmetic on shapes, so it needs no GPU."""
    from .gpu import SIZES, cg_taylor_cache_bytes, taylorseer_module_cache_bytes

    rows = [f"| {name} | {cg_taylor_cache_bytes(SIZES[name]) / 2**20:.0f} MB | "
            f"{taylorseer_module_cache_bytes(SIZES[name]) / 2**20:.0f} MB |" for name in ("flux1", "wan1.3b")]
    return ("Cache memory per stream (cond or uncond) in bf16, from the tensor shapes: FLUX.1 at 1024x1024 "
            "(4096 image + 512 text tokens), Wan 1.3B at 832x480x33 frames (14,040 tokens), orders 1/1.\n\n"
            "| model | CG-Taylor (this node) | TaylorSeer (every attention and MLP output) |\n|---|---|---|\n"
            + "\n".join(rows))


def section() -> str:
    parts = []
    full = RESULTS / "full.json"
    if full.is_file():
        report = json.loads(full.read_text())
        parts.append("Tiny trained FLUX- and Wan-layout models (`bench/train.py`, scikit-learn digits), every method "
                     "through the node's own adapter, compared with the uncached model on the same noise "
                     f"(`make bench`, {report['machine']['cpu']}, {report['machine']['threads']} threads, "
                     f"torch {report['machine']['torch']}):")
        parts += [family_section(f, d, report) for f, d in report["families"].items()]
        parts.append("![Speed against fidelity per method](bench/results/pareto_full.png)\n\n"
                     "![Samples without cache and with CG-Taylor at the node default](bench/results/samples_full.png)")
    for name, title in (("gpu.json", "On a GPU"), ("gpu_cpu.json", "Per-call cost on this CPU")):
        path = RESULTS / name
        if path.is_file():
            parts.append(f"{title} (`python -m bench.gpu`; random weights, the work per call does not depend on them):"
                         f"\n\n{gpu_section(json.loads(path.read_text()))}")
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
