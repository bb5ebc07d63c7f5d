"""The node's settings, checked once when the node runs, and the engine they build."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import ConfidenceGated, ForecastEngine, Schedule

GATES = ("calibrated", "block0")


@dataclass(frozen=True)
class CacheSettings:
    tolerance: float
    warmup_steps: int
    start_fraction: float
    end_fraction: float
    first_block_order: int
    last_block_order: int
    max_consecutive: int
    distance: str
    forecast_residual: bool = False
    gate: str = "calibrated"  # "block0": the tolerance bounds block 0's own error (the paper's gate)

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}.")
        self.new_engine()  # every check the engine makes, made now rather than mid-sampling

    def schedule(self) -> Schedule:
        return Schedule(self.warmup_steps, self.start_fraction, self.end_fraction, self.max_consecutive)

    def new_engine(self) -> ForecastEngine:
        policy = ConfidenceGated(self.tolerance, self.schedule(), calibrated=self.gate == "calibrated")
        return ForecastEngine(policy, self.first_block_order, self.last_block_order, self.distance,
                              self.forecast_residual)
