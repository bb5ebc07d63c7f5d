"""The cache's memory through the node: where it lives, what ComfyUI is told before sampling, and
the accounting at the real video sizes (meta tensors, nothing allocated).

The ComfyUI side is the CI stand-in (bench/standin/sampling.py ``prepare_sampling`` and
bench/standin/model_management.py ``load_models_gpu``, mirroring comfy/sampler_helpers.py); the
real tier (tests/comfyui/test_memory_real.py) checks the same against real ComfyUI releases.
"""

from __future__ import annotations

import types

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.standin import model_management
from bench.standin.patcher import DynamicModelPatcher, ModelPatcher
from bench.tiny import flux_scene, wan_scene
from bench.tiny_families import ltxav_scene
from cgtaylor_cache.core.footprint import META, footprint
from cgtaylor_cache.nodes import planner
from cgtaylor_cache.nodes.families import BlockLayout
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.report import summary_line
from cgtaylor_cache.nodes.settings import CacheSettings
from test_node import ALWAYS, apply_node, run, server  # noqa: F401  (server is a fixture)

SCENES = {"flux": flux_scene, "wan": wan_scene}
GB = 10**9


@pytest.fixture(autouse=True)
def plans():
    """What the stand-in ``load_models_gpu`` is asked for during one test."""
    model_management.loads.clear()
    yield model_management.loads
    model_management.loads.clear()


def payload_of(sent: list) -> dict:
    """The latest run's statistics event."""
    return [data for name, data, _ in sent if name == "cgtaylor.stats"][-1]


# --- same image wherever the cache lives ----------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"forecast_residual": True}, {"distance": "block0"}], ids=str)
@pytest.mark.parametrize("family", SCENES)
def test_host_memory_and_the_device_give_bit_identical_latents(family, options, server, monkeypatch):
    """cpu against gpu placement, with slices small enough that every state takes several."""
    monkeypatch.setattr("cgtaylor_cache.core.placement.SLICE_VALUES", 50)
    scene = SCENES[family]()
    latents, payloads = {}, {}
    for device in ("gpu", "cpu"):
        patched = apply_node(scene.patcher, **ALWAYS, cache_device=device, max_consecutive=2, **options)
        latents[device] = run(scene, patched, batch=2, cfg=3.0, steps=8)
        payloads[device] = payload_of(server)
        server.clear()
    assert torch.equal(latents["gpu"], latents["cpu"])
    on_device, offloaded = payloads["gpu"]["memory"], payloads["cpu"]["memory"]
    assert payloads["cpu"]["totals"]["forecast"] > 0
    assert payloads["cpu"]["totals"] == payloads["gpu"]["totals"]
    # Where the states lived, and that every forecast and full call moved them.
    assert on_device["host"] is None and on_device["host_bytes"] == 0
    assert on_device["moved_bytes_per_call"] == {"full": 0, "forecast": 0}
    assert offloaded["host"] == "cpu" and offloaded["host_bytes"] > 0
    assert offloaded["host_bytes"] == offloaded["host_bound_bytes"]  # the caches filled to their bound
    assert offloaded["moved_bytes_per_call"]["forecast"] > 0 and offloaded["moved_bytes_per_call"]["full"] > 0
    assert offloaded["peak_bytes"] + offloaded["host_bytes"] == on_device["peak_bytes"]


def test_bytes_moved_per_call_are_the_terms_each_call_needs(server):
    """Wan, cfg 3 (two streams), last-block order 2, 12 steps: 3 warm-up steps, then forecasts and full
    calls take turns (at most 1 forecast in a row) up to the last step, which is full. Block 0's order 0
    leaves the gate no lower order to choose, so every forecast moves the three terms of each stream to the
    device. Full calls per stream: the warm-up's updates move 1, 3 and 5 states (a full cache reads 2 terms
    and writes 3); the cap's full calls are judged: the forecast they did not use is measured at a sample of
    the tokens (core/call.py MEASURED_TOKENS), here all of them, so its 3 terms, then the update's 5: 8. At
    real sizes the sample is 1,024 tokens at most (1.4% of Wan 14B 720p's), and a judged call moves little
    more than an update; the last step's update 5."""
    scene = wan_scene()
    patched = apply_node(scene.patcher, **ALWAYS, cache_device="cpu", max_consecutive=1, warmup_steps=3,
                         first_block_order=0)
    run(scene, patched, cfg=3.0, steps=12)
    memory = payload_of(server)["memory"]
    state = memory["host_bound_bytes"] // (2 * (DEFAULTS["last_block_order"] + 1))
    assert memory["moved_bytes_per_call"]["forecast"] == 2 * 3 * state
    full_calls = [1, 3, 5, 8, 8, 8, 8, 5]  # steps 0, 1, 2, 4, 6, 8, 10, 11
    assert memory["moved_bytes_per_call"]["full"] == 2 * sum(full_calls) * state // len(full_calls)


# --- telling ComfyUI ----------------------------------------------------------------------


@pytest.mark.parametrize("family", SCENES)
def test_the_plan_grows_by_the_cache_bound_when_forecasting_is_on(family, plans, server):
    scene = SCENES[family]()
    run(scene, cfg=3.0, steps=6)
    run(scene, apply_node(scene.patcher, tolerance=0.0), cfg=3.0, steps=6)
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    uncached, off, on = plans
    assert (off["memory_required"], off["minimum_memory_required"]) == (uncached["memory_required"],
                                                                         uncached["minimum_memory_required"])
    memory = payload_of(server)["memory"]
    added = on["memory_required"] - uncached["memory_required"]
    # The plan, made from the latent's shape before any call, is the bound the first call measured.
    assert added == memory["planned_bytes"] == memory["bound_bytes"] > 0
    # The minimum (ComfyUI's estimate for one sample) counts both streams too; auto with the model on
    # the CPU is gpu placement, so that is the same cache on the device.
    assert on["minimum_memory_required"] - uncached["minimum_memory_required"] == added


@pytest.mark.parametrize("family", SCENES)
def test_the_minimum_plan_holds_both_streams_when_they_run_as_separate_calls(family, plans, server):
    """Short of memory for cond and uncond in one batch, ComfyUI runs them as separate calls: the case
    its one-sample (minimum) estimate plans for. Both streams' caches stay on the device between the
    calls, so the minimum must hold what the run then keeps there."""
    scene = SCENES[family]()
    run(scene, cfg=3.0, steps=6, separate_conds=True)
    run(scene, apply_node(scene.patcher, **ALWAYS, cache_device="gpu"), cfg=3.0, steps=6, separate_conds=True)
    uncached, on = plans
    memory = payload_of(server)["memory"]
    minimum = on["minimum_memory_required"] - uncached["minimum_memory_required"]
    assert payload_of(server)["totals"]["forecast"] > 0
    assert minimum == memory["bound_bytes"] >= memory["peak_bytes"] + 0 > 0


def test_cpu_placement_plans_only_what_stays_on_the_device(plans, server):
    scene = wan_scene()
    run(scene, cfg=3.0, steps=6)
    run(scene, apply_node(scene.patcher, cache_device="gpu"), cfg=3.0, steps=6)
    on_device = payload_of(server)["memory"]
    run(scene, apply_node(scene.patcher, cache_device="cpu"), cfg=3.0, steps=6)
    uncached, _, on = plans
    memory = payload_of(server)["memory"]
    assert on["memory_required"] - uncached["memory_required"] == memory["planned_bytes"] == memory["bound_bytes"]
    assert memory["host_bound_bytes"] > 0
    assert on_device["bound_bytes"] - memory["bound_bytes"] == memory["host_bound_bytes"]


def declared_on_a_gpu(scene, offload_device: torch.device = torch.device("cpu"), patcher_class=ModelPatcher):
    """The scene's patcher as ComfyUI builds it for a GPU: load device cuda:0, offload device the CPU
    (under --highvram and --gpu-only, the GPU itself: comfy/model_management.py ``unet_offload_device``).
    The model still runs on the CPU here; only the planner reads the load device."""
    patcher = scene.patcher
    scene.patcher = patcher_class(patcher.model, patcher.protocol, torch.device("cuda", 0), offload_device)
    return scene


def test_cpu_placement_rests_in_system_ram_when_the_offload_device_is_the_gpu(plans, server):
    """--highvram / --gpu-only: ComfyUI's offload device is the GPU, but ``cpu`` means system RAM."""
    scene = declared_on_a_gpu(wan_scene(), offload_device=torch.device("cuda", 0))
    run(scene, apply_node(scene.patcher, **ALWAYS, cache_device="cpu"), cfg=3.0, steps=6)
    payload = payload_of(server)
    memory = payload["memory"]
    assert payload["totals"]["forecast"] > 0 and not any("failed" in note for note in payload["notes"])
    assert memory["host"] == "cpu" and memory["host_bytes"] > 0
    (plan,) = plans
    assert memory["planned_bytes"] == memory["bound_bytes"]  # the plan leaves out what rests in system RAM


@pytest.mark.parametrize("free, offloaded", [(10**12, False), (0, True)], ids=["fits", "does not fit"])
def test_auto_offloads_when_the_cache_does_not_fit_after_loading(free, offloaded, plans, server, monkeypatch):
    monkeypatch.setattr(planner, "free_memory", lambda patcher, device: free)
    scene = declared_on_a_gpu(wan_scene())
    run(scene, cfg=3.0, steps=6)
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    uncached, on = plans
    memory = payload_of(server)["memory"]
    gpu = planner.device_bytes(CacheSettings(**{**DEFAULTS, "warmup_steps": 1}).new_engine,
                               planner.PlannedShapes((1, 48, 64), (1, 48, 64), torch.float32), 2, offload=False)
    # auto asks for room for the whole cache, but its minimum only for what never leaves the device.
    assert on["memory_required"] - uncached["memory_required"] == gpu == memory["planned_bytes"]
    minimum = on["minimum_memory_required"] - uncached["minimum_memory_required"]
    assert minimum == planner.device_bytes(CacheSettings(**{**DEFAULTS, "warmup_steps": 1}).new_engine,
                                           planner.PlannedShapes((1, 48, 64), (1, 48, 64), torch.float32), 2,
                                           offload=True)
    assert (memory["host"] == "cpu") is offloaded and (memory["host_bytes"] > 0) is offloaded


@pytest.mark.parametrize("resident, offloaded", [(False, True), (True, False)], ids=["weights to load", "resident"])
def test_auto_under_dynamic_vram_leaves_room_for_the_weights_still_to_load(resident, offloaded, plans, server,
                                                                           monkeypatch):
    """Under Dynamic VRAM, loading only reserves the weights' place: the memory free right after it still
    counts them. Here it would hold the cache beside ComfyUI's activation estimate, which the classic
    patcher takes as room for it (previous test); ``auto`` first leaves room for the weights still to come,
    so the cache goes to system RAM, unless they are already resident (a second run)."""
    scene = declared_on_a_gpu(wan_scene(), patcher_class=DynamicModelPatcher)
    size = scene.patcher.model_size()
    scene.patcher.model.vbar_resident = size if resident else 0
    settings = CacheSettings(**{**DEFAULTS, "warmup_steps": 1})
    shapes = planner.PlannedShapes((1, 48, 64), (1, 48, 64), torch.float32)
    last_caches = planner.device_bytes(settings.new_engine, shapes, 2, False) - planner.device_bytes(
        settings.new_engine, shapes, 2, True)
    estimate = scene.patcher.model.memory_required([2, *scene.noise().shape[1:]])
    assert size > 0.2 * last_caches  # the weights to come would not fit in the cache's margin
    free = estimate + last_caches / planner.AUTO_SHARE + 1
    monkeypatch.setattr(planner, "free_memory", lambda patcher, device: free)
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    memory = payload_of(server)["memory"]
    assert planner.weights_to_come(scene.patcher) == (0 if resident else size)
    assert (memory["host"] == "cpu") is offloaded and (memory["host_bytes"] > 0) is offloaded


def test_only_dynamic_vram_has_weights_to_come():
    """A classic patcher that loaded part of the model streams the rest from system RAM on purpose."""
    scene = wan_scene()
    classic = ModelPatcher(scene.patcher.model, scene.patcher.protocol, torch.device("cuda", 0), torch.device("cpu"))
    scene.patcher.model.model_loaded_weight_memory = 100
    assert planner.weights_to_come(classic) == 0
    dynamic = DynamicModelPatcher(classic.model, classic.protocol, classic.load_device, classic.offload_device)
    scene.patcher.model.vbar_resident = 50
    assert planner.weights_to_come(dynamic) == dynamic.model_size() - 150
    assert planner.weights_to_come(dynamic.clone()) == planner.weights_to_come(dynamic)


def test_a_model_whose_shapes_the_planner_cannot_tell_is_noted(plans, server):
    scene = ltxav_scene()
    run(scene, cfg=3.0, steps=6)
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    uncached, on = plans
    assert on == uncached
    assert any("leaves the cache out" in note for note in payload_of(server)["notes"])


def test_the_plan_is_not_left_on_the_shared_model(plans):
    scene = wan_scene()
    run(scene, apply_node(scene.patcher), cfg=3.0, steps=6)
    assert "memory_required" not in vars(scene.patcher.model)


def test_the_log_line_and_the_payload_say_where_the_cache_lived(server, caplog):
    scene = flux_scene()
    with caplog.at_level("INFO", logger="cgtaylor_cache.nodes.report"):
        run(scene, apply_node(scene.patcher, **ALWAYS, cache_device="cpu"), cfg=3.0, steps=6)
    memory = payload_of(server)["memory"]
    assert set(memory) == {"device", "peak_bytes", "bound_bytes", "host", "host_bytes", "host_bound_bytes",
                           "planned_bytes", "moved_bytes_per_call"}
    assert memory["device"] == "cpu" and memory["host"] == "cpu"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CGTaylorCache")]
    assert "in cpu memory" in line and "moved per forecast call" in line and "added to ComfyUI's memory plan" in line


def test_summary_line_names_the_cache_memory():
    engine = CacheSettings(**{**DEFAULTS, "cache_device": "cpu"}).new_engine()
    engine.stats.model = "Wan"
    engine.placement.configure(META, None)
    footprint(engine, (1, 75600, 5120), (1, 75600, 5120), torch.bfloat16, 2)
    line = summary_line("3", engine.stats)
    assert "cache peak 96.8 MB on meta (bound 638.4 MB), 1.5 GB in meta memory (bound 4.6 GB)" in line


# --- the real sizes, without allocating them -------------------------------------------------


WAN_14B = types.SimpleNamespace(patch_size=(1, 2, 2), dim=5120)
WAN_LAYOUT = BlockLayout("Wan", "WanModel", tuple(("double_block", i) for i in range(40)))
# 1280x720, 81 frames: the VAE's latent is 16 x 21 x 90 x 160 (8x spatial, 4x temporal + 1).
WAN_720P_81 = (1, 16, 21, 90, 160)
# comfy/model_base.py:374 memory_required with flash attention: area x dtype bytes x 0.01 x factor MB,
# area = batch x frames x height x width of the latent; WAN21_T2V's factor for dim 5120 is 5120 / 2222
# (comfy/supported_models.py:1328, v0.30.0). ComfyUI's own estimate for cond and uncond in bf16:
COMFY_ESTIMATE_WAN_14B = 2 * 21 * 90 * 160 * 2 * 0.01 * (5120 / 2222) * 2**20


def wan_14b_plan(free_after_load: int):
    conds = {kind: [{"cross_attn": torch.empty(1, 512, 4096, device=META)}] for kind in ("positive", "negative")}
    shapes = planner.planned_shapes(WAN_LAYOUT, WAN_14B, WAN_720P_81, conds, torch.bfloat16)
    new_engine = CacheSettings(**DEFAULTS).new_engine
    engine = new_engine()
    engine.placement.configure(META, planner.auto_budget(free_after_load, COMFY_ESTIMATE_WAN_14B))
    return shapes, footprint(engine, shapes.gate, shapes.last, shapes.dtype, 2)


def test_wan_14b_720p_81_frames_with_cfg_adds_at_most_2_gb_to_a_24_gb_card():
    """The node's default (auto placement, the sampled gate) on Wan 2.1/2.2 14B at 1280x720x81 frames
    with cfg, on a 24 GB card: 14.3 GB of fp8 weights leave under 10 GB, less than ComfyUI's own
    activation estimate (28 GB for cond and uncond), so nothing is left for the cache on the GPU and
    the last block's states go to host memory."""
    shapes, memory = wan_14b_plan(free_after_load=24 * 2**30 - 14_300_000_000)
    assert shapes.gate == shapes.last == (1, 75_600, 5120)
    assert memory.host == "meta"  # offloaded
    assert memory.bound["host"] == 2 * 3 * 75_600 * 5120 * 2  # three bf16 states per stream, 4.6 GB
    assert memory.device_bound <= 2 * GB
    # the sampled gate, one slice's working buffers (block 0's trend: three float32 slices)
    # and per stream a judged call's forecast at 1,024 tokens (core/placement.py row_bytes)
    assert memory.device_bound == 2 * 3 * 4725 * 5120 * 2 + 2**24 * 3 * 4 + 2 * 1024 * 5120 * 14


def test_wan_14b_stays_on_an_80_gb_card():
    _, memory = wan_14b_plan(free_after_load=80 * 2**30 - 14_300_000_000)
    assert memory.host is None and memory.bound["host"] == 0
    assert memory.device_bound == (2 * 3 * 4725 * 5120 * 2 + 2 * 3 * 75_600 * 5120 * 2 + 2**24 * 12
                                   + 2 * 1024 * 5120 * 14)


def test_wan_14b_480p_on_a_24_gb_card_under_dynamic_vram_goes_to_system_ram():
    """Right after a Dynamic VRAM load a 24 GB card shows nearly all of itself free; beyond ComfyUI's
    activation estimate that held both streams' caches, but the 14.3 GB of weights still to come fill it
    during the first steps. ``auto`` counts them and keeps the cache in system RAM; 32 GB hold both."""
    from bench.memory import GIB, TAKEN, WORKLOADS, dynamic_vram_decision, node_memory

    wan_480p = next(w for w in WORKLOADS if "14B 832x480" in w.name)
    assert [dynamic_vram_decision(wan_480p, card) for card in (16, 24, 32, 80)] == ["RAM", "RAM", "GPU", "GPU"]
    read_as_free = planner.auto_budget(24 * GIB - TAKEN, wan_480p.dynamic.comfy_estimate())
    assert node_memory(wan_480p, budget=read_as_free).bound["host"] == 0  # without the weights: on the GPU


def test_the_documented_memory_table_is_the_node_accounting():
    from pathlib import Path

    from bench.memory import table

    page = (Path(__file__).resolve().parents[1] / "docs" / "memory.md").read_text()
    shown = page.split("<!-- memory:start -->\n", 1)[1].split("\n<!-- memory:end -->", 1)[0]
    assert shown == table(), "docs/memory.md's table is stale: run `python -m bench.report`"
