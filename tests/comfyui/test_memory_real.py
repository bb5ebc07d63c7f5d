"""The cache's memory inside a real ComfyUI: the plan ComfyUI makes before it loads the model, and the
same latent wherever the cache lives.

``prepare_sampling`` (comfy/sampler_helpers.py) hands ``load_models_gpu`` the memory it plans for
the run; the node's PREPARE_SAMPLING wrapper must make that plan grow by the cache's bound when it
forecasts, and leave it alone when forecasting is off. The tier runs with ``--cpu``: the model's
device and ComfyUI's offload device are both the CPU, so ``auto`` keeps the cache on the device and
``cpu`` takes the offload path with CPU-to-CPU copies, which the stats count.
"""

from __future__ import annotations

import sys
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
    # The minimum (ComfyUI's one-sample estimate) holds both streams' caches too: run as separate calls,
    # cond and uncond each keep theirs; under --cpu auto keeps them on the device.
    assert on[1] - uncached[1] == added
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


def dynamic_patcher(comfyui: Any, model: Any) -> Any:
    """``model`` as Dynamic VRAM loads it (comfy/sd.py picks ``CoreModelPatcher``, which main.py sets to
    ``ModelPatcherDynamic`` when comfy-aimdo initialises): declared for cuda:0, which ``load`` would give
    address space only. comfy-aimdo's library loads on a CPU too: main.py (v0.33.0 :58-70) calls
    ``control.init`` before ComfyUI imports ``comfy_aimdo.host_buffer``, which binds the library when it is
    imported; this tier booted with ``--cpu`` first, so the module is bound again here (the patcher's host
    buffers are its only user). Nothing here loads the model, so no GPU is touched."""
    import importlib

    import comfy.model_patcher

    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        pytest.skip("this ComfyUI has no Dynamic VRAM (ModelPatcherDynamic)")
    import comfy_aimdo.control
    import comfy_aimdo.host_buffer

    assert comfy_aimdo.control.init(), "comfy-aimdo's library did not load"
    if comfy_aimdo.host_buffer.lib is None:
        importlib.reload(comfy_aimdo.host_buffer)
    return comfy.model_patcher.ModelPatcherDynamic(model, torch.device("cuda", 0), torch.device("cpu"))


@pytest.mark.parametrize("resident", [False, True], ids=["first run", "weights resident"])
def test_auto_under_dynamic_vram_leaves_room_for_the_weights_still_to_load(comfyui: Any, tiny_flux: Any,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           resident: bool) -> None:
    """The node's placement, decided through its PREPARE_SAMPLING hook with ComfyUI's own dynamic patcher
    and memory estimate (``estimate_memory``): the memory free after loading would hold the cache beside
    ComfyUI's activation estimate, but not beside the weights still to come as well. A classic patcher
    has loaded what it loads: there the same free memory keeps the cache on the device."""
    import comfy.model_patcher
    import comfy.sampler_helpers

    cls = node_class(comfyui)
    planner = sys.modules[cls.__module__.rsplit(".", 1)[0] + ".planner"]  # the pack as ComfyUI loaded it
    base = tiny_flux.model
    classic = comfy.model_patcher.ModelPatcher(base, torch.device("cuda", 0), torch.device("cpu"))
    patchers = {"dynamic": dynamic_patcher(comfyui, base), "classic": classic}
    size = patchers["dynamic"].model_size()
    monkeypatch.setattr(base, "model_loaded_weight_memory", size if resident else 0, raising=False)
    assert planner.weights_to_come(patchers["dynamic"]) == (0 if resident else size) and size > 0
    assert planner.weights_to_come(patchers["classic"]) == 0
    cross_attn = torch.zeros(1, 8, 4096)
    conds = {"positive": [{"cross_attn": cross_attn}], "negative": [{"cross_attn": cross_attn}]}
    noise_shape = (1, 16, 16, 16)
    offloaded = {}
    for kind, patcher in patchers.items():
        patched = apply_node(cls, patcher.clone(), unique_id="dyn", **gate_setting(cls))
        patches = patched.model_options["transformer_options"]["patches_replace"]["dit"]
        runtime = next(iter(patches.values())).cgtaylor_runtime
        assert patched.is_dynamic() == (kind == "dynamic")  # the node's clone keeps the patcher's kind
        shapes = planner.planned_shapes(runtime.layout, base.diffusion_model, noise_shape, conds, torch.float32)
        new_engine = runtime.new_engine
        whole, device_part = (planner.device_bytes(new_engine, shapes, 2, offload) for offload in (False, True))
        last_caches = whole - device_part
        estimate = comfy.sampler_helpers.estimate_memory(patched, noise_shape, conds)[0]
        free = estimate + last_caches / planner.AUTO_SHARE + 1
        monkeypatch.setattr(planner, "free_memory", lambda patcher, device: free)

        def load(model: Any, *args: Any, **kwargs: Any) -> None:
            comfy.sampler_helpers.estimate_memory(model, noise_shape, conds)  # what _prepare_sampling asks first

        def sampling() -> bool:
            runtime.prepare(load, patched, noise_shape, conds)
            placement = runtime.engine.placement
            return placement.store_for(last_caches // 2).offloaded

        offloaded[kind] = runtime.sample(sampling)
    assert offloaded == {"dynamic": not resident, "classic": False}


def test_auto_reads_free_memory_as_this_comfyui_does(comfyui: Any, tiny_flux: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """From v0.30.0 the patcher has its own ``get_free_memory``: ComfyUI's reading plus what comfy-aimdo
    would give back (``vbars_analyze``, counted when ``comfy.memory_management.aimdo_enabled``); the node
    reads that, through ComfyUI's own method. v0.3.64 has none: the node reads
    ``comfy.model_management.get_free_memory``."""
    import comfy.model_management
    import comfy.model_patcher

    cls = node_class(comfyui)
    planner = sys.modules[cls.__module__.rsplit(".", 1)[0] + ".planner"]
    device = torch.device("cuda", 0)  # only read here, never used
    patcher = comfy.model_patcher.ModelPatcher(tiny_flux.model, device, torch.device("cpu"))
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda dev=None, torch_free_too=False: 1000)
    expected = 1000
    if hasattr(patcher, "get_free_memory"):
        import comfy.memory_management
        import comfy_aimdo.model_vbar

        monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", True)
        monkeypatch.setattr(comfy_aimdo.model_vbar, "vbars_analyze", lambda device_index=None: 500)
        expected = 1500
    assert planner.free_memory(patcher, device) == expected


def test_the_plan_reaches_this_comfyuis_estimate_through_the_newer_helper(comfyui: Any, tiny_flux: Any) -> None:
    """Comfy-Org 53757775 asks the base model through ``call_model_memory_required`` (stand-in:
    bench/standin/memory_estimate.py), passing the attention profile only to a ``memory_required`` that
    takes it. This release's BaseModel, with the node's plan in place, shows its own signature, gets the
    profile exactly when it takes one, and answers its estimate plus the cache."""
    import inspect

    from bench.standin.memory_estimate import call_model_memory_required

    cls = node_class(comfyui)
    planner = sys.modules[cls.__module__.rsplit(".", 1)[0] + ".planner"]
    base = tiny_flux.model
    shape = [2, 16, 16, 16]
    signature = inspect.signature(base.memory_required)
    for profile in (None, True, False):
        estimate = call_model_memory_required(base, shape, cond_shapes={}, memory_efficient_attention=profile)
        with planner.cache_in_plan(base, 1, 1000, 10, planner.Plan()):
            assert inspect.signature(base.memory_required) == signature
            planned = call_model_memory_required(base, shape, cond_shapes={}, memory_efficient_attention=profile)
        assert planned == estimate + 1000
    assert "memory_required" not in vars(base)
