"""The DiCache-style baseline (bench/baselines/dicache.py): the probe's trajectory sets the deep cache's step."""

import torch

import bench  # noqa: F401  (registers the pack as cgtaylor_cache)
from bench.baselines import FirstBlockCache, ProbeAlignedCache
from cgtaylor_cache.core import Schedule
from engine_driver import drive as drive_call

WIDTH, STEPS = 6, 10


class LinearStack:
    """Linear blocks: the deep residual (output minus block 0's) is an affine function of block 0's
    output, so it moves along one direction exactly as far as the probe moves along its own."""

    def __init__(self, depth: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weights = [torch.randn(WIDTH, WIDTH, generator=g, dtype=torch.float64) / WIDTH**0.5 for _ in range(depth)]
        self.biases = [torch.randn(WIDTH, generator=g, dtype=torch.float64) for _ in range(depth)]
        self.ran = 0

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        self.ran += 1
        return x + x @ self.weights[i] + self.biases[i]

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.weights)):
            x = x + x @ self.weights[i] + self.biases[i]
        return x


def drive(engine, stack, x: torch.Tensor, index: int):
    return drive_call(engine, stack, x, index, STEPS)


def uneven_inputs(index: int) -> torch.Tensor:
    """The input moves along one direction, at a speed that changes from step to step (as a sampler's
    features do): a forecast in time misses, a forecast along the probe's path does not."""
    base = torch.linspace(-1, 1, 2 * WIDTH, dtype=torch.float64).reshape(1, 2, WIDTH)
    return base + (0.2 * index + 0.03 * index**2) * torch.cos(3 * base)


def test_alignment_along_the_probe_trajectory_is_exact_where_reuse_is_not():
    dicache, reuse = LinearStack(), LinearStack()
    engines = {"dicache": ProbeAlignedCache(1e9, Schedule(warmup_steps=3)), "fbcache": FirstBlockCache(1e9, Schedule(warmup_steps=3))}
    errors = {name: [] for name in engines}
    for i in range(STEPS):
        x = uneven_inputs(i)
        for (name, engine), stack in zip(engines.items(), (dicache, reuse)):
            out, call = drive(engine, stack, x, i)
            if call.skips_blocks:
                errors[name].append(float((out - stack.reference(x)).abs().max()))
    assert len(errors["dicache"]) == STEPS - 4  # warm-up 3 and the last step are full
    assert max(errors["dicache"]) < 1e-5  # the step is measured in float32
    assert min(errors["fbcache"]) > 1e-3  # the residual moved: reusing it is visibly wrong


def test_the_probe_change_adds_up_until_a_full_call_resets_it():
    stack = LinearStack()
    threshold = 0.5  # the probe moves 20-30% per step here: one or two forecasts between full calls
    engine = ProbeAlignedCache(threshold, Schedule(warmup_steps=2))
    full, sums = [], []
    for i in range(STEPS):
        out, call = drive(engine, stack, uneven_inputs(i), i)
        full.append(not call.skips_blocks)
        sums.append(call.gate_error)
    gated = [(f, s) for f, s in zip(full, sums) if s is not None]
    assert any(not f for f, _ in gated) and any(f for f, _ in gated)  # some forecast, some not
    assert all(f == (s >= threshold) for f, s in gated)  # full exactly when the sum reached the threshold
    restarts = 0
    for i in range(1, STEPS):
        if sums[i] is None or sums[i - 1] is None:
            continue
        if full[i - 1]:  # a full call restarts the sum: the next one holds one call's change only
            assert sums[i] < sums[i - 1]
            restarts += 1
        else:  # after a forecast the sum grows
            assert sums[i] > sums[i - 1]
    assert restarts >= 2


def test_threshold_zero_never_forecasts_and_keeps_nothing():
    stack, engine = LinearStack(), ProbeAlignedCache(0.0)
    for i in range(STEPS):
        x = uneven_inputs(i)
        out, call = drive(engine, stack, x, i)
        assert not call.skips_blocks and torch.equal(out, stack.reference(x))
    assert engine.cached_tensors() == []
