"""The node's hooks on its model clone: what ComfyUI calls, and which sampling run each call belongs to.

``install`` puts six hooks on a ModelPatcher clone, never on the shared model:

* OUTER_SAMPLE wrapper: a fresh ``SamplingRun`` (nodes/sampling_run.py) per sampling run, reported and
  dropped at its end, also when sampling fails or is interrupted;
* PREPARE_SAMPLING wrapper: the cache in ComfyUI's memory plan, its placement settled once the model is
  loaded (nodes/memory_plan.py);
* DIFFUSION_MODEL wrapper: each model call, through the run's state machine;
* one ``patches_replace["dit"]`` patch per block: block 0 feeds the gate, the middle blocks pass
  through on forecast calls, the last block returns the forecast;
* a post-CFG function that only watches each evaluation (the engine measures how the sampler turns
  the predictions into its next latent, core/sampler_response.py) and returns the guided prediction;
* PREDICT_NOISE wrapper: what the guider returns, which the sampler steps with (nodes/sampler_watch.py).

``CacheRuntime`` owns what lasts as long as the patched model: the engine factory (the node's
settings; the benchmark swaps methods), the block layout and the reporter. A run lives in the options
ComfyUI hands its hooks: OUTER_SAMPLE puts it into a copy of the guider's
``model_options["transformer_options"]`` for the run's length, and ComfyUI copies those into the
options of every call of that run on every thread (multi-GPU work units included), into every
block's arguments, and into the model options PREPARE_SAMPLING and the post-CFG functions get. So a
sampler run inside another on the same model, or two runs on two threads, each find their own run.
A caller that drives a hook with no options at all (a script, a test) gets the newest run in progress.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager

from ..core import ForecastEngine, RunStats
from . import guards
from .comfy_calls import BlockKey, transformer_options_of
from .families import BlockLayout
from .memory_plan import plan_sampling
from .sampling_run import BlockArgs, RunBlock, SamplingRun

log = logging.getLogger(__name__)

WRAPPER_KEY = "cgtaylor"
# comfy/patcher_extension.py ``WrappersMP``; plain strings, so the pack imports without ComfyUI.
OUTER_SAMPLE = "outer_sample"
PREPARE_SAMPLING = "prepare_sampling"
DIFFUSION_MODEL = "diffusion_model"
PREDICT_NOISE = "predict_noise"
RUN_KEY = "cgtaylor_run"  # where a run's transformer_options hold it


class CacheRuntime:
    """The hooks of one patched model; each run's state lives on its ``SamplingRun``."""

    def __init__(
        self, new_engine: Callable[[], ForecastEngine], layout: BlockLayout, report: Callable[[RunStats], None]
    ) -> None:
        self.new_engine = new_engine
        self.layout = layout
        self.report = report
        self._runs: list[SamplingRun] = []  # the runs in progress, newest last
        self._runs_lock = threading.Lock()

    @property
    def engine(self) -> ForecastEngine | None:
        """The newest run's engine while one is in progress, else None: a look at its caches from outside
        (the benchmark's memory watch, tests)."""
        runs = self._runs
        return runs[-1].engine if runs else None

    # OUTER_SAMPLE ---------------------------------------------------------------------------------
    def sample(self, executor, *args, **kwargs):
        """``outer_sample(noise, latent_image, sampler, sigmas, ...)`` (comfy/samplers.py ``CFGGuider``)."""
        guider = getattr(executor, "class_obj", None)
        run = SamplingRun.start(self.new_engine(), self.layout, self, WRAPPER_KEY, guider,
                                args[2] if len(args) > 2 else None, args[3] if len(args) > 3 else None)
        with self._runs_lock:
            self._runs.append(run)
        completed = False
        try:
            with _carrying(guider, run):
                result = executor(*args, **kwargs)
            completed = True
            return result
        finally:
            with self._runs_lock:
                self._runs.remove(run)
            stats = run.finish(completed)
            try:
                self.report(stats)
            except Exception:  # a report must never break the user's graph
                log.exception("CGTaylorCache: could not report the run statistics")

    # PREPARE_SAMPLING -------------------------------------------------------------------------------
    def prepare(self, executor, *args, **kwargs):
        """``_prepare_sampling(model, noise_shape, conds, model_options=, ...)`` (comfy/sampler_helpers.py)."""
        run = self._run_of(_transformer_options(kwargs.get("model_options")))
        if run is None:
            return executor(*args, **kwargs)
        return plan_sampling(run, self.new_engine, self.layout, executor, args, kwargs)

    # post-CFG ---------------------------------------------------------------------------------------
    def observe_sampler(self, args: dict):
        """A post-CFG function: the evaluation goes to the run; the guided prediction comes back untouched."""
        run = self._run_of(_transformer_options(args.get("model_options")))
        if run is not None:
            run.watch.post_cfg(args)
        return args["denoised"]

    # PREDICT_NOISE ----------------------------------------------------------------------------------
    def predict(self, executor, *args, **kwargs):
        """``predict_noise(x, timestep, model_options, seed)`` (comfy/samplers.py ``CFGGuider.outer_predict_noise``):
        what the guider returns is what the sampler steps with, whichever guider it is."""
        options = args[2] if len(args) > 2 else kwargs.get("model_options")
        run = self._run_of(_transformer_options(options))
        if run is None:
            return executor(*args, **kwargs)
        return run.watch.predict(executor, args, kwargs)

    # DIFFUSION_MODEL --------------------------------------------------------------------------------
    @guards.eager_frame
    def forward(self, executor, *args, **kwargs):
        run = self._run_of(transformer_options_of(args, kwargs))
        if run is None:  # a call outside any sampling run of this model
            return executor(*args, **kwargs)
        return run.forward(executor, args, kwargs)

    # block patches ----------------------------------------------------------------------------------
    @guards.eager_frame
    def block(self, key: BlockKey, args: BlockArgs, run_block: RunBlock) -> BlockArgs:
        run = self._run_of(args.get("transformer_options"))
        if run is None:
            return run_block(args)
        return run.block(key, args, run_block)

    @guards.eager
    def _run_of(self, options: dict | None) -> SamplingRun | None:
        """The run these options belong to (None: a call outside this model's runs); with no options at
        all, the newest run in progress."""
        if options is None:
            runs = self._runs
            return runs[-1] if runs else None
        run = options.get(RUN_KEY)
        return run if isinstance(run, SamplingRun) and run.owner is self else None


@contextmanager
def _carrying(guider, run: SamplingRun):
    """``run`` in the guider's model options while it samples, then the guider's own options back. A copy
    of the top level and of ``transformer_options`` only: every other option stays the object ComfyUI
    shares, so whatever the run changes in them it changes as without the node."""
    options = getattr(guider, "model_options", None)
    if not isinstance(options, dict):
        yield
        return
    guider.model_options = {**options, "transformer_options": {**options.get("transformer_options", {}), RUN_KEY: run}}
    try:
        yield
    finally:
        guider.model_options = options


def _transformer_options(model_options: dict | None) -> dict | None:
    return model_options.get("transformer_options", {}) if isinstance(model_options, dict) else None


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
    """Patch a ModelPatcher clone: a block patch per key, the four wrappers and the sampler watcher.

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
    hooks = ((OUTER_SAMPLE, runtime.sample), (PREPARE_SAMPLING, runtime.prepare), (PREDICT_NOISE, runtime.predict),
             (DIFFUSION_MODEL, runtime.forward))
    for wrapper_type, hook in hooks:
        patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
        patcher.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, _plain_function(hook))
    watchers = patcher.model_options.get("sampler_post_cfg_function", [])
    patcher.model_options["sampler_post_cfg_function"] = [f for f in watchers if not hasattr(f, "cgtaylor_runtime")]
    watcher = _plain_function(runtime.observe_sampler)
    watcher.cgtaylor_runtime = runtime
    patcher.set_model_sampler_post_cfg_function(watcher)


def _plain_function(hook: Callable) -> Callable:
    """Wrap a bound method in a function, which deepcopy leaves alone (see make_block_patch)."""

    def wrapper(*args, **kwargs):
        return hook(*args, **kwargs)

    return wrapper
