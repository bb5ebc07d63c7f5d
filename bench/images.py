"""Every image at the node's defaults (issue 31): the schedules, guidance scales and step counts users run.

    python -m bench.images      # bench/results/images.json; `python -m bench.report` renders it (part of `make bench`)

The node's own engine (nodes/settings.py, as ComfyUI gets it) at its default and at the README's documented
settings, on every bench model and the held-out pair (bench/weights.py HOLDOUT: trained from other seeds,
chosen nothing), with euler at 12, 20, 30 and 50 steps, cfg 1, 3, 5 and 8, and the Wan layouts at shift 3
(the bench's) and 8 (ComfyUI's default for Wan), the documented settings at cfg 3; each point over 2 seeds x
10 digits, each image's PSNR against the uncached image on the same noise.

Where the default leaves an image under the issue's bounds, the run that made the worst of them is taken
apart: the default's run on that image's seed again, once per step it forecast with that one forecast
refused (computed in full instead), to find the forecasts that moved the image and by how much.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import torch

from cgtaylor_cache.core.policy import Mode, Plan
from cgtaylor_cache.core.steps import StepPoint
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.settings import CacheSettings

from .digits import CLASSES, decode
from .measures import BOUNDS, per_image_psnr
from .methods import CLOSER, FASTER, Point, as_node
from .runs import RESULTS, References, Setup, point_figures, rounded
from .weights import HOLDOUT, LAYOUT, SHIFT

FAMILIES = ("flux_deep", "wan_deep", "wan_rough", "qwen", *HOLDOUT)
STEPS = (12, 20, 30, 50)
CFGS = (1.0, 3.0, 5.0, 8.0)
WAN_SHIFTS = (3.0, 8.0)
SEEDS = (0, 1)
SETTINGS = {"default": DEFAULTS, "closer": CLOSER, "faster": FASTER}
DOCUMENTED_CFG = 3.0  # the documented settings are sampled at the bench's usual cfg only (the default at every one)
OUT = RESULTS / "images.json"
DIGITS = 4  # significant digits the results file keeps
# The targets at the default (issue 31, ask 5)
LEAST_DB, MOST_DB = BOUNDS  # every image at least LEAST_DB; at least MOST_SHARE of them at least MOST_DB
MOST_SHARE = 0.9
SPEED = {30: 2.0, 50: 2.5}  # fewer block evaluations at least this, at SPEED_CFG on SPEED_FAMILIES
SPEED_CFG = 3.0
SPEED_FAMILIES = ("flux_deep", "wan_deep")


def shifts(family: str) -> tuple[float, ...]:
    return WAN_SHIFTS if LAYOUT[family] == "wan" else (SHIFT[family],)


def point_key(shift: float, steps: int, cfg: float) -> str:
    return f"shift {shift:g}, {steps} steps, cfg {cfg:g}"


def meets(images: dict) -> bool:
    """The issue's bound on a point's images: every one at least LEAST_DB, MOST_SHARE of them MOST_DB."""
    return images["worst"] >= LEAST_DB and images[f"under_{MOST_DB:g}"] <= (1 - MOST_SHARE) * images["images"]


class Refusing:
    """A policy that computes the given steps in full and decides every other one as ``policy`` does."""

    def __init__(self, policy, steps: frozenset[int]) -> None:
        self.policy, self.steps = policy, steps

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        return (Mode.FULL, "gate") if step.index in self.steps else self.policy.plan(step, consecutive, ready)


def refusing(steps: frozenset[int]) -> Point:
    """The node default with the forecasts at ``steps`` refused."""
    def new_engine():
        engine = CacheSettings(**DEFAULTS).new_engine()
        engine.policy = Refusing(engine.policy, steps)
        return engine

    return Point("cg-taylor", f"default, steps {sorted(steps)} full", {"refused": sorted(steps)}, new_engine)


def cause(setup: Setup, figures: dict) -> dict:
    """Which forecasts of the default's run moved its worst image: that run again with each of its forecasts
    refused in turn, the image's PSNR each time, with what the run's gate saw at that step."""
    worst = min(range(len(figures["dbs"])), key=lambda i: figures["dbs"][i])
    seed, digit = SEEDS[worst // CLASSES], worst % CLASSES
    one = References.sample(setup, [seed])
    patcher, _, reports = setup.patched(as_node(DEFAULTS, "default"))
    base = per_image_psnr(decode(setup.sample(patcher, seed)), decode(one.outputs[seed]))[digit]
    steps = reports[-1].to_json()["steps"]
    forecast = [s["step"] for s in steps if s["forecast"]]
    moved = []
    for step in forecast:
        patcher, _, _ = setup.patched(refusing(frozenset({step})))
        db = per_image_psnr(decode(setup.sample(patcher, seed)), decode(one.outputs[seed]))[digit]
        run = 0
        while step - run - 1 >= 0 and steps[step - run - 1]["forecast"]:
            run += 1
        moved.append({"step": step, "in_a_row": run + 1, "predicted": steps[step]["predicted"],
                      "weight": steps[step].get("weight", 1.0), "spent": steps[step].get("spent", 0.0),
                      "refused_db": db, "moved_db": db - base})
    moved.sort(key=lambda m: -m["moved_db"])
    return {"seed": seed, "digit": digit, "db": base, "forecasts": len(forecast), "moved": moved}


def run_family(family: str) -> dict:
    base = Setup.load(family)
    entry = {"blocks": len(base.layout.keys), "points": {}}
    for shift in shifts(family):
        for steps in STEPS:
            for cfg in CFGS:
                started = time.process_time()
                setup = replace(base, steps=steps, cfg=cfg, shift=shift)
                references = References.sample(setup, SEEDS)
                point = {name: point_figures(setup, as_node(settings, name), references)
                         for name, settings in SETTINGS.items() if name == "default" or cfg == DOCUMENTED_CFG}
                point |= {"shift": shift, "steps": steps, "cfg": cfg, "cpu_seconds": round(time.process_time() - started, 1)}
                entry["points"][point_key(shift, steps, cfg)] = point
                d = point["default"]
                print(f"{family} {point_key(shift, steps, cfg)}: default {d['block_ratio']:.2f}x, worst "
                      f"{d['images']['worst']:.1f} dB, p10 {d['images']['p10']:.1f} dB", flush=True)
        failing = [(key, p) for key, p in entry["points"].items()
                   if p["shift"] == shift and not meets(p["default"]["images"])]
        if failing:  # the worst image of this shift's runs, taken apart
            key, point = min(failing, key=lambda kp: kp[1]["default"]["images"]["worst"])
            setup = replace(base, steps=point["steps"], cfg=point["cfg"], shift=shift)
            entry.setdefault("causes", {})[key] = cause(setup, point["default"])
    return entry


def main() -> None:
    torch.set_num_threads(1)  # times are CPU times of one thread
    results = {"seeds": len(SEEDS), "images": len(SEEDS) * CLASSES, "settings": {k: dict(v) for k, v in SETTINGS.items()},
               "families": {}}
    for family in FAMILIES:
        results["families"][family] = run_family(family)
        OUT.write_text(json.dumps(rounded(results, DIGITS), indent=1) + "\n")  # a sweep cut short keeps what it did
    print(f"wrote {OUT}; `python -m bench.report` renders it")


if __name__ == "__main__":
    main()
