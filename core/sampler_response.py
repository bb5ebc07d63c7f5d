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
leaves more than ``EXPLAINED`` of the step unexplained, the fit takes both. Fresh noise (ancestral and
SDE samplers, CFG++ ones among them) is independent of the predictions, so the least-squares
coefficients stay what the sampler gives them: the gain is read from every fit, noisy or not, and only
``unexplained`` tells the noise apart.

Guidance nodes change what the sampler steps with beyond ``u + s (c - u)``: SkipLayerGuidanceDiT adds a
prediction of its own, CFGNorm, CFGZeroStar, Mahiro and APG rescale or recombine the two, PerpNegGuider
and DualCFGGuider combine three. A fit on ``u`` and ``c`` alone would credit the guider's combination to
the sampler (plain euler under PerpNeg read as a sampler with ten times Euler's gain). So where the node
sees what the sampler steps with (``D``: what the guider's ``predict_noise`` returned, or else what the
post-CFG functions handed on), the fit is
``x' ~ a x + b u + d D``, which separates the sampler (``a``, ``b``, ``d``) from the guider (``D``) whatever
the guider does, and a miss reaches ``D`` as plain guidance carries it: the weights on the two predictions
are ``b + d (1 - s)`` and ``d s`` (for ``D = u + s (c - u)`` exactly the ``b`` and ``g`` above).

The gate needs the weights of the step a call is about to feed, not of the one before it: CFG++ gains
change with every step. So each fitted step also keeps its weights on the two predictions per unit of an
Euler step of its size, ``b / (1 - r)`` and ``g / (1 - r)`` with ``r = sigma' / sigma``, and ``weights_at``
extrapolates them to the coming step from the schedule. On a flow model (every family the node supports)
the samplers that step once per evaluation give each coefficient the form ``p (1 - r) + q (1 - sigma')``:
Euler has ``q = 0``, CFG++ Euler ``p = 0`` on the cond prediction and ``p = 1, q = -s`` on the uncond one.
Two fitted steps whose ``(1 - sigma') / (1 - r)`` differ pin ``p`` and ``q`` down exactly.
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
# A fit of the newest evaluation that leaves at most this share of the step unexplained needs no older
# one; the noise of ancestral and SDE samplers leaves 0.2-1.0 of it, deterministic ones below 0.05.
EXPLAINED = 0.1
# Fitted steps that extrapolate the weights to the coming step (SamplerResponse.weights_at).
FITTED_STEPS = 3
# Measurements are kept to this many significant digits: the solver's last bits depend on how memory
# happens to be aligned, and the same inputs must weigh the gate the same way on every run.
DIGITS = 6


@dataclass(frozen=True)
class SamplerStep:
    """What one fitted step says (None where it could not be measured), the sigma of the evaluation whose
    latent completed it, and ``form``, the step's ``(1 - sigma') / (1 - r)`` (the oldest evaluation the fit
    used gives ``r``). ``weights``: its coefficients on the uncond and cond predictions per unit of the
    Euler share ``1 - r`` (an Euler step: ``1 - s`` and ``s``)."""

    guidance_gain: float | None
    unexplained: float | None
    sigma: float = math.inf
    form: float | None = None
    weights: tuple[float, float] | None = None


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the guided model, as flat samples of the latent's values. ``guided``: the two
    predictions differ enough for the fit to weigh them apart."""

    x: torch.Tensor
    uncond: torch.Tensor | None
    cond: torch.Tensor
    scale: float
    guided: bool
    sigma: float = math.inf
    stepped: torch.Tensor | None = None  # what the sampler steps with: the post-CFG functions' denoised

    @classmethod
    def of(cls, x: torch.Tensor, uncond: torch.Tensor | None, cond: torch.Tensor, scale: float,
           sigma: float = math.inf, denoised: torch.Tensor | None = None) -> Evaluation:
        guided = False
        if uncond is not None and scale > 0.0:
            size = float(uncond.norm())
            guided = size > 0.0 and float((cond - uncond).norm()) > MIN_GUIDANCE * size
        return cls(x, uncond if guided else None, cond, scale, guided, float(sigma), denoised)

    def columns(self) -> list[torch.Tensor]:
        prediction = self.cond if self.stepped is None else self.stepped
        return [self.x, self.uncond, prediction] if self.guided else [self.x, prediction]

    def prediction_weights(self, coefficients: torch.Tensor) -> tuple[float, float]:
        """The step's weights on the uncond and cond predictions, from its coefficients on ``columns()``."""
        if not self.guided:
            return 0.0, float(coefficients[1])
        uncond, prediction = float(coefficients[1]), float(coefficients[2])
        if self.stepped is None:
            return uncond, prediction
        return uncond + prediction * (1.0 - self.scale), prediction * self.scale


class SamplerResponse:
    """Fits each sampler step from the last evaluations' latents and predictions to the next latent."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._index: torch.Tensor | None = None
        self._numel: int | None = None
        self._history: list[Evaluation] = []  # the last two evaluations, newest first
        self.steps: list[SamplerStep] = []

    @property
    def scale(self) -> float | None:
        """The cfg scale of the latest evaluation that had an uncond prediction to guide with (None: none had)."""
        return self._history[0].scale if self._history and self._history[0].guided else None

    def guidance_gain(self, sigma: float) -> float | None:
        """The guidance gain measured last before the sampler reached ``sigma`` (None: none measured yet).
        Only steps completed at a higher sigma count, so every call of one step (cond, uncond, a
        skip-layer call made after CFG) is weighed alike, whatever order the post-CFG functions run in."""
        return next((s.guidance_gain for s in reversed(self.steps) if s.guidance_gain is not None and s.sigma > sigma),
                    None)

    def weights_at(self, sigma: float, following: float) -> tuple[float, float] | None:
        """The uncond and cond weights, per unit of an Euler step's share, of the step from ``sigma`` to
        ``following`` that a call at ``sigma`` feeds, extrapolated from the steps completed before it
        (None: none measured yet). Each weight is ``p + q form`` (see the module's docstring), fitted by least
        squares over the last ``FITTED_STEPS``; where their forms agree ``p`` and ``q`` cannot be told apart,
        and the larger of the two readings (all ``p``, all ``q``) is taken: never smaller than measured."""
        form = _form(sigma, following)
        known = [s for s in self.steps if s.weights is not None and s.form is not None and s.sigma > sigma]
        if form is None or not known:
            return None
        known = known[-FITTED_STEPS:]
        return tuple(_extrapolated([(s.form, s.weights[i]) for s in known], form) for i in range(2))

    @torch.no_grad()
    def observe(self, x: torch.Tensor, uncond: torch.Tensor | None, cond: torch.Tensor, scale: float,
                sigma: float, denoised: torch.Tensor | None = None) -> SamplerStep | None:
        """One evaluation of the guided model at ``sigma``: the latent it saw, its denoised predictions, the
        cfg scale and what the sampler steps with (``denoised``, after the post-CFG functions before the
        node's). Returns the step it completes (from the evaluations before to this latent), if any."""
        numel = x.numel()
        if numel != self._numel:  # a new run shape: a new sample, and nothing to fit across
            self._resample(numel)
        if numel == 0:
            return None
        if self._index is not None and self._index.device != x.device:
            self._index = self._index.to(x.device)  # sample where the tensors are, move only the sample
        current = Evaluation.of(self._sampled(x), None if uncond is None else self._sampled(uncond),
                                self._sampled(cond), float(scale), float(sigma),
                                None if denoised is None else self._sampled(denoised))
        history, self._history = self._history, [current, *self._history[:1]]
        if not history:
            return None
        step = replace(fit_step(history, current.x, float(sigma)), sigma=float(sigma))
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


def fit_step(evaluations: list[Evaluation], following: torch.Tensor, following_sigma: float = math.nan) -> SamplerStep:
    """Least squares of ``following`` (the latent of the evaluation at ``following_sigma``) on the newest
    evaluation's latent and predictions, and on the one before as well where the newest alone leaves the
    step unexplained (``evaluations``: newest first)."""
    newest = evaluations[0]
    fits = [(_fit(newest.columns(), following), newest)]
    if fits[0][0][1] is None or fits[0][0][1] > EXPLAINED:
        fits += [(_fit(newest.columns() + older.columns(), following), older) for older in evaluations[1:]]
    (coefficients, unexplained), oldest = min(fits, key=lambda fit: math.inf if fit[0][1] is None else fit[0][1])
    if coefficients is None:
        return SamplerStep(None, unexplained)
    uncond, cond = newest.prediction_weights(coefficients)
    form = _form(oldest.sigma, following_sigma)
    share = None if form is None else 1.0 - following_sigma / oldest.sigma
    weights = None if share is None else (_rounded(uncond / share), _rounded(cond / share))
    if not newest.guided:
        return SamplerStep(None, unexplained, form=form, weights=weights)
    common = uncond + cond
    gain = cond / (newest.scale * common) if common != 0 else math.inf
    return SamplerStep(_rounded(abs(gain)) if math.isfinite(gain) else None, unexplained, form=form, weights=weights)


def _form(sigma: float, following: float) -> float | None:
    """``(1 - sigma') / (1 - sigma' / sigma)`` of a step from ``sigma`` to ``following`` (None where it
    does not step down)."""
    if not 0.0 <= following < sigma < math.inf:
        return None
    return (1.0 - following) / (1.0 - following / sigma)


def _extrapolated(points: list[tuple[float, float]], form: float) -> float:
    """A weight at a step of ``form``, from ``(form, weight)`` points of fitted steps: the line
    ``p + q form`` by least squares; where the forms agree, the larger in size of the readings all-``p``
    (the weight as measured) and all-``q`` (scaled by the forms)."""
    mean_f = sum(f for f, _ in points) / len(points)
    spread = sum((f - mean_f) ** 2 for f, _ in points)
    if spread <= 1e-12 * max(1.0, mean_f * mean_f):
        known, weight = points[-1]
        return max((weight, weight * form / known), key=abs)
    mean_w = sum(w for _, w in points) / len(points)
    q = sum((f - mean_f) * (w - mean_w) for f, w in points) / spread
    return _rounded(mean_w + q * (form - mean_f))


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
