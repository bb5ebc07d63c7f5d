"""The CGTaylorCache node inside a real ComfyUI: loader, UNETLoader, KSampler, executor, websocket event.

Skipped unless $COMFYUI_PATH points at a ComfyUI checkout (see conftest.py). Models are
tiny and random, so these tests check plumbing, exactness and that forecasts stay near the
uncached result, not image quality. Node defaults are read from INPUT_TYPES() because they
may change after benchmarking. Every FLUX and Wan check runs twice: cfg 1 with batch 1
(ComfyUI then evaluates the cond only) and cfg > 1 with batch 2 (cond and uncond, two samples).
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.comfyui

NODE_ID = "CGTaylorCache"
METHOD = "cg-taylor"
SUPPORTED_FAMILY_WORDS = ("flux", "wan")
HUGE_THRESHOLD = 1e9  # capped at the input's declared max where a graph is validated
STEPS = 10
SEED = 20251012
CACHE_NODE = "27"  # the CGTaylorCache node's id in the Wan graph; deliberately not "1"
SAVE_NODE = "9"
REPO_ROOT = Path(__file__).resolve().parents[2]

@dataclass(frozen=True)
class Sampling:
    """How KSampler runs: cfg 1 evaluates the cond only, cfg > 1 the cond and the uncond."""

    name: str
    cfg: float
    batch: int


SAMPLINGS = [
    pytest.param(Sampling("cfg1", cfg=1.0, batch=1), id="cfg1"),
    pytest.param(Sampling("cfg4-batch2", cfg=4.0, batch=2), id="cfg4-batch2"),
]

# Relative L2 distance ||forecast - uncached|| / ||uncached|| of the final latent when every step
# the settings allow is forecast (every_call: the block-0 gate at a huge tolerance, at most 2 forecasts
# in a row; warm-up 1, the node's orders 2/2), measured on v0.3.64 and v0.30.0 (the same to 4 digits on both). A test allows
# FORECAST_MARGIN times that. Forecasts broken on purpose land well above: Taylor terms tripled
# gave 0.12-0.26, cond and uncond forecasts swapped 0.29 (FLUX) and 0.69 (Wan) at cfg 4, zeros
# instead of the forecast 0.33-0.40.
FORECAST_RELATIVE_L2_MEASURED = {
    ("Flux", "cfg1"): 0.0271, ("Flux", "cfg4-batch2"): 0.0486,
    ("Wan", "cfg1"): 0.0722, ("Wan", "cfg4-batch2"): 0.1162,
}
FORECAST_MARGIN = 1.5


# ----------------------------------------------------------------------------- helpers

def node_class(comfyui: Any) -> type:
    mappings = comfyui.nodes.NODE_CLASS_MAPPINGS
    if NODE_ID not in mappings:
        pytest.fail(f"{NODE_ID} is not in nodes.NODE_CLASS_MAPPINGS after loading the pack; log: {comfyui.load_log}")
    return mappings[NODE_ID]


def node_inputs(cls: type, **overrides: Any) -> dict:
    """Every widget input of the node at its declared default, then the overrides (which must exist)."""
    values = {}
    for name, spec in cls.INPUT_TYPES()["required"].items():
        if name == "model":
            continue
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if "default" in options:
            values[name] = options["default"]
        elif isinstance(spec[0], (list, tuple)):  # V1 combo: the list of choices
            values[name] = spec[0][0]
        else:
            raise AssertionError(f"input {name!r} of {NODE_ID} has no default")
    # Optional inputs are left out unless overridden, as in a prompt saved before they existed.
    unknown = set(overrides) - set(values) - set(cls.INPUT_TYPES().get("optional", {}))
    assert not unknown, f"{NODE_ID} has no inputs named {sorted(unknown)}"
    values.update(overrides)
    return values


def huge_threshold(cls: type) -> float:
    """A tolerance no gate error reaches: the largest the input accepts (ComfyUI validates graphs against max)."""
    options = cls.INPUT_TYPES()["required"]["tolerance"][1]
    return float(min(options.get("max", HUGE_THRESHOLD), HUGE_THRESHOLD))


def every_call(cls: type) -> dict:
    """Settings under which every call the schedule allows is forecast: the paper's gate on block 0's own
    error at the largest tolerance (the calibrated gate waits for a pair before it trusts anything), with
    at most 2 forecasts in a row, the schedule FORECAST_RELATIVE_L2_MEASURED was measured with."""
    return {"tolerance": huge_threshold(cls), "gate": "block0", "max_consecutive": 2}


def apply_node(cls: type, model: Any, unique_id: str, **overrides: Any) -> Any:
    """Runs the node as ComfyUI's executor runs a V3 node (execution.py ``_async_map_node_over_list``): its
    FUNCTION on a class clone that holds the hidden inputs, which v0.3.64's ``PREPARE_CLASS_CLONE`` takes as
    they are and v0.30.0's inside the node's V3 data."""
    from comfy_api.latest import io

    hidden = {io.Hidden.unique_id: unique_id}
    takes_v3_data = "v3_data" in inspect.signature(cls.PREPARE_CLASS_CLONE).parameters
    clone = cls.PREPARE_CLASS_CLONE({"hidden_inputs": hidden} if takes_v3_data else hidden)
    (patched,) = getattr(clone, clone.FUNCTION)(model=model, **node_inputs(cls, **overrides)).result
    return patched


def wan_prompt(unet_name: str, cache_inputs: dict | None, sampling: Sampling) -> dict:
    """UNETLoader → [CGTaylorCache] → KSampler → SaveLatent, with random conditioning."""
    model_source = ["1", 0]
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": {"class_type": "CGTTestRandomConditioning",
              "inputs": {"seed": 1, "tokens": 16, "width": 4096, "pooled_width": 0}},
        "3": {"class_type": "CGTTestRandomConditioning",
              "inputs": {"seed": 2, "tokens": 16, "width": 4096, "pooled_width": 0}},
        "4": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": sampling.batch}},
    }
    if cache_inputs is not None:
        prompt[CACHE_NODE] = {"class_type": NODE_ID, "inputs": {"model": ["1", 0], **cache_inputs}}
        model_source = [CACHE_NODE, 0]
    prompt["5"] = {"class_type": "KSampler", "inputs": {
        "model": model_source, "seed": SEED, "steps": STEPS, "cfg": sampling.cfg, "sampler_name": "euler",
        "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
        "denoise": 1.0}}
    prompt[SAVE_NODE] = {"class_type": "SaveLatent",
                         "inputs": {"samples": ["5", 0], "filename_prefix": "cgtaylor_tests/wan"}}
    return prompt


def assert_ran(run: Any) -> None:
    assert run.success, f"prompt failed: {run.status_messages}"


class WanRun:
    """One graph run on the tiny Wan, with block counts and the schedule ComfyUI used."""

    def __init__(self, run: Any, counter: Any, sigmas: list[float]) -> None:
        self.run = run
        self.counts = dict(counter.counts)
        self.calls = counter.per_call("head")  # which modules ran in each model call, in order
        self.sigmas = sigmas
        self.latent = run.saved_latent(SAVE_NODE)


def run_wan(comfyui: Any, run_prompt: Any, block_counter: Any, unet_name: str, cache_inputs: dict | None,
            sampling: Sampling) -> WanRun:
    """Runs the Wan graph with forward hooks on every block and on the head of the model UNETLoader loads."""
    import comfy.samplers

    counters: list[Any] = []
    sigmas: list[float] = []

    def hook_model(model_patcher: Any) -> None:
        wan = model_patcher.model.diffusion_model
        modules = {f"blocks.{i}": block for i, block in enumerate(wan.blocks)}
        modules["head"] = wan.head  # runs once per model call, forecast or not
        counters.append(block_counter(modules))
        schedule = comfy.samplers.calculate_sigmas(model_patcher.get_model_object("model_sampling"), "simple", STEPS)
        sigmas.extend(float(s) for s in schedule)

    try:
        run = run_prompt(wan_prompt(unet_name, cache_inputs, sampling), on_model_loaded=hook_model)
    finally:
        for counter in counters:
            counter.remove()
    assert_ran(run)
    assert len(counters) == 1, "UNETLoader should load the model exactly once per run"
    return WanRun(run, counters[0], sigmas)


def flux_modules(model_patcher: Any) -> dict[str, torch.nn.Module]:
    flux = model_patcher.model.diffusion_model
    modules = {f"double_blocks.{i}": block for i, block in enumerate(flux.double_blocks)}
    modules.update({f"single_blocks.{i}": block for i, block in enumerate(flux.single_blocks)})
    modules["final_layer"] = flux.final_layer
    return modules


def sample_flux(comfyui: Any, model: Any, sampling: Sampling) -> torch.Tensor:
    """The stock KSampler node's sample(), called directly, under inference mode as the executor runs it."""
    conditioning = comfyui.nodes.NODE_CLASS_MAPPINGS["CGTTestRandomConditioning"]()
    (positive,) = conditioning.make(seed=11, tokens=8, width=4096, pooled_width=768)
    (negative,) = conditioning.make(seed=12, tokens=8, width=4096, pooled_width=768)
    latent = {"samples": torch.zeros(sampling.batch, 16, 16, 16)}
    with torch.inference_mode():
        (out,) = comfyui.nodes.KSampler().sample(
            model, SEED, STEPS, sampling.cfg, "euler", "simple", positive, negative, latent, denoise=1.0
        )
    return out["samples"].clone()


def check_block_counts(counts: dict[str, int], first: str, call_counter: str, blocks: list[str]) -> tuple[int, int]:
    """Block 0 runs on every model call; every later block runs on the same (full) calls. Returns (calls, full)."""
    calls = counts[call_counter]
    full = counts[blocks[1]]
    assert counts[first] == calls, f"block 0 must run on every model call: {counts}"
    assert all(counts[name] == full for name in blocks[1:]), f"blocks 1..L-1 must run together: {counts}"
    return calls, full


def relative_l2(latent: torch.Tensor, reference: torch.Tensor) -> float:
    return float((latent - reference).norm() / reference.norm())


def check_close_to_uncached(family: str, sampling: Sampling, latent: torch.Tensor, uncached: torch.Tensor) -> None:
    """Forecasting changed the result (so it took part) and kept it near the uncached one."""
    assert latent.shape == uncached.shape
    assert torch.isfinite(latent).all()
    assert not torch.equal(latent, uncached), "forecast calls ran, so the latent must differ from the uncached one"
    distance = relative_l2(latent, uncached)
    bound = FORECAST_MARGIN * FORECAST_RELATIVE_L2_MEASURED[family, sampling.name]
    worst = float((latent - uncached).abs().max())
    assert distance <= bound, (
        f"{family}, {sampling.name}: forecasting moved the latent {distance:.4f} (relative L2; largest "
        f"difference {worst:.3f}) from the uncached one; at most {bound:.4f} expected"
    )


def check_stats_payload(payload: dict, node: str, family: str, threshold: float, calls: int, full: int,
                        blocks_run: int, num_blocks: int) -> None:
    """The event's schema and its totals, against what the forward hooks counted."""
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload, "payload must be plain JSON"
    assert payload["v"] == 3
    assert payload["node"] == node
    assert payload["method"] == METHOD
    assert payload["model"] == family
    assert payload["threshold"] == threshold
    assert payload["num_steps"] == STEPS
    steps = payload["steps"]
    assert [s["step"] for s in steps] == list(range(STEPS))
    totals = payload["totals"]
    assert totals["calls"] == sum(s["calls"] for s in steps) == calls
    assert totals["forecast"] == sum(s["forecast"] for s in steps) == calls - full
    assert totals["blocks_run"] == blocks_run
    assert totals["blocks_total"] == calls * num_blocks
    assert math.isclose(totals["block_ratio"], totals["blocks_total"] / totals["blocks_run"], rel_tol=1e-3)
    assert steps[0]["forecast"] == 0, "warm-up step 0 is computed in full"
    if threshold:  # with forecasting off there is nothing to explain
        assert sum(totals["full"].values()) == full, "every full call says why it was full"
        assert steps[0]["full"] == {"warmup": steps[0]["calls"]}
    assert isinstance(payload["notes"], list)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", params=SAMPLINGS)
def sampling(request: pytest.FixtureRequest) -> Sampling:
    return request.param


@pytest.fixture(scope="module")
def wan_baseline(comfyui: Any, run_prompt: Any, block_counter: Any, tiny_wan: Any, sampling: Sampling) -> WanRun:
    return run_wan(comfyui, run_prompt, block_counter, tiny_wan.name, None, sampling)


@pytest.fixture(scope="module")
def wan_forecasting(comfyui: Any, run_prompt: Any, block_counter: Any, tiny_wan: Any, sampling: Sampling) -> WanRun:
    cls = node_class(comfyui)
    inputs = node_inputs(cls, **every_call(cls), warmup_steps=1)
    return run_wan(comfyui, run_prompt, block_counter, tiny_wan.name, inputs, sampling)


@pytest.fixture(scope="module")
def flux_baseline(comfyui: Any, tiny_flux: Any, sampling: Sampling) -> torch.Tensor:
    return sample_flux(comfyui, tiny_flux, sampling)


# ----------------------------------------------------------------------------- the harness itself

def test_harness_custom_nodes_load_without_error(comfyui: Any) -> None:
    """The pack folder and the test-only node file both load through ComfyUI's loader."""
    results = comfyui.loader_results
    assert results.get(comfyui.pack_path.name) is True, f"pack failed to load: {results}; log: {comfyui.load_log}"
    assert results.get("cgtaylor_test_harness_nodes.py") is True, results
    assert "CGTTestRandomConditioning" in comfyui.nodes.NODE_CLASS_MAPPINGS


def test_harness_wan_graph_is_deterministic(comfyui: Any, run_prompt: Any, block_counter: Any,
                                            tiny_wan: Any, sampling: Sampling, wan_baseline: WanRun) -> None:
    """Bit-identity checks below mean something only if the unpatched graph repeats bit for bit."""
    again = run_wan(comfyui, run_prompt, block_counter, tiny_wan.name, None, sampling)
    assert torch.equal(again.latent, wan_baseline.latent)
    assert torch.isfinite(wan_baseline.latent).all()
    assert wan_baseline.latent.shape == (sampling.batch, 16, 3, 8, 8)
    assert wan_baseline.latent.std() > 0
    if sampling.batch > 1:
        assert not torch.equal(wan_baseline.latent[0], wan_baseline.latent[1]), "samples of a batch get own noise"
    layers = [f"blocks.{i}" for i in range(tiny_wan.num_layers)]
    calls, full = check_block_counts(wan_baseline.counts, layers[0], "head", layers)
    assert calls == full >= STEPS  # euler: at least one model call per step, every block each time


def test_harness_flux_sampling_is_deterministic(comfyui: Any, tiny_flux: Any, sampling: Sampling,
                                                flux_baseline: torch.Tensor) -> None:
    assert torch.equal(sample_flux(comfyui, tiny_flux, sampling), flux_baseline)
    assert flux_baseline.shape == (sampling.batch, 16, 16, 16)
    assert torch.isfinite(flux_baseline).all() and flux_baseline.std() > 0


def test_harness_cfg_changes_the_result(comfyui: Any, tiny_flux: Any, flux_baseline: torch.Tensor,
                                        sampling: Sampling) -> None:
    """The two samplings really differ in what ComfyUI evaluates: the uncond weighs in only at cfg > 1."""
    other = Sampling("other cfg", cfg=1.0 if sampling.cfg != 1.0 else 4.0, batch=sampling.batch)
    assert not torch.equal(sample_flux(comfyui, tiny_flux, other), flux_baseline)


# ----------------------------------------------------------------------------- (a) loading

def test_pack_loads_through_the_custom_node_loader(comfyui: Any) -> None:
    cls = node_class(comfyui)
    # The class came from this repository, through the linked custom_nodes folder.
    assert Path(inspect.getfile(cls)).resolve().is_relative_to(REPO_ROOT)
    assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{comfyui.pack_path.name}"
    assert comfyui.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(NODE_ID) == "Confidence-Gated Taylor Cache"
    assert tuple(cls.RETURN_TYPES) == ("MODEL",)
    assert cls.CATEGORY == "model_patches"
    types = cls.INPUT_TYPES()
    assert list(types["required"]) == [
        "model", "tolerance", "warmup_steps", "start_fraction", "end_fraction",
        "first_block_order", "last_block_order", "max_consecutive", "distance",
    ]
    assert types.get("hidden", {}).get("unique_id") == ("UNIQUE_ID",)  # a V3 node's hidden input, as V1 info


def test_a_window_that_ends_before_it_starts_is_refused_when_the_prompt_is_queued(comfyui: Any, tiny_wan: Any) -> None:
    """ComfyUI's validate_prompt runs the node's validate_inputs before anything is loaded or sampled."""
    cls = node_class(comfyui)
    prompt = wan_prompt(tiny_wan.name, node_inputs(cls, start_fraction=0.9, end_fraction=0.5), Sampling("cfg1", 1.0, 1))
    valid, _, _, node_errors = comfyui.loop.run_until_complete(comfyui.execution.validate_prompt("window", prompt, None))
    message = "CGTaylorCache: start_fraction (0.9) must be below end_fraction (0.5)"
    assert not valid and list(node_errors) == [CACHE_NODE], node_errors
    assert [e["details"].split(";")[0] for e in node_errors[CACHE_NODE]["errors"]] == [
        f"start_fraction - {message}", f"end_fraction - {message}"]


def test_web_directory_is_registered(comfyui: Any) -> None:
    web_dirs = comfyui.nodes.EXTENSION_WEB_DIRS
    ours = [name for name, path in web_dirs.items() if Path(path).resolve() == (REPO_ROOT / "web").resolve()]
    assert ours, f"the pack's web/ folder is not in EXTENSION_WEB_DIRS: {web_dirs}"


# ----------------------------------------------------------------------------- (b) Wan, threshold 0

def test_wan_threshold_zero_is_bit_identical(comfyui: Any, run_prompt: Any, block_counter: Any,
                                             tiny_wan: Any, sampling: Sampling, wan_baseline: WanRun) -> None:
    cls = node_class(comfyui)
    patched = run_wan(comfyui, run_prompt, block_counter, tiny_wan.name, node_inputs(cls, tolerance=0.0), sampling)
    assert torch.equal(patched.latent, wan_baseline.latent)
    layers = [f"blocks.{i}" for i in range(tiny_wan.num_layers)]
    calls, full = check_block_counts(patched.counts, layers[0], "head", layers)
    assert calls == full == wan_baseline.counts["head"], "tolerance 0 must never skip a block"
    (stats,) = patched.run.events_named("cgtaylor.stats")
    check_stats_payload(stats.data, CACHE_NODE, "Wan", 0.0, calls, full,
                        sum(patched.counts[name] for name in layers), len(layers))


# ----------------------------------------------------------------------------- (c) Wan, huge threshold

def test_wan_huge_threshold_skips_blocks_and_stays_close(tiny_wan: Any, sampling: Sampling, wan_baseline: WanRun,
                                                         wan_forecasting: WanRun) -> None:
    layers = [f"blocks.{i}" for i in range(tiny_wan.num_layers)]
    calls, full = check_block_counts(wan_forecasting.counts, layers[0], "head", layers)
    assert calls == wan_baseline.counts["head"], "the node must not change how often the sampler calls the model"
    assert 1 <= full < calls, f"expected some forecast calls: {wan_forecasting.counts}"
    check_close_to_uncached("Wan", sampling, wan_forecasting.latent, wan_baseline.latent)


# ----------------------------------------------------------------------------- (d) the stats event

def test_wan_stats_event_names_the_node_and_follows_the_schema(comfyui: Any, tiny_wan: Any,
                                                               wan_forecasting: WanRun) -> None:
    events = wan_forecasting.run.events_named("cgtaylor.stats")
    assert len(events) == 1, "one event per sampling run"
    event = events[0]
    assert event.sid == wan_forecasting.run.client_id, "the event goes to the client that queued the prompt"
    payload = event.data
    layers = [f"blocks.{i}" for i in range(tiny_wan.num_layers)]
    calls, full = check_block_counts(wan_forecasting.counts, layers[0], "head", layers)
    check_stats_payload(payload, CACHE_NODE, "Wan", huge_threshold(node_class(comfyui)), calls, full,
                        sum(wan_forecasting.counts[name] for name in layers), len(layers))

    # sigmas holds STEPS + 1 values: the model is called at the first STEPS of them.
    steps = payload["steps"]
    for record, sigma in zip(steps, wan_forecasting.sigmas[:STEPS], strict=True):
        assert isinstance(record["calls"], int) and record["calls"] >= 1, record
        assert isinstance(record["forecast"], int) and 0 <= record["forecast"] <= record["calls"], record
        assert math.isclose(record["sigma"], sigma, rel_tol=1e-5, abs_tol=1e-7), (record, sigma)
        assert record["gate_error"] is None or (isinstance(record["gate_error"], float) and record["gate_error"] >= 0)

    # Step by step: a forecast call runs block 0 and the head only, a full call every block.
    model_calls = iter(wan_forecasting.calls)
    for record in steps:
        ran = [next(model_calls) for _ in range(record["calls"])]
        forecast = [names for names in ran if names == [layers[0], "head"]]
        full_calls = [names for names in ran if names == [*layers, "head"]]
        assert len(forecast) == record["forecast"], (record, ran)
        assert len(full_calls) == record["calls"] - record["forecast"], (record, ran)
    assert next(model_calls, None) is None, "the hooks saw more model calls than the stats"


# ----------------------------------------------------------------------------- (e) Flux through KSampler

def test_flux_threshold_zero_is_bit_identical(comfyui: Any, tiny_flux: Any, flux_baseline: torch.Tensor,
                                              sampling: Sampling, block_counter: Any) -> None:
    cls = node_class(comfyui)
    patched = apply_node(cls, tiny_flux, "flux-zero", tolerance=0.0)
    modules = flux_modules(tiny_flux)
    first_event = len(comfyui.events)
    with block_counter(modules) as counter:
        latent = sample_flux(comfyui, patched, sampling)
    assert torch.equal(latent, flux_baseline)
    counts = counter.counts
    assert len(set(counts.values())) == 1 and counts["final_layer"] >= STEPS, counts
    stats = [e.data for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    assert len(stats) == 1, "one event per sampling run"
    blocks = [name for name in modules if name != "final_layer"]
    calls = counts["final_layer"]
    check_stats_payload(stats[0], "flux-zero", "Flux", 0.0, calls, calls, calls * len(blocks), len(blocks))


def test_flux_huge_threshold_skips_blocks_and_stays_close(comfyui: Any, tiny_flux: Any, flux_baseline: torch.Tensor,
                                                          sampling: Sampling, block_counter: Any) -> None:
    cls = node_class(comfyui)
    patched = apply_node(cls, tiny_flux, "flux-huge", **every_call(cls), warmup_steps=1)
    modules = flux_modules(tiny_flux)
    blocks = [name for name in modules if name != "final_layer"]
    first_event = len(comfyui.events)
    with block_counter(modules) as counter:
        latent = sample_flux(comfyui, patched, sampling)
    calls, full = check_block_counts(counter.counts, "double_blocks.0", "final_layer", blocks)
    assert 1 <= full < calls, counter.counts
    check_close_to_uncached("Flux", sampling, latent, flux_baseline)
    stats = [e.data for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    assert len(stats) == 1, "one event per sampling run"
    check_stats_payload(stats[0], "flux-huge", "Flux", huge_threshold(cls), calls, full,
                        sum(counter.counts[name] for name in blocks), len(blocks))


def test_flux_calibrated_gate_learns_before_it_trusts_and_says_why(comfyui: Any, tiny_flux: Any, sampling: Sampling,
                                                                   block_counter: Any) -> None:
    """The node's own gate through ComfyUI's sampling: its first judged call has no (block-0 error, last-block
    error) pair to predict from, so it runs in full for the gate's reason; from then on a tolerance no prediction
    reaches forecasts every call the cap allows, and the payload tells the pairs and the predictions apart."""
    cls = node_class(comfyui)
    tolerance = huge_threshold(cls)
    patched = apply_node(cls, tiny_flux, "flux-calibrated", tolerance=tolerance, warmup_steps=1)
    modules = flux_modules(tiny_flux)
    blocks = [name for name in modules if name != "final_layer"]
    first_event = len(comfyui.events)
    with block_counter(modules) as counter:
        sample_flux(comfyui, patched, sampling)
    calls, full = check_block_counts(counter.counts, "double_blocks.0", "final_layer", blocks)
    (payload,) = [e.data for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    check_stats_payload(payload, "flux-calibrated", "Flux", tolerance, calls, full,
                        sum(counter.counts[name] for name in blocks), len(blocks))
    assert payload["tolerance"] == tolerance
    per_call = calls // STEPS  # cfg 1: one call per step; cfg 4 with batch 2: cond and uncond in one call
    assert payload["steps"][1]["full"] == {"gate": per_call}, "the first judged call had no pair to trust"
    assert payload["totals"]["full"] == {"warmup": per_call, "gate": per_call, "edge": per_call}
    calibration = payload["calibration"]
    assert calibration["pairs"] == 1 and calibration["predicted_max"] < tolerance


@pytest.mark.parametrize("options", [{"forecast_residual": True}, {"distance": "block0"}], ids=str)
def test_flux_forecast_variants_skip_blocks_and_stay_close(comfyui: Any, tiny_flux: Any, flux_baseline: torch.Tensor,
                                                           sampling: Sampling, block_counter: Any, options: dict) -> None:
    """The residual forecast (block 0's current output added back) and the block-0 distance, through
    ComfyUI's own sampling: only block 0 and the final layer run on forecast calls."""
    cls = node_class(comfyui)
    patched = apply_node(cls, tiny_flux, "flux-variant", **{**every_call(cls), "warmup_steps": 1, **options})
    modules = flux_modules(tiny_flux)
    blocks = [name for name in modules if name != "final_layer"]
    with block_counter(modules) as counter:
        latent = sample_flux(comfyui, patched, sampling)
    calls, full = check_block_counts(counter.counts, "double_blocks.0", "final_layer", blocks)
    assert 1 <= full < calls, counter.counts
    check_close_to_uncached("Flux", sampling, latent, flux_baseline)


def test_patching_leaves_the_input_model_alone(comfyui: Any, tiny_flux: Any, sampling: Sampling,
                                               flux_baseline: torch.Tensor) -> None:
    """The node patches a clone: sampling the model it was given stays unpatched."""
    cls = node_class(comfyui)
    apply_node(cls, tiny_flux, "flux-clone", **every_call(cls), warmup_steps=1)
    assert torch.equal(sample_flux(comfyui, tiny_flux, sampling), flux_baseline)


# ----------------------------------------------------------------------------- (f) unsupported family

def test_unsupported_model_raises_a_clear_error(comfyui: Any, tiny_lumina2: Any) -> None:
    cls = node_class(comfyui)
    with pytest.raises(Exception) as info:
        apply_node(cls, tiny_lumina2, "lumina")
    message = str(info.value)
    model_classes = (type(tiny_lumina2.model).__name__, type(tiny_lumina2.model.diffusion_model).__name__)
    assert any(name in message for name in model_classes), f"error does not name the model class: {message!r}"
    assert all(word in message.lower() for word in SUPPORTED_FAMILY_WORDS), (
        f"error does not name the supported families: {message!r}"
    )
