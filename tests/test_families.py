"""The node on the 2026 families: Qwen-Image (and Edit), HunyuanVideo, LTX-Video 0.9, LTX-2 and MiniMax H3.

Same shape as the FLUX/Wan tests in test_node.py, on tiny models whose block loops mirror
ComfyUI (bench/models/qwen_image.py, hunyuan_video.py, ltxv.py, minimax.py). Block executions
are counted with forward hooks on the real block modules.
"""

from __future__ import annotations

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.models.hunyuan_video import HunyuanVideoParams
from bench.models.qwen_image import QwenImageParams
from bench.standin.patcher import ModelPatcher
from bench.standin.sampling import Cond, FlowModel, sample
from bench.tiny import Scene
from bench.models.minimax import MiniMaxParams
from bench.tiny_families import hunyuan_video_scene, ltxav_scene, ltxv_scene, minimax_h3_scene, qwen_image_scene
from cgtaylor_cache.nodes.families import NOT_BLOCKWISE, UnsupportedModelError, detect
from test_node import ALWAYS, BlockCounter, apply_node, blocks_of, run, runtime_of, server  # noqa: F401  (server is a fixture)

SCENES = {
    "qwen-image": qwen_image_scene,
    "qwen-image-edit-2509": lambda: qwen_image_scene(references=2),
    "qwen-image-edit-2511": lambda: qwen_image_scene(params=QwenImageParams(timestep_zero=True), references=1),
    "hunyuan-video": hunyuan_video_scene,
    "hunyuan-video-i2v": lambda: hunyuan_video_scene(reference_frames=1),
    "hunyuan-video-1.5": lambda: hunyuan_video_scene(
        params=HunyuanVideoParams(depth=4, depth_single_blocks=0, vec_in_dim=None), masked=True
    ),
    "ltxv": ltxv_scene,
    "ltx-2": ltxav_scene,
    "minimax-h3": minimax_h3_scene,
    "minimax-h3-keyframe": lambda: minimax_h3_scene(keyframe=True),
}
FAMILY_OF = {
    "qwen-image": "QwenImage", "qwen-image-edit-2509": "QwenImage", "qwen-image-edit-2511": "QwenImage",
    "hunyuan-video": "HunyuanVideo", "hunyuan-video-i2v": "HunyuanVideo", "hunyuan-video-1.5": "HunyuanVideo", "ltxv": "LTXV", "ltx-2": "LTXAV",
    "minimax-h3": "MiniMaxH3", "minimax-h3-keyframe": "MiniMaxH3",
}
# MiniMax H3 takes one sample per call (cond and uncond run apart): the batched-call tests do not apply.
BATCHED = [variant for variant in SCENES if not variant.startswith("minimax")]


def model_of(scene: Scene) -> torch.nn.Module:
    return scene.patcher.get_model_object("diffusion_model")


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SCENES)
def test_each_family_is_detected_with_its_blocks_in_run_order(variant):
    scene = SCENES[variant]()
    layout = detect(model_of(scene))
    assert layout.family == FAMILY_OF[variant]
    model = model_of(scene)
    if hasattr(model, "double_blocks"):
        expected = [("double_block", i) for i in range(len(model.double_blocks))]
        expected += [("single_block", i) for i in range(len(model.single_blocks))]
    else:
        expected = [("double_block", i) for i in range(len(blocks_of(scene)))]
    assert list(layout.keys) == expected


@pytest.mark.parametrize(("class_name", "model_name"), sorted(NOT_BLOCKWISE.items()))
def test_models_without_block_replacement_get_a_reason_and_an_alternative(class_name, model_name):
    """A class of that name whose code cannot be read (defined at run time) is judged by its name."""
    model = type(class_name, (torch.nn.Module,), {})()
    with pytest.raises(UnsupportedModelError) as info:
        apply_node(ModelPatcher(FlowModel(model)))
    message = str(info.value)
    assert class_name in message and model_name in message
    assert "patches_replace" in message and "EasyCache" in message


class PlainLoopDiT(torch.nn.Module):
    """A model ComfyUI might add, whose forward runs its blocks with no per-block hook."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))

    def forward(self, x, transformer_options={}):
        for block in self.blocks:
            x = block(x)
        return x


class HookedTransformer(torch.nn.Module):
    """Runs its blocks through ``patches_replace["dit"]`` (as Stable Audio's ContinuousTransformer does)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))

    def forward(self, x, transformer_options={}):
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, layer in enumerate(self.layers):
            if ("double_block", i) in blocks_replace:
                x = blocks_replace[("double_block", i)]({"img": x}, {"original_block": lambda a: {"img": layer(a["img"])}})["img"]
            else:
                x = layer(x)
        return x


class HookInAChildModule(torch.nn.Module):
    """A model whose hook lives in a submodule's class (Stable Audio's AudioDiffusionTransformer)."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer = HookedTransformer()

    def forward(self, x, transformer_options={}):
        return self.transformer(x, transformer_options)


class NextDiT(HookedTransformer):
    """A later Lumina 2 that gained the hook: named in the list of hook-less models, judged by its code."""


@pytest.mark.parametrize("model_class", [PlainLoopDiT, HookInAChildModule, NextDiT])
def test_a_model_without_the_block_hook_is_told_so_from_its_code(model_class):
    """Whether the hook exists is read from the model's code (its class, bases and submodules), not
    only from the list of known names: a class no list knows is refused with the reason and the
    alternative; a model that has the hook but is no supported family gets the plain refusal."""
    with pytest.raises(UnsupportedModelError) as info:
        apply_node(ModelPatcher(FlowModel(model_class())))
    message = str(info.value)
    assert model_class.__name__ in message
    hookless = model_class is PlainLoopDiT
    assert ("patches_replace" in message and "EasyCache" in message) is hookless, message
    assert ("supported model families are" in message) is not hookless, message


# --- exactness ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SCENES)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_threshold_zero_is_bit_identical(variant, cfg, sampler):
    scene = SCENES[variant]()
    baseline = run(scene, cfg=cfg, sampler=sampler, steps=6)
    patched = run(scene, apply_node(scene.patcher, tolerance=0.0), cfg=cfg, sampler=sampler, steps=6)
    assert torch.equal(baseline, patched)


# --- skipping -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SCENES)
def test_forecast_calls_run_only_block_zero(variant, server):
    scene = SCENES[variant]()
    patcher = apply_node(scene.patcher, **ALWAYS)
    counter = BlockCounter(scene)
    out = run(scene, patcher, cfg=3.0, steps=8)
    counter.close()
    totals = server[-1][1]["totals"]
    full_calls = totals["calls"] - totals["forecast"]
    assert totals["forecast"] > 0 and torch.isfinite(out).all()
    assert not torch.equal(out, run(scene, cfg=3.0, steps=8))
    assert counter.counts[0] == totals["calls"]
    assert counter.counts[1:] == [full_calls] * (len(counter.counts) - 1)
    assert totals["blocks_run"] == sum(counter.counts)
    assert server[-1][1]["model"] == FAMILY_OF[variant]


# --- streams --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", BATCHED)
def test_cond_and_uncond_keep_separate_caches(variant, server):
    scene = SCENES[variant]()
    batched = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=4.0, steps=8)
    batched_stats = server[-1][1]["totals"]
    separate = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=4.0, steps=8, separate_conds=True)
    separate_stats = server[-1][1]["totals"]
    assert batched_stats["forecast"] > 0
    assert separate_stats["forecast"] == 2 * batched_stats["forecast"]
    torch.testing.assert_close(separate, batched, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", BATCHED)
def test_batch_of_two_matches_each_sample_alone(variant):
    scene = SCENES[variant]()
    patcher = apply_node(scene.patcher, **ALWAYS)
    noise = scene.noise(batch=2)
    together = sample(patcher, noise, scene.positive, scene.negative, cfg=3.0, steps=8)
    alone = [sample(patcher, noise[i : i + 1], scene.positive, scene.negative, cfg=3.0, steps=8) for i in range(2)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-5)


# --- what a forecast hands on ---------------------------------------------------------------


def with_control(scene: Scene) -> Scene:
    """ControlNet residuals on every block (Qwen-Image :553-558; HunyuanVideo :409-414, :434-439),
    so the last block's output is changed in place after the block returns."""
    g = torch.Generator().manual_seed(9)
    model = model_of(scene)
    hidden = model.params.hidden_size
    tokens = 16  # the image tokens of an 8x8 latent in 2x2 patches (x 3 frames for HunyuanVideo)
    if hasattr(model, "double_blocks"):
        reference = scene.positive.inputs.get("ref_latent")
        tokens *= scene.latent_shape[2] + (0 if reference is None else reference.shape[2])  # :409-414 adds to all
        control = {"input": [torch.randn(1, tokens, hidden, generator=g) * 0.1 for _ in model.double_blocks],
                   "output": [torch.randn(1, tokens, hidden, generator=g) * 0.1 for _ in model.single_blocks]}
    else:
        control = {"input": [torch.randn(1, tokens, hidden, generator=g) * 0.1 for _ in model.transformer_blocks]}
    conds = [Cond({**c.inputs, "control": control}) for c in (scene.positive, scene.negative)]
    return Scene(scene.patcher, *conds, scene.latent_shape)


def record_last_block(patcher, scene: Scene) -> tuple[list, list]:
    """(the last block's output on full calls, the forecast its patch handed on), each copied the
    moment the patch returns, before the model adds anything to it in place."""
    computed, handed_on = [], []
    last_key = detect(model_of(scene)).last
    patches = patcher.model_options["transformer_options"]["patches_replace"]["dit"]
    node_patch = patches[last_key]

    def recording(args, extra):
        ran = []

        def original_block(block_args):
            ran.append(True)
            return extra["original_block"](block_args)

        out = node_patch(args, {**extra, "original_block": original_block})
        img = out["img"]
        copied = tuple(t.clone() for t in img) if isinstance(img, tuple) else img.clone()
        if ran:
            computed.append(copied)
        else:  # a forecast, with the newest full output at that moment
            handed_on.append((copied, computed[-1]))
        return out

    recording.cgtaylor_runtime = node_patch.cgtaylor_runtime  # still the node's own patch for the runtime's check
    patches[last_key] = recording
    return computed, handed_on


@pytest.mark.parametrize(
    "variant",
    ["qwen-image", "qwen-image-edit-2511", "hunyuan-video", "hunyuan-video-i2v", "hunyuan-video-1.5", "ltx-2",
     "minimax-h3-keyframe"],
)
def test_order_zero_forecast_is_the_last_computed_output_not_counted_twice(variant):
    """With last_block_order 0 a forecast must be exactly the last block's previous output as the
    block computed it: ControlNet residuals added after the block, and reference tokens, must not be
    baked into the cache and then added again; LTX-2 forecasts the audio part as well as the video,
    MiniMax H3 every row of its packed sequence, though its blocks then add into it in place."""
    scene = SCENES[variant]()
    if not variant.startswith(("ltx", "minimax")):
        scene = with_control(scene)
    patcher = apply_node(scene.patcher, **ALWAYS, last_block_order=0, max_consecutive=0)
    computed, handed_on = record_last_block(patcher, scene)
    run(scene, patcher, cfg=1.0, steps=8)
    assert handed_on and computed
    for forecast, expected in handed_on:  # order 0: the newest full output, reused as is
        if isinstance(forecast, tuple):
            assert len(forecast) == 2 and all(torch.equal(f, e) for f, e in zip(forecast, expected))
        else:
            assert torch.equal(forecast, expected)


@pytest.mark.parametrize("variant", SCENES)
def test_non_finite_forecast_computes_in_full(variant, server):
    """An overflowed last-block cache (as fp16 can): every forecast is refused. For LTX-2 the
    overflow is put into the audio part, which the forecast must cover too."""
    scene = SCENES[variant]()
    baseline = run(scene, cfg=3.0, steps=8)
    patcher = apply_node(scene.patcher, **ALWAYS)
    runtime = runtime_of(patcher)

    def overflow(step, x):
        for stream in runtime.engine._streams.values():
            if stream.last._terms:
                newest = stream.last._terms[0]
                newest[tuple(size - 1 for size in newest.shape)] = float("inf")  # LTX-2: in the audio part

    out = run(scene, patcher, cfg=3.0, steps=8, callback=overflow)
    assert torch.equal(out, baseline)
    stats = server[-1][1]
    assert stats["totals"]["forecast"] == 0
    assert any("non-finite" in note for note in stats["notes"])


# --- LTX-2 block state ---------------------------------------------------------------------


def test_ltx2_state_packs_every_part_and_gates_on_video():
    layout = detect(model_of(ltxav_scene()))
    video, audio = torch.randn(2, 8, 6), torch.randn(2, 5, 3)
    state = layout.state({"img": (video, audio)})
    assert state.shape == (2, 8 * 6 + 5 * 3)
    assert layout.gate_state({"img": (video, audio)}, {}) is video
    rebuilt = layout.with_state({"img": (torch.zeros_like(video), torch.zeros_like(audio)), "a_pe": 1}, state)
    assert rebuilt["a_pe"] == 1
    assert torch.equal(rebuilt["img"][0], video) and torch.equal(rebuilt["img"][1], audio)
    with pytest.raises(ValueError, match="does not hold parts"):
        layout.with_state({"img": (video, audio[:, :4])}, state)


# --- MiniMax H3: one packed sequence per call, blocks that add into their input in place -------


def test_minimax_h3_state_is_the_whole_packed_sequence_and_the_gate_reads_the_target_video():
    layout = detect(model_of(minimax_h3_scene()))
    packed = torch.randn(20, 6)  # [text 4 | condition 4 | audio 4 | video 8] rows
    segments = [(0, 4, 4), (4, 8, 3), (8, 12, 5), (12, 20, 0)]
    state = layout.state({"img": packed})
    assert state.shape == (1, 20, 6) and torch.equal(state[0], packed)
    assert torch.equal(layout.gate_state({"img": packed}, {"mod_segments": segments}), packed[12:20].unsqueeze(0))
    rebuilt = layout.with_state({"img": torch.zeros_like(packed), "t_emb": 1}, state.clone())
    assert rebuilt["t_emb"] == 1 and torch.equal(rebuilt["img"], packed)
    with pytest.raises(ValueError, match="does not hold the packed sequence"):
        layout.with_state({"img": packed[:19]}, state)


def test_minimax_h3_runs_cond_and_uncond_as_separate_calls_each_with_its_own_caches(server):
    """Each cond carries its own packed layout, so ComfyUI never batches them (can_concat_cond):
    two calls per step, each forecast from its own stream, as with memory-short separate calls."""
    scene = minimax_h3_scene()
    steps = 8
    out = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=steps)
    totals = server[-1][1]["totals"]
    assert totals["calls"] == 2 * steps and totals["forecast"] > 0
    separate = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=steps, separate_conds=True)
    assert torch.equal(out, separate) and server[-1][1]["totals"] == totals


def test_minimax_h3_refuses_a_batch_of_two_with_and_without_the_node():
    scene = minimax_h3_scene()
    for patcher in (scene.patcher, apply_node(scene.patcher, **ALWAYS)):
        with pytest.raises(ValueError, match="supports batch size 1"):
            run(scene, patcher, batch=2, cfg=3.0, steps=4)


def _engine(kind: str):
    """A factory for CacheRuntime: the node's engine in one setting (every call it can forecast is
    forecast), or a benchmark baseline that always reuses."""
    from bench.baselines import FirstBlockCache, InputChangeCache, ProbeAlignedCache
    from cgtaylor_cache.nodes.node import DEFAULTS
    from cgtaylor_cache.nodes.settings import CacheSettings

    baselines = {"fbcache": FirstBlockCache, "input-change": InputChangeCache, "dicache": ProbeAlignedCache}
    if kind in baselines:
        return lambda: baselines[kind](1e9)
    overrides = {"block0-gate": ALWAYS, "calibrated": {"tolerance": ALWAYS["tolerance"]},
                 "residual": {**ALWAYS, "forecast_residual": True}, "block0-distance": {**ALWAYS, "distance": "block0"}}[kind]
    return CacheSettings(**{**DEFAULTS, "max_consecutive": 0, **overrides}).new_engine


@pytest.mark.parametrize(
    "kind", ["block0-gate", "calibrated", "residual", "block0-distance", "fbcache", "input-change", "dicache"]
)
def test_blocks_that_add_into_their_input_in_place_give_the_cached_run_of_out_of_place_ones(kind):
    """MiniMax H3's blocks add their residuals into the tensor they were given (model.py:210-214):
    block 0's input is its output afterwards, and both are the next block's input. Whatever a
    method keeps from a block (residual anchors, the gate's and the caches' features) must be a
    copy, or the in-place model caches other values (and its gate measures other errors) than the
    same model computing out of place."""
    from cgtaylor_cache.nodes.runtime import CacheRuntime, install

    outputs, reports = [], []
    for inplace in (True, False):
        scene = minimax_h3_scene(params=MiniMaxParams(inplace=inplace), keyframe=True)
        clone = scene.patcher.clone()
        install(clone, CacheRuntime(_engine(kind), detect(model_of(scene)), reports.append))
        outputs.append(run(scene, clone, cfg=3.0, steps=10))
    in_place, out_of_place = (report.to_json()["steps"] for report in reports)
    assert reports[0].forecast_calls > 0 and in_place == out_of_place
    assert torch.equal(outputs[0], outputs[1])


# --- residual baselines (benchmark) through the same adapter --------------------------------


@pytest.mark.parametrize("variant", SCENES)
@pytest.mark.parametrize("baseline", ["fbcache", "input-change"])
def test_residual_baselines_see_block_zero_in_the_last_blocks_layout(variant, baseline):
    """The residual baselines add block 0's residual to the last block's previous output, so
    ``BlockLayout.last_space`` must lay block 0's tokens out as the last block's (HunyuanVideo:
    text first, then image; LTX-2: video and audio packed): a wrong layout gives no forecasts."""
    from bench.baselines import FirstBlockCache, InputChangeCache
    from cgtaylor_cache.nodes.runtime import CacheRuntime, install

    engines = {"fbcache": FirstBlockCache, "input-change": InputChangeCache}
    scene = SCENES[variant]()
    layout = detect(model_of(scene))
    reports = []

    def patched(threshold):
        clone = scene.patcher.clone()
        install(clone, CacheRuntime(lambda: engines[baseline](threshold), layout, reports.append))
        return clone

    assert torch.equal(run(scene, patched(0.0), cfg=3.0, steps=8), run(scene, cfg=3.0, steps=8))
    out = run(scene, patched(1e9), cfg=3.0, steps=8)
    stats = reports[-1]
    assert torch.isfinite(out).all() and stats.forecast_calls > 0, stats.notes
    assert not [note for note in stats.notes if "computed in full" in note or "reset" in note], stats.notes


def test_subclasses_sharing_a_block_loop_take_their_parents_layout():
    """Detection reads the class hierarchy, most specific family first: a Qwen-Image subclass is
    Qwen-Image, and LTX-2 (an ``LTXVModel`` subclass in ComfyUI too) is LTX-2, not LTX-Video."""
    from bench.models import LTXAVModel, QwenImageTransformer2DModel

    class QwenImageLayered(QwenImageTransformer2DModel):
        pass

    assert detect(QwenImageLayered(QwenImageParams(num_layers=2))).family == "QwenImage"
    layout = detect(LTXAVModel())
    assert layout.family == "LTXAV" and layout.state_kind == "parts"
