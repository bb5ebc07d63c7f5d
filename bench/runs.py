"""The benchmark's sampling runs on the digit task, shared by every script that samples them.

A ``Setup`` is one trained tiny model with its prompts, step count and sampler, sampled through
ComfyUI's stand-in (bench/standin/sampling.py) unpatched or with the node's hooks installed
(nodes/runtime.py); ``References`` are its uncached samples and their CPU times. The families,
their (sampler, steps) runs and where the results go are here too, so bench.run, bench.report and
the scripts they call (gate_exam, gate_subset, samplers, heun) import them from one place, never
from each other.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cgtaylor_cache.nodes.families import BlockLayout, detect
from cgtaylor_cache.nodes.runtime import PREPARE_SAMPLING, WRAPPER_KEY, CacheRuntime, install

from .digits import CLASSES, Prompts
from .methods import Point
from .standin.patcher import ModelPatcher
from .standin.sampling import Cond, sample
from .weights import LAYOUT, SHIFT, load_trained

RESULTS = Path(__file__).resolve().parent / "results"
STEPS, CFG = 20, 3.0  # the quick sweep's steps; the full sweep's are in FULL_RUNS
LATENT_SHAPE = {"flux": (4, 8, 8), "wan": (4, 3, 8, 8), "qwen": (4, 8, 8)}
QUICK_FAMILIES = ("flux", "wan", "qwen")
FULL_FAMILIES = ("flux_deep", "wan_deep", "wan_rough", "qwen")
# (sampler, steps) per family: FLUX.1 is run at 28-50 steps, Wan at 30-50; 12 and 20 steps are where
# block 0 moves most per step, and where a gate that cannot tell a good forecast from a bad one loses most.
FULL_RUNS = {
    "flux_deep": (("euler", 12), ("euler", 20), ("euler", 28), ("euler", 50), ("euler_ancestral", 50)),
    "wan_deep": (("euler", 12), ("euler", 20), ("euler", 30), ("euler", 50), ("euler_ancestral", 50)),
    "wan_rough": (("euler", 12), ("euler", 20), ("euler", 30), ("euler", 50)),
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

    def sample(self, patcher: ModelPatcher, seed: int, cfg: float = CFG, callback=None) -> torch.Tensor:
        """One run on ``seed``'s noise; a stochastic sampler draws its fresh noise from the same seed."""
        return sample(patcher, self.noise(seed), self.positive, self.negative, cfg=cfg, steps=self.steps,
                      sampler=self.sampler, shift=SHIFT[self.family], callback=callback, seed=seed)

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


def run_key(sampler: str, steps: int) -> str:
    return f"{sampler}-{steps}"
