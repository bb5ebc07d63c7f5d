"""A DiCache-style baseline on the node's engine: a shallow probe decides and aligns the deep cache.

DiCache (Bu et al., arXiv 2508.17356) lets the model's own shallow layers answer both caching
questions. Written here for this engine, with block 0 as the probe:

* When: the probe (block 0's output) runs on every call. Its relative L1 change since the
  previous call is added to a running sum, which a full call resets; while the sum stays below
  the threshold, the deep blocks are skipped. The probe's change stands in for the change of
  the model's output, which the method's authors found to move together with it.
* What: a full call stores the deep blocks' residual (last block's output minus the probe's).
  On a skipped call that residual is not extrapolated in time. It is moved along the direction
  it took between the last two full calls by as much as the probe has moved since the last full
  call, measured against how far the probe moved between those two full calls, and the probe's
  current output is added back. The probe's own trajectory sets the step, so a probe that barely
  moved leaves the residual where it was, and one that moved a full interval moves it a full one.

Like the other residual baselines it works on tensors in the last block's token layout.
"""

from __future__ import annotations

import torch

from cgtaylor_cache.core.call import Call
from cgtaylor_cache.core.gate import relative_l1
from cgtaylor_cache.core.policy import Mode

from .residual import ResidualReuse, _mean_abs, joined


class ProbeAlignedCache(ResidualReuse):
    name = "dicache"
    needs = frozenset({"residual", "probe", "last_probe"})

    @torch.no_grad()
    def first_block_output(self, call: Call, output: torch.Tensor, anchor: torch.Tensor | None = None) -> None:
        if not self.policy.caches:  # threshold 0: nothing is ever reused, so nothing is kept
            return
        probes = self._split(call, anchor)
        if probes is None:
            call.mode, call.reason = Mode.FULL, "fallback"
            return
        sums = None
        if call.mode is Mode.GATE:
            call.mode = Mode.FULL
            try:
                sums = [self._accumulated(stream.held) + relative_l1([stream.held["last_probe"]], [probe])
                        for stream, probe in zip(call.streams, probes)]
                call.gate_error = max(sums)
            except ValueError:  # a shape changed under the stream: compute in full
                call.gate_error = None
            if call.gate_error is not None and self.policy.accepts(call.gate_error):
                self._prepare_forecast(call, joined([self._aligned(stream.held, probe)
                                                     for stream, probe in zip(call.streams, probes)]))
        for n, (stream, probe) in enumerate(zip(call.streams, probes)):
            if call.skips_blocks:
                stream.held["accumulated"] = torch.tensor(sums[n])
            else:
                stream.held.pop("accumulated", None)
            stream.held["last_probe"] = probe.clone()
        call.anchors = None if call.skips_blocks else [probe.clone() for probe in probes]

    @staticmethod
    def _accumulated(held: dict[str, torch.Tensor]) -> float:
        return float(held["accumulated"]) if "accumulated" in held else 0.0

    @staticmethod
    def _aligned(held: dict[str, torch.Tensor], probe: torch.Tensor) -> torch.Tensor:
        """The deep residual moved along its last direction as far as the probe moved along its own."""
        residual = held["residual"]
        if "previous_residual" not in held:  # one full call so far: nothing to align along
            return probe + residual
        interval = _mean_abs(held["probe"] - held["previous_probe"])
        moved = _mean_abs(probe - held["probe"])
        step = moved / interval if interval > 0 else 0.0
        return probe + residual + step * (residual - held["previous_residual"])

    def _refresh(self, held: dict[str, torch.Tensor], output: torch.Tensor, anchor: torch.Tensor) -> None:
        if "residual" in held and held["residual"].shape == output.shape:
            held["previous_residual"], held["previous_probe"] = held["residual"], held["probe"]
        held["residual"] = output - anchor  # what the deep blocks added to the probe
        held["probe"] = anchor
