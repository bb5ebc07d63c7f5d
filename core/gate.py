"""The confidence gate: trust the last-block forecast only when block 0 was forecast well.

Block 0 runs on every call, so its output can be compared with what the same Taylor
machinery predicted for it. A small relative error says the features are moving
smoothly right now, and the much cheaper forecast of the last block can stand in for
blocks 1..L-1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def relative_l1(predicted: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> float:
    """``mean|pred - actual| / mean|actual|`` over all the given pairs together.

    The pairs are the per-stream slices of one model call, so the result is the
    same number one global tensor would give. Returns ``inf`` when the actual
    output is all zeros or anything is non-finite, so such a call is never trusted.
    """
    if len(predicted) != len(actual) or not actual:
        raise ValueError("relative_l1 needs one prediction per actual tensor.")
    # float32, not float64: Apple's MPS backend has no float64.
    error = torch.zeros((), dtype=torch.float32, device=actual[0].device)
    scale = torch.zeros((), dtype=torch.float32, device=actual[0].device)
    for pred, act in zip(predicted, actual):
        if pred.shape != act.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match output shape {tuple(act.shape)}.")
        error += (pred.float() - act.float()).abs().sum()
        scale += act.float().abs().sum()
    ratio = (error / scale).item()
    return ratio if ratio == ratio and ratio != float("inf") else float("inf")


class ConfidenceGate:
    """Accepts a forecast when the block-0 error is below ``threshold``; 0 never accepts."""

    def __init__(self, threshold: float) -> None:
        threshold = float(threshold)
        if not threshold >= 0.0 or threshold == float("inf"):
            raise ValueError(f"threshold must be a finite number >= 0 (0 turns forecasting off), got {threshold!r}.")
        self.threshold = threshold

    @property
    def can_accept(self) -> bool:
        return self.threshold > 0.0

    def accepts(self, error: float) -> bool:
        return error < self.threshold
