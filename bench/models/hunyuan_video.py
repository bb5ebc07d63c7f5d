"""A tiny HunyuanVideo-layout transformer whose block loop follows ComfyUI's ``HunyuanVideo``.

Mirrors comfy/ldm/hunyuan_video/model.py at ComfyUI v0.30.0 (b1693ecb), with the v0.3.64
(a125cd84) lines in brackets. One class serves HunyuanVideo 1.0 (t2v/i2v), HunyuanImage 2.1
and HunyuanVideo 1.5; they differ in what their state dict holds, e.g. how many
``single_blocks`` (``depth_single_blocks`` is counted from the checkpoint,
comfy/model_detection.py:210-211), so a model without single blocks ends on a double block.
* ``forward`` runs ``_forward`` through the DIFFUSION_MODEL wrappers (:481-486 [:433-438]);
* ``forward_orig`` (:289-457 [:269-431]): the i2v ``ref_latent`` is embedded and put
  *before* the image tokens (:323-329); the integer text mask becomes an additive
  ``attn_mask`` over ``[txt, img]`` (:351-352, :384-390);
* double blocks through ``patches_replace["dit"]`` under ``("double_block", i)`` with args
  ``img, txt, vec, pe, attention_mask, modulation_dims_img, modulation_dims_txt,
  transformer_options`` (the block itself takes ``attn_mask``), reading back ``out["txt"]``
  and ``out["img"]`` (:392-407 [:351-363]); ControlNet ``control["input"][i]`` added in
  place to all image tokens (:409-414);
* ``img = torch.cat((txt, img), 1)`` (:416), then single blocks ``("single_block", i)``
  with ``img, vec, pe, attention_mask, modulation_dims, transformer_options`` reading back
  ``out["img"]`` (:421-432 [:373-384]); ControlNet ``control["output"][i]`` added in place
  to the image slice (:434-439);
* the text tokens and then the reference tokens are cut off and ``final_layer`` runs
  (:441-445). The blocks are Flux's (comfy/ldm/flux/layers.py), reused here.
The i2v "token replace" modulation (``guiding_frame_index``, ``modulation_dims``) is not
mirrored: the tiny model always passes ``None`` there, as t2v does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..standin.patcher import WrappersMP, WrapperExecutor, get_all_wrappers
from .flux import DoubleStreamBlock, LastLayer, SingleStreamBlock
from .layers import MLPEmbedder, rope_angles, timestep_embedding

PATCH = (1, 2, 2)


@dataclass(frozen=True)
class HunyuanVideoParams:
    in_channels: int = 4
    out_channels: int = 4
    hidden_size: int = 64
    num_heads: int = 4
    depth: int = 2
    depth_single_blocks: int = 3  # 0 for a checkpoint with double blocks only
    mlp_ratio: float = 2.0
    context_in_dim: int = 32
    vec_in_dim: int | None = 16  # None: HunyuanImage 2.1 and HunyuanVideo 1.5 have no vector_in


class HunyuanVideo(nn.Module):
    def __init__(self, params: HunyuanVideoParams = HunyuanVideoParams()) -> None:
        super().__init__()
        self.params = params
        p, h = params, params.hidden_size
        self.patch_size = list(PATCH)
        self.hidden_size = h  # comfy/ldm/hunyuan_video/model.py:211
        self.img_in = nn.Conv3d(p.in_channels, h, kernel_size=PATCH, stride=PATCH)
        self.time_in = MLPEmbedder(256, h)
        self.vector_in = MLPEmbedder(p.vec_in_dim, h) if p.vec_in_dim is not None else None
        self.txt_in = nn.Sequential(nn.Linear(p.context_in_dim, h), nn.SiLU(), nn.Linear(h, h))  # TokenRefiner's role
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(h, p.num_heads, p.mlp_ratio) for _ in range(p.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(h, p.num_heads, p.mlp_ratio) for _ in range(p.depth_single_blocks))
        self.final_layer = LastLayer(h, p.out_channels * PATCH[0] * PATCH[1] * PATCH[2])

    def embed_img(self, x):
        return self.img_in(x).flatten(2).transpose(1, 2)

    def img_ids(self, x):
        """(frame, row, col) ids per patch (:459-469)."""
        t, h, w = (n // s for n, s in zip(x.shape[-3:], PATCH))
        grid = torch.meshgrid(*(torch.arange(n, device=x.device) for n in (t, h, w)), indexing="ij")
        return torch.stack(grid, dim=-1).reshape(1, -1, 3).expand(x.shape[0], -1, -1)

    # :481-486
    def forward(self, x, timestep, context, y=None, txt_byt5=None, clip_fea=None, guidance=None, attention_mask=None,
                guiding_frame_index=None, ref_latent=None, disable_time_r=False, control=None, transformer_options={}, **kwargs):
        return WrapperExecutor.new_class_executor(
            self._forward, self, get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timestep, context, y, txt_byt5, clip_fea, guidance, attention_mask, guiding_frame_index, ref_latent,
                  disable_time_r, control, transformer_options, **kwargs)

    # :488-497
    def _forward(self, x, timestep, context, y=None, txt_byt5=None, clip_fea=None, guidance=None, attention_mask=None,
                 guiding_frame_index=None, ref_latent=None, disable_time_r=False, control=None, transformer_options={}, **kwargs):
        img_ids = self.img_ids(x)
        txt_ids = torch.zeros((x.shape[0], context.shape[1], 3), device=x.device, dtype=img_ids.dtype)
        return self.forward_orig(x, img_ids, context, txt_ids, attention_mask, timestep, y, ref_latent=ref_latent,
                                 control=control, transformer_options=transformer_options)

    # :289-457
    def forward_orig(self, img, img_ids, txt, txt_ids, txt_mask, timesteps, y=None, ref_latent=None, control=None,
                     transformer_options={}):
        transformer_options = transformer_options.copy()
        patches_replace = transformer_options.get("patches_replace", {})
        initial_shape = list(img.shape)
        img = self.embed_img(img)
        vec = self.time_in(timestep_embedding(timesteps, 256, time_factor=1.0).to(img.dtype))
        if ref_latent is not None:  # :323-329: i2v reference frames go first
            ref_ids = self.img_ids(ref_latent).clone()
            ref_ids[..., 0] = -1
            ref_ids[..., 2] += initial_shape[-1] // PATCH[-1]
            ref_latent = self.embed_img(ref_latent)
            img = torch.cat([ref_latent, img], dim=-2)
            img_ids = torch.cat([ref_ids, img_ids], dim=-2)
        if self.vector_in is not None and y is not None:
            vec = vec + self.vector_in(y[:, : self.params.vec_in_dim])
        modulation_dims = modulation_dims_txt = None
        if txt_mask is not None and not torch.is_floating_point(txt_mask):
            txt_mask = (txt_mask - 1).to(img.dtype) * torch.finfo(img.dtype).max
        txt = self.txt_in(txt)
        ids = torch.cat((txt_ids, img_ids), dim=1)
        pe = rope_angles(ids[0], self.params.hidden_size // self.params.num_heads, theta=256.0)

        img_len = img.shape[1]
        if txt_mask is not None:  # :384-390
            attn_mask = torch.zeros((txt_mask.shape[0], 1, 1, img_len + txt.shape[1]), dtype=img.dtype, device=img.device)
            attn_mask[:, 0, 0, : txt.shape[1]] = txt_mask
        else:
            attn_mask = None

        blocks_replace = patches_replace.get("dit", {})
        transformer_options["total_blocks"] = len(self.double_blocks)
        transformer_options["block_type"] = "double"
        for i, block in enumerate(self.double_blocks):
            transformer_options["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["img"], out["txt"] = block(img=args["img"], txt=args["txt"], vec=args["vec"], pe=args["pe"],
                                                   attn_mask=args["attention_mask"], transformer_options=args["transformer_options"])
                    return out

                out = blocks_replace[("double_block", i)](
                    {"img": img, "txt": txt, "vec": vec, "pe": pe, "attention_mask": attn_mask,
                     "modulation_dims_img": modulation_dims, "modulation_dims_txt": modulation_dims_txt,
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
                        img += add

        img = torch.cat((txt, img), 1)

        transformer_options["total_blocks"] = len(self.single_blocks)
        transformer_options["block_type"] = "single"
        transformer_options["img_slice"] = [txt.shape[1], img.shape[1]]
        for i, block in enumerate(self.single_blocks):
            transformer_options["block_index"] = i
            if ("single_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["img"] = block(args["img"], vec=args["vec"], pe=args["pe"], attn_mask=args["attention_mask"],
                                       transformer_options=args["transformer_options"])
                    return out

                out = blocks_replace[("single_block", i)](
                    {"img": img, "vec": vec, "pe": pe, "attention_mask": attn_mask, "modulation_dims": modulation_dims,
                     "transformer_options": transformer_options},
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
                        img[:, txt.shape[1] : img_len + txt.shape[1]] += add

        img = img[:, txt.shape[1] : img_len + txt.shape[1]]
        if ref_latent is not None:
            img = img[:, ref_latent.shape[1]:]
        img = self.final_layer(img, vec)
        t, h, w = (n // s for n, s in zip(initial_shape[-3:], PATCH))
        img = img.reshape(initial_shape[0], t, h, w, self.params.out_channels, *PATCH).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return img.reshape(initial_shape[0], self.params.out_channels, *initial_shape[-3:])
