"""Residual forecasts (ForecastEngine(residual=True)) and the noise diagnosis of the statistics.

A sampler that injects fresh noise (euler_ancestral, dpmpp_sde) moves block 0's output off any
smooth path, so a gate on block 0's output rejects every call. What the blocks after block 0 add
can still be smooth: forecasting that and adding block 0's current output back forecasts what
is actually smooth; the gate then judges block 0's own residual. Whether rejections are blamed on
the sampler's noise is decided from the sampler's measured steps (core/sampler_response.py), never
from block 0 alone.
"""

import pytest
import torch

import bench  # noqa: F401  (registers the pack as cgtaylor_cache)
from bench.baselines import FixedInterval
from cgtaylor_cache.core import ConfidenceGated, ForecastEngine, Schedule
from cgtaylor_cache.nodes.report import summary_line
from engine_driver import drive as drive_call

WIDTH, STEPS = 6, 12
NOISE_NOTE = "injects fresh noise"
FEATURES_NOTE = "features moved more between steps"
LATENT = (2, 64)


class ShiftStack:
    """Every block adds a constant, so block 0's residual and the deep blocks' residual never
    change whatever the input does; the input carries the sampler's noise straight through."""

    def __init__(self, depth: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.biases = [torch.randn(WIDTH, generator=g, dtype=torch.float64) for _ in range(depth)]
        self.ran = 0

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        self.ran += 1
        return x + self.biases[i]

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return x + sum(self.biases)


def drive(engine, stack, x: torch.Tensor, index: int):
    return drive_call(engine, stack, x, index, STEPS)


def smooth(index: int) -> torch.Tensor:
    base = torch.linspace(-1, 1, 2 * WIDTH, dtype=torch.float64).reshape(1, 2, WIDTH)
    return base * (1 + 0.05 * index + 0.01 * index**2)


def noisy(index: int) -> torch.Tensor:
    """A smooth path plus fresh noise at every call, as an ancestral sampler's input."""
    g = torch.Generator().manual_seed(100 + index)
    return smooth(index) + 0.5 * torch.randn(smooth(index).shape, generator=g, dtype=torch.float64)


def engine(threshold: float, residual: bool) -> ForecastEngine:
    return ForecastEngine(ConfidenceGated(threshold, Schedule(warmup_steps=2)), 1, 1, residual=residual)


def observe_sampler(cache: ForecastEngine, index: int, noise: float) -> None:
    """The post-CFG view of step ``index`` of an Euler sampler toward fixed predictions, whose latent
    also gets ``noise`` times fresh noise every step (an ancestral sampler's re-noising)."""
    uncond = torch.randn(LATENT, generator=torch.Generator().manual_seed(-1))
    cond = uncond + 0.3
    x = torch.linspace(-2, 2, LATENT[1]).expand(LATENT).clone()
    for i in range(index):  # the latent the sampler reached by step ``index``
        sigma, following = 1.0 - i / STEPS, 1.0 - (i + 1) / STEPS
        x = x + (x - (uncond + 3.0 * (cond - uncond))) / sigma * (following - sigma)
        x = x + noise * torch.randn(LATENT, generator=torch.Generator().manual_seed(i))
    cache.observe_sampler(x, uncond, cond, 3.0, sigma=1.0 - index / STEPS)


def test_residual_forecast_follows_a_noisy_input_exactly():
    stack, cache = ShiftStack(), engine(0.1, residual=True)
    forecasts = 0
    for i in range(STEPS):
        x = noisy(i)
        out, call = drive(cache, stack, x, i)
        forecasts += call.skips_blocks
        torch.testing.assert_close(out, stack.reference(x), rtol=0, atol=1e-12)
    assert forecasts == STEPS - 3  # every call after the warm-up but the last
    assert not any(NOISE_NOTE in note for note in cache.stats.notes)


def test_a_gate_on_block_zero_output_rejects_noise_and_says_why():
    stack, cache = ShiftStack(), engine(0.1, residual=False)
    for i in range(STEPS):
        x = noisy(i)
        out, call = drive(cache, stack, x, i)
        observe_sampler(cache, i, noise=1.0)
        torch.testing.assert_close(out, stack.reference(x), rtol=0, atol=1e-12)  # rejected: computed in full
    stats = cache.stats
    assert stats.forecast_calls == 0 and stats.gated >= 5
    assert stats.noise_share > 0.9
    assert any(NOISE_NOTE in note for note in stats.notes), stats.notes
    assert NOISE_NOTE in summary_line("7", stats)  # the log line says it
    assert any(NOISE_NOTE in note for note in stats.to_json()["notes"])  # and so does the chart's event


@pytest.mark.parametrize("sampler_seen", [True, False], ids=["deterministic-sampler", "sampler-unseen"])
def test_rejections_are_not_blamed_on_noise_the_sampler_did_not_show(sampler_seen):
    """Block 0 jumping off its trend (here: noisy inputs) is no proof of a noisy sampler: with the
    sampler's steps measured deterministic, or not measured at all, the note says the features moved
    too much for the tolerance instead."""
    stack, cache = ShiftStack(), engine(0.1, residual=False)
    for i in range(STEPS):
        drive(cache, stack, noisy(i), i)
        if sampler_seen:
            observe_sampler(cache, i, noise=0.0)
    stats = cache.stats
    assert stats.forecast_calls == 0 and stats.gated >= 5
    assert stats.noise_share < 1e-6 if sampler_seen else stats.noise_share is None
    assert not any(NOISE_NOTE in note for note in stats.notes), stats.notes
    assert any(FEATURES_NOTE in note for note in stats.notes), stats.notes


def test_rejections_of_a_smooth_path_are_not_blamed_on_noise():
    """A threshold too small for a smooth, curved path rejects every call too: not the sampler's doing."""
    stack, cache = ShiftStack(), engine(1e-12, residual=False)
    for i in range(STEPS):
        drive(cache, stack, smooth(i), i)
        observe_sampler(cache, i, noise=0.0)
    assert cache.stats.forecast_calls == 0 and cache.stats.gated >= 5
    assert not any(NOISE_NOTE in note for note in cache.stats.notes)
    assert any(FEATURES_NOTE in note for note in cache.stats.notes), cache.stats.notes


def test_residual_forecast_needs_a_policy_that_runs_block_zero():
    with pytest.raises(ValueError, match="needs a policy that runs block 0"):
        ForecastEngine(FixedInterval(3), 0, 1, residual=True)


def test_when_block_zero_moves_like_noise_the_last_block_is_reused_not_extrapolated():
    """Extrapolating noise amplifies it; when reusing block 0's last value follows it better than
    its trend, the last block's forecast is its last computed output (order 0), unchanged."""
    stack, cache = ShiftStack(), engine(10.0, residual=False)
    full_output, reused = None, 0
    for i in range(STEPS):
        out, call = drive(cache, stack, noisy(i), i)
        if not call.skips_blocks:
            full_output = out
        elif call.order == 0:
            reused += 1
            assert torch.equal(out, full_output)
    assert reused >= 3


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_the_node_names_the_samplers_noise_in_its_log_line(family, monkeypatch):
    """Through the node and the sampler stand-in: euler_ancestral's fresh noise, measured from its
    steps, is named as the reason for the rejections, with the sampler's name; euler is not blamed."""
    from bench.standin.sampling import sample
    from bench.tiny import flux_scene, wan_scene
    from cgtaylor_cache.nodes.node import DEFAULTS
    from node_driver import patched_by_node

    seen = []
    monkeypatch.setattr("cgtaylor_cache.nodes.node.reporter", lambda node_id: seen.append)
    scene = {"flux": flux_scene, "wan": wan_scene}[family]()
    patched = patched_by_node(scene.patcher, "5", **DEFAULTS)
    lines = {}
    for sampler in ("euler_ancestral", "euler"):
        sample(patched, scene.noise(), scene.positive, scene.negative, cfg=3.0, steps=20, sampler=sampler, seed=3)
        lines[sampler] = summary_line("5", seen[-1])
    assert f"euler_ancestral {NOISE_NOTE}" in lines["euler_ancestral"], lines["euler_ancestral"]
    assert NOISE_NOTE not in lines["euler"], lines["euler"]
