"""A model call as a sampling run sees it: its place in the schedule, its way through the block patches,
and what its end says.

Owned here: ``SchedulePlacer`` (the run's sigma schedule, read once per schedule tensor, and each call's
step in it), ``ActiveCall`` (a call's progress through the node's block patches, on the thread that runs
it), ``judge`` (the verdict on a call that ran) and the failures a block patch raises. Nothing here holds
an engine or a lock: nodes/sampling_run.py acts on what these say.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from ..core import Call, StepPoint, locate


class CacheFailure(RuntimeError):
    """The engine failed inside a block patch; the call is recomputed without the cache."""


class BlockOrderMismatch(CacheFailure):
    """A block patch ran at another place in the block loop than the layout says it should."""


@dataclass
class ActiveCall:
    call: Call | None  # None: the call runs uncached and every block patch passes through
    blocks_run: int = 0
    reached_first: bool = False
    reached_last: bool = False


UNCACHED = ActiveCall(None)


class Verdict(Enum):
    DONE = "done"  # the call ran through the patches: the engine closes it
    SERVED = "served"  # another cache answered it without running the model
    NATIVE = "native"  # the blocks ran past the patches: the output stands, caching stops
    RECOMPUTE = "recompute"  # no trustworthy output: caching stops, the call is computed again uncached


def judge(active: ActiveCall, failure: str | None, served_by_others: bool) -> tuple[Verdict, str | None]:
    """What a call that ran tells, and why caching stops where it does. ``failure``: why the cache failed
    during the call; ``served_by_others``: another cache on the model may answer calls without the model."""
    if failure is not None:
        return Verdict.RECOMPUTE, failure
    if not (active.reached_first or active.reached_last):
        if served_by_others:
            return Verdict.SERVED, None
        return Verdict.NATIVE, "this model never called its block patches, so nothing could be cached"
    if not active.reached_last:
        # a forecast that skipped the last block reached no output; a full call's last block ran natively
        why = "the model skipped its last block patch; the rest of the run is computed in full"
        return (Verdict.RECOMPUTE if active.call.skips_blocks else Verdict.NATIVE), why
    return Verdict.DONE, None


class SchedulePlacer:
    """Places each call by its sigma in the run's schedule (``sample_sigmas``). The schedule's values are
    read once per schedule tensor, kept with the tensor in one attribute so that a thread never reads a
    mixed pair; multi-GPU work units hand every thread its own copy of the same schedule.

    ``sigmas`` are the schedule as the run began (OUTER_SAMPLE's), read before any sampler touched it:
    uni_pc and uni_pc_bh2 write 0.001 over the final 0 of the very tensor they are handed, which is the
    one ``sample_sigmas`` holds (comfy/extra_samplers/uni_pc.py ``sample_unipc``, v0.3.64 to v0.38.0), and
    read from it that run would hand its latent on with noise left, so its last step would not be its
    last. A schedule that differs from the run's first only in its last value is the run's first."""

    def __init__(self, sigmas=None) -> None:
        self._schedule: tuple[torch.Tensor | None, list[float]] = (None, [])
        self._start = [float(s) for s in sigmas.flatten().tolist()] if isinstance(sigmas, torch.Tensor) else None

    def place(self, options: dict) -> tuple[StepPoint | None, list[float] | None, str | None]:
        """The call's step (None: it cannot be placed), the schedule's values where they differ from the last
        schedule's (else None), and why the call could not be placed (else None)."""
        schedule, sigmas = options.get("sample_sigmas"), options.get("sigmas")
        if schedule is None or sigmas is None:
            return None, None, "the sampler passed no sigma schedule; those calls were computed in full"
        changed = None
        source, values = self._schedule
        if schedule is not source:
            known, values = values, [float(s) for s in schedule.flatten().tolist()]
            start = self._start
            if start is not None and len(start) == len(values) and start[:-1] == values[:-1]:
                values = start
            self._schedule = (schedule, values)
            changed = values if values != known else None
        try:
            return locate(float(sigmas.flatten()[0]), values), changed, None
        except ValueError as error:
            return None, changed, f"unusable sigma schedule ({error}); those calls were computed in full"
