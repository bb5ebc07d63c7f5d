"""The node on ComfyUI's own Qwen-Image, HunyuanVideo, LTX-Video, LTX-2, FLUX.2 and MiniMax H3 classes.

Skipped unless $COMFYUI_PATH points at a ComfyUI checkout (see conftest.py). Each family is
built from a tiny config through ``comfy.supported_models`` (as ``tiny_flux`` is), sampled
by the stock KSampler node, and checked for: bit-identity at tolerance 0, blocks 1..L-1
skipped on forecast calls (forward hooks on the real blocks), and the stats event. Families
and arguments missing from a ComfyUI release are found by feature detection: LTX-2, FLUX.2 and
MiniMax H3 exist only in 2026 releases, Edit 2511's ``index_timestep_zero`` only where
Qwen-Image takes ``default_ref_method``. Last, every model class a release's ``model_base``
builds is either supported, or refused with the right message (no per-block hook: EasyCache).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from conftest import as_model_patcher, build_model
from test_real_comfyui import HUGE_THRESHOLD, SEED, STEPS, apply_node, check_block_counts, node_class

pytestmark = pytest.mark.comfyui

CFG = 4.0  # > 1, so the uncond is evaluated too and cond/uncond share a batch
# The paper's gate on block 0's own error at a tolerance no error reaches: every call the schedule
# allows is forecast (as tests/test_node.py's ALWAYS; the calibrated gate would wait for pairs).
EVERY_CALL = {"tolerance": HUGE_THRESHOLD, "gate": "block0"}


def accepted(config: dict, target: Any) -> dict:
    """``config`` without the keys this release's class or params dataclass does not know.

    Keys newer releases added (HunyuanVideo 1.5's ``vision_in_dim``, Qwen-Image's
    ``default_ref_method``, FLUX.2's ``global_modulation``...) are dropped on older ones; a
    field the release requires that ``config`` lacks is an error, never silently defaulted.
    """
    if dataclasses.is_dataclass(target):
        names = {f.name for f in dataclasses.fields(target)}
        required = {f.name for f in dataclasses.fields(target)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = required - set(config)
        if missing:
            raise RuntimeError(f"{target.__name__} requires {sorted(missing)}: add them to the tiny config")
        return {k: v for k, v in config.items() if k in names or k == "image_model"}
    parameters = inspect.signature(target.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return dict(config)
    return {k: v for k, v in config.items() if k in parameters}


def has(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


@dataclass
class Family:
    """A tiny real model and what the KSampler node feeds it."""

    name: str  # the node's family name in the stats event
    patcher: Any
    blocks: list[str]  # attribute paths of the blocks in run order
    head: str  # a module that runs once per model call, forecast or not
    positive: list
    negative: list
    latent: Callable[[], Any]

    def modules(self) -> dict[str, torch.nn.Module]:
        model = self.patcher.model.diffusion_model
        return {name: model.get_submodule(name) for name in [*self.blocks, self.head]}


def conditioning(seed: int, tokens: int, width: int, **extra: Any) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=generator), dict(extra)]]


def block_names(model: torch.nn.Module, *attributes: str) -> list[str]:
    return [f"{attribute}.{i}" for attribute in attributes for i in range(len(getattr(model, attribute)))]


# ----------------------------------------------------------------------------- tiny configs

QWEN_IMAGE = {
    "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 3,
    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 64, "axes_dims_rope": (4, 6, 6),
}
HUNYUAN_VIDEO = {
    "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2], "vec_in_dim": 768,
    "context_in_dim": 64, "hidden_size": 32, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
    "axes_dim": [4, 6, 6], "theta": 256, "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
    "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False,
}
# HunyuanVideo 1.5's layout: no vector_in, cond-type embedding, double blocks only.
HUNYUAN_VIDEO_15 = {**HUNYUAN_VIDEO, "vec_in_dim": None, "depth": 3, "depth_single_blocks": 0, "guidance_embed": False,
                    "use_cond_type_embedding": True}
# HunyuanImage 2.1: the same class with a 2-D patch, no vector_in, 64 latent channels.
HUNYUAN_IMAGE_21 = {**HUNYUAN_VIDEO, "in_channels": 64, "out_channels": 64, "patch_size": [1, 1], "vec_in_dim": None,
                    "axes_dim": [8, 8]}
LTXV = {
    "image_model": "ltxv", "in_channels": 128, "num_layers": 3, "attention_head_dim": 16, "num_attention_heads": 2,
    "cross_attention_dim": 32, "caption_channels": 64,
}
LTXAV = {
    **LTXV, "image_model": "ltxav", "audio_in_channels": 128, "audio_attention_head_dim": 16,
    "audio_num_attention_heads": 2, "audio_cross_attention_dim": 32,
}
FLUX2 = {  # comfy/model_detection.py:237-251 at v0.30.0, narrowed
    "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "context_in_dim": 64,
    "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 4, "depth": 2, "depth_single_blocks": 3,
    "axes_dim": [4, 4, 4, 4], "theta": 2000, "patch_size": 1, "qkv_bias": False, "guidance_embed": True,
    "txt_ids_dims": [3], "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
    "default_ref_method": "index", "ref_index_scale": 10.0,
}
# MiniMax H3 (comfy/ldm/minimax/model.py): the real latent channels (video 24, audio 32), narrow
# otherwise. Its RoPE rotates 6 * rope_inv_freq_len channels of each head, so 4 fits a head of 32.
MINIMAX_H3 = {
    "image_model": "minimax_h3", "hidden_size": 64, "num_layers": 3, "token_refiner_num_layers": 1,
    "num_attention_heads": 2, "attention_head_dim": 32, "ffn_hidden_size": 128, "text_dim": 48,
    "timestep_input_dim": 64, "time_embed_hidden_size": 64, "time_embed_dim": 32, "rope_inv_freq_len": 4,
}


def qwen_image(edit: bool) -> Family:
    import comfy.ldm.qwen_image.model as qwen
    import comfy.supported_models

    config = dict(QWEN_IMAGE)
    if edit and "default_ref_method" in inspect.signature(qwen.QwenImageTransformer2DModel.__init__).parameters:
        config["default_ref_method"] = "index_timestep_zero"  # Edit 2511 (v0.30.0 model_detection.py:927-928)
    model = build_model(comfy.supported_models.QwenImage, accepted(config, qwen.QwenImageTransformer2DModel), seed=3001)
    extra = {}
    if edit:  # what ReferenceLatent puts into the conditioning
        extra["reference_latents"] = [torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(5))]
    return Family("QwenImage", as_model_patcher(model), block_names(model.diffusion_model, "transformer_blocks"),
                  "proj_out", conditioning(31, 8, 64, **extra), conditioning(32, 8, 64, **extra),
                  lambda: torch.zeros(1, 16, 16, 16))


def hunyuan_video(config: dict, config_class: str = "HunyuanVideo", latent_shape: tuple = (1, 16, 3, 8, 8)) -> Family:
    import comfy.ldm.hunyuan_video.model as hunyuan
    import comfy.supported_models

    params = accepted(config, hunyuan.HunyuanVideoParams)
    model = build_model(getattr(comfy.supported_models, config_class), params, seed=3002)
    # model_base.HunyuanVideo reads pooled_output unconditionally (v0.30.0 :1351); a model without
    # vector_in ignores it. No text mask: the mask path builds a batch-1 mask (hunyuan_video/model.py:387).
    pooled = {"pooled_output": torch.randn(1, 768, generator=torch.Generator().manual_seed(7))}
    return Family("HunyuanVideo", as_model_patcher(model),
                  block_names(model.diffusion_model, "double_blocks", "single_blocks"), "final_layer",
                  conditioning(41, 8, 64, **pooled), conditioning(42, 8, 64, **pooled),
                  lambda: torch.zeros(latent_shape))


def ltxv() -> Family:
    import comfy.supported_models

    model = build_model(comfy.supported_models.LTXV, dict(LTXV), seed=3003)
    mask = {"attention_mask": torch.tensor([[1] * 6 + [0, 0]])}  # the T5 text mask LTXV's forward requires
    return Family("LTXV", as_model_patcher(model), block_names(model.diffusion_model, "transformer_blocks"), "proj_out",
                  conditioning(51, 8, 64, **mask), conditioning(52, 8, 64, **mask), lambda: torch.zeros(1, 128, 2, 4, 4))


def ltxav() -> Family:
    import comfy.nested_tensor
    import comfy.supported_models

    model = build_model(comfy.supported_models.LTXAV, dict(LTXAV), seed=3004)

    def latent():  # what LTXVConcatAVLatent makes: video and audio latents nested
        return comfy.nested_tensor.NestedTensor((torch.zeros(1, 128, 2, 4, 4), torch.zeros(1, 8, 5, 16)))

    width = 2 * LTXAV["caption_channels"]  # an already-connected context (av_model.py:563-568)
    return Family("LTXAV", as_model_patcher(model), block_names(model.diffusion_model, "transformer_blocks"),
                  "proj_out", conditioning(61, 8, width), conditioning(62, 8, width), latent)


def flux2() -> Family:
    import comfy.ldm.flux.model as flux
    import comfy.supported_models

    model = build_model(comfy.supported_models.Flux2, accepted(FLUX2, flux.FluxParams), seed=3005)
    diffusion = model.diffusion_model
    assert diffusion.params.global_modulation and diffusion.params.patch_size == 1
    return Family("Flux", as_model_patcher(model), block_names(diffusion, "double_blocks", "single_blocks"),
                  "final_layer", conditioning(71, 8, 64), conditioning(72, 8, 64), lambda: torch.zeros(1, 128, 4, 4))


def minimax_h3(keyframe: bool = False) -> Family:
    """MiniMax H3 text-to-video+audio; ``keyframe`` gives it a first-frame condition (what
    MiniMaxH3ImageToVideo puts into the conditioning), whose rows join the packed sequence."""
    import comfy.nested_tensor
    import comfy.supported_models

    model = build_model(comfy.supported_models.MiniMaxH3, dict(MINIMAX_H3), seed=3006)
    inv_freq = model.diffusion_model.rope.inv_freq  # a buffer, which build_model's initialisation leaves empty
    inv_freq.copy_(1.0 / 10000 ** (torch.arange(inv_freq.numel()) / inv_freq.numel()))
    extra = {}
    if keyframe:
        latent = torch.randn(1, 24, 1, 4, 4, generator=torch.Generator().manual_seed(8))
        extra = {"minimax_keyframes": [{"latent": latent, "resolved_frame_index": 0}], "minimax_frame_count": 5}

    def latent():  # EmptyMiniMaxH3LatentAV's nesting: video [1, 24, T, H, W], stereo audio [1, 32, 2, T]
        return comfy.nested_tensor.NestedTensor((torch.zeros(1, 24, 2, 4, 4), torch.zeros(1, 32, 2, 5)))

    width = MINIMAX_H3["text_dim"]  # same text length for both: the conds still never share a call
    return Family("MiniMaxH3", as_model_patcher(model), block_names(model.diffusion_model, "blocks"), "final_layer",
                  conditioning(81, 8, width, **extra), conditioning(82, 8, width, **extra), latent)


FAMILIES: dict[str, tuple[Callable[[], bool], Callable[[], Family]]] = {
    "qwen-image": (lambda: has("comfy.supported_models", "QwenImage"), lambda: qwen_image(edit=False)),
    "qwen-image-edit": (lambda: has("comfy.supported_models", "QwenImage"), lambda: qwen_image(edit=True)),
    "hunyuan-video": (lambda: has("comfy.supported_models", "HunyuanVideo"), lambda: hunyuan_video(HUNYUAN_VIDEO)),
    "hunyuan-video-1.5": (lambda: has("comfy.supported_models", "HunyuanVideo15"), lambda: hunyuan_video(HUNYUAN_VIDEO_15)),
    "hunyuan-image-2.1": (lambda: has("comfy.supported_models", "HunyuanImage21"),
                          lambda: hunyuan_video(HUNYUAN_IMAGE_21, "HunyuanImage21", (1, 64, 8, 8))),
    "ltxv": (lambda: has("comfy.supported_models", "LTXV"), ltxv),
    "ltx-2": (lambda: has("comfy.supported_models", "LTXAV"), ltxav),
    "flux2": (lambda: has("comfy.supported_models", "Flux2"), flux2),
    "minimax-h3": (lambda: has("comfy.supported_models", "MiniMaxH3"), minimax_h3),
    "minimax-h3-keyframe": (lambda: has("comfy.supported_models", "MiniMaxH3"), lambda: minimax_h3(keyframe=True)),
}


@pytest.fixture(scope="module")
def family_cache(comfyui: Any) -> dict:
    return {}


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest, family_cache: dict) -> Family:
    present, build = FAMILIES[request.param]
    if not present():
        pytest.skip(f"{request.param} is not in this ComfyUI release")
    if request.param not in family_cache:
        family_cache[request.param] = build()
    return family_cache[request.param]


def as_tensors(samples: Any) -> list[torch.Tensor]:
    return [t.clone() for t in samples.tensors] if getattr(samples, "is_nested", False) else [samples.clone()]


def ksample(comfyui: Any, family: Family, model: Any) -> list[torch.Tensor]:
    """The stock KSampler node, called as the executor calls it (inference mode)."""
    with torch.inference_mode():
        (out,) = comfyui.nodes.KSampler().sample(
            model, SEED, STEPS, CFG, "euler", "simple", family.positive, family.negative,
            {"samples": family.latent()}, denoise=1.0,
        )
    return as_tensors(out["samples"])


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture
def baseline(comfyui: Any, family: Family, family_cache: dict) -> list[torch.Tensor]:
    key = ("baseline", id(family))
    if key not in family_cache:
        family_cache[key] = ksample(comfyui, family, family.patcher)
        assert all(torch.isfinite(t).all() and t.std() > 0 for t in family_cache[key])
    return family_cache[key]


# ----------------------------------------------------------------------------- tests

def pack_detect(comfyui: Any) -> Callable[[torch.nn.Module], Any]:
    """The pack's ``detect``, from the module ComfyUI's loader imported the node from."""
    return sys.modules[node_class(comfyui).__module__].detect


def test_family_is_detected_with_every_block_in_run_order(comfyui: Any, family: Family) -> None:
    layout = pack_detect(comfyui)(family.patcher.model.diffusion_model)
    assert layout.family == family.name
    key_names = {"double_blocks": "double_block", "transformer_blocks": "double_block", "single_blocks": "single_block",
                 "blocks": "double_block"}
    expected = [(key_names[name.rsplit(".", 1)[0]], int(name.rsplit(".", 1)[1])) for name in family.blocks]
    assert list(layout.keys) == expected


# The model classes of ComfyUI v0.33.0 whose blocks run without patches_replace["dit"]: every class
# comfy/model_base.py builds, read one by one (older releases have a subset). Detection decides from
# the code, not from this list; the list checks that it decides right, and names a class a new
# release adds or gives the hook.
HOOKLESS = {
    "UNetModel", "StageB", "StageC", "ACEStepTransformer2DModel", "AceStepConditionGenerationModel", "Anima",
    "BooguTransformer2DModel", "CogVideoXTransformer3DModel", "GeneralDIT", "MiniTrainDIT", "ErnieImageModel",
    "HiDreamImageTransformer2DModel", "Ideogram4Transformer2DModel", "SingleStreamDiT", "NextDiT",
    "NextDiTPixelSpace", "MiniMaxMusic3DiT", "OmniGen2Transformer2DModel", "PixArtMS", "PixDiT_T2I", "PidNet",
    "LatentSeqMMFlowModel", "DepthAnything3Net", "RTv4", "SAM3Model",
}


def model_base_classes() -> list[type]:
    """Every model class comfy/model_base.py builds (the ``unet_model=`` of its model types)."""
    import comfy.model_base

    names = set(re.findall(r"unet_model=([A-Za-z_][\w.]*)", inspect.getsource(comfy.model_base)))
    namespace = vars(comfy.model_base)
    classes = set()
    for name in names:
        head, *rest = name.split(".")
        value = namespace.get(head)
        for part in rest:
            value = getattr(value, part, None)
        if isinstance(value, type) and issubclass(value, torch.nn.Module):
            classes.add(value)
    return sorted(classes, key=lambda c: f"{c.__module__}.{c.__name__}")


def unloaded(model_class: type) -> torch.nn.Module:
    """The class with its default configuration on the meta device (its submodules count for
    detection: Stable Audio's hook lives in one), or, where its defaults do not build, bare."""
    import comfy.ops

    try:
        with torch.device("meta"):
            return model_class(device="meta", operations=comfy.ops.disable_weight_init)
    except Exception:
        model = model_class.__new__(model_class)
        torch.nn.Module.__init__(model)
        return model


def test_every_model_class_without_the_block_hook_is_refused_with_the_reason_and_easycache(comfyui: Any) -> None:
    detect = pack_detect(comfyui)
    classes = model_base_classes()
    assert len(classes) > 10, classes
    refused, wrong = set(), []
    for model_class in classes:
        name = model_class.__name__
        try:
            detect(unloaded(model_class))
            continue  # a supported family
        except Exception as error:
            message = str(error)
        if "EasyCache" in message:
            refused.add(name)
            if name not in message or "patches_replace" not in message:
                wrong.append(f"{name}: {message}")
        elif name in HOOKLESS:
            wrong.append(f"{name} has no block hook, but is refused without saying so: {message}")
    present = {c.__name__ for c in classes}
    assert refused == HOOKLESS & present and not wrong, (sorted(refused ^ (HOOKLESS & present)), wrong)
    assert "EasyCache" in comfyui.nodes.NODE_CLASS_MAPPINGS


def test_minimax_h3_runs_cond_and_uncond_as_separate_calls_and_refuses_a_batch(comfyui: Any,
                                                                              family_cache: dict) -> None:
    """Each cond's payload carries its own packed layout (model_base.py MiniMaxH3.extra_conds), so
    ComfyUI never batches cond and uncond: two calls per step, each with a stream of its own. A batch
    of two stops in the model (model.py:518-519 at v0.33.0), with the node as without it."""
    present, build = FAMILIES["minimax-h3"]
    if not present():
        pytest.skip("no MiniMax H3 in this ComfyUI release")
    family = family_cache.setdefault("minimax-h3", build())
    first_event = len(comfyui.events)
    patched = apply_node(node_class(comfyui), family.patcher, "minimax-streams", **EVERY_CALL)
    sizes: list[int] = []
    handle = family.patcher.model.diffusion_model.blocks[0].register_forward_pre_hook(
        lambda module, args: sizes.append(args[0].shape[0]))
    try:
        ksample(comfyui, family, patched)
    finally:
        handle.remove()
    (event,) = [e for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    totals = event.data["totals"]
    assert totals["calls"] == 2 * STEPS and totals["forecast"] > 0, totals
    assert len(sizes) == 2 * STEPS  # block 0 runs on every call, one packed sequence each

    def batch_of_two():
        import comfy.nested_tensor

        video, audio = family.latent().tensors
        return comfy.nested_tensor.NestedTensor((video.repeat(2, 1, 1, 1, 1), audio.repeat(2, 1, 1, 1)))

    for model in (family.patcher, patched):
        with pytest.raises(ValueError, match="supports batch size 1"), torch.inference_mode():
            comfyui.nodes.KSampler().sample(model, SEED, 2, CFG, "euler", "simple", family.positive, family.negative,
                                            {"samples": batch_of_two()}, denoise=1.0)


def test_minimax_h3_residual_forecast_adds_back_block_zeros_output_as_it_was_before_the_next_block(
        comfyui: Any, family_cache: dict) -> None:
    """ComfyUI's MiniMax blocks add their residuals into the tensor they were given and return it
    (model.py:210-214): block 0's output is the next block's input, modified in place. With
    ``forecast_residual`` and order 0, a forecast must be block 0's output now plus what the blocks
    after it added on the last full call, both read before any later block touched them: had the
    cache kept block 0's output by reference, the residual would be 0."""
    present, build = FAMILIES["minimax-h3"]
    if not present():
        pytest.skip("no MiniMax H3 in this ComfyUI release")
    family = family_cache.setdefault("minimax-h3", build())
    model = family.patcher.model.diffusion_model
    patched = apply_node(node_class(comfyui), family.patcher, "minimax-residual", **EVERY_CALL,
                         forecast_residual=True, last_block_order=0, max_consecutive=0)
    seen: list[tuple[str, torch.Tensor]] = []
    returned_its_input: list[bool] = []

    def block0(module, args, output):
        returned_its_input.append(output is args[0])
        seen.append(("block0", output.clone()))

    hooks = [model.blocks[0].register_forward_hook(block0),
             model.blocks[-1].register_forward_hook(lambda module, args, output: seen.append(("last", output.clone())))]
    patches = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    last_key = ("double_block", len(model.blocks) - 1)
    node_patch = patches[last_key]

    def recording(args, extra):
        out = node_patch(args, extra)
        if not seen or seen[-1][0] != "last":  # the last block did not run: a forecast
            seen.append(("forecast", out["img"].clone()))
        return out

    recording.cgtaylor_runtime = node_patch.cgtaylor_runtime
    patches[last_key] = recording
    try:
        with torch.inference_mode():
            comfyui.nodes.KSampler().sample(patched, SEED, STEPS, 1.0, "euler", "simple", family.positive,
                                            family.negative, {"samples": family.latent()}, denoise=1.0)
    finally:
        for hook in hooks:
            hook.remove()
    assert returned_its_input and all(returned_its_input)
    checked = 0
    for n, (kind, value) in enumerate(seen):
        if kind != "forecast":
            continue
        now = seen[n - 1][1]  # this call's block 0
        full = max(i for i in range(n) if seen[i][0] == "last")  # the last full call: its block 0, then its last block
        torch.testing.assert_close(value, now + (seen[full][1] - seen[full - 1][1]), rtol=0, atol=1e-6)
        checked += 1
    assert checked > 0, [kind for kind, _ in seen]


def test_tolerance_zero_is_bit_identical(comfyui: Any, family: Family, baseline: list, block_counter: Any) -> None:
    patched = apply_node(node_class(comfyui), family.patcher, f"{family.name}-zero", tolerance=0.0)
    with block_counter(family.modules()) as counter:
        out = ksample(comfyui, family, patched)
    assert same(out, baseline)
    counts = counter.counts
    assert len(set(counts.values())) == 1 and counts[family.head] >= STEPS, counts


def test_huge_tolerance_skips_blocks_and_reports(comfyui: Any, family: Family, baseline: list,
                                                 block_counter: Any) -> None:
    node_id = f"{family.name}-huge"
    patched = apply_node(node_class(comfyui), family.patcher, node_id, **EVERY_CALL, warmup_steps=1)
    first_event = len(comfyui.events)
    with block_counter(family.modules()) as counter:
        out = ksample(comfyui, family, patched)
    calls, full = check_block_counts(counter.counts, family.blocks[0], family.head, family.blocks)
    assert 1 <= full < calls, counter.counts
    assert all(torch.isfinite(t).all() for t in out) and not same(out, baseline)
    (event,) = [e for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    payload = event.data
    assert payload["node"] == node_id and payload["model"] == family.name
    totals = payload["totals"]
    assert totals["calls"] == calls and totals["forecast"] == calls - full
    assert totals["blocks_run"] == sum(counter.counts[name] for name in family.blocks)
    assert totals["blocks_total"] == calls * len(family.blocks)
    assert not [note for note in payload["notes"] if "computed in full" in note], payload["notes"]


def test_qwen_edit_reference_tokens_reach_the_blocks(comfyui: Any, family_cache: dict) -> None:
    """The Edit case means something only if ComfyUI appends the reference latent's tokens to the
    image tokens the blocks (and so the forecast) carry: 16x16 latent -> 64 tokens, 8x8 reference -> 16."""
    present, build = FAMILIES["qwen-image-edit"]
    if not present():
        pytest.skip("no Qwen-Image in this ComfyUI release")
    family = family_cache.setdefault("qwen-image-edit", build())
    seen: list[int] = []
    block = family.patcher.model.diffusion_model.transformer_blocks[0]
    handle = block.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["hidden_states"].shape[1]),
                                             with_kwargs=True)
    try:
        ksample(comfyui, family, family.patcher)
    finally:
        handle.remove()
    assert seen and set(seen) == {64 + 16}, seen
