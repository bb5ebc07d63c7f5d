"""The node against what ComfyUI releases after v0.33.0 changed where it plans memory (read, not run:
docs/comfyui-versions.md). The stand-ins cite the newer files they mirror.

* The memory plan: Comfy-Org 53757775's ``estimate_memory`` asks the base model through
  ``call_model_memory_required``, which passes the attention profile only to a ``memory_required``
  whose signature takes it (bench/standin/memory_estimate.py).
* Free memory: the patcher's own ``get_free_memory`` (v0.30.0 on, Comfy-Org 08d0e510) adds what
  comfy-aimdo would give back; ``cache_device=auto`` judges by it where the patcher has it
  (bench/standin/patcher.py ``FreeMemoryModelPatcher``), else by ``comfy.model_management``'s.
"""

from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.standin import memory_estimate, model_management, sampling
from bench.standin.patcher import FreeMemoryModelPatcher, ModelPatcher
from bench.tiny import flux_scene, wan_scene
from cgtaylor_cache.nodes import planner
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.settings import CacheSettings
from test_memory import declared_on_a_gpu, payload_of, plans  # noqa: F401  (plans is a fixture)
from test_node import ALWAYS, apply_node, run, server  # noqa: F401  (server is a fixture)

SCENES = {"flux": flux_scene, "wan": wan_scene}


# --- the memory plan through call_model_memory_required ----------------------------------------


@pytest.fixture
def newer_estimate(monkeypatch):
    """prepare_sampling's estimate as Comfy-Org 53757775 makes it."""
    monkeypatch.setattr(sampling, "estimate_memory", memory_estimate.estimate_memory)


def with_profiled_model(scene):
    """The scene's model as a BaseModel whose ``memory_required`` takes the attention profile."""
    old = scene.patcher.model
    model = memory_estimate.ProfiledFlowModel(old.diffusion_model, old.multiplier, old.model_sampling.shift)
    scene.patcher = ModelPatcher(model, scene.patcher.protocol)
    return scene


@pytest.mark.parametrize("profile", [None, True, False], ids=["no profile", "memory-efficient", "not"])
@pytest.mark.parametrize("model", ["profiled", "legacy"])
@pytest.mark.parametrize("family", SCENES)
def test_the_cache_reaches_the_plan_through_call_model_memory_required(family, model, profile, plans, server,
                                                                        newer_estimate):
    """Both estimates grow by the cache's bound, whether or not the base model's estimate takes the
    attention profile: a model class that overrides ``memory_required`` the old way (``legacy``) is
    not handed a profile it cannot take, with the node's replacement in place as without it."""
    scene = SCENES[family]()
    if model == "profiled":
        scene = with_profiled_model(scene)
    if profile is not None:  # ModelPatcher.set_model_optimized_attention(..., memory_efficient=profile)
        scene.patcher.model_options["optimized_attention_memory_efficient"] = profile
    run(scene, cfg=3.0, steps=6)
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    uncached, on = plans
    memory = payload_of(server)["memory"]
    added = on["memory_required"] - uncached["memory_required"]
    assert added == memory["planned_bytes"] == memory["bound_bytes"] > 0
    assert on["minimum_memory_required"] - uncached["minimum_memory_required"] == added


def test_comfyuis_estimate_keeps_the_attention_profile_under_the_node(plans, server, newer_estimate):
    """The profile changes ComfyUI's own estimate; with the node on, the plan is that estimate plus the
    cache, so the node passed the profile on rather than dropping it."""
    estimates = {}
    for profile in (True, False):
        scene = with_profiled_model(wan_scene())
        scene.patcher.model_options["optimized_attention_memory_efficient"] = profile
        run(scene, cfg=3.0, steps=6)
        run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
        uncached, on = plans[-2:]
        estimates[profile] = uncached["memory_required"]
        assert on["memory_required"] - uncached["memory_required"] == payload_of(server)["memory"]["planned_bytes"]
    assert estimates[True] != estimates[False]


def test_the_replacement_shows_the_signature_of_the_estimate_it_replaces():
    """What call_model_memory_required inspects to decide whether to pass the profile."""
    for model in (wan_scene().patcher.model, with_profiled_model(wan_scene()).patcher.model):
        expected = inspect.signature(model.memory_required)
        with planner.cache_in_plan(model, 1, 10, 5, planner.Plan()):
            assert "memory_required" in vars(model)
            assert inspect.signature(model.memory_required) == expected


# --- free memory as the ComfyUI the node runs in judges it -------------------------------------


@pytest.fixture
def comfy_model_management(monkeypatch):
    """``comfy.model_management`` importable, answering with the stand-in's free memory."""
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    monkeypatch.setattr(model_management, "free_bytes", 0)
    monkeypatch.setattr(model_management, "aimdo_enabled", False)
    monkeypatch.setattr(model_management, "aimdo_reclaimable", 0)
    return model_management


def last_block_caches(streams: int = 2) -> int:
    """The bytes auto places per run beyond what stays on the device anyway (wan_scene, 6 steps)."""
    new_engine = CacheSettings(**{**DEFAULTS, "warmup_steps": 1}).new_engine
    shapes = planner.PlannedShapes((1, 48, 64), (1, 48, 64), torch.float32)
    return (planner.device_bytes(new_engine, shapes, streams, False)
            - planner.device_bytes(new_engine, shapes, streams, True))


@pytest.mark.parametrize("patcher_class, offloaded", [(FreeMemoryModelPatcher, False), (ModelPatcher, True)],
                         ids=["patcher counts aimdo", "patcher without get_free_memory"])
def test_auto_judges_free_memory_by_the_patcher_where_it_has_its_own(patcher_class, offloaded, comfy_model_management,
                                                                     server):
    """torch's free memory holds ComfyUI's activation estimate but not the cache; with comfy-aimdo's
    reclaimable weights it holds both. A patcher with ``get_free_memory`` (v0.30.0 on) counts them, as
    ComfyUI's own batching does: the cache stays on the device. Without the method (v0.3.64) the node
    reads ``comfy.model_management.get_free_memory``: the cache goes to system RAM."""
    scene = declared_on_a_gpu(wan_scene(), patcher_class=patcher_class)
    estimate = scene.patcher.model.memory_required([2, *scene.noise().shape[1:]])
    comfy_model_management.free_bytes = int(estimate)
    comfy_model_management.aimdo_enabled = True
    comfy_model_management.aimdo_reclaimable = int(last_block_caches() / planner.AUTO_SHARE) + 1
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    memory = payload_of(server)["memory"]
    assert (memory["host"] == "cpu") is offloaded and (memory["host_bytes"] > 0) is offloaded


def test_free_memory_reads_the_patcher_then_comfyui_then_nothing(comfy_model_management, monkeypatch):
    device = torch.device("cuda", 0)
    scene = wan_scene()
    comfy_model_management.free_bytes = 1000
    comfy_model_management.aimdo_enabled = True
    comfy_model_management.aimdo_reclaimable = 500
    assert planner.free_memory(FreeMemoryModelPatcher(scene.patcher.model), device) == 1500
    assert planner.free_memory(scene.patcher, device) == 1000
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)  # outside ComfyUI
    assert planner.free_memory(scene.patcher, device) is None
