"""When to compute a model call in full and when to forecast it.

All methods share one engine (caches, streams, stats); a policy only decides. The node's is
``ConfidenceGated``; the benchmark's other rules (bench/baselines) follow the same ``Policy``, which
keeps its comparisons about the decision rule and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Protocol

from .gate import ConfidenceGate
from .schedule import Schedule
from .steps import StepPoint


class Mode(Enum):
    FULL = "full"  # run every block, refresh the caches
    GATE = "gate"  # run block 0, then let the confidence gate choose FULL or FORECAST
    FORECAST = "forecast"  # skip the blocks, use the last-block forecast


# A plan: the mode, and why the call is full should it end full (a key of core/stats.py FULL_REASONS;
# the engine says "fallback" when something it found forced full compute). None: nothing to explain
# (forecasting is off).
Plan = tuple[Mode, "str | None"]


class Policy(Protocol):
    name: str  # the "method" field of the stats
    threshold: float | None
    uses_first_block: bool  # keep a Taylor cache of block 0's output (for a gate)
    calibrated: bool  # the gate judges the predicted last-block error, not block 0's own
    caches: bool  # keep any cache at all

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        """Decide before block 0; ``ready`` says every stream of the call has a forecast to offer."""
        ...

    def accepts(self, score: float) -> bool:
        """Gate verdict for a GATE call, given its score (block 0's error, or the last block's predicted one)."""
        ...

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        """How many steps of a run with these sigmas this policy could forecast at best (0 = it will do nothing)."""
        ...

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        """Read the start/end fractions as shares of the model's noise range (core/schedule.py)."""
        ...


class ConfidenceGated:
    """CG-Taylor: inside the schedule's window, forecast whenever the gate trusts the forecast.

    ``calibrated``: the threshold bounds the last block's forecast error as predicted from block 0's
    (core/calibration.py), a tolerance that means the same on every model; otherwise it bounds block
    0's own forecast error, as in the method's paper.
    """

    uses_first_block = True

    def __init__(self, threshold: float, schedule: Schedule, name: str = "cg-taylor", calibrated: bool = False) -> None:
        self.gate = ConfidenceGate(threshold)
        self.schedule = schedule
        self.name = name  # the residual baselines gate the same way under their own names
        self.calibrated = calibrated

    @property
    def threshold(self) -> float:
        return self.gate.threshold

    @property
    def caches(self) -> bool:
        return self.gate.can_accept

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        if not self.gate.can_accept:
            return Mode.FULL, None
        reason = self.schedule.why_full(step, consecutive)
        if reason in (None, "cap") and not ready:
            return Mode.FULL, "warmup"
        return (Mode.GATE, "gate") if reason is None else (Mode.FULL, reason)

    def accepts(self, score: float) -> bool:
        return self.gate.accepts(score)

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        """The open steps; the calibrated gate learns from the first one it judges (with no pair yet it
        predicts nothing, so it cannot forecast that call)."""
        if not self.gate.can_accept:
            return 0
        return max(0, self.schedule.forecastable_steps(schedule) - int(self.calibrated))

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        self.schedule = self.schedule.in_sigmas(percent_to_sigma)

