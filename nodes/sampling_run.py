"""One sampling run of the node's model: everything the run learns lives here, and dies with it.

OUTER_SAMPLE (nodes/runtime.py) starts a ``SamplingRun`` and drops it when the sampler returns, fails
or is interrupted, as ComfyUI's EasyCache clones its holder for each run
(comfy_extras/nodes_easycache.py ``easycache_sample_wrapper``). The run owns its engine (caches,
statistics), the lock that guards the engine, the stream keys of the calls in flight, the call in
progress on each thread, whether caching was turned off for the rest of the run, and what ComfyUI
told it (the sigma schedule, other caches on the model). Nothing of one run reaches the next, and
two runs at once (two threads, or a sampler run inside another on the same model) share nothing.

Each model call is one pass through ``forward``: placed (a CUDA graph capture, no sigma schedule, or
block 0's or the last block's patch replaced: computed uncached), claimed (another thread runs one of
its streams, or the engine failed to plan it: uncached), run through the block patches (``block``),
and judged (nodes/calls.py ``Verdict``): DONE, SERVED by another cache, NATIVE (the blocks ran past the
patches: the output stands, caching stops) or RECOMPUTE (no trustworthy output: caching stops and the
call is computed again, uncached).

ComfyUI's multi-GPU work units (since v0.30.0, comfy/samplers.py ``_calc_cond_batch_multigpu``) call the
model from a thread per device at once: the call in progress is kept per thread, and the engine is
only touched under the run's lock; two threads never work on one stream at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch

from ..core import ForecastEngine, RunStats, StepPoint
from . import guards
from .calls import UNCACHED, ActiveCall, BlockOrderMismatch, CacheFailure, SchedulePlacer, Verdict, judge
from .comfy_calls import (BYPASS_REASONS, UNWRAPPED_CALLS, BlockKey, block_position_error, other_caches,
                          percent_to_sigma, replaced_patches, replacement_note, sampler_name, stream_keys,
                          stream_roles, transformer_options_of)
from .families import BlockLayout, leading_input
from .sampler_watch import SamplerWatch

log = logging.getLogger(__name__)

BlockArgs = dict
RunBlock = Callable[[BlockArgs], BlockArgs]


class SamplingRun:
    """The state of one sampling run; ``owner`` is the hooks object whose block patches are the node's."""

    def __init__(self, engine: ForecastEngine, layout: BlockLayout, owner: object, others: list[str],
                 sigmas=None) -> None:
        self.engine = engine
        self.layout = layout
        self.owner = owner
        self.others = others  # other caches on the model this run samples
        self.disabled = False  # set for the rest of the run when caching cannot be trusted
        self.calls_seen = 0  # model calls that reached the DIFFUSION_MODEL wrapper
        self.lock = threading.RLock()  # guards the engine: its streams and statistics are shared
        self.in_flight: set = set()  # stream keys of the calls now running, on any thread
        self._local = threading.local()  # the call in progress on this thread
        self._placer = SchedulePlacer(sigmas)  # the run's sigma schedule, as read
        self.watch = SamplerWatch(self._observe)  # what the sampler steps with, for the engine's fit

    @classmethod
    def start(cls, engine: ForecastEngine, layout: BlockLayout, owner: object, own_key: str, guider, sampler,
              sigmas=None) -> SamplingRun:
        """A run of ``guider`` (the OUTER_SAMPLE executor's ``class_obj``) with ``sampler`` over ``sigmas``: its
        record named, its start/end window placed in the model's noise range, other caches on the model noted."""
        engine.name_run(layout.family, sampler_name(sampler))
        to_sigma = percent_to_sigma(guider)
        if to_sigma is not None:
            engine.place_window(to_sigma)
        others = other_caches(getattr(guider, "model_options", None), own_key)
        if others:
            engine.note(
                f"{' and '.join(others)} is on this model too: use one cache at a time (remove it, or "
                "CGTaylorCache); calls it answers from its own cache run no block and are counted so"
            )
        return cls(engine, layout, owner, others, sigmas)

    def finish(self, completed: bool) -> RunStats:
        """The run's record, its caches freed. A run that completed without one model call through the
        hooks says so (an interrupted one may simply not have got that far)."""
        if completed and self.calls_seen == 0:
            reason = BYPASS_REASONS.get(self.layout.model_class, "it runs its blocks without ComfyUI's model wrappers")
            message = (f"{self.layout.model_class} made no model call through the node's hooks ({reason}), "
                       "so nothing was cached")
            log.warning("CGTaylorCache: %s", message)
            self.engine.note(message)
        with self.lock:
            return self.engine.finish()

    @property
    @guards.eager
    def _active(self) -> ActiveCall | None:
        """The model call in progress on the calling thread."""
        return getattr(self._local, "active", None)

    @_active.setter
    @guards.eager
    def _active(self, value: ActiveCall | None) -> None:
        self._local.active = value

    # post-CFG and PREDICT_NOISE (nodes/sampler_watch.py) ------------------------------------------
    def _observe(self, args: dict, stepped) -> None:
        """One evaluation (a post-CFG function's arguments) and what the sampler steps with, to the engine."""
        if self.disabled:
            return
        try:
            self._locked(self.engine.observe_sampler, args["input"], args.get("uncond_denoised"), args["cond_denoised"],
                         float(args.get("cond_scale", 1.0)), float(args["sigma"].flatten()[0]), stepped)
        except Exception as error:  # watching must never break the user's graph
            self.note(f"the sampler's steps could not be measured ({type(error).__name__}: {error}); "
                      "the gate judged forecasts as on Euler steps")

    # DIFFUSION_MODEL -----------------------------------------------------------------------------
    @guards.eager_frame
    def forward(self, executor, args: tuple, kwargs: dict):
        """One model call: placed, claimed, run, judged (the module docstring's states)."""
        with self.lock:
            self.calls_seen += 1
        if guards.capturing():  # before anything reads a tensor's value: a sync would break the capture
            self._disable(guards.CAPTURED)
            return self._uncached(None, executor, args, kwargs)
        options = transformer_options_of(args, kwargs)
        step = self._locate(options)
        replaced = None if step is None or self.disabled else self._patches_in_place(options)
        if replaced is None:
            return self._uncached(step, executor, args, kwargs)
        x = leading_input(args[0])
        keys = stream_keys(options, x, replaced)
        active = self._claim(step, keys, x, stream_roles(options, keys, replaced))
        if active is None:
            return self._uncached(step, executor, args, kwargs)
        out, failure = self._run(active, keys, executor, args, kwargs)
        verdict, why = judge(active, failure, bool(self.others))
        if verdict is Verdict.RECOMPUTE:
            self._disable(why)
            return self._uncached(step, executor, args, kwargs)
        if verdict is Verdict.NATIVE:
            self._disable(why)
            self._record_fallback(step)
        elif verdict is Verdict.SERVED:
            self._locked(self.engine.record_served, step, len(self.layout.keys), self.others)
        else:
            self._end_call(active, len(self.layout.keys) - len(replaced))
        return out

    @guards.eager_frame
    def _run(self, active: ActiveCall, keys: list, executor, args: tuple, kwargs: dict) -> tuple[object, str | None]:
        """The call through the block patches: its output, or None and why the cache failed."""
        previous, self._active = self._active, active
        try:
            return executor(*args, **kwargs), None
        except BlockOrderMismatch as error:
            return None, f"{error}; the rest of the run is computed in full"
        except CacheFailure as error:
            return None, f"the cache failed during a call ({error}); the rest of the run is computed in full"
        finally:
            self._active = previous
            self._release(keys)

    @guards.eager_frame
    def _uncached(self, step: StepPoint | None, executor, args: tuple, kwargs: dict):
        """The call with every block patch of ours passing straight through."""
        previous, self._active = self._active, UNCACHED
        try:
            out = executor(*args, **kwargs)
        finally:
            self._active = previous
        self._record_fallback(step)
        return out

    # block patches -------------------------------------------------------------------------------
    @guards.eager_frame
    def block(self, key: BlockKey, args: BlockArgs, run: RunBlock) -> BlockArgs:
        active = self._active
        if active is None:  # inside the run, but the call bypassed the DIFFUSION_MODEL wrapper
            self.note(UNWRAPPED_CALLS)
            return run(args)
        if active.call is None:
            return run(args)
        if guards.capturing():  # a capture begun inside the call (per block): the call is computed again in full
            raise CacheFailure(guards.CAPTURED)
        self._check_position(key, args)
        if key == self.layout.first:
            return self._first_block(active, args, run)
        if key == self.layout.last:
            return self._last_block(active, args, run)
        if active.call.skips_blocks:
            return args
        active.blocks_run += 1
        return run(args)

    @guards.eager_frame
    def _first_block(self, active: ActiveCall, args: BlockArgs, run: RunBlock) -> BlockArgs:
        """Block 0 feeds the gate; on a call already forecasting it is not run at all."""
        call, engine, layout = active.call, self.engine, self.layout
        active.reached_first = True
        if engine.wants_anchors and not call.skips_blocks:
            self._engine_step(engine.first_block_input, call, layout.last_space(args))
        if call.skips_blocks:
            return args
        out = run(args)
        active.blocks_run += 1
        anchor = layout.last_space(out) if engine.wants_anchors else None
        self._engine_step(engine.first_block_output, call, layout.gate_state(out, args), anchor)
        return out

    @guards.eager_frame
    def _last_block(self, active: ActiveCall, args: BlockArgs, run: RunBlock) -> BlockArgs:
        """The last block returns the forecast, or runs and refreshes the caches."""
        call, engine = active.call, self.engine
        active.reached_last = True
        if call.skips_blocks:
            forecast = self._engine_step(engine.take_forecast, call)
            try:
                return self.layout.with_state(args, forecast)
            except ValueError as error:
                raise CacheFailure(str(error)) from None
        out = run(args)
        active.blocks_run += 1
        self._engine_step(engine.last_block_output, call, self.layout.state(out))
        return out

    # the call's place and streams ------------------------------------------------------------------
    @guards.eager
    def _check_position(self, key: BlockKey, args: BlockArgs) -> None:
        error = block_position_error(self.layout, key, args)
        if error is not None:
            raise BlockOrderMismatch(error)

    @guards.eager
    def _locate(self, options: dict) -> StepPoint | None:
        step, changed, problem = self._placer.place(options)
        if changed is not None:
            self._locked(self.engine.note_schedule, changed)
        if problem is not None:
            self.note(problem)
        return step

    @guards.eager
    def _patches_in_place(self, options: dict) -> tuple[BlockKey, ...] | None:
        """Which of the node's block patches another node replaced for this call: () when none, None when
        block 0's or the last block's is gone (no gate or no forecast could reach the output). A call with
        only middle blocks replaced computes another function than the main calls, so it gets streams of
        its own (``stream_keys``) and never feeds the positive cond's caches."""
        replaced = replaced_patches(options, self.layout, self.owner)
        if not replaced:
            return ()
        self.note(replacement_note(replaced, self.layout))
        return None if self.layout.first in replaced or self.layout.last in replaced else replaced

    # the engine, under the run's lock --------------------------------------------------------------
    @guards.eager
    def _claim(self, step: StepPoint, keys: list, x: torch.Tensor, roles: list[int | None]) -> ActiveCall | None:
        """Plan the call, unless another thread is running one of its streams (then None)."""
        with self.lock:
            if self.in_flight.intersection(keys):
                self.engine.note("two calls of the same conditioning ran at once on different threads; "
                                 "the later one was computed in full")
                return None
            self.in_flight.update(keys)
            signature = (x.shape[0] // len(keys), tuple(x.shape[1:]), x.dtype)
            try:
                with guards.outside_allocation_graph():
                    return ActiveCall(self.engine.begin_call(step, keys, signature, x.device, roles))
            except Exception as error:  # e.g. out of memory moving a stream's caches: no cache, no crash
                self.in_flight.difference_update(keys)
                failure = f"{type(error).__name__}: {error}"
        self._disable(f"the cache failed while planning a call ({failure}); the rest of the run is computed in full")
        return None

    @guards.eager
    def _release(self, keys: list) -> None:
        with self.lock:
            self.in_flight.difference_update(keys)

    @guards.eager
    def _end_call(self, active: ActiveCall, blocks_total: int) -> None:
        with self.lock, guards.outside_allocation_graph():
            self.engine.end_call(active.call, active.blocks_run, blocks_total)

    @guards.eager
    def _engine_step(self, step, *args):
        try:
            with self.lock, guards.outside_allocation_graph():
                return step(*args)
        except Exception as error:
            raise CacheFailure(f"{type(error).__name__}: {error}") from error

    @guards.eager
    def _record_fallback(self, step: StepPoint | None) -> None:
        if step is not None:
            self._locked(self.engine.record_fallback, step, len(self.layout.keys))

    @guards.eager
    def _disable(self, reason: str) -> None:
        with self.lock:
            if not self.disabled:
                log.warning("CGTaylorCache: %s", reason)
            self.disabled = True
            self.engine.note(reason)
            self.engine.reset()

    @guards.eager
    def note(self, text: str) -> None:
        """Something the run should tell the user."""
        self._locked(self.engine.note, text)

    @guards.eager
    def _locked(self, action: Callable, *args):
        with self.lock:
            return action(*args)
