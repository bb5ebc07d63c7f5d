"""Ready-to-sample tiny Qwen-Image, HunyuanVideo, LTX-Video, LTX-2 and MiniMax H3 models with their conditioning.

The same ``Scene`` as bench/tiny.py (FLUX, Wan), for the families added in 2026.
Timestep scales follow ComfyUI's model sampling: Qwen-Image is a FLUX-type model fed
sigma (its embedding scales by 1000 inside); HunyuanVideo, LTX and MiniMax H3 get sigma * 1000.
"""

from __future__ import annotations

import torch

from .models.hunyuan_video import HunyuanVideo, HunyuanVideoParams
from .models.ltxv import LTXAVModel, LTXVModel, LTXVParams
from .models.minimax import MiniMaxH3Model, MiniMaxParams, PackedLayout
from .models.qwen_image import QwenImageParams, QwenImageTransformer2DModel
from .standin.patcher import ModelPatcher
from .standin.sampling import Cond, FlowModel
from .tiny import TEXT_TOKENS, Scene


def _text(generator: torch.Generator, dim: int) -> torch.Tensor:
    return torch.randn(1, TEXT_TOKENS, dim, generator=generator)


def qwen_image_scene(seed: int = 0, params: QwenImageParams = QwenImageParams(), size: int = 8,
                     references: int = 0) -> Scene:
    """Qwen-Image text-to-image; ``references`` > 0 gives an Edit model's reference latents."""
    torch.manual_seed(seed)
    model = QwenImageTransformer2DModel(params).eval()
    g = torch.Generator().manual_seed(seed + 1)
    refs = [torch.randn(1, params.in_channels, size, size, generator=g) for _ in range(references)]
    conds = []
    for _ in range(2):
        inputs = {"context": _text(g, params.joint_attention_dim)}
        if refs:
            inputs["ref_latents"] = refs
        conds.append(Cond(inputs))
    return Scene(ModelPatcher(FlowModel(model)), *conds, (1, params.in_channels, size, size))


def hunyuan_video_scene(seed: int = 0, params: HunyuanVideoParams = HunyuanVideoParams(), frames: int = 3,
                        size: int = 8, masked: bool = False, reference_frames: int = 0) -> Scene:
    """HunyuanVideo text-to-video; ``masked`` adds the integer text attention mask ComfyUI passes,
    ``reference_frames`` > 0 an image-to-video ``ref_latent`` (its tokens go before the video's)."""
    torch.manual_seed(seed)
    model = HunyuanVideo(params).eval()
    g = torch.Generator().manual_seed(seed + 1)
    reference = torch.randn(1, params.in_channels, reference_frames, size, size, generator=g)
    conds = []
    for _ in range(2):
        inputs = {"context": _text(g, params.context_in_dim)}
        if params.vec_in_dim is not None:
            inputs["y"] = torch.randn(1, params.vec_in_dim, generator=g)
        if masked:
            inputs["attention_mask"] = torch.tensor([[1] * (TEXT_TOKENS - 2) + [0, 0]])
        if reference_frames:
            inputs["ref_latent"] = reference
        conds.append(Cond(inputs))
    return Scene(ModelPatcher(FlowModel(model, multiplier=1000.0)), *conds, (1, params.in_channels, frames, size, size))


def ltxv_scene(seed: int = 0, params: LTXVParams = LTXVParams(), frames: int = 2, size: int = 4) -> Scene:
    torch.manual_seed(seed)
    model = LTXVModel(params).eval()
    g = torch.Generator().manual_seed(seed + 1)
    conds = [Cond({"context": _text(g, params.caption_channels)}) for _ in range(2)]
    return Scene(ModelPatcher(FlowModel(model, multiplier=1000.0)), *conds, (1, params.in_channels, frames, size, size))


def ltxav_scene(seed: int = 0, params: LTXVParams = LTXVParams(), frames: int = 2, size: int = 4,
                audio_frames: int = 5) -> Scene:
    """LTX-2: the sampler holds video and audio packed in one ``[B, 1, N]`` latent, and every
    cond carries the ``latent_shapes`` that split it (comfy/model_base.py:1197-1199, v0.30.0)."""
    torch.manual_seed(seed)
    model = LTXAVModel(params).eval()
    g = torch.Generator().manual_seed(seed + 1)
    shapes = [torch.Size((1, params.in_channels, frames, size, size)),
              torch.Size((1, params.audio_channels, audio_frames, params.audio_bins))]
    conds = [Cond({"context": _text(g, params.caption_channels), "latent_shapes": shapes}) for _ in range(2)]
    packed = sum(shape[1:].numel() for shape in shapes)
    return Scene(ModelPatcher(FlowModel(model, multiplier=1000.0)), *conds, (1, 1, packed))


def minimax_h3_scene(seed: int = 0, params: MiniMaxParams = MiniMaxParams(), frames: int = 2, size: int = 4,
                     audio_frames: int = 3, keyframe: bool = False) -> Scene:
    """MiniMax H3 text-to-video+audio; ``keyframe`` adds a first-frame condition (fl2va), whose rows
    join the packed sequence. As for LTX-2 the sampler holds video and audio packed in one
    ``[B, 1, N]`` latent split by ``latent_shapes``; every cond carries its own payload with its own
    packed layout (comfy/model_base.py ``MiniMaxH3.extra_conds`` at v0.33.0), a ``CONDConstant``
    that never equals another cond's, so cond and uncond run as separate calls."""
    torch.manual_seed(seed)
    model = MiniMaxH3Model(params).eval()
    g = torch.Generator().manual_seed(seed + 1)
    shapes = [torch.Size((1, params.latents_dim, frames, size, size)),
              torch.Size((1, params.audio_latents_dim, 2, audio_frames))]
    keyframes = [torch.randn(1, params.latents_dim, 1, size, size, generator=g)] if keyframe else []
    conds = []
    for _ in range(2):
        payload = {"layout": PackedLayout(TEXT_TOKENS, frames, size, size, audio_frames, len(keyframes))}
        if keyframes:
            payload["cond_video_latents"] = keyframes
        conds.append(Cond({"context": _text(g, params.text_dim), "latent_shapes": shapes, "minimax_payload": payload}))
    packed = sum(shape[1:].numel() for shape in shapes)
    return Scene(ModelPatcher(FlowModel(model, multiplier=1000.0)), *conds, (1, 1, packed))
