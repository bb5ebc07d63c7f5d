"""What a sampling run did, per step, as plain JSON.

The same record feeds the log line, the websocket event behind the node's chart and
the benchmark, so all three always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .memory import CacheMemory

STATS_VERSION = 1
# A run is said to reject forecasts because of the sampler's noise when the gate judged at least
# MIN_JUDGED calls, rejected at least REJECTING of them, and at least NOISE_LIKE of the rejected
# ones had block 0 jumping off its trend.
MIN_JUDGED = 5
REJECTING = 0.9
NOISE_LIKE = 0.5


@dataclass
class StepRecord:
    step: int
    sigma: float | None = None
    calls: int = 0
    forecast: int = 0
    gate_errors: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        finite = [e for e in self.gate_errors if e != float("inf")]  # JSON has no infinity
        gate_error = sum(finite) / len(finite) if finite else None
        return {
            "step": self.step,
            "sigma": self.sigma,
            "calls": self.calls,
            "forecast": self.forecast,
            "gate_error": gate_error,
        }


class RunStats:
    """Counts of one sampling run. ``blocks_total / blocks_run`` is the compute saving."""

    def __init__(self, method: str, threshold: float | None, num_steps: int | None = None) -> None:
        self.method = method
        self.threshold = threshold
        self.model: str | None = None
        self.num_steps = num_steps
        self.steps: dict[int, StepRecord] = {}
        self.blocks_run = 0
        self.blocks_total = 0
        self._notes: list[str] = []
        self.gated = 0  # calls the confidence gate judged
        self.gate_accepted = 0
        self.noise_like = 0  # judged calls whose block 0 jumped off its trend (see record_gate)
        self.memory: CacheMemory | None = None  # the engine's cache memory ledger (core/memory.py)

    def note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    @property
    def notes(self) -> list[str]:
        """What the run should tell the user: the notes taken, then what the counts show."""
        return [*self._notes, *self._diagnoses()]

    def record_gate(self, accepted: bool, noise_like: bool) -> None:
        """One gate verdict. ``noise_like``: a forecast along block 0's trend missed its output by
        more than reusing its last value would have. A smooth path, however fast, is followed
        better by its trend; a path that takes a fresh random step every call (a sampler that
        injects noise) is not, so a run of rejections with this sign is the sampler's doing."""
        self.gated += 1
        self.gate_accepted += int(accepted)
        self.noise_like += int(noise_like and not accepted)

    def _diagnoses(self) -> list[str]:
        rejected = self.gated - self.gate_accepted
        if self.gated < MIN_JUDGED or rejected < REJECTING * self.gated or self.noise_like < NOISE_LIKE * rejected:
            return []
        return [
            f"the gate rejected {rejected} of {self.gated} forecasts because the sampler injects fresh noise "
            f"every step: in {self.noise_like} of them block 0 jumped off its trend (a forecast along it missed "
            "by more than reusing the last value would), so no forecast could be trusted; a deterministic "
            "sampler (euler, heun, dpmpp_2m, uni_pc) gets the speed-up, or keep this one and forecast only what "
            "the blocks add to block 0 (forecast_residual on, max_consecutive 1)"
        ]

    def record_call(
        self, step: int, sigma: float, forecast: bool, gate_error: float | None, blocks_run: int, blocks_total: int
    ) -> None:
        record = self.steps.setdefault(step, StepRecord(step))
        if record.sigma is None:
            record.sigma = float(sigma)
        record.calls += 1
        record.forecast += int(forecast)
        if gate_error is not None:
            record.gate_errors.append(float(gate_error))
        self.blocks_run += blocks_run
        self.blocks_total += blocks_total

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.steps.values())

    @property
    def forecast_calls(self) -> int:
        return sum(r.forecast for r in self.steps.values())

    @property
    def block_ratio(self) -> float:
        return self.blocks_total / self.blocks_run if self.blocks_run else 1.0

    def to_json(self) -> dict:
        last = max(self.steps, default=-1)
        count = max(self.num_steps or 0, last + 1)
        return {
            "v": STATS_VERSION,
            "method": self.method,
            "model": self.model,
            "threshold": self.threshold,
            "num_steps": count,
            "steps": [self.steps.get(i, StepRecord(i)).to_json() for i in range(count)],
            "totals": {
                "calls": self.calls,
                "forecast": self.forecast_calls,
                "blocks_run": self.blocks_run,
                "blocks_total": self.blocks_total,
                "block_ratio": round(self.block_ratio, 4),
            },
            **({"memory": self.memory.to_json()} if self.memory is not None else {}),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        saved = self.blocks_total - self.blocks_run
        return (
            f"forecast {self.forecast_calls}/{self.calls} model calls, "
            f"{saved}/{self.blocks_total} block evaluations saved "
            f"(~{self.block_ratio:.2f}x fewer)"
        )
