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

# Neighbouring points further apart than either of these get a point between them ...
GAP = 1.1  # ... factor in block ratio
DB_GAP = 3.0  # ... dB of PSNR between two lossy points (next to a lossless one only speed counts)
RESOLUTION = 1.05  # unless their thresholds are already this close: then the curve itself jumps there
REFINEMENTS = 12  # extra points per curve at most


def between(low: float, high: float) -> float:
    """The geometric midpoint, to three significant digits so that labels stay readable."""
    return float(f"{math.sqrt(low * high):.3g}")


def width(low: dict, high: dict) -> float:
    """How far apart two neighbouring points are, in units of the allowed gap (above 1: too far)."""
    speed = math.log(high["block_ratio"] / low["block_ratio"]) / math.log(GAP)
    fidelity = low["psnr"] - high["psnr"]
    # No loss at all to the first loss is infinitely many dB, however little speed lies between:
    # bisecting there would spend the budget on curves' first percent of speed-up.
    return max(speed, fidelity / DB_GAP if math.isfinite(fidelity) else 0.0)


def trace(curve: Curve, measure: Callable[[Point], dict]) -> list[dict]:
    """``curve``'s grid measured, then its widest gap bisected until no neighbours are too far apart
    (or ``REFINEMENTS`` points were added); the measured points in threshold order."""
    measured = {t: measure(curve.make(t)) for t in curve.thresholds}
    for _ in range(REFINEMENTS):
        thresholds = sorted(measured)
        gaps = [(width(measured[low], measured[high]), low, high)
                for low, high in zip(thresholds, thresholds[1:]) if high / low > RESOLUTION]
        widest = max(gaps, default=None)
        if widest is None or widest[0] <= 1.0:
            break
        _, low, high = widest
        threshold = between(low, high)
        measured[threshold] = measure(curve.make(threshold))
    return [measured[t] for t in sorted(measured)]
