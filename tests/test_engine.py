"""The engine's call lifecycle, driven by a tiny block stack the way an adapter drives it."""

import json

import pytest
import torch

import bench  # noqa: F401  (registers the pack as cgtaylor_cache)
from bench.baselines import AlwaysFull, FixedInterval
from cgtaylor_cache.core import ConfidenceGated, ForecastEngine, Mode, Schedule, StepPoint
from cgtaylor_cache.core.steps import step_weights

WIDTH, DEPTH, STEPS = 8, 5, 12


def linear_blocks(seed: int = 0) -> list[torch.nn.Linear]:
    """Linear blocks: every block output is linear in the input, so linear inputs give linear features."""
    torch.manual_seed(seed)
    blocks = [torch.nn.Linear(WIDTH, WIDTH, dtype=torch.float64) for _ in range(DEPTH)]
    for block in blocks:
        block.requires_grad_(False)
    return blocks


def trajectory(position: float, batch: int = 1, offset: float = 0.0) -> torch.Tensor:
    """Block input that moves linearly with the step position: every feature is exactly forecastable."""
    base = torch.linspace(-1, 1, batch * 3 * WIDTH, dtype=torch.float64).reshape(batch, 3, WIDTH)
    return base + offset + 0.05 * position * torch.cos(base * 3)


def run_call(engine, blocks, x, step, keys, mutate_outputs=False):
    """One model call as an adapter runs it; returns the last block's output and the call."""
    call = engine.begin_call(step, keys, tuple(x.shape[1:]))
    ran, hidden, first_out = 0, x, None
    if not call.skips_blocks:
        hidden = first_out = blocks[0](hidden)
        ran += 1
        engine.first_block_output(call, hidden)
    if call.skips_blocks:
        hidden = engine.take_forecast(call)
    else:
        for block in blocks[1:]:
            hidden = block(hidden)
            ran += 1
        engine.last_block_output(call, hidden)
    out = hidden.clone()
    if mutate_outputs:  # what ComfyUI's FLUX blocks and ControlNet do to tensors they are handed
        hidden.mul_(-3.0)
        if first_out is not None:
            first_out.add_(1000.0)
    engine.end_call(call, ran, len(blocks))
    return out, call


def reference(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def step_at(index, num_steps=STEPS, sigmas=None):
    sigma = sigmas[index] if sigmas else 1.0 - index / num_steps
    return StepPoint(index=index, position=float(index), sigma=sigma, num_steps=num_steps)


def gated(threshold=1e9, warmup=2, first=1, last=1, **schedule):
    return ForecastEngine(ConfidenceGated(threshold, Schedule(warmup_steps=warmup, **schedule)), first, last)


def test_threshold_zero_is_bit_identical_and_caches_nothing():
    blocks, engine = linear_blocks(), gated(threshold=0.0)
    for i in range(STEPS):
        x = trajectory(i)
        out, call = run_call(engine, blocks, x, step_at(i), ["cond"])
        assert call.mode is Mode.FULL
        assert torch.equal(out, reference(blocks, x))
    assert engine.cached_tensors() == []
    assert engine.stats.blocks_run == engine.stats.blocks_total == STEPS * DEPTH


def test_huge_threshold_runs_only_block_zero_on_forecast_calls():
    blocks, engine = linear_blocks(), gated(warmup=3)
    ran = []
    for i in range(STEPS):
        x = trajectory(i)
        out, call = run_call(engine, blocks, x, step_at(i), ["cond"])
        ran.append(engine.stats.blocks_run)
        # linear features: the forecast reproduces the real output
        torch.testing.assert_close(out, reference(blocks, x), rtol=1e-9, atol=1e-9)
    per_call = [b - a for a, b in zip([0] + ran, ran)]
    assert per_call == [DEPTH] * 3 + [1] * (STEPS - 4) + [DEPTH]


def test_gate_rejects_a_jump_and_refreshes_both_caches():
    blocks, engine = linear_blocks(), gated(threshold=0.05, warmup=2)
    modes, anchors, outputs = [], [], []
    for i in range(8):
        x = trajectory(i) + (3.0 if i >= 5 else 0.0)  # the features jump at step 5
        out, call = run_call(engine, blocks, x, step_at(i), ["cond"])
        modes.append((call.mode, call.gate_error, call.order == 0))
        outputs.append(out)
        stream = engine._streams["cond"]
        anchors.append((stream.first.anchor, stream.last.anchor))
    assert [m for m, _, _ in modes[2:5]] == [Mode.FORECAST] * 3
    assert anchors[2:5] == [(1.0, 1.0)] * 3  # accepted forecasts leave the caches alone
    assert modes[5][0] is Mode.FULL and modes[5][1] > 0.05
    assert anchors[5] == (5.0, 5.0)
    # Steps 6 and 7 would extrapolate from steps 1 and 5, a stale slope across the jump; reusing
    # step 5's values follows block 0 better, within the threshold, so both reuse step 5's output.
    assert [(m, reuse) for m, _, reuse in modes[6:8]] == [(Mode.FORECAST, True)] * 2
    assert all(modes[i][1] < 0.05 for i in (6, 7))
    assert torch.equal(outputs[6], outputs[5]) and torch.equal(outputs[7], outputs[5])


def test_streams_never_mix_under_cfg_batches_and_separate_calls():
    blocks, engine = linear_blocks(), gated(warmup=2)
    for i in range(STEPS):
        uncond, cond = trajectory(i, batch=2, offset=-0.5), trajectory(i, batch=2, offset=0.7)
        if i % 2:  # cond and uncond batched together, uncond first as ComfyUI orders them
            out, call = run_call(engine, blocks, torch.cat([uncond, cond]), step_at(i), ["u", "c"])
            expected = reference(blocks, torch.cat([uncond, cond]))
        else:  # ... or in separate calls when memory is short
            out_c, call = run_call(engine, blocks, cond, step_at(i), ["c"])
            out_u, _ = run_call(engine, blocks, uncond, step_at(i), ["u"])
            out, expected = torch.cat([out_u, out_c]), reference(blocks, torch.cat([uncond, cond]))
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    assert engine.stats.forecast_calls > 0
    assert {r.calls for r in engine.stats.steps.values()} == {1, 2}


def test_in_place_changes_after_the_call_do_not_reach_the_caches():
    blocks = linear_blocks()
    clean, dirty = gated(), gated()
    for i in range(STEPS):
        x = trajectory(i)
        a, _ = run_call(clean, blocks, x, step_at(i), ["c"])
        b, _ = run_call(dirty, blocks, x, step_at(i), ["c"], mutate_outputs=True)
        assert torch.equal(a, b)


def test_memory_stays_within_the_order_bound_and_reset_frees_it():
    blocks, engine = linear_blocks(), gated(first=3, last=2)
    for i in range(STEPS):
        run_call(engine, blocks, torch.cat([trajectory(i), trajectory(i, offset=1)]), step_at(i), ["u", "c"])
    tensors = engine.cached_tensors()
    assert 0 < len(tensors) <= 2 * ((3 + 1) + (2 + 1))
    assert all(not t.requires_grad for t in tensors)
    engine.reset()
    assert engine.cached_tensors() == []


def test_layout_change_resets_the_stream_instead_of_crashing():
    blocks, engine = linear_blocks(), gated(warmup=1)
    for i in range(4):
        run_call(engine, blocks, trajectory(i), step_at(i), ["c"])
    bigger = torch.cat([trajectory(4)] * 2, dim=1)  # more tokens
    out, call = run_call(engine, blocks, bigger, step_at(4), ["c"])
    assert call.mode is Mode.FULL
    assert torch.equal(out, reference(blocks, bigger))
    assert any("layout" in note for note in engine.stats.notes)


def test_a_stream_that_moves_device_takes_its_caches_along():
    """Multi-GPU sampling may run a conditioning on another device than last step: its caches follow
    it there (here to the meta device, the one other device every CPU machine has), with a note."""
    blocks, engine = linear_blocks(), gated(warmup=1)
    for i in range(3):
        run_call(engine, blocks, trajectory(i, batch=2), step_at(i), ["c", "u"])
    before = engine.cached_tensors()
    assert before and all(t.device.type == "cpu" for t in before)
    call = engine.begin_call(step_at(3), ["c"], (3, WIDTH), torch.device("meta"))
    moved = engine._streams["c"].tensors()
    assert moved and all(t.device.type == "meta" for t in moved)
    assert all(t.device.type == "cpu" for t in engine._streams["u"].tensors())  # the other stream stayed
    assert call.mode is Mode.GATE and engine._streams["c"].last.predict(3.0).device.type == "meta"
    assert any("moved to another device" in note for note in engine.stats.notes)


def test_non_finite_forecast_falls_back_to_full_compute():
    blocks, engine = linear_blocks(), gated(warmup=1)
    for i in range(3):
        run_call(engine, blocks, trajectory(i), step_at(i), ["c"])
    engine._streams["c"].last._terms[0][0, 0, 0] = float("inf")  # a corrupted cache
    x = trajectory(3)
    out, call = run_call(engine, blocks, x, step_at(3), ["c"])
    assert call.mode is Mode.FULL
    assert torch.equal(out, reference(blocks, x))
    assert any("non-finite" in note for note in engine.stats.notes)


def test_max_consecutive_forecasts_is_respected():
    blocks, engine = linear_blocks(), gated(warmup=2, max_consecutive=2)
    modes = [run_call(engine, blocks, trajectory(i), step_at(i), ["c"])[1].mode for i in range(9)]
    assert modes == [Mode.FULL, Mode.FULL] + [Mode.FORECAST, Mode.FORECAST, Mode.FULL] * 2 + [Mode.FORECAST]


def test_fixed_interval_follows_taylorseer_and_skips_block_zero_too():
    policy = FixedInterval(interval=4, warmup_steps=3)
    assert [s for s in range(16) if policy.is_full_step(s)] == [0, 1, 2, 6, 10, 14]
    blocks, engine = linear_blocks(), ForecastEngine(policy, last_order=1)
    for i in range(16):
        x = trajectory(i)
        out, call = run_call(engine, blocks, x, step_at(i, num_steps=16), ["c"])
        assert call.mode is (Mode.FULL if policy.is_full_step(i) else Mode.FORECAST)
        torch.testing.assert_close(out, reference(blocks, x), rtol=1e-9, atol=1e-9)
    assert engine.stats.blocks_run == 6 * DEPTH  # forecast calls run no block at all
    assert all(len(s.first.tensors()) == 0 for s in engine._streams.values())


def test_sigma_distance_is_exact_on_uneven_sigma_schedules():
    sigmas = [1.0, 0.97, 0.9, 0.78, 0.6, 0.41, 0.25, 0.12, 0.05, 0.0]
    blocks = linear_blocks()
    results = {}
    for distance in ("sigma", "step"):
        policy = ConfidenceGated(1e9, Schedule(warmup_steps=3))
        engine = ForecastEngine(policy, first_order=2, last_order=2, distance=distance)
        errors = []
        for i in range(9):
            s = sigmas[i]
            x = trajectory(0) * (1 + s + 2 * s * s)  # quadratic in sigma
            out, call = run_call(engine, blocks, x, StepPoint(i, float(i), s, 9), ["c"])
            if call.skips_blocks:
                errors.append((out - reference(blocks, x)).abs().max().item())
        results[distance] = max(errors)
    assert results["sigma"] < 1e-9
    assert results["step"] > 1e-4  # index distance cannot follow a non-uniform schedule exactly


def test_a_corrector_evaluation_at_a_known_position_replaces_the_predictor_one():
    """Heun evaluates its predictor x at sigma i+1, then step i+1 starts at the same sigma from the
    corrected x. Both calls are full here (the gate rejects the jump between them); the caches
    must then hold the corrected features, so later forecasts follow the true trajectory."""
    blocks, engine = linear_blocks(), gated(threshold=1e-3, warmup=1, first=1, last=1)
    for i in range(STEPS):
        if 0 < i < STEPS // 2:  # the predictor stage: off the trajectory, at the position of step i
            run_call(engine, blocks, trajectory(i) + 0.3, step_at(i), ["c"])
        out, call = run_call(engine, blocks, trajectory(i), step_at(i), ["c"])
        stream = engine._streams["c"]
        if call.skips_blocks:  # an accepted gate: the forecast must be the true output
            torch.testing.assert_close(out, reference(blocks, trajectory(i)), rtol=1e-9, atol=1e-9)
        else:  # the corrected features replaced the predictor's at this position
            torch.testing.assert_close(stream.last.predict(float(i)), reference(blocks, trajectory(i)), rtol=0, atol=0)
    # Without predictor calls in the second half, the gate trusts the caches built in the first.
    assert engine.stats.forecast_calls >= STEPS // 2 - 2


def test_always_full_policy_keeps_nothing():
    blocks, engine = linear_blocks(), ForecastEngine(AlwaysFull())
    for i in range(4):
        out, call = run_call(engine, blocks, trajectory(i), step_at(i, num_steps=4), ["c"])
        assert call.mode is Mode.FULL
    assert engine.cached_tensors() == [] and engine.stats.notes == []


def test_stats_are_plain_json_with_one_record_per_step():
    blocks, engine = linear_blocks(), gated(warmup=2)
    for i in range(STEPS):
        run_call(engine, blocks, trajectory(i), step_at(i), ["c"])
        run_call(engine, blocks, trajectory(i, offset=1), step_at(i), ["u"])
    stats = json.loads(json.dumps(engine.stats.to_json()))
    assert stats["v"] == 3 and stats["method"] == "cg-taylor" and stats["num_steps"] == STEPS
    assert [s["step"] for s in stats["steps"]] == list(range(STEPS))
    assert all(s["calls"] == 2 for s in stats["steps"])
    forecast_steps = [s["step"] for s in stats["steps"] if s["forecast"]]
    assert forecast_steps == list(range(2, STEPS - 1))
    assert stats["steps"][0]["gate_error"] is None and stats["steps"][5]["gate_error"] < 1e-9
    totals = stats["totals"]
    assert totals["calls"] == 2 * STEPS and totals["forecast"] == 2 * (STEPS - 3)
    assert totals["blocks_run"] == 2 * (3 * DEPTH + (STEPS - 3))
    assert totals["block_ratio"] == pytest.approx(totals["blocks_total"] / totals["blocks_run"], abs=1e-4)
    # why the full calls were full: the two warm-up steps, then the always-full last step
    assert [s.get("full") for s in stats["steps"][:3]] == [{"warmup": 2}, {"warmup": 2}, None]
    assert stats["steps"][-1]["full"] == {"edge": 2} and totals["full"] == {"warmup": 4, "edge": 2}


def test_stats_say_so_when_nothing_can_be_forecast():
    blocks, engine = linear_blocks(), gated(warmup=8)
    engine.note_schedule([1 - i / 6 for i in range(7)])
    for i in range(6):
        run_call(engine, blocks, trajectory(i), step_at(i, num_steps=6), ["c"])
    assert engine.stats.forecast_calls == 0
    assert any("nothing to forecast" in note for note in engine.stats.to_json()["notes"])


@pytest.mark.parametrize("calibrated", [True, False])
def test_the_calibrated_gate_weighs_each_step_by_its_share_of_the_schedule(calibrated):
    """On a schedule whose early steps drop sigma most, the calibrated gate asks more of their forecasts, and of
    the late ones with their small drops no less than at an average step (core/steps.py step_weights); the
    paper's gate on block 0's error is left as it was."""
    sigmas = [1 - (i / STEPS) ** 0.5 for i in range(STEPS + 1)]  # early drops large, late ones small
    engine = ForecastEngine(ConfidenceGated(0.1, Schedule(warmup_steps=1), calibrated=calibrated), 1, 1)
    engine.note_schedule(sigmas)
    weights = [engine.begin_call(step_at(i, sigmas=sigmas), ["c"]).weight for i in range(STEPS)]
    expected = step_weights(sigmas)
    assert expected[0] > 1 and expected[-1] == 1.0 and min(expected) == 1.0
    assert weights == (pytest.approx(expected) if calibrated else [1.0] * STEPS)
    call = engine.begin_call(step_at(3, sigmas=sigmas), ["c"])
    call.predicted, call.gate_error = 0.05, 0.05
    assert engine.judge._score(call) == pytest.approx(0.05 * expected[3] if calibrated else 0.05)


@pytest.mark.parametrize("steps, calibrated, note", [(3, True, True), (4, True, False), (3, False, False), (2, False, True)])
def test_the_calibrated_gate_needs_one_judged_call_before_it_can_forecast(steps, calibrated, note):
    """At 3 steps the calibrated gate judges its only open call with no pair to predict from, so the run
    can forecast nothing: it says so, as at 1-2 steps; the block-0 gate can forecast that call."""
    engine = ForecastEngine(ConfidenceGated(1e9, Schedule(warmup_steps=1), calibrated=calibrated), 1, 1)
    engine.note_schedule([1 - i / steps for i in range(steps + 1)])
    assert any("nothing to forecast" in n for n in engine.stats.notes) is note


def test_bad_engine_settings_are_clear_errors():
    with pytest.raises(ValueError, match="distance must be one of"):
        ForecastEngine(AlwaysFull(), distance="time")
    with pytest.raises(ValueError, match="order must be an integer from 0 to 4"):
        ForecastEngine(AlwaysFull(), first_order=7)
    with pytest.raises(ValueError, match="at least one stream key"):
        ForecastEngine(AlwaysFull()).begin_call(step_at(0), [])


def progress_trajectory(progress: float) -> torch.Tensor:
    """Block input at a given progress: linear in it, so every feature of the linear blocks is too."""
    return trajectory(0) + 0.5 * progress * torch.sin(trajectory(0) * 5)


def test_block0_distance_follows_features_that_move_unevenly_in_steps():
    """The features move along one line, but faster each step (as a sampler's shifted schedule makes
    them): a forecast over the step index misses, one placed where block 0 lies is exact."""
    errors = {}
    for distance in ("step", "block0"):
        blocks = linear_blocks()
        engine = ForecastEngine(ConfidenceGated(1e9, Schedule(warmup_steps=3, max_consecutive=2)), 1, 1, distance)
        worst = 0.0
        for i in range(STEPS):
            x = progress_trajectory(i * i / 20)
            out, call = run_call(engine, blocks, x, step_at(i), ["c"])
            if call.skips_blocks:
                worst = max(worst, (out - reference(blocks, x)).abs().max().item())
        assert engine.stats.forecast_calls == 6
        errors[distance] = worst
    assert errors["block0"] < 1e-9
    assert errors["step"] > 1e-3


@pytest.mark.parametrize("progress, expected", [(1.0, 2.0), (10.0, 4.0)])
def test_block0_distance_stays_between_the_last_refresh_and_twice_the_scheduled_distance(progress, expected):
    """Block 0 back where it was one step ago is not forecast backwards (the last computed state stands);
    block 0 far ahead of schedule is forecast at most twice the scheduled distance out."""
    blocks = linear_blocks()
    engine = ForecastEngine(ConfidenceGated(1e9, Schedule(warmup_steps=3)), 1, 1, "block0")
    for i in range(3):
        run_call(engine, blocks, progress_trajectory(i), step_at(i), ["c"])
    out, call = run_call(engine, blocks, progress_trajectory(progress), step_at(3), ["c"])
    assert call.skips_blocks
    torch.testing.assert_close(out, reference(blocks, progress_trajectory(expected)), rtol=1e-9, atol=1e-9)


def test_the_last_block_follows_the_order_that_tracked_block_zero():
    """The features rest, then move at a steady pace: a quadratic through the warm-up steps bends
    away, the line through the newest two follows. With orders 2 the gate picks order 1 for block 0
    and forecasts the last block with it, exactly; forced to order 2 the forecast overshoots."""
    progress = [0.0, 0.0, 1.0, 2.0]
    results = {}
    for first in (2, 1):
        blocks = linear_blocks()
        engine = ForecastEngine(ConfidenceGated(1e9, Schedule(warmup_steps=3)), first, 2)
        for i, u in enumerate(progress):
            out, call = run_call(engine, blocks, progress_trajectory(u), step_at(i), ["c"])
        assert call.skips_blocks
        results[first] = (call.order, (out - reference(blocks, progress_trajectory(2.0))).abs().max().item())
    assert results[2][0] == 1 and results[2][1] < 1e-9
    # Block 0 cached at order 1 offers no order 2 to compare: the last block keeps its own, which overshoots.
    assert results[1][0] is None and results[1][1] > 1e-3


def test_the_adapter_records_calls_notes_and_the_run_through_the_engine_and_finish_frees_the_caches():
    """What nodes/ asks of the engine besides the calls: the run named, calls it computed around the cache
    or another cache answered, notes; ``finish`` hands back the record with every cached tensor freed."""
    blocks, engine = linear_blocks(), ForecastEngine(ConfidenceGated(0.5, Schedule(warmup_steps=1)))
    assert engine.forecasts and not ForecastEngine(ConfidenceGated(0.0, Schedule())).forecasts
    engine.name_run("Flux", "euler")
    for index in range(3):
        run_call(engine, blocks, trajectory(index), step_at(index), ["cond"])
    held = engine.cached_tensors()
    engine.record_fallback(step_at(3), DEPTH)
    engine.record_served(step_at(4), DEPTH, ["EasyCache"])
    engine.note("a note")
    stats = engine.finish()
    assert held and engine.cached_tensors() == []
    record = stats.to_json()
    assert (record["model"], record["sampler"]) == ("Flux", "euler") and "a note" in record["notes"]
    assert record["steps"][3]["full"] == {"fallback": 1} and record["steps"][4]["served"] == 1
    assert record["totals"]["blocks_total"] == 5 * DEPTH
