"""How far off the last block's forecast will be, learned from how far off block 0's was.

Block 0 runs on every call, so the error of its own Taylor forecast is known before anything is
skipped; the error that matters is the last block's, whose forecast replaces blocks 1..L-1. How one
maps to the other depends on the model, the sampler and the step count, which is why a threshold on
block 0's error means something different on every model. On every full call that could have been
forecast, the engine measures both: block 0's forecast error, and how far the last block's forecast
would have missed the output just computed. Each such pair teaches this calibration the ratio
between the two.

The log of that ratio is modelled as normal, and recent pairs weigh more (the ratio drifts over a
run: late steps refine detail that block 0 barely shows). The prediction is the one-sided
``COVERAGE`` bound of the next ratio (Student's t, so a handful of pairs gives a wide bound), times
block 0's error now. A prior spread worth ``PRIOR_PAIRS`` pairs keeps one or two lucky pairs from
making the bound bold; with no pair at all nothing can be predicted, and nothing is forecast.
"""

from __future__ import annotations

import math
from statistics import NormalDist

COVERAGE = 0.9  # share of last-block errors the prediction should bound from above
# Spread of log(last-block error / block-0 error) assumed before any pair (log units), and how many
# pairs that assumption weighs. Measured on the benchmark's trained models, within one run the
# 10th-90th percentile of the ratio spans a factor 1.6-3.2, a spread of 0.2-0.45.
PRIOR_SPREAD = 0.45
PRIOR_PAIRS = 2.0
MEMORY = 0.85  # weight of a pair relative to the pair after it
SMALLEST_RATIO = 1e-6  # a last-block forecast that was exact still says the ratio is small, not zero


def t_quantile(p: float, degrees: float) -> float:
    """Student's t quantile from the normal one (Cornish-Fisher, three terms): within 0.5% of the
    exact value from 2 degrees of freedom on, which is the least this module ever asks for."""
    z = NormalDist().inv_cdf(p)
    n = degrees
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3))


class ErrorCalibration:
    """Pairs of (block-0 error, last-block error) of one stream, by the full call that gave them (one per
    image of the call's batch), and the bound they predict. The images of one call are one step's evidence:
    together they weigh as much as one pair would, and the bound is as wide as the number of calls, not of
    images, makes it."""

    def __init__(self) -> None:
        self._calls: list[list[float]] = []  # log ratios per call, oldest call first

    @property
    def pairs(self) -> int:
        return sum(len(call) for call in self._calls)

    def observe(self, first_error: float, last_error: float) -> None:
        """One full call's pair (see ``observe_call``)."""
        self.observe_call([(first_error, last_error)])

    def observe_call(self, pairs: list[tuple[float, float]]) -> None:
        """One full call's pairs, an image each. Pairs that say nothing (block 0 forecast exactly, or a
        non-finite error) are left out."""
        ratios = [math.log(max(last / first, SMALLEST_RATIO)) for first, last in pairs
                  if 0.0 < first < math.inf and 0.0 <= last < math.inf]
        if ratios:
            self._calls.append(ratios)

    def ratio_bound(self) -> float:
        """The ``COVERAGE`` upper bound of the next last-block / block-0 error ratio (inf without pairs)."""
        if not self._calls:
            return math.inf
        count = len(self._calls)
        by_call = [MEMORY ** (count - 1 - i) for i in range(count)]
        weighted = [(w / len(call), x) for w, call in zip(by_call, self._calls) for x in call]
        total = sum(by_call)
        mean = sum(w * x for w, x in weighted) / total
        effective = total * total / sum(w * w for w in by_call)  # as many calls of equal weight as these weigh
        scatter = sum(w * (x - mean) ** 2 for w, x in weighted) / total * effective
        degrees = effective - 1 + PRIOR_PAIRS
        spread = math.sqrt((scatter + PRIOR_PAIRS * PRIOR_SPREAD**2) / degrees)
        return math.exp(mean + t_quantile(COVERAGE, degrees) * spread * math.sqrt(1 + 1 / effective))

    def predict(self, first_error: float) -> float:
        """The bound on the last block's forecast error, given block 0's error on this call."""
        if first_error == 0.0:
            return 0.0
        return first_error * self.ratio_bound()

    def reset(self) -> None:
        self._calls.clear()
