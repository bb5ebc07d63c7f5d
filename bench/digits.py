"""The benchmark's data: scikit-learn's handwritten digits as image and video latents.

The 8x8 digits (shipped inside scikit-learn, no download) are upsampled to 16x16 and
folded 2x2 into 4 channels, giving latents of shape [4, 8, 8]; the Wan-layout model sees
three frames of the digit sliding one pixel right per frame. A class is "prompted"
through a fixed random token table standing in for a text encoder; the all-zero prompt
is the unconditional one used by classifier-free guidance.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CLASSES = 10
TEXT_TOKENS = 6
TEXT_DIM = 32
POOLED_DIM = 16
FRAMES = 3
PROMPT_SEED = 1234


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as [N, 1, 16, 16] images in [-1, 1], with their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    return images * 2 - 1, torch.tensor(digits.target, dtype=torch.long)


def to_video(images: torch.Tensor) -> torch.Tensor:
    """[N, 1, 16, 16] -> [N, 1, FRAMES, 16, 16]: the digit slides one pixel right per frame."""
    frames = [F.pad(images, (k, 0, 0, 0), value=-1.0)[..., :16] for k in range(FRAMES)]
    return torch.stack(frames, dim=2)


def encode(pixels: torch.Tensor) -> torch.Tensor:
    """Fold 2x2 pixel blocks into channels: [..., 1, 16, 16] -> [..., 4, 8, 8] (per frame for video)."""
    if pixels.ndim == 5:
        return torch.stack([F.pixel_unshuffle(pixels[:, :, t], 2) for t in range(pixels.shape[2])], dim=2)
    return F.pixel_unshuffle(pixels, 2)


def decode(latents: torch.Tensor) -> torch.Tensor:
    if latents.ndim == 5:
        return torch.stack([F.pixel_shuffle(latents[:, :, t], 2) for t in range(latents.shape[2])], dim=2)
    return F.pixel_shuffle(latents, 2)


class Prompts:
    """Per-class context tokens and pooled vector; index CLASSES is the empty (unconditional) prompt."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(PROMPT_SEED)
        self.tokens = torch.cat([torch.randn(CLASSES, TEXT_TOKENS, TEXT_DIM, generator=g), torch.zeros(1, TEXT_TOKENS, TEXT_DIM)])
        self.pooled = torch.cat([torch.randn(CLASSES, POOLED_DIM, generator=g), torch.zeros(1, POOLED_DIM)])

    def inputs(self, labels: torch.Tensor, family: str) -> dict:
        inputs = {"context": self.tokens[labels]}
        if family == "flux":
            inputs["y"] = self.pooled[labels]
        return inputs


class NearestMeanClassifier:
    """Labels an image by the closest class-mean training image: a fixed judge of whether samples show their digit."""

    def __init__(self) -> None:
        images, labels = digit_images()
        flat = images.flatten(1)
        self.means = torch.stack([flat[labels == c].mean(0) for c in range(CLASSES)])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted classes of [N, 1, 16, 16] images (video: of their first frame)."""
        if images.ndim == 5:
            images = images[:, :, 0]
        return torch.cdist(images.flatten(1).float(), self.means).argmin(dim=1)
