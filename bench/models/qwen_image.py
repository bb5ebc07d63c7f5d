"""A tiny Qwen-Image-layout transformer whose block loop follows ComfyUI's ``QwenImageTransformer2DModel``.

Mirrors comfy/ldm/qwen_image/model.py at ComfyUI v0.30.0 (b1693ecb), with the v0.3.64
(a125cd84) lines in brackets:
* ``forward`` runs ``_forward`` through the DIFFUSION_MODEL wrappers (:429-434 [:362-367]);
* ``_forward`` (:436-568 [:369-472]) patchifies 2x2, appends the Edit models' ``ref_latents``
  as extra image tokens with their own index (:459-497 [:387-412]); Edit 2511's
  ``index_timestep_zero`` doubles the timestep batch (``timestep * 0`` for the reference
  tokens) and passes ``timestep_zero_index`` to every block (:492-495);
* every block runs through ``patches_replace["dit"]`` under ``("double_block", i)`` with
  args ``img, txt, vec, pe, transformer_options``; ``block_wrap`` returns
  ``out["txt"], out["img"]`` and the loop reads both back (:526-535 [:436-444]);
* ControlNet ``control["input"][i]`` is added in place to the first image tokens after
  each block (:553-558 [:461-466]);
* after the loop ``norm_out(hidden_states, temb)`` and ``proj_out`` run on every image
  token, then the reference tokens are cut off (``[:, :num_embeds]``) and the latent is
  unpatchified (:560-568 [:468-472]). The text tokens never reach the output layer.
The block (``QwenImageTransformerBlock.forward``, :269-316) modulates image and text
streams separately (``img_mod``/``txt_mod``, six chunks each), runs one joint attention
over ``cat(txt, img)`` with RoPE, and updates both streams out of place.
Latents are 4-D here as at v0.3.64; v0.30.0 feeds them with a frame axis of 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..standin.patcher import WrappersMP, WrapperExecutor, get_all_wrappers
from .layers import attention, layer_norm, rope_angles, timestep_embedding

PATCH = 2


@dataclass(frozen=True)
class QwenImageParams:
    in_channels: int = 4  # latent channels (ComfyUI's in_channels is this times 4, after patching)
    hidden_size: int = 64
    num_heads: int = 4
    num_layers: int = 6
    joint_attention_dim: int = 32
    mlp_ratio: float = 2.0
    timestep_zero: bool = False  # Edit 2511: default_ref_method "index_timestep_zero"


class QwenImageBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        hidden = int(dim * mlp_ratio)
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", nn.Linear(dim, 6 * dim))
            setattr(self, f"{stream}_qkv", nn.Linear(dim, 3 * dim))
            setattr(self, f"{stream}_out", nn.Linear(dim, dim))
            setattr(self, f"{stream}_mlp", nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)))

    @staticmethod
    def _modulate(x, params, timestep_zero_index=None):
        """Shift/scale per sample; with ``timestep_zero_index`` the tokens from that index on use the
        second half of the batch's modulation (the zero timestep), as :256-267 does."""
        shift, scale, gate = params.chunk(3, dim=-1)
        if timestep_zero_index is None:
            return x * (1 + scale[:, None]) + shift[:, None], gate[:, None]
        b = shift.shape[0] // 2
        regular = x[:, :timestep_zero_index] * (1 + scale[:b, None]) + shift[:b, None]
        zero = x[:, timestep_zero_index:] * (1 + scale[b:, None]) + shift[b:, None]
        return torch.cat((regular, zero), 1), (gate[:b, None], gate[b:, None])

    @staticmethod
    def _apply_gate(x, y, gate, timestep_zero_index=None):
        if timestep_zero_index is None:
            return y + gate * x
        return y + torch.cat((x[:, :timestep_zero_index] * gate[0], x[:, timestep_zero_index:] * gate[1]), 1)

    def forward(self, hidden_states, encoder_hidden_states, encoder_hidden_states_mask, temb, image_rotary_emb=None,
                timestep_zero_index=None, transformer_options={}):
        img_mod1, img_mod2 = self.img_mod(F.silu(temb)).chunk(2, dim=-1)
        if timestep_zero_index is not None:
            temb = temb.chunk(2, dim=0)[0]
        txt_mod1, txt_mod2 = self.txt_mod(F.silu(temb)).chunk(2, dim=-1)
        img, txt = hidden_states, encoder_hidden_states
        img_in, img_gate1 = self._modulate(layer_norm(img), img_mod1, timestep_zero_index)
        txt_in, txt_gate1 = self._modulate(layer_norm(txt), txt_mod1)
        img_q, img_k, img_v = self.img_qkv(img_in).chunk(3, dim=-1)
        txt_q, txt_k, txt_v = self.txt_qkv(txt_in).chunk(3, dim=-1)
        mask = None
        if encoder_hidden_states_mask is not None:  # text padding mask over the joint sequence (:170-180)
            pad = torch.zeros(img.shape[0], img.shape[1], dtype=img.dtype, device=img.device)
            mask = torch.cat((encoder_hidden_states_mask.to(img.dtype), pad), 1)[:, None, None, :]
        joint = attention(torch.cat((txt_q, img_q), 1), torch.cat((txt_k, img_k), 1), torch.cat((txt_v, img_v), 1),
                          self.heads, image_rotary_emb, mask)
        txt_attn, img_attn = joint[:, : txt.shape[1]], joint[:, txt.shape[1]:]
        img = self._apply_gate(self.img_out(img_attn), img, img_gate1, timestep_zero_index)
        txt = txt + txt_gate1 * self.txt_out(txt_attn)
        img_in2, img_gate2 = self._modulate(layer_norm(img), img_mod2, timestep_zero_index)
        img = self._apply_gate(self.img_mlp(img_in2), img, img_gate2, timestep_zero_index)
        txt_in2, txt_gate2 = self._modulate(layer_norm(txt), txt_mod2)
        txt = txt + txt_gate2 * self.txt_mlp(txt_in2)
        return txt, img


class LastLayer(nn.Module):
    """comfy/ldm/qwen_image/model.py:319-338: AdaLN (scale first, then shift) without affine."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x, conditioning_embedding):
        scale, shift = self.linear(F.silu(conditioning_embedding)).chunk(2, dim=1)
        return layer_norm(x) * (1 + scale[:, None]) + shift[:, None]


class QwenImageTransformer2DModel(nn.Module):
    def __init__(self, params: QwenImageParams = QwenImageParams()) -> None:
        super().__init__()
        self.params = params
        p, d = params, params.hidden_size
        self.patch_size = PATCH
        self.inner_dim = d  # comfy/ldm/qwen_image/model.py:310
        self.default_ref_method = "index_timestep_zero" if p.timestep_zero else "index"
        self.time_text_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.txt_norm = nn.RMSNorm(p.joint_attention_dim, eps=1e-6)
        self.img_in = nn.Linear(p.in_channels * PATCH * PATCH, d)
        self.txt_in = nn.Linear(p.joint_attention_dim, d)
        self.transformer_blocks = nn.ModuleList(QwenImageBlock(d, p.num_heads, p.mlp_ratio) for _ in range(p.num_layers))
        self.norm_out = LastLayer(d)
        self.proj_out = nn.Linear(d, PATCH * PATCH * p.in_channels)

    # :429-434
    def forward(self, x, timestep, context, attention_mask=None, ref_latents=None, additional_t_cond=None,
                transformer_options={}, **kwargs):
        return WrapperExecutor.new_class_executor(
            self._forward, self, get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timestep, context, attention_mask, ref_latents, additional_t_cond, transformer_options, **kwargs)

    def process_img(self, x, index=0):
        """2x2 patches and (index, row, col) ids centred on the image (:403-427)."""
        b, c, h, w = x.shape
        pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
        if pad_h or pad_w:  # comfy/ldm/common_dit.py pad_to_patch_size
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        hp, wp = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        tokens = x.reshape(b, c, hp, PATCH, wp, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * PATCH * PATCH)
        rows = torch.arange(hp, device=x.device).repeat_interleave(wp) - hp // 2
        cols = torch.arange(wp, device=x.device).repeat(hp) - wp // 2
        ids = torch.stack([torch.full_like(rows, index), rows, cols], dim=-1)
        return tokens, ids[None].expand(b, -1, -1), x.shape

    # :436-568
    def _forward(self, x, timesteps, context, attention_mask=None, ref_latents=None, additional_t_cond=None,
                 transformer_options={}, control=None, **kwargs):
        timestep = timesteps
        mask = attention_mask
        if mask is not None and not torch.is_floating_point(mask):  # :452-453
            mask = (mask - 1).to(x.dtype) * torch.finfo(x.dtype).max
        hidden_states, img_ids, padded_shape = self.process_img(x)
        num_embeds = hidden_states.shape[1]
        timestep_zero_index = None
        if ref_latents is not None:
            ref_method = kwargs.get("ref_latents_method", self.default_ref_method)
            for index, ref in enumerate(ref_latents, start=1):
                ref_tokens, ref_ids, _ = self.process_img(ref, index=index)
                hidden_states = torch.cat([hidden_states, ref_tokens], 1)
                img_ids = torch.cat([img_ids, ref_ids], 1)
            if ref_method == "index_timestep_zero" and ref_latents:
                timestep = torch.cat([timestep, timestep * 0], dim=0)
                timestep_zero_index = num_embeds
            transformer_options = transformer_options.copy()
            transformer_options["reference_image_num_tokens"] = [r.shape[-2] * r.shape[-1] // PATCH**2 for r in ref_latents]
        txt_start = max(padded_shape[-1] // PATCH // 2, padded_shape[-2] // PATCH // 2)
        txt_ids = torch.arange(txt_start, txt_start + context.shape[1], device=x.device)[None, :, None].expand(x.shape[0], -1, 3)

        hidden_states = self.img_in(hidden_states)
        encoder_hidden_states = self.txt_in(self.txt_norm(context))
        temb = self.time_text_embed(timestep_embedding(timestep, 256, time_factor=1000.0).to(hidden_states.dtype))
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        ids = torch.cat((txt_ids, img_ids), dim=1)
        image_rotary_emb = rope_angles(ids[0], self.params.hidden_size // self.params.num_heads)

        transformer_options["total_blocks"] = len(self.transformer_blocks)
        transformer_options["block_type"] = "double"
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["txt"], out["img"] = block(
                        hidden_states=args["img"], encoder_hidden_states=args["txt"], encoder_hidden_states_mask=mask,
                        temb=args["vec"], image_rotary_emb=args["pe"], timestep_zero_index=timestep_zero_index,
                        transformer_options=args["transformer_options"],
                    )
                    return out

                out = blocks_replace[("double_block", i)](
                    {"img": hidden_states, "txt": encoder_hidden_states, "vec": temb, "pe": image_rotary_emb,
                     "transformer_options": transformer_options},
                    {"original_block": block_wrap},
                )
                hidden_states = out["img"]
                encoder_hidden_states = out["txt"]
            else:
                encoder_hidden_states, hidden_states = block(
                    hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                    encoder_hidden_states_mask=mask, temb=temb, image_rotary_emb=image_rotary_emb,
                    timestep_zero_index=timestep_zero_index, transformer_options=transformer_options,
                )
            if control is not None:  # ControlNet
                control_i = control.get("input")
                if i < len(control_i):
                    add = control_i[i]
                    if add is not None:
                        hidden_states[:, : add.shape[1]] += add

        if timestep_zero_index is not None:
            temb = temb.chunk(2, dim=0)[0]
        hidden_states = self.proj_out(self.norm_out(hidden_states, temb))
        b, c = x.shape[:2]
        hp, wp = padded_shape[-2] // PATCH, padded_shape[-1] // PATCH
        out = hidden_states[:, :num_embeds].reshape(b, hp, wp, c, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, c, hp * PATCH, wp * PATCH)[:, :, : x.shape[-2], : x.shape[-1]]
