"""ComfyUI's multi-GPU work units (v0.30.0 and later) driving the node from several threads.

Real code path: comfy/samplers.py ``_calc_cond_batch_multigpu`` hands each device's share of
the conds to a ``comfy.multigpu.MultiGPUThreadPool`` worker, which runs that device's clone of
the patched model. A CPU machine has no second device, so the test puts what ComfyUI's
multi-GPU setup would leave in the guider's model_options (a clone per device, and the thread
pool) there itself, with two CPU device keys; everything after that is ComfyUI's own code.
Without the pool the same function runs the same calls one after another on the sampling
thread, which is the reference: results must be bit-identical.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from test_real_comfyui import SEED, STEPS, apply_node, every_call, node_class

pytestmark = pytest.mark.comfyui

DEVICES = (torch.device("cpu", 1), torch.device("cpu", 2))


@pytest.fixture(scope="module")
def multigpu(comfyui: Any) -> Any:
    try:
        import comfy.multigpu
    except ImportError:
        pytest.skip("this ComfyUI has no multi-GPU work units (added in 2026)")
    return comfy.multigpu


def with_work_units(model: Any, multigpu: Any, threaded: bool) -> Any:
    """A clone of ``model`` whose sampling runs its conds as multi-GPU work units."""
    import comfy.patcher_extension

    clones = {device: model.clone() for device in DEVICES}

    def work_units(executor: Any, *args: Any, **kwargs: Any) -> Any:
        options = executor.class_obj.model_options  # the guider's, for this run
        options["multigpu_clones"] = clones
        if threaded:  # popped and shut down by CFGGuider.outer_sample itself
            options["multigpu_thread_pool"] = multigpu.MultiGPUThreadPool(list(DEVICES))
        return executor(*args, **kwargs)

    units = model.clone()
    units.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "cgtaylor-test-work-units", work_units)
    return units


def sample(comfyui: Any, model: Any) -> torch.Tensor:
    conditioning = comfyui.nodes.NODE_CLASS_MAPPINGS["CGTTestRandomConditioning"]()
    (positive,) = conditioning.make(seed=11, tokens=8, width=4096, pooled_width=768)
    (negative,) = conditioning.make(seed=12, tokens=8, width=4096, pooled_width=768)
    latent = {"samples": torch.zeros(2, 16, 16, 16)}
    with torch.inference_mode():
        (out,) = comfyui.nodes.KSampler().sample(model, SEED, STEPS, 4.0, "euler", "simple", positive, negative, latent)
    return out["samples"].clone()


class BlockZeroThreads:
    """Records which threads ran block 0 and holds each until the other device's arrives."""

    def __init__(self, block: torch.nn.Module, parties: int) -> None:
        self.names: set[str] = set()
        self.barrier = threading.Barrier(parties, timeout=30) if parties > 1 else None
        self.handle = block.register_forward_pre_hook(self._seen)

    def _seen(self, module: Any, args: Any) -> None:
        self.names.add(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait()

    def close(self) -> None:
        self.handle.remove()


@pytest.mark.parametrize("tolerance", ["zero", "huge"])
def test_threaded_work_units_match_the_same_calls_one_after_another(comfyui: Any, tiny_flux: Any, multigpu: Any,
                                                                   tolerance: str) -> None:
    cls = node_class(comfyui)
    settings = {"tolerance": 0.0} if tolerance == "zero" else every_call(cls)
    block0 = tiny_flux.model.diffusion_model.double_blocks[0]
    stats = []
    for threaded in (False, True):
        patched = apply_node(cls, tiny_flux, unique_id=f"mgpu-{threaded}", **settings, warmup_steps=1)
        seen = BlockZeroThreads(block0, parties=2 if threaded else 1)
        first_event = len(comfyui.events)
        try:
            out = sample(comfyui, with_work_units(patched, multigpu, threaded))
        finally:
            seen.close()
        events = [e.data for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
        assert len(events) == 1
        stats.append((out, events[0], seen.names))
    (sequential, sequential_stats, main_thread), (threaded_out, threaded_stats, workers) = stats
    assert main_thread == {threading.current_thread().name}
    assert len(workers) == 2 and threading.current_thread().name not in workers
    assert torch.equal(threaded_out, sequential)
    assert threaded_stats["totals"] == sequential_stats["totals"] and threaded_stats["steps"] == sequential_stats["steps"]
    assert threaded_stats["notes"] == []
    assert threaded_stats["totals"]["calls"] == 2 * STEPS  # cond and uncond, one call each per step
    if tolerance == "zero":
        assert threaded_stats["totals"]["forecast"] == 0
        plain = sample(comfyui, with_work_units(tiny_flux, multigpu, threaded=True))
        assert torch.equal(threaded_out, plain)
    else:
        assert threaded_stats["totals"]["forecast"] > 0
