"""A tiny FLUX-layout transformer whose block loop follows ComfyUI's ``Flux`` exactly.

Mirrors comfy/ldm/flux/model.py at ComfyUI v0.3.64 (a125cd84), and with ``protocol=CURRENT``
v0.30.0's (b1693ecb) additions to ``forward_orig``: transformer_options copied (:162), block
positions written before each block (:217-220, :272-276).
* ``forward`` runs ``_forward`` through the DIFFUSION_MODEL wrappers (:231-236);
* ``_forward`` patchifies, appends Kontext ``ref_latents`` tokens, drops them after (:238-280);
* ``forward_orig`` (:92-211): double blocks called through ``patches_replace["dit"]``
  with keys ``("double_block", i)``, args ``img, txt, vec, pe, attn_mask,
  transformer_options``, reading back ``out["img"], out["txt"]``; ControlNet
  ``control["input"][i]`` added in place after each double block; ``torch.cat((txt, img), 1)``;
  single blocks ``("single_block", i)`` on the concatenation, reading back ``out["img"]``,
  ControlNet ``control["output"][i]`` added in place; then the text tokens are cut off and
  ``final_layer`` runs with the current ``vec``.
* The blocks update in place like comfy/ldm/flux/layers.py: ``txt += ...`` in the double
  block (:202-203) and ``x += ...`` in the single block (:258). Autograd cannot train
  through those, so they are out-of-place while gradients are on (training only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..standin.patcher import WrappersMP, WrapperExecutor, get_all_wrappers
from ..standin.protocol import LEGACY, Protocol
from .layers import MLPEmbedder, attention, layer_norm, modulate, rope_angles, timestep_embedding


@dataclass(frozen=True)
class FluxParams:
    in_channels: int = 4
    hidden_size: int = 64
    num_heads: int = 4
    depth: int = 2
    depth_single_blocks: int = 4
    mlp_ratio: float = 2.0
    context_in_dim: int = 32
    vec_in_dim: int = 16
    guidance_embed: bool = False
    patch_size: int = 2
    theta: float = 10000.0


def _fp16_guard(x: torch.Tensor) -> torch.Tensor:
    """ComfyUI clamps float16 hidden states to the finite range after each block and the double blocks."""
    return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504) if x.dtype == torch.float16 else x


def _add(target: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``target += update`` as ComfyUI does at inference; out-of-place when autograd records."""
    if torch.is_grad_enabled() and update.requires_grad:
        return target + update
    target += update
    return target


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        mlp = int(hidden * mlp_ratio)
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", nn.Linear(hidden, 6 * hidden))
            setattr(self, f"{stream}_qkv", nn.Linear(hidden, 3 * hidden))
            setattr(self, f"{stream}_proj", nn.Linear(hidden, hidden))
            setattr(self, f"{stream}_mlp", nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(approximate="tanh"), nn.Linear(mlp, hidden)))

    def forward(self, img, txt, vec, pe, attn_mask=None, transformer_options={}):
        img_mod = self.img_mod(F.silu(vec))[:, None].chunk(6, dim=-1)
        txt_mod = self.txt_mod(F.silu(vec))[:, None].chunk(6, dim=-1)
        img_q, img_k, img_v = self.img_qkv(modulate(layer_norm(img), img_mod[0], img_mod[1])).chunk(3, dim=-1)
        txt_q, txt_k, txt_v = self.txt_qkv(modulate(layer_norm(txt), txt_mod[0], txt_mod[1])).chunk(3, dim=-1)
        joint = attention(
            torch.cat((txt_q, img_q), 1), torch.cat((txt_k, img_k), 1), torch.cat((txt_v, img_v), 1), self.heads, pe,
            attn_mask,
        )
        txt_attn, img_attn = joint[:, : txt.shape[1]], joint[:, txt.shape[1] :]
        img = img + img_mod[2] * self.img_proj(img_attn)
        img = img + img_mod[5] * self.img_mlp(modulate(layer_norm(img), img_mod[3], img_mod[4]))
        txt = _add(txt, txt_mod[2] * self.txt_proj(txt_attn))
        txt = _add(txt, txt_mod[5] * self.txt_mlp(modulate(layer_norm(txt), txt_mod[3], txt_mod[4])))
        return img, _fp16_guard(txt)  # comfy/ldm/flux/layers.py:205-206


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.mlp_hidden = int(hidden * mlp_ratio)
        self.modulation = nn.Linear(hidden, 3 * hidden)
        self.linear1 = nn.Linear(hidden, 3 * hidden + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden, hidden)

    def forward(self, x, vec, pe, attn_mask=None, transformer_options={}):
        shift, scale, gate = self.modulation(F.silu(vec))[:, None].chunk(3, dim=-1)
        qkv, mlp = self.linear1(modulate(layer_norm(x), shift, scale)).split([3 * x.shape[-1], self.mlp_hidden], -1)
        attn = attention(*qkv.chunk(3, dim=-1), self.heads, pe, attn_mask)
        return _fp16_guard(_add(x, gate * self.linear2(torch.cat((attn, F.gelu(mlp, approximate="tanh")), -1))))  # :259-260


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Linear(hidden, 2 * hidden)
        self.linear = nn.Linear(hidden, out)

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(F.silu(vec))[:, None].chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x), shift, scale))


class Flux(nn.Module):
    def __init__(self, params: FluxParams = FluxParams(), protocol: Protocol = LEGACY) -> None:
        super().__init__()
        self.params = params
        self.protocol = protocol
        p, h = params, params.hidden_size
        self.patch_size, self.hidden_size = p.patch_size, h  # comfy/ldm/flux/model.py:48, :58
        patch_dim = p.in_channels * p.patch_size**2
        self.img_in = nn.Linear(patch_dim, h)
        self.time_in = MLPEmbedder(256, h)
        self.guidance_in = MLPEmbedder(256, h) if p.guidance_embed else nn.Identity()
        self.vector_in = MLPEmbedder(p.vec_in_dim, h)
        self.txt_in = nn.Linear(p.context_in_dim, h)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(h, p.num_heads, p.mlp_ratio) for _ in range(p.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(h, p.num_heads, p.mlp_ratio) for _ in range(p.depth_single_blocks)
        )
        self.final_layer = LastLayer(h, patch_dim)

    # comfy/ldm/flux/model.py:231-236
    def forward(self, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None, transformer_options={}, **kwargs):
        return WrapperExecutor.new_class_executor(
            self._forward, self, get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)

    def _patchify(self, x: torch.Tensor, index: int = 0, h_offset: int = 0, w_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """comfy/ldm/flux/model.py:213-229 ``process_img``: tokens and their (index, row, column) ids."""
        ps = self.params.patch_size
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, h // ps, ps, w // ps, ps).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // ps) * (w // ps), -1)
        rows = torch.arange(h // ps, device=x.device).repeat_interleave(w // ps) + (h_offset + ps // 2) // ps
        cols = torch.arange(w // ps, device=x.device).repeat(h // ps) + (w_offset + ps // 2) // ps
        ids = torch.stack([torch.full_like(rows, index), rows, cols], dim=-1)
        return tokens, ids[None].expand(b, -1, -1)

    # comfy/ldm/flux/model.py:238-280
    def _forward(self, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None, transformer_options={}, **kwargs):
        b, c, h, w = x.shape
        ps = self.params.patch_size
        pad_h, pad_w = (-h) % ps, (-w) % ps
        if pad_h or pad_w:  # comfy/ldm/common_dit.py pad_to_patch_size
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        img, img_ids = self._patchify(x)
        img_tokens = img.shape[1]
        h_used = w_used = 0
        for ref in ref_latents or []:  # Kontext, ref_latents_method "offset", the default (:246-275)
            h_offset = w_offset = 0
            if ref.shape[-2] + h_used > ref.shape[-1] + w_used:
                w_offset = w_used
            else:
                h_offset = h_used
            h_used, w_used = max(h_used, ref.shape[-2] + h_offset), max(w_used, ref.shape[-1] + w_offset)
            ref_img, ref_ids = self._patchify(ref, 1, h_offset, w_offset)
            img, img_ids = torch.cat([img, ref_img], 1), torch.cat([img_ids, ref_ids], 1)
        txt_ids = torch.zeros(b, context.shape[1], 3, device=x.device, dtype=img_ids.dtype)
        out = self.forward_orig(
            img, img_ids, context, txt_ids, timestep, y, guidance, control, transformer_options,
            attn_mask=kwargs.get("attention_mask"),
        )
        out = out[:, :img_tokens]
        hp, wp = x.shape[-2] // ps, x.shape[-1] // ps
        out = out.reshape(b, hp, wp, c, ps, ps).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hp * ps, wp * ps)
        return out[:, :, :h, :w]

    # comfy/ldm/flux/model.py:92-211
    def forward_orig(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, control=None, transformer_options={}, attn_mask=None):
        if self.protocol.flux_copies_options:  # v0.30.0 comfy/ldm/flux/model.py:162
            transformer_options = transformer_options.copy()
        reports = self.protocol.reports_block_positions
        if y is None:
            y = torch.zeros((img.shape[0], self.params.vec_in_dim), device=img.device, dtype=img.dtype)
        patches_replace = transformer_options.get("patches_replace", {})
        img = self.img_in(img)
        vec = self.time_in(timestep_embedding(timesteps, 256, time_factor=1000.0).to(img.dtype))
        if self.params.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256, time_factor=1000.0).to(img.dtype))
        vec = vec + self.vector_in(y[:, : self.params.vec_in_dim])
        txt = self.txt_in(txt)
        ids = torch.cat((txt_ids, img_ids), dim=1)
        pe = rope_angles(ids[0], self.params.hidden_size // self.params.num_heads, self.params.theta)

        blocks_replace = patches_replace.get("dit", {})
        if reports:  # v0.30.0 comfy/ldm/flux/model.py:217-220
            transformer_options["total_blocks"] = len(self.double_blocks)
            transformer_options["block_type"] = "double"
        for i, block in enumerate(self.double_blocks):
            if reports:
                transformer_options["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["img"], out["txt"] = block(
                        img=args["img"], txt=args["txt"], vec=args["vec"], pe=args["pe"],
                        attn_mask=args.get("attn_mask"), transformer_options=args.get("transformer_options"),
                    )
                    return out

                out = blocks_replace[("double_block", i)](
                    {"img": img, "txt": txt, "vec": vec, "pe": pe, "attn_mask": attn_mask,
                     "transformer_options": transformer_options},
                    {"original_block": block_wrap},
                )
                txt = out["txt"]
                img = out["img"]
            else:
                img, txt = block(img=img, txt=txt, vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=transformer_options)
            if control is not None:  # ControlNet
                control_i = control.get("input")
                if i < len(control_i):
                    add = control_i[i]
                    if add is not None:
                        img[:, : add.shape[1]] += add

        img = _fp16_guard(img)  # comfy/ldm/flux/model.py:175-176, outside the block patches
        img = torch.cat((txt, img), 1)

        if reports:  # v0.30.0 comfy/ldm/flux/model.py:272-276
            transformer_options["total_blocks"] = len(self.single_blocks)
            transformer_options["block_type"] = "single"
            transformer_options["img_slice"] = [txt.shape[1], img.shape[1]]
        for i, block in enumerate(self.single_blocks):
            if reports:
                transformer_options["block_index"] = i
            if ("single_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["img"] = block(
                        args["img"], vec=args["vec"], pe=args["pe"], attn_mask=args.get("attn_mask"),
                        transformer_options=args.get("transformer_options"),
                    )
                    return out

                out = blocks_replace[("single_block", i)](
                    {"img": img, "vec": vec, "pe": pe, "attn_mask": attn_mask, "transformer_options": transformer_options},
                    {"original_block": block_wrap},
                )
                img = out["img"]
            else:
                img = block(img, vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=transformer_options)
            if control is not None:  # ControlNet
                control_o = control.get("output")
                if i < len(control_o):
                    add = control_o[i]
                    if add is not None:
                        img[:, txt.shape[1] : txt.shape[1] + add.shape[1], ...] += add

        img = img[:, txt.shape[1] :, ...]
        return self.final_layer(img, vec)
