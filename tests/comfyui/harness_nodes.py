"""Test-only ComfyUI node for the real-ComfyUI tier; never part of the shipped pack.

A graph needs CONDITIONING for KSampler, and the honest alternative (a text encoder)
would need gigabytes of weights. Random tensors of the shapes a T5/umT5 encoder
produces exercise exactly the same sampling code. The tier's conftest links this file
into a temporary ``custom_nodes`` folder, so ComfyUI loads it with its own loader next
to the pack. Output is compared through the stock ``SaveLatent`` node, so no output
node is needed here.
"""

from __future__ import annotations

import torch


class CGTTestRandomConditioning:
    """CONDITIONING filled with seeded Gaussian noise: same seed, same tensors, bit for bit."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
                "width": ("INT", {"default": 4096, "min": 1, "max": 8192}),
                # Flux reads a pooled CLIP-L vector (768); Wan reads none (0).
                "pooled_width": ("INT", {"default": 0, "min": 0, "max": 8192}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "_for_testing"

    def make(self, seed: int, tokens: int, width: int, pooled_width: int) -> tuple:
        generator = torch.Generator().manual_seed(seed)
        context = torch.randn(1, tokens, width, generator=generator)
        extra = {}
        if pooled_width:
            extra["pooled_output"] = torch.randn(1, pooled_width, generator=generator)
        return ([[context, extra]],)


NODE_CLASS_MAPPINGS = {"CGTTestRandomConditioning": CGTTestRandomConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"CGTTestRandomConditioning": "Random Conditioning (CG-Taylor tests)"}
