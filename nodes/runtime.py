"""The cache at work inside ComfyUI: one sampling run, one engine, every model call planned.

Three hooks, all on the node's own model clone:

* OUTER_SAMPLE wrapper: a fresh engine per sampling run, freed and reported at the end
  (also when sampling fails or is interrupted).
* DIFFUSION_MODEL wrapper: locates the call in the sigma schedule, names its streams
  (one per cond/uncond entry) and asks the engine for a plan before any block runs.
* One ``patches_replace["dit"]`` patch per block: block 0 feeds the gate, the middle
  blocks pass through on forecast calls, the last block returns the forecast.

Every decision is taken outside the blocks, so per-block ``torch.compile`` keeps working.
Anything unexpected degrades to full compute for the call or the run, never to a wrong
image: a forecast that did not reach the output, an engine error, block patches that
another node replaced after this one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core import Call, ForecastEngine, RunStats, StepPoint, locate
from .families import BlockLayout

log = logging.getLogger(__name__)

WRAPPER_KEY = "cgtaylor"
# comfy/patcher_extension.py:49-56 (WrappersMP); plain strings, so the pack imports without ComfyUI.
OUTER_SAMPLE = "outer_sample"
DIFFUSION_MODEL = "diffusion_model"

BlockKey = tuple[str, int]
BlockArgs = dict
RunBlock = Callable[[BlockArgs], BlockArgs]


UNWRAPPED_CALLS = (
    "the model ran its blocks without calling DIFFUSION_MODEL wrappers, so nothing was cached; "
    "this ComfyUI is older than the node needs: update ComfyUI"
)


class CacheFailure(RuntimeError):
    """The engine failed inside a block patch; the call is recomputed without the cache."""


@dataclass
class ActiveCall:
    call: Call
    blocks_run: int = 0
    reached_first: bool = False
    reached_last: bool = False


def transformer_options_of(args: tuple, kwargs: dict) -> dict:
    """``transformer_options`` of a DIFFUSION_MODEL call: the last positional dict (Flux and
    Wan pass it last, comfy/ldm/flux/model.py:236, comfy/ldm/wan/model.py:618) or a keyword."""
    options = kwargs.get("transformer_options")
    if isinstance(options, dict):
        return options
    return next((arg for arg in reversed(args) if isinstance(arg, dict)), {})


class CacheRuntime:
    """The hooks of one patched model; state lives here, never on the shared model."""

    def __init__(
        self, new_engine: Callable[[], ForecastEngine], layout: BlockLayout, report: Callable[[RunStats], None]
    ) -> None:
        self.new_engine = new_engine  # the node passes its settings' factory; the benchmark swaps policies
        self.layout = layout
        self.report = report
        self.engine: ForecastEngine | None = None
        self.active: ActiveCall | None = None
        self.disabled = False  # set for the rest of a run when caching cannot be trusted
        self._schedule_source: torch.Tensor | None = None
        self._schedule: list[float] = []

    # OUTER_SAMPLE ------------------------------------------------------------------
    def sample(self, executor, *args, **kwargs):
        saved = self.engine, self.active, self.disabled, self._schedule_source
        self.engine = self.new_engine()
        self.engine.stats.model = self.layout.family
        self.active, self.disabled, self._schedule_source = None, False, None
        try:
            return executor(*args, **kwargs)
        finally:
            engine = self.engine
            self.engine, self.active, self.disabled, self._schedule_source = saved
            self._schedule = []
            engine.reset()
            try:
                self.report(engine.stats)
            except Exception:  # a report must never break the user's graph
                log.exception("CGTaylorCache: could not report the run statistics")

    # DIFFUSION_MODEL -----------------------------------------------------------------
    def forward(self, executor, *args, **kwargs):
        engine = self.engine
        if engine is None:  # a call outside any sampling run this node manages
            return executor(*args, **kwargs)
        options = transformer_options_of(args, kwargs)
        step = self._locate(engine, options)
        if step is None or self.disabled or not self._patches_in_place(engine, options):
            return self._run_uncached(engine, step, executor, args, kwargs)
        x = args[0]
        keys = self._stream_keys(options, x)
        signature = (x.shape[0] // len(keys), tuple(x.shape[1:]), x.dtype, x.device)
        active = ActiveCall(engine.begin_call(step, keys, signature))
        self.active = active
        try:
            out = executor(*args, **kwargs)
        except CacheFailure as error:
            out = None
            self._disable(engine, f"the cache failed during a call ({error}); the rest of the run is computed in full")
        finally:
            self.active = None
        if not (active.reached_first or active.reached_last):  # the blocks ran natively: the output stands
            self._disable(engine, "this model never called its block patches, so nothing could be cached")
            self._record_full(engine, step)
            return out
        if out is not None and active.call.skips_blocks and not active.reached_last:
            out = None
            self._disable(engine, "the model skipped its last block patch; the rest of the run is computed in full")
        if out is None:  # no trustworthy output: compute this call again, uncached
            return self._run_uncached(engine, step, executor, args, kwargs)
        engine.end_call(active.call, active.blocks_run, len(self.layout.keys))
        return out

    # block patches -------------------------------------------------------------------
    def block(self, key: BlockKey, args: BlockArgs, run: RunBlock) -> BlockArgs:
        active, engine = self.active, self.engine
        if active is None or engine is None:
            if engine is not None:  # inside a run, but the call bypassed our DIFFUSION_MODEL wrapper
                engine.stats.note(UNWRAPPED_CALLS)
            return run(args)
        call = active.call
        if key == self.layout.first:
            active.reached_first = True
            if engine.wants_anchors and not call.skips_blocks:
                self._engine_step(engine.first_block_input, call, self.layout.last_space(args))
            if call.skips_blocks:
                return args
            out = run(args)
            active.blocks_run += 1
            anchor = self.layout.last_space(out) if engine.wants_anchors else None
            self._engine_step(engine.first_block_output, call, out["img"], anchor)
            return out
        if key == self.layout.last:
            active.reached_last = True
            if call.skips_blocks:
                forecast = self._engine_step(engine.take_forecast, call)
                if forecast.shape != args["img"].shape:
                    raise CacheFailure(f"forecast shape {tuple(forecast.shape)} != block input {tuple(args['img'].shape)}")
                return {**args, "img": forecast}
            out = run(args)
            active.blocks_run += 1
            self._engine_step(engine.last_block_output, call, out["img"])
            return out
        if call.skips_blocks:
            return args
        active.blocks_run += 1
        return run(args)

    # helpers -------------------------------------------------------------------------
    def _locate(self, engine: ForecastEngine, options: dict) -> StepPoint | None:
        schedule, sigmas = options.get("sample_sigmas"), options.get("sigmas")
        if schedule is None or sigmas is None:
            engine.stats.note("the sampler passed no sigma schedule; those calls were computed in full")
            return None
        if schedule is not self._schedule_source:
            self._schedule_source, self._schedule = schedule, [float(s) for s in schedule.flatten().tolist()]
        try:
            return locate(float(sigmas.flatten()[0]), self._schedule)
        except ValueError as error:
            engine.stats.note(f"unusable sigma schedule ({error}); those calls were computed in full")
            return None

    def _patches_in_place(self, engine: ForecastEngine, options: dict) -> bool:
        """All our block patches must be the ones the model will call, or a forecast could go astray."""
        patches = options.get("patches_replace", {}).get("dit", {})
        if all(getattr(patches.get(key), "cgtaylor_runtime", None) is self for key in self.layout.keys):
            return True
        engine.stats.note(
            "another node replaced block patches after CGTaylorCache; those calls were computed in full "
            "(place CGTaylorCache after nodes that patch blocks)"
        )
        return False

    @staticmethod
    def _stream_keys(options: dict, x: torch.Tensor) -> list:
        """One stream per conditioning entry (cond/uncond uuid) and context window."""
        entries = list(options.get("uuids") or options.get("cond_or_uncond") or [None])
        window = options.get("context_window")
        window_key = tuple(getattr(window, "index_list", ()) or ()) if window is not None else None
        if x.shape[0] % len(entries):
            return [(tuple(entries), window_key)]
        return [(entry, window_key) for entry in entries]

    def _run_uncached(self, engine: ForecastEngine, step: StepPoint | None, executor, args, kwargs):
        out = executor(*args, **kwargs)
        self._record_full(engine, step)
        return out

    def _record_full(self, engine: ForecastEngine, step: StepPoint | None) -> None:
        if step is not None:
            blocks = len(self.layout.keys)
            engine.stats.record_call(step.index, step.sigma, False, None, blocks, blocks)

    def _disable(self, engine: ForecastEngine, reason: str) -> None:
        if not self.disabled:
            log.warning("CGTaylorCache: %s", reason)
        self.disabled = True
        engine.stats.note(reason)
        engine.reset()

    @staticmethod
    def _engine_step(step, *args):
        try:
            return step(*args)
        except Exception as error:
            raise CacheFailure(f"{type(error).__name__}: {error}") from error


def make_block_patch(runtime: CacheRuntime, key: BlockKey, previous: Callable | None) -> Callable:
    """A ``patches_replace["dit"]`` patch for one block; an earlier patch on the key runs inside it.

    A plain function (not a bound method), so ``ModelPatcher.clone()``'s deepcopy of
    model_options keeps it, and the runtime it points to, as is.
    """

    def cgtaylor_block(args: BlockArgs, extra: dict) -> BlockArgs:
        if previous is None:
            return runtime.block(key, args, extra["original_block"])
        return runtime.block(key, args, lambda block_args: previous(block_args, extra))

    cgtaylor_block.cgtaylor_runtime = runtime
    cgtaylor_block.cgtaylor_previous = previous
    return cgtaylor_block


def install(patcher, runtime: CacheRuntime) -> None:
    """Patch a ModelPatcher clone: a block patch per key, then the two wrappers.

    Patches already on a key are chained, except an earlier CGTaylorCache's, which this
    one replaces (stacking two caches would only fight over the same blocks).
    """
    if not hasattr(patcher, "add_wrapper_with_key"):
        raise RuntimeError(
            "CGTaylorCache needs model-patcher wrappers, which this ComfyUI does not have yet: update ComfyUI."
        )
    existing = patcher.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    for key in runtime.layout.keys:
        previous = existing.get(key)
        if getattr(previous, "cgtaylor_runtime", None) is not None:
            previous = previous.cgtaylor_previous
        patcher.set_model_patch_replace(make_block_patch(runtime, key, previous), "dit", key[0], key[1])
    for wrapper_type, hook in ((OUTER_SAMPLE, runtime.sample), (DIFFUSION_MODEL, runtime.forward)):
        patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
        patcher.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, _plain_function(hook))


def _plain_function(hook: Callable) -> Callable:
    """Wrap a bound method in a function, which deepcopy leaves alone (see make_block_patch)."""

    def wrapper(executor, *args, **kwargs):
        return hook(executor, *args, **kwargs)

    return wrapper
