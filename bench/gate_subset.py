"""The gate on a sample of block 0's tokens against the gate on all of them.

    python -m bench.gate_subset        # bench/results/gate_subset.json and a table (15 CPU minutes)

The node's gate and block 0's cache see a fixed random share of block 0's tokens
(core/subset.py). This measures what that costs on the deep benchmark models (FLUX.1's and
Wan 1.3B's block counts, euler at 50 steps, cfg 3, 2 seeds x 10 digits), at the node's
defaults (its cap of forecasts in a row) and without a cap (so that the gate alone decides), over
the gate's setting traced by bench/trace.py for every share:

* decisions: the share of (seed, step) entries where the sampled gate forecast as many calls as
  the full gate at the same setting;
* PSNR at equal speed: the best PSNR (against no cache) each gate reaches with at least a given
  block-evaluation ratio, the sampled gate's minus the full gate's, at every ratio either curve has a
  point at (so neither side is only compared where the other happens to have measured).

The shares go down to one of FLUX's 16 image tokens (Wan: 3 of 48), without the node's floor of 64
tokens: the comparison shows how many sampled tokens the gate needs (a mean's sampling error
depends on how many values it is taken over, not on their share of the image).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

import cgtaylor_cache  # noqa: F401  (registered by bench/__init__.py)
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.settings import CacheSettings

from .digits import decode
from .measures import psnr
from .methods import Curve, Point
from .runs import References, Setup
from .trace import trace

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ("flux_deep", "wan_deep")
STEPS = 50
SEEDS = (0, 1)
SHARES = (1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16)
CAPS = (DEFAULTS["max_consecutive"], 0)
# The gate's setting: "tolerance" once the calibrated gate has landed, "threshold" before.
GATE_INPUT = "tolerance" if "tolerance" in DEFAULTS else "threshold"
GRID = (0.02, 0.05, 0.1, 0.15, 0.3, 0.6, 1.0)


def point(share: float, cap: int, value: float) -> Point:
    settings = CacheSettings(**{**DEFAULTS, GATE_INPUT: value, "max_consecutive": cap, "gate_share": share,
                                "gate_minimum": 1})
    return Point("cg-taylor", f"share {share:g}, cap {cap}, {GATE_INPUT} {value:g}",
                 {"share": share, "cap": cap, GATE_INPUT: value}, settings.new_engine)


def measure(setup: Setup, references: References, chosen: Point) -> dict:
    patcher, _, reports = setup.patched(chosen)
    outputs = {seed: setup.sample(patcher, seed) for seed in references.outputs}
    test = torch.cat([decode(outputs[s]) for s in outputs])
    reference = torch.cat([decode(references.outputs[s]) for s in outputs])
    blocks_run, blocks_total = sum(r.blocks_run for r in reports), sum(r.blocks_total for r in reports)
    return {**chosen.settings, "block_ratio": blocks_total / blocks_run, "psnr": psnr(test, reference),
            "decisions": [[step["forecast"] for step in r.to_json()["steps"]] for r in reports]}


def agreement(points: list[dict], full: list[dict]) -> float:
    """Share of (seed, step) entries with as many forecasts as the full gate at the same setting."""
    by_value = {p[GATE_INPUT]: p["decisions"] for p in full}
    same = total = 0
    for p in points:
        theirs = by_value.get(p[GATE_INPUT])
        if theirs is None:
            continue
        for mine, other in zip(p["decisions"], theirs):
            same += sum(a == b for a, b in zip(mine, other))
            total += len(mine)
    return same / total if total else math.nan


def best_psnr(points: list[dict], ratio: float) -> float | None:
    """The best finite PSNR among the points with at least ``ratio`` fewer block evaluations."""
    reaching = [p["psnr"] for p in points if p["block_ratio"] >= ratio and math.isfinite(p["psnr"])]
    return max(reaching, default=None)


def compare(points: list[dict], full: list[dict]) -> dict:
    """The sampled gate against the full one: decisions, and PSNR at equal speed over both curves'
    lossy points (points that skip nothing compare the uncached model with itself)."""
    gaps = []
    for ratio in sorted({p["block_ratio"] for p in [*points, *full] if p["block_ratio"] > 1.01}):
        mine, theirs = best_psnr(points, ratio), best_psnr(full, ratio)
        if mine is not None and theirs is not None:
            gaps.append(mine - theirs)
    return {"decisions_same": agreement(points, full), "psnr_gap_mean_db": sum(gaps) / len(gaps) if gaps else None,
            "psnr_gap_worst_db": min(gaps, default=None), "psnr_gap_best_db": max(gaps, default=None),
            "compared_at": len(gaps)}


def run_family(family: str) -> dict:
    setup = replace(Setup.load(family), steps=STEPS)
    references = References.sample(setup, SEEDS)
    tokens = _gate_tokens(setup)
    result = {"gate_tokens": tokens, "caps": {}}
    for cap in CAPS:
        curves = {share: trace(Curve(lambda v, s=share: point(s, cap, v), GRID),
                               lambda chosen: measure(setup, references, chosen)) for share in SHARES}
        full = curves[1.0]
        result["caps"][str(cap)] = {
            f"{share:g}": {"tokens": max(1, math.ceil(share * tokens)), **compare(points, full), "points": points}
            for share, points in curves.items()
        }
    return result


def _gate_tokens(setup: Setup) -> int:
    """Block 0's image tokens per sample: what the gate samples from."""
    seen = []
    patcher = setup.patcher.clone()

    def record(args, extra):
        out = extra["original_block"](args)
        seen.append(setup.layout.gate_state(out, args).shape[1])
        return out

    patcher.set_model_patch_replace(record, "dit", *setup.layout.first)
    replace(setup, steps=1).sample(patcher, seed=0, cfg=1.0)
    return seen[0]


def table(report: dict) -> str:
    lines = ["| model | cap | share of tokens | tokens | decisions as the full gate | "
             "PSNR at equal speed against the full gate: mean (worst, best) |", "|---|---|---|---|---|---|"]
    for family, data in report["families"].items():
        for cap, shares in data["caps"].items():
            for share, row in shares.items():
                gap = ("n/a" if row["psnr_gap_mean_db"] is None else
                       f"{row['psnr_gap_mean_db']:+.2f} dB ({row['psnr_gap_worst_db']:+.2f}, "
                       f"{row['psnr_gap_best_db']:+.2f})")
                lines.append(f"| {family} | {cap or 'none'} | {share} | {row['tokens']} of {data['gate_tokens']} | "
                             f"{row['decisions_same']:.1%} | {gap} |")
    return "\n".join(lines)


def summary_table(report: dict) -> str:
    """One row per share: per model and cap, the decisions kept and the mean (worst) PSNR gap at equal speed."""
    columns = [(family, cap) for family, data in report["families"].items() for cap in data["caps"]]
    head = " | ".join(f"{family}, {'cap ' + cap if cap != '0' else 'no cap'}" for family, cap in columns)
    lines = [f"| share of block 0's tokens | {head} |", "|---|" + "---|" * len(columns)]
    for share in next(iter(report["families"].values()))["caps"][columns[0][1]]:
        cells = []
        for family, cap in columns:
            data = report["families"][family]
            row = data["caps"][cap][share]
            cells.append(f"{row['decisions_same']:.0%}, {row['psnr_gap_mean_db']:+.1f} dB ({row['psnr_gap_worst_db']:+.1f})")
        lines.append(f"| {share} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recompare(report: dict) -> dict:
    """The comparisons again from the stored points (after a change to ``compare``)."""
    for data in report["families"].values():
        for shares in data["caps"].values():
            for row in shares.values():
                row.update(compare(row["points"], shares["1"]["points"]))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.process_time()
    report = {"gate": GATE_INPUT, "steps": STEPS, "seeds": len(SEEDS), "sampler": "euler",
              "families": {family: run_family(family) for family in args.families}}
    report["cpu_seconds"] = round(time.process_time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate_subset.json").write_text(json.dumps(report, indent=1))
    print(table(report))
    print(summary_table(report))
    print(f"wrote {args.out / 'gate_subset.json'} ({report['cpu_seconds']} CPU s)")


if __name__ == "__main__":
    main()
