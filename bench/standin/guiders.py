"""A guider that combines more predictions than its post-CFG functions see.

comfy_extras/nodes_custom_sampler.py ``Guider_DualCFG.predict_noise`` (v0.33.0 :858-875, style "regular"):
the middle prompt is guided against the negative through ``cfg_function``, so the post-CFG functions are
handed those two, and the positive prompt's difference from the middle one is added after them.
"""

from __future__ import annotations

import torch

from .patcher import ModelPatcher
from .sampling import CFGGuider, Cond, calc_cond_batch, cfg_function, flow_sigmas


class DualCFGGuider(CFGGuider):
    def __init__(self, patcher: ModelPatcher, positive: Cond, middle: Cond, negative: Cond, cfg_conds: float,
                 cfg_cond2_negative: float) -> None:
        super().__init__(patcher, positive, negative, cfg_cond2_negative)
        self.middle, self.cfg_conds = middle, cfg_conds

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                      seed: int | None = None) -> torch.Tensor:
        model = self.model_patcher.model
        negative, middle, positive = calc_cond_batch(model, [self.negative, self.middle, self.positive], x, sigma,
                                                     model_options, self.separate_conds)
        guided = cfg_function(model, middle, negative, self.cfg, x, sigma, model_options, self.middle, self.negative)
        return guided + (positive - middle) * self.cfg_conds


@torch.no_grad()
def sample_dual_cfg(patcher: ModelPatcher, noise: torch.Tensor, positive: Cond, middle: Cond, negative: Cond, *,
                    cfg_conds: float, cfg_cond2_negative: float, steps: int, sampler: str = "euler") -> torch.Tensor:
    """SamplerCustomAdvanced with DualCFGGuider, from an empty latent on the model's own schedule."""
    sigmas = flow_sigmas(steps, patcher.model.model_sampling.shift)
    guider = DualCFGGuider(patcher, positive, middle, negative, cfg_conds, cfg_cond2_negative)
    return guider.sample(noise, torch.zeros_like(noise), sampler, sigmas)
