"""What the confidence gate decided in a benchmark point, and whether it decided well.

The engine measures, on every full call the gate judged (rejected, or would have accepted but for
the cap), how far the last block's forecast would have missed. That gives the gate an exam it did
not see coming: a good gate's score ranks the calls whose forecast would have been too far off
above those whose forecast would have been fine (AUC), and a calibrated gate's prediction bounds
the measured miss most of the time (coverage).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter

from cgtaylor_cache.core import RunStats
from cgtaylor_cache.core.stats import coverage

GATE_FORCED = ("cap", "gate")  # the full calls after the warm-up that a rule rather than the step forced


def auc(bad: list[float], good: list[float]) -> float | None:
    """P(a bad call scores above a good one), ties counting half; None without both kinds."""
    if not bad or not good:
        return None
    above = sum((b > g) + 0.5 * (b == g) for b in bad for g in good)
    return above / (len(bad) * len(good))


def finite_median(values: list[float]) -> float | None:
    """The median of the finite values (None without any)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else None


def gate_report(reports: list[RunStats]) -> dict:
    """The gate's decisions and their quality, over every run (seed) of one point."""
    reasons = Counter()
    for stats in reports:
        reasons.update(stats.full_reasons)
    judged = [j for stats in reports for j in stats.judgements]
    threshold = reports[0].threshold
    gated = sum(stats.gated for stats in reports)
    rejected = gated - sum(stats.gate_accepted for stats in reports)
    forced = sum(reasons[r] for r in GATE_FORCED)
    accepted = [p for stats in reports for p in stats.accepted_predictions if math.isfinite(p)]
    report = {
        "full": dict(reasons),
        "cap_share": reasons["cap"] / forced if forced else None,
        "rejection_share": rejected / gated if gated else None,
        "judged": len(judged),
        "measured_median": finite_median([j.measured for j in judged]),
        "measured_max": max((j.measured for j in judged if math.isfinite(j.measured)), default=None),
        "predicted_accepted_median": finite_median(accepted),
        "predicted_accepted_max": max(accepted, default=None),
    }
    if threshold and reports[0].calibrated:
        # How well each score ranks the calls whose forecast would have missed by more than the tolerance
        # above the others: the calibrated prediction the gate used, and block 0's raw error.
        # Calls judged before their stream had a pair carry no prediction: the gate could not rank them.
        ranked = [j for j in judged if math.isfinite(j.predicted)]
        bad = [j for j in ranked if j.measured > threshold]
        good = [j for j in ranked if j.measured <= threshold]
        report["auc"] = auc([j.predicted for j in bad], [j.predicted for j in good])
        report["auc_block0"] = auc([j.first_error for j in bad], [j.first_error for j in good])
    rejected_measured = [j.measured for j in judged if j.rejected]
    capped_measured = [j.measured for j in judged if not j.rejected]
    report["measured_rejected_median"] = finite_median(rejected_measured)
    report["measured_capped_median"] = finite_median(capped_measured)
    report["coverage"] = coverage(judged)
    return report
