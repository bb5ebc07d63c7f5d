"""One model call through an engine, as nodes/sampling_run.py drives it, for the engine-level tests.

``stack`` is a small stand-in for a transformer: ``block(i, x)`` runs block ``i`` and counts it
in ``ran``, and ``biases`` has one entry per block. Anchors (block 0's input and output in the
last block's layout) are handed over only when the engine wants them, as the runtime does.
"""

from __future__ import annotations

import torch

from core import StepPoint


def drive(engine, stack, x: torch.Tensor, index: int, steps: int):
    """Step ``index`` of ``steps``: returns the last block's output (or its stand-in) and the call."""
    step = StepPoint(index, float(index), 1.0 - index / steps, steps)
    call = engine.begin_call(step, ["cond"], tuple(x.shape[1:]))
    before = stack.ran
    if engine.wants_anchors:
        engine.first_block_input(call, x)
    hidden = stack.block(0, x)
    engine.first_block_output(call, hidden, hidden if engine.wants_anchors else None)
    if call.skips_blocks:
        out = engine.take_forecast(call)
    else:
        for i in range(1, len(stack.biases)):
            hidden = stack.block(i, hidden)
        engine.last_block_output(call, hidden)
        out = hidden
    engine.end_call(call, stack.ran - before, len(stack.biases))
    return out, call
