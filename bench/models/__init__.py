"""Tiny FLUX-, Wan-, Qwen-Image-, HunyuanVideo- and LTX-layout transformers that call
``patches_replace["dit"]`` like ComfyUI.

They are real, trainable torch models whose block loops follow ComfyUI's
``forward_orig`` protocol line by line (argument and return keys, in-place updates,
what runs between and after the blocks), so the node's adapter code runs against them
unchanged in the CI tier and in the benchmark.
"""

from .flux import Flux, FluxParams
from .hunyuan_video import HunyuanVideo, HunyuanVideoParams
from .ltxv import LTXAVModel, LTXVModel, LTXVParams
from .qwen_image import QwenImageParams, QwenImageTransformer2DModel
from .wan import VaceWanModel, WanModel, WanParams

__all__ = [
    "Flux", "FluxParams", "HunyuanVideo", "HunyuanVideoParams", "LTXAVModel", "LTXVModel", "LTXVParams",
    "QwenImageParams", "QwenImageTransformer2DModel", "VaceWanModel", "WanModel", "WanParams",
]
