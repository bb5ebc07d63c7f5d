"""How far a call's forecasts move the sampler's guided prediction: the gate's measure of a miss.

A sampler never sees one stream's output on its own. Under classifier-free guidance it steps with
``u + s (c - u)`` (u, c: the uncond and cond predictions, s: the cfg scale), so a forecast that misses
by ``d_u`` and ``d_c`` moves the step by ``w_u d_u + w_c d_c`` per unit of an Euler step (``w_u = 1 - s``,
``w_c = s`` for Euler; CFG++ samplers weigh the cond more, core/sampler_response.py measures both).
Where the two streams miss alike the terms cancel down to one miss; where they miss differently the
difference is amplified by the scale: at cfg 8 the guided miss of the last block's forecast was 2-4x
either stream's on the benchmark's models, up to 6x on single images.

Writing the guided miss as ``k d_c + w_u (d_u - d_c)`` (``k = w_u + w_c``, 1 for Euler) bounds it from
one stream's view by ``|k| m + |w_other| D``: ``m`` the stream's own relative miss, ``D`` the relative
miss of the difference between the streams' forecasts. Both are learned from block 0's error, as the
stream's own miss always was (core/calibration.py), and neither depends on the sampler's weights, which
change from step to step under CFG++: the weights of the coming step are applied at the call.

The bound holds for the step only when both streams forecast it, which a batched call always does. A
sampler that runs cond and uncond as separate calls (partial loading, MiniMax H3, multi-GPU work units,
whose two calls run at once on two threads) decides each call on its own, and either stream alone may
forecast a step: then the step moves by ``|w| m`` of that stream, and by the sum of both where both
forecast. So each such call is held to half the tolerance on its own weighed miss (``SEPARATE_SHARE``),
whatever order the calls come in.

Measurements read a fixed random sample of the last block's tokens (core/subset.py): the forecasts of
both streams at those tokens are all the difference needs, per image of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COND, UNCOND = 0, 1  # ComfyUI's ``cond_or_uncond``: the index of the entry in the guider's conds
# How many calls of a guidance pair made apart share the tolerance of one step (module docstring).
SEPARATE_SHARE = 2.0


@dataclass(frozen=True)
class Weights:
    """The step's weights on the uncond and cond predictions per unit of an Euler step's share."""

    uncond: float = 0.0
    cond: float = 1.0

    @classmethod
    def for_scale(cls, scale: float | None) -> Weights:
        """An Euler step's weights at cfg ``scale`` (one stream: no scale, or 1)."""
        if scale is None or scale == 1.0:
            return cls()
        return cls(1.0 - scale, scale)

    @property
    def common(self) -> float:
        """What a miss both streams share moves the step by."""
        return self.uncond + self.cond

    def own(self, role: int | None) -> float:
        """The weight of a stream's own prediction: the uncond's for the uncond, the cond's for the cond and
        for any further prediction a guider adds (another cond of a guider with more than two)."""
        return self.uncond if role == UNCOND else self.cond

    def other(self, role: int | None) -> float:
        """The weight of the other stream of the guidance pair."""
        return self.cond if role == UNCOND else self.uncond


def bound(weights: Weights, role: int | None, own: float, differential: float | None) -> float:
    """The guided miss from one stream's view (module docstring); a run without a guidance pair has no
    difference to weigh, and its one stream moves the step by its common weight."""
    if differential is None:
        return abs(weights.common) * own
    return abs(weights.common) * own + abs(weights.other(role)) * differential


@dataclass
class RowMiss:
    """One stream's forecast against its computed output at the sampled tokens, per image."""

    difference: torch.Tensor  # forecast - actual, float32 [images, tokens, ...]
    size: torch.Tensor  # sum |actual| per image, float32 [images]

    @property
    def relative(self) -> list[float]:
        return _ratios(self.difference.flatten(1).abs().sum(1), self.size)


def differential(first: RowMiss, second: RowMiss) -> list[float] | None:
    """Per image, how far the difference between two streams' forecasts missed the difference between
    their outputs, relative to the outputs' mean size (None when their images do not line up)."""
    if first.difference.shape != second.difference.shape:
        return None
    missed = (first.difference - second.difference).flatten(1).abs().sum(1)
    return _ratios(missed, (first.size + second.size) / 2)


def guided(weights: Weights, misses: dict[int, RowMiss]) -> list[float] | None:
    """Per image, the measured miss of the guided combination of the pair (None without both streams)."""
    cond, uncond = misses.get(COND), misses.get(UNCOND)
    if cond is None or uncond is None or cond.difference.shape != uncond.difference.shape:
        return None
    combined = (weights.uncond * uncond.difference + weights.cond * cond.difference).flatten(1).abs().sum(1)
    return _ratios(combined, (cond.size + uncond.size) / 2)


def _ratios(missed: torch.Tensor, size: torch.Tensor) -> list[float]:
    return [m / s if s > 0 and math.isfinite(m / s) else math.inf for m, s in zip(missed.tolist(), size.tolist())]
