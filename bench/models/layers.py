"""Building blocks shared by the tiny Flux and Wan models: embeddings, RoPE, attention.

Written for this project; only the tensor layouts follow ComfyUI (tokens ``[B, L, D]``,
heads split from the hidden axis), so block patches see the same shapes as in ComfyUI.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0, time_factor: float = 1.0) -> torch.Tensor:
    """Sinusoidal embedding of a batch of (possibly fractional) timesteps.

    Flux feeds sigma in [0, 1] and scales it by ``time_factor`` 1000 here (as
    comfy/ldm/flux/layers.py does); Wan receives timesteps already scaled by 1000.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = time_factor * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_pairs_per_axis(head_dim: int, axes: int) -> list[int]:
    """How many of a head's channel pairs each position axis rotates: shared out evenly, the first axes
    taking one more when they do not divide. (ComfyUI's ``EmbedND`` takes these times 2 as ``axes_dim``.)"""
    pairs = head_dim // 2
    return [pairs // axes + (1 if i < pairs % axes else 0) for i in range(axes)]


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles ``[L, head_dim // 2]`` for token positions ``[L, axes]``; axes share the pairs."""
    angles = []
    for axis, count in enumerate(rope_pairs_per_axis(head_dim, positions.shape[-1])):
        freqs = theta ** (-torch.arange(count, dtype=torch.float32, device=positions.device) / max(count, 1))
        angles.append(positions[:, axis, None].float() * freqs[None])
    return torch.cat(angles, dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` ``[B, H, L, Dh]`` by ``angles`` ``[L, Dh // 2]``."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = torch.cos(angles), torch.sin(angles)
    real = pairs[..., 0] * cos - pairs[..., 1] * sin
    imag = pairs[..., 0] * sin + pairs[..., 1] * cos
    return torch.stack([real, imag], dim=-1).flatten(-2).to(x.dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, angles: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention on ``[B, L, D]`` tokens, RoPE on queries and keys when ``angles`` is given;
    ``mask`` is an additive bias broadcast to ``[B, heads, Lq, Lk]`` (ComfyUI's float masks)."""
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    if angles is not None:
        q, k = apply_rope(q, angles), apply_rope(k, angles)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(q.dtype))
    return out.transpose(1, 2).flatten(2)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden)
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)
