"""The benchmark's sampling runs on the digit task, shared by every script that samples them.

A ``Setup`` is one trained tiny model with its prompts, step count and sampler, sampled through
ComfyUI's stand-in (bench/standin/sampling.py) unpatched or with the node's hooks installed
(nodes/runtime.py); ``References`` are its uncached samples and their CPU times. The families,
their (sampler, steps) runs and where the results go are here too, so bench.run, bench.report and
the scripts they call (gate_exam, gate_subset, samplers, heun) import them from one place, never
from each other.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cgtaylor_cache.nodes.families import BlockLayout, detect
from cgtaylor_cache.nodes.runtime import PREPARE_SAMPLING, WRAPPER_KEY, CacheRuntime, install

from .digits import CLASSES, Prompts, decode
from .measures import per_image_psnr, tails
from .methods import Point
from .standin.patcher import ModelPatcher
from .standin.sampling import Cond, sample
from .weights import LAYOUT, SHIFT, load_trained

RESULTS = Path(__file__).resolve().parent / "results"
STEPS, CFG = 20, 3.0  # the quick sweep's steps; the full sweep's are in FULL_RUNS
LATENT_SHAPE = {"flux": (4, 8, 8), "wan": (4, 3, 8, 8), "qwen": (4, 8, 8)}
QUICK_FAMILIES = ("flux", "wan", "qwen")
FULL_FAMILIES = ("flux_deep", "wan_deep", "wan_rough", "qwen")
# (sampler, steps) per family: FLUX.1 is run at 28-50 steps, Wan at 30-50; the deep models' method sweep
# stops there, where every method is compared on the step counts these models are run with (bench/images.py
# samples the node's settings at 12 and 20 steps too, per image); the cheap Qwen-layout model is also swept
# at 12 and 20 steps, where block 0 moves most per step and a gate that cannot tell a good forecast from a
# bad one loses most.
FULL_RUNS = {
    "flux_deep": (("euler", 28), ("euler", 50), ("euler_ancestral", 50)),
    "wan_deep": (("euler", 30), ("euler", 50), ("euler_ancestral", 50)),
    "wan_rough": (("euler", 30), ("euler", 50)),
    "qwen": (("euler", 12), ("euler", 20), ("euler", 28), ("euler", 50)),
}
QUICK_RUNS = (("euler", STEPS),)
SEEDS = {"quick": 2, "full": 2}  # x 10 digits per point


@dataclass
class Setup:
    family: str
    patcher: ModelPatcher
    layout: BlockLayout
    positive: Cond
    negative: Cond
    labels: torch.Tensor
    steps: int = STEPS
    sampler: str = "euler"
    cfg: float = CFG
    shift: float | None = None  # the schedule's shift; None: the family's own (weights.SHIFT)

    @classmethod
    def load(cls, family: str, model=None) -> Setup:
        flow = model or load_trained(family)
        prompts, labels = Prompts(), torch.arange(CLASSES)
        positive = Cond(prompts.inputs(labels, LAYOUT[family]))
        negative = Cond(prompts.inputs(torch.full_like(labels, CLASSES), LAYOUT[family]))
        return cls(family, ModelPatcher(flow), detect(flow.diffusion_model), positive, negative, labels)

    def noise(self, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn((CLASSES, *LATENT_SHAPE[LAYOUT[self.family]]), generator=generator)

    def sample(self, patcher: ModelPatcher, seed: int, cfg: float | None = None, callback=None) -> torch.Tensor:
        """One run on ``seed``'s noise (at the setup's cfg unless ``cfg`` says otherwise); a stochastic
        sampler draws its fresh noise from the same seed."""
        return sample(patcher, self.noise(seed), self.positive, self.negative, cfg=self.cfg if cfg is None else cfg,
                      steps=self.steps, sampler=self.sampler, shift=SHIFT[self.family] if self.shift is None else self.shift,
                      callback=callback, seed=seed)

    def patched(self, point: Point) -> tuple[ModelPatcher, CacheRuntime, list]:
        """The model with the node's hooks driving ``point``'s engine; a method whose caches the node's
        memory ledger does not bound is left out of ComfyUI's memory plan."""
        reports: list = []
        clone = self.patcher.clone()
        runtime = CacheRuntime(point.new_engine, self.layout, reports.append)
        install(clone, runtime)
        if not point.planned:
            clone.remove_wrappers_with_key(PREPARE_SAMPLING, WRAPPER_KEY)
        return clone, runtime, reports


def last_block_states(setup: Setup, seed: int = 0, cfg: float = 1.0) -> list[torch.Tensor]:
    """The last block's output at every call of an uncached run on ``seed``'s noise (cfg 1: one stream; above,
    each call's streams as its batch)."""
    states: list[torch.Tensor] = []
    patcher = setup.patcher.clone()

    def record(args, extra):
        out = extra["original_block"](args)
        states.append(out["img"].clone())
        return out

    patcher.set_model_patch_replace(record, "dit", *setup.layout.last)
    setup.sample(patcher, seed=seed, cfg=cfg)
    return states


def forecast_pattern(steps: list[dict]) -> str:
    """One character per step of a run's stats: F every call forecast, f some, . none."""
    return "".join("F" if s["forecast"] == s["calls"] > 0 else "f" if s["forecast"] else "." for s in steps)


def distinct_notes(reports: list) -> list[str]:
    """Every run's notes once; notes that only differ in their counts (one per seed) as the first seed's."""
    seen: dict[str, str] = {}
    for report in reports:
        for note in report.notes:
            seen.setdefault("".join(c for c in note if not c.isdigit()), note)
    return sorted(seen.values())


def point_figures(setup: Setup, point: Point, references: References) -> dict:
    """``point`` sampled on every seed of ``references``: the share of the uncached runs' block evaluations it
    spent, its CPU-time speedup, every image's PSNR against no cache (``dbs``, seed by seed in digit order)
    with their tails, the first seed's forecast pattern and the runs' notes."""
    patcher, _, reports = setup.patched(point)
    images, seconds = [], []
    for seed, reference in references.outputs.items():
        output, spent = cpu_timed(lambda: setup.sample(patcher, seed))
        images += per_image_psnr(decode(output), decode(reference))
        seconds.append(spent)
    run, total = sum(r.blocks_run for r in reports), sum(r.blocks_total for r in reports)
    return {"label": point.label, "share": run / total, "block_ratio": total / run,
            "speed": references.seconds() / statistics.mean(seconds), "images": tails(images), "dbs": images,
            "pattern": forecast_pattern(reports[0].to_json()["steps"]), "notes": distinct_notes(reports)}


def cpu_timed(fn):
    """``fn()`` and the CPU time it took (one thread: the wall time of an unshared core)."""
    started = time.process_time()
    result = fn()
    return result, time.process_time() - started


@dataclass
class References:
    """The uncached samples per seed, and the CPU seconds of every uncached sample timed so far."""

    outputs: dict[int, torch.Tensor]
    timings: list[float]

    @classmethod
    def sample(cls, setup: Setup, seeds) -> References:
        outputs, timings = {}, []
        for seed in seeds:
            outputs[seed], seconds = cpu_timed(lambda: setup.sample(setup.patcher, seed))
            timings.append(seconds)
        return cls(outputs, timings)

    def retime(self, setup: Setup) -> None:
        seed = next(iter(self.outputs))
        self.timings.append(cpu_timed(lambda: setup.sample(setup.patcher, seed))[1])

    def seconds(self) -> float:
        """One uncached sample's CPU time: the median, so that one slow or fast moment does not set it."""
        return statistics.median(self.timings)


def rounded(value, digits: int):
    """``value`` with every finite float in it to ``digits`` significant digits (what results files keep)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value


def run_key(sampler: str, steps: int) -> str:
    return f"{sampler}-{steps}"
