"""Tiny FLUX- and Wan-layout transformers that call ``patches_replace["dit"]`` like ComfyUI.

They are real, trainable torch models whose block loops follow ComfyUI's
``forward_orig`` protocol line by line (argument and return keys, in-place updates,
what runs between and after the blocks), so the node's adapter code runs against them
unchanged in the CI tier and in the benchmark.
"""

from .flux import Flux, FluxParams
from .wan import VaceWanModel, WanModel, WanParams

__all__ = ["Flux", "FluxParams", "VaceWanModel", "WanModel", "WanParams"]
