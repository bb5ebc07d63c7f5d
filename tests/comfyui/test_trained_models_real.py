"""The bench's trained models in ComfyUI's own classes (bench/comfyui_models.py) compute what the bench's do.

The real-ComfyUI sweep (bench/comfyui_sweep.py) and the guidance tests sample these; their numbers speak of the
trained models only if ComfyUI's class with the mapped weights gives the bench model's velocity.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytestmark = pytest.mark.comfyui

FAMILIES = ("flux_deep", "wan_deep", "wan_rough", "qwen", "flux_holdout", "wan_holdout_rough")


@pytest.mark.parametrize("family", FAMILIES)
def test_comfyuis_class_gives_the_bench_models_velocity(comfyui: Any, family: str) -> None:
    from bench.comfyui_models import SAME_OUTPUT_TOLERANCE, build, check_same_output

    built = build(family)
    assert check_same_output(built) <= SAME_OUTPUT_TOLERANCE
    assert type(built.patcher.model.diffusion_model).__module__.startswith("comfy.ldm.")


@pytest.mark.parametrize("family, corrupt", [
    ("wan_deep", "head.head.weight"),  # rows back in the bench's order: the unpatchify permutation undone
    ("flux_deep", "double_blocks.0.img_attn.qkv.weight"),  # queries and keys swapped
    ("qwen", "transformer_blocks.0.attn.to_k.weight"),
])
def test_a_wrong_mapping_is_caught(comfyui: Any, family: str, corrupt: str) -> None:
    from bench.comfyui_models import build, check_same_output

    built = build(family)
    weight = built.patcher.model.diffusion_model.state_dict()[corrupt]
    with torch.no_grad():
        if corrupt.startswith("head."):
            weight.copy_(weight.reshape(4, -1, weight.shape[-1]).transpose(0, 1).reshape(weight.shape))
        elif corrupt.endswith("qkv.weight"):
            q, k, v = weight.clone().chunk(3)
            weight.copy_(torch.cat([k, q, v]))
        else:
            weight.mul_(-1)
    with pytest.raises(RuntimeError, match="the weight mapping is wrong"):
        check_same_output(built)
