"""Every caching method the benchmark compares, as points of one sweep on one engine.

The reference, no cache, is the unpatched model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import cgtaylor_cache.core as core
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.settings import GATE_MIN_TOKENS, GATE_SHARE, CacheSettings

from . import baselines

DEFAULT_WARMUP = 3  # TaylorSeer's warm-up (first_enhance) and the sweep's, unless a point says otherwise
METHODS = ("cg-taylor", "fixed-interval", "fbcache", "input-change", "dicache")


@dataclass(frozen=True)
class Point:
    method: str  # one of METHODS
    label: str
    settings: dict = field(default_factory=dict)
    new_engine: Callable[[], core.ForecastEngine] = field(default=None, compare=False, repr=False)
    # The node's memory ledger bounds the engine's caches, so ComfyUI's plan can count them; the
    # residual baselines keep tensors of their own and are left out of the plan.
    planned: bool = True


@dataclass(frozen=True)
class Curve:
    """One method at fixed settings over its threshold: a grid to start from, which the full sweep
    refines where the curve leaves gaps (bench/trace.py)."""

    make: Callable[[float], Point] = field(compare=False, repr=False)
    thresholds: tuple[float, ...]

    def points(self) -> list[Point]:
        return [self.make(t) for t in self.thresholds]


def cg_taylor(threshold: float, distance: str = "step", first: int = 1, last: int = 1, warmup: int = DEFAULT_WARMUP,
              max_consecutive: int = 0, residual: bool = False, gate: str = "block0") -> Point:
    """A CG-Taylor point; ``gate`` "calibrated" reads ``threshold`` as the node's tolerance on the last
    block's predicted error, "block0" as the paper's threshold on block 0's own error."""
    settings = {"threshold": threshold, "gate": gate, "distance": distance, "first_order": first, "last_order": last,
                "warmup": warmup, "max_consecutive": max_consecutive}
    if residual:
        settings["residual"] = True
    name = "tol" if gate == "calibrated" else "thr"
    label = f"{name} {threshold:g}, {distance}, orders {first}/{last}, warm-up {warmup}" + (
        f", max {max_consecutive} in a row" if max_consecutive else "") + (", residual" if residual else "")
    schedule = core.Schedule(warmup_steps=warmup, max_consecutive=max_consecutive)
    policy = partial(core.ConfidenceGated, threshold, schedule, calibrated=gate == "calibrated")
    return Point("cg-taylor", label, settings, lambda: core.ForecastEngine(policy(), first, last, distance, residual))


def fixed_interval(interval: int, order: int, warmup: int = DEFAULT_WARMUP) -> Point:
    """TaylorSeer: full every ``interval`` steps after the warm-up, Taylor forecasts of the given order between."""
    settings = {"interval": interval, "order": order, "warmup": warmup}
    return Point("fixed-interval", f"N={interval}, order {order}", settings,
                 lambda: core.ForecastEngine(baselines.FixedInterval(interval, warmup), 0, order))


def as_node(settings: dict, label: str) -> Point:
    """The node's own engine from its settings (its input names), as CacheSettings builds it for ComfyUI: the
    gate reads the node's share of block 0's tokens (``documented`` points read all of them)."""
    return Point("cg-taylor", label, dict(settings), CacheSettings(**settings).new_engine)


def key_steps(full: frozenset[int], method: str) -> Point:
    """A schedule of key steps chosen before the run (DPCache's, BudCache's): full there, Taylor forecasts of
    the node's last-block order between, block 0 not run on forecast calls (as TaylorSeer's)."""
    return Point(method, f"{len(full)} key steps", {"full": sorted(full)},
                 lambda: core.ForecastEngine(baselines.KeySteps(full, method), 0, DEFAULTS["last_block_order"]))


def softcap(budget: float, blocks: int) -> Point:
    """SoftCap's controller on block 0's drift (bench/baselines/softcap.py), spending ``budget`` of an uncached
    run's block evaluations; block 0 read at the node's share of its tokens, the node's Taylor orders."""
    d = DEFAULTS
    return Point("softcap", f"budget {budget:.3f}", {"budget": budget},
                 lambda: core.ForecastEngine(baselines.SoftCap(budget, blocks), d["first_block_order"],
                                             d["last_block_order"], gate_share=GATE_SHARE, gate_minimum=GATE_MIN_TOKENS))


def fbcache(threshold: float) -> Point:
    """First-block cache with its published rule: no warm-up beyond the first step."""
    return Point("fbcache", f"thr {threshold:g}", {"threshold": threshold}, lambda: baselines.FirstBlockCache(threshold),
                 planned=False)


def input_change(threshold: float) -> Point:
    """EasyCache-style whole-stack reuse with ComfyUI EasyCache's default window (15% to 95% of the steps)."""
    schedule = core.Schedule(start_fraction=0.15, end_fraction=0.95)
    return Point("input-change", f"thr {threshold:g}", {"threshold": threshold},
                 lambda: baselines.InputChangeCache(threshold, schedule), planned=False)


def dicache(threshold: float) -> Point:
    """DiCache-style probe-aligned residual reuse (bench/baselines/dicache.py), with CG-Taylor's sweep warm-up."""
    schedule = core.Schedule(warmup_steps=DEFAULT_WARMUP)
    return Point("dicache", f"thr {threshold:g}", {"threshold": threshold},
                 lambda: baselines.ProbeAlignedCache(threshold, schedule), planned=False)


# The README's documented choices, measured next to the node default: a faster one for deterministic
# samplers (every run) and one for samplers that inject noise (their runs).
CLOSER = {**DEFAULTS, "tolerance": 0.1}
FASTER = {**DEFAULTS, "tolerance": 0.4}
# A sampler that injects noise every step: forecast what the blocks after block 0 add (the smooth
# part) and alternate forecasts with full steps, so no forecast builds on another; the alternation, not
# the tolerance, sets the pace. Judged by block 0's own error: the calibrated gate counts the fresh noise
# as each image's predicted miss and forecasts almost nothing there (1.0-1.1x at every tolerance up to 1
# in the bench's euler_ancestral runs).
STOCHASTIC = {**DEFAULTS, "gate": "block0", "tolerance": 0.5, "max_consecutive": 1, "forecast_residual": True}


def documented(settings: dict) -> Point:
    """A CG-Taylor point from the node's own settings (its input names)."""
    s = settings
    return cg_taylor(s["tolerance"], s["distance"], s["first_block_order"], s["last_block_order"], s["warmup_steps"],
                     s["max_consecutive"], s.get("forecast_residual", False), s.get("gate", "calibrated"))


def node_default() -> Point:
    """What users get out of the box."""
    return documented(DEFAULTS)


def documented_settings(sampler: str) -> dict[str, dict]:
    """The README's documented settings measured in a run with ``sampler``, by their names there."""
    if sampler == "euler":
        return {"closer": CLOSER, "faster": FASTER}
    return {"stochastic": STOCHASTIC}


def cg_curve(thresholds: tuple[float, ...], **settings) -> Curve:
    return Curve(partial(cg_taylor, **settings), thresholds)


def sweep(quick: bool, sampler: str = "euler") -> list[Point | Curve]:
    """The points and threshold curves of one run: the quick sweep (6-block models, `make demo`), or
    the full one on the deep models, smaller for a stochastic sampler (its runs mostly show which
    methods still work)."""
    d = DEFAULTS
    node = dict(first=d["first_block_order"], last=d["last_block_order"], warmup=d["warmup_steps"])
    if quick:
        cg = [cg_taylor(t, gate="calibrated", max_consecutive=d["max_consecutive"], **node)
              for t in (0.02, 0.05, 0.2, 0.5)] + [node_default()]
        fixed = [fixed_interval(n, 1) for n in (2, 3, 4, 6)] + [fixed_interval(3, 2)]
        fb = [fbcache(t) for t in (0.05, 0.1, 0.3)]
        ic = [input_change(t) for t in (0.1, 0.3, 0.8)]
        di = [dicache(t) for t in (0.1, 0.3)]
        return [*cg, *fixed, *fb, *ic, *di]
    if sampler != "euler":
        cg = [cg_curve((0.1, 0.3, 1.0), gate="calibrated", max_consecutive=m, residual=True, **node) for m in (1, 2)]
        cg += [cg_curve((0.3, 0.5, 1.0), gate="block0", max_consecutive=m, residual=r, **node)
               for m in (1, 2) for r in (False, True)]
        fixed = [fixed_interval(n, o) for n in (2, 3) for o in (0, 1)]
        return [*cg, *fixed, Curve(fbcache, (0.1, 0.2, 0.3)), Curve(input_change, (0.1, 0.3)),
                Curve(dicache, (0.3, 0.5))]
    # The node's calibrated gate over its tolerance in each forecast mode (distance x residual), at the
    # default orders, warm-up and cap; the method paper's gate on block 0's own error beside it, uncapped,
    # from nearly exact to far faster than any cap allows, and in the block-0 distance + residual mode; and
    # the earlier default's pace, a loose block-0 threshold with a cap on forecasts in a row.
    calibrated = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    cg = [cg_curve(calibrated, gate="calibrated", distance=distance, residual=residual,
                   max_consecutive=d["max_consecutive"], **node)
          for distance, residual in (("step", False), ("block0", False), ("step", True))]
    cg.append(cg_curve((0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), gate="block0", **node))
    cg.append(cg_curve((0.005, 0.01, 0.02, 0.05, 0.1, 0.2), gate="block0", distance="block0", residual=True, **node))
    cg += [cg_taylor(0.3, gate="block0", max_consecutive=m, **node) for m in (1, 2, 3, 4)]
    fixed = [fixed_interval(n, o) for n in (2, 3, 4, 5, 6) for o in (1, 2)]
    fb = Curve(fbcache, (0.02, 0.05, 0.1, 0.2, 0.3, 0.5))
    ic = Curve(input_change, (0.05, 0.1, 0.2, 0.3, 0.5, 0.8))
    di = Curve(dicache, (0.02, 0.05, 0.1, 0.2, 0.3, 0.5))
    return [*cg, *fixed, fb, ic, di]
