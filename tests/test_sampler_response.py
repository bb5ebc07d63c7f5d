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


def test_fresh_noise_is_unexplained_and_gives_no_gain():
    x, uncond, cond = predictions(2)
    noise = torch.randn(SIZE, generator=torch.Generator().manual_seed(9))
    step = fit_step([Evaluation.of(x, uncond, cond, 3.0)], euler(x, uncond, cond, 3.0, 0.5, 0.45) + 0.3 * noise)
    assert step.unexplained > 0.5
    assert step.guidance_gain is None  # what noise moved cannot be apportioned to the predictions


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


def gated_call(engine: ForecastEngine, index: int, sigma: float):
    """A call whose block 0 and last block follow gentle curves (forecasts miss them a little)."""
    call = engine.begin_call(StepPoint(index, float(index), sigma, 10), ["cond"], ("s",))
    engine.first_block_output(call, torch.full((1, 4, 2), 1.0 + 0.1 * index + 0.002 * index**3))
    if not call.skips_blocks:
        engine.last_block_output(call, torch.full((1, 4, 2), 2.0 + 0.3 * index + 0.01 * index**3))
    engine.end_call(call, 1 if call.skips_blocks else 2, 2)
    return call


def run_gated(sampler) -> ForecastEngine:
    """Ten calls from sigma 0.5 down in steps of 0.002, each followed by the post-CFG view of its step
    through ``sampler`` (none: unwatched)."""
    engine = ForecastEngine(ConfidenceGated(0.2, Schedule(warmup_steps=1)), 2, 2)
    x, uncond, cond = predictions(6)
    engine.calls, sigma = [], 0.5
    for index in range(10):
        engine.calls.append(gated_call(engine, index, sigma))
        if sampler is not None:
            engine.observe_sampler(x, uncond, cond, 4.0, sigma)
            x = sampler(x, uncond, cond, 4.0, sigma, sigma - 0.002)
        sigma -= 0.002
    return engine


def test_the_gate_weighs_each_prediction_by_the_measured_gain():
    """Unwatched and under Euler steps the same calls forecast; under CFG++ steps (gain about 125 at
    these sigmas) every call the gate could weigh is computed in full, and the statistics say why."""
    unwatched, under_euler, under_cfg_pp = (run_gated(sampler) for sampler in (None, euler, euler_cfg_pp))
    forecast = [call.skips_blocks for call in unwatched.calls]
    assert sum(forecast) >= 3
    assert [call.skips_blocks for call in under_euler.calls] == forecast
    assert [call.gain for call in under_euler.calls] == [1.0] * 10
    # The first two calls run before any step was measured; from then on the gain weighs every call.
    assert [call.skips_blocks for call in under_cfg_pp.calls] == forecast[:2] + [False] * 8
    assert min(call.gain for call in under_cfg_pp.calls[2:]) > 100
    stats = under_cfg_pp.stats
    assert stats.rejected_for_gain >= sum(forecast[2:])  # refreshed more often, it would have forecast more
    assert any("carries the guidance difference" in note for note in stats.notes), stats.notes
    assert not any("carries the guidance difference" in note for note in under_euler.stats.notes)
    assert all(record["gain"] > 100 for record in stats.to_json()["steps"][2:])


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
        assert stats.block_ratio > 2.0 and max(stats.sampler_gains) < 1.01
    elif "ancestral" not in sampler:
        assert max(stats.sampler_gains) > 4.0
