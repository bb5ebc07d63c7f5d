"""The cache's memory inside a real ComfyUI: the plan ComfyUI makes before it loads the model, and the
same latent wherever the cache lives.

``prepare_sampling`` (comfy/sampler_helpers.py) hands ``load_models_gpu`` the memory it plans for
the run; the node's PREPARE_SAMPLING wrapper must make that plan grow by the cache's bound when it
forecasts, and leave it alone when forecasting is off. The tier runs with ``--cpu``: the model's
device and ComfyUI's offload device are both the CPU, so ``auto`` keeps the cache on the device and
``cpu`` takes the offload path with CPU-to-CPU copies, which the stats count.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from test_real_comfyui import CACHE_NODE, Sampling, apply_node, node_class, node_inputs, run_wan, sample_flux

pytestmark = pytest.mark.comfyui

CFG4 = Sampling("cfg4-batch2", cfg=4.0, batch=2)


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """(memory_required, minimum_memory_required) of every plan ``_prepare_sampling`` hands to
    ``load_models_gpu`` (the only caller that passes a minimum), in order."""
    import comfy.model_management

    seen: list[tuple[float, float]] = []
    original = comfy.model_management.load_models_gpu

    def recording(models: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("minimum_memory_required") is not None:
            seen.append((kwargs["memory_required"], kwargs["minimum_memory_required"]))
        return original(models, *args, **kwargs)

    monkeypatch.setattr(comfy.model_management, "load_models_gpu", recording)
    return seen


def gate_setting(cls: type, value: float | None = None) -> dict:
    """The gate's input at ``value`` (None: its largest, with the gate that then accepts every call the
    schedule allows): ``tolerance`` since the calibrated gate, ``threshold`` before it."""
    types = cls.INPUT_TYPES()
    name = "tolerance" if "tolerance" in types["required"] else "threshold"
    if value is not None:
        return {name: value}
    always = {name: float(types["required"][name][1]["max"])}
    if "gate" in types.get("optional", {}):
        always["gate"] = "block0"  # the calibrated gate waits for pairs before it trusts a forecast
    return always


def stats_of(events: list) -> dict:
    (payload,) = [e.data for e in events if e.event == "cgtaylor.stats"]
    return payload


def wan_plan(comfyui: Any, run_prompt: Any, block_counter: Any, tiny_wan: Any, plans: list,
             cache_inputs: dict | None) -> tuple[tuple[float, float], Any]:
    before = len(plans)
    run = run_wan(comfyui, run_prompt, block_counter, tiny_wan.name, cache_inputs, CFG4)
    (plan,) = plans[before:]
    return plan, run


def test_wan_plan_grows_by_the_cache_bound_when_forecasting(comfyui: Any, run_prompt: Any, block_counter: Any,
                                                             tiny_wan: Any, plans: list) -> None:
    cls = node_class(comfyui)
    uncached, _ = wan_plan(comfyui, run_prompt, block_counter, tiny_wan, plans, None)
    off, off_run = wan_plan(comfyui, run_prompt, block_counter, tiny_wan, plans, node_inputs(cls, **gate_setting(cls, 0.0)))
    on, on_run = wan_plan(comfyui, run_prompt, block_counter, tiny_wan, plans, node_inputs(cls))
    assert off == uncached, "forecasting off must leave ComfyUI's plan as it is"
    assert stats_of(off_run.run.events)["memory"]["planned_bytes"] is None
    memory = stats_of(on_run.run.events)["memory"]
    added = on[0] - uncached[0]
    # Planned from the latent's shape before the model ran; measured by the engine at the first call.
    assert added == memory["planned_bytes"] == memory["bound_bytes"] > 0
    assert 0 < on[1] - uncached[1] < added  # the minimum: one stream's cache (ComfyUI's one-sample estimate)
    assert memory["host"] is None and memory["device"] == "cpu"  # --cpu: no offload device apart from the model's


def test_flux_plan_grows_by_the_cache_bound(comfyui: Any, tiny_flux: Any, plans: list) -> None:
    """FLUX's last block sees text and image tokens: the plan counts both, as the first call does."""
    cls = node_class(comfyui)
    sample_flux(comfyui, tiny_flux, CFG4)
    first_event = len(comfyui.events)
    sample_flux(comfyui, apply_node(cls, tiny_flux, "flux-plan"), CFG4)
    uncached, on = plans
    memory = stats_of(comfyui.events[first_event:])["memory"]
    assert on[0] - uncached[0] == memory["planned_bytes"] == memory["bound_bytes"] > 0


def test_wan_latent_is_the_same_with_the_cache_in_host_memory(comfyui: Any, run_prompt: Any, block_counter: Any,
                                                               tiny_wan: Any, plans: list) -> None:
    cls = node_class(comfyui)
    runs = {}
    for device in ("gpu", "cpu"):
        inputs = node_inputs(cls, **gate_setting(cls), warmup_steps=1, max_consecutive=2, cache_device=device)
        runs[device] = run_wan(comfyui, run_prompt, block_counter, tiny_wan.name, inputs, CFG4)
    assert torch.equal(runs["gpu"].latent, runs["cpu"].latent)
    on_device, offloaded = (stats_of(runs[d].run.events) for d in ("gpu", "cpu"))
    assert offloaded["totals"]["forecast"] > 0 and offloaded["totals"] == on_device["totals"]
    assert on_device["memory"]["host"] is None and on_device["memory"]["moved_bytes_per_call"]["forecast"] == 0
    memory = offloaded["memory"]
    assert memory["host"] == "cpu" and memory["host_bytes"] == memory["host_bound_bytes"] > 0
    assert memory["moved_bytes_per_call"]["forecast"] > 0 and memory["moved_bytes_per_call"]["full"] > 0
    # What rested in host memory is off the device's bound, and the plan asked only for the rest.
    assert on_device["memory"]["bound_bytes"] - memory["bound_bytes"] == memory["host_bound_bytes"]
    gpu_plan, cpu_plan = plans
    assert gpu_plan[0] - cpu_plan[0] == memory["host_bound_bytes"]
    assert CACHE_NODE in {e.data["node"] for e in runs["cpu"].run.events if e.event == "cgtaylor.stats"}
