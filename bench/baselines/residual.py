"""Residual-reuse baselines on the node's engine: first-block caching and input-change caching.

They answer "is CG-Taylor better than simply reusing the last computed residual?", so they
follow their published rules, written for this engine:

* First-block cache (FBCache, from ParaAttention / Comfy-WaveSpeed): block 0 always runs.
  When its residual (output - input) changed, relative to the residual of the last full
  call, by less than the threshold (relative L1), blocks 1..L-1 are skipped and the
  residual they added at the last full call is added to block 0's output.
* Input-change cache (EasyCache, as ComfyUI ships it in comfy_extras/nodes_easycache.py;
  TeaCache follows the same idea with a fitted polynomial): before block 0, the change of
  the model's input since the previous call, scaled by the output/input change ratio seen
  between the last two full calls and normalised by the last output's magnitude, is added
  to a running sum. While the sum stays below the threshold every block is skipped and the
  whole stack's cached residual (output - input) is added to the input; a full call resets it.

Tensors here are "anchors": block 0's input or output in the last block's token layout
(FLUX: text and image tokens concatenated), so a residual can bridge the whole stack. What a
method reuses rests per stream in ``HeldStream.held``, beside the engine's (unused) Taylor caches.
The node's memory ledger does not bound these tensors, so the benchmark leaves these methods out
of ComfyUI's memory plan (bench/runs.py ``Setup.patched``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from cgtaylor_cache.core.call import Call, Stream
from cgtaylor_cache.core.engine import ForecastEngine
from cgtaylor_cache.core.gate import relative_l1
from cgtaylor_cache.core.policy import ConfidenceGated, Mode
from cgtaylor_cache.core.schedule import Schedule
from cgtaylor_cache.core.steps import StepPoint


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.float().abs().mean())


def joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """Per-stream stand-ins for the last block's output as the streams' batch."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class HeldStream(Stream):
    """A stream that also holds the named tensors a residual method reuses."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[str, torch.Tensor] = {}

    def tensors(self) -> list[torch.Tensor]:
        return super().tensors() + list(self.held.values())

    @property
    def device(self) -> torch.device | None:
        return super().device or next((t.device for t in self.held.values()), None)

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.held = {name: t.to(device) for name, t in self.held.items()}

    def reset(self) -> None:
        super().reset()
        self.held.clear()


class ResidualReuse(ForecastEngine):
    """Shared planning: gate a call once every stream holds what the method reuses."""

    wants_anchors = True
    stream_type = HeldStream
    name = ""
    needs: frozenset[str] = frozenset()  # the held tensors that make a stream ready

    def __init__(self, threshold: float, schedule: Schedule = Schedule()) -> None:
        super().__init__(ConfidenceGated(threshold, schedule, name=self.name), 0, 0)

    def begin_call(
        self, step: StepPoint, keys: Sequence[Hashable], signature: Hashable = None, device: torch.device | None = None,
        roles: Sequence[int | None] | None = None,
    ) -> Call:
        call = super().begin_call(step, keys, signature, device, roles)
        ready = all(self.needs <= s.held.keys() for s in call.streams)
        call.mode, call.reason = self.policy.plan(step, max(s.consecutive for s in call.streams), ready)
        return call

    @torch.no_grad()
    def last_block_output(self, call: Call, output: torch.Tensor) -> None:
        chunks = self._split(call, output)
        if chunks is None or call.skips_blocks or call.anchors is None:
            return
        for stream, out, anchor in zip(call.streams, chunks, call.anchors):
            self._refresh(stream.held, out, anchor)
        call.anchors = None

    def _refresh(self, held: dict[str, torch.Tensor], output: torch.Tensor, anchor: torch.Tensor) -> None:
        """Store what a full call teaches: the last block's output next to this call's anchor."""
        raise NotImplementedError


class FirstBlockCache(ResidualReuse):
    name = "fbcache"
    needs = frozenset({"residual", "first_residual"})

    def first_block_input(self, call: Call, anchor: torch.Tensor) -> None:
        call.anchors = [chunk.clone() for chunk in self._split(call, anchor) or ()]

    @torch.no_grad()
    def first_block_output(self, call: Call, output: torch.Tensor, anchor: torch.Tensor | None = None) -> None:
        chunks = self._split(call, anchor)
        if chunks is None or len(call.anchors or ()) != len(chunks):
            call.mode, call.reason = Mode.FULL, "fallback"
            return
        residuals = [out - inp for out, inp in zip(chunks, call.anchors)]
        if call.mode is Mode.GATE:
            call.mode = Mode.FULL
            try:
                call.gate_error = relative_l1([s.held["first_residual"] for s in call.streams], residuals)
            except ValueError:  # shapes moved under the stream: compute in full, start afresh
                call.gate_error = None
            if call.gate_error is not None and self.policy.accepts(call.gate_error):
                self._prepare_forecast(call, joined([out + s.held["residual"] for out, s in zip(chunks, call.streams)]))
                if call.skips_blocks:
                    return
        for stream, residual in zip(call.streams, residuals):
            stream.held["first_residual"] = residual
        call.anchors = [chunk.clone() for chunk in chunks]

    def _refresh(self, held: dict[str, torch.Tensor], output: torch.Tensor, anchor: torch.Tensor) -> None:
        held["residual"] = output - anchor  # what blocks 1..L-1 added to block 0's output


class InputChangeCache(ResidualReuse):
    name = "input-change"
    needs = frozenset({"residual", "rate", "output_norm", "previous_input"})

    @torch.no_grad()
    def first_block_input(self, call: Call, anchor: torch.Tensor) -> None:
        chunks = self._split(call, anchor)
        if chunks is None:
            call.mode, call.reason = Mode.FULL, "fallback"
            return
        if call.mode is Mode.GATE:
            call.mode = Mode.FULL
            try:
                estimate = max(self._estimate(stream, chunk) for stream, chunk in zip(call.streams, chunks))
            except RuntimeError:  # a shape changed under the stream
                estimate = float("inf")
            call.gate_error = estimate
            if self.policy.accepts(estimate):
                self._prepare_forecast(call, joined([chunk + s.held["residual"] for chunk, s in zip(chunks, call.streams)]))
        for stream, chunk in zip(call.streams, chunks):
            if call.mode is not Mode.FORECAST:
                stream.held.pop("accumulated", None)
            stream.held["previous_input"] = chunk.clone()
        call.anchors = [chunk.clone() for chunk in chunks] if call.mode is Mode.FULL else None

    def _estimate(self, stream, chunk: torch.Tensor) -> float:
        """The running sum of estimated relative output changes, with this call's added."""
        change = _mean_abs(chunk - stream.held["previous_input"])
        held = stream.held
        total = float(held.get("accumulated", 0.0)) + float(held["rate"]) * change / max(float(held["output_norm"]), 1e-12)
        held["accumulated"] = torch.tensor(total)
        return total

    def first_block_output(self, call: Call, output: torch.Tensor, anchor: torch.Tensor | None = None) -> None:
        """The decision was taken on block 0's input."""

    def _refresh(self, held: dict[str, torch.Tensor], output: torch.Tensor, anchor: torch.Tensor) -> None:
        if "full_output" in held and held["full_output"].shape == output.shape:
            input_change = _mean_abs(anchor - held["full_input"])
            if input_change > 0:
                held["rate"] = torch.tensor(_mean_abs(output - held["full_output"]) / input_change)
        held["full_input"], held["full_output"] = anchor, output.clone()
        held["residual"] = output - anchor  # what the whole stack added to its input
        held["output_norm"] = torch.tensor(_mean_abs(output))
