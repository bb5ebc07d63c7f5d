"""The model sampling of flow models: comfy/model_sampling.py ``ModelSamplingDiscreteFlow`` (:249-284 at
v0.3.64 a125cd84) with ``time_snr_shift`` (:244-247); the node reads ``percent_to_sigma`` from it."""

from __future__ import annotations


def time_snr_shift(alpha: float, t: float) -> float:
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


class ModelSamplingDiscreteFlow:
    def __init__(self, shift: float = 1.0, multiplier: float = 1000.0) -> None:
        self.shift = shift
        self.multiplier = multiplier

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return time_snr_shift(self.shift, 1.0 - percent)
