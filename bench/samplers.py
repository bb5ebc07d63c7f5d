"""The node default under every CFG++ sampler ComfyUI ships, on the trained deep models.

    python -m bench.samplers     # bench/results/samplers.json; `python -m bench.report` renders it into the README

CFG++ samplers carry the guidance difference into their next latent many times more strongly than an
Euler step does, so a miss that is harmless under euler can change the image under them; the gate
weighs its predictions by the gain it measures from the sampler's own steps (core/sampler_response.py).
This samples each one through the node's adapter at its default and without the node on the same noise
(30 steps, cfg 4, 10 digits per seed; euler_cfg_pp over 10 seeds, the others over 3) and keeps every
image's PSNR: the worst image is what a user would notice, not the mean.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

from .digits import decode
from .measures import psnr
from .methods import node_default
from .runs import RESULTS, Setup
from .standin.k_samplers import CFG_PP

FAMILIES = ("flux_deep", "wan_deep")
SAMPLERS = ("euler", *CFG_PP)
STEPS, CFG = 30, 4.0
SEEDS = {"euler_cfg_pp": 10}
OTHER_SEEDS = 3
MIN_DB = 40.0
OUT = RESULTS / "samplers.json"


def measure(family: str, sampler: str, seeds: int) -> dict:
    """Every image's PSNR against no cache, the block ratio and the largest guidance gain measured."""
    setup = replace(Setup.load(family), steps=STEPS, sampler=sampler)
    images, ratios, gains = [], [], []
    for seed in range(seeds):
        reference = decode(setup.sample(setup.patcher, seed, cfg=CFG))
        patcher, _, reports = setup.patched(node_default())
        cached = decode(setup.sample(patcher, seed, cfg=CFG))
        images += [psnr(cached[i : i + 1], reference[i : i + 1]) for i in range(cached.shape[0])]
        ratios.append(reports[-1].block_ratio)
        gains += reports[-1].sampler_gains
    finite = [db for db in images if db != float("inf")]
    return {"seeds": seeds, "images": len(images), "exact": len(images) - len(finite),
            "worst_db": min(finite, default=None), "median_db": statistics.median(finite) if finite else None,
            "below": sum(db < MIN_DB for db in finite), "block_ratio": statistics.median(ratios),
            "max_gain": max(gains, default=None)}


def main() -> None:
    results = {"steps": STEPS, "cfg": CFG, "min_db": MIN_DB, "families": {}}
    for family in FAMILIES:
        results["families"][family] = {}
        for sampler in SAMPLERS:
            result = measure(family, sampler, SEEDS.get(sampler, OTHER_SEEDS))
            results["families"][family][sampler] = result
            print(family, sampler, result, flush=True)
            OUT.write_text(json.dumps(results, indent=1) + "\n")  # a sweep cut short keeps what it finished
    print(f"wrote {OUT}; `python -m bench.report` renders it into the README")


def table(results: dict) -> str:
    """The README's table: per sampler and model, the worst image, the images under the bound and the speed."""
    families = list(results["families"])
    head = "| sampler | " + " | ".join(f"{f}: worst image, under {results['min_db']:g} dB, fewer blocks" for f in families)
    lines = [head + " |", "|---" * (len(families) + 1) + "|"]
    for sampler in results["families"][families[0]]:
        cells = []
        for family in families:
            r = results["families"][family][sampler]
            worst = "exact" if r["worst_db"] is None else f"{r['worst_db']:.1f} dB"
            cells.append(f"{worst}, {r['below']} of {r['images']}, {r['block_ratio']:.2f}x")
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
