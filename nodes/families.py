"""Which models the node can patch, and where their transformer blocks are.

ComfyUI calls ``patches_replace["dit"]`` block patches under the keys
``("double_block", i)`` and ``("single_block", i)``. Line numbers are ComfyUI v0.30.0
(b1693ecb); v0.3.64 (a125cd84) has the same loops where the family exists there.

* FLUX.1/FLUX.2 and Chroma run their double blocks, concatenate text and image tokens
  (txt first), then run their single blocks (comfy/ldm/flux/model.py, comfy/ldm/chroma/model.py).
* HunyuanVideo 1.0, HunyuanImage 2.1 and HunyuanVideo 1.5 do the same with
  ``double_blocks``/``single_blocks`` (comfy/ldm/hunyuan_video/model.py:392-441); a model
  whose state dict has no single blocks simply ends on a double block.
* Qwen-Image runs ``transformer_blocks`` as ``("double_block", i)`` and returns ``img`` and
  ``txt``; its output layer sees image tokens only (comfy/ldm/qwen_image/model.py:524-568).
* Wan runs ``blocks`` as ``("double_block", i)`` (comfy/ldm/wan/model.py), LTX-Video
  ``transformer_blocks`` (comfy/ldm/lightricks/model.py:1291-1319).
* LTX-2/2.3 (``LTXAVModel``) runs the same keys, but its block state ``img`` is a
  ``(video, audio)`` tuple (comfy/ldm/lightricks/av_model.py:888-992).

Models are recognised by class name anywhere in their class hierarchy, so ComfyUI
internals never need importing and subclasses (VACE, camera, S2V, HuMo, Animate Wan;
Chroma Radiance) are covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TENSOR = "tensor"  # the block state ``img`` is one tensor
PARTS = "parts"  # the block state ``img`` is a tuple of tensors, the first carrying the image


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
    Family("LTXV", ("LTXVModel",), (("double_block", "transformer_blocks", None),), False),
)

SUPPORTED = (
    "FLUX.1 (dev, schnell, Kontext), FLUX.2 (dev, klein), Chroma, Qwen-Image (2512, Edit 2509/2511), "
    "HunyuanVideo (1.0, 1.5) and HunyuanImage 2.1, LTX-Video 0.9, LTX-2/2.3, Wan 2.1 and Wan 2.2"
)

# Families whose ComfyUI model runs its blocks in a plain loop, with no per-block replace hook.
NOT_BLOCKWISE = {
    "NextDiT": "Lumina 2 / Z-Image (NextDiT)",
    "HiDreamImageTransformer2DModel": "HiDream-I1",
    "GeneralDIT": "Cosmos (Predict 1)",
    "MiniTrainDIT": "Cosmos Predict 2",
}


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

    def gate_state(self, block_out: dict) -> torch.Tensor:
        """What the confidence gate compares: block 0's image tokens (LTX-2: the video part only,
        the audio part carries no image and would dilute the error)."""
        img = block_out["img"]
        return img[0] if self.state_kind == PARTS else img

    def state(self, block_out: dict) -> torch.Tensor:
        """The block state the engine caches and forecasts, as one ``[batch, ...]`` tensor.

        LTX-2's ``(video, audio)`` parts are flattened per sample and concatenated, so every
        part is forecast and the engine still splits streams on the batch axis."""
        img = block_out["img"]
        if self.state_kind == PARTS:
            return torch.cat([part.flatten(1) for part in img], 1)
        return img

    def with_state(self, block_args: dict, forecast: torch.Tensor) -> dict:
        """The last block's output built from a forecast of ``state``: the block's own args with
        ``img`` replaced (the model reads back ``out["img"]`` and keeps its other locals)."""
        img = block_args["img"]
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
        comfy/ldm/flux/model.py, comfy/ldm/hunyuan_video/model.py:416; others: unchanged)."""
        if self.joins_text and self.keys[-1][0] != self.keys[0][0]:
            return torch.cat((block_args["txt"], block_args["img"]), 1)
        return self.state(block_args)

    @property
    def first(self) -> tuple[str, int]:
        return self.keys[0]

    @property
    def last(self) -> tuple[str, int]:
        return self.keys[-1]


def detect(diffusion_model: torch.nn.Module) -> BlockLayout:
    """The block layout of a supported model; a clear error naming the model otherwise."""
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
    blockless = next((NOT_BLOCKWISE[name] for name in lineage if name in NOT_BLOCKWISE), None)
    if blockless is not None:
        raise UnsupportedModelError(
            f"CGTaylorCache cannot accelerate {described}, a {blockless} model: ComfyUI runs its transformer "
            "blocks in a plain loop without the per-block replacement hook (patches_replace['dit']), so no block "
            "can be skipped or forecast from outside the model. Use ComfyUI's built-in EasyCache node instead "
            "(it caches the whole model output and works on any model), or remove CGTaylorCache. "
            f"Block-wise caching supports {SUPPORTED}."
        )
    raise UnsupportedModelError(
        f"CGTaylorCache cannot accelerate {described}: supported model families are {SUPPORTED}. "
        "Connect the node to one of those models, or remove it from the graph."
    )


def leading_input(x: torch.Tensor | list | tuple) -> torch.Tensor:
    """The latent that names a call's batch, shape and device: the tensor itself, or the video
    part when the model takes a list of latents (LTX-2 gets ``[video, audio]`` from
    comfy/model_base.py:232-233 ``utils.unpack_latents``). Should only the audio length change
    between calls, the forecast no longer fits ``with_state`` and the call is recomputed."""
    return x[0] if isinstance(x, (list, tuple)) else x
