"""Equal budgets: what a schedule with a set number of full steps is compared with, and at what speed.

Speed is counted in block evaluations, as ``target_speedup`` is. The node runs block 0 on every call, so its
runs spend ``full * blocks + forecast`` of them; TaylorSeer's fixed interval and the key-step schedules run
nothing on a forecast call, so they spend ``full * blocks``: the same budget buys them
``blocks_run / blocks`` full steps, rarely a whole number. Such a schedule is therefore measured at the
whole numbers of full steps on either side of it, and its figures are read off the straight line between
the two, in block evaluations; a curve of settings (the node's tolerance) is read the same way between the
two settings on either side of the speed.
"""

from __future__ import annotations

import math

from .baselines import FixedInterval
from .methods import DEFAULT_WARMUP

EXACT_DB = 100.0  # an image that came out exactly counts as this in a line between two settings
STATS = ("worst", "p10", "median", "mean")


def full_steps_bought(blocks_run: float, blocks: int) -> float:
    """How many full steps a schedule that runs no block on its forecast calls gets for ``blocks_run``."""
    return blocks_run / blocks


def either_side(full: float, steps: int) -> list[int]:
    """The whole numbers of full steps on either side of ``full`` (one when it is one), from 2 (the first and
    the last step) to ``steps``."""
    low, high = (min(max(2, bound), steps) for bound in (math.floor(full + 1e-9), math.ceil(full - 1e-9)))
    return sorted({low, high})


def interval_full_steps(steps: int, interval: int, warmup: int) -> int:
    """How many of ``steps`` TaylorSeer's schedule computes in full."""
    schedule = FixedInterval(interval, warmup)
    return sum(schedule.is_full_step(step) for step in range(steps))


def fixed_interval_for(steps: int, full: int, warmup: int = DEFAULT_WARMUP) -> tuple[int, int] | None:
    """TaylorSeer's ``(interval, warm-up)`` that computes exactly ``full`` of ``steps`` in full: the warm-up
    nearest ``warmup`` (the benchmark's usual), then the shortest interval; None when no interval of 2 or
    more and no warm-up gives that many."""
    found = [(interval, start) for interval in range(2, steps + 1) for start in range(1, steps + 1)
             if interval_full_steps(steps, interval, start) == full]
    return min(found, key=lambda pair: (abs(pair[1] - warmup), pair[0]), default=None)


def _db(value: float) -> float:
    return min(value, EXACT_DB)


def along(low: dict, high: dict, share: float) -> dict:
    """The figures ``share`` of the way from ``low``'s to ``high``'s (both ``{"share": blocks share, "images":
    tails}``): each of STATS on a straight line, exact images counted as ``EXACT_DB``."""
    images = {key: _db(low["images"][key]) + share * (_db(high["images"][key]) - _db(low["images"][key]))
              for key in STATS}
    return {"share": low["share"] + share * (high["share"] - low["share"]), "images": images}


def at_share(points: list[dict], share: float, slack: float = 0.03) -> dict | None:
    """The figures of a curve of points (``{"share": blocks run / blocks of an uncached run, "images":
    tails}``) at ``share``: on the line between the two points either side of it, or the nearest point when
    it lies within ``slack`` (relative) of it; None when the curve does not come that close."""
    ordered = sorted(points, key=lambda p: p["share"])
    for low, high in zip(ordered, ordered[1:]):
        if low["share"] <= share <= high["share"] and high["share"] > low["share"]:
            return along(low, high, (share - low["share"]) / (high["share"] - low["share"]))
    nearest = min(ordered, key=lambda p: abs(p["share"] - share), default=None)
    if nearest is not None and abs(nearest["share"] / share - 1) <= slack:
        return {"share": nearest["share"], "images": {key: _db(nearest["images"][key]) for key in STATS}}
    return None
