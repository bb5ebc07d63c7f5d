"""The calibrated gate: a tolerance on the last block's predicted forecast error.

The calibration learns, per stream, the ratio between the last block's forecast error and block
0's from full calls, and predicts a one-sided 90% bound of it; the gate accepts a forecast while
that prediction stays within the tolerance.
"""

import math
import random

import pytest
import torch

from core import ConfidenceGated, ForecastEngine, Mode, Schedule, StepPoint, TaylorForecaster
from core.calibration import COVERAGE, ErrorCalibration, t_quantile
from core.gate import relative_l1
from test_engine import linear_blocks, run_call

STEPS = 16


def test_no_pair_predicts_nothing_and_one_pair_predicts_conservatively():
    calibration = ErrorCalibration()
    assert calibration.predict(0.01) == math.inf  # nothing learned: nothing can be trusted
    calibration.observe(0.01, 0.03)
    assert calibration.pairs == 1
    assert calibration.predict(0.01) > 2 * 0.03  # one pair: more than twice what it showed


def test_the_bound_narrows_as_consistent_pairs_accumulate():
    calibration, bounds = ErrorCalibration(), []
    for _ in range(30):
        calibration.observe(0.02, 0.06)
        bounds.append(calibration.ratio_bound())
    assert all(later < earlier for earlier, later in zip(bounds, bounds[1:8]))
    assert 3.0 < bounds[-1] < 4.5  # the ratio is 3: the bound approaches it, the prior spread keeps a margin


def test_a_known_relation_is_recovered_from_synthetic_pairs():
    """Ratios drawn log-normally around 3 (spread 0.3, as measured on trained models): the bound
    follows their 90% quantile, and bounds the next ratio about 90% of the time."""
    rng, calibration = random.Random(0), ErrorCalibration()
    true_bound = 3.0 * math.exp(0.3 * 1.2815515655446004)
    covered, bounds = [], []
    for i in range(2000):
        first = rng.uniform(0.005, 0.1)
        last = first * 3.0 * math.exp(rng.gauss(0.0, 0.3))
        if i >= 20:
            covered.append(last <= calibration.predict(first))
            bounds.append(calibration.ratio_bound())
        calibration.observe(first, last)
    assert 0.9 <= sum(covered) / len(covered) <= 0.97
    assert true_bound * 0.95 < sorted(bounds)[len(bounds) // 2] < true_bound * 1.25


def test_recent_pairs_weigh_more_so_a_drifting_ratio_is_followed():
    calibration = ErrorCalibration()
    for _ in range(40):
        calibration.observe(0.01, 0.01)  # ratio 1 early in the run ...
    for _ in range(12):
        calibration.observe(0.01, 0.04)  # ... 4 later on
    assert calibration.ratio_bound() > 4.0


def test_pairs_that_say_nothing_are_left_out():
    calibration = ErrorCalibration()
    for first, last in ((0.0, 0.1), (math.inf, 0.1), (0.1, math.inf), (math.nan, 0.1)):
        calibration.observe(first, last)
    assert calibration.pairs == 0
    calibration.observe(0.1, 0.0)  # an exact last-block forecast is a small ratio, not a missing one
    assert calibration.pairs == 1 and calibration.ratio_bound() < 1e-3
    assert calibration.predict(0.0) == 0.0  # block 0 forecast exactly: nothing predicts a miss


@pytest.mark.parametrize(("degrees", "exact"), [(2, 1.8856), (3, 1.6377), (5, 1.4759), (10, 1.3722), (30, 1.3104)])
def test_t_quantile_matches_the_tables(degrees, exact):
    assert t_quantile(COVERAGE, degrees) == pytest.approx(exact, rel=5e-3)


# --- the gate in the engine ------------------------------------------------------------------------


def curved(position: float) -> torch.Tensor:
    """Block input moving along a curve: no Taylor forecast of order 1 is exact, so every block's
    forecast misses by a known, smoothly growing amount."""
    base = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(1, 3, 8)
    return base + 0.05 * position + 0.02 * position**2 * torch.sin(base * 5)


def calibrated(tolerance: float, warmup: int = 1, max_consecutive: int = 0) -> ForecastEngine:
    schedule = Schedule(warmup_steps=warmup, max_consecutive=max_consecutive)
    return ForecastEngine(ConfidenceGated(tolerance, schedule, calibrated=True), 1, 1)


def step_at(index: int) -> StepPoint:
    return StepPoint(index=index, position=float(index), sigma=1.0 - index / STEPS, num_steps=STEPS)


def run(engine: ForecastEngine, blocks, steps: int = STEPS) -> list:
    return [run_call(engine, blocks, curved(i), step_at(i), ["c"])[1] for i in range(steps)]


def test_the_calibrated_gate_trusts_nothing_before_its_first_pair():
    blocks = linear_blocks()
    calls = run(calibrated(tolerance=10.0), blocks)  # a tolerance no prediction reaches
    first_gated = calls[1]
    assert first_gated.mode is Mode.FULL and first_gated.reason == "gate" and first_gated.predicted == math.inf
    assert first_gated.measured is not None  # ... and the miss its forecast would have had is measured
    assert all(c.mode is Mode.FORECAST for c in calls[2:-1])


def test_acceptance_flips_exactly_where_the_prediction_crosses_the_tolerance():
    blocks = linear_blocks()
    probe = run(calibrated(tolerance=10.0, max_consecutive=1), blocks)
    # the first call with a finite prediction, and what it predicted
    index, predicted = next((i, c.predicted) for i, c in enumerate(probe) if c.predicted not in (None, math.inf))
    above = run(calibrated(tolerance=predicted * (1 + 1e-9), max_consecutive=1), blocks, steps=index + 1)
    below = run(calibrated(tolerance=predicted * (1 - 1e-9), max_consecutive=1), blocks, steps=index + 1)
    assert above[index].predicted == below[index].predicted == predicted
    assert above[index].mode is Mode.FORECAST
    assert below[index].mode is Mode.FULL and below[index].reason == "gate"


def test_a_full_call_measures_how_far_the_skipped_forecast_would_have_missed():
    """The miss is the relative L1 error of the very forecast the gate would have used, against the
    output just computed; recomputed here from a forecaster of our own."""
    blocks = linear_blocks()
    engine = calibrated(tolerance=1e-12)  # judged on every call, never accepted
    mirror = TaylorForecaster(1)
    for i in range(6):
        x = curved(i)
        expected = None if not mirror.ready or i == 0 else relative_l1([mirror.predict(i)], [_reference(blocks, x)])
        _, call = run_call(engine, blocks, x, step_at(i), ["c"])
        if expected is not None:
            assert call.measured == pytest.approx(expected, rel=1e-6)  # float32 sums
        mirror.update(_reference(blocks, x), i)
    assert engine._streams["c"].own.pairs == 5  # steps 1-5, each judged and full


def _reference(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def test_every_full_call_says_why():
    blocks = linear_blocks()
    schedule = Schedule(warmup_steps=2, end_fraction=0.75, max_consecutive=2)
    engine = ForecastEngine(ConfidenceGated(10.0, schedule, calibrated=True), 1, 1)
    calls = [run_call(engine, blocks, curved(i), step_at(i), ["c"])[1] for i in range(STEPS)]
    reasons = [None if c.mode is Mode.FORECAST else c.reason for c in calls]
    assert reasons[:2] == ["warmup", "warmup"]
    assert reasons[2] == "gate"  # no pair yet
    assert reasons[3:9] == [None, None, "cap", None, None, "cap"]
    assert reasons[12:] == ["window"] * 3 + ["edge"]
    assert engine.stats.full_reasons == {"warmup": 2, "edge": 1, "window": 3, "cap": reasons.count("cap"),
                                         "gate": 1}
    assert all(len(engine.stats.steps[i].full) == (reasons[i] is not None) for i in range(STEPS))
    # the cap's calls were judged too: the gate would have accepted them, and what they missed is known
    capped = [c for c in calls if c.reason == "cap"]
    assert all(c.predicted < 10.0 and c.measured is not None for c in capped)


def test_a_forecast_that_is_not_finite_falls_back_and_says_so():
    blocks = linear_blocks()
    engine = ForecastEngine(ConfidenceGated(10.0, Schedule(warmup_steps=1), calibrated=False), 1, 1)
    for i in range(3):
        run_call(engine, blocks, curved(i), step_at(i), ["c"])
    engine._streams["c"].last._terms[0].fill_(math.nan)
    _, call = run_call(engine, blocks, curved(3), step_at(3), ["c"])
    assert call.mode is Mode.FULL and call.reason == "fallback"
    assert engine.stats.steps[3].full == {"fallback": 1}


def test_the_stats_report_the_tolerance_and_what_was_predicted_and_measured():
    blocks = linear_blocks()
    engine = calibrated(tolerance=0.05, max_consecutive=3)
    run(engine, blocks)
    stats = engine.stats.to_json()
    assert stats["tolerance"] == stats["threshold"] == 0.05
    calibration = stats["calibration"]
    judged = engine.stats.judgements
    assert calibration["pairs"] == len(judged) > 0
    assert calibration["measured_max"] == max(j.measured for j in judged)
    accepted = engine.stats.accepted_predictions
    assert len(accepted) == engine.stats.forecast_calls and max(accepted) <= 0.05
    assert calibration["predicted_max"] == max(accepted)
    finite = [j for j in judged if j.predicted != math.inf]
    assert calibration["covered"] == sum(j.measured <= j.predicted for j in finite) / len(finite)
    summary = engine.stats.summary()
    assert "forecasts' predicted miss" in summary and "within their own prediction" in summary
    assert "forecasts in a row" in summary and "(tolerance 0.05)" in summary
    # every gated step shows its prediction, but the first (no pair yet: nothing finite to show)
    shown = [s["predicted"] is not None for s in stats["steps"]]
    assert shown == [False, False] + [True] * (STEPS - 3) + [False]


def test_the_images_of_one_call_weigh_as_one_pair():
    """A batch's images are one step's evidence: ten alike are one pair, and ten calls of one image each
    narrow the bound further than one call of ten images whose ratios spread alike."""
    one, ten_alike = ErrorCalibration(), ErrorCalibration()
    one.observe(0.01, 0.03)
    ten_alike.observe_call([(0.01, 0.03)] * 10)
    assert ten_alike.pairs == 10 and ten_alike.ratio_bound() == pytest.approx(one.ratio_bound())
    ratios = [3.0 * (1 + 0.05 * k) for k in range(10)]
    in_one_call, over_ten_calls = ErrorCalibration(), ErrorCalibration()
    in_one_call.observe_call([(0.01, 0.01 * r) for r in ratios])
    for r in ratios:
        over_ten_calls.observe(0.01, 0.01 * r)
    assert over_ten_calls.ratio_bound() < in_one_call.ratio_bound()
