"""The gate's judgement of a model call: how far its forecasts would move the sampler's next step, whether
that fits what the run still allows, and, on full calls, how far they would have missed.

A call's score is the predicted miss of the guided prediction the sampler steps with (core/guidance.py),
for the worst image of its batch, learned per stream from block 0's forecast error (core/calibration.py),
weighed by the step (core/steps.py). Forecasts in a row add their scores up; the tolerance, or with a
speed target the threshold the run's budget sets (core/target.py), bounds the sum. Full calls the gate
judged measure the forecasts they did not use at a sample of the last block's tokens, and the calibrations
learn from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import guidance
from .call import Call, Stream
from .gate import relative_l1_of_sums
from .guidance import COND, SEPARATE_SHARE, UNCOND, RowMiss, Weights
from .policy import Mode, Policy
from .sampler_response import SamplerResponse
from .stats import Judgement, RunStats
from .steps import StepPoint, scheduled_points, step_weights
from .target import Budget, SpeedTarget


class Judge:
    """The gate's side of a run: the schedule's step weights, the guidance roles seen, the sampler's measured
    response and the speed target, if any."""

    def __init__(self, policy: Policy, stats: RunStats, sampler: SamplerResponse, target: SpeedTarget | None,
                 residual: bool) -> None:
        self.policy = policy
        self.stats = stats
        self.sampler = sampler
        self.target = target
        self.residual = residual
        self.schedule: list[float] = []  # the run's sigmas
        self.step_weights: list[float] = []  # per step of the run's schedule (core/steps.py step_weights)
        self.roles: set[int] = set()  # the guidance roles the run's calls have shown
        self.blocks_per_call = 0  # the blocks of a full call, once one has ended

    def note_schedule(self, schedule: Sequence[float]) -> None:
        self.schedule = [float(sigma) for sigma in schedule]
        self.step_weights = step_weights(schedule)

    def place(self, streams: list[Stream], roles: Sequence[int | None] | None) -> None:
        """The streams' places in the guidance pair, as the call gives them."""
        for stream, role in zip(streams, roles or [None] * len(streams)):
            stream.role = role
            if role is not None:
                self.roles.add(role)

    def step_weight(self, step: StepPoint) -> float:
        """How much more a miss at this step moves the image than at an average one (the calibrated gate
        only: the paper's gate is left as it was)."""
        table = self.step_weights if self.policy.calibrated else []
        return table[step.index] if step.index < len(table) else 1.0

    def weights_for(self, step: StepPoint) -> Weights:
        """The weights of the step this call feeds, as the sampler's fitted steps extrapolate them; before
        any step was fitted, an Euler step's at the cfg scale seen."""
        following = self._following_sigma(step)
        measured = None if following is None else self.sampler.weights_at(step.sigma, following)
        return Weights(*measured) if measured is not None else Weights.for_scale(self.sampler.scale)


    def _following_sigma(self, step: StepPoint) -> float | None:
        later = [s for s in self.schedule if s < step.sigma]
        return later[0] if later else None


    def gain_for(self, weights: Weights) -> float:
        """How much more than an Euler step at the run's cfg scale the step weighs the guidance difference
        (for the statistics: the gate weighs the weights themselves)."""
        scale = self.sampler.scale
        if scale is None or scale == 1.0 or weights.common == 0:
            return 1.0
        return max(1.0, abs(weights.cond / (scale * weights.common)))


    def judge(self, call: Call, chunks: list[torch.Tensor]) -> None:
        """Block 0's forecast error with the Taylor order that followed it best, from 0 (its last
        computed value) to its cache's own, all streams together, and per stream and image the guided
        miss the calibrations predict from it (core/guidance.py). The last block is then forecast with
        the same lower order, or with its own when block 0's highest won."""
        try:
            highest = min(stream.first.current_order for stream in call.streams)
            # slice by slice (core/taylor.py ``miss``): no whole float32 forecast beside block 0's output
            sums = {order: [s.first.miss(c, p, order) for s, p, c in zip(call.streams, call.positions, chunks)]
                    for order in range(highest, -1, -1)}
        except ValueError:  # a cache of another shape: start those streams afresh
            for stream in call.streams:
                stream.reset()
            return
        errors = {order: relative_l1_of_sums([(m.sum(), a.sum()) for m, a in parts])[0] for order, parts in sums.items()}
        best = min(errors, key=lambda order: (errors[order], -order))  # a tie keeps the higher order
        call.order = None if best == highest else best  # block 0's highest: the last block's own order
        call.gate_error = errors[best]
        call.first_errors = [_ratios(missed, size) for missed, size in sums[best]]
        call.predicted = max(self._predicted(call, stream, errors)
                             for stream, errors in zip(call.streams, call.first_errors))
        if call.mode is Mode.GATE:
            call.score, call.spent = self._score(call), self._spent(call)
            total = call.spent + call.score
            if self.target is not None:
                budget = self._budget(call)
                accepted = call.accepted = self.target.judge(total, call.predicted, budget.run + 1, budget)
                self.stats.target_refused = self.target.refused
            else:
                accepted = call.accepted = self.policy.accepts(total)
            euler = Weights.for_scale(self.sampler.scale)
            euler = Weights(euler.uncond * call.weights.common, euler.cond * call.weights.common)
            self.stats.record_gate(accepted, for_gain=not accepted and self.policy.accepts(
                self._spent(call) + max(self._predicted(call, s, e, euler) for s, e in zip(call.streams, call.first_errors))
                * call.weight))


    def _predicted(self, call: Call, stream: Stream, errors: list[float], weights: Weights | None = None) -> float:
        """The stream's worst image's bound on its part of the guided miss (core/guidance.py): with its
        guidance partner in the call, the pair's guided miss; made apart from its partner, its own weighed
        miss; without a partner in the run (cfg 1, another node's extra call), its own miss."""
        weights = weights or call.weights
        own = stream.own.ratio_bound()
        if self._separate(call, stream):
            return max((abs(weights.own(stream.role)) * e * own if e else 0.0 for e in errors), default=math.inf)
        difference = stream.difference.ratio_bound() if self._paired(call) and stream.role in (COND, UNCOND) else None
        return max((guidance.bound(weights, stream.role, e * own if e else 0.0,
                                   None if difference is None else (e * difference if e else 0.0)) for e in errors),
                   default=math.inf)


    @staticmethod
    def _paired(call: Call) -> bool:
        """The call holds both streams of the guidance pair."""
        return {COND, UNCOND} <= {stream.role for stream in call.streams}


    def _separate(self, call: Call, stream: Stream) -> bool:
        """The stream is one of a guidance pair whose calls are made apart."""
        return stream.role in (COND, UNCOND) and not self._paired(call) and {COND, UNCOND} <= self.roles


    def _score(self, call: Call) -> float:
        """What the gate compares with its threshold: the calibrated gate's guided miss (weighed by the
        sampler's own weights on the two predictions) times the step's weight (core/steps.py), so the
        tolerance means the same at every step; the paper's gate bounds block 0's own error as it did."""
        if not self.policy.calibrated:
            return call.gate_error * call.gain
        share = SEPARATE_SHARE if any(self._separate(call, stream) for stream in call.streams) else 1.0
        return call.predicted * call.weight * share


    def _budget(self, call: Call) -> Budget:
        """Where the run stands against its target at this call: the blocks so far, and the steps still to
        come by the schedule, at the calls per step the run has made so far."""
        stats, step = self.stats, call.step
        per_step = max(1, round(stats.calls / len(stats.steps))) if stats.steps else 1
        points = scheduled_points(self.schedule) if len(self.schedule) > 1 else []
        weights = self.step_weights or [1.0] * step.num_steps
        ahead = [(weights[p.index] if p.index < len(weights) else 1.0, self.policy.schedule.outside_window(p) is None)
                 for p in points[step.index + 1:]]
        return Budget(stats.blocks_run, stats.blocks_total, self.blocks_per_call or 1,
                      calls_left=max(1, per_step * step.num_steps - stats.calls), per_step=per_step, ahead=ahead,
                      run=max(s.consecutive for s in call.streams), spent=call.spent or 0.0,
                      cap=self.policy.schedule.max_consecutive)


    @staticmethod
    def _spent(call: Call) -> float:
        """What the forecasts since the streams' last full call already scored: a run of forecasts moves
        the image by all of their misses, so the tolerance bounds their sum (a single forecast: its own)."""
        return max(stream.spent for stream in call.streams)


    def measure(self, call: Call, rows: list[RowMiss | None]) -> None:
        """How far the forecasts the gate would have used missed, per stream and image at the sampled tokens,
        and with both streams of the guidance pair in the call how far the difference between their
        forecasts missed; the calibrations learn each pair of block 0's error and a miss. The call's
        measured miss is the quantity its prediction bounds (``_predicted``)."""
        if call.first_errors is None or any(row is None for row in rows):
            return
        for stream, errors, row in zip(call.streams, call.first_errors, rows):
            stream.own.observe_call(list(zip(errors, row.relative)))
        misses = {s.role: row for s, row in zip(call.streams, rows) if s.role in (COND, UNCOND)}
        difference = guidance.differential(misses[COND], misses[UNCOND]) if self._paired(call) else None
        if difference is not None:
            for stream, errors in zip(call.streams, call.first_errors):
                if stream.role in (COND, UNCOND):
                    stream.difference.observe_call(list(zip(errors, difference)))
            measured = guidance.guided(call.weights, misses) or []
        else:
            measured = [abs(call.weights.own(s.role) if self._separate(call, s) else call.weights.common) * m
                        for s, row in zip(call.streams, rows) for m in row.relative]
        call.measured = max(measured, default=None)
        if call.measured is not None:
            self.stats.record_judgement(Judgement(call.gate_error, call.predicted, call.measured, call.reason == "gate"))


    def row_misses(self, call: Call, outputs: list[torch.Tensor] | None) -> list[RowMiss | None]:
        """Per stream, the forecast the gate would have used against this full call's last-block output at
        the stream's sample of tokens (None where the call was not judged or a cache holds another shape)."""
        anchors = call.anchors if self.residual else [None] * len(call.streams)
        if outputs is None or call.first_errors is None or anchors is None:
            return [None] * len(call.streams)
        rows = []
        for stream, output, position, anchor in zip(call.streams, outputs, call.positions, anchors):
            if stream.last.signature is None or tuple(output.shape) != stream.last.signature[0]:
                rows.append(None)
                continue
            index = stream.rows(output)
            actual = output.index_select(1, index).float()
            forecast = stream.last.predict_rows(index, position, call.order)
            if anchor is not None:
                forecast.add_(anchor.index_select(1, index).float())
            rows.append(RowMiss(forecast.sub_(actual), actual.flatten(1).abs().sum(1)))
        return rows


def _ratios(missed: torch.Tensor, size: torch.Tensor) -> list[float]:
    """Per image, ``missed / size`` (inf where the size is 0 or anything is not finite)."""
    return [m / a if a > 0 and math.isfinite(m / a) else math.inf for m, a in zip(missed.tolist(), size.tolist())]
