"""Which steps may be forecast at all, before any gate is consulted.

Early steps lay out the image and have no smooth history to extrapolate from; the
last step decides fine detail. Both are always computed in full; users can narrow
the active window further and cap how many forecasts may follow each other.
"""

from __future__ import annotations

from dataclasses import dataclass


def _check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


@dataclass(frozen=True)
class Schedule:
    warmup_steps: int = 0  # steps 0 .. warmup_steps - 1 are computed in full
    start_fraction: float = 0.0  # forecasting may start once step / num_steps reaches this
    end_fraction: float = 1.0  # ... and stops once it reaches this
    max_consecutive: int = 0  # forecasts allowed in a row per stream; 0 = no cap

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

    def outside_window(self, step: int, num_steps: int) -> str | None:
        """Why the step-wise rules keep ``step`` full ("warmup", "edge" for the first and last step,
        "window" for the start/end fraction), or None when it may be forecast."""
        if step < self.warmup_steps:
            return "warmup"
        if step == 0 or step >= num_steps - 1:
            return "edge"
        if not self.start_fraction <= step / num_steps < self.end_fraction:
            return "window"
        return None

    def in_window(self, step: int, num_steps: int) -> bool:
        """Step-wise rules only: warm-up, first/last step, start/end fraction."""
        return self.outside_window(step, num_steps) is None

    def why_full(self, step: int, num_steps: int, consecutive: int) -> str | None:
        """The step-wise reason, else "cap" once ``max_consecutive`` forecasts ran in a row; None
        when the step may be forecast."""
        reason = self.outside_window(step, num_steps)
        if reason is None and self.max_consecutive and consecutive >= self.max_consecutive:
            return "cap"
        return reason

    def forecastable_steps(self, num_steps: int) -> int:
        return sum(self.in_window(step, num_steps) for step in range(num_steps))
