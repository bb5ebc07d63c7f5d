"""Fidelity and cost measures of one sampling result against the uncached one."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def as_frames(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] or [N, C, T, H, W] in [-1, 1] -> [N*T, C, H, W] in [0, 1]."""
    if images.ndim == 5:
        images = images.transpose(1, 2).flatten(0, 1)
    return ((images.float() + 1) / 2).clamp(0, 1)


def psnr(test: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (clamped), over the whole batch."""
    mse = F.mse_loss(as_frames(test), as_frames(reference)).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def per_image_psnr(test: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """``psnr`` of each image of a batch against its reference, in batch order."""
    return [psnr(test[i : i + 1], reference[i : i + 1]) for i in range(test.shape[0])]


def percentile(values, share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``share`` of the values at or below it
    (of 20 images, the 10th percentile is the second worst)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


TAIL = 0.1  # the share of images the low percentile leaves below it
BOUNDS = (35.0, 40.0)  # dB: the images counted under each


def tails(images: list[float]) -> dict:
    """What a batch of per-image PSNRs says about its worst images: the worst, the 10th percentile, the
    median and the mean (dB; infinite where an image came out exactly), and how many fell under each bound."""
    return {"worst": min(images), "p10": percentile(images, TAIL), "median": median(images),
            "mean": sum(images) / len(images), "images": len(images),
            **{f"under_{bound:g}": sum(db < bound for db in images) for bound in BOUNDS}}


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None])[None, None]


def ssim(test: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean structural similarity (Wang et al. 2004) with a 7x7 Gaussian window: the images are 16x16."""
    x, y = as_frames(test), as_frames(reference)
    window = _gaussian_window().to(x.device).expand(x.shape[1], 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=x.shape[1])

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(score.mean())


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def median(values) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
