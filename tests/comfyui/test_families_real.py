"""The node on ComfyUI's own Qwen-Image, HunyuanVideo, LTX-Video, LTX-2 and FLUX.2 classes.

Skipped unless $COMFYUI_PATH points at a ComfyUI checkout (see conftest.py). Each family is
built from a tiny config through ``comfy.supported_models`` (as ``tiny_flux`` is), sampled
by the stock KSampler node, and checked for: bit-identity at threshold 0, blocks 1..L-1
skipped on forecast calls (forward hooks on the real blocks), and the stats event. Families
and arguments missing from a ComfyUI release are found by feature detection: LTX-2 and FLUX.2
exist only in 2026 releases, Edit 2511's ``index_timestep_zero`` only where Qwen-Image takes
``default_ref_method``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
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
    key_names = {"double_blocks": "double_block", "transformer_blocks": "double_block", "single_blocks": "single_block"}
    expected = [(key_names[name.rsplit(".", 1)[0]], int(name.rsplit(".", 1)[1])) for name in family.blocks]
    assert list(layout.keys) == expected


NOT_BLOCKWISE = [  # (module, class): ComfyUI models whose blocks run without patches_replace["dit"]
    ("comfy.ldm.lumina.model", "NextDiT"),
    ("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel"),
    ("comfy.ldm.cosmos.model", "GeneralDIT"),
    ("comfy.ldm.cosmos.predict2", "MiniTrainDIT"),
]


@pytest.mark.parametrize(("module", "name"), NOT_BLOCKWISE)
def test_models_without_block_replacement_name_the_model_and_the_alternative(comfyui: Any, module: str,
                                                                               name: str) -> None:
    if not has(module, name):
        pytest.skip(f"{module}.{name} is not in this ComfyUI release")
    model_class = getattr(importlib.import_module(module), name)
    source = inspect.getsource(model_class.forward) + inspect.getsource(importlib.import_module(module))
    assert 'patches_replace' not in source or '"dit"' not in source, f"{name} now has block replacement: support it"
    model = model_class.__new__(model_class)  # detection reads the class only; no weights needed
    with pytest.raises(Exception) as info:
        pack_detect(comfyui)(model)
    message = str(info.value)
    assert name in message and "patches_replace" in message
    assert "EasyCache" in message and "EasyCache" in comfyui.nodes.NODE_CLASS_MAPPINGS


def test_threshold_zero_is_bit_identical(comfyui: Any, family: Family, baseline: list, block_counter: Any) -> None:
    patched = apply_node(node_class(comfyui), family.patcher, f"{family.name}-zero", threshold=0.0)
    with block_counter(family.modules()) as counter:
        out = ksample(comfyui, family, patched)
    assert same(out, baseline)
    counts = counter.counts
    assert len(set(counts.values())) == 1 and counts[family.head] >= STEPS, counts


def test_huge_threshold_skips_blocks_and_reports(comfyui: Any, family: Family, baseline: list,
                                                 block_counter: Any) -> None:
    node_id = f"{family.name}-huge"
    patched = apply_node(node_class(comfyui), family.patcher, node_id, threshold=HUGE_THRESHOLD, warmup_steps=1)
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
