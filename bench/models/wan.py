"""A tiny Wan-layout video transformer whose block loop follows ComfyUI's ``WanModel`` exactly.

Mirrors comfy/ldm/wan/model.py at ComfyUI v0.3.64 (a125cd84), and with ``protocol=CURRENT``
the block loop of v0.30.0 (b1693ecb, see ``run_blocks``):
* ``forward`` runs ``_forward`` through the DIFFUSION_MODEL wrappers (:613-618);
* ``_forward`` pads to the (1, 2, 2) patch and crops the result (:620-634);
* ``forward_orig`` (:509-589): Conv3d patch embedding, time embedding ``e`` and its six-way
  projection ``e0``, text embedding, then every block called through ``patches_replace["dit"]``
  under ``("double_block", i)`` with args ``img, txt, vec, pe, transformer_options``,
  reading back ``out["img"]``; after the last block ``head(x, e)`` and unpatchify.
* ``VaceWanModel`` (:661-775) adds ``x += c_skip * vace_strength`` after mapped blocks,
  outside the block hook and in place.
The attention block updates out-of-place, as ``WanAttentionBlock.forward`` (:211-246) does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..standin.patcher import WrappersMP, WrapperExecutor, get_all_wrappers
from ..standin.protocol import LEGACY, Protocol
from .layers import attention, layer_norm, modulate, rope_angles, timestep_embedding

PATCH = (1, 2, 2)


@dataclass(frozen=True)
class WanParams:
    in_dim: int = 4
    out_dim: int = 4
    dim: int = 64
    ffn_dim: int = 128
    freq_dim: int = 64
    text_dim: int = 32
    num_heads: int = 4
    num_layers: int = 4


class WanAttentionBlock(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.modulation = nn.Parameter(torch.randn(1, 1, 6, dim) / dim**0.5)
        self.self_qkv = nn.Linear(dim, 3 * dim)
        self.self_o = nn.Linear(dim, dim)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_o = nn.Linear(dim, dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).unbind(2)
        y = attention(*self.self_qkv(modulate(layer_norm(x), shift1, scale1)).chunk(3, dim=-1), self.heads, freqs)
        x = x + self.self_o(y) * gate1
        k, v = self.cross_kv(context).chunk(2, dim=-1)
        x = x + self.cross_o(attention(self.cross_q(self.norm3(x)), k, v, self.heads))
        return x + self.ffn(modulate(layer_norm(x), shift2, scale2)) * gate2


class Head(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(1, 1, 2, dim) / dim**0.5)
        self.head = nn.Linear(dim, out)

    def forward(self, x, e):
        shift, scale = (self.modulation + e[:, :, None]).unbind(2)
        return self.head(modulate(layer_norm(x), shift, scale))


class WanModel(nn.Module):
    def __init__(self, params: WanParams = WanParams(), protocol: Protocol = LEGACY) -> None:
        super().__init__()
        self.params = params
        self.protocol = protocol
        p = params
        self.dim, self.freq_dim = p.dim, p.freq_dim
        self.patch_size = PATCH  # comfy/ldm/wan/model.py:459
        # float32 whatever the model's dtype, as ComfyUI builds it (comfy/ldm/wan/model.py:498-500 at v0.33.0)
        self.patch_embedding = nn.Conv3d(p.in_dim, p.dim, kernel_size=PATCH, stride=PATCH, dtype=torch.float32)
        self.text_embedding = nn.Sequential(nn.Linear(p.text_dim, p.dim), nn.GELU(approximate="tanh"), nn.Linear(p.dim, p.dim))
        self.time_embedding = nn.Sequential(nn.Linear(p.freq_dim, p.dim), nn.SiLU(), nn.Linear(p.dim, p.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(p.dim, 6 * p.dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(p.dim, p.ffn_dim, p.num_heads) for _ in range(p.num_layers))
        self.head = Head(p.dim, p.out_dim * PATCH[0] * PATCH[1] * PATCH[2])

    # comfy/ldm/wan/model.py:613-618
    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
        return WrapperExecutor.new_class_executor(
            self._forward, self, get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)

    # comfy/ldm/wan/model.py:620-634
    def _forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
        t, h, w = x.shape[-3:]
        pads = (0, (-w) % PATCH[2], 0, (-h) % PATCH[1], 0, (-t) % PATCH[0])
        if any(pads):  # comfy/ldm/common_dit.py pad_to_patch_size
            x = F.pad(x, pads, mode="replicate")
        grid = (x.shape[2] // PATCH[0], x.shape[3] // PATCH[1], x.shape[4] // PATCH[2])
        positions = torch.stack(
            torch.meshgrid(*(torch.arange(n, device=x.device) for n in grid), indexing="ij"), dim=-1
        ).reshape(-1, 3)
        freqs = rope_angles(positions, self.dim // self.params.num_heads)
        out = self.forward_orig(x, timestep, context, clip_fea=clip_fea, freqs=freqs, transformer_options=transformer_options, **kwargs)
        return out[:, :, :t, :h, :w]

    def embed(self, x, t, context):
        """Patch, time and text embeddings (comfy/ldm/wan/model.py:541-562)."""
        x = self.patch_embedding(x.float()).to(x.dtype)
        grid_sizes = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        e = self.time_embedding(timestep_embedding(t.flatten(), self.freq_dim).to(x.dtype))
        e = e.reshape(t.shape[0], -1, e.shape[-1])
        e0 = self.time_projection(e).unflatten(2, (6, self.dim))
        return x, grid_sizes, e, e0, self.text_embedding(context)

    def run_blocks(self, x, x_input, e, e0, freqs, context, transformer_options):
        """Every block in order, as the loop of v0.3.64 comfy/ldm/wan/model.py:566-582 or, with the
        2026 protocol, of v0.30.0 :594-615: block positions written into transformer_options before
        each block, and ``patches["double_block"]`` hooks run after every block, skipped ones too."""
        protocol = self.protocol
        if protocol.reports_block_positions:
            transformer_options["total_blocks"] = len(self.blocks)
            transformer_options["block_type"] = "double"
        post_block = transformer_options.get("patches", {}).get("double_block", []) if protocol.wan_post_block_patches else []
        for i, block in enumerate(self.blocks):
            if protocol.reports_block_positions:
                transformer_options["block_index"] = i
            x = self.run_block(i, block, x, e0, freqs, context, transformer_options)
            for patch in post_block:
                x = patch({"img": x, "x": x_input, "vec": e, "block_index": i, "img_offset": 0,
                           "transformer_options": transformer_options})["img"]
            yield i, x

    def run_block(self, i, block, x, e0, freqs, context, transformer_options):
        """Block ``i`` through its ``dit`` patch when one is set (comfy/ldm/wan/model.py:568-580)."""
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        context_img_len = None
        if ("double_block", i) in blocks_replace:
            def block_wrap(args):
                out = {}
                out["img"] = block(
                    args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"],
                    context_img_len=context_img_len, transformer_options=args["transformer_options"],
                )
                return out

            out = blocks_replace[("double_block", i)](
                {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": transformer_options},
                {"original_block": block_wrap},
            )
            return out["img"]
        return block(x, e=e0, freqs=freqs, context=context, context_img_len=context_img_len, transformer_options=transformer_options)

    # comfy/ldm/wan/model.py:509-589
    def forward_orig(self, x, t, context, clip_fea=None, freqs=None, transformer_options={}, **kwargs):
        x_input = x
        x, grid_sizes, e, e0, context = self.embed(x, t, context)
        for _, x in self.run_blocks(x, x_input, e, e0, freqs, context, transformer_options):
            pass
        x = self.head(x, e)
        return self.unpatchify(x, grid_sizes)

    def unpatchify(self, x, grid_sizes):
        b, (t, h, w), c = x.shape[0], grid_sizes, self.params.out_dim
        x = x.reshape(b, t, h, w, c, *PATCH).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, c, t * PATCH[0], h * PATCH[1], w * PATCH[2])


class VaceBlock(WanAttentionBlock):
    """A VACE control block: reads the control stream ``c``, emits a skip added to the main stream."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, first: bool) -> None:
        super().__init__(dim, ffn_dim, heads)
        self.before_proj = nn.Linear(dim, dim) if first else None
        self.after_proj = nn.Linear(dim, dim)

    def forward(self, c, x, e, freqs, context, context_img_len=257, transformer_options={}):
        if self.before_proj is not None:
            c = self.before_proj(c) + x
        c = super().forward(c, e, freqs, context, context_img_len, transformer_options)
        return self.after_proj(c), c


class VaceWanModel(WanModel):
    def __init__(self, params: WanParams = WanParams(), vace_layers: tuple[int, ...] = (0, 2), vace_in_dim: int = 8,
                 protocol: Protocol = LEGACY) -> None:
        super().__init__(params, protocol)
        self.vace_layers_mapping = {layer: n for n, layer in enumerate(vace_layers)}
        self.vace_patch_embedding = nn.Conv3d(vace_in_dim, params.dim, kernel_size=PATCH, stride=PATCH)
        self.vace_blocks = nn.ModuleList(
            VaceBlock(params.dim, params.ffn_dim, params.num_heads, first=n == 0) for n in range(len(vace_layers))
        )

    # comfy/ldm/wan/model.py:710-775 (v0.3.64), :776-856 (v0.30.0: post-block patches before the VACE add)
    def forward_orig(self, x, t, context, vace_context, vace_strength, clip_fea=None, freqs=None, transformer_options={}, **kwargs):
        x_input = x
        x, grid_sizes, e, e0, context = self.embed(x, t, context)
        # One control video [B, C, T, H, W] (ComfyUI stacks several on a leading axis).
        c = [self.vace_patch_embedding(vace_context.float()).to(vace_context.dtype).flatten(2).transpose(1, 2)]
        x_orig = x
        for i, x in self.run_blocks(x, x_input, e, e0, freqs, context, transformer_options):
            ii = self.vace_layers_mapping.get(i, None)
            if ii is not None:
                for iii in range(len(c)):
                    c_skip, c[iii] = self.vace_blocks[ii](c[iii], x=x_orig, e=e0, freqs=freqs, context=context, transformer_options=transformer_options)
                    x += c_skip * vace_strength[iii]
        x = self.head(x, e)
        return self.unpatchify(x, grid_sizes)
