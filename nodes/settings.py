"""The node's settings, checked once when the node runs, and the engine they build."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import ConfidenceGated, ForecastEngine, Placement, Schedule, SpeedTarget

# The gate and block 0's cache see this share of block 0's tokens (a fixed random subset per
# stream, core/subset.py), at least GATE_MIN_TOKENS of them. bench/gate_subset.py measured samples
# of 8 tokens and more to leave the PSNR at equal speed unchanged (bench/results/table_full.md, "The
# gate's token sample"); the floor keeps eight times that.
GATE_SHARE = 1 / 16
GATE_MIN_TOKENS = 64

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
    cache_device: str = "auto"
    target_speedup: float = 0.0  # 0: the tolerance decides; else the speed to reach (core/target.py)
    # Not inputs of the node: the benchmark compares gates with them.
    gate_share: float = GATE_SHARE
    gate_minimum: int = GATE_MIN_TOKENS

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}.")
        self.new_engine()  # every check the engine makes, made now rather than mid-sampling

    def schedule(self) -> Schedule:
        return Schedule(self.warmup_steps, self.start_fraction, self.end_fraction, self.max_consecutive)

    def new_engine(self) -> ForecastEngine:
        policy = ConfidenceGated(self.tolerance, self.schedule(), calibrated=self.gate == "calibrated")
        return ForecastEngine(policy, self.first_block_order, self.last_block_order, self.distance,
                              self.forecast_residual, Placement(self.cache_device), self.gate_share, self.gate_minimum,
                              SpeedTarget(self.target_speedup, self.last_block_order))
