"""Tiny MiniMax H3 (audio + video) transformer with ComfyUI's packed sequence and block loop.

``MiniMaxH3Model`` mirrors comfy/ldm/minimax/model.py at ComfyUI v0.33.0 (2f35f4a0), v0.30.0
(b1693ecb) lines in brackets:
* ComfyUI hands it ``x`` as a list ``[video, audio]`` (comfy/model_base.py unpacks the sampler's
  packed latent, as for LTX-2); video ``[1, C, T, H, W]``, stereo audio ``[1, C, 2, T]``;
* ``forward`` runs ``_forward`` through the DIFFUSION_MODEL wrappers (:489-512 [:498-503]);
  v0.33.0's audio scale outside the wrappers is 1 unless the sampler packs a rescaled audio
  stream (ModelSamplingAV), which is not mirrored;
* ``_forward`` refuses a batch above 1 (:518-519 [:509-510]) and packs one sequence without a
  batch axis, ``[text | condition rows | audio | video]`` (``PackedLayout``, :288-385 [:297-410]):
  a keyframe's latent frame becomes condition rows, audio is packed channel-major (ch0 t0..T-1,
  ch1 t0..T-1, :59-62), video in 1x2x2 patches (:42-49);
* per-segment timesteps (:536-568 [:527-559]): text and video follow the video sigma
  ``t = 1 - sigma``, audio its own shifted schedule (video shift 12, audio 3), condition rows
  stay near ``t = 1`` (0.999); each segment gets modulation row ``3 * timestep row + tag``
  (video 0, text 1, audio 2);
* ``DiTBlock.forward`` (:258-263 [:267-272]) modulates per segment and adds its gated attention
  and MLP outputs into its input in place (``_mod_scale_shift`` / ``_mod_gate``, :203-214);
* the block loop (:623-640 [:614-631]) calls ``patches_replace["dit"][("double_block", i)]`` with
  args ``img, t_emb, mod_segments, rope_freqs, transformer_options`` and reads back ``out["img"]``;
* the final layer reads the target video and audio rows only, the last two segments (:642-645,
  ``FinalLayer`` :266-285), and the model returns ``[-video, -audio]`` (:651; v0.30.0 :646 also
  scales the audio by the slope of its schedule).
Not mirrored: the Qwen3-VL token refiner (a linear projection stands in), text token tags,
reference blocks (ref2va), the condition rows' noise augmentation, RoPE's exact axis grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..standin.patcher import WrappersMP, WrapperExecutor, get_all_wrappers
from .layers import attention, rope_angles, timestep_embedding

VISUAL_COND_TIMESTEP = 0.999  # :32
SEGMENT_TAG = {"text": 1, "video": 0, "audio": 2, "cond": 0}  # :553


@dataclass(frozen=True)
class MiniMaxParams:
    hidden_size: int = 32
    num_layers: int = 4
    num_heads: int = 2
    ffn_hidden_size: int = 64
    latents_dim: int = 4  # video latent channels (24 in the released model)
    audio_latents_dim: int = 4  # audio latent channels (32)
    text_dim: int = 16
    time_embed_dim: int = 16
    sigma_shift_video: float = 12.0
    sigma_shift_audio: float = 3.0
    inplace: bool = True  # False: the same arithmetic out of place (tests that nothing kept aliases a block's input)


def time_shift_sigma(sigma: torch.Tensor, from_shift: float, to_shift: float) -> torch.Tensor:
    """:36-39: the audio sigma for a video sigma, both on their shifted schedules."""
    base = sigma / (from_shift + sigma * (1.0 - from_shift))
    return to_shift * base / (1.0 + (to_shift - 1.0) * base)


def patchify_video(latent: torch.Tensor) -> torch.Tensor:
    """:42-49: ``[1, C, T, H, W]`` -> ``[T * H/2 * W/2, C * 4]`` rows."""
    b, c, t, h, w = latent.shape
    x = latent.reshape(b, c, t, 1, h // 2, 2, w // 2, 2)
    return torch.einsum("nctrhpwq->nthwcrpq", x).reshape(b * t * (h // 2) * (w // 2), c * 4)


def unpatchify_video(rows: torch.Tensor, t: int, h: int, w: int, c: int) -> torch.Tensor:
    """:52-56."""
    x = rows.reshape(-1, t, h, w, c, 1, 2, 2)
    return torch.einsum("nthwcrpq->nctrhpwq", x).reshape(-1, c, t, h * 2, w * 2)


def pack_audio(latent: torch.Tensor) -> torch.Tensor:
    """:59-62: ``[1, C, 2, T]`` -> ``[2 * T, C]``, channel-major."""
    _, c, ch, t = latent.shape
    return latent[0].permute(1, 2, 0).reshape(ch * t, c)


def unpack_audio(rows: torch.Tensor, ch: int = 2) -> torch.Tensor:
    """:65-67."""
    t = rows.shape[0] // ch
    return rows.reshape(ch, t, rows.shape[-1]).permute(2, 0, 1).unsqueeze(0)


class PackedLayout:
    """:288-385: the contiguous segments ``(start, stop, kind)`` of one packed sequence and each
    row's (t, h, w) position; the target audio and video are always the last two segments."""

    def __init__(self, text_len: int, latent_t: int, latent_h: int, latent_w: int, audio_t: int,
                 keyframes: int = 0) -> None:
        frame_rows = (latent_h // 2) * (latent_w // 2)
        hh, ww = torch.meshgrid(torch.arange(latent_h // 2), torch.arange(latent_w // 2), indexing="ij")
        frame = torch.stack([hh.reshape(-1), ww.reshape(-1)], -1).float()
        sizes = [("text", text_len)] + [("cond", frame_rows)] * keyframes + [("audio", audio_t * 2), ("video", latent_t * frame_rows)]
        positions = [torch.stack([torch.arange(text_len).float(), torch.zeros(text_len), torch.zeros(text_len)], -1)]
        cursor = float(text_len)
        for _ in range(keyframes):
            positions.append(torch.cat([torch.full((frame_rows, 1), cursor), frame], -1))
        audio_time = (cursor + torch.arange(audio_t).float()).repeat(2)
        positions.append(torch.stack([audio_time, torch.zeros(audio_t * 2), torch.zeros(audio_t * 2)], -1))
        video_time = cursor + torch.arange(latent_t).float().repeat_interleave(frame_rows)
        positions.append(torch.cat([video_time[:, None], frame.repeat(latent_t, 1)], -1))
        self.position_ids = torch.cat(positions)
        self.segments, start = [], 0
        for kind, n in sizes:
            self.segments.append((start, start + n, kind))
            start += n
        self.seq_len = start
        self.signature = (text_len, latent_t, latent_h, latent_w, audio_t)


class AdalnProj(nn.Module):
    """:186-200: per distinct timestep and modality tag, ``expand`` modulation vectors."""

    def __init__(self, t_dim: int, hidden: int, expand: int, modalities: int) -> None:
        super().__init__()
        self.expand, self.modalities, self.hidden = expand, modalities, hidden
        self.linear = nn.Linear(t_dim, expand * hidden * modalities)

    def forward(self, t_emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.linear(F.silu(t_emb))
        return x.view(x.shape[0] * self.modalities, self.expand * self.hidden).chunk(self.expand, dim=-1)


def _mod_scale_shift(h, shift, scale, segments):
    """:203-207: ``h * (1 + scale) + shift`` per segment, on the fresh norm output."""
    for a, b, row in segments:
        h[a:b].mul_(1.0 + scale[row]).add_(shift[row])
    return h


def _mod_gate(x, gate, other, segments, inplace=True):
    """:210-214: the gated residual accumulated into the stream in place (ComfyUI always does;
    ``inplace=False`` gives the same values in a new tensor, and gradients for training)."""
    if not inplace:
        x = x.clone()
    for a, b, row in segments:
        x[a:b].addcmul_(other[a:b], gate[row])
    return x


class DiTBlock(nn.Module):
    """:246-263: RMS norm, per-segment AdaLN, self-attention over the whole packed sequence, SwiGLU."""

    def __init__(self, p: MiniMaxParams) -> None:
        super().__init__()
        d = p.hidden_size
        self.heads, self.inplace = p.num_heads, p.inplace
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.fc1 = nn.Linear(d, 2 * p.ffn_hidden_size, bias=False)
        self.fc2 = nn.Linear(p.ffn_hidden_size, d, bias=False)
        self.adaln_proj = AdalnProj(p.time_embed_dim, d, 6, 3)

    def attn(self, h: torch.Tensor, rope_freqs: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        return self.out(attention(q[None], k[None], v[None], self.heads, rope_freqs)[0])

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc1(h).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * up)

    def forward(self, x, t_emb, mod_segments, rope_freqs, transformer_options={}):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaln_proj(t_emb)
        h = _mod_scale_shift(F.rms_norm(x, x.shape[-1:]), shift_msa, scale_msa, mod_segments)
        x = _mod_gate(x, gate_msa, self.attn(h, rope_freqs), mod_segments, self.inplace)
        h = _mod_scale_shift(F.rms_norm(x, x.shape[-1:]), shift_mlp, scale_mlp, mod_segments)
        return _mod_gate(x, gate_mlp, self.mlp(h), mod_segments, self.inplace)


class FinalLayer(nn.Module):
    """:266-285: norm and AdaLN on the target video and audio rows, one head each."""

    def __init__(self, p: MiniMaxParams) -> None:
        super().__init__()
        self.adaln_proj = AdalnProj(p.time_embed_dim, p.hidden_size, 2, 1)
        self.video_out = nn.Linear(p.hidden_size, p.latents_dim * 4)
        self.audio_out = nn.Linear(p.hidden_size, p.audio_latents_dim)

    def forward(self, x, t_emb, video_seg, audio_seg):
        shift, scale = self.adaln_proj(t_emb)
        (va, vb, vrow), (aa, ab, arow) = video_seg, audio_seg
        hv = F.rms_norm(x[va:vb], x.shape[-1:]) * (1.0 + scale[vrow]) + shift[vrow]
        ha = F.rms_norm(x[aa:ab], x.shape[-1:]) * (1.0 + scale[arow]) + shift[arow]
        return self.video_out(hv), self.audio_out(ha)


class MiniMaxH3Model(nn.Module):
    def __init__(self, params: MiniMaxParams = MiniMaxParams()) -> None:
        super().__init__()
        p = self.params = params
        self.video_patch_proj = nn.Linear(p.latents_dim * 4, p.hidden_size)
        self.audio_patch_proj = nn.Linear(p.audio_latents_dim, p.hidden_size)
        self.condition_proj = nn.Linear(p.text_dim, p.hidden_size)
        self.time_embedder = nn.Sequential(nn.Linear(64, p.time_embed_dim), nn.SiLU(), nn.Linear(p.time_embed_dim, p.time_embed_dim))
        self.blocks = nn.ModuleList(DiTBlock(p) for _ in range(p.num_layers))
        self.final_layer = FinalLayer(p)

    # :489-512
    def forward(self, x, timestep, context, transformer_options={}, minimax_payload=None, **kwargs):
        return WrapperExecutor.new_class_executor(
            self._forward, self, get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timestep, context, transformer_options, minimax_payload=minimax_payload, **kwargs)

    # :514-651
    def _forward(self, x, timestep, context, transformer_options={}, minimax_payload=None, **kwargs):
        p = self.params
        video_x, audio_x = x[0], x[1]
        if video_x.shape[0] != 1:
            raise ValueError("MiniMax H3 supports batch size 1")
        payload = minimax_payload or {}
        latent_t, lat_h, lat_w = video_x.shape[2:]
        audio_t = audio_x.shape[-1]
        keyframes = payload.get("cond_video_latents", [])
        layout = payload.get("layout")
        if layout is None or layout.signature != (context.shape[1], latent_t, lat_h, lat_w, audio_t):
            layout = PackedLayout(context.shape[1], latent_t, lat_h, lat_w, audio_t, len(keyframes))

        sigma_v = (timestep.flatten()[0] / 1000.0).float().clamp(min=1e-6)
        t_v = float(1.0 - sigma_v)
        t_a = float(1.0 - time_shift_sigma(sigma_v, p.sigma_shift_video, p.sigma_shift_audio))
        seg_t = {"text": t_v, "video": t_v, "audio": t_a, "cond": max(t_v, VISUAL_COND_TIMESTEP)}
        unique_t = sorted({t_v, t_a} | ({seg_t["cond"]} if keyframes else set()))
        t_row = {t: i for i, t in enumerate(unique_t)}
        mod_segments = [(a, b, t_row[seg_t[kind]] * 3 + SEGMENT_TAG[kind]) for a, b, kind in layout.segments]

        video_rows = patchify_video(video_x.float())
        if keyframes:
            video_rows = torch.cat([patchify_video(z.float()) for z in keyframes] + [video_rows])
        video_embed = self.video_patch_proj(video_rows)
        audio_embed = self.audio_patch_proj(pack_audio(audio_x.float()))
        text = context[0] if context.shape[-1] == p.hidden_size else self.condition_proj(context[0])
        h = torch.empty(layout.seq_len, p.hidden_size, dtype=video_embed.dtype, device=video_embed.device)
        voff = 0
        for a, b, kind in layout.segments:  # :596-608
            if kind == "text":
                h[a:b] = text
            elif kind == "audio":
                h[a:b] = audio_embed
            else:
                h[a:b] = video_embed[voff:voff + b - a]
                voff += b - a

        t_emb = self.time_embedder(timestep_embedding(torch.tensor(unique_t, device=h.device), 64, time_factor=1000.0))
        rope_freqs = rope_angles(layout.position_ids.to(h.device), p.hidden_size // p.num_heads)

        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.blocks):  # :623-640
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    return {"img": block(args["img"], args["t_emb"], args["mod_segments"], args["rope_freqs"],
                                         transformer_options=args["transformer_options"])}
                h = blocks_replace[("double_block", i)](
                    {"img": h, "t_emb": t_emb, "mod_segments": mod_segments, "rope_freqs": rope_freqs,
                     "transformer_options": transformer_options},
                    {"original_block": block_wrap})["img"]
            else:
                h = block(h, t_emb, mod_segments, rope_freqs, transformer_options=transformer_options)

        video_seg = next((a, b, t_row[seg_t["video"]]) for a, b, k in layout.segments if k == "video")  # :642-645
        audio_seg = next((a, b, t_row[seg_t["audio"]]) for a, b, k in layout.segments if k == "audio")
        v, a = self.final_layer(h, t_emb, video_seg, audio_seg)
        video_out = unpatchify_video(v, latent_t, lat_h // 2, lat_w // 2, p.latents_dim)
        return [-video_out.to(video_x.dtype), -unpack_audio(a).to(audio_x.dtype)]

