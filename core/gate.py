"""The confidence gate: trust the last-block forecast only when block 0 was forecast well.

Block 0 runs on every call, so its output can be compared with what the same Taylor
machinery predicted for it. A small relative error says the features are moving
smoothly right now, and the much cheaper forecast of the last block can stand in for
blocks 1..L-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


@torch.no_grad()
def relative_l1_by_stream(predicted: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> tuple[float, list[float]]:
    """``mean|pred - actual| / mean|actual|`` over all the given pairs together, and for each pair alone.

    The pairs are the per-stream slices of one model call, so the first number is the same one
    global tensor would give. Any ratio is ``inf`` when its actual output is all zeros or anything
    is non-finite, so such a call is never trusted. One device sync for all of them.
    """
    if len(predicted) != len(actual) or not actual:
        raise ValueError("relative_l1 needs one prediction per actual tensor.")
    sums = []
    for pred, act in zip(predicted, actual):
        if pred.shape != act.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match output shape {tuple(act.shape)}.")
        sums.append(((pred.float() - act.float()).abs().sum(), act.float().abs().sum()))
    return relative_l1_of_sums(sums)


def relative_l1_of_sums(sums: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, list[float]]:
    """The ratios of ``relative_l1_by_stream`` from each pair's float32 ``sum|pred - actual|`` and
    ``sum|actual|`` (a caller may add them up slice by slice, core/taylor.py ``miss``)."""
    # float32, not float64: Apple's MPS backend has no float64.
    error = torch.zeros((), dtype=torch.float32, device=sums[0][0].device)
    scale = torch.zeros((), dtype=torch.float32, device=sums[0][0].device)
    parts = []
    for missed, size in sums:
        parts += [missed, size]
        error += missed
        scale += size
    values = torch.stack([error / scale, *parts]).tolist()
    by_stream = [_trusted(e / a) if a else math.inf for e, a in zip(values[1::2], values[2::2])]
    return _trusted(values[0]), by_stream


def relative_l1(predicted: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> float:
    """``mean|pred - actual| / mean|actual|`` over all the given pairs together (see relative_l1_by_stream)."""
    return relative_l1_by_stream(predicted, actual)[0]


def _trusted(ratio: float) -> float:
    return ratio if ratio == ratio and ratio != math.inf else math.inf


class ConfidenceGate:
    """Accepts a forecast when the block-0 error is below ``threshold``; 0 never accepts."""

    def __init__(self, threshold: float) -> None:
        threshold = float(threshold)
        if not threshold >= 0.0 or threshold == float("inf"):
            raise ValueError(f"the gate's tolerance must be a finite number >= 0 (0 turns forecasting off), got {threshold!r}.")
        self.threshold = threshold

    @property
    def can_accept(self) -> bool:
        return self.threshold > 0.0

    def accepts(self, error: float) -> bool:
        return error < self.threshold
