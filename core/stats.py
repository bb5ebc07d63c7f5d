"""What a sampling run did, per step, as plain JSON.

The same record feeds the log line, the websocket event behind the node's chart and
the benchmark, so all three always agree.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .memory import CacheMemory
from .target import GUARD

# 3: ``predicted`` is the guided miss with the sampler's weights already in it (``gain`` is shown, not
# multiplied), and a step's ``spent`` is what the run of forecasts before its calls had used of the tolerance.
STATS_VERSION = 3
# Why a call was computed in full, in the order the chart and the log list them: a short label (the log
# line, a step's tooltip) and a sentence part (the chart's account of the run). The only list of them: the
# stats payload carries it (``reasons``), so the chart shows these words; web/cgtaylor_draw.js keeps a copy
# for payloads recorded before they did (tests/test_report.py holds the two alike).
FULL_REASONS = {
    "warmup": {"short": "warm-up", "long": "warm-up (or no forecast held yet)"},
    "edge": {"short": "first/last step", "long": "first or last step (always full)"},
    "window": {"short": "outside window", "long": "outside start_fraction .. end_fraction"},
    "cap": {"short": "forecast cap", "long": "max_consecutive forecasts in a row reached"},
    "gate": {"short": "gate", "long": "rejected by the confidence gate"},
    "fallback": {"short": "fallback", "long": "forced full compute (fallback)"},
}
# A run whose gate judged at least MIN_JUDGED calls and rejected at least REJECTING of them gets a note
# saying why. It blames the sampler's noise only where the sampler's own steps were measured to carry
# it (core/sampler_response.py): on average at least NOISY_STEP of each step that the model's
# predictions do not explain. Deterministic samplers measure below 0.05; ancestral and SDE ones
# 0.5-1.0 per noisy step (falling as sigma does), and a mean over all evaluations still counts the
# noise of samplers whose second evaluation per step adds none (dpmpp_2s_ancestral).
MIN_JUDGED = 5
REJECTING = 0.9
NOISY_STEP = 0.2
# The CFG++ note names a sampler only when its steps were measured to weigh the guidance difference at
# least this much more than an Euler step (deterministic samplers measure 1 to within 1e-5).
STRONGER_GUIDANCE = 1.5


def _finite_mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]  # JSON has no infinity
    return sum(finite) / len(finite) if finite else None


@dataclass
class StepRecord:
    step: int
    sigma: float | None = None
    calls: int = 0
    forecast: int = 0
    gate_errors: list[float] = field(default_factory=list)
    full: dict[str, int] = field(default_factory=dict)  # full calls by reason
    predicted: list[float] = field(default_factory=list)  # the gate's predicted misses of the guided prediction
    measured: list[float] = field(default_factory=list)  # the same measured on full calls
    spent: list[float] = field(default_factory=list)  # what the forecasts in a row before each judged call scored
    gain: float = 1.0  # the largest sampler guidance gain the gate weighed a call's prediction by
    weight: float = 1.0  # the step's weight in the gate's score (core/steps.py step_weights)
    served: int = 0  # calls another cache answered without running the model

    def to_json(self) -> dict:
        record = {
            "step": self.step,
            "sigma": self.sigma,
            "calls": self.calls,
            "forecast": self.forecast,
            "gate_error": _finite_mean(self.gate_errors),
            "predicted": _finite_mean(self.predicted),
            "measured": _finite_mean(self.measured),
        }
        if any(self.spent):
            record["spent"] = round(_finite_mean(self.spent), 6)
        if self.gain > 1.0:
            record["gain"] = self.gain
        if self.weight != 1.0:
            record["weight"] = round(self.weight, 4)
        if self.served:
            record["served"] = self.served
        if self.full:
            record["full"] = {reason: self.full[reason] for reason in FULL_REASONS if reason in self.full}
        return record


@dataclass(frozen=True)
class Judgement:
    """A full call the gate judged (or would have, but for the cap): block 0's error, the last block's
    error the calibration predicted from it, and the error the last block's forecast would have had."""

    first_error: float  # block 0's forecast error
    predicted: float
    measured: float
    rejected: bool  # the gate said no (the other full calls it judged were the cap's)


def coverage(judgements: list[Judgement]) -> float | None:
    """Share of the judged full calls whose measured last-block error stayed within the prediction
    (calls judged before their stream had a pair predicted nothing, and are left out)."""
    checked = [j for j in judgements if math.isfinite(j.predicted)]
    return sum(j.measured <= j.predicted for j in checked) / len(checked) if checked else None


class RunStats:
    """Counts of one sampling run. ``blocks_total / blocks_run`` is the compute saving."""

    def __init__(
        self, method: str, threshold: float | None, num_steps: int | None = None, calibrated: bool = False
    ) -> None:
        self.method = method
        self.threshold = threshold
        self.calibrated = calibrated  # the threshold is a tolerance on the last block's predicted error
        self.model: str | None = None
        self.num_steps = num_steps
        self.steps: dict[int, StepRecord] = {}
        self.blocks_run = 0
        self.blocks_total = 0
        self._notes: list[str] = []
        self.gated = 0  # calls the confidence gate judged
        self.gate_accepted = 0
        self.rejected_for_gain = 0  # rejections the sampler's guidance gain made (accepted on an Euler step)
        self.sampler: str | None = None  # the sampler's name, where the adapter knows it
        self.served_by: list[str] = []  # other caches that answered calls without running the model
        self.sampler_gains: list[float] = []  # per measured sampler step (core/sampler_response.py)
        self.unexplained: list[float] = []
        self.judgements: list[Judgement] = []
        self.accepted_predictions: list[float] = []  # the predicted miss of every forecast
        self.target: float | None = None  # the speed asked for (core/target.py), None: the tolerance decided
        self.target_refused = 0  # forecasts the target wanted that the guard refused
        self.longest_run = 0  # forecasts in a row on one stream
        self.largest_spent = 0.0  # the largest sum of the gate's scores over such a run
        self.memory: CacheMemory | None = None  # the engine's cache memory ledger (core/memory.py)

    def note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    @property
    def notes(self) -> list[str]:
        """What the run should tell the user: the notes taken, then what the counts show."""
        return [*self._notes, *self._diagnoses()]

    def record_gate(self, accepted: bool, for_gain: bool = False) -> None:
        """One gate verdict; ``for_gain``: a rejection only the sampler's guidance gain made."""
        self.gated += 1
        self.gate_accepted += int(accepted)
        self.rejected_for_gain += int(for_gain)

    def record_sampler_step(self, guidance_gain: float | None, unexplained: float | None) -> None:
        """What the fit of one sampler step measured (None: not measurable)."""
        if guidance_gain is not None:
            self.sampler_gains.append(guidance_gain)
        if unexplained is not None:
            self.unexplained.append(unexplained)

    @property
    def noise_share(self) -> float | None:
        """Mean share of a sampler step its model predictions left unexplained (None: never measured)."""
        return statistics.fmean(self.unexplained) if self.unexplained else None

    def record_served(self, step: int, sigma: float, blocks_total: int, by: list[str]) -> None:
        """A call another cache (``by``) answered from its own cache: no block ran."""
        record = self._call_at(step, sigma)
        record.served += 1
        self.blocks_total += blocks_total
        self.served_by = list(dict.fromkeys([*self.served_by, *by]))

    def _call_at(self, step: int, sigma: float) -> StepRecord:
        """The step's record with one more call counted (its sigma from the step's first call)."""
        record = self.steps.setdefault(step, StepRecord(step))
        if record.sigma is None:
            record.sigma = float(sigma)
        record.calls += 1
        return record

    @property
    def served(self) -> int:
        return sum(r.served for r in self.steps.values())

    def _diagnoses(self) -> list[str]:
        notes = self._target_notes()
        if self.served:
            notes.append(f"{' and '.join(self.served_by)} answered {self.served} of {self.calls} calls from its own "
                         "cache without running the model")
        name = self.sampler or "this sampler"
        if self.rejected_for_gain and max(self.sampler_gains, default=1.0) >= STRONGER_GUIDANCE:
            notes.append(
                f"{name} carries the guidance difference into its next latent up to {max(self.sampler_gains):.1f}x as "
                "strongly as an Euler step does (measured from its steps; CFG++ samplers do this), so the gate weighed "
                f"each forecast's predicted miss by that gain and computed {self.rejected_for_gain} calls in full that "
                "it would have forecast on an Euler step; euler or dpmpp_2m keep the speed-up at this tolerance"
            )
        rejected = self.gated - self.gate_accepted
        if self.gated < MIN_JUDGED or rejected < REJECTING * self.gated or self.rejected_for_gain * 2 > rejected:
            return notes
        noise = self.noise_share
        if noise is not None and noise >= NOISY_STEP:
            notes.append(
                f"the gate rejected {rejected} of {self.gated} forecasts because {name} injects fresh noise every step "
                f"(measured: on average {noise:.0%} of each step is not explained by the model's predictions), so no "
                "forecast could be trusted; a deterministic sampler (euler, heun, dpmpp_2m, uni_pc) gets the speed-up, "
                "or keep this one and forecast only what the blocks add to block 0 (gate block0, forecast_residual on, "
                "max_consecutive 1, tolerance 0.5)"
            )
            return notes
        predicted = [p for record in self.steps.values() for p in record.predicted if math.isfinite(p)]
        moved = f" (predicted miss of the judged calls: median {statistics.median(predicted):.3g})" if predicted else ""
        notes.append(
            f"the gate rejected {rejected} of {self.gated} forecasts: the model's features moved more between steps "
            f"than tolerance {self.threshold:g} allows at this step count{moved}; raise tolerance a little (0.15-0.2) "
            "or sample with more steps"
        )
        return notes

    def _target_notes(self) -> list[str]:
        """Where a target speed was asked for and not reached (within 10%): what was, and why."""
        if self.target is None or not self.calls or self.block_ratio >= 0.9 * self.target:
            return []
        why = []
        forced = sum(n for reason, n in self.full_reasons.items() if reason in ("warmup", "edge", "window", "fallback"))
        per_call = self.blocks_total / self.calls
        most = self.calls * per_call / (forced * per_call + (self.calls - forced)) if per_call > 1 else 1.0
        if most < self.target:
            why.append(f"with {forced} of {self.calls} calls kept full by the warm-up, the first and last step and the "
                       f"start/end window, this schedule allows at most {most:.2f}x")
        if self.target_refused:
            why.append(f"{self.target_refused} forecast{'s' if self.target_refused != 1 else ''} it needed would have "
                       f"added up to more than the guard allows (core/target.py: {GUARD:g}, three times the default "
                       "tolerance)")
        if not why:
            why.append("the gate judged too few calls to rank them before the run ended")
        return [f"target {self.target:g}x not reached: {self.block_ratio:.2f}x, because " + "; and ".join(why)
                + "; use more steps, or accept the speed reached"]

    def record_call(
        self, step: int, sigma: float, forecast: bool, gate_error: float | None, blocks_run: int, blocks_total: int,
        reason: str | None = None, predicted: float | None = None, measured: float | None = None,
        gain: float = 1.0, weight: float = 1.0, spent: float | None = None,
    ) -> None:
        """One call. A full call names its ``reason`` (FULL_REASONS); ``predicted`` is the guided miss the gate
        predicted, ``measured`` the one a full call's forecasts would have had, ``weight`` what the gate
        weighed the prediction by (the step's weight), ``spent`` what the forecasts in a row before it had
        scored, and ``gain`` how much more than an Euler step the sampler weighed the guidance difference
        (already in ``predicted``)."""
        record = self._call_at(step, sigma)
        if spent is not None:
            record.spent.append(float(spent))
        record.gain = max(record.gain, gain)
        record.weight = weight
        record.forecast += int(forecast)
        if gate_error is not None:
            record.gate_errors.append(float(gate_error))
        if not forecast and reason is not None:
            record.full[reason] = record.full.get(reason, 0) + 1
        if predicted is not None:
            record.predicted.append(float(predicted))
            if forecast:
                self.accepted_predictions.append(float(predicted))
        if measured is not None:
            record.measured.append(float(measured))
        self.blocks_run += blocks_run
        self.blocks_total += blocks_total

    def record_judgement(self, judgement: Judgement) -> None:
        self.judgements.append(judgement)

    def record_run(self, consecutive: int, spent: float) -> None:
        """A stream's forecasts in a row after a call, and what their scores add up to."""
        self.longest_run = max(self.longest_run, consecutive)
        self.largest_spent = max(self.largest_spent, spent)

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.steps.values())

    @property
    def forecast_calls(self) -> int:
        return sum(r.forecast for r in self.steps.values())

    @property
    def block_ratio(self) -> float:
        return self.blocks_total / self.blocks_run if self.blocks_run else 1.0

    @property
    def full_reasons(self) -> dict[str, int]:
        counts = {reason: sum(r.full.get(reason, 0) for r in self.steps.values()) for reason in FULL_REASONS}
        return {reason: count for reason, count in counts.items() if count}

    def calibration(self) -> dict:
        """The tolerance's promise next to what was measured: predicted errors of the forecasts the gate
        accepted, measured errors of the full calls it judged, and how often the prediction held."""
        measured = [j.measured for j in self.judgements if math.isfinite(j.measured)]
        accepted = [p for p in self.accepted_predictions if math.isfinite(p)]

        def spread(values: list[float], name: str) -> dict:
            return {f"{name}_median": statistics.median(values) if values else None,
                    f"{name}_max": max(values, default=None)}

        return {"pairs": len(measured), **spread(accepted, "predicted"), **spread(measured, "measured"),
                "covered": coverage(self.judgements), "longest_run": self.longest_run,
                "largest_run_score": round(self.largest_spent, 6)}

    def to_json(self) -> dict:
        last = max(self.steps, default=-1)
        count = max(self.num_steps or 0, last + 1)
        return {
            "v": STATS_VERSION,
            "method": self.method,
            "model": self.model,
            "sampler": self.sampler,
            "threshold": self.threshold,
            "tolerance": self.threshold if self.calibrated else None,
            "num_steps": count,
            "steps": [self.steps.get(i, StepRecord(i)).to_json() for i in range(count)],
            "totals": {
                "calls": self.calls,
                "forecast": self.forecast_calls,
                "blocks_run": self.blocks_run,
                "blocks_total": self.blocks_total,
                "block_ratio": round(self.block_ratio, 4),
                "full": self.full_reasons,
                **({"served": self.served} if self.served else {}),
            },
            "calibration": self.calibration(),
            **({"target": {"speedup": self.target, "refused": self.target_refused}} if self.target is not None else {}),
            **({"memory": self.memory.to_json()} if self.memory is not None else {}),
            "notes": list(self.notes),
            "reasons": {name: dict(labels) for name, labels in FULL_REASONS.items()},
        }

    def summary(self) -> str:
        """The counts, why the full calls were full, and what the tolerance promised next to what was measured."""
        saved = self.blocks_total - self.blocks_run
        parts = [
            f"forecast {self.forecast_calls}/{self.calls} model calls, "
            f"{saved}/{self.blocks_total} block evaluations saved "
            f"(~{self.block_ratio:.2f}x fewer)"
        ]
        if self.full_reasons:
            parts.append("full calls: " + ", ".join(f"{n} {FULL_REASONS[r]['short']}" for r, n in self.full_reasons.items()))
        calibration = self.calibration()
        if calibration["predicted_max"] is not None:
            parts.append(f"forecasts' predicted miss median {calibration['predicted_median']:.3g}, "
                         f"max {calibration['predicted_max']:.3g}; up to {self.longest_run} forecasts in a row, "
                         f"their weighed predicted misses adding up to {self.largest_spent:.3g} at most"
                         + ("" if self.threshold is None else f" (tolerance {self.threshold:g})"))
        if calibration["measured_max"] is not None:
            covered = calibration["covered"]
            parts.append(f"judged full calls' measured miss median {calibration['measured_median']:.3g}, "
                         f"max {calibration['measured_max']:.3g}"
                         + ("" if covered is None else f", within their own prediction on {covered:.0%}"))
        return "; ".join(parts)
