"""How the sampler carries the model's predictions into its next latent: measured, not assumed.

A forecast's miss changes the image only through the sampler's update. The tolerance was settled
on Euler steps with classifier-free guidance, which move the latent by the step's share of the
guided prediction ``u + s (c - u)`` (u, c: the unconditional and conditional denoised predictions,
s: the cfg scale). CFG++ samplers (euler_cfg_pp, dpmpp_2m_cfg_pp, ...) instead put the guided
prediction into the next latent at nearly full weight and take only the noise from the
unconditional one, so the guidance difference ``c - u``, and with it whatever part of a forecast's
miss differs between the cond and uncond streams, reaches the next latent many times more strongly
than an Euler step of the same size would carry it. That is what turned a 10% miss into another
image on CFG++ runs that looked fine in the log.

Every sampler ComfyUI ships moves one model evaluation's latent ``x`` to the next as a linear
combination of ``x``, ``u`` and ``c`` (multistep samplers add earlier predictions, which lie close
to these; ancestral ones add fresh noise). So the node fits ``x' ~ a x + b u + g c`` by least squares
over a fixed sample of the latent's values, once the next evaluation shows ``x'``, and reads two
numbers from it:

* ``guidance_gain = g / (s (b + g))``: how much more strongly the sampler weighs the guidance
  difference, against the common part of both predictions, than an Euler step does. An Euler step
  ``x' = r x + (1 - r)(u + s (c - u))`` gives exactly 1 whatever its size and scale; euler_cfg_pp
  on a flow model gives ``(1 - sigma') sigma / (sigma - sigma')``, 7-15 in the middle of a 30-step run.
* ``unexplained``: the share of the step (what ``x`` alone does not account for in ``x'``) that the
  predictions do not account for either: about 0 for deterministic samplers, most of the step for
  samplers that inject fresh noise.

Samplers that evaluate the model twice per step (heun, dpmpp_2s) or reuse the previous prediction
(dpmpp_2m) build ``x'`` from the evaluation before the last one too; where the last evaluation alone
leaves more than ``EXPLAINED`` of the step unexplained, the fit takes both. A gain is only read from a
fit that explains the step: what fresh noise moves cannot be apportioned to the predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

# Latent values the fit reads: six coefficients are pinned down by far fewer. The samples of the two
# evaluations kept (latent, uncond, cond: six float32 samples, 1.5 MB whatever the latent) rest in host
# memory, where the fit runs: CUDA's least squares has no pivoting, and the two evaluations of one step
# hold latents that are combinations of each other.
SAMPLE_VALUES = 2**16
# Below this share of the guidance difference in the predictions (|c - u| / |u|), without a positive
# scale, or with u at zero (ComfyUI's cfg-1 shortcut skips the uncond call and hands the post-CFG
# functions zeros), the guidance gain is not measured: the fit could not tell the predictions apart.
MIN_GUIDANCE = 1e-3
# A fit that leaves at most this share of the step unexplained describes the sampler; the noise of
# ancestral and SDE samplers leaves 0.2-1.0 of it, deterministic ones below 0.05.
EXPLAINED = 0.1
# Measurements are kept to this many significant digits: the solver's last bits depend on how memory
# happens to be aligned, and the same inputs must weigh the gate the same way on every run.
DIGITS = 6


@dataclass(frozen=True)
class SamplerStep:
    """What one fitted step says (None where it could not be measured), and the sigma of the
    evaluation whose latent completed it."""

    guidance_gain: float | None
    unexplained: float | None
    sigma: float = math.inf


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the guided model, as flat samples of the latent's values. ``guided``: the two
    predictions differ enough for the fit to weigh them apart."""

    x: torch.Tensor
    uncond: torch.Tensor | None
    cond: torch.Tensor
    scale: float
    guided: bool

    @classmethod
    def of(cls, x: torch.Tensor, uncond: torch.Tensor | None, cond: torch.Tensor, scale: float) -> Evaluation:
        guided = False
        if uncond is not None and scale > 0.0:
            size = float(uncond.norm())
            guided = size > 0.0 and float((cond - uncond).norm()) > MIN_GUIDANCE * size
        return cls(x, uncond if guided else None, cond, scale, guided)

    def columns(self) -> list[torch.Tensor]:
        return [self.x, self.uncond, self.cond] if self.guided else [self.x, self.cond]


class SamplerResponse:
    """Fits each sampler step from the last evaluations' latents and predictions to the next latent."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._index: torch.Tensor | None = None
        self._numel: int | None = None
        self._history: list[Evaluation] = []  # the last two evaluations, newest first
        self.steps: list[SamplerStep] = []

    def guidance_gain(self, sigma: float) -> float | None:
        """The guidance gain measured last before the sampler reached ``sigma`` (None: none measured yet).
        Only steps completed at a higher sigma count, so every call of one step (cond, uncond, a
        skip-layer call made after CFG) is weighed alike, whatever order the post-CFG functions run in."""
        return next((s.guidance_gain for s in reversed(self.steps) if s.guidance_gain is not None and s.sigma > sigma),
                    None)

    @torch.no_grad()
    def observe(self, x: torch.Tensor, uncond: torch.Tensor | None, cond: torch.Tensor, scale: float,
                sigma: float) -> SamplerStep | None:
        """One evaluation of the guided model at ``sigma``: the latent it saw, its denoised predictions and
        the cfg scale. Returns the step it completes (from the evaluations before to this latent), if any."""
        numel = x.numel()
        if numel != self._numel:  # a new run shape: a new sample, and nothing to fit across
            self._resample(numel)
        if numel == 0:
            return None
        if self._index is not None and self._index.device != x.device:
            self._index = self._index.to(x.device)  # sample where the tensors are, move only the sample
        current = Evaluation.of(self._sampled(x), None if uncond is None else self._sampled(uncond),
                                self._sampled(cond), float(scale))
        history, self._history = self._history, [current, *self._history[:1]]
        if not history:
            return None
        step = replace(fit_step(history, current.x), sigma=float(sigma))
        self.steps.append(step)
        return step

    def _resample(self, numel: int) -> None:
        self._history = []
        self._numel = numel
        kept = min(numel, SAMPLE_VALUES)
        generator = torch.Generator().manual_seed(self.seed)
        self._index = None if kept == numel else torch.randperm(numel, generator=generator)[:kept]

    def _sampled(self, t: torch.Tensor) -> torch.Tensor:
        flat = t.reshape(-1)
        return (flat if self._index is None else flat[self._index]).to("cpu", torch.float32, copy=True)

    def reset(self) -> None:
        self._history = []
        self.steps.clear()


def fit_step(evaluations: list[Evaluation], following: torch.Tensor) -> SamplerStep:
    """Least squares of ``following`` on the newest evaluation's latent and predictions, and on the one
    before as well where the newest alone leaves the step unexplained (``evaluations``: newest first)."""
    newest = evaluations[0]
    fits = [_fit(newest.columns(), following)]
    if fits[0][1] is None or fits[0][1] > EXPLAINED:
        fits += [_fit(newest.columns() + older.columns(), following) for older in evaluations[1:]]
    coefficients, unexplained = min(fits, key=lambda fit: math.inf if fit[1] is None else fit[1])
    if coefficients is None or not newest.guided or unexplained is None or unexplained > EXPLAINED:
        return SamplerStep(None, unexplained)
    common = float(coefficients[1] + coefficients[2])
    gain = float(coefficients[2]) / (newest.scale * common) if common != 0 else math.inf
    return SamplerStep(_rounded(abs(gain)) if math.isfinite(gain) else None, unexplained)


def _rounded(value: float) -> float:
    return float(f"{value:.{DIGITS}g}")


def _fit(columns: list[torch.Tensor], following: torch.Tensor) -> tuple[torch.Tensor | None, float | None]:
    """Coefficients of ``following`` on ``columns`` (the first being the latent), and the share of what the
    latent alone leaves of ``following`` that the columns together leave unexplained. (Measured against
    the latent's own fit, not against the fitted latent term: two evaluations of one step hold latents that
    are combinations of each other, which makes single coefficients arbitrary while the fit stays exact.)"""
    design = torch.stack(columns, 1).double()
    target = following.double().unsqueeze(1)
    coefficients = torch.linalg.lstsq(design, target).solution
    latent_only = torch.linalg.lstsq(design[:, :1], target).solution
    if not (bool(torch.isfinite(coefficients).all()) and bool(torch.isfinite(latent_only).all())):
        return None, None
    moved = float((target - design[:, :1] @ latent_only).norm())
    residual = float((target - design @ coefficients).norm())
    return coefficients.squeeze(1), (_rounded(residual / moved) if moved > 0 else None)
