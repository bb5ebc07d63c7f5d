"""The per-call lifecycle shared by every caching method.

An adapter drives one model call through the engine:

    call = engine.begin_call(step, stream_keys, signature)
    if not call.skips_blocks:                       # block 0 runs unless already forecasting
        engine.first_block_output(call, block0_out)  # the gate may switch the call to FORECAST
    if call.skips_blocks:
        last_out = engine.take_forecast(call)          # blocks 1..L-1 are skipped
    else:
        ...run blocks 1..L-1...; engine.last_block_output(call, last_out)
    engine.end_call(call, blocks_run, blocks_total)

A model call can hold several independent streams stacked on the batch axis (in
ComfyUI: cond and uncond of classifier-free guidance, each with its own batch). Each
stream has its own caches, so streams never mix; the decision is one per call because
the blocks process the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from .call import MEASURED_TOKENS, Call, Stream, nbytes
from .judge import Judge
from .memory import DEVICE, HOST, CacheMemory
from .placement import DeviceStore, Placement, Store, row_bytes, working_bytes
from .policy import Mode, Policy
from .sampler_response import SamplerResponse
from .stats import RunStats
from .steps import StepPoint
from .subset import TokenSubset, sampled_tokens
from .target import SpeedTarget
from .taylor import check_order

DISTANCES = ("step", "sigma", "block0")
# With distance "block0" a call is forecast where block 0's output lies along its cached trend.
# Block 0 may run ahead of its schedule, but not this many times the scheduled distance: further
# out the forecast would extrapolate beyond anything the trend was seen to follow.
MAX_REACH = 2.0


class ForecastEngine:
    """Stream caches, policy decisions and statistics of one sampling run."""

    # Whether the adapter hands over block 0's input and output in the last block's token layout
    # (``first_block_input``, ``first_block_output``'s anchor): residual forecasts need them.
    wants_anchors = False
    # The streams' class: an engine that keeps more per stream than the Taylor caches subclasses it.
    stream_type = Stream

    def __init__(
        self,
        policy: Policy,
        first_order: int = 1,
        last_order: int = 1,
        distance: str = "step",
        residual: bool = False,
        placement: Placement | None = None,
        gate_share: float = 1.0,
        gate_minimum: int = 0,
        target: SpeedTarget | None = None,
    ) -> None:
        """``residual``: forecast what the blocks after block 0 add to its output, and add the
        current block 0 output back, instead of forecasting the last block's state itself. A
        sampler that injects fresh noise moves every block's state off its trend, but block 0
        carries that noise into the forecast; the gate then judges block 0's own residual.

        ``distance``: what places a call on the caches' axis: its step index, its sigma, or
        (``"block0"``) block 0's output itself, which runs anyway: samplers and schedules move
        the features unevenly per step, and block 0 shows how far they actually went.

        ``placement`` decides where each stream's last-block cache rests (default: on the model's
        device). ``gate_share`` of block 0's tokens, at least ``gate_minimum``, is what the gate and
        block 0's cache see (core/subset.py); 1 keeps every token. ``target``: a speed to reach instead of
        accepting what the tolerance allows (core/target.py; the calibrated gate only)."""
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        check_order(first_order), check_order(last_order)
        if not 0.0 < gate_share <= 1.0:
            raise ValueError(f"gate_share must be in (0, 1], got {gate_share!r}.")
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be true or false, got {residual!r}.")
        if residual and not policy.uses_first_block:
            raise ValueError(
                f"a residual forecast adds block 0's output back, so it needs a policy that runs block 0 on "
                f"forecast calls (a confidence gate), not {policy.name!r}."
            )
        if target is not None and target.on and not policy.calibrated:
            raise ValueError("target_speedup needs the calibrated gate: it ranks the calls by their predicted misses.")
        self.residual = residual
        if residual:
            self.wants_anchors = True
        self.target = target if target is not None and target.on else None
        self.policy = policy
        self.first_order = first_order
        self.last_order = last_order
        self.distance = distance
        self.stats = RunStats(policy.name, policy.threshold, calibrated=policy.calibrated)
        self.stats.target = target.speedup if target is not None and target.on else None
        self.placement = placement or Placement()
        self.gate_share, self.gate_minimum = gate_share, gate_minimum
        self.memory = self.stats.memory = CacheMemory()
        self.sampler = SamplerResponse()
        self._moved_mark = 0  # the transfer meter's total when the last call ended
        self._streams: dict[Hashable, Stream] = {}
        self.judge = Judge(policy, self.stats, self.sampler, self.target, residual)

    # What the adapter tells the run and asks of it, besides the calls ---------------------------------

    @property
    def forecasts(self) -> bool:
        """Whether this engine forecasts at all (a tolerance of 0 keeps every call full and caches nothing)."""
        return self.policy.caches

    def name_run(self, model: str | None, sampler: str | None) -> None:
        """What the run samples, for its record: the model family and the sampler's name."""
        self.stats.model, self.stats.sampler = model, sampler

    def note(self, text: str) -> None:
        """Something the run should tell the user (each text once)."""
        self.stats.note(text)

    def record_fallback(self, step: StepPoint, blocks: int) -> None:
        """A call the adapter computed in full around the cache: all ``blocks`` ran."""
        self.stats.record_call(step.index, step.sigma, False, None, blocks, blocks, reason="fallback")

    def record_served(self, step: StepPoint, blocks: int, by: list[str]) -> None:
        """A call another cache (``by``) answered from its own cache: none of the ``blocks`` ran."""
        self.stats.record_served(step.index, step.sigma, blocks, by)

    def offloaded_in_plan(self, model_on_host: bool) -> tuple[bool, bool]:
        """Whether ComfyUI's two estimates before loading count the last block's caches in host memory
        (core/placement.py ``Placement.offloaded_in_plan``)."""
        return self.placement.offloaded_in_plan(model_on_host)

    def settle_memory(self, planned: int | None, host: torch.device, budget: Callable[[], int | None],
                      model_on_host: bool) -> None:
        """Once ComfyUI has loaded the model: the bytes the node added to its plan (None: no plan was made),
        and where the caches rest from now on (``Placement.settle``)."""
        self.memory.planned = planned
        self.placement.settle(host, budget, model_on_host)

    def finish(self) -> RunStats:
        """The run's record, once every cached tensor is freed."""
        self.reset()
        return self.stats

    # The calls --------------------------------------------------------------------------------------

    def observe_sampler(self, x: torch.Tensor, uncond: torch.Tensor | None, cond: torch.Tensor, scale: float,
                        sigma: float, denoised: torch.Tensor | None = None) -> None:
        """One evaluation of the guided model at ``sigma`` as the sampler combines it (after CFG): its latent,
        the denoised uncond and cond predictions and the cfg scale. The gate weighs a forecast's predicted
        miss by how strongly the sampler carries the guidance difference into its next latent."""
        step = self.sampler.observe(x, uncond, cond, scale, sigma, denoised)
        if step is not None:
            self.stats.record_sampler_step(step.guidance_gain, step.unexplained)

    def begin_call(
        self, step: StepPoint, keys: Sequence[Hashable], signature: Hashable = None, device: torch.device | None = None,
        roles: Sequence[int | None] | None = None,
    ) -> Call:
        """Plan a call; ``keys`` name its streams in batch order, ``signature`` their input layout, ``roles``
        their place in the guidance pair (ComfyUI's ``cond_or_uncond``; None: unknown).

        ``device`` is where the call runs: a stream whose caches live elsewhere (multi-GPU
        sampling may hand a conditioning to another device) has them moved there first.
        """
        if not keys:
            raise ValueError("a model call needs at least one stream key.")
        if self.stats.num_steps is None:
            self.stats.num_steps = step.num_steps
        streams = [self._stream(key, signature) for key in keys]
        self.judge.place(streams, roles)
        for stream in streams:
            if device is not None and stream.device not in (None, torch.device(device)):
                stream.to(device)
                self.stats.note("a stream moved to another device mid-run; its caches were moved with it")
        policy = self.policy
        ready = policy.caches and all(s.last.ready and (s.first.ready or not policy.uses_first_block) for s in streams)
        consecutive = max(s.consecutive for s in streams)
        position = step.sigma if self.distance == "sigma" else step.position
        mode, reason = policy.plan(step, consecutive, ready)
        weights = self.judge.weights_for(step)
        call = Call(step, streams, mode, position, reason, weights=weights, gain=self.judge.gain_for(weights),
                    weight=self.judge.step_weight(step))
        if call.mode is Mode.FORECAST:
            self._prepare_forecast(call)
        return call

    def first_block_input(self, call: Call, anchor: torch.Tensor) -> None:
        """Block 0's input in the last block's layout, before it runs (only when ``wants_anchors``)."""
        if self.residual:  # only the gate reads it, so only what the gate samples is kept
            chunks = self._split(call, anchor)
            call.anchors = None if chunks is None else [s.sampled(c).clone() for s, c in zip(call.streams, chunks)]

    @torch.no_grad()
    def first_block_output(self, call: Call, output: torch.Tensor, anchor: torch.Tensor | None = None) -> None:
        """Gate a GATE call on block 0's output; on full calls refresh block 0's cache.

        A call the cap made full is judged too (the gate's verdict is recorded, never followed):
        its last block then tells whether that verdict would have been right.
        ``anchor`` is the same output in the last block's layout, given when ``wants_anchors``.
        """
        if not self.policy.caches:
            return
        chunks = self._gate_features(call, output, anchor)
        if chunks is None:
            call.mode, call.reason = Mode.FULL, "fallback"
            return
        if call.mode is Mode.GATE or (call.reason == "cap" and self.policy.uses_first_block):
            if self.distance == "block0":
                call.located = [self._located(call, stream, chunk) for stream, chunk in zip(call.streams, chunks)]
            self.judge.judge(call, chunks)
        if call.mode is Mode.GATE:
            call.mode = Mode.FULL
            if call.gate_error is None:
                call.reason = "fallback"
            elif call.accepted:
                self._prepare_forecast(call, self._forecasts(call))
                if call.skips_blocks:
                    return
        if self.policy.uses_first_block:
            for stream, chunk in zip(call.streams, chunks):
                stream.first.update(chunk, call.position)

    @torch.no_grad()
    def last_block_output(self, call: Call, output: torch.Tensor) -> None:
        """Refresh the last block's cache with a fully computed output (residual: minus block 0's).

        On a judged call, the forecasts the gate would have used are first measured against this output at
        a sample of its tokens, and the calibrations learn from the misses (``_measure``)."""
        if not self.policy.caches or call.skips_blocks:
            return
        chunks = self._split(call, output)
        rows = self.judge.row_misses(call, chunks)
        if self.residual:
            if call.anchors is None or chunks is None:
                return
            chunks = [chunk - first for chunk, first in zip(chunks, call.anchors)]
        for stream, chunk in zip(call.streams, chunks or ()):
            stream.last.update(chunk, call.position)
        self.judge.measure(call, rows)

    def take_forecast(self, call: Call) -> torch.Tensor:
        """The last block's forecast for this call; a fresh tensor the caller may modify."""
        if call.forecast is None:
            raise RuntimeError("take_forecast called on a call that is not forecasting.")
        forecast, call.forecast = call.forecast, None
        return forecast

    def end_call(self, call: Call, blocks_run: int, blocks_total: int) -> None:
        forecast = call.skips_blocks
        self.judge.blocks_per_call = max(self.judge.blocks_per_call, blocks_total)
        self.stats.record_call(call.step.index, call.step.sigma, forecast, call.gate_error, blocks_run, blocks_total,
                               call.reason, call.predicted, call.measured, call.gain, call.weight, call.spent)
        for stream in call.streams:
            stream.consecutive = stream.consecutive + 1 if forecast else 0
            stream.spent = stream.spent + (call.score or 0.0) if forecast else 0.0
            self.stats.record_run(stream.consecutive, stream.spent)
        call.forecast = None
        self._account(forecast)

    def _account(self, forecast: bool) -> None:
        """After a call: what the caches hold by place, and the bytes the call moved between host and
        device (calls of multi-GPU work units that overlap in time share their counts)."""
        held = [stream.cached_bytes() for stream in self._streams.values()]
        self.memory.observe(sum(d for d, _ in held), sum(h for _, h in held))
        moved = self.placement.meter.total
        self.memory.record_call(forecast, moved - self._moved_mark)
        self._moved_mark = moved

    def cached_tensors(self) -> list[torch.Tensor]:
        return [t for stream in self._streams.values() for t in stream.tensors()]

    def reset(self) -> None:
        """Free every cached tensor (statistics are kept)."""
        for stream in self._streams.values():
            stream.reset()
        self._streams.clear()
        self.sampler.reset()
        if self.target is not None:
            self.target.reset()

    def _stream(self, key: Hashable, signature: Hashable) -> Stream:
        stream = self._streams.get(key)
        if stream is None:
            subset = TokenSubset(self.gate_share, self.gate_minimum) if self.gate_share < 1.0 else None
            measured = TokenSubset(self.gate_share, self.gate_minimum, seed=1, maximum=MEASURED_TOKENS)
            stream = self._streams[key] = self.stream_type(self.first_order, self.last_order, self._place_first,
                                                           self._place_last, subset, measured)
        elif stream.signature != signature:
            stream.reset()
            self.stats.note("the input layout of a stream changed mid-run; its caches were reset")
        stream.signature = signature
        return stream

    def _place_first(self, feature: torch.Tensor) -> Store:
        """Block 0's (sampled) cache stays on the device: every call reads it."""
        self.memory.add_bound(DEVICE, (self.first_order + 1) * nbytes(feature), feature.device)
        self.memory.need_working(working_bytes(feature.dtype, feature.numel(), self.first_order))
        return DeviceStore()

    def _place_last(self, feature: torch.Tensor) -> Store:
        """The last block's cache rests where the placement says, from the first call's shape."""
        size = nbytes(feature)
        store = self.placement.store_for((self.last_order + 1) * size)
        self.memory.add_bound(HOST if store.offloaded else DEVICE, (self.last_order + 1) * size, feature.device,
                              getattr(store, "host", None))
        self.memory.need_working(working_bytes(feature.dtype, feature.numel(), self.last_order))
        if self.policy.uses_first_block:  # a judged call's forecast at the sampled tokens, held for the pair
            tokens = feature.shape[1] if feature.ndim > 1 else 1
            sampled = sampled_tokens(tokens, self.gate_share, self.gate_minimum, MEASURED_TOKENS)
            self.memory.add_measuring(row_bytes(feature.dtype, feature.numel() // tokens * sampled, self.last_order))
        if self.residual:  # block 0's output in the last block's layout, held from block 0 to the last block
            self.memory.add_bound(DEVICE, size, feature.device)
        return store

    def place_window(self, percent_to_sigma: Callable[[float], float]) -> None:
        """The model's ``percent_to_sigma``: the start/end fractions become shares of its noise range."""
        self.policy.place_window(percent_to_sigma)

    def note_schedule(self, schedule: Sequence[float]) -> None:
        """The run's sigma schedule, once it is known: how much each step's misses weigh, and a note when no
        step of it can be forecast."""
        self.judge.note_schedule(schedule)
        if self.policy.caches and self.policy.forecastable_steps(schedule) == 0:
            steps = len(schedule) - 1
            self.stats.note(
                f"nothing to forecast: with {steps} step{'s' if steps != 1 else ''} the warm-up, the first and last "
                "step and the start/end window leave no step open (the calibrated gate also needs one judged call "
                "to learn from before it forecasts); lower warmup_steps or widen the window, or leave the node out "
                "of runs this short"
            )

    def _gate_features(self, call: Call, output: torch.Tensor, anchor: torch.Tensor | None) -> list[torch.Tensor] | None:
        """Per stream, what the gate compares with its forecast: block 0's output, or in residual
        mode what block 0 added to its input (both in the last block's layout). Residual mode keeps
        block 0's output on the call, to add back to a forecast or to subtract from the last block's."""
        if not self.residual:
            chunks = self._split(call, output)
            return None if chunks is None else [s.sampled(c) for s, c in zip(call.streams, chunks)]
        outputs = None if anchor is None else self._split(call, anchor)
        inputs, call.anchors = call.anchors, None
        if outputs is None or inputs is None or len(inputs) != len(outputs):
            return None
        call.anchors = [out.clone() for out in outputs]
        return [s.sampled(out) - inp for s, out, inp in zip(call.streams, outputs, inputs)]

    def _forecasts(self, call: Call) -> torch.Tensor | None:
        """In residual mode, per stream, block 0's current output added to the forecast of what the
        other blocks add, as one batch; otherwise None (the plain forecasts)."""
        if not self.residual:
            return None
        forecasts = self._last_forecasts(call)
        for part, first in zip(forecasts.chunk(len(call.streams)), call.anchors):
            part.add_(first)
        return forecasts

    def _last_forecasts(self, call: Call) -> torch.Tensor:
        """Every stream's last-block forecast, written into one batch tensor: no per-stream tensors
        to join, so a forecast call holds one batch-sized state beside the cache, not two."""
        shape, dtype, device = call.streams[0].last.signature
        if any(stream.last.signature != (shape, dtype, device) for stream in call.streams):
            raise ValueError("the streams of one call hold caches of different shapes")
        forecasts = torch.empty((shape[0] * len(call.streams), *shape[1:]), dtype=dtype, device=device)
        for stream, p, part in zip(call.streams, call.positions, forecasts.chunk(len(call.streams))):
            stream.last.predict(p, call.order, out=part)
        return forecasts

    @staticmethod
    def _located(call: Call, stream: Stream, feature: torch.Tensor) -> float:
        """Where block 0's feature lies along its cached trend, between the last refresh and
        ``MAX_REACH`` times the call's scheduled distance from it. Block 0 and the last block were
        refreshed together, so the last block is forecast at the same place: the step count only
        says how far the sampler went, block 0 says how far the features did."""
        anchor = stream.first.anchor
        offset = stream.first.progress(feature)
        if offset is None:
            return call.position
        return anchor + min(max(offset, 0.0), MAX_REACH * (call.position - anchor))

    def _split(self, call: Call, output: torch.Tensor) -> list[torch.Tensor] | None:
        count = len(call.streams)
        if output.shape[0] % count:
            self.stats.note(f"a batch of {output.shape[0]} does not split into {count} streams; computed in full")
            return None
        return list(output.chunk(count))

    @torch.no_grad()
    def _prepare_forecast(self, call: Call, forecast: torch.Tensor | None = None) -> None:
        """Switch the call to FORECAST, unless the forecast is not finite (then it stays FULL).

        ``forecast`` stands in for the last block's output of the streams' batch; the Taylor
        forecasts when not given.
        """
        if forecast is None:
            forecast = self._last_forecasts(call)
        # A sum is finite only when every value is (an infinity or NaN carries through it), and unlike
        # isfinite().all() it allocates no mask of the forecast's size (387 MB per Wan 14B 720p state).
        if bool(torch.isfinite(forecast.sum(dtype=torch.float32))):
            call.forecast = forecast
            call.mode = Mode.FORECAST
        else:
            call.mode, call.reason = Mode.FULL, "fallback"
            self.stats.note("a forecast held non-finite values; those calls were computed in full")
