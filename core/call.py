"""What the engine keeps per stream and plans per model call.

A stream is one conditioning entry's run through the model (cond, uncond, a skip-layer call): its Taylor
caches of block 0's and the last block's output, the calibrations that learn how far its forecasts miss,
and its place in the guidance pair. A call is one model call's plan: its streams, its mode and what the
gate judged of it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from .calibration import ErrorCalibration
from .guidance import Weights
from .placement import Store
from .policy import Mode
from .steps import StepPoint
from .subset import TokenSubset
from .taylor import TaylorForecaster

# The last block's forecast is measured, on full calls the gate judged, at this many of its tokens at
# most (a sample as block 0's, core/subset.py): both streams' forecasts at one sample are what the
# difference between them needs, 21 MB of float32 per stream for Wan 14B's 5,120 channels.
MEASURED_TOKENS = 1024


class Stream:
    """The caches of one stream: Taylor caches of block 0's and the last block's output.

    ``place_first`` and ``place_last`` choose each cache's store from its first feature
    (core/placement.py); ``subset`` is the gate's fixed sample of block 0's tokens (None: all),
    ``measured`` the sample of the last block's tokens its forecast is measured at.

    Two calibrations learn from block 0's error on this stream (core/calibration.py): ``own``, how far
    the last block's forecast misses; ``difference``, how far the difference between this stream's and
    its guidance partner's forecasts misses (core/guidance.py). ``role`` is the stream's place in the
    guidance pair (COND, UNCOND, another index of the guider's conds, or None: unknown)."""

    def __init__(
        self,
        first_order: int,
        last_order: int,
        place_first: Callable[[torch.Tensor], Store] | None = None,
        place_last: Callable[[torch.Tensor], Store] | None = None,
        subset: TokenSubset | None = None,
        measured: TokenSubset | None = None,
    ) -> None:
        self.first = TaylorForecaster(first_order, place_first)
        self.last = TaylorForecaster(last_order, place_last)
        self.subset = subset
        self.measured = measured or TokenSubset(1.0, 0, maximum=MEASURED_TOKENS)
        self.own = ErrorCalibration()
        self.difference = ErrorCalibration()
        self.role: int | None = None
        self.signature: Hashable | None = None
        self.consecutive = 0  # forecasts in a row
        self.spent = 0.0  # the gate's scores of those forecasts, added up

    def tensors(self) -> list[torch.Tensor]:
        return self.first.tensors() + self.last.tensors()

    def cached_bytes(self) -> tuple[int, int]:
        """Bytes cached on the device and in host memory."""
        on_host = sum(nbytes(t) for t in self.last.tensors()) if _offloaded(self.last) else 0
        return sum(nbytes(t) for t in self.tensors()) - on_host, on_host

    def sampled(self, state: torch.Tensor) -> torch.Tensor:
        """What the gate and block 0's cache see of a block-0 state."""
        return state if self.subset is None else self.subset(state)

    @property
    def device(self) -> torch.device | None:
        """Where the stream's calls run, as far as its caches know (None while nothing is cached)."""
        return self.last.device or self.first.device

    def to(self, device: torch.device) -> None:
        self.first.to(device)
        self.last.to(device)

    def reset(self) -> None:
        self.first.reset()
        self.last.reset()
        self.own.reset()
        self.difference.reset()
        self.consecutive = 0
        self.spent = 0.0

    def rows(self, state: torch.Tensor) -> torch.Tensor:
        """The indices of the last block's tokens its forecast is measured at."""
        index = self.measured.index(state.shape[1], state.device)
        return torch.arange(state.shape[1], device=state.device) if index is None else index


@dataclass
class Call:
    step: StepPoint
    streams: list[Stream]
    mode: Mode
    position: float  # where the Taylor caches are evaluated: step position or sigma
    reason: str | None = None  # why the call is full, should it end full (core/stats.py FULL_REASONS)
    forecast: torch.Tensor | None = None
    gate_error: float | None = None  # block 0's forecast error, all streams together
    first_errors: list[list[float]] | None = None  # the same per stream and image, once the call was judged
    predicted: float | None = None  # the guided miss the calibrations predict (worst stream and image)
    measured: float | None = None  # a full call's: the guided miss its forecasts would have had (worst image)
    anchors: list[torch.Tensor] | None = None  # residual forecasts: this call's block-0 tensors per stream
    order: int | None = None  # a lower Taylor order that followed block 0 better (None: the caches' own)
    located: list[float] | None = None  # per stream, where block 0 lies along its trend (distance "block0")
    weights: Weights = Weights()  # the coming step's weights on the uncond and cond predictions (core/guidance.py)
    gain: float = 1.0  # how much more than an Euler step the sampler carries the guidance difference (core/sampler_response.py)
    weight: float = 1.0  # how much more a miss at this step moves the image than at an average step (core/steps.py)
    score: float | None = None  # what the gate weighed: the prediction times the step's weight
    spent: float | None = None  # what the forecasts in a row before this call had scored
    accepted: bool = False  # the gate's verdict on a GATE call

    @property
    def positions(self) -> list[float]:
        """Per stream, where the forecasts are evaluated."""
        return self.located or [self.position] * len(self.streams)

    @property
    def skips_blocks(self) -> bool:
        return self.mode is Mode.FORECAST


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _offloaded(forecaster: TaylorForecaster) -> bool:
    return forecaster.store is not None and forecaster.store.offloaded
