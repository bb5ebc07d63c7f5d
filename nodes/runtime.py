"""The cache at work inside ComfyUI: one sampling run, one engine, every model call planned.

Five hooks, all on the node's own model clone:

* OUTER_SAMPLE wrapper: a fresh engine per sampling run, freed and reported at the end
  (also when sampling fails or is interrupted).
* PREPARE_SAMPLING wrapper: the memory ComfyUI plans before it loads the model includes the
  cache, and once it is loaded the cache's placement is settled (nodes/planner.py).
* DIFFUSION_MODEL wrapper: locates the call in the sigma schedule, names its streams
  (one per cond/uncond entry) and asks the engine for a plan before any block runs.
* One ``patches_replace["dit"]`` patch per block: block 0 feeds the gate, the middle
  blocks pass through on forecast calls, the last block returns the forecast.
* A post-CFG function that only watches: each evaluation's latent and its uncond and cond
  predictions, from which the engine measures how the sampler turns them into its next latent
  (core/sampler_response.py). It returns the guided prediction unchanged.

Every decision is taken outside the blocks, so per-block ``torch.compile`` keeps working. Under
whole-model compile (TorchCompileModel compiles the diffusion model with these hooks inside it)
the hooks' own frames and all their decisions run eagerly (``torch.compiler.disable``), while
the model code they call, blocks included, still compiles: the graphs follow the block loop,
never the cache's state, so a run does not recompile as decisions change.
Anything unexpected degrades to full compute for the call or the run, never to a wrong
image: a forecast that did not reach the output, an engine error (out of memory included),
block patches that another node replaced after this one, blocks reached in another order
than expected, a CUDA graph being captured around the blocks (it would replay one call's
decisions on every step).

ComfyUI's multi-GPU work units (2026, comfy/samplers.py ``_calc_cond_batch_multigpu``)
call one patched model from a thread per device at once, and every per-device clone
shares these hooks. So the call in progress is kept per thread, and the engine (streams,
statistics) is only touched under a lock; two threads never work on one stream at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core import Call, ForecastEngine, RunStats, StepPoint, locate
from .families import BlockLayout, compiled_original, leading_input
from . import planner

log = logging.getLogger(__name__)

WRAPPER_KEY = "cgtaylor"
# comfy/patcher_extension.py:49-56 (WrappersMP); plain strings, so the pack imports without ComfyUI.
OUTER_SAMPLE = "outer_sample"
PREPARE_SAMPLING = "prepare_sampling"
DIFFUSION_MODEL = "diffusion_model"

BlockKey = tuple[str, int]
BlockArgs = dict
RunBlock = Callable[[BlockArgs], BlockArgs]


UNWRAPPED_CALLS = (
    "the model ran its blocks without calling DIFFUSION_MODEL wrappers, so nothing was cached; "
    "this ComfyUI is older than the node needs: update ComfyUI"
)


CAPTURED = (
    "a CUDA graph was being captured around the model's blocks: a captured graph replays the same kernels on "
    "every step, so a per-step decision to skip blocks cannot live inside it; the run is computed in full. "
    "Turn off what captures the model (ComfyUI: --disable-cuda-graphs; another node's CUDA-graph option) "
    "to use the cache"
)


# Why a model class may make every call around the DIFFUSION_MODEL wrapper and the block patches.
BYPASS_REASONS = {
    # comfy/ldm/wan/ar_model.py:260-272 (v0.30.0): with transformer_options["ar_state"] set by the
    # ar_video sampler, forward() runs forward_block(), which calls the blocks directly.
    "CausalWanModel": "autoregressive sampling calls its blocks directly, past every model patch",
}


def other_caches(model_options: dict) -> list[str]:
    """The other caches on the model a run samples: ComfyUI's EasyCache and LazyCache keep their holder in
    ``transformer_options["easycache"]`` (comfy_extras/nodes_easycache.py, named by its ``name``), and caches
    of other packs register their wrappers under keys that name them."""
    options = model_options.get("transformer_options", {}) if isinstance(model_options, dict) else {}
    names = []
    holder = options.get("easycache")
    if holder is not None:
        names.append(str(getattr(holder, "name", "EasyCache")))
    for by_key in (options.get("wrappers") or {}).values():
        names += [key for key in by_key if key not in (WRAPPER_KEY, "easycache") and "cache" in key.lower()]
    return list(dict.fromkeys(names))


# A hook's own frame runs eagerly; what it calls (the model, its blocks) is still compiled.
_eager_frame = torch.compiler.disable(recursive=False)
# A decision, with everything it calls, runs eagerly: no guard ever depends on the cache's state.
_eager = torch.compiler.disable


class CacheFailure(RuntimeError):
    """The engine failed inside a block patch; the call is recomputed without the cache."""


class BlockOrderMismatch(CacheFailure):
    """A block patch ran at another place in the block loop than the layout says it should."""


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
        self.disabled = False  # set for the rest of a run when caching cannot be trusted
        self.calls_seen = 0  # model calls of the run that reached the DIFFUSION_MODEL wrapper
        self.others: list[str] = []  # other caches on the model this run samples
        self._lock = threading.RLock()  # guards the engine: its streams and statistics are shared
        self._local = threading.local()  # the call in progress on this thread
        self._in_flight: set = set()  # stream keys of the calls now running, on any thread
        # (sample_sigmas tensor, its values) in one attribute, so a thread never reads a mixed pair
        self._schedule: tuple[torch.Tensor | None, list[float]] = (None, [])

    @property
    @_eager
    def active(self) -> ActiveCall | None:
        """The model call in progress on the calling thread."""
        return getattr(self._local, "active", None)

    @active.setter
    @_eager
    def active(self, value: ActiveCall | None) -> None:
        self._local.active = value

    # OUTER_SAMPLE ------------------------------------------------------------------
    def sample(self, executor, *args, **kwargs):
        """``outer_sample(noise, latent_image, sampler, sigmas, ...)`` (comfy/samplers.py CFGGuider)."""
        saved = self.engine, self.active, self.disabled, self.calls_seen, self.others
        self.engine = self.new_engine()
        self.engine.stats.model = self.layout.family
        self.engine.stats.sampler = sampler_name(args[2]) if len(args) > 2 else None
        guider = getattr(executor, "class_obj", None)
        percent_to_sigma = _percent_to_sigma(guider)
        if percent_to_sigma is not None:
            self.engine.place_window(percent_to_sigma)
        self.active, self.disabled, self.calls_seen = None, False, 0
        self.others = other_caches(getattr(guider, "model_options", None))
        if self.others:
            self.engine.stats.note(
                f"{' and '.join(self.others)} is on this model too: use one cache at a time (remove it, or "
                "CGTaylorCache); calls it answers from its own cache run no block and are counted so"
            )
        finished = False
        try:
            result = executor(*args, **kwargs)
            finished = True
            return result
        finally:
            engine, calls_seen = self.engine, self.calls_seen
            self.engine, self.active, self.disabled, self.calls_seen, self.others = saved
            self._schedule = (None, [])
            engine.reset()
            if finished and calls_seen == 0:  # an interrupted run may simply not have got that far
                self._note_bypassed(engine)
            try:
                self.report(engine.stats)
            except Exception:  # a report must never break the user's graph
                log.exception("CGTaylorCache: could not report the run statistics")

    def _note_bypassed(self, engine: ForecastEngine) -> None:
        """A run whose model calls all went around the wrapper: say so rather than report nothing."""
        reason = BYPASS_REASONS.get(self.layout.model_class, "it runs its blocks without ComfyUI's model wrappers")
        message = f"{self.layout.model_class} made no model call through the node's hooks ({reason}), so nothing was cached"
        log.warning("CGTaylorCache: %s", message)
        engine.stats.note(message)

    # PREPARE_SAMPLING ----------------------------------------------------------------
    def prepare(self, executor, *args, **kwargs):
        """``_prepare_sampling(model, noise_shape, conds, model_options=, ...)``: plan with the cache,
        then settle where it lives once the model is loaded."""
        engine = self.engine
        if engine is None or not engine.policy.caches or not engine.accounts_memory or len(args) < 3:
            return executor(*args, **kwargs)
        patcher, noise_shape, conds = args[:3]
        load_device = torch.device(patcher.load_device)
        choice = engine.placement.choice
        offloads = load_device != planner.HOST  # a model on the CPU has no memory to spare by offloading
        offload_full = choice == "cpu"
        offload_minimum = offload_full or (choice == "auto" and offloads)
        try:  # what the node adds to ComfyUI's two estimates, for every stream the conditioning makes
            shapes = planner.planned_shapes(self.layout, compiled_original(patcher.get_model_object("diffusion_model")),
                                            noise_shape, conds, _compute_dtype(patcher.model))
            streams = planner.stream_count(conds)
            sizes = None if shapes is None else [planner.device_bytes(self.new_engine, shapes, streams, offload)
                                                 for offload in (offload_full, offload_minimum)]
        except Exception as error:  # a plan must never stop sampling
            log.exception("CGTaylorCache: could not size the cache before sampling")
            shapes, sizes, why = None, None, f"its size could not be computed ({type(error).__name__}: {error})"
        else:
            why = f"the node cannot tell {self.layout.model_class}'s hidden-state shapes before the first call"
        if sizes is None:
            with self._lock:
                engine.stats.note(f"the memory ComfyUI planned before sampling leaves the cache out: {why}")
            return executor(*args, **kwargs)
        plan = planner.Plan()
        with planner.cache_in_plan(patcher.model, noise_shape[0], *sizes, plan):
            result = executor(*args, **kwargs)
        with self._lock:
            engine.memory.planned = plan.added
            if choice == "cpu":
                engine.placement.configure(planner.HOST, None)
            elif choice == "auto" and offloads:
                budget = planner.auto_budget(planner.free_memory(patcher, load_device), plan.comfy_estimate,
                                             planner.weights_to_come(patcher))
                engine.placement.configure(planner.HOST, budget)
        return result

    # post-CFG ------------------------------------------------------------------------
    def observe_sampler(self, args: dict):
        """A post-CFG function (comfy/samplers.py ``cfg_function``: :369-372 at v0.3.64, :601-604 at v0.30.0
        and v0.33.0): hand the evaluation to the engine, return the guided prediction untouched."""
        denoised = args["denoised"]
        engine = self.engine
        if engine is None or self.disabled:
            return denoised
        try:
            with self._lock:
                engine.observe_sampler(args["input"], args.get("uncond_denoised"), args["cond_denoised"],
                                       float(args.get("cond_scale", 1.0)), float(args["sigma"].flatten()[0]))
        except Exception as error:  # watching must never break the user's graph
            with self._lock:
                engine.stats.note(f"the sampler's steps could not be measured ({type(error).__name__}: {error}); "
                                  "the gate judged forecasts as on Euler steps")
        return denoised

    # DIFFUSION_MODEL -----------------------------------------------------------------
    @_eager_frame
    def forward(self, executor, *args, **kwargs):
        engine = self.engine
        if engine is None:  # a call outside any sampling run this node manages
            return executor(*args, **kwargs)
        with self._lock:
            self.calls_seen += 1
        if _capturing():  # before anything reads a tensor's value: a sync would break the capture
            self._disable(engine, CAPTURED)
            return self._run_uncached(engine, None, executor, args, kwargs)
        options = transformer_options_of(args, kwargs)
        step = self._locate(engine, options)
        replaced = None if step is None or self.disabled else self._patches_in_place(engine, options)
        if replaced is None:
            return self._run_uncached(engine, step, executor, args, kwargs)
        x = leading_input(args[0])
        keys = self._stream_keys(options, x, replaced)
        active = self._claim(engine, step, keys, x, stream_roles(options, keys, replaced))
        if active is None:
            return self._run_uncached(engine, step, executor, args, kwargs)
        self.active = active
        try:
            out = executor(*args, **kwargs)
        except BlockOrderMismatch as error:
            out, failure = None, f"{error}; the rest of the run is computed in full"
        except CacheFailure as error:
            out, failure = None, f"the cache failed during a call ({error}); the rest of the run is computed in full"
        else:
            failure = None
        finally:
            self.active = None
            self._release(keys)
        if failure is None and not (active.reached_first or active.reached_last):
            if self.others:  # another cache answered the call without running the model
                with self._lock:
                    engine.stats.record_served(step.index, step.sigma, len(self.layout.keys), self.others)
                return out
            self._disable(engine, "this model never called its block patches, so nothing could be cached")
            self._record_full(engine, step)
            return out  # the blocks ran natively: the output stands
        if failure is None and not active.reached_last:
            reason = "the model skipped its last block patch; the rest of the run is computed in full"
            if active.call.skips_blocks:
                failure = reason
            else:  # a full call: the last block ran natively and the output stands, but no cache can fill
                self._disable(engine, reason)
                self._record_full(engine, step)
                return out
        if failure is not None:  # no trustworthy output: compute this call again, uncached
            self._disable(engine, failure)
            return self._run_uncached(engine, step, executor, args, kwargs)
        self._end_call(engine, active, len(self.layout.keys) - len(replaced))
        return out

    @_eager
    def _claim(self, engine: ForecastEngine, step: StepPoint, keys: list, x: torch.Tensor,
               roles: list[int | None]) -> ActiveCall | None:
        """Plan the call, unless another thread is running one of its streams (then None)."""
        with self._lock:
            if self._in_flight.intersection(keys):
                engine.stats.note(
                    "two calls of the same conditioning ran at once on different threads; "
                    "the later one was computed in full"
                )
                return None
            self._in_flight.update(keys)
            signature = (x.shape[0] // len(keys), tuple(x.shape[1:]), x.dtype)
            try:
                with _outside_allocation_graph():
                    return ActiveCall(engine.begin_call(step, keys, signature, x.device, roles))
            except Exception as error:  # e.g. out of memory moving a stream's caches: no cache, no crash
                self._in_flight.difference_update(keys)
                failure = f"{type(error).__name__}: {error}"
        self._disable(engine, f"the cache failed while planning a call ({failure}); "
                              "the rest of the run is computed in full")
        return None

    @_eager
    def _release(self, keys: list) -> None:
        with self._lock:
            self._in_flight.difference_update(keys)

    @_eager
    def _end_call(self, engine: ForecastEngine, active: ActiveCall, blocks_total: int) -> None:
        with self._lock, _outside_allocation_graph():
            engine.end_call(active.call, active.blocks_run, blocks_total)

    # block patches -------------------------------------------------------------------
    @_eager_frame
    def block(self, key: BlockKey, args: BlockArgs, run: RunBlock) -> BlockArgs:
        active, engine = self.active, self.engine
        if active is None or engine is None:
            if engine is not None and not getattr(self._local, "uncached", False):
                # inside a run, but the call bypassed our DIFFUSION_MODEL wrapper
                with self._lock:
                    engine.stats.note(UNWRAPPED_CALLS)
            return run(args)
        if _capturing():  # a capture begun inside the call (per block): the call is computed again in full
            raise CacheFailure(CAPTURED)
        call = active.call
        self._check_position(key, args)
        if key == self.layout.first:
            active.reached_first = True
            if engine.wants_anchors and not call.skips_blocks:
                self._engine_step(engine.first_block_input, call, self.layout.last_space(args))
            if call.skips_blocks:
                return args
            out = run(args)
            active.blocks_run += 1
            anchor = self.layout.last_space(out) if engine.wants_anchors else None
            self._engine_step(engine.first_block_output, call, self.layout.gate_state(out, args), anchor)
            return out
        if key == self.layout.last:
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
        if call.skips_blocks:
            return args
        active.blocks_run += 1
        return run(args)

    # helpers -------------------------------------------------------------------------
    @_eager
    def _check_position(self, key: BlockKey, args: BlockArgs) -> None:
        """Since 2026 the block loops say where they are (``block_type``, ``block_index``,
        ``total_blocks`` in transformer_options: comfy/ldm/flux/model.py:217-220 and 272-276,
        comfy/ldm/wan/model.py:597-600 at v0.30.0). A patch reached elsewhere than its key says
        means the model's loop is not the one the layout describes: no forecast can be trusted."""
        options = args.get("transformer_options")
        if not isinstance(options, dict) or "block_index" not in options or "block_type" not in options:
            return  # ComfyUI before 2026 does not tell
        where = (f"{options['block_type']}_block", options["block_index"])
        total, expected_total = options.get("total_blocks"), self.layout.group_size(key[0])
        if where != key or (total is not None and expected_total is not None and total != expected_total):
            raise BlockOrderMismatch(
                f"the patch for {key} ran at {where} of {total} blocks, but {self.layout.model_class} was "
                f"expected to run {expected_total} {key[0]}s; this model's block loop differs from what the node knows"
            )

    @_eager
    def _locate(self, engine: ForecastEngine, options: dict) -> StepPoint | None:
        schedule, sigmas = options.get("sample_sigmas"), options.get("sigmas")
        if schedule is None or sigmas is None:
            with self._lock:
                engine.stats.note("the sampler passed no sigma schedule; those calls were computed in full")
            return None
        source, values = self._schedule
        if schedule is not source:
            known, values = values, [float(s) for s in schedule.flatten().tolist()]
            self._schedule = (schedule, values)
            if values != known:  # multi-GPU work units hand each thread a copy of the same schedule
                with self._lock:
                    engine.note_schedule(values)
        try:
            return locate(float(sigmas.flatten()[0]), values)
        except ValueError as error:
            with self._lock:
                engine.stats.note(f"unusable sigma schedule ({error}); those calls were computed in full")
            return None

    @_eager
    def _patches_in_place(self, engine: ForecastEngine, options: dict) -> tuple[BlockKey, ...] | None:
        """Which of our block patches another node replaced for this call: () when none, None when
        block 0's or the last block's is gone (no gate or no forecast could reach the output).

        SkipLayerGuidanceDiT replaces patches per call: its extra call per step runs the positive
        cond with skip patches set on a copy of the sampler's model_options
        (comfy_extras/nodes_slg.py:62-74), whatever the node order. Such a call computes another
        function than the main calls, so with only middle blocks replaced it gets streams of its
        own (see _stream_keys); it never feeds the positive cond's caches.
        """
        patches = options.get("patches_replace", {}).get("dit", {})
        replaced = tuple(
            key for key in self.layout.keys if getattr(patches.get(key), "cgtaylor_runtime", None) is not self
        )
        if not replaced:
            return ()
        shown = ", ".join(f"{name} {index}" for name, index in replaced)
        with self._lock:
            if self.layout.first in replaced or self.layout.last in replaced:
                engine.stats.note(
                    f"another node's block patches replaced CGTaylorCache's on {shown} for some calls, including "
                    "block 0 or the last block, so those calls were computed in full (SkipLayerGuidanceDiT does "
                    "this for its extra call in either node order: leave the first and last block out of its "
                    "layers to have it cached; a node that patches the model itself goes before CGTaylorCache)"
                )
                return None
            engine.stats.note(
                f"another node's block patches replaced CGTaylorCache's on {shown} for some calls "
                "(e.g. SkipLayerGuidanceDiT's extra call); those calls were cached as streams of their own"
            )
        return replaced

    @staticmethod
    @_eager
    def _stream_keys(options: dict, x: torch.Tensor, replaced: tuple[BlockKey, ...] = ()) -> list:
        """One stream per conditioning entry (cond/uncond uuid), context window and set of blocks
        other nodes replaced for the call (a skip-layer call shares the positive cond's uuid)."""
        entries = list(options.get("uuids") or options.get("cond_or_uncond") or [None])
        window = options.get("context_window")
        window_key = tuple(getattr(window, "index_list", ()) or ()) if window is not None else None
        extra = (replaced,) if replaced else ()
        if x.shape[0] % len(entries):
            return [(tuple(entries), window_key, *extra)]
        return [(entry, window_key, *extra) for entry in entries]

    def _run_uncached(self, engine: ForecastEngine, step: StepPoint | None, executor, args, kwargs):
        """Run the call with every block patch of ours passing straight through."""
        self._local.uncached = True
        try:
            out = executor(*args, **kwargs)
        finally:
            self._local.uncached = False
        self._record_full(engine, step)
        return out

    @_eager
    def _record_full(self, engine: ForecastEngine, step: StepPoint | None) -> None:
        if step is not None:
            blocks = len(self.layout.keys)
            with self._lock:
                engine.stats.record_call(step.index, step.sigma, False, None, blocks, blocks, reason="fallback")

    @_eager
    def _disable(self, engine: ForecastEngine, reason: str) -> None:
        with self._lock:
            if not self.disabled:
                log.warning("CGTaylorCache: %s", reason)
            self.disabled = True
            engine.stats.note(reason)
            engine.reset()

    @_eager
    def _engine_step(self, step, *args):
        try:
            with self._lock, _outside_allocation_graph():
                return step(*args)
        except Exception as error:
            raise CacheFailure(f"{type(error).__name__}: {error}") from error


def stream_roles(options: dict, keys: list, replaced: tuple[BlockKey, ...] = ()) -> list[int | None]:
    """Each stream's place in the guidance pair: ComfyUI's ``cond_or_uncond`` (0 the cond, 1 the uncond, the
    index of any further entry of the guider's conds), one per stream. A call whose blocks another node
    replaced (SkipLayerGuidanceDiT's extra call) computes another prediction than the pair's: no role."""
    roles = options.get("cond_or_uncond")
    if replaced or not isinstance(roles, (list, tuple)) or len(roles) != len(keys):
        return [None] * len(keys)
    return [role if isinstance(role, int) else None for role in roles]


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


def _percent_to_sigma(guider) -> Callable[[float], float] | None:
    """The model's ``percent_to_sigma`` (comfy/model_sampling.py), through the guider OUTER_SAMPLE runs on
    (``executor.class_obj``, as comfy_extras/nodes_easycache.py reads it); None where there is none."""
    patcher = getattr(guider, "model_patcher", None)
    try:
        model_sampling = patcher.get_model_object("model_sampling")
    except Exception:  # another guider, or a model without model sampling
        return None
    function = getattr(model_sampling, "percent_to_sigma", None)
    return function if callable(function) else None


def sampler_name(sampler) -> str | None:
    """ComfyUI's name for a sampler object: comfy/samplers.py KSAMPLER keeps the k-diffusion function
    (``sample_euler_cfg_pp`` -> ``euler_cfg_pp``; ``ksampler()`` wraps dpm_fast and dpm_adaptive in
    ``dpm_fast_function`` and ``dpm_adaptive_function``); None for samplers that keep none."""
    name = getattr(getattr(sampler, "sampler_function", None), "__name__", None)
    return name.removeprefix("sample_").removesuffix("_function") if isinstance(name, str) else None


def install(patcher, runtime: CacheRuntime) -> None:
    """Patch a ModelPatcher clone: a block patch per key, the three wrappers and the sampler watcher.

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
    hooks = ((OUTER_SAMPLE, runtime.sample), (PREPARE_SAMPLING, runtime.prepare), (DIFFUSION_MODEL, runtime.forward))
    for wrapper_type, hook in hooks:
        patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
        patcher.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, _plain_function(hook))
    watchers = patcher.model_options.get("sampler_post_cfg_function", [])
    patcher.model_options["sampler_post_cfg_function"] = [f for f in watchers if not hasattr(f, "cgtaylor_runtime")]
    watcher = _plain_function(runtime.observe_sampler)
    watcher.cgtaylor_runtime = runtime
    patcher.set_model_sampler_post_cfg_function(watcher)


@_eager
def _capturing() -> bool:
    """Whether a CUDA graph is being captured on this thread's stream (ComfyUI's own since v0.33,
    comfy/model_prefetch.py ``prefetch_queue_pop``, or another node's)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


_PAUSE_ALLOCATION_GRAPH: list = []  # ComfyUI's pause_malloc_graph once looked up (None: this ComfyUI has none)


def _outside_allocation_graph():
    """The engine's own allocations kept out of ComfyUI's model compiler. After v0.33.0 (read in the
    index, not run) comfy/model_prefetch.py records each block's allocations in a "malloc graph" and
    replays the plan on the next step; MiniMax H3's forward opens one around the DIFFUSION_MODEL
    wrappers (comfy/ldm/minimax/model.py at v0.38.0). Cache states outlive the call, so they are made
    with the graph paused (``pause_malloc_graph``), as ComfyUI's own Qwen-Image 2.1 prefix cache is.
    A no-op where ComfyUI has no such graph (v0.33 and older, outside ComfyUI)."""
    if not _PAUSE_ALLOCATION_GRAPH:
        try:
            from comfy.model_prefetch import pause_malloc_graph
        except ImportError:
            pause_malloc_graph = None
        _PAUSE_ALLOCATION_GRAPH.append(pause_malloc_graph)
    pause = _PAUSE_ALLOCATION_GRAPH[0]
    return contextlib.nullcontext() if pause is None else pause()


def _compute_dtype(base_model) -> torch.dtype:
    """The dtype the model's hidden states have: its manual-cast dtype, else its weights'
    (comfy/model_base.py BaseModel.manual_cast_dtype, get_dtype)."""
    return getattr(base_model, "manual_cast_dtype", None) or base_model.get_dtype()


def _plain_function(hook: Callable) -> Callable:
    """Wrap a bound method in a function, which deepcopy leaves alone (see make_block_patch)."""

    def wrapper(*args, **kwargs):
        return hook(*args, **kwargs)

    return wrapper
