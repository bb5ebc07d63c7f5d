"""The residual-reuse baselines (bench/baselines/residual.py) on stacks where reuse is exact or visibly not."""

import pytest
import torch

import bench  # noqa: F401  (registers the pack as cgtaylor_cache)
from bench.baselines import FirstBlockCache, InputChangeCache
from cgtaylor_cache.core import Schedule, StepPoint

WIDTH, STEPS = 6, 10


class Stack:
    """Block 0 is linear; the other blocks add constants, so the stack's tail residual never changes."""

    def __init__(self, depth: int = 4, seed: int = 0, identity_first: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.first = torch.randn(WIDTH, WIDTH, generator=g, dtype=torch.float64) / WIDTH**0.5
        if identity_first:  # then the whole stack's residual (output - input) is constant too
            self.first = torch.eye(WIDTH, dtype=torch.float64)
        self.biases = [torch.randn(WIDTH, generator=g, dtype=torch.float64) for _ in range(depth - 1)]
        self.ran = 0

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        self.ran += 1
        return x @ self.first if i == 0 else x + self.biases[i - 1]

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.first
        for bias in self.biases:
            x = x + bias
        return x


def drive(engine, stack: Stack, x: torch.Tensor, index: int, keys=("cond",)) -> tuple[torch.Tensor, object]:
    """One model call as nodes/sampling_run.py drives an engine that wants anchors."""
    step = StepPoint(index, float(index), 1.0 - index / STEPS, STEPS)
    call = engine.begin_call(step, list(keys), tuple(x.shape[1:]))
    before = stack.ran
    engine.first_block_input(call, x)
    if call.skips_blocks:
        out = engine.take_forecast(call)
    else:
        hidden = stack.block(0, x)
        engine.first_block_output(call, hidden, hidden)
        if call.skips_blocks:
            out = engine.take_forecast(call)
        else:
            for i in range(1, len(stack.biases) + 1):
                hidden = stack.block(i, hidden)
            engine.last_block_output(call, hidden)
            out = hidden
    engine.end_call(call, stack.ran - before, len(stack.biases) + 1)
    return out, call


def inputs(index: int, batch: int = 1) -> torch.Tensor:
    base = torch.linspace(-1, 1, batch * 2 * WIDTH, dtype=torch.float64).reshape(batch, 2, WIDTH)
    return base * (1 + 0.1 * index)


@pytest.mark.parametrize("engine_class", [FirstBlockCache, InputChangeCache])
def test_threshold_zero_never_reuses(engine_class):
    engine, stack = engine_class(0.0), Stack()
    for i in range(STEPS):
        out, call = drive(engine, stack, inputs(i), i)
        assert not call.skips_blocks and torch.equal(out, stack.reference(inputs(i)))


@pytest.mark.parametrize("engine_class", [FirstBlockCache, InputChangeCache])
def test_reuse_is_exact_when_the_residual_is_constant(engine_class):
    engine, stack = engine_class(1e9), Stack(identity_first=engine_class is InputChangeCache)
    skipped = []
    for i in range(STEPS):
        out, call = drive(engine, stack, inputs(i), i)
        skipped.append(call.skips_blocks)
        torch.testing.assert_close(out, stack.reference(inputs(i)))
    assert any(skipped) and not skipped[0] and not skipped[-1]


def test_first_block_cache_runs_block_zero_and_gates_on_its_residual():
    engine, stack = FirstBlockCache(1e9), Stack()
    drive(engine, stack, inputs(0), 0)
    x = inputs(1)
    before = stack.ran
    _, call = drive(engine, stack, x, 1)
    assert call.skips_blocks and stack.ran - before == 1
    previous, current = inputs(0) @ stack.first - inputs(0), x @ stack.first - x
    expected = float((previous - current).abs().sum() / current.abs().sum())
    assert call.gate_error == pytest.approx(expected)


def test_first_block_cache_rejects_above_its_threshold():
    engine, stack = FirstBlockCache(0.01), Stack()
    drive(engine, stack, inputs(0), 0)
    _, call = drive(engine, stack, inputs(1), 1)  # the residual grew by about 10%
    assert not call.skips_blocks and call.gate_error > 0.01


def test_input_change_skips_every_block_and_accumulates():
    """Skips cost no block at all; the running estimate grows until a full call resets it."""
    engine, stack = InputChangeCache(0.25), Stack()
    runs = []
    for i in range(STEPS):
        before = stack.ran
        _, call = drive(engine, stack, inputs(i), i)
        runs.append(stack.ran - before)
    assert set(runs) <= {0, 4} and runs.count(0) >= 2 and runs[:2] == [4, 4]
    errors = [r.gate_errors for r in (engine.stats.steps[i] for i in range(STEPS))]
    streak = [e[0] for e in errors if e]
    assert any(b > a for a, b in zip(streak, streak[1:]))  # accumulation, not a per-step value


def test_residual_engines_keep_streams_apart():
    for engine_class in (FirstBlockCache, InputChangeCache):
        engine, stack = engine_class(1e9), Stack(identity_first=engine_class is InputChangeCache)
        for i in range(STEPS):
            x = torch.cat([inputs(i), -2 * inputs(i)])
            out, _ = drive(engine, stack, x, i, keys=("uncond", "cond"))
            torch.testing.assert_close(out, stack.reference(x))


def test_schedule_applies_to_baselines():
    engine, stack = FirstBlockCache(1e9, Schedule(warmup_steps=5)), Stack()
    skipped = [drive(engine, stack, inputs(i), i)[1].skips_blocks for i in range(STEPS)]
    assert not any(skipped[:5]) and any(skipped[5:])
