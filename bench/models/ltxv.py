"""Tiny LTX-Video 0.9 and LTX-2 (audio + video) transformers with ComfyUI's block loops.

``LTXVModel`` mirrors comfy/ldm/lightricks/model.py at ComfyUI v0.30.0 (b1693ecb), v0.3.64
(a125cd84) lines in brackets:
* ``forward`` runs ``_forward`` through the DIFFUSION_MODEL wrappers (:917-942 [:423-428]);
* ``_forward`` (:944-998 [:430-505]): patchify (patch size 1: one token per latent voxel),
  AdaLN-single timestep ``[B, 1, 6 * D]`` plus an embedded timestep for the output, caption
  projection, then ``_process_transformer_blocks`` and ``_process_output``;
* blocks through ``patches_replace["dit"]`` under ``("double_block", i)`` with args ``img,
  txt, attention_mask, vec, pe, transformer_options, self_attention_mask, prompt_timestep``,
  reading back ``out["img"]`` (:1291-1319 [:477-500]);
* ``_process_output`` (:1321-1345 [:502-510]): scale/shift from ``scale_shift_table`` and the
  embedded timestep, ``norm_out``, ``proj_out``, unpatchify.

``LTXAVModel`` mirrors comfy/ldm/lightricks/av_model.py at v0.30.0 (LTX-2 is not in v0.3.64):
* ComfyUI hands it ``x`` as a list ``[video, audio]``: the sampler's packed latent is split
  by ``utils.unpack_latents`` in comfy/model_base.py:232-233 and the returned list packed
  again (:240-241);
* ``forward`` splits a ``(video, audio)`` timestep (:1033-1078); ``_process_input`` separates
  and patchifies both parts (:621-638, :663-683), audio as one token per latent frame;
* blocks through ``("double_block", i)`` with ``args["img"] = (vx, ax)`` and per-modality
  context, timestep, RoPE and cross-modal arguments; the loop reads back
  ``vx, ax = out["img"]`` (:888-992);
* the block (``BasicAVTransformerBlock.forward``, :256-) updates ``vx`` and ``ax`` in place
  (``addcmul_``/``add_``), runs audio-to-video and video-to-audio cross attention, and skips
  audio work when the audio part is empty;
* ``_process_output`` finishes each part with its own table, norm and projection and
  returns ``[video, audio]``, or the video alone when there is no audio (:994-1031, :640-644).
Keyframe guides, grid masks and reference audio are not mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..standin.patcher import WrappersMP, WrapperExecutor, get_all_wrappers
from .layers import attention, rope_angles, timestep_embedding


@dataclass(frozen=True)
class LTXVParams:
    in_channels: int = 4
    hidden_size: int = 64
    num_heads: int = 4
    num_layers: int = 4
    caption_channels: int = 32
    audio_channels: int = 2  # LTX-2 only: audio latent channels x frequency bins make a token
    audio_bins: int = 4
    audio_hidden_size: int = 32


def _rms(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, x.shape[-1:], eps=1e-6)


def _update(target: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """In place as ComfyUI's blocks at inference; out of place while autograd records."""
    if torch.is_grad_enabled() and update.requires_grad:
        return target + update
    return target.add_(update)


class AdaLNSingle(nn.Module):
    """Timestep -> (six modulations per block, the embedded timestep for the output layer)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.emb = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.emb(timestep_embedding(timestep.flatten(), 256))
        return self.linear(F.silu(embedded))[:, None], embedded[:, None]


class StreamAttention(nn.Module):
    """Self- or cross-attention of one token stream, with optional RoPE and additive mask."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, context=None, mask=None, pe=None):
        k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
        return self.out(attention(self.q(x), k, v, self.heads, pe, mask))


class BasicTransformerBlock(nn.Module):
    """comfy/ldm/lightricks/model.py:535 (v0.30.0): AdaLN self-attention, text cross-attention, FF."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.attn1 = StreamAttention(dim, heads)
        self.attn2 = StreamAttention(dim, heads)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))

    def ada(self, timestep):
        return (self.scale_shift_table[None, None] + timestep.unflatten(-1, (6, -1))).unbind(2)

    def forward(self, x, context=None, attention_mask=None, timestep=None, pe=None, transformer_options={},
                self_attention_mask=None, prompt_timestep=None):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.ada(timestep)
        x = _update(x, self.attn1(_rms(x) * (1 + scale_msa) + shift_msa, mask=self_attention_mask, pe=pe) * gate_msa)
        x = _update(x, self.attn2(_rms(x), context, mask=attention_mask))
        return _update(x, self.ff(_rms(x) * (1 + scale_mlp) + shift_mlp) * gate_mlp)


class LTXVModel(nn.Module):
    def __init__(self, params: LTXVParams = LTXVParams()) -> None:
        super().__init__()
        self.params = params
        p, d = params, params.hidden_size
        self.patchify_proj = nn.Linear(p.in_channels, d)
        self.adaln_single = AdaLNSingle(d)
        self.caption_projection = nn.Sequential(nn.Linear(p.caption_channels, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.transformer_blocks = nn.ModuleList(self._block(d, p.num_heads) for _ in range(p.num_layers))
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, p.in_channels)

    def _block(self, dim: int, heads: int) -> nn.Module:
        return BasicTransformerBlock(dim, heads)

    # :917-942
    def forward(self, x, timestep, context, attention_mask=None, frame_rate=25, transformer_options={}, keyframe_idxs=None,
                **kwargs):
        return WrapperExecutor.new_class_executor(
            self._forward, self, get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timestep, context, attention_mask, frame_rate, transformer_options, keyframe_idxs, **kwargs)

    @staticmethod
    def patchify(x):
        """[B, C, T, H, W] -> [B, T*H*W, C] and (t, h, w) positions per token."""
        t, h, w = x.shape[-3:]
        positions = torch.stack(torch.meshgrid(*(torch.arange(n, device=x.device) for n in (t, h, w)), indexing="ij"), -1)
        return x.flatten(2).transpose(1, 2), positions.reshape(-1, 3)

    def head_dim(self) -> int:
        return self.params.hidden_size // self.params.num_heads

    def _prepare_mask(self, attention_mask, dtype):
        """Integer text mask -> additive float mask (:_prepare_attention_mask)."""
        if attention_mask is None or torch.is_floating_point(attention_mask):
            return attention_mask
        return ((attention_mask - 1).to(dtype) * torch.finfo(dtype).max)[:, None, None, :]

    # :944-998
    def _forward(self, x, timestep, context, attention_mask=None, frame_rate=25, transformer_options={}, keyframe_idxs=None,
                 **kwargs):
        shape = x.shape
        tokens, positions = self.patchify(x)
        x = self.patchify_proj(tokens)
        vec, embedded = self.adaln_single(timestep)
        context = self.caption_projection(context)
        pe = rope_angles(positions, self.head_dim())
        x = self._process_transformer_blocks(x, context, self._prepare_mask(attention_mask, x.dtype), vec, pe,
                                             transformer_options=transformer_options)
        return self._process_output(x, embedded, shape)

    # :1291-1319
    def _process_transformer_blocks(self, x, context, attention_mask, timestep, pe, transformer_options={},
                                    self_attention_mask=None, **kwargs):
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        prompt_timestep = kwargs.get("prompt_timestep", None)
        for i, block in enumerate(self.transformer_blocks):
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["img"] = block(args["img"], context=args["txt"], attention_mask=args["attention_mask"],
                                       timestep=args["vec"], pe=args["pe"], transformer_options=args["transformer_options"],
                                       self_attention_mask=args.get("self_attention_mask"),
                                       prompt_timestep=args.get("prompt_timestep"))
                    return out

                out = blocks_replace[("double_block", i)](
                    {"img": x, "txt": context, "attention_mask": attention_mask, "vec": timestep, "pe": pe,
                     "transformer_options": transformer_options, "self_attention_mask": self_attention_mask,
                     "prompt_timestep": prompt_timestep},
                    {"original_block": block_wrap},
                )
                x = out["img"]
            else:
                x = block(x, context=context, attention_mask=attention_mask, timestep=timestep, pe=pe,
                          transformer_options=transformer_options, self_attention_mask=self_attention_mask,
                          prompt_timestep=prompt_timestep)
        return x

    # :1321-1345
    def _process_output(self, x, embedded_timestep, shape):
        shift, scale = (self.scale_shift_table[None, None] + embedded_timestep[:, :, None]).unbind(2)
        x = self.proj_out(_rms(x) * (1 + scale) + shift)
        return x.transpose(1, 2).reshape(shape)


class BasicAVTransformerBlock(nn.Module):
    """av_model.py:83-: a video block, an audio block, and audio<->video cross attention."""

    def __init__(self, dim: int, audio_dim: int, heads: int) -> None:
        super().__init__()
        self.video = BasicTransformerBlock(dim, heads)
        self.audio = BasicTransformerBlock(audio_dim, heads)
        self.audio_to_video_attn = StreamAttention(dim, heads, context_dim=audio_dim)
        self.video_to_audio_attn = StreamAttention(audio_dim, heads, context_dim=dim)

    def forward(self, x, v_context=None, a_context=None, attention_mask=None, v_timestep=None, a_timestep=None, v_pe=None,
                a_pe=None, v_cross_pe=None, a_cross_pe=None, v_cross_scale_shift_timestep=None,
                a_cross_scale_shift_timestep=None, v_cross_gate_timestep=None, a_cross_gate_timestep=None,
                transformer_options=None, self_attention_mask=None, v_prompt_timestep=None, a_prompt_timestep=None):
        vx, ax = x
        run_ax = ax.numel() > 0  # :266-268
        vx = self.video(vx, v_context, attention_mask, v_timestep, v_pe, self_attention_mask=self_attention_mask)
        if run_ax:
            ax = self.audio(ax, a_context, None, a_timestep, a_pe)
            a2v = self.audio_to_video_attn(_rms(vx), _rms(ax))
            v2a = self.video_to_audio_attn(_rms(ax), _rms(vx))
            vx = _update(vx, a2v)
            ax = _update(ax, v2a)
        return vx, ax


class LTXAVModel(LTXVModel):
    def __init__(self, params: LTXVParams = LTXVParams()) -> None:
        super().__init__(params)
        p, ad = params, params.audio_hidden_size
        self.audio_patchify_proj = nn.Linear(p.audio_channels * p.audio_bins, ad)
        self.audio_adaln_single = AdaLNSingle(ad)
        self.audio_caption_projection = nn.Sequential(nn.Linear(p.caption_channels, ad), nn.GELU(approximate="tanh"), nn.Linear(ad, ad))
        self.audio_scale_shift_table = nn.Parameter(torch.randn(2, ad) / ad**0.5)
        self.audio_proj_out = nn.Linear(ad, p.audio_channels * p.audio_bins)

    def _block(self, dim: int, heads: int) -> nn.Module:
        return BasicAVTransformerBlock(dim, self.params.audio_hidden_size, heads)

    # av_model.py:1033-1078
    def forward(self, x, timestep, context, attention_mask=None, frame_rate=25, transformer_options={}, keyframe_idxs=None,
                **kwargs):
        if isinstance(timestep, (tuple, list)) and len(timestep) == 2:
            timestep, kwargs["a_timestep"] = timestep
        else:
            kwargs["a_timestep"] = timestep
        return super().forward(x, timestep, context, attention_mask, frame_rate, transformer_options, keyframe_idxs, **kwargs)

    def _forward(self, x, timestep, context, attention_mask=None, frame_rate=25, transformer_options={}, keyframe_idxs=None,
                 a_timestep=None, **kwargs):
        vx, ax = x[0], x[1] if len(x) > 1 else None  # :621-638
        if ax is None:
            ax = vx.new_zeros(vx.shape[0], self.params.audio_channels, 0, self.params.audio_bins)
        v_shape, a_shape = vx.shape, ax.shape
        tokens, positions = self.patchify(vx)
        vx = self.patchify_proj(tokens)
        ax = self.audio_patchify_proj(ax.transpose(1, 2).flatten(2))  # [B, L, channels * bins]
        v_vec, v_embedded = self.adaln_single(timestep)
        a_vec, a_embedded = self.audio_adaln_single(a_timestep)
        v_context, a_context = self.caption_projection(context), self.audio_caption_projection(context)
        v_pe = rope_angles(positions, self.head_dim())
        a_pe = rope_angles(torch.arange(ax.shape[1], device=ax.device)[:, None], self.params.audio_hidden_size // self.params.num_heads)
        vx, ax = self._process_transformer_blocks(
            (vx, ax), (v_context, a_context), self._prepare_mask(attention_mask, vx.dtype), (v_vec, a_vec),
            (v_pe, a_pe), transformer_options=transformer_options,
        )
        vx = super()._process_output(vx, v_embedded, v_shape)
        shift, scale = (self.audio_scale_shift_table[None, None] + a_embedded[:, :, None]).unbind(2)
        ax = self.audio_proj_out(_rms(ax) * (1 + scale) + shift)
        ax = ax.unflatten(2, (a_shape[1], a_shape[3])).transpose(1, 2)
        return vx if ax.numel() == 0 else [vx, ax]  # recombine_audio_and_video_latents, :640-644

    # av_model.py:888-992
    def _process_transformer_blocks(self, x, context, attention_mask, timestep, pe, transformer_options={},
                                    self_attention_mask=None, **kwargs):
        vx, ax = x
        v_context, a_context = context
        v_timestep, a_timestep = timestep
        v_pe, a_pe = pe
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.transformer_blocks):
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["img"] = block(
                        args["img"], v_context=args["v_context"], a_context=args["a_context"],
                        attention_mask=args["attention_mask"], v_timestep=args["v_timestep"], a_timestep=args["a_timestep"],
                        v_pe=args["v_pe"], a_pe=args["a_pe"], v_cross_pe=args["v_cross_pe"], a_cross_pe=args["a_cross_pe"],
                        v_cross_scale_shift_timestep=args["v_cross_scale_shift_timestep"],
                        a_cross_scale_shift_timestep=args["a_cross_scale_shift_timestep"],
                        v_cross_gate_timestep=args["v_cross_gate_timestep"], a_cross_gate_timestep=args["a_cross_gate_timestep"],
                        transformer_options=args["transformer_options"], self_attention_mask=args.get("self_attention_mask"),
                        v_prompt_timestep=args.get("v_prompt_timestep"), a_prompt_timestep=args.get("a_prompt_timestep"),
                    )
                    return out

                out = blocks_replace[("double_block", i)](
                    {"img": (vx, ax), "v_context": v_context, "a_context": a_context, "attention_mask": attention_mask,
                     "v_timestep": v_timestep, "a_timestep": a_timestep, "v_pe": v_pe, "a_pe": a_pe,
                     "v_cross_pe": None, "a_cross_pe": None, "v_cross_scale_shift_timestep": None,
                     "a_cross_scale_shift_timestep": None, "v_cross_gate_timestep": None, "a_cross_gate_timestep": None,
                     "transformer_options": transformer_options, "self_attention_mask": self_attention_mask,
                     "v_prompt_timestep": None, "a_prompt_timestep": None},
                    {"original_block": block_wrap},
                )
                vx, ax = out["img"]
            else:
                vx, ax = block((vx, ax), v_context=v_context, a_context=a_context, attention_mask=attention_mask,
                               v_timestep=v_timestep, a_timestep=a_timestep, v_pe=v_pe, a_pe=a_pe,
                               transformer_options=transformer_options, self_attention_mask=self_attention_mask)
        return [vx, ax]
