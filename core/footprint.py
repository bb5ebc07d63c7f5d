"""The memory an engine's caches will take for given hidden-state shapes, without allocating them.

One full first call is driven through the engine with meta tensors (shape and dtype, no data):
the same placement decisions, token subset and bound arithmetic a real run makes from its
first call, so the answer is the node's own accounting, not a formula beside it. Offloaded
states land on the meta device too, so nothing is allocated anywhere.
"""

from __future__ import annotations

import torch

from .engine import ForecastEngine
from .memory import CacheMemory
from .placement import Placement
from .steps import StepPoint

META = torch.device("meta")


def footprint(
    engine: ForecastEngine,
    gate_state: tuple[int, ...],
    last_state: tuple[int, ...],
    dtype: torch.dtype,
    streams: int = 1,
    offload: bool | None = None,
) -> CacheMemory:
    """The bound ``engine`` (a fresh one: the call is its first) reports after a first call of
    ``streams`` streams whose block 0 puts out ``gate_state`` and whose last block ``last_state`` (both
    per stream, batch first). ``offload`` sizes the last block's caches as resting in host memory or on
    the device whatever the engine's own ``cache_device`` (a memory plan sizes both, ``Placement.sizing``);
    None keeps its placement, which is then expected to offload to the meta device (``Placement.configure``)."""
    if offload is not None:
        engine.placement = Placement.sizing(offload)
    step = StepPoint(index=0, position=0.0, sigma=1.0, num_steps=2)
    keys = [("footprint", n) for n in range(streams)]

    def batch(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty((shape[0] * streams, *shape[1:]), dtype=dtype, device=META)

    call = engine.begin_call(step, keys, ("footprint", tuple(gate_state)), META)
    if engine.wants_anchors:
        engine.first_block_input(call, batch(last_state))
    engine.first_block_output(call, batch(gate_state), batch(last_state) if engine.wants_anchors else None)
    engine.last_block_output(call, batch(last_state))
    engine.end_call(call, 2, 2)
    return engine.memory
