"""heun on the trained models: what the caches should hold when the corrector lands on a known sigma.

    python -m bench.heun            # bench/results/heun.json and a table on stdout

heun's step i evaluates its predictor at sigma i+1, then step i+1 starts at that sigma from
the corrected x. When both calls are computed in full, the Taylor caches can keep the first
(the rule before: a repeated position was dropped) or let the second replace it (the rule
now, core/taylor.py). Both rules run here on the same noise, settings and models, against
uncached heun; the old rule is this file's ``KeepFirst`` forecaster swapped into the engine.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

import cgtaylor_cache  # noqa: F401  (registered by bench/__init__.py)
from cgtaylor_cache.core import call as call_module
from cgtaylor_cache.core.taylor import SAME_POSITION, TaylorForecaster

from .digits import NearestMeanClassifier, decode
from .measures import psnr, ssim
from .methods import cg_taylor
from .runs import CFG, RESULTS, STEPS, Setup
from .standin.sampling import sample
from .weights import SHIFT

SETTINGS = [  # (threshold, warm-up, most forecasts in a row): low thresholds reject often, so both
    # heun calls at a sigma are full more often; the node's defaults are 0.15, 1, 2
    (0.01, 1, 2), (0.02, 1, 2), (0.05, 1, 2), (0.15, 1, 2), (0.02, 4, 0), (0.05, 4, 0), (0.15, 4, 0),
]


class Counted(TaylorForecaster):
    """The rule now, counting refreshes at the newest position (a corrector after its predictor)."""

    repeats = 0

    def update(self, feature: torch.Tensor, position: float) -> bool:
        if self._positions and abs(float(position) - self._positions[0]) <= SAME_POSITION:
            Counted.repeats += 1
        return super().update(feature, position)


class KeepFirst(Counted):
    """The rule before: a second feature at any known position is dropped."""

    def update(self, feature: torch.Tensor, position: float) -> bool:
        if any(abs(float(position) - known) <= SAME_POSITION for known in self._positions):
            Counted.repeats += abs(float(position) - self._positions[0]) <= SAME_POSITION
            return False
        return super().update(feature, position)


@contextmanager
def rule(name: str):
    Counted.repeats = 0
    with mock.patch.object(call_module, "TaylorForecaster", KeepFirst if name == "keep first" else Counted):
        yield


def heun(setup: Setup, patcher, seed: int) -> torch.Tensor:
    return sample(patcher, setup.noise(seed), setup.positive, setup.negative, cfg=CFG, steps=STEPS,
                  shift=SHIFT[setup.family], sampler="heun")


def compare(family: str, seeds: list[int]) -> list[dict]:
    setup, judge = Setup.load(family), NearestMeanClassifier()
    uncached = torch.cat([decode(heun(setup, setup.patcher, s)) for s in seeds])
    labels = setup.labels.repeat(len(seeds))
    rows = []
    for threshold, warmup, in_a_row in SETTINGS:
        point = cg_taylor(threshold, warmup=warmup, max_consecutive=in_a_row)
        for name in ("keep first", "corrector replaces"):
            patcher, _, reports = setup.patched(point)
            with rule(name):
                cached = torch.cat([decode(heun(setup, patcher, s)) for s in seeds])
            blocks_run, blocks_total = sum(r.blocks_run for r in reports), sum(r.blocks_total for r in reports)
            rows.append({
                "family": family, "threshold": threshold, "warmup": warmup, "max_consecutive": in_a_row, "rule": name,
                "block_ratio": blocks_total / blocks_run, "psnr": psnr(cached, uncached), "ssim": ssim(cached, uncached),
                "accuracy": float((judge(cached) == labels).float().mean()),
                "forecast_share": sum(r.forecast_calls for r in reports) / sum(r.calls for r in reports),
                "repeated_refreshes": Counted.repeats,  # cache updates at the newest position, all streams
            })
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | threshold, warm-up, max in a row | rule | repeated refreshes | block ratio | PSNR dB | SSIM "
             "| digit read |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['threshold']:g}, {r['warmup']}, {r['max_consecutive'] or 'no cap'} | "
                     f"{r['rule']} | {r['repeated_refreshes']} | {r['block_ratio']:.2f}x | {r['psnr']:.1f} | "
                     f"{r['ssim']:.4f} | {r['accuracy']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--families", nargs="*", default=["flux", "wan"])
    parser.add_argument("--out", type=Path, default=RESULTS / "heun.json")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    rows = [row for family in args.families for row in compare(family, list(range(args.seeds)))]
    args.out.write_text(json.dumps({"steps": STEPS, "cfg": CFG, "seeds": args.seeds, "rows": rows}, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
