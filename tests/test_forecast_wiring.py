"""What a forecast call actually hands the model's output layer, and every way back to full compute.

The engine's tests check the Taylor arithmetic; these check the wiring inside a real
sampling run: forward hooks on the real last block record what it computed, a forward
pre-hook on the output layer (Flux ``final_layer``, Wan ``head``) records what it
received. On a forecast call that input must be the polynomial through the previous
full calls' last-block outputs, evaluated at the call's position. The expectation is
computed here by Lagrange interpolation in float64 from the recorded tensors and the
sigma schedule, never by the pack's forecaster.

The fallback paths (engine failure, block patches never called, last block patch
skipped, no sigma schedule, non-finite forecast) are each forced and must give the
uncached image, bit for bit, and a note saying what happened.
"""

from __future__ import annotations

import math

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.models import WanModel
from bench.standin.sampling import Cond, flow_sigmas, sample
from bench.tiny import TEXT_TOKENS, Scene, flux_scene, wan_scene
from bench.standin import model_prefetch
from cgtaylor_cache.core import ForecastEngine
from cgtaylor_cache.nodes import guards
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.runtime import CacheRuntime
from node_driver import patched_by_node

HUGE = 10.0  # the node's largest tolerance
ALWAYS = {"tolerance": HUGE, "gate": "block0"}  # the paper's gate there: every eligible call is forecast
NEVER = 1e-12  # positive, so the gate runs on every eligible call, but no real error is this small
SCENES = {"flux": flux_scene, "wan": wan_scene}
MULTIPLIER = {"flux": 1.0, "wan": 1000.0}  # FlowModel: timestep = sigma * multiplier


def apply_node(patcher, unique_id: str = "7", **overrides):
    return patched_by_node(patcher, unique_id, **{**DEFAULTS, **overrides})


def runtime_of(patcher) -> CacheRuntime:
    patch = next(iter(patcher.model_options["transformer_options"]["patches_replace"]["dit"].values()))
    return patch.cgtaylor_runtime


@pytest.fixture
def reports(monkeypatch):
    """Every run's statistics, as the node reports them at the end of a run."""
    seen = []
    monkeypatch.setattr("cgtaylor_cache.nodes.node.reporter", lambda node_id: seen.append)
    return seen


def run(scene: Scene, patcher=None, **kwargs) -> torch.Tensor:
    return sample(patcher or scene.patcher, scene.noise(), scene.positive, scene.negative, **kwargs)


class Recorder:
    """Per model call: its timestep and block patches, the last block's output (None when it did not
    run) and the output layer's input. Hooks sit on the real modules, so they see what actually ran."""

    def __init__(self, scene: Scene) -> None:
        self.model = scene.patcher.get_model_object("diffusion_model")
        blocks = [*self.model.double_blocks, *self.model.single_blocks] if hasattr(self.model, "double_blocks") else list(self.model.blocks)
        head = self.model.final_layer if hasattr(self.model, "final_layer") else self.model.head
        self.calls: list[dict] = []
        self.handles = [
            self.model.register_forward_pre_hook(self._new_call, with_kwargs=True),
            blocks[-1].register_forward_hook(self._last_block),
            head.register_forward_pre_hook(self._head_input),
        ]

    def _new_call(self, module, args, kwargs):
        patches = kwargs.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        self.calls.append({"t": float(args[1].flatten()[0]), "patches": dict(patches), "last": None, "head": None})

    def _last_block(self, module, args, output):
        # Flux's single block adds to its input in place: keep a copy of what it returned now.
        self.calls[-1]["last"] = output.detach().clone()

    def _head_input(self, module, args):
        self.calls[-1]["head"] = args[0].detach().clone()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def lagrange(points: list[tuple[float, torch.Tensor]], x: float) -> torch.Tensor:
    """The polynomial through ``points`` evaluated at ``x`` (float64, Lagrange form)."""
    total = torch.zeros_like(points[0][1], dtype=torch.float64)
    for j, (xj, yj) in enumerate(points):
        weight = math.prod((x - xm) / (xj - xm) for m, (xm, _) in enumerate(points) if m != j)
        total += weight * yj.double()
    return total


def positions(recorder: Recorder, family: str, steps: int, shift: float, distance: str) -> list[float]:
    sigmas = flow_sigmas(steps, shift).tolist()
    found = []
    for call in recorder.calls:
        sigma = call["t"] / MULTIPLIER[family]
        if distance == "sigma":
            found.append(sigma)
        else:
            found.append(next(float(i) for i, s in enumerate(sigmas) if math.isclose(s, sigma, rel_tol=1e-5, abs_tol=1e-7)))
    return found


def head_space(family: str, last_output: torch.Tensor) -> torch.Tensor:
    """The last block's output as the output layer sees it (Flux cuts the text tokens off first)."""
    return last_output[:, TEXT_TOKENS:] if family == "flux" else last_output


def assert_forecasts_extrapolate(recorder: Recorder, family: str, steps: int, shift: float, distance: str,
                                 order: int, group=lambda call: None) -> dict:
    """Every forecast call's head input is the extrapolation of the full calls of its own group
    (``group(call)``: which calls share caches); full calls hand the head their last block's output.
    A full call at the newest full call's position (heun's corrector after its predictor) takes
    that point's place. Returns the number of forecast calls checked per group, and under
    ``"replaced"`` how many points were replaced."""
    where = positions(recorder, family, steps, shift, distance)
    full: dict = {}
    checked: dict = {"replaced": 0}
    for call, x in zip(recorder.calls, where):
        key = group(call)
        if call["last"] is not None:
            history = full.setdefault(key, [])
            if history and math.isclose(history[-1][0], x, abs_tol=1e-9):
                history.pop()
                checked["replaced"] += 1
            history.append((x, call["last"]))
            torch.testing.assert_close(call["head"], head_space(family, call["last"]))
            continue
        history = full[key][-(order + 1):]
        expected = head_space(family, lagrange(history, x)).float()
        torch.testing.assert_close(
            call["head"], expected, rtol=1e-4, atol=1e-4,
            msg=lambda m: f"{key} forecast call at position {x} (from {[p for p, _ in history]}): {m}")
        checked[key] = checked.get(key, 0) + 1
    return checked


# --- a forecast call hands the output layer the Taylor extrapolation ------------------------------


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize(("order", "distance", "shift", "cfg"), [(1, "step", 1.0, 3.0), (2, "step", 1.0, 1.0),
                                                                 (2, "sigma", 3.0, 3.0)])
def test_forecast_call_feeds_the_head_the_extrapolated_last_block(family, order, distance, shift, cfg, reports):
    scene, steps = SCENES[family](), 12
    # Block 0 at order 1: a lower order than the last block's own is then never chosen (reuse aside).
    patcher = apply_node(scene.patcher, **ALWAYS, first_block_order=1, last_block_order=order, distance=distance,
                         max_consecutive=2)
    recorder = Recorder(scene)
    run(scene, patcher, steps=steps, shift=shift, cfg=cfg)
    recorder.close()
    checked = assert_forecasts_extrapolate(recorder, family, steps, shift, distance, order)
    assert checked[None] == reports[-1].forecast_calls > 0
    assert checked[None] >= 3  # several forecasts, so orders above 1 and uneven gaps are both exercised


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("distance", ["step", "sigma"])
def test_heun_forecasts_extrapolate_from_the_corrected_evaluations(family, distance, reports):
    """heun evaluates its predictor at sigma i+1, then step i+1 starts there from the corrected x:
    when both are full, forecasts must build on the corrected one (it replaces the predictor's)."""
    scene, steps = SCENES[family](), 12
    patcher = apply_node(scene.patcher, tolerance=0.3, gate="block0", first_block_order=1, last_block_order=2, distance=distance,
                         max_consecutive=1, warmup_steps=4)  # steps 1-3: predictor and corrector both full
    recorder = Recorder(scene)
    run(scene, patcher, steps=steps, shift=3.0, cfg=3.0, sampler="heun")
    recorder.close()
    checked = assert_forecasts_extrapolate(recorder, family, steps, 3.0, distance, 2)
    assert checked[None] == reports[-1].forecast_calls >= 2
    assert checked["replaced"] >= 2


# --- a moderate threshold stays close to the uncached result ---------------------------------------

# PSNR of the decoded samples against no cache, node defaults, trained benchmark models (20 steps,
# cfg 3, 10 digit classes, seed 0). Measured 2026-11-30 on CPU: flux 41.4 dB, wan 43.5 dB (the README's
# benchmark table: above 40 dB). The bound leaves a margin for other torch builds; a wrong tensor in
# the head (block 0's output, a stale forecast) drops it below 20 dB.
MIN_PSNR_DB = 35.0


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_default_threshold_stays_within_the_stated_bound(family, reports):
    from bench.digits import decode
    from bench.measures import psnr
    from bench.runs import Setup

    setup = Setup.load(family)
    uncached = setup.sample(setup.patcher, 0)
    cached = setup.sample(apply_node(setup.patcher), 0)
    stats = reports[-1]
    assert stats.forecast_calls >= stats.calls // 4  # the cache really worked
    assert psnr(decode(cached), decode(uncached)) >= MIN_PSNR_DB


# --- a gate that always rejects changes nothing ------------------------------------------------------


def scale_block(factor: float):
    """Another node's block patch that changes the block's result (chained under ours)."""

    def patch(args, extra):
        out = extra["original_block"](args)
        return {**out, "img": out["img"] * factor}

    return patch


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_gate_that_always_rejects_is_bit_identical(family, sampler, cfg, reports):
    scene = SCENES[family]()
    baseline = run(scene, cfg=cfg, sampler=sampler, steps=8)
    patched = run(scene, apply_node(scene.patcher, tolerance=NEVER), cfg=cfg, sampler=sampler, steps=8)
    assert torch.equal(patched, baseline)
    stats = reports[-1]
    gated = sum(len(r.gate_errors) for r in stats.steps.values())
    assert gated > 0 and stats.forecast_calls == 0  # the gate ran on every eligible call and said no


@pytest.mark.parametrize("family", SCENES)
def test_gate_that_always_rejects_is_bit_identical_with_chained_patches(family, reports):
    scene = SCENES[family]()
    layout_keys = [("double_block", 0), ("double_block", 1), ("single_block", 3)] if family == "flux" else \
        [("double_block", 0), ("double_block", 2), ("double_block", 3)]
    chained = scene.patcher.clone()
    for n, key in enumerate(layout_keys):  # first, a middle and the last block carry another node's patch
        chained.set_model_patch_replace(scale_block(1.0 + 0.1 * (n + 1)), "dit", *key)
    baseline = run(scene, chained, cfg=3.0, steps=8)
    assert not torch.equal(baseline, run(scene, cfg=3.0, steps=8))  # the patches matter
    assert torch.equal(run(scene, apply_node(chained, tolerance=NEVER), cfg=3.0, steps=8), baseline)
    stats = reports[-1]
    assert sum(len(r.gate_errors) for r in stats.steps.values()) > 0 and stats.forecast_calls == 0


def test_gate_that_always_rejects_is_bit_identical_for_wan22_two_experts(reports):
    high, low = wan_scene(seed=0), wan_scene(seed=1)
    noise = high.noise()

    def two_stage(high_patcher, low_patcher):
        latent = sample(high_patcher, noise, high.positive, high.negative, cfg=3.0, steps=10, shift=5.0, last_step=5)
        return sample(low_patcher, torch.zeros_like(noise), low.positive, low.negative, cfg=3.0, steps=10, shift=5.0,
                      start_step=5, latent=latent)

    baseline = two_stage(high.patcher, low.patcher)
    gated = two_stage(apply_node(high.patcher, "high", tolerance=NEVER), apply_node(low.patcher, "low", tolerance=NEVER))
    assert torch.equal(gated, baseline)
    assert [r.forecast_calls for r in reports] == [0, 0]
    assert all(sum(len(s.gate_errors) for s in r.steps.values()) > 0 for r in reports)


def test_float16_model_is_exact_when_rejecting_and_finite_when_forecasting(reports):
    """ComfyUI clamps float16 hidden states after the double blocks and inside each block
    (comfy/ldm/flux/model.py:175-176, layers.py:205-206, :259-260; the stand-in does too). A forecast
    bypasses the blocks' clamp, so the engine's non-finite check is what keeps fp16 safe."""
    scene = flux_scene()
    scene.patcher.model.half()
    noise = scene.noise().half()
    positive, negative = (Cond({k: v.half() for k, v in c.inputs.items()}) for c in (scene.positive, scene.negative))

    def run16(patcher):
        return sample(patcher, noise, positive, negative, cfg=3.0, steps=8)

    baseline = run16(scene.patcher)
    assert torch.equal(run16(apply_node(scene.patcher, tolerance=NEVER)), baseline)
    forecast = run16(apply_node(scene.patcher, **ALWAYS))
    assert forecast.dtype == torch.float16 and torch.isfinite(forecast).all()
    assert reports[-1].forecast_calls > 0


# --- every fallback gives the uncached image and says why -----------------------------------------


def first_engine_failure(monkeypatch, method: str, when) -> list:
    """Make ``ForecastEngine.<method>`` raise the first time ``when(call)`` holds."""
    original = getattr(ForecastEngine, method)
    raised = []

    def failing(self, call, *args):
        if not raised and when(call):
            raised.append(call.step.index)
            raise RuntimeError("injected engine failure")
        return original(self, call, *args)

    monkeypatch.setattr(ForecastEngine, method, failing)
    return raised


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("method", ["first_block_output", "take_forecast"])
def test_engine_failure_inside_a_patch_recomputes_the_call(family, method, monkeypatch, reports):
    """It fails on the first gated (or first forecast) call: every earlier call was full, so the
    rest of the run computed in full gives exactly the uncached image."""
    scene = SCENES[family]()
    baseline = run(scene, cfg=3.0, steps=8)
    from cgtaylor_cache.core import Mode

    raised = first_engine_failure(monkeypatch, method, lambda call: call.mode in (Mode.GATE, Mode.FORECAST))
    out = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=8)
    assert raised, "the injected failure never fired"
    assert torch.equal(out, baseline)
    stats = reports[-1]
    assert stats.forecast_calls == 0 and stats.calls == 8
    assert any("the cache failed during a call (RuntimeError: injected engine failure)" in n for n in stats.notes)


@pytest.mark.parametrize("family", SCENES)
def test_a_failure_planning_a_call_computes_the_run_in_full(family, monkeypatch, reports):
    """``begin_call`` fails on the first call after the warm-up (e.g. out of memory moving a stream's caches
    to the call's device): the run goes on in full, with the uncached image and a note, no stream stays
    in flight, and the next run caches again."""
    scene = SCENES[family]()
    baseline = run(scene, cfg=3.0, steps=8)
    original = ForecastEngine.begin_call
    raised = []

    def failing(self, step, keys, *args):
        if not raised and step.index == 1:
            raised.append(step.index)
            raise torch.OutOfMemoryError("injected: out of memory moving a stream")
        return original(self, step, keys, *args)

    monkeypatch.setattr(ForecastEngine, "begin_call", failing)
    patched = apply_node(scene.patcher, **ALWAYS)
    runs = []  # the run's state, as the sampler's callback sees it
    assert torch.equal(run(scene, patched, cfg=3.0, steps=8, callback=lambda step, x: runs.append(
        runtime_of(patched)._runs[-1])), baseline)
    assert raised
    stats = reports[-1]
    assert stats.forecast_calls == 0 and stats.calls == 8
    assert any("the cache failed while planning a call (OutOfMemoryError: injected" in n for n in stats.notes)
    assert runs and not runs[-1].in_flight
    run(scene, patched, cfg=3.0, steps=8)
    assert reports[-1].forecast_calls > 0


def test_a_cuda_graph_capture_around_the_model_computes_the_run_in_full(monkeypatch, reports):
    """A graph captured around the model would replay one call's decisions on every step: the node
    computes the run in full and says why. Without a GPU, the capture is ``guards.capturing``'s answer."""
    scene = wan_scene()
    baseline = run(scene, cfg=3.0, steps=8)
    monkeypatch.setattr(guards, "capturing", lambda: True)
    assert torch.equal(run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=8), baseline)
    stats = reports[-1]
    # No call is placed in the schedule either: that reads the sigma, a sync no capture allows.
    assert stats.forecast_calls == 0 and stats.calls == 0
    assert any(note.startswith("a CUDA graph was being captured") and "--disable-cuda-graphs" in note
               for note in stats.notes)


def test_a_capture_begun_inside_a_call_recomputes_it_in_full(monkeypatch, reports):
    """ComfyUI's own graphs are captured per module (comfy/model_prefetch.py ``prefetch_queue_pop``,
    v0.33.0 :49-127, around a ``core`` callable): one begun inside a call is found by the first block
    patch it reaches, and the call is computed again in full, as is the rest of the run."""
    scene = wan_scene()
    state = {"armed": False, "forward_checked": False}

    def capturing():
        if not state["armed"]:
            return False
        if not state["forward_checked"]:  # the DIFFUSION_MODEL wrapper's own check, before the capture
            state["forward_checked"] = True
            return False
        return True

    def arm(step, x):
        state["armed"] |= step == 2

    monkeypatch.setattr(guards, "capturing", capturing)
    out = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=8, callback=arm)
    assert torch.isfinite(out).all()
    steps = reports[-1].to_json()["steps"]
    assert [s["calls"] for s in steps] == [1, 1, 1, 1, 0, 0, 0, 0]  # later calls run captured, unplaced
    assert steps[3]["forecast"] == 0 and sum(s["forecast"] for s in steps) > 0
    assert any("a CUDA graph was being captured" in note for note in reports[-1].notes)


def test_the_capture_check_asks_torch_only_where_cuda_is():
    """CPU builds of torch raise on ``is_current_stream_capturing``; the node asks only with CUDA there."""
    assert guards.capturing() is False


def planned_on_meta(args: tuple) -> bool:
    """Whether an engine step belongs to the memory plan's first call on meta tensors (core/footprint.py)."""
    for arg in args:
        devices = [arg] if isinstance(arg, torch.device) else [arg.device] if isinstance(arg, torch.Tensor) else [
            stream.device for stream in getattr(arg, "streams", ())]
        if any(device is not None and device.type == "meta" for device in devices):
            return True
    return False


def test_the_cache_allocates_outside_comfyuis_allocation_graph(monkeypatch, reports):
    """ComfyUI's model compiler (after v0.33) plans each block's allocations from a recorded graph;
    the cache's tensors outlive the call, so every engine step runs with the graph paused
    (bench/standin/model_prefetch.py), while the blocks themselves run inside it."""
    scene = wan_scene()
    monkeypatch.setattr(guards, "_PAUSE_ALLOCATION_GRAPH", [model_prefetch.pause_malloc_graph])
    outside, inside = [], []
    for method in ("begin_call", "first_block_output", "last_block_output", "take_forecast", "end_call"):
        original = getattr(ForecastEngine, method)

        def recorded(self, *args, original=original, method=method):
            if not planned_on_meta(args):  # the memory plan's run on meta tensors, before sampling
                (outside if model_prefetch.paused() else inside).append(method)
            return original(self, *args)

        monkeypatch.setattr(ForecastEngine, method, recorded)
    model = scene.patcher.get_model_object("diffusion_model")
    blocks_paused = []
    handles = [block.register_forward_hook(lambda m, i, o: blocks_paused.append(model_prefetch.paused()))
               for block in model.blocks]
    run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=8)
    for handle in handles:
        handle.remove()
    assert reports[-1].forecast_calls > 0
    steps = {"begin_call", "first_block_output", "last_block_output", "take_forecast", "end_call"}
    assert not inside and steps <= set(outside)
    assert blocks_paused and not any(blocks_paused)


class NoPatchWanModel(WanModel):
    """A model that runs its blocks without looking at ``patches_replace`` (e.g. a custom node's
    forward replacement)."""

    def run_block(self, i, block, x, e0, freqs, context, transformer_options):
        return block(x, e=e0, freqs=freqs, context=context, transformer_options=transformer_options)


class LastBlockUnpatchedWanModel(WanModel):
    """A model that calls the block patches of every block but the last (from its
    ``unpatched_from``-th call on: 0 = always, later = after the caches filled, so a
    forecast call is the first to miss it)."""

    unpatched_from = 0
    seen = 0

    def run_block(self, i, block, x, e0, freqs, context, transformer_options):
        if i == len(self.blocks) - 1:
            type(self).seen += 1
            if type(self).seen > type(self).unpatched_from:
                return block(x, e=e0, freqs=freqs, context=context, transformer_options=transformer_options)
        return super().run_block(i, block, x, e0, freqs, context, transformer_options)


class LastBlockUnpatchedLaterWanModel(LastBlockUnpatchedWanModel):
    unpatched_from = 1  # call 0 (step 0) fills the caches; call 1 is the first forecast


@pytest.mark.parametrize(("model_class", "note"), [
    (NoPatchWanModel, "this model never called its block patches"),
    (LastBlockUnpatchedWanModel, "the model skipped its last block patch"),
    (LastBlockUnpatchedLaterWanModel, "the model skipped its last block patch"),
])
def test_block_patches_not_called_fall_back_to_full_compute(model_class, note, reports):
    scene = wan_scene()
    baseline = run(scene, cfg=3.0, steps=8)
    model = scene.patcher.get_model_object("diffusion_model")
    model.__class__, model_class.seen = model_class, 0
    try:
        out = run(scene, apply_node(scene.patcher, **ALWAYS), cfg=3.0, steps=8)
    finally:
        model.__class__ = WanModel
    assert torch.equal(out, baseline)
    stats = reports[-1]
    assert stats.forecast_calls == 0 and stats.calls == 8
    assert any(note in n for n in stats.notes), stats.notes


def test_no_sigma_schedule_computes_in_full(reports):
    """A sampler that does not put ``sample_sigmas`` into transformer_options: nothing to locate calls by."""
    scene = flux_scene()
    baseline = run(scene, cfg=3.0, steps=8)

    def drop_schedule(executor, *args, **kwargs):
        *head, options = args
        options = {k: v for k, v in options.items() if k != "sample_sigmas"}
        return executor(*head, options, **kwargs)

    without = scene.patcher.clone()
    without.add_wrapper_with_key("diffusion_model", "no-schedule", drop_schedule)  # outside the node's wrapper
    out = run(scene, apply_node(without, **ALWAYS), cfg=3.0, steps=8)
    assert torch.equal(out, baseline)
    stats = reports[-1]
    assert stats.calls == 0 and stats.forecast_calls == 0  # calls without a position are not filed under a step
    assert any("passed no sigma schedule" in n for n in stats.notes)


@pytest.mark.parametrize("family", SCENES)
def test_non_finite_forecast_computes_in_full(family, reports):
    """An overflowed last-block cache (as fp16 can): every forecast is refused, every call full."""
    scene = SCENES[family]()
    baseline = run(scene, cfg=3.0, steps=8)
    patcher = apply_node(scene.patcher, **ALWAYS)
    runtime = runtime_of(patcher)

    def overflow(step, x):
        for stream in runtime.engine._streams.values():
            newest = stream.last._terms[0]
            newest[(0,) * newest.ndim] = float("inf")

    out = run(scene, patcher, cfg=3.0, steps=8, callback=overflow)
    assert torch.equal(out, baseline)
    stats = reports[-1]
    gated = sum(len(r.gate_errors) for r in stats.steps.values())
    assert gated > 0 and stats.forecast_calls == 0
    assert any("non-finite" in n for n in stats.notes)
