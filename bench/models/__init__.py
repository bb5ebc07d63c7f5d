"""Tiny FLUX-, Wan-, Qwen-Image-, HunyuanVideo-, LTX- and MiniMax-H3-layout transformers that call
``patches_replace["dit"]`` like ComfyUI.

They are real, trainable torch models whose block loops follow ComfyUI's
``forward_orig`` protocol line by line (argument and return keys, in-place updates,
what runs between and after the blocks), so the node's adapter code runs against them
unchanged in the CI tier and in the benchmark.
"""

from .flux import Flux, FluxParams
from .hunyuan_video import HunyuanVideo, HunyuanVideoParams
from .ltxv import LTXAVModel, LTXVModel, LTXVParams
from .minimax import MiniMaxH3Model, MiniMaxParams
from .qwen_image import QwenImageParams, QwenImageTransformer2DModel
from .wan import VaceWanModel, WanModel, WanParams

__all__ = [
    "Flux", "FluxParams", "HunyuanVideo", "HunyuanVideoParams", "LTXAVModel", "LTXVModel", "LTXVParams",
    "MiniMaxH3Model", "MiniMaxParams",
    "QwenImageParams", "QwenImageTransformer2DModel", "VaceWanModel", "WanModel", "WanParams",
]
