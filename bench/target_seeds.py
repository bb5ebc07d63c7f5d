"""The speed targets against the node's own fixed tolerance on more seeds (issue 32, ask 3).

bench/targets.py samples each point on one pair of seeds, so a point shows two forecast patterns, and one pair
cannot tell a loss to the tolerance that repeats from one its seeds made. This samples the same points (models,
step counts, cfg, targets) on two further pairs of seeds, the tolerance curve with them, so that each point's
difference is seen on three pairs (bench/targets_table.py weighs them):

    python -m bench.target_seeds                       # bench/results/target_seeds.json
    python -m bench.target_seeds --families wan_deep   # one model's, merged with the others' in the file
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from .budgets import at_share
from .runs import RESULTS, References, Setup, point_figures
from .targets import CFG, FAMILIES, STEPS, TARGETS, TOLERANCES, kept, store, target_point, tolerance_point

PAIRS = ((2, 3), (4, 5))  # bench/targets.py samples seeds 0 and 1
OUT = RESULTS / "target_seeds.json"


def run_pair(family: str, steps: int, seeds: tuple[int, int]) -> dict:
    """Every target's node figures on ``seeds``, and the fixed tolerance's read at the node's speed from a
    curve of tolerances sampled on the same seeds."""
    setup = replace(Setup.load(family), steps=steps, cfg=CFG)
    references = References.sample(setup, seeds)
    curve = [point_figures(setup, tolerance_point(t), references) for t in TOLERANCES]
    targets = {}
    for target in TARGETS:
        node = point_figures(setup, target_point(target), references)
        targets[f"{target:g}"] = {"node": kept(node), "fixed_tolerance": at_share(curve, node["share"])}
    return targets


def settings() -> dict:
    return {"cfg": CFG, "pairs": [list(pair) for pair in PAIRS], "targets": list(TARGETS),
            "tolerances": list(TOLERANCES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for family in args.families:
        runs: dict = {}
        for steps in STEPS:
            for pair in PAIRS:
                runs.setdefault(str(steps), {})[",".join(map(str, pair))] = run_pair(family, steps, pair)
                store(family, runs, OUT, settings())
                print(f"{family} {steps} steps, seeds {pair}", flush=True)
    print(f"wrote {OUT}; `python -m bench.report` renders it")


if __name__ == "__main__":
    main()
