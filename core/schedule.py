"""Which calls may be forecast at all, before any gate is consulted.

Early steps lay out the image and have no smooth history to extrapolate from; the
last step decides fine detail. Both are always computed in full; users can narrow
the active window further and cap how many forecasts may follow each other.

The window's fractions are shares of the model's noise range, as ComfyUI's own EasyCache reads its
start and end percent (``model_sampling.percent_to_sigma``): sampling split over several runs
(KSamplerAdvanced, SplitSigmas, Wan 2.2's two experts) then keeps one window across all of them,
where fractions of each run's own steps would restart in every run. ``in_sigmas`` fixes them once
the model is known; until then (and for callers without a model) they are shares of the run's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .steps import StepPoint, scheduled_points


def _check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


@dataclass(frozen=True)
class Schedule:
    warmup_steps: int = 0  # steps 0 .. warmup_steps - 1 are computed in full
    start_fraction: float = 0.0  # forecasting may start once sampling has come this far
    end_fraction: float = 1.0  # ... and stops once it comes this far
    max_consecutive: int = 0  # forecasts allowed in a row per stream; 0 = no cap
    # The fractions as sigmas of the model's noise range (None: shares of the run's steps).
    start_sigma: float | None = None
    end_sigma: float | None = None

    def __post_init__(self) -> None:
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("max_consecutive", self.max_consecutive, 0)
        for name in ("start_fraction", "end_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}.")
        if self.start_fraction >= self.end_fraction:
            raise ValueError(
                f"start_fraction ({self.start_fraction}) must be below end_fraction ({self.end_fraction}); "
                "set start_fraction lower or end_fraction higher."
            )

    def in_sigmas(self, percent_to_sigma: Callable[[float], float]) -> Schedule:
        """The same schedule with its window in the model's sigmas (ComfyUI's ``percent_to_sigma``)."""
        return replace(self, start_sigma=float(percent_to_sigma(self.start_fraction)),
                       end_sigma=float(percent_to_sigma(self.end_fraction)))

    def in_fractions(self, step: StepPoint) -> bool:
        """Inside the start/end window: ``end_sigma < sigma <= start_sigma`` (EasyCache's test), or by
        the share of the run's steps."""
        if self.start_sigma is not None and self.end_sigma is not None:
            return self.end_sigma < step.sigma <= self.start_sigma
        return self.start_fraction <= step.index / step.num_steps < self.end_fraction

    def outside_window(self, step: StepPoint) -> str | None:
        """Why the step-wise rules keep ``step`` full ("warmup", "edge" for the first and last step,
        "window" for the start/end fraction), or None when it may be forecast."""
        if step.index < self.warmup_steps:
            return "warmup"
        if step.is_first or step.is_last:
            return "edge"
        if not self.in_fractions(step):
            return "window"
        return None

    def why_full(self, step: StepPoint, consecutive: int) -> str | None:
        """The step-wise reason, else "cap" once ``max_consecutive`` forecasts ran in a row; None
        when the step may be forecast."""
        reason = self.outside_window(step)
        if reason is None and self.max_consecutive and consecutive >= self.max_consecutive:
            return "cap"
        return reason

    def forecastable_steps(self, schedule: Sequence[float]) -> int:
        """How many scheduled steps of a run with these sigmas the step-wise rules leave open."""
        return sum(self.outside_window(point) is None for point in scheduled_points(schedule))
