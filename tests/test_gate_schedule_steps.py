"""Gate metric, step schedule and locating calls in the sigma schedule."""

import math

import pytest
import torch

from core import ConfidenceGate, Schedule, locate, relative_l1


def test_relative_l1_is_mean_abs_error_over_mean_abs_output():
    actual = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    predicted = torch.tensor([[1.5, -2.0], [2.0, -4.0]])
    assert relative_l1([predicted], [actual]) == pytest.approx((0.5 + 1.0) / 4 / (10 / 4))


def test_relative_l1_over_several_streams_equals_the_whole_tensor():
    actual = torch.randn(4, 6, 8)
    predicted = actual + 0.1 * torch.randn(4, 6, 8)
    whole = relative_l1([predicted], [actual])
    split = relative_l1(list(predicted.chunk(2)), list(actual.chunk(2)))
    assert split == pytest.approx(whole, rel=1e-6)
    assert whole == pytest.approx(((predicted - actual).abs().mean() / actual.abs().mean()).item(), rel=1e-6)


@pytest.mark.parametrize("actual", [torch.zeros(3), torch.tensor([1.0, float("nan"), 2.0])])
def test_relative_l1_is_infinite_when_it_cannot_be_trusted(actual):
    assert relative_l1([torch.ones(3)], [actual]) == math.inf


def test_relative_l1_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="does not match"):
        relative_l1([torch.zeros(2, 3)], [torch.zeros(3, 2)])


def test_gate_threshold_zero_never_accepts():
    gate = ConfidenceGate(0.0)
    assert not gate.can_accept
    assert not gate.accepts(0.0)
    assert ConfidenceGate(0.1).accepts(0.05)
    assert not ConfidenceGate(0.1).accepts(0.1)


@pytest.mark.parametrize("threshold", [-0.1, float("nan"), float("inf")])
def test_gate_rejects_bad_thresholds(threshold):
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        ConfidenceGate(threshold)


def test_schedule_keeps_warmup_first_and_last_step_full():
    schedule = Schedule(warmup_steps=3)
    open_steps = [s for s in range(10) if schedule.why_full(s, 10, consecutive=0) is None]
    assert open_steps == [3, 4, 5, 6, 7, 8]
    assert Schedule(warmup_steps=0).why_full(0, 10, 0) is not None  # the first step is always full
    assert schedule.forecastable_steps(10) == 6


def test_schedule_window_by_fraction_of_steps():
    schedule = Schedule(warmup_steps=0, start_fraction=0.2, end_fraction=0.6)
    assert [s for s in range(10) if schedule.in_window(s, 10)] == [2, 3, 4, 5]


def test_schedule_caps_consecutive_forecasts():
    schedule = Schedule(max_consecutive=2)
    assert schedule.why_full(5, 10, consecutive=1) is None
    assert schedule.why_full(5, 10, consecutive=2) is not None
    assert Schedule(max_consecutive=0).why_full(5, 10, consecutive=1000) is None


def test_schedule_with_nothing_left_to_forecast():
    assert Schedule(warmup_steps=4).forecastable_steps(4) == 0
    assert Schedule().forecastable_steps(2) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"max_consecutive": 1.5}, "max_consecutive must be an integer >= 0"),
        ({"start_fraction": 1.2}, "start_fraction must be a number from 0 to 1"),
        ({"start_fraction": 0.7, "end_fraction": 0.3}, "must be below end_fraction"),
    ],
)
def test_schedule_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


SIGMAS = [1.0, 0.8, 0.5, 0.3, 0.0]


def test_locate_scheduled_sigmas():
    points = [locate(s, SIGMAS) for s in SIGMAS[:-1]]
    assert [p.index for p in points] == [0, 1, 2, 3]
    assert [p.position for p in points] == [0.0, 1.0, 2.0, 3.0]
    assert points[0].is_first and points[-1].is_last and points[0].num_steps == 4


def test_locate_between_scheduled_sigmas():
    point = locate(0.74, SIGMAS)  # a fifth of the way from 0.8 to 0.5: a reversed interpolation gives 1.8
    assert point.index == 1 and point.position == pytest.approx(1.2)
    assert locate(0.65, SIGMAS).position == pytest.approx(1.5)
    assert locate(0.15, SIGMAS).index == 3  # past the last scheduled sigma still reports under the last step


def test_locate_clamps_outside_the_schedule():
    assert locate(2.0, SIGMAS).position == 0.0
    assert locate(-1.0, SIGMAS).index == 3


def test_locate_needs_a_schedule():
    with pytest.raises(ValueError, match="at least 2 values"):
        locate(0.5, [1.0])
