"""Gate metric, step schedule and locating calls in the sigma schedule."""

import math

import pytest
import torch

from core import ConfidenceGate, Schedule, locate, relative_l1
from core.steps import scheduled_points, step_weights


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


TEN = [1 - i / 10 for i in range(11)]  # ten uniform steps down to 0


def open_steps(schedule: Schedule, sigmas=TEN) -> list[int]:
    return [p.index for p in scheduled_points(sigmas) if schedule.why_full(p, consecutive=0) is None]


def test_schedule_keeps_warmup_first_and_last_step_full():
    schedule = Schedule(warmup_steps=3)
    assert open_steps(schedule) == [3, 4, 5, 6, 7, 8]
    assert open_steps(Schedule(warmup_steps=0))[0] == 1  # the first step is always full
    assert schedule.forecastable_steps(TEN) == 6


def test_schedule_window_by_fraction_of_steps():
    assert open_steps(Schedule(warmup_steps=0, start_fraction=0.2, end_fraction=0.6)) == [2, 3, 4, 5]


def test_schedule_caps_consecutive_forecasts():
    schedule, point = Schedule(max_consecutive=2), locate(TEN[5], TEN)
    assert schedule.why_full(point, consecutive=1) is None
    assert schedule.why_full(point, consecutive=2) == "cap"
    assert Schedule(max_consecutive=0).why_full(point, consecutive=1000) is None


def test_schedule_with_nothing_left_to_forecast():
    assert Schedule(warmup_steps=4).forecastable_steps([1.0, 0.75, 0.5, 0.25, 0.0]) == 0
    assert Schedule().forecastable_steps([1.0, 0.5, 0.0]) == 0


def test_calls_past_the_second_to_last_sigma_are_the_last_step():
    """dpm_fast and dpm_adaptive integrate down to the last nonzero sigma at sigmas of their own
    (comfy/samplers.py ksampler: ``sigma_min = sigmas[-2]``), so no call of theirs sits at it. The
    calls between the second-to-last and the last nonzero sigma are their last step: full."""
    sigmas = [1.0, 0.75, 0.5, 0.25, 0.0]
    schedule = Schedule()
    for sigma in (0.45, 0.3, 0.2501):  # past 0.5: the final stretch, whatever the sampler's own steps
        assert locate(sigma, sigmas).is_last and schedule.why_full(locate(sigma, sigmas), 0) == "edge"
    for sigma in (0.74, 0.5):
        assert not locate(sigma, sigmas).is_last and schedule.why_full(locate(sigma, sigmas), 0) is None


def test_a_run_that_hands_its_latent_on_has_no_last_step():
    """A schedule that stops above 0 (KSamplerAdvanced returning leftover noise, Wan 2.2's high-noise
    expert) leaves the image's last step to the next run: its own last call may be forecast."""
    first_half = [1.0, 0.75, 0.5, 0.25]
    assert not locate(0.5, first_half).is_last
    assert Schedule().why_full(locate(0.5, first_half), 0) is None
    assert Schedule().forecastable_steps(first_half) == 2  # steps 1 and 2; step 0 is the first


def shifted(shift: float):
    """comfy/model_sampling.py ModelSamplingDiscreteFlow.percent_to_sigma at this shift."""
    from bench.standin.model_sampling import ModelSamplingDiscreteFlow

    return ModelSamplingDiscreteFlow(shift).percent_to_sigma


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_the_window_is_a_share_of_the_models_noise_range(shift):
    """With the model's percent_to_sigma the window means the same sigmas in every run: split over two
    runs at step 10 of 20, end_fraction 0.5 keeps every call of the second run full (its fractions of
    its own steps reopened it at global steps 12-14)."""
    from bench.standin.sampling import flow_sigmas

    sigmas = [float(s) for s in flow_sigmas(20, shift)]
    schedule = Schedule(warmup_steps=1, end_fraction=0.5).in_sigmas(shifted(shift))
    first, second = sigmas[:11], sigmas[10:]
    assert open_steps(schedule, first) == list(range(1, 10))  # its last call hands on: not an edge
    assert open_steps(schedule, second) == []
    assert open_steps(Schedule(warmup_steps=1, end_fraction=0.5), second) == [1, 2, 3, 4]  # by its own steps
    middle = Schedule(start_fraction=0.25, end_fraction=0.75).in_sigmas(shifted(shift))
    assert open_steps(middle, sigmas) == list(range(5, 15))


@pytest.mark.parametrize("shift", [3.0, 8.0])
def test_step_weights_follow_each_steps_sigma_drop_but_never_fall_below_one(shift):
    """A miss moves the latent by the step's sigma drop times it; where the drop is below the average the step
    still counts as an average one, since a model may carry an early change far (issue 31: shift 8)."""
    from bench.standin.sampling import flow_sigmas

    assert step_weights(TEN) == pytest.approx([1.0] * 10)  # a uniform schedule weighs every step alike
    shifted = [float(s) for s in flow_sigmas(30, shift)]
    weights = step_weights(shifted)
    drops = [a - b for a, b in zip(shifted, shifted[1:])]
    assert weights == pytest.approx([max(1.0, d * 30 / sum(drops)) for d in drops])
    assert weights == sorted(weights) and weights[0] == 1.0 and weights[-1] > 2.0
    assert step_weights([1.0, 0.5, 0.5, 0.0]) == [1.0, 1.0, 1.0]  # a step that does not fall: no weighing


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
