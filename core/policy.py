"""When to compute a model call in full and when to forecast it.

All methods share one engine (caches, streams, stats); a policy only decides. That
keeps comparisons in the benchmark about the decision rule and nothing else.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from .gate import ConfidenceGate
from .schedule import Schedule
from .steps import StepPoint


class Mode(Enum):
    FULL = "full"  # run every block, refresh the caches
    GATE = "gate"  # run block 0, then let the confidence gate choose FULL or FORECAST
    FORECAST = "forecast"  # skip the blocks, use the last-block forecast


class Policy(Protocol):
    name: str  # the "method" field of the stats
    threshold: float | None
    uses_first_block: bool  # keep a Taylor cache of block 0's output (for a gate)
    caches: bool  # keep any cache at all

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Mode:
        """Decide before block 0; ``ready`` says every stream of the call has a forecast to offer."""
        ...

    def accepts(self, error: float) -> bool:
        """Gate verdict for a GATE call, given block 0's relative forecast error."""
        ...

    def forecastable_steps(self, num_steps: int) -> int:
        """How many steps of a run this policy could forecast at best (0 = it will do nothing)."""
        ...


class AlwaysFull:
    """No caching: every call runs every block. The reference for exactness and speed."""

    name = "none"
    threshold = None
    uses_first_block = False
    caches = False

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Mode:
        return Mode.FULL

    def accepts(self, error: float) -> bool:
        return False

    def forecastable_steps(self, num_steps: int) -> int:
        return 0


class ConfidenceGated:
    """CG-Taylor: inside the schedule's window, forecast whenever block 0 was predicted well."""

    uses_first_block = True

    def __init__(self, threshold: float, schedule: Schedule, name: str = "cg-taylor") -> None:
        self.gate = ConfidenceGate(threshold)
        self.schedule = schedule
        self.name = name  # the residual baselines gate the same way under their own names

    @property
    def threshold(self) -> float:
        return self.gate.threshold

    @property
    def caches(self) -> bool:
        return self.gate.can_accept

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Mode:
        if ready and self.gate.can_accept and self.schedule.allows_forecast(step.index, step.num_steps, consecutive):
            return Mode.GATE
        return Mode.FULL

    def accepts(self, error: float) -> bool:
        return self.gate.accepts(error)

    def forecastable_steps(self, num_steps: int) -> int:
        return self.schedule.forecastable_steps(num_steps) if self.gate.can_accept else 0


class FixedInterval:
    """TaylorSeer's schedule: after ``warmup_steps`` full steps, one full step then ``interval - 1`` forecasts."""

    name = "fixed-interval"
    threshold = None
    uses_first_block = False
    caches = True

    def __init__(self, interval: int, warmup_steps: int = 3) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f"interval must be an integer >= 1, got {interval!r}.")
        if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
            raise ValueError(f"warmup_steps must be an integer >= 1, got {warmup_steps!r}.")
        self.interval = interval
        self.warmup_steps = warmup_steps

    def is_full_step(self, step: int) -> bool:
        return step < self.warmup_steps or (step - self.warmup_steps + 1) % self.interval == 0

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Mode:
        return Mode.FORECAST if ready and not self.is_full_step(step.index) else Mode.FULL

    def accepts(self, error: float) -> bool:
        return False

    def forecastable_steps(self, num_steps: int) -> int:
        return sum(not self.is_full_step(step) for step in range(num_steps))
