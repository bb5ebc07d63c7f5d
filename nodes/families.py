"""Which models the node can patch, and where their transformer blocks are.

ComfyUI calls ``patches_replace["dit"]`` block patches under the keys
``("double_block", i)`` and ``("single_block", i)``. FLUX and Chroma run their double
blocks, concatenate text and image tokens, then run their single blocks
(comfy/ldm/flux/model.py:138-211, comfy/ldm/chroma/model.py:180-253); every Wan
variant runs ``("double_block", i)`` over ``blocks`` and then its head
(comfy/ldm/wan/model.py:568-582). Models are recognised by class name anywhere in
their class hierarchy, so ComfyUI internals never need importing and subclasses
(VACE, camera, S2V, HuMo, Animate Wan; Chroma Radiance) are covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Family:
    name: str
    class_names: tuple[str, ...]
    # (patch key name, attribute holding the ModuleList, attribute listing indices the model skips)
    groups: tuple[tuple[str, str, str | None], ...]
    joins_text: bool  # the last block sees text and image tokens concatenated (txt first)


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
)

SUPPORTED = "FLUX (dev, schnell, Kontext), Chroma, Wan 2.1 and Wan 2.2"


class UnsupportedModelError(ValueError):
    """The model is not one the node knows how to patch."""


@dataclass(frozen=True)
class BlockLayout:
    family: str
    model_class: str
    keys: tuple[tuple[str, int], ...]  # patch keys in the order the model runs them
    joins_text: bool = False

    def last_space(self, block_args: dict) -> torch.Tensor:
        """Block 0's tokens laid out as the last block sees them (Flux: torch.cat((txt, img), 1),
        comfy/ldm/flux/model.py:178; Wan: unchanged)."""
        if self.joins_text and self.keys[-1][0] != self.keys[0][0]:
            return torch.cat((block_args["txt"], block_args["img"]), 1)
        return block_args["img"]

    @property
    def first(self) -> tuple[str, int]:
        return self.keys[0]

    @property
    def last(self) -> tuple[str, int]:
        return self.keys[-1]


def detect(diffusion_model: torch.nn.Module) -> BlockLayout:
    """The block layout of a supported model; a clear error naming the model otherwise."""
    cls = type(diffusion_model)
    lineage = {klass.__name__ for klass in cls.__mro__}
    described = f"{cls.__name__} (from {cls.__module__})"
    for family in FAMILIES:
        if lineage.isdisjoint(family.class_names):
            continue
        keys = []
        for key_name, attribute, skipped_attribute in family.groups:
            blocks = getattr(diffusion_model, attribute, None)
            if not isinstance(blocks, torch.nn.ModuleList):
                raise UnsupportedModelError(
                    f"CGTaylorCache: {described} looks like {family.name} but has no '{attribute}' block list; "
                    "this ComfyUI version may have changed the model. Remove the node or update the pack."
                )
            skipped = set(getattr(diffusion_model, skipped_attribute, ()) or ()) if skipped_attribute else set()
            keys += [(key_name, i) for i in range(len(blocks)) if i not in skipped]
        if len(keys) < 2:
            raise UnsupportedModelError(
                f"CGTaylorCache: {described} has {len(keys)} transformer block(s); forecasting needs at least 2."
            )
        return BlockLayout(family.name, cls.__name__, tuple(keys), family.joins_text)
    raise UnsupportedModelError(
        f"CGTaylorCache cannot accelerate {described}: supported model families are {SUPPORTED}. "
        "Connect the node to one of those models, or remove it from the graph."
    )
