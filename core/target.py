"""A speed the user asks for: a budget of forecasts, spent where the gate predicts they cost the image least.

Without a target the tolerance decides each call, and the speed follows from the model, sampler, cfg and
step count. With one, the run needs so many forecasts that its block evaluations come to ``1 / target`` of
the uncached run's. A fixed threshold on what the gate weighs (a call's guided miss times its step's weight,
plus what the forecasts in a row before it scored, core/engine.py) spends forecasts where they cost least,
so the run looks for the threshold that would give it just the forecasts it still needs, and applies it.

It finds it by playing the rest of the run out: each step still to come is expected to miss as the run's
judged calls did at the same distance from their last full call (a miss growing as a power of the distance,
fitted to them; the Taylor order's own power until distances differ), times its step's weight; a forecast
adds its expected score to the run's total, a full call (the gate's, the cap's or the schedule's) starts it
afresh. The smallest threshold under which that play-out reaches the budget is the one applied to this call,
and found again at the next one from what the run has shown by then.

Whatever the target, a run of forecasts never adds up to more than ``GUARD``: three times the default
tolerance. A target that would need more is not reached, and the statistics say what was and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GUARD = 0.6
# Judged calls the run needs before the misses they showed set the play-out's level.
HISTORY = 2
# Bisections of the threshold between 0 and the guard: a relative precision far below any miss's.
SEARCH = 30


@dataclass
class Budget:
    """Where a run stands against its target when a call is judged: its blocks so far, the blocks of one full
    call, the calls per step, every call still to come (this one included), and the steps after this one
    as ``(step weight, open)``: whether the schedule lets the gate judge it. ``run`` and ``spent`` are the
    forecasts in a row before this call and what they scored; ``cap`` the most allowed in a row (0: none)."""

    blocks_run: int
    blocks_total: int
    blocks_per_call: int
    calls_left: int
    per_step: int = 1
    ahead: list[tuple[float, bool]] = field(default_factory=list)
    run: int = 0
    spent: float = 0.0
    cap: int = 0

    @property
    def open_left(self) -> int:
        return self.per_step * (1 + sum(open_ for _, open_ in self.ahead))

    def forecasts_needed(self, speedup: float) -> int:
        """How many of the remaining calls must be forecast (each runs block 0 only) for the run to reach it."""
        if self.blocks_per_call <= 1:
            return 0
        all_full = self.blocks_run + self.calls_left * self.blocks_per_call
        allowed = (self.blocks_total + self.calls_left * self.blocks_per_call) / speedup
        return max(0, math.ceil((all_full - allowed) / (self.blocks_per_call - 1) - 1e-9))


@dataclass
class SpeedTarget:
    """A run's speed target (``speedup`` 0: none) and the judged calls it has seen: each one's predicted miss
    before its step's weight, and its distance in steps from its streams' last full call."""

    speedup: float
    order: int = 2  # the last block's Taylor order: its misses grow as distance ** (order + 1) at first
    seen: list[tuple[float, float]] = field(default_factory=list)  # (distance, miss)
    refused: int = 0  # forecasts the budget wanted that the guard refused
    reached: bool = False  # the run had all the forecasts it needed at some call

    def __post_init__(self) -> None:
        if not (self.speedup == 0.0 or 1.0 <= self.speedup < math.inf):
            raise ValueError(f"target_speedup must be 0 (off) or at least 1, got {self.speedup!r}.")

    @property
    def on(self) -> bool:
        return self.speedup > 0.0

    def judge(self, total: float, miss: float, distance: float, budget: Budget) -> bool:
        """Decide a judged call from its ``total`` (what the gate weighs), ``miss`` (its predicted miss before
        its step's weight) and ``distance`` (steps since its streams' last full call), then record it: forecast
        when the budget wants it and the guard allows it; a forecast the guard refused is counted."""
        wanted = self._wanted(total, budget)
        if math.isfinite(miss) and miss > 0.0 and distance > 0.0:
            self.seen.append((distance, miss))
        if wanted and total >= GUARD:
            self.refused += 1
        return wanted and total < GUARD

    def _wanted(self, total: float, budget: Budget) -> bool:
        needed = budget.forecasts_needed(self.speedup)
        if needed <= 0:
            self.reached = True
            return False
        if not math.isfinite(total):
            return False
        if needed >= budget.open_left or len(self.seen) < HISTORY:
            return True  # every open call is needed, or nothing to plan from yet: the guard alone decides
        growth = self._growth()
        if self._forecasts(math.inf, total, budget, growth) < needed:
            return True  # not even forecasting everything the cap allows reaches it
        low, high = 0.0, GUARD
        for _ in range(SEARCH):
            middle = (low + high) / 2
            if self._forecasts(middle, total, budget, growth) >= needed:
                high = middle
            else:
                low = middle
        return total < high

    def _growth(self) -> tuple[float, float]:
        """``(level, power)``: a miss at distance ``d`` is expected at ``level * d ** power``. The power is
        fitted in logs where the distances seen differ (never below 1), else the Taylor order's; the level is
        the median of what the misses seen say at distance 1."""
        power = float(self.order + 1)
        logs = [(math.log(d), math.log(m)) for d, m in self.seen]
        mean_d = sum(d for d, _ in logs) / len(logs)
        spread = sum((d - mean_d) ** 2 for d, _ in logs)
        if spread > 1e-6:
            mean_m = sum(m for _, m in logs) / len(logs)
            power = max(1.0, sum((d - mean_d) * (m - mean_m) for d, m in logs) / spread)
        levels = sorted(m / d**power for d, m in self.seen)
        return levels[len(levels) // 2], power

    def _forecasts(self, threshold: float, total: float, budget: Budget, growth: tuple[float, float]) -> int:
        """How many forecasts the rest of the run would make under ``threshold``: this call with its own
        total, then every step ahead at its expected miss."""
        level, power = growth
        count = 0
        if total < threshold:
            count += budget.per_step
            run, spent = budget.run + 1, total
        else:
            run, spent = 0, 0.0
        for weight, open_ in budget.ahead:
            capped = budget.cap and run >= budget.cap
            expected = spent + weight * level * (run + 1) ** power
            if open_ and not capped and expected < threshold:
                count += budget.per_step
                run, spent = run + 1, expected
            else:
                run, spent = 0, 0.0
        return count

    def reset(self) -> None:
        self.seen.clear()
        self.refused = 0
        self.reached = False
