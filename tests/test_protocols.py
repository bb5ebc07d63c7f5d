"""The node against both ComfyUI block protocols the CI tier mirrors (bench/standin/protocol.py).

v0.3.64 (October 2025) and v0.30.0 (August 2026) run the same blocks, but the 2026 loops
copy transformer_options, write block positions into it, run Wan's post-block patches after
every block, share patch objects between clones, and can call one model from several
threads (multi-GPU work units). A regression for either release fails here, without ComfyUI.
"""

from __future__ import annotations

import threading

import pytest
import torch

from bench.standin.protocol import CURRENT, LEGACY, PROTOCOLS
from bench.standin.sampling import sample
from bench.tiny import flux_scene, wan_scene
from cgtaylor_cache.nodes.sampling_run import SamplingRun
from test_node import ALWAYS, BlockCounter, apply_node, blocks_of, run, runtime_of, server  # noqa: F401 (fixture)

SCENES = {"flux": flux_scene, "wan": wan_scene}


def scene_for(family: str, protocol, **kwargs):
    return SCENES[family](protocol=protocol, **kwargs)


def model_of(scene) -> torch.nn.Module:
    return scene.patcher.get_model_object("diffusion_model")


# --- the same images on both releases ---------------------------------------------------------


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_both_protocols_give_the_same_images_with_and_without_the_node(family, cfg, server):
    """The 2026 bookkeeping changes no arithmetic, so every decision and every forecast is the same."""
    outputs, forecasts = {}, {}
    for protocol in PROTOCOLS:
        scene = scene_for(family, protocol)
        plain = run(scene, cfg=cfg, batch=2, steps=8)
        exact = run(scene, apply_node(scene.patcher, tolerance=0.0), cfg=cfg, batch=2, steps=8)
        assert torch.equal(exact, plain)
        outputs[protocol.name] = (plain, run(scene, apply_node(scene.patcher, **ALWAYS), cfg=cfg, batch=2, steps=8))
        forecasts[protocol.name] = server[-1][1]["totals"]
    assert torch.equal(outputs[LEGACY.name][0], outputs[CURRENT.name][0])
    assert torch.equal(outputs[LEGACY.name][1], outputs[CURRENT.name][1])
    assert forecasts[LEGACY.name] == forecasts[CURRENT.name] and forecasts[CURRENT.name]["forecast"] > 0


@pytest.mark.parametrize("family", SCENES)
def test_forecast_calls_skip_blocks_on_the_2026_loop(family, server):
    scene = scene_for(family, CURRENT)
    counter = BlockCounter(scene)
    run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=8)
    counter.close()
    totals = server[-1][1]["totals"]
    assert totals["forecast"] > 0 and not server[-1][1]["notes"]
    assert counter.counts[0] == totals["calls"]
    assert counter.counts[1:] == [totals["calls"] - totals["forecast"]] * (len(counter.counts) - 1)


# --- block positions ----------------------------------------------------------------------------


def test_patches_see_the_block_positions_the_layout_expects(monkeypatch):
    """On the 2026 loop every patch is reached at the position its key names, so no call falls back."""
    scene = scene_for("flux", CURRENT)
    patcher = apply_node(scene.patcher, **ALWAYS)
    seen = []
    original = SamplingRun._check_position

    def spy(self, key, args):
        options = args["transformer_options"]
        seen.append((key, options["block_type"], options["block_index"], options["total_blocks"]))
        original(self, key, args)

    monkeypatch.setattr(SamplingRun, "_check_position", spy)
    run(scene, patcher, steps=4)
    params = model_of(scene).params
    expected = [("double_block", i, "double", i, params.depth) for i in range(params.depth)]
    expected += [("single_block", i, "single", i, params.depth_single_blocks) for i in range(params.depth_single_blocks)]
    first_call = [(key[0], key[1], kind, index, total) for key, kind, index, total in seen[: len(expected)]]
    assert first_call == expected


def test_a_loop_that_reports_other_positions_is_computed_in_full(server, caplog):
    scene = scene_for("wan", CURRENT)
    model = model_of(scene)
    original_run_block = model.run_block

    def late_run_block(i, block, x, e0, freqs, context, transformer_options):
        transformer_options["block_index"] = i + 1
        return original_run_block(i, block, x, e0, freqs, context, transformer_options)

    baseline = run(scene, steps=6)
    model.run_block = late_run_block
    try:
        out = run(scene, apply_node(scene.patcher, **ALWAYS), steps=6)
    finally:
        del model.run_block
    assert torch.equal(out, baseline)
    stats = server[-1][1]
    assert stats["totals"]["forecast"] == 0
    assert any("block loop differs" in note and "('double_block', 0)" in note for note in stats["notes"])
    assert "block loop differs" in caplog.text


def test_a_model_with_more_blocks_than_the_layout_is_computed_in_full(server):
    """``total_blocks`` disagrees when the model gained blocks after the node was applied."""
    scene = scene_for("wan", CURRENT)
    patcher = apply_node(scene.patcher, **ALWAYS)
    model = model_of(scene)
    extra = type(model.blocks[0])(model.params.dim, model.params.ffn_dim, model.params.num_heads)
    model.blocks.append(extra)
    try:
        baseline = run(scene, steps=6)
        assert torch.equal(run(scene, patcher, steps=6), baseline)
    finally:
        del model.blocks[-1]
    assert any(f"of {len(model.blocks) + 1} blocks" in note for note in server[-1][1]["notes"])


# --- Wan post-block patches ---------------------------------------------------------------------


def test_wan_post_block_patches_run_on_skipped_blocks_and_after_the_forecast(server):
    """v0.30.0 runs patches["double_block"] after every block (comfy/ldm/wan/model.py:612-615): on a
    forecast call they see the skipped blocks pass block 0's state through, and the last one adds
    its part to the forecast the head then reads."""
    scene = scene_for("wan", CURRENT)
    depth = len(model_of(scene).blocks)
    delta = 0.01
    seen: list[tuple[int, torch.Tensor]] = []

    def post_block(args):
        seen.append((args["block_index"], args["img"].clone()))
        return {**args, "img": args["img"] + delta}

    hooked = scene.patcher.clone()
    hooked.set_model_patch(post_block, "double_block")
    baseline = run(scene, hooked, steps=8)
    seen.clear()
    assert torch.equal(run(scene, apply_node(hooked, tolerance=0.0), steps=8), baseline)

    head_inputs = []
    handle = model_of(scene).head.register_forward_pre_hook(lambda module, args: head_inputs.append(args[0].clone()))
    seen.clear()
    run(scene, apply_node(hooked, **ALWAYS), steps=8)
    handle.remove()
    stats = server[-1][1]
    calls = [seen[i : i + depth] for i in range(0, len(seen), depth)]
    assert len(calls) == stats["totals"]["calls"] == len(head_inputs)
    assert all([index for index, _ in call] == list(range(depth)) for call in calls)
    passed_through = [all(torch.equal(call[i][1], call[i - 1][1] + delta) for i in range(1, depth - 1)) for call in calls]
    assert sum(passed_through) == stats["totals"]["forecast"] > 0
    assert all(torch.equal(head_input, call[-1][1] + delta) for call, head_input in zip(calls, head_inputs))


# --- clones --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_clones_of_the_patched_model_share_its_patches(protocol, server):
    """A clone (v0.3.64 deepcopy, v0.30.0 deepcopy_list_dict) calls the same patch functions and runtime."""
    scene = scene_for("flux", protocol)
    patched = apply_node(scene.patcher, unique_id="5", **ALWAYS)
    clone = patched.clone()
    original_patches = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    cloned_patches = clone.model_options["transformer_options"]["patches_replace"]["dit"]
    assert cloned_patches is not original_patches
    assert all(cloned_patches[key] is patch for key, patch in original_patches.items())
    assert runtime_of(clone) is runtime_of(patched)
    assert torch.equal(run(scene, clone, steps=8), run(scene, patched, steps=8))
    assert [event[1]["node"] for event in server] == ["5", "5"] and server[-1][1]["totals"]["forecast"] > 0


# --- multi-GPU work units -----------------------------------------------------------------------


DEVICES = (torch.device("cpu", 1), torch.device("cpu", 2))  # two dict keys, one CPU


def with_work_units(patched):
    """What ComfyUI's multi-GPU setup leaves in model_options: a clone of the patched model per device."""
    patched.model_options["multigpu_clones"] = {device: patched.clone() for device in DEVICES}
    return patched


class Lockstep:
    """Holds every thread at block 0 until the other arrives, so calls of the two streams overlap."""

    def __init__(self, scene, parties: int = 2) -> None:
        self.barrier = threading.Barrier(parties, timeout=20)
        self.threads: set[str] = set()
        self.handle = blocks_of(scene)[0].register_forward_pre_hook(self._wait)

    def _wait(self, module, args) -> None:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()

    def close(self) -> None:
        self.handle.remove()


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("settings", [{"tolerance": 0.0}, {"tolerance": 0.5}, ALWAYS])
def test_multi_gpu_threads_match_the_same_calls_one_after_another(family, settings, server):
    scene = scene_for(family, CURRENT)
    sequential = run(scene, apply_node(scene.patcher, **settings), cfg=3.0, steps=8, separate_conds=True)
    sequential_stats = server[-1][1]
    lockstep = Lockstep(scene)
    try:
        threaded = run(scene, with_work_units(apply_node(scene.patcher, **settings)), cfg=3.0, steps=8)
    finally:
        lockstep.close()
    # a thread per device and step (the stand-in starts threads where ComfyUI keeps a pool); never this one
    assert len(lockstep.threads) == 2 * 8 and threading.current_thread().name not in lockstep.threads
    assert torch.equal(threaded, sequential)
    stats = server[-1][1]
    assert stats["totals"] == sequential_stats["totals"] and stats["steps"] == sequential_stats["steps"]
    assert not stats["notes"]
    if settings is ALWAYS:
        assert stats["totals"]["forecast"] > 0


def test_one_stream_on_two_threads_at_once_is_computed_in_full_for_the_later_call(server):
    """The same conditioning as positive and negative puts one stream on both threads at once."""
    scene = scene_for("wan", CURRENT)
    lockstep = Lockstep(scene)
    try:
        out = sample(with_work_units(apply_node(scene.patcher, **ALWAYS)), scene.noise(), scene.positive,
                     scene.positive, cfg=3.0, steps=6)
    finally:
        lockstep.close()
    stats = server[-1][1]
    assert torch.isfinite(out).all() and stats["totals"]["calls"] == 12
    assert any("same conditioning ran at once" in note for note in stats["notes"])


# --- models that bypass the hooks -----------------------------------------------------------------


def test_a_model_that_never_reaches_the_hooks_is_named_in_the_log_and_the_notes(server, caplog):
    """CausalWanModel in autoregressive mode runs its blocks without wrappers or patches
    (comfy/ldm/wan/ar_model.py:260-272 at v0.30.0): the run must say so, not report nothing."""
    from bench.models import WanModel

    class CausalWanModel(WanModel):
        def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
            if transformer_options.get("ar_state") is None:
                return super().forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
            return self._forward(x, timestep, context, clip_fea, time_dim_concat, {}, **kwargs)

    scene = scene_for("wan", CURRENT)
    model = model_of(scene)
    model.__class__ = CausalWanModel
    ar = scene.patcher.clone()
    ar.model_options["transformer_options"]["ar_state"] = {"start_frame": 0}
    try:
        baseline = run(scene, ar, steps=6)
        out = run(scene, apply_node(ar, unique_id="4", **ALWAYS), steps=6)
        normal = run(scene, apply_node(scene.patcher, **ALWAYS), steps=6)
    finally:
        model.__class__ = WanModel
    assert torch.equal(out, baseline)
    ar_stats, normal_stats = server[-2][1], server[-1][1]
    assert ar_stats["totals"]["calls"] == 0
    note, = ar_stats["notes"]
    assert "CausalWanModel" in note and "autoregressive" in note and "nothing was cached" in note
    assert "CausalWanModel made no model call" in caplog.text
    assert normal_stats["totals"]["forecast"] > 0 and not normal_stats["notes"]
    assert torch.isfinite(normal).all()


def test_a_run_interrupted_before_its_first_call_is_not_called_a_bypass(server):
    """Cancelling (or an error) before the first model call leaves calls at 0 for another reason."""

    class Cancelled(Exception):
        pass

    def cancel(executor, *args, **kwargs):
        raise Cancelled

    scene = scene_for("wan", CURRENT)
    patched = apply_node(scene.patcher, **ALWAYS)
    patched.add_wrapper_with_key("outer_sample", "cancel-first", cancel)
    with pytest.raises(Cancelled):
        run(scene, patched, steps=6)
    stats = server[-1][1]
    assert stats["totals"]["calls"] == 0 and stats["notes"] == []
