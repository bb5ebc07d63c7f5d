"""The node against tiny FLUX- and Wan-layout models and ComfyUI stand-ins (bench/standin).

Block executions are counted with forward hooks on the real block modules, so the
counts say what actually ran, not what the cache believes it skipped.
"""

from __future__ import annotations

import gc
import json
import math
import logging
import sys
import types
import weakref

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.standin.sampling import Cond, sample
from bench.tiny import Scene, flux_scene, wan_scene
from cgtaylor_cache.nodes.families import UnsupportedModelError
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.runtime import CacheRuntime
from node_driver import patched_by_node

HUGE = 10.0  # the largest tolerance the node takes
# The paper's gate on block 0's own error at the largest tolerance accepts every call the schedule allows:
# for the tests of the wiring, where the gate's judgement is not the point (the calibrated gate waits for
# pairs before it trusts anything; tests/test_calibration.py covers it).
ALWAYS = {"tolerance": HUGE, "gate": "block0"}
NEVER = 1e-12  # the gate runs on every eligible call but never accepts: caches fill, nothing is forecast
SCENES = {"flux": flux_scene, "wan": wan_scene}


def apply_node(patcher, unique_id: str = "7", prompt: dict | None = None, **overrides):
    return patched_by_node(patcher, unique_id, prompt, **{**DEFAULTS, "warmup_steps": 1, **overrides})


def runtime_of(patcher) -> CacheRuntime:
    patch = next(iter(patcher.model_options["transformer_options"]["patches_replace"]["dit"].values()))
    return patch.cgtaylor_runtime


def blocks_of(scene: Scene) -> list[torch.nn.Module]:
    """The block modules in the order the model runs them (Wan: ``blocks``; Qwen-Image and LTX:
    ``transformer_blocks``; the FLUX-like families: double then single blocks)."""
    model = scene.patcher.get_model_object("diffusion_model")
    if hasattr(model, "double_blocks"):
        return [*model.double_blocks, *model.single_blocks]
    return list(model.blocks if hasattr(model, "blocks") else model.transformer_blocks)


class BlockCounter:
    def __init__(self, scene: Scene) -> None:
        self.counts = [0] * len(blocks_of(scene))
        self.handles = [b.register_forward_hook(self._hook(i)) for i, b in enumerate(blocks_of(scene))]

    def _hook(self, index: int):
        def count(module, inputs, output):
            self.counts[index] += 1

        return count

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def server(monkeypatch):
    """ComfyUI's server.py as the node sees it: ``PromptServer.instance.send_sync`` and ``client_id``."""
    sent = []
    instance = types.SimpleNamespace(client_id="client-1", send_sync=lambda event, data, sid: sent.append((event, data, sid)))
    module = types.ModuleType("server")
    module.PromptServer = types.SimpleNamespace(instance=instance)
    monkeypatch.setitem(sys.modules, "server", module)
    return sent


def run(scene: Scene, patcher=None, batch: int = 1, **kwargs) -> torch.Tensor:
    return sample(patcher or scene.patcher, scene.noise(batch), scene.positive, scene.negative, **kwargs)


# --- exactness --------------------------------------------------------------------------


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_threshold_zero_is_bit_identical(family, cfg, sampler):
    scene = SCENES[family]()
    baseline = run(scene, cfg=cfg, sampler=sampler, steps=6)
    patched = run(scene, apply_node(scene.patcher, tolerance=0.0), cfg=cfg, sampler=sampler, steps=6)
    assert torch.equal(baseline, patched)


def test_node_leaves_the_input_model_untouched():
    scene = flux_scene()
    baseline = run(scene, steps=6)
    apply_node(scene.patcher, **ALWAYS)
    assert scene.patcher.model_options["transformer_options"] == {}
    assert scene.patcher.wrappers == {}
    assert torch.equal(run(scene, steps=6), baseline)


# --- skipping -----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"forecast_residual": True}, {"distance": "block0"}], ids=str)
@pytest.mark.parametrize("family", SCENES)
def test_forecast_calls_run_only_block_zero(family, options, server):
    scene = SCENES[family]()
    patcher = apply_node(scene.patcher, **ALWAYS, **options)
    assert runtime_of(patcher).new_engine().residual is options.get("forecast_residual", False)
    counter = BlockCounter(scene)
    out = run(scene, patcher, steps=8)
    counter.close()
    totals = server[-1][1]["totals"]
    full_calls = totals["calls"] - totals["forecast"]
    assert totals["forecast"] > 0 and torch.isfinite(out).all()
    assert counter.counts[0] == totals["calls"]  # block 0 runs on every call (the gate)
    assert counter.counts[1:] == [full_calls] * (len(counter.counts) - 1)
    assert totals["blocks_run"] == sum(counter.counts)
    assert totals["blocks_total"] == totals["calls"] * len(counter.counts)


def test_schedule_keeps_warmup_first_and_last_steps_full(server):
    scene = wan_scene()
    run(scene, apply_node(scene.patcher, **ALWAYS, warmup_steps=3), steps=10)
    steps = server[-1][1]["steps"]
    forecast = [s["step"] for s in steps if s["forecast"]]
    assert forecast and min(forecast) >= 3 and 9 not in forecast


def test_max_consecutive_caps_forecast_runs(server):
    scene = wan_scene()
    run(scene, apply_node(scene.patcher, **ALWAYS, max_consecutive=2), steps=12)
    flags = [s["forecast"] > 0 for s in server[-1][1]["steps"]]
    longest = max(len(run_) for run_ in "".join("x" if f else "." for f in flags).split("."))
    assert longest == 2


# --- streams --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", SCENES)
def test_cond_and_uncond_keep_separate_caches(family, server):
    """Batched CFG and cond/uncond in separate calls forecast the same, so no cache is shared."""
    scene = SCENES[family]()
    batched = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=4.0, steps=8)
    batched_stats = server[-1][1]
    separate = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=4.0, steps=8, separate_conds=True)
    separate_stats = server[-1][1]
    assert batched_stats["totals"]["forecast"] > 0
    assert separate_stats["totals"]["calls"] == 2 * batched_stats["totals"]["calls"]
    assert separate_stats["totals"]["forecast"] == 2 * batched_stats["totals"]["forecast"]
    torch.testing.assert_close(separate, batched, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize(("cfg", "separate", "streams"), [(1.0, False, 1), (4.0, False, 2), (4.0, True, 2)])
def test_one_cache_per_cond_within_the_memory_bound(cfg, separate, streams, order):
    """Orders n and n: each stream holds at most (n + 1) + (n + 1) hidden-state tensors."""
    scene = wan_scene()
    patcher = apply_node(scene.patcher, **ALWAYS, first_block_order=order, last_block_order=order, max_consecutive=2)
    runtime = runtime_of(patcher)
    held = []
    run(scene, patcher, cfg=cfg, steps=8, separate_conds=separate,
        callback=lambda step, x: held.append(len(runtime.engine.cached_tensors())))
    assert max(held) == 2 * (order + 1) * streams


def test_batch_of_two_matches_each_sample_alone():
    scene = flux_scene()
    patcher = apply_node(scene.patcher, **ALWAYS)
    noise = scene.noise(batch=2)
    together = sample(patcher, noise, scene.positive, scene.negative, cfg=3.0, steps=8)
    alone = [sample(patcher, noise[i : i + 1], scene.positive, scene.negative, cfg=3.0, steps=8) for i in range(2)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_heun_counts_both_evaluations_of_a_step(server):
    scene = wan_scene()
    run(scene, apply_node(scene.patcher, **ALWAYS), sampler="heun", steps=6)
    calls = [s["calls"] for s in server[-1][1]["steps"]]
    # Heun evaluates at sigma_i and again at sigma_i+1 (the last step only once); calls are
    # filed under the step whose sigma they run at, so its second evaluation lands on step i+1.
    assert calls == [1, 2, 2, 2, 2, 2]


# --- runs ------------------------------------------------------------------------------------


def test_each_run_starts_fresh():
    scene = flux_scene()
    patcher = apply_node(scene.patcher, **ALWAYS)
    first, second = run(scene, patcher, steps=8), run(scene, patcher, steps=8)
    assert torch.equal(first, second)


class Interrupted(Exception):
    pass


def test_an_interrupted_run_leaves_nothing_behind(server):
    scene = wan_scene()
    patcher = apply_node(scene.patcher, **ALWAYS)
    runtime = runtime_of(patcher)
    cached: list[weakref.ref] = []

    def interrupt(step, x):
        cached.extend(weakref.ref(t) for t in runtime.engine.cached_tensors())
        if step == 4:
            raise Interrupted  # ComfyUI's cancel raises from the sampler callback

    with pytest.raises(Interrupted):
        run(scene, patcher, steps=8, callback=interrupt)
    gc.collect()
    assert cached and all(ref() is None for ref in cached)
    assert runtime.engine is None
    assert [s["calls"] for s in server[-1][1]["steps"]][5:] == [0, 0, 0]  # reported up to the interruption
    assert torch.equal(run(scene, patcher, steps=8), run(scene, apply_node(scene.patcher, **ALWAYS), steps=8))


def test_no_cached_tensor_outlives_the_run():
    scene = flux_scene()
    patcher = apply_node(scene.patcher, **ALWAYS)
    runtime = runtime_of(patcher)
    cached: list[weakref.ref] = []
    run(scene, patcher, steps=8, callback=lambda step, x: cached.extend(weakref.ref(t) for t in runtime.engine.cached_tensors()))
    gc.collect()
    assert cached and all(ref() is None for ref in cached)


# --- other nodes' patches -------------------------------------------------------------------


def skip_block(args, extra):
    """A block patch another node installs on the model itself, here one that skips its block.
    (SkipLayerGuidanceDiT sets its skip patches per call instead: tests/test_slg.py.)"""
    return args


@pytest.mark.parametrize("threshold", [0.0, NEVER])
def test_existing_block_patch_is_chained(threshold):
    scene = wan_scene()
    slg = scene.patcher.clone()
    slg.set_model_patch_replace(skip_block, "dit", "double_block", 2)
    counter = BlockCounter(scene)
    expected = run(scene, slg, steps=6)
    counts_without_node = list(counter.counts)
    assert torch.equal(run(scene, apply_node(slg, tolerance=threshold), steps=6), expected)
    counter.close()
    assert counts_without_node[2] == 0
    assert [c - c0 for c, c0 in zip(counter.counts, counts_without_node)] == counts_without_node


@pytest.mark.parametrize("threshold", [0.0, NEVER])
def test_node_applied_twice_replaces_itself(server, threshold):
    scene = flux_scene()
    twice = apply_node(apply_node(scene.patcher, unique_id="1", **ALWAYS), unique_id="2", tolerance=threshold)
    assert torch.equal(run(scene, twice, steps=6), run(scene, steps=6))
    assert [event[1]["node"] for event in server] == ["2"]


def test_foreign_patch_on_block_zero_after_the_node_turns_caching_off(server):
    scene = wan_scene()
    patched = apply_node(scene.patcher, **ALWAYS).clone()
    patched.set_model_patch_replace(skip_block, "dit", "double_block", 0)
    plain = scene.patcher.clone()
    plain.set_model_patch_replace(skip_block, "dit", "double_block", 0)
    assert torch.equal(run(scene, patched, steps=6), run(scene, plain, steps=6))
    stats = server[-1][1]
    assert stats["totals"]["forecast"] == 0 and stats["totals"]["calls"] == 6
    assert any("double_block 0" in note and "computed in full" in note and "goes before CGTaylorCache" in note
               for note in stats["notes"]), stats["notes"]
    assert not any("update ComfyUI" in note for note in stats["notes"])  # its own pass-through is not a bypass


def test_foreign_patch_on_a_middle_block_after_the_node_is_cached_with_it(server):
    """Every call carries the foreign patch, so the one stream per cond caches the patched stack."""
    scene = wan_scene()
    patched = apply_node(scene.patcher, tolerance=NEVER).clone()
    patched.set_model_patch_replace(skip_block, "dit", "double_block", 1)
    plain = scene.patcher.clone()
    plain.set_model_patch_replace(skip_block, "dit", "double_block", 1)
    assert torch.equal(run(scene, patched, cfg=3.0, steps=6), run(scene, plain, cfg=3.0, steps=6))
    accelerated = apply_node(scene.patcher, **ALWAYS).clone()
    accelerated.set_model_patch_replace(skip_block, "dit", "double_block", 1)
    run(scene, accelerated, cfg=3.0, steps=6)
    stats = server[-1][1]
    assert stats["totals"]["forecast"] > 0
    assert any("double_block 1" in note and "streams of their own" in note for note in stats["notes"])


# --- model variants ---------------------------------------------------------------------------


def flux_with_extras(scene: Scene) -> Scene:
    """Kontext reference latents and ControlNet residuals on the positive and negative conds."""
    g = torch.Generator().manual_seed(5)
    hidden = scene.patcher.get_model_object("diffusion_model").params.hidden_size
    tokens = (scene.latent_shape[2] // 2) * (scene.latent_shape[3] // 2)
    control = {
        "input": [torch.randn(1, tokens, hidden, generator=g) * 0.1, None],
        "output": [None, torch.randn(1, tokens, hidden, generator=g) * 0.1],
    }
    # Two references, so the second is laid out beside the first (Flux's "offset" ids).
    ref = [torch.randn(1, *scene.latent_shape[1:], generator=g) for _ in range(2)]
    conds = [Cond({**c.inputs, "ref_latents": ref, "control": control}) for c in (scene.positive, scene.negative)]
    return Scene(scene.patcher, *conds, scene.latent_shape)


@pytest.mark.parametrize("variant", ["flux-kontext-controlnet", "wan-vace"])
def test_variants_are_exact_off_and_skip_blocks_on(variant, server):
    scene = flux_with_extras(flux_scene()) if variant.startswith("flux") else wan_scene(vace=True)
    baseline = run(scene, steps=6)
    assert torch.equal(run(scene, apply_node(scene.patcher, tolerance=0.0), steps=6), baseline)
    assert torch.equal(run(scene, apply_node(scene.patcher, tolerance=NEVER), steps=6), baseline)
    assert server[-1][1]["totals"]["forecast"] == 0 and any(s["gate_error"] for s in server[-1][1]["steps"])
    forecast = run(scene, apply_node(scene.patcher, **ALWAYS), steps=6)
    assert torch.isfinite(forecast).all() and server[-1][1]["totals"]["forecast"] > 0


def test_wan22_two_experts_each_cover_their_slice(server):
    """Wan 2.2 A14B: two models, each with its node, sampled by two KSamplerAdvanced."""
    high, low = wan_scene(seed=0), wan_scene(seed=1)
    noise = high.noise()

    def two_stage(high_patcher, low_patcher):
        latent = sample(high_patcher, noise, high.positive, cfg=3.0, steps=10, shift=5.0, last_step=5, negative=high.negative)
        return sample(low_patcher, torch.zeros_like(noise), low.positive, low.negative, cfg=3.0, steps=10, shift=5.0,
                      start_step=5, latent=latent)

    baseline = two_stage(high.patcher, low.patcher)
    server.clear()
    exact = two_stage(apply_node(high.patcher, "high", tolerance=0.0), apply_node(low.patcher, "low", tolerance=0.0))
    assert torch.equal(exact, baseline)
    assert [(e[1]["node"], e[1]["num_steps"]) for e in server] == [("high", 5), ("low", 5)]


def test_split_sampling_keeps_one_window_over_both_runs(server):
    """One patched model sampled by two KSamplerAdvanced calls (steps 0-10, then 10-20): end_fraction
    0.5 is half of the model's noise range, so the second run forecasts nothing, and the first run's
    last call, which hands its latent on, is no last step."""
    scene = wan_scene()
    noise = scene.noise()
    patched = apply_node(scene.patcher, **ALWAYS, end_fraction=0.5, max_consecutive=0)
    latent = sample(patched, noise, scene.positive, scene.negative, cfg=3.0, steps=20, last_step=10)
    sample(patched, torch.zeros_like(noise), scene.positive, scene.negative, cfg=3.0, steps=20, start_step=10, latent=latent)
    first, second = (event[1] for event in server[-2:])
    assert [s["step"] for s in first["steps"] if s["forecast"]] == list(range(1, 10))
    assert second["totals"]["forecast"] == 0
    assert second["totals"]["full"] == {"warmup": 1, "edge": 1, "window": 8}


def with_easycache(patcher):
    """ComfyUI's EasyCache node as far as the node meets it (comfy_extras/nodes_easycache.py at v0.33.0):
    its holder in ``transformer_options["easycache"]`` (a ``name``, :195-196 and :403-405) and a
    DIFFUSION_MODEL wrapper under the key "easycache" (:407-409) that answers a call from its cache without
    running the model: ``x`` plus the output-minus-input difference it kept (``apply_cache_diff`` :243-275,
    ``update_cache_diff`` :277-297). Its decision rule is left out: this one answers every other call."""
    clone = patcher.clone()
    holder = types.SimpleNamespace(name="EasyCache", diff=None, calls=0)
    clone.model_options["transformer_options"]["easycache"] = holder

    def easycache_forward_wrapper(executor, *args, **kwargs):
        x = args[0]
        holder.calls += 1
        if holder.diff is not None and holder.calls % 2 == 0:
            return x + holder.diff
        out = executor(*args, **kwargs)
        holder.diff = out - x
        return out

    clone.add_wrapper_with_key("diffusion_model", "easycache", easycache_forward_wrapper)
    return clone


@pytest.mark.parametrize("tolerance", [0.0, None])
def test_another_cache_after_the_node_is_named_and_its_calls_counted(tolerance, server):
    """EasyCache applied after the node wraps inside its wrapper: the calls it answers reach no block. They
    were blamed on the model and the rest of the run computed in full, even at tolerance 0."""
    scene = wan_scene()
    settings = {} if tolerance is None else {"tolerance": tolerance}
    alone = run(scene, with_easycache(scene.patcher), cfg=3.0, steps=10)
    counter = BlockCounter(scene)
    out = run(scene, with_easycache(apply_node(scene.patcher, **settings)), cfg=3.0, steps=10)
    counter.close()
    payload = server[-1][1]
    totals = payload["totals"]
    assert totals["served"] == 5 and totals["calls"] == 10
    assert totals["blocks_run"] == sum(counter.counts) and totals["blocks_total"] == 10 * len(counter.counts)
    assert "fallback" not in totals["full"]
    assert any("EasyCache is on this model too: use one cache at a time" in n for n in payload["notes"]), payload["notes"]
    assert any("EasyCache answered 5 of 10 calls" in n for n in payload["notes"]), payload["notes"]
    assert not any("never called its block patches" in n for n in payload["notes"])
    if tolerance == 0.0:
        assert torch.equal(out, alone)


def test_a_merge_that_keeps_the_other_model_is_reported(server, caplog):
    """ComfyUI's merge nodes keep model1's patches (comfy_extras/nodes_model_merging.py ModelMergeSimple.merge:
    ``m = model1.clone()``, then model2's weight patches only): a CGTaylorCache feeding model2 is dropped
    without a run to report, so the node says so when it runs, from the queued graph (hidden PROMPT)."""
    scene = wan_scene()
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan.safetensors", "weight_dtype": "default"}},
        "7": {"class_type": "CGTaylorCache", "inputs": {"model": ["1", 0]}},
        "12": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["7", 0], "ratio": 0.5}},
    }
    with caplog.at_level(logging.WARNING):
        apply_node(scene.patcher, unique_id="7", prompt=prompt)
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "node 7" in message and "ModelMergeSimple (node 12) as model2" in message
    (event, payload, _), = server
    assert event == "cgtaylor.stats" and payload["node"] == "7" and payload["steps"] == [] and payload["notes"]
    swapped = {**prompt, "12": {**prompt["12"], "inputs": {"model1": ["7", 0], "model2": ["1", 0], "ratio": 0.5}}}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        apply_node(scene.patcher, unique_id="7", prompt=swapped)  # as model1 the cache is kept
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# --- errors and reports -------------------------------------------------------------------------


def test_unsupported_model_is_named():
    class UNetModel(torch.nn.Module):
        pass

    from bench.standin.patcher import ModelPatcher
    from bench.standin.sampling import FlowModel

    with pytest.raises(UnsupportedModelError, match=r"UNetModel.*FLUX.*Wan"):
        apply_node(ModelPatcher(FlowModel(UNetModel())))


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [("tolerance", -0.1, "tolerance"), ("start_fraction", 0.9, "start"), ("last_block_order", 7, "order"),
     ("distance", "blocks", "distance must be one of"), ("forecast_residual", "yes", "residual must be true or false")],
)
def test_bad_settings_say_what_is_wrong(setting, value, message):
    overrides = {setting: value}
    if setting == "start_fraction":
        overrides["end_fraction"] = 0.5
    with pytest.raises(ValueError, match=f"CGTaylorCache: .*{message}"):
        apply_node(flux_scene().patcher, **overrides)


def test_stats_event_carries_node_id_and_steps(server):
    scene = flux_scene()
    run(scene, apply_node(scene.patcher, unique_id="12:7", **ALWAYS), cfg=3.0, steps=8)
    (event, payload, client), = server
    assert (event, client, payload["node"], payload["model"], payload["method"]) == (
        "cgtaylor.stats", "client-1", "12:7", "Flux", "cg-taylor")
    assert [s["step"] for s in payload["steps"]] == list(range(8))
    assert sum(s["forecast"] for s in payload["steps"]) == payload["totals"]["forecast"] > 0
    gated = [s for s in payload["steps"] if s["forecast"]]
    assert all(isinstance(s["gate_error"], float) for s in gated)
    assert json.loads(json.dumps(payload)) == payload


def test_log_line_and_nothing_to_forecast_note(server, caplog):
    scene = wan_scene()
    with caplog.at_level(logging.INFO):
        out = run(scene, apply_node(scene.patcher, unique_id="3", **ALWAYS, warmup_steps=20), steps=4)
    assert torch.equal(out, run(scene, steps=4))
    line, = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CGTaylorCache")]
    assert "node 3" in line and "forecast 0/4 model calls" in line and "nothing to forecast" in line
    assert any("nothing to forecast" in note for note in server[-1][1]["notes"])


def test_stats_are_not_sent_without_a_server(monkeypatch):
    """Called directly: the runtime's end-of-run guard swallows any exception a report raises, so a
    sampling run could not tell a quiet "no server" from a crash."""
    from cgtaylor_cache.core import RunStats
    from cgtaylor_cache.nodes.report import send_stats

    stats = RunStats("cg-taylor", 0.1, 4)
    monkeypatch.setitem(sys.modules, "server", None)  # `from server import ...` raises ImportError
    assert send_stats("1", stats) is False
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=None)))
    assert send_stats("1", stats) is False  # ComfyUI imported but its server not started (scripts)


def test_stats_are_sent_to_the_client_that_queued_the_prompt(server):
    from cgtaylor_cache.core import RunStats
    from cgtaylor_cache.nodes.report import send_stats

    stats = RunStats("cg-taylor", 0.1, 4)
    assert send_stats("5", stats) is True
    assert server == [("cgtaylor.stats", {**stats.to_json(), "node": "5"}, "client-1")]


# --- the benchmark's baselines through the same adapter ---------------------------------------


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("baseline", ["fbcache", "input-change"])
def test_residual_baselines_run_through_the_adapter(family, baseline):
    from bench.baselines import FirstBlockCache, InputChangeCache
    from cgtaylor_cache.nodes.families import detect
    from cgtaylor_cache.nodes.runtime import install

    engines = {"fbcache": FirstBlockCache, "input-change": InputChangeCache}
    scene = SCENES[family]()
    layout = detect(scene.patcher.get_model_object("diffusion_model"))
    reports = []

    def patched(threshold):
        clone = scene.patcher.clone()
        install(clone, CacheRuntime(lambda: engines[baseline](threshold), layout, reports.append))
        return clone

    uncached = run(scene, cfg=3.0, steps=8)
    assert torch.equal(run(scene, patched(0.0), cfg=3.0, steps=8), uncached)
    assert torch.equal(run(scene, patched(NEVER), cfg=3.0, steps=8), uncached)  # gated, never accepted
    assert reports[-1].forecast_calls == 0 and any(r.gate_errors for r in reports[-1].steps.values())
    counter = BlockCounter(scene)
    out = run(scene, patched(1e9), cfg=3.0, steps=8)
    counter.close()
    stats = reports[-1]
    assert torch.isfinite(out).all() and stats.forecast_calls > 0 and stats.method == baseline
    assert stats.blocks_run == sum(counter.counts)
    assert counter.counts[0] == stats.calls - (stats.forecast_calls if baseline == "input-change" else 0)


def test_chroma_layout_leaves_out_the_blocks_it_skips():
    """Chroma runs Flux's block protocol but skips the indices in skip_mmdit / skip_dit
    (comfy/ldm/chroma/model.py:180-253), so those keys must not be first or last."""
    from bench.models import Flux, FluxParams
    from cgtaylor_cache.nodes.families import detect

    class Chroma(torch.nn.Module):
        """comfy/ldm/chroma/model.py:47 (both versions): a plain nn.Module, not a Flux subclass,
        with Flux's block lists and its own skip lists (:86-110)."""

        def __init__(self) -> None:
            super().__init__()
            flux = Flux(FluxParams(depth=2, depth_single_blocks=4))
            self.double_blocks, self.single_blocks = flux.double_blocks, flux.single_blocks
            self.skip_mmdit, self.skip_dit = [0], [3]

    assert "Flux" not in {klass.__name__ for klass in Chroma.__mro__}
    layout = detect(Chroma())
    assert layout.family == "Chroma"
    assert layout.first == ("double_block", 1) and layout.last == ("single_block", 2)
    assert ("single_block", 3) not in layout.keys and len(layout.keys) == 4


def test_a_comfyui_without_diffusion_model_wrappers_is_reported(server, caplog):
    """Older ComfyUI ran Flux/Wan forward without the DIFFUSION_MODEL wrapper: say so, never a silent no-op."""
    from bench.models import WanModel

    class OldWanModel(WanModel):
        def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
            return self._forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)

    scene = wan_scene()
    old = scene.patcher.clone()
    old.model.diffusion_model.__class__ = OldWanModel
    try:
        with caplog.at_level(logging.INFO):
            out = run(scene, apply_node(old, **ALWAYS), steps=6)
    finally:
        old.model.diffusion_model.__class__ = WanModel
    assert torch.equal(out, run(scene, steps=6))
    assert any("without calling DIFFUSION_MODEL wrappers" in note for note in server[-1][1]["notes"])
    assert "update ComfyUI" in caplog.text


def test_a_patcher_without_wrappers_gets_a_clear_error():
    class OldPatcher:
        def __init__(self, patcher):
            self.patcher = patcher
            self.model_options = patcher.model_options

        def get_model_object(self, name):
            return self.patcher.get_model_object(name)

        def clone(self):
            return OldPatcher(self.patcher.clone())

        def set_model_patch_replace(self, *args):
            self.patcher.set_model_patch_replace(*args)

    with pytest.raises(RuntimeError, match="update ComfyUI"):
        apply_node(OldPatcher(wan_scene().patcher))


def test_per_block_torch_compile_keeps_working(server):
    """Every decision is taken outside the blocks, so each block compiles as one whole graph
    (fullgraph). A counting backend proves dynamo really traced them: the eager backend would
    pass this test even if nothing were compiled."""
    scene = wan_scene()
    patched = apply_node(scene.patcher, **ALWAYS)
    eager = run(scene, patched, cfg=3.0, steps=6)
    eager_forecasts = server[-1][1]["totals"]["forecast"]
    graphs: list[torch.fx.GraphModule] = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    blocks = blocks_of(scene)
    try:
        for block in blocks:
            block.compile(backend=counting_backend, fullgraph=True)
        compiled = run(scene, patched, cfg=3.0, steps=6)
        compiled_again = run(scene, patched, cfg=3.0, steps=6)
    finally:
        for block in blocks:
            block._compiled_call_impl = None  # nn.Module.compile's hook; back to eager for other tests
        torch._dynamo.reset()
    torch.testing.assert_close(compiled, eager)
    assert torch.equal(compiled_again, compiled)
    assert server[-1][1]["totals"]["forecast"] == eager_forecasts > 0
    # One graph per block (the blocks share code, so dynamo may reuse a guard-compatible one), and no
    # recompilation on the second run: the cache's decisions never reach the traced code.
    assert 1 <= len(graphs) <= len(blocks), len(graphs)


def test_node_patches_the_object_patched_diffusion_model(server):
    """get_model_object honours object patches (comfy/model_patcher.py:466-486): a diffusion model
    another node swapped in is the one the node lays out, and the one that runs."""
    from bench.models import WanModel, WanParams

    scene = wan_scene()
    torch.manual_seed(3)
    deeper = WanModel(WanParams(num_layers=6)).eval()
    swapped = scene.patcher.clone()
    swapped.add_object_patch("diffusion_model", deeper)
    baseline = run(scene, swapped, cfg=3.0, steps=8)
    assert not torch.equal(baseline, run(scene, cfg=3.0, steps=8))
    assert torch.equal(run(scene, apply_node(swapped, tolerance=NEVER), cfg=3.0, steps=8), baseline)
    patched = apply_node(swapped, **ALWAYS)
    assert runtime_of(patched).layout.last == ("double_block", 5)
    counts = [0] * 6
    handles = [b.register_forward_hook(lambda m, i, o, n=n: counts.__setitem__(n, counts[n] + 1))
               for n, b in enumerate(deeper.blocks)]
    run(scene, patched, cfg=3.0, steps=8)
    for handle in handles:
        handle.remove()
    totals = server[-1][1]["totals"]
    assert totals["forecast"] > 0 and counts[0] == totals["calls"]
    assert counts[1:] == [totals["calls"] - totals["forecast"]] * 5  # the swapped model's blocks 1-5 skipped


def test_widget_fixture_is_what_the_node_sends_now(monkeypatch):
    """The browser tests draw tests/browser/stats_fixture.json; it must be a run of the current node
    with its current defaults (`make fixture` records it), not a payload from an older node."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    try:
        from record_fixture import record
    finally:
        sys.path.pop(0)
    committed = json.loads((Path(__file__).parent / "browser" / "stats_fixture.json").read_text())
    monkeypatch.setitem(sys.modules, "server", None)  # record() installs a stand-in PromptServer: undone after
    fresh = record(steps=20, cfg=3.0, sampler="heun", node_id="7")
    assert committed["tolerance"] == committed["threshold"] == DEFAULTS["tolerance"]
    assert _same(fresh, committed), "stale widget fixture: run `make fixture`"
    assert any(0 < s["forecast"] < s["calls"] for s in committed["steps"]), "no partly forecast step to draw"


def _same(a, b) -> bool:
    """Equal payloads, floats within 1e-4 relative (another torch build's last bits do not count)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-7)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
