"""The PREPARE_SAMPLING hook's work: the cache in ComfyUI's memory plan, and its placement settled.

ComfyUI plans the memory of a run before it loads the model (nodes/planner.py says how the node
takes part). This module is the glue between the hook and the planner: it sizes the run's caches
for the conditioning at hand, lets ComfyUI load the model with them counted, and then hands the
engine what it needs to settle where they rest (core/placement.py ``Placement`` decides what
``cache_device`` means; nothing here reads the choice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..core import ForecastEngine
from . import planner
from .comfy_calls import compute_dtype
from .families import BlockLayout, compiled_original
from .sampling_run import SamplingRun

log = logging.getLogger(__name__)


def plan_sampling(run: SamplingRun, new_engine: Callable[[], ForecastEngine], layout: BlockLayout, executor,
                  args: tuple, kwargs: dict):
    """``_prepare_sampling(model, noise_shape, conds, model_options=, ...)`` with the cache in the plan,
    then the placement settled once the model is loaded. A run that forecasts nothing plans nothing."""
    engine = run.engine
    if not engine.forecasts or len(args) < 3:
        return executor(*args, **kwargs)
    patcher, noise_shape, conds = args[:3]
    load_device = torch.device(patcher.load_device)
    on_host = load_device == planner.HOST  # a model on the CPU has no memory to spare by offloading
    try:  # what the node adds to ComfyUI's two estimates, for every stream the conditioning makes
        shapes = planner.planned_shapes(layout, compiled_original(patcher.get_model_object("diffusion_model")),
                                        noise_shape, conds, compute_dtype(patcher.model))
        streams = planner.stream_count(conds)
        sizes = None if shapes is None else [planner.device_bytes(new_engine, shapes, streams, offload)
                                             for offload in engine.offloaded_in_plan(on_host)]
    except Exception as error:  # a plan must never stop sampling
        log.exception("CGTaylorCache: could not size the cache before sampling")
        sizes, why = None, f"its size could not be computed ({type(error).__name__}: {error})"
    else:
        why = f"the node cannot tell {layout.model_class}'s hidden-state shapes before the first call"
    if sizes is None:
        run.note(f"the memory ComfyUI planned before sampling leaves the cache out: {why}")
        return executor(*args, **kwargs)
    plan = planner.Plan()
    with planner.cache_in_plan(patcher.model, noise_shape[0], *sizes, plan):
        result = executor(*args, **kwargs)

    def budget() -> int | None:
        free = planner.free_memory(patcher, load_device)
        return planner.auto_budget(free, plan.comfy_estimate, planner.weights_to_come(patcher))

    with run.lock:
        engine.settle_memory(plan.added, planner.HOST, budget, on_host)
    return result
