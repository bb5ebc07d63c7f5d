"""Threshold curves, traced to one resolution for every method.

A fixed threshold grid samples a method's speed/fidelity curve wherever its thresholds happen to
land. Caching curves jump (a hair more threshold lets a whole cluster of steps through), so one
method can show a point just where another's grid left a gap, and a point-by-point comparison
then measures the grids rather than the methods. Every thresholded method therefore starts from
its grid and has its widest gaps filled by the same rule, blind to the other methods' points.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .methods import Curve, Point

GAP = 1.1  # neighbouring points further apart than this factor in block ratio get a point between them,
RESOLUTION = 1.05  # unless their thresholds are already this close: then the curve itself jumps there
REFINEMENTS = 5  # extra points per curve at most


def between(low: float, high: float) -> float:
    """The geometric midpoint, to three significant digits so that labels stay readable."""
    return float(f"{math.sqrt(low * high):.3g}")


def trace(curve: Curve, measure: Callable[[Point], dict]) -> list[dict]:
    """``curve``'s grid measured, then its widest block-ratio gap bisected until none is wider than
    ``GAP`` (or ``REFINEMENTS`` points were added); the measured points in threshold order."""
    measured = {t: measure(curve.make(t)) for t in curve.thresholds}
    for _ in range(REFINEMENTS):
        thresholds = sorted(measured)
        gaps = [(measured[high]["block_ratio"] / measured[low]["block_ratio"], low, high)
                for low, high in zip(thresholds, thresholds[1:]) if high / low > RESOLUTION]
        widest = max(gaps, default=None)
        if widest is None or widest[0] <= GAP:
            break
        _, low, high = widest
        threshold = between(low, high)
        measured[threshold] = measure(curve.make(threshold))
    return [measured[t] for t in sorted(measured)]
