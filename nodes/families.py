"""Which models the node can patch, and where their transformer blocks are.

ComfyUI calls ``patches_replace["dit"]`` block patches under the keys
``("double_block", i)`` and ``("single_block", i)``. The loops named here were read at ComfyUI
v0.30.0 (b1693ecb); v0.3.64 (a125cd84) has the same loops where the family exists there.

* FLUX.1/FLUX.2 and Chroma run their double blocks, concatenate text and image tokens
  (txt first), then run their single blocks (comfy/ldm/flux/model.py, comfy/ldm/chroma/model.py).
* HunyuanVideo 1.0, HunyuanImage 2.1 and HunyuanVideo 1.5 do the same with
  ``double_blocks``/``single_blocks`` (comfy/ldm/hunyuan_video/model.py ``HunyuanVideo.forward_orig``); a model
  whose state dict has no single blocks simply ends on a double block.
* Qwen-Image runs ``transformer_blocks`` as ``("double_block", i)`` and returns ``img`` and
  ``txt``; its output layer sees image tokens only (comfy/ldm/qwen_image/model.py
  ``QwenImageTransformer2DModel._forward``).
* Wan runs ``blocks`` as ``("double_block", i)`` (comfy/ldm/wan/model.py), LTX-Video
  ``transformer_blocks`` (comfy/ldm/lightricks/model.py ``LTXVModel._process_transformer_blocks``).
* LTX-2/2.3 (``LTXAVModel``) runs the same keys, but its block state ``img`` is a
  ``(video, audio)`` tuple (comfy/ldm/lightricks/av_model.py ``LTXAVModel._process_transformer_blocks``).
* MiniMax H3 (``MiniMaxH3Model``, v0.30.0 and v0.33.0) runs ``blocks`` as ``("double_block", i)``
  on one packed ``[tokens, hidden]`` sequence of a single sample, [text | condition or reference
  rows | audio | video], and adds each block's residuals into that tensor in place
  (comfy/ldm/minimax/model.py ``_mod_scale_shift`` and ``MiniMaxH3Model._forward``, at v0.30.0 and v0.33.0).

Models are recognised by class name anywhere in their class hierarchy, so ComfyUI
internals never need importing and subclasses (VACE, camera, S2V, HuMo, Animate Wan, Wan Animate 2;
Chroma Radiance) are covered.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch

TENSOR = "tensor"  # the block state ``img`` is one tensor
PARTS = "parts"  # the block state ``img`` is a tuple of tensors, the first carrying the image
# The block state ``img`` is one packed ``[tokens, hidden]`` sequence without a batch axis, and the
# target video is its last segment in the block's ``mod_segments`` (MiniMax H3).
PACKED = "packed"


@dataclass(frozen=True)
class Family:
    name: str
    class_names: tuple[str, ...]
    # (patch key name, attribute holding the ModuleList, attribute listing indices the model skips)
    groups: tuple[tuple[str, str, str | None], ...]
    joins_text: bool  # the last block sees text and image tokens concatenated (txt first)
    state: str = TENSOR


# Most specific first: a class is matched by the first family named anywhere in its MRO.
FAMILIES = (
    Family(
        "Chroma",
        ("Chroma",),
        (("double_block", "double_blocks", "skip_mmdit"), ("single_block", "single_blocks", "skip_dit")),
        True,
    ),
    Family(
        "Flux", ("Flux",), (("double_block", "double_blocks", None), ("single_block", "single_blocks", None)), True
    ),
    Family("Wan", ("WanModel",), (("double_block", "blocks", None),), False),
    Family("QwenImage", ("QwenImageTransformer2DModel",), (("double_block", "transformer_blocks", None),), False),
    Family(
        "HunyuanVideo",
        ("HunyuanVideo",),
        (("double_block", "double_blocks", None), ("single_block", "single_blocks", None)),
        True,
    ),
    Family("LTXAV", ("LTXAVModel",), (("double_block", "transformer_blocks", None),), False, PARTS),
    Family("MiniMaxH3", ("MiniMaxH3Model",), (("double_block", "blocks", None),), False, PACKED),
    Family("LTXV", ("LTXVModel",), (("double_block", "transformer_blocks", None),), False),
)

SUPPORTED = (
    "FLUX.1 (dev, schnell, Kontext), FLUX.2 (dev, klein), Chroma, Qwen-Image (2512, Edit 2509/2511), "
    "HunyuanVideo (1.0, 1.5) and HunyuanImage 2.1, LTX-Video 0.9, LTX-2/2.3, MiniMax H3, Wan 2.1, Wan 2.2 "
    "and Wan Animate 2"
)

# What users call the ComfyUI models that run their blocks without the per-block replacement hook
# (ComfyUI v0.33.0). Only names for the error message: whether a model has the hook is read from
# its code (``reads_block_hook``); a class missing here is refused by its class name.
NOT_BLOCKWISE = {
    "NextDiT": "Lumina 2 / Z-Image (NextDiT)",
    "HiDreamImageTransformer2DModel": "HiDream-I1",
    "GeneralDIT": "Cosmos (Predict 1)",
    "MiniTrainDIT": "Cosmos Predict 2",
    "Anima": "Anima",
    "MiniMaxMusic3DiT": "MiniMax Music 3",
    "ACEStepTransformer2DModel": "ACE-Step",
    "AceStepConditionGenerationModel": "ACE-Step 1.5",
    "CogVideoXTransformer3DModel": "CogVideoX",
    "ErnieImageModel": "ERNIE-Image",
    "Ideogram4Transformer2DModel": "Ideogram 4",
    "SingleStreamDiT": "Krea 2",
    "OmniGen2Transformer2DModel": "OmniGen2",
    "BooguTransformer2DModel": "Boogu",
    "PixArtMS": "PixArt",
    "PixDiT_T2I": "PixelDiT",
    "PidNet": "PiD",
    "LatentSeqMMFlowModel": "TripoSplat",
    "Trellis2": "TRELLIS.2",
    "UNetModel": "Stable Diffusion 1.x / 2.x / XL (UNet)",
    "StageC": "Stable Cascade",
    "StageB": "Stable Cascade",
}

# A block loop that can be patched reads ``patches_replace["dit"]`` (as ``.get("dit", {})`` or ``["dit"]``).
_BLOCK_HOOK = re.compile(r"""(?:\.get\(|\[)\s*["']dit["']""")


class UnsupportedModelError(ValueError):
    """The model is not one the node knows how to patch."""


@dataclass(frozen=True)
class BlockLayout:
    family: str
    model_class: str
    keys: tuple[tuple[str, int], ...]  # patch keys in the order the model runs them
    joins_text: bool = False
    state_kind: str = TENSOR
    group_sizes: tuple[tuple[str, int], ...] = ()  # (patch key name, blocks in its list, skipped ones included)

    def group_size(self, key_name: str) -> int | None:
        """How many blocks the model's loop over ``key_name`` blocks runs through (its ``total_blocks``)."""
        return dict(self.group_sizes).get(key_name)

    def gate_state(self, block_out: dict, block_args: dict) -> torch.Tensor:
        """What the confidence gate compares: block 0's image tokens. LTX-2: the video part only,
        the audio part carries no image and would dilute the error. MiniMax H3: the target video
        rows of the packed sequence (the last of the block's ``mod_segments``, ``MiniMaxH3Model._forward``
        at v0.33.0); text and condition rows never reach the output and barely move, audio follows its
        own schedule (measured: README, "Supported models")."""
        img = block_out["img"]
        if self.state_kind == PARTS:
            return img[0]
        if self.state_kind == PACKED:
            start, stop, _ = block_args["mod_segments"][-1]
            return img[start:stop].unsqueeze(0)
        return img

    def state(self, block_out: dict) -> torch.Tensor:
        """The block state the engine caches and forecasts, as one ``[batch, ...]`` tensor.

        LTX-2's ``(video, audio)`` parts are flattened per sample and concatenated, and MiniMax
        H3's packed sequence (text, condition, audio and video rows) gets its batch axis of 1, so
        every part is forecast and the engine still splits streams on the batch axis. The result
        may share memory with the block's tensors: the engine copies what it keeps."""
        img = block_out["img"]
        if self.state_kind == PARTS:
            return torch.cat([part.flatten(1) for part in img], 1)
        if self.state_kind == PACKED:
            return img.unsqueeze(0)
        return img

    def with_state(self, block_args: dict, forecast: torch.Tensor) -> dict:
        """The last block's output built from a forecast of ``state``: the block's own args with
        ``img`` replaced (the model reads back ``out["img"]`` and keeps its other locals)."""
        img = block_args["img"]
        if self.state_kind == PACKED:
            if forecast.shape != (1, *img.shape):
                raise ValueError(f"forecast shape {tuple(forecast.shape)} does not hold the packed sequence {tuple(img.shape)}")
            return {**block_args, "img": forecast[0]}
        if self.state_kind != PARTS:
            if forecast.shape != img.shape:
                raise ValueError(f"forecast shape {tuple(forecast.shape)} != block input {tuple(img.shape)}")
            return {**block_args, "img": forecast}
        sizes = [part[0].numel() for part in img]
        if forecast.shape != (img[0].shape[0], sum(sizes)):
            raise ValueError(f"forecast shape {tuple(forecast.shape)} does not hold parts {[tuple(p.shape) for p in img]}")
        parts = tuple(chunk.reshape(part.shape) for chunk, part in zip(forecast.split(sizes, 1), img))
        return {**block_args, "img": parts}

    def last_space(self, block_args: dict) -> torch.Tensor:
        """Block 0's state laid out as the last block's (Flux/Hunyuan: torch.cat((txt, img), 1),
        ``Flux.forward_orig``, ``HunyuanVideo.forward_orig``; others: unchanged)."""
        if self.joins_text and self.keys[-1][0] != self.keys[0][0]:
            return torch.cat((block_args["txt"], block_args["img"]), 1)
        return self.state(block_args)

    @property
    def first(self) -> tuple[str, int]:
        return self.keys[0]

    @property
    def last(self) -> tuple[str, int]:
        return self.keys[-1]


def compiled_original(diffusion_model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a whole-model ``torch.compile``: other packs' compile nodes set the compiled
    module as the diffusion model's object patch, an ``OptimizedModule`` that keeps the original as
    ``_orig_mod`` (torch/_dynamo/eval_frame.py) and runs its forward, hooks and patches included."""
    while isinstance(getattr(diffusion_model, "_orig_mod", None), torch.nn.Module):
        diffusion_model = diffusion_model._orig_mod
    return diffusion_model


def detect(diffusion_model: torch.nn.Module) -> BlockLayout:
    """The block layout of a supported model, compiled or not; a clear error naming the model otherwise."""
    diffusion_model = compiled_original(diffusion_model)
    cls = type(diffusion_model)
    lineage = [klass.__name__ for klass in cls.__mro__]
    described = f"{cls.__name__} (from {cls.__module__})"
    for family in FAMILIES:
        if not set(lineage) & set(family.class_names):
            continue
        keys, group_sizes = [], []
        for key_name, attribute, skipped_attribute in family.groups:
            blocks = getattr(diffusion_model, attribute, None)
            if not isinstance(blocks, torch.nn.ModuleList):
                raise UnsupportedModelError(
                    f"CGTaylorCache: {described} looks like {family.name} but has no '{attribute}' block list; "
                    "this ComfyUI version may have changed the model. Remove the node or update the pack."
                )
            skipped = set(getattr(diffusion_model, skipped_attribute, ()) or ()) if skipped_attribute else set()
            keys += [(key_name, i) for i in range(len(blocks)) if i not in skipped]
            group_sizes.append((key_name, len(blocks)))
        if len(keys) < 2:
            raise UnsupportedModelError(
                f"CGTaylorCache: {described} has {len(keys)} transformer block(s); forecasting needs at least 2."
            )
        return BlockLayout(
            family.name, cls.__name__, tuple(keys), family.joins_text, family.state, tuple(group_sizes)
        )
    known_as = next((NOT_BLOCKWISE[name] for name in lineage if name in NOT_BLOCKWISE), None)
    hooked = reads_block_hook(diffusion_model)
    if hooked is False or (hooked is None and known_as is not None):
        what = f", a {known_as} model" if known_as else ""
        raise UnsupportedModelError(
            f"CGTaylorCache cannot accelerate {described}{what}: ComfyUI runs its blocks in a plain loop "
            "without the per-block replacement hook (patches_replace['dit']), so no block can be skipped or "
            "forecast from outside the model. Use ComfyUI's built-in EasyCache node instead (it caches the "
            "whole model output and works on any model), or remove CGTaylorCache. "
            f"Block-wise caching supports {SUPPORTED}."
        )
    raise UnsupportedModelError(
        f"CGTaylorCache cannot accelerate {described}: supported model families are {SUPPORTED}. "
        "Connect the node to one of those models, or remove it from the graph."
    )


def reads_block_hook(diffusion_model: torch.nn.Module) -> bool | None:
    """Whether the model's code reads ComfyUI's per-block replacement hook ``patches_replace["dit"]``:
    the source of its class, the classes it derives from and those of its submodules (Stable Audio
    runs its blocks in a child module). None when no source can be read (then only the names in
    ``NOT_BLOCKWISE`` decide). Read from the model rather than a list, so a model ComfyUI adds
    later is judged by what its code does."""
    classes = {klass for module in diffusion_model.modules() for klass in type(module).__mro__
               if klass.__module__ != "builtins" and klass.__module__.split(".")[0] != "torch"}
    readable = False
    for klass in classes:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # defined at run time, or shipped without its source
            continue
        readable = True
        if _BLOCK_HOOK.search(source):
            return True
    return False if readable else None


def leading_input(x: torch.Tensor | list | tuple) -> torch.Tensor:
    """The latent that names a call's batch, shape and device: the tensor itself, or the video
    part when the model takes a list of latents (LTX-2 gets ``[video, audio]`` from
    comfy/model_base.py ``BaseModel._apply_model``'s ``utils.unpack_latents``). Should only the audio length change
    between calls, the forecast no longer fits ``with_state`` and the call is recomputed."""
    return x[0] if isinstance(x, (list, tuple)) else x
