"""Taylor forecaster: exact on polynomials, ramps its order, copies what it stores."""

import pytest
import torch

from core import TaylorForecaster


def polynomial(degree: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    coefficients = [torch.randn(2, 3, 5, generator=generator, dtype=torch.float64) for _ in range(degree + 1)]
    return lambda x: sum(c * x**i for i, c in enumerate(coefficients))


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
@pytest.mark.parametrize(
    "positions",
    [[0, 1, 2, 3, 4, 5], [0, 1, 3, 4, 8, 9], [0.0, 0.5, 2.25, 3.0, 7.5, 8.0]],
    ids=["uniform", "uneven-int", "uneven-float"],
)
def test_exact_on_polynomials_of_degree_up_to_order(order, positions):
    feature = polynomial(order, seed=order)
    forecaster = TaylorForecaster(order)
    for x in positions:
        forecaster.update(feature(x), x)
    for target in (positions[-1] + 0.5, positions[-1] + 1, positions[-1] + 4.25):
        torch.testing.assert_close(forecaster.predict(target), feature(target), rtol=1e-9, atol=1e-8)


def test_order_ramps_up_one_refresh_at_a_time():
    forecaster = TaylorForecaster(3)
    feature = polynomial(3)
    orders = []
    for x in [0, 1, 2, 4, 5, 7]:
        forecaster.update(feature(x), x)
        orders.append(forecaster.current_order)
    assert orders == [0, 1, 2, 3, 3, 3]


def test_too_low_order_is_not_exact_on_higher_degree():
    """Guards the test above: a first-order forecaster must miss a cubic."""
    feature = polynomial(3)
    forecaster = TaylorForecaster(1)
    for x in [0, 1, 2, 3]:
        forecaster.update(feature(x), x)
    assert (forecaster.predict(5) - feature(5)).abs().max() > 1e-3


def test_first_order_matches_taylorseer_recursion():
    """For order 1 the divided difference equals the papers' (f_new - f_old) / gap."""
    a, b = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    forecaster = TaylorForecaster(1)
    forecaster.update(a, 2)
    forecaster.update(b, 5)
    torch.testing.assert_close(forecaster.predict(9), b + (b - a) / 3 * 4)


def test_order_zero_reuses_the_last_value():
    forecaster = TaylorForecaster(0)
    forecaster.update(torch.ones(3), 0)
    forecaster.update(torch.full((3,), 2.0), 1)
    assert torch.equal(forecaster.predict(7), torch.full((3,), 2.0))


def test_stored_tensors_are_copies_and_predictions_are_new():
    forecaster = TaylorForecaster(1)
    first, second = torch.zeros(4), torch.ones(4)
    forecaster.update(first, 0)
    forecaster.update(second, 1)
    second.add_(100.0)  # ComfyUI's FLUX blocks update their inputs in place
    first.add_(100.0)
    prediction = forecaster.predict(2)
    assert torch.equal(prediction, torch.full((4,), 2.0))
    prediction.add_(5.0)
    assert torch.equal(forecaster.predict(2), torch.full((4,), 2.0))
    stored = {t.data_ptr() for t in forecaster.tensors()}
    assert first.data_ptr() not in stored and second.data_ptr() not in stored


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("positions", [[0, 1, 2, 3, 4, 5], [0.0, 0.5, 2.25, 3.0, 7.5, 8.0]], ids=["uniform", "uneven"])
def test_a_second_feature_at_the_newest_position_replaces_the_first(order, positions):
    """Heun's predictor lands on a position first, its corrected trajectory second: after every
    position got a wrong value then the right one, the forecaster is exactly the one that only
    ever saw the right ones (polynomial of degree order: exact), also once it is at full order."""
    feature = polynomial(order, seed=order + 10)
    wrong = polynomial(order, seed=order + 20)
    replaced, clean = TaylorForecaster(order), TaylorForecaster(order)
    for x in positions:
        assert replaced.update(wrong(x), x)
        assert replaced.update(feature(x), x)
        clean.update(feature(x), x)
        assert replaced.current_order == clean.current_order and replaced.anchor == x
        for target in (x + 0.5, x + 3.25):
            torch.testing.assert_close(replaced.predict(target), clean.predict(target), rtol=1e-9, atol=1e-9)
            if len(replaced.tensors()) == order + 1:  # enough points for the degree: exact
                torch.testing.assert_close(replaced.predict(target), feature(target), rtol=1e-9, atol=1e-7)
    assert len(replaced.tensors()) == min(order + 1, len(positions))


def test_replacing_the_newest_value_follows_the_later_one():
    forecaster = TaylorForecaster(1)
    forecaster.update(torch.zeros(2), 0.0)
    forecaster.update(torch.full((2,), 5.0), 1.0)  # the predictor stage
    assert forecaster.update(torch.ones(2), 1.0)  # the corrected trajectory at the same position
    assert torch.equal(forecaster.predict(3.0), torch.full((2,), 3.0))  # slope 1 from (0, 0), (1, 1)


def test_an_older_repeated_position_keeps_the_cache():
    forecaster = TaylorForecaster(2)
    forecaster.update(torch.zeros(2), 1.0)
    forecaster.update(torch.ones(2), 2.0)
    assert not forecaster.update(torch.full((2,), 9.0), 1.0)
    assert forecaster.current_order == 1 and forecaster.anchor == 2.0
    assert torch.equal(forecaster.predict(3.0), torch.full((2,), 2.0))


def test_memory_is_bounded_by_order_plus_one():
    forecaster = TaylorForecaster(2)
    for x in range(10):
        forecaster.update(torch.randn(8), x)
    assert len(forecaster.tensors()) == 3


def test_shape_change_starts_afresh():
    forecaster = TaylorForecaster(1)
    forecaster.update(torch.zeros(2, 3), 0)
    forecaster.update(torch.ones(2, 3), 1)
    forecaster.update(torch.full((4, 3), 5.0), 2)
    assert forecaster.current_order == 0
    assert torch.equal(forecaster.predict(3), torch.full((4, 3), 5.0))


def test_half_precision_is_extrapolated_in_float32_and_stored_in_its_dtype():
    forecaster = TaylorForecaster(1)
    base = torch.full((16,), 1000.0)
    forecaster.update(base.to(torch.bfloat16), 0)
    forecaster.update((base + 8).to(torch.bfloat16), 1)
    assert all(t.dtype == torch.bfloat16 for t in forecaster.tensors())
    prediction = forecaster.predict(2)
    assert prediction.dtype == torch.bfloat16
    assert torch.equal(prediction.float(), torch.full((16,), 1016.0))


@pytest.mark.parametrize("order", [-1, 5, 1.5, True, "2"])
def test_bad_order_is_a_clear_error(order):
    with pytest.raises(ValueError, match="order must be an integer from 0 to 4"):
        TaylorForecaster(order)


def test_predict_before_update_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before any update"):
        TaylorForecaster(1).predict(0)


def test_progress_finds_the_offset_along_the_linear_trend():
    start, slope = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    forecaster = TaylorForecaster(2)
    for position in (0.0, 2.0, 3.0):  # uneven gaps: the newest divided difference is the slope
        forecaster.update(start + position * slope, position)
    assert forecaster.progress(start + 3.0 * slope) == pytest.approx(0.0, abs=1e-12)
    assert forecaster.progress(start + 4.5 * slope) == pytest.approx(1.5, rel=1e-12)
    assert forecaster.progress(start + 1.0 * slope) == pytest.approx(-2.0, rel=1e-12)  # behind the newest refresh
    # What is off the trend does not move the estimate: only the part along the slope counts.
    across = torch.randn(4, 6, dtype=torch.float64)
    across -= (across * slope).sum() / (slope * slope).sum() * slope
    assert forecaster.progress(start + 4.5 * slope + 10 * across) == pytest.approx(1.5, rel=1e-9)


def test_progress_needs_a_trend():
    forecaster = TaylorForecaster(1)
    feature = torch.ones(3)
    assert forecaster.progress(feature) is None  # nothing cached
    forecaster.update(feature, 0.0)
    assert forecaster.progress(feature) is None  # one refresh: no slope yet
    forecaster.update(feature, 1.0)
    assert forecaster.progress(2 * feature) is None  # a flat trend says nothing about where we are


@pytest.mark.parametrize("lower", [0, 1, 2])
def test_a_lower_order_forecast_uses_the_newest_refreshes_only(lower):
    """Uneven gaps, a cubic cache: asked for a lower order, the forecast is exact on a polynomial of
    that degree through the newest refreshes, whatever the older ones held."""
    feature, other = polynomial(lower, seed=5), polynomial(3, seed=6)
    positions = [0.0, 1.5, 2.0, 3.5]
    forecaster = TaylorForecaster(3)
    for n, x in enumerate(positions):  # the older refreshes follow another curve altogether
        forecaster.update(feature(x) if n >= len(positions) - lower - 1 else other(x), x)
    torch.testing.assert_close(forecaster.predict(5.0, lower), feature(5.0), rtol=1e-9, atol=1e-8)
    assert not torch.allclose(forecaster.predict(5.0), feature(5.0))  # the cubic through all four misses
