"""SoftCap (Zhang et al., 2026, arXiv 2605.27075), reproduced from its paper for the benchmark.

Its facts: a training-free control layer on a cache-based sampler. A drift observer estimates from cheap
hidden-state statistics how risky reusing the cache is at a call; a full computation is triggered when that
risk crosses a threshold, and a proportional-integral controller moves the threshold from the compute the
run has realized against a fixed reference profile of the budget. The budget is a soft ceiling: it shapes
the threshold, it does not make the run spend a set number of full calls.

Here the observer is block 0's output against its Taylor forecast (the engine's gate on block 0's own
error, summed over the forecasts in a row), so block 0 runs on every call as the node's does; the reference
profile spends the budget evenly over the calls; the controller acts on the threshold's logarithm, starting
from the first drift observed, so its gains do not depend on the model's scale of drift. The last block is
forecast by the engine's Taylor machinery, as for every method in the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from cgtaylor_cache.core.policy import Mode, Plan
from cgtaylor_cache.core.schedule import Schedule
from cgtaylor_cache.core.steps import StepPoint

PROPORTIONAL, INTEGRAL = 2.0, 1.0  # gains on the realized share of compute minus the budget's


class SoftCap:
    """A threshold on block 0's drift that a PI controller moves toward ``budget``: the share of an uncached
    run's block evaluations to spend (1 / the speedup), a forecast call costing ``1 / blocks`` of a full one."""

    name = "softcap"
    uses_first_block = True
    calibrated = False
    caches = True

    def __init__(self, budget: float, blocks: int, schedule: Schedule = Schedule(warmup_steps=1),
                 proportional: float = PROPORTIONAL, integral: float = INTEGRAL) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be a share of the compute in (0, 1], got {budget!r}.")
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks must be a positive integer, got {blocks!r}.")
        self.budget, self.blocks, self.schedule = budget, blocks, schedule
        self.proportional, self.integral = proportional, integral
        self.calls = 0  # calls whose outcome is known
        self.spent = 0.0  # their compute, in full calls
        self._accumulated = 0.0  # the integral term's sum of errors
        self._error = 0.0
        self._scale: float | None = None  # log of the first drift observed
        self._planned = False  # a call was planned whose outcome the next plan reads

    @property
    def threshold(self) -> float | None:
        if self._scale is None:
            return None
        return math.exp(self._scale + self.proportional * self._error + self.integral * self._accumulated)

    def _settle(self, consecutive: int) -> None:
        """The previous call's outcome, read off the forecasts in a row the engine counts (one call a step)."""
        if self._planned:
            self.calls += 1
            self.spent += 1.0 / self.blocks if consecutive > 0 else 1.0
            self._error = self.spent / self.calls - self.budget
            self._accumulated += self._error

    def plan(self, step: StepPoint, consecutive: int, ready: bool) -> Plan:
        self._settle(consecutive)
        self._planned = True
        reason = self.schedule.why_full(step, consecutive)
        if reason is None and not ready:
            return Mode.FULL, "warmup"
        return (Mode.GATE, "gate") if reason is None else (Mode.FULL, reason)

    def accepts(self, score: float) -> bool:
        if not math.isfinite(score):
            return False
        if self._scale is None:  # the first drift sets the threshold's scale
            self._scale = math.log(max(score, 1e-12))
        return score < self.threshold

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        return self.schedule.forecastable_steps(schedule)

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        self.schedule = self.schedule.in_sigmas(percent_to_sigma)
