"""Decision rules without a gate: no caching at all, TaylorSeer's fixed interval, and a schedule of key steps
chosen before the run (DPCache's and BudCache's, bench/baselines/path_plan.py and budget_search.py).

Both are policies in core/policy.py's sense (``Policy``), driven by the node's own engine, so a
comparison in the benchmark is about the decision rule and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from cgtaylor_cache.core.policy import Mode, Plan
from cgtaylor_cache.core.steps import StepPoint


class AlwaysFull:
    """No caching: every call runs every block. The reference for exactness and speed."""

    name = "none"
    threshold = None
    uses_first_block = False
    calibrated = False
    caches = False

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        return Mode.FULL, None

    def accepts(self, score: float) -> bool:
        return False

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        return 0

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        pass


class FixedInterval:
    """TaylorSeer's schedule: after ``warmup_steps`` full steps, one full step then ``interval - 1`` forecasts."""

    name = "fixed-interval"
    threshold = None
    uses_first_block = False
    calibrated = False
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

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        if step.index < self.warmup_steps or not ready:
            return Mode.FULL, "warmup"
        # the fixed interval caps every run of forecasts at interval - 1
        return (Mode.FULL, "cap") if self.is_full_step(step.index) else (Mode.FORECAST, None)

    def accepts(self, score: float) -> bool:
        return False

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        return sum(not self.is_full_step(step) for step in range(len(schedule) - 1))

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        pass  # a fixed interval has no window


class KeySteps:
    """A static schedule: the key steps are computed in full, every other step is forecast from them.

    ``name`` is the scheduler that chose the key steps (the "method" field of the stats)."""

    threshold = None
    uses_first_block = False
    calibrated = False
    caches = True

    def __init__(self, full: Iterable[int], name: str = "key-steps") -> None:
        self.full = frozenset(int(step) for step in full)
        if not self.full or min(self.full) < 0:
            raise ValueError(f"key steps must be step indices >= 0, at least one, got {sorted(self.full)}.")
        self.name = name

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        if not ready:
            return Mode.FULL, "warmup"
        # like the fixed interval, the schedule caps each run of forecasts where its next key step falls
        return (Mode.FULL, "cap") if step.index in self.full else (Mode.FORECAST, None)

    def accepts(self, score: float) -> bool:
        return False

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        return sum(step not in self.full for step in range(1, len(schedule) - 1))

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        pass  # key steps have no window
