"""The sampler's measured response (core/sampler_response.py) and how the gate weighs forecasts by it.

Exact cases first: an Euler step of any size and cfg scale has guidance gain 1; a CFG++ step on a
flow model has ``(1 - sigma') sigma / (sigma - sigma')``; fresh noise is unexplained and yields no
gain. Then the node on the trained deep benchmark models with every CFG++ sampler ComfyUI ships
(bench/standin/k_samplers.py), against the same run without the node.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import bench  # noqa: F401  (registers the pack as cgtaylor_cache)
from cgtaylor_cache.core import ConfidenceGated, ForecastEngine, Schedule, StepPoint
from cgtaylor_cache.core.sampler_response import Evaluation, SamplerResponse, fit_step

SIZE = 4096


def predictions(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, uncond = torch.randn(SIZE, generator=g), torch.randn(SIZE, generator=g)
    cond = uncond + 0.2 * torch.randn(SIZE, generator=g)  # the guidance difference: a fifth of a prediction
    return x, uncond, cond


def euler(x, uncond, cond, scale, sigma, following):
    """comfy/k_diffusion/sampling.py sample_euler in denoised form."""
    guided = uncond + scale * (cond - uncond)
    return x + (x - guided) / sigma * (following - sigma)


def euler_cfg_pp(x, uncond, cond, scale, sigma, following):
    """sample_euler_cfg_pp on a flow model (alpha = 1 - sigma), v0.33.0 :1266-1313."""
    guided = uncond + scale * (cond - uncond)
    return (1 - following) * guided + following * (x - (1 - sigma) * uncond) / sigma


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.5])
@pytest.mark.parametrize("sigma, following", [(1.0, 0.9), (0.5, 0.45), (0.1, 0.02)])
def test_an_euler_step_weighs_guidance_as_an_euler_step(scale, sigma, following):
    x, uncond, cond = predictions()
    step = fit_step([Evaluation.of(x, uncond, cond, scale)], euler(x, uncond, cond, scale, sigma, following))
    assert step.guidance_gain == pytest.approx(1.0, abs=1e-5)
    assert step.unexplained < 1e-5


@pytest.mark.parametrize("sigma, following", [(0.9, 0.85), (0.5, 0.47), (0.2, 0.1)])
def test_a_cfg_pp_step_carries_the_guidance_difference_alpha_over_the_euler_share(sigma, following):
    x, uncond, cond = predictions(1)
    step = fit_step([Evaluation.of(x, uncond, cond, 4.0)], euler_cfg_pp(x, uncond, cond, 4.0, sigma, following))
    assert step.guidance_gain == pytest.approx((1 - following) * sigma / (sigma - following), rel=1e-5)
    assert step.unexplained < 1e-5


@pytest.mark.parametrize("sampler, gain", [(euler, 1.0), (euler_cfg_pp, 0.55 * 0.5 / 0.05)])
def test_fresh_noise_is_unexplained_but_the_gain_is_still_read(sampler, gain):
    """Noise an ancestral sampler adds is independent of the predictions, so the fit's coefficients stay the
    sampler's: euler_ancestral_cfg_pp is recognised as the CFG++ sampler it is (issue 31)."""
    x, uncond, cond = predictions(2)
    noise = torch.randn(SIZE, generator=torch.Generator().manual_seed(9))
    step = fit_step([Evaluation.of(x, uncond, cond, 3.0, 0.5)], sampler(x, uncond, cond, 3.0, 0.5, 0.45) + 0.3 * noise,
                    0.45)
    assert step.unexplained > 0.5
    assert step.guidance_gain == pytest.approx(gain, rel=0.1)


def perp_neg(uncond, cond, empty, scale, neg_scale=1.0):
    """comfy_extras/nodes_perpneg.py perp_neg: guidance from the empty prompt's prediction, with the
    negative's part along the positive's direction taken out."""
    pos, neg = cond - empty, uncond - empty
    perpendicular = neg - (neg * pos).sum() / pos.norm() ** 2 * pos
    return empty + scale * (pos - neg_scale * perpendicular)


@pytest.mark.parametrize("sampler, gain", [("euler", lambda s, f: 1.0),
                                           ("euler_cfg_pp", lambda s, f: (1 - f) * s / (s - f))])
def test_a_guider_that_combines_three_predictions_is_not_read_as_the_sampler(sampler, gain):
    """PerpNegGuider steps with a combination of the positive, negative and empty predictions and hands
    the post-CFG functions the first two: fitted on those two alone, plain euler read as a sampler with
    several times Euler's gain, and got the CFG++ note (issue 31, measured in ComfyUI v0.33.0)."""
    x, uncond, cond = predictions(6)
    empty = uncond + 0.3 * torch.randn(SIZE, generator=torch.Generator().manual_seed(16))
    scale, sigma, following = 4.0, 0.5, 0.45
    stepped = perp_neg(uncond, cond, empty, scale)
    following_x = (x + (x - stepped) / sigma * (following - sigma) if sampler == "euler"
                   else (1 - following) * stepped + following * (x - (1 - sigma) * uncond) / sigma)
    step = fit_step([Evaluation.of(x, uncond, cond, scale, sigma, denoised=stepped)], following_x, following)
    assert step.guidance_gain == pytest.approx(gain(sigma, following), rel=1e-5)
    assert step.unexplained < 1e-5
    unseen = fit_step([Evaluation.of(x, uncond, cond, scale, sigma)], following_x, following)
    assert unseen.guidance_gain != pytest.approx(gain(sigma, following), rel=0.2)  # what the fit read before


def test_without_an_uncond_prediction_only_the_noise_is_measured():
    """ComfyUI's cfg-1 shortcut hands the post-CFG functions zeros for the uncond prediction."""
    x, _, cond = predictions(3)
    step = fit_step([Evaluation.of(x, torch.zeros(SIZE), cond, 1.0)], euler(x, torch.zeros(SIZE), cond, 1.0, 0.5, 0.4))
    assert step.guidance_gain is None
    assert step.unexplained < 1e-5


def test_two_evaluations_per_step_are_fitted_together():
    """Heun: the corrector's latent depends on the predictor's evaluation too; fitted on the last
    evaluation alone most of that step would look like noise."""
    response, sigmas = SamplerResponse(), [1.0, 0.8, 0.6, 0.4]
    x = predictions(4)[0]
    for i in range(len(sigmas) - 1):
        _, uncond, cond = predictions(10 + i)
        response.observe(x, uncond, cond, 3.0, sigmas[i])
        d = (x - (uncond + 3.0 * (cond - uncond))) / sigmas[i]
        x_2 = x + d * (sigmas[i + 1] - sigmas[i])
        _, uncond_2, cond_2 = predictions(20 + i)
        response.observe(x_2, uncond_2, cond_2, 3.0, sigmas[i + 1])
        d_2 = (x_2 - (uncond_2 + 3.0 * (cond_2 - uncond_2))) / sigmas[i + 1]
        x = x + (d + d_2) / 2 * (sigmas[i + 1] - sigmas[i])
    assert len(response.steps) == 2 * (len(sigmas) - 1) - 1
    assert all(step.unexplained < 1e-5 for step in response.steps)
    assert all(step.guidance_gain == pytest.approx(1.0, abs=1e-5) for step in response.steps)


def test_a_gain_weighs_only_calls_after_the_step_that_measured_it():
    """Every call of one step sees the same gain, whatever order the post-CFG functions ran in."""
    response, (x, uncond, cond) = SamplerResponse(), predictions(5)
    response.observe(x, uncond, cond, 4.0, sigma=0.9)
    response.observe(euler_cfg_pp(x, uncond, cond, 4.0, 0.9, 0.8), uncond, cond, 4.0, sigma=0.8)
    assert response.guidance_gain(0.8) is None  # measured at sigma 0.8: calls at 0.8 ran before it
    assert response.guidance_gain(0.7) == pytest.approx(0.2 * 0.9 / 0.1, rel=1e-5)


SIGMAS = [1.0, 0.97, 0.92, 0.85, 0.75, 0.62, 0.47, 0.3, 0.12, 0.0]


def true_weights(sampler, scale: float, sigma: float, following: float) -> tuple[float, float]:
    """The step's coefficients on the uncond and cond predictions, per unit of an Euler step's share."""
    zero, one = torch.zeros(1), torch.ones(1)
    share = 1 - following / sigma
    return (float(sampler(zero, one, zero, scale, sigma, following)) / share,
            float(sampler(zero, zero, one, scale, sigma, following)) / share)


@pytest.mark.parametrize("sampler", [euler, euler_cfg_pp])
def test_a_call_sees_the_weights_of_the_step_it_feeds(sampler):
    """CFG++ weights change with every step: the weights a call is gated with are its own step's, extrapolated
    from the steps fitted before it (exact from the second fitted step on), never the last measured one's."""
    response, (x, _, _) = SamplerResponse(), predictions(7)
    seen, truth = [], []
    for i in range(len(SIGMAS) - 1):
        _, uncond, cond = predictions(30 + i)
        seen.append(response.weights_at(SIGMAS[i], SIGMAS[i + 1]))
        truth.append(true_weights(sampler, 4.0, SIGMAS[i], SIGMAS[i + 1]))
        response.observe(x, uncond, cond, 4.0, SIGMAS[i])
        x = sampler(x, uncond, cond, 4.0, SIGMAS[i], SIGMAS[i + 1])
    assert seen[:2] == [None, None]  # nothing fitted before the second evaluation's latent completes a step
    one_fit = seen[2]  # one fitted step: the larger reading, never below the truth in size
    assert abs(one_fit[1]) >= abs(truth[2][1]) - 1e-6
    for got, want in zip(seen[3:], truth[3:]):
        assert got == pytest.approx(want, rel=1e-4)
    if sampler is euler_cfg_pp:  # the previous step's weights would have been off by up to 47% on this schedule
        assert max(abs(b[1] / a[1] - 1) for a, b in zip(truth[3:], truth[2:-1])) > 0.4


def gated_pair(engine: ForecastEngine, index: int, sigma: float, differ: float):
    """A batched uncond + cond call whose block 0 and last block follow gentle curves; the streams' last
    blocks curve apart by ``differ``, so their forecasts miss differently."""
    first = torch.full((2, 4, 2), 1.0 + 0.1 * index + 0.002 * index**3)
    last = torch.cat([torch.full((1, 4, 2), 2.0 + 0.3 * index + 0.01 * index**3),
                      torch.full((1, 4, 2), 2.0 + 0.3 * index + (0.01 + differ) * index**3)])
    call = engine.begin_call(StepPoint(index, float(index), sigma, len(SIGMAS) - 1), ["uncond", "cond"], ("s",),
                             roles=[1, 0])
    engine.first_block_output(call, first)
    if not call.skips_blocks:
        engine.last_block_output(call, last)
    engine.end_call(call, 1 if call.skips_blocks else 2, 2)
    return call


def run_pairs(sampler, differ: float, tolerance: float = 0.5) -> ForecastEngine:
    engine = ForecastEngine(ConfidenceGated(tolerance, Schedule(warmup_steps=1), calibrated=True), 2, 2)
    engine.note_schedule(SIGMAS)
    x, uncond, cond = predictions(6)
    engine.calls = []
    for index in range(len(SIGMAS) - 1):
        engine.calls.append(gated_pair(engine, index, SIGMAS[index], differ))
        engine.observe_sampler(x, uncond, cond, 4.0, SIGMAS[index])
        x = sampler(x, uncond, cond, 4.0, SIGMAS[index], SIGMAS[index + 1])
    return engine


def test_the_gate_weighs_the_difference_between_the_streams_misses_by_the_samplers_weights():
    """Streams that miss alike cancel in the guided prediction whatever the sampler; streams that miss
    differently are weighed by the scale under Euler and by many times more under CFG++, and a run whose
    rejections the CFG++ weighing made says so."""
    alike = run_pairs(euler_cfg_pp, differ=0.0)
    assert sum(call.skips_blocks for call in alike.calls) >= 2
    under_euler, under_cfg_pp = run_pairs(euler, differ=0.02), run_pairs(euler_cfg_pp, differ=0.02)
    assert sum(c.skips_blocks for c in under_euler.calls) > sum(c.skips_blocks for c in under_cfg_pp.calls)
    for index, call in enumerate(under_cfg_pp.calls[3:], start=3):
        assert (call.weights.uncond, call.weights.cond) == pytest.approx(
            true_weights(euler_cfg_pp, 4.0, SIGMAS[index], SIGMAS[index + 1]), rel=1e-4)
    assert under_cfg_pp.stats.rejected_for_gain > 0
    assert any("carries the guidance difference" in note for note in under_cfg_pp.stats.notes)
    assert not any("carries the guidance difference" in note for note in under_euler.stats.notes)


def per_image_psnr(test: torch.Tensor, reference: torch.Tensor) -> list[float]:
    from bench.digits import decode
    from bench.measures import psnr

    return [psnr(decode(test[i : i + 1]), decode(reference[i : i + 1])) for i in range(test.shape[0])]


DEEP_RUNS = [("wan_deep", name) for name in ("euler",) + __import__("bench.standin.k_samplers", fromlist=["CFG_PP"]).CFG_PP]
DEEP_RUNS += [("flux_deep", "euler_cfg_pp"), ("flux_deep", "dpmpp_2m_cfg_pp")]


@pytest.mark.parametrize("family, sampler", DEEP_RUNS)
def test_the_node_default_stays_close_to_no_cache_with_every_cfg_pp_sampler(family, sampler):
    """The trained deep models at 30 steps and cfg 4 (10 digits, seed 0): every image at least 40 dB from
    the uncached one at the node default. Before the gate weighed the sampler's guidance gain,
    euler_cfg_pp lost 28 dB on its worst digit and dpmpp_2m_cfg_pp 22 dB."""
    from bench.methods import node_default
    from bench.runs import Setup

    setup = replace(Setup.load(family), steps=30, sampler=sampler)
    reference = setup.sample(setup.patcher, 0, cfg=4.0)
    patcher, _, reports = setup.patched(node_default())
    cached = setup.sample(patcher, 0, cfg=4.0)
    assert min(per_image_psnr(cached, reference)) >= 40.0
    stats = reports[-1]
    assert stats.sampler == sampler
    if sampler == "euler":
        assert stats.block_ratio > 1.8 and max(stats.sampler_gains) < 1.01
    elif "ancestral" not in sampler:
        assert max(stats.sampler_gains) > 4.0
