"""The node beside ComfyUI's own SkipLayerGuidanceDiT and TorchCompileModel nodes, in a real ComfyUI.

SkipLayerGuidanceDiT (comfy_extras/nodes_slg.py) patches nothing on the model: a post-CFG
function makes one extra call per step with skip patches on a copy of the model options,
replacing ours on its layers for that call only. TorchCompileModel
(comfy_extras/nodes_torch_compile.py, comfy_api/torch_helpers/torch_compile.py) compiles the
whole diffusion model through an APPLY_MODEL wrapper, so our wrappers and block patches run
inside the traced code. Both are used in either order with the node.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from test_real_comfyui import Sampling, apply_node, every_call, node_class, relative_l2, sample_flux

pytestmark = pytest.mark.comfyui

CFG4 = Sampling("cfg4-batch2", cfg=4.0, batch=2)
NEVER_ACCEPTS = 1e-12  # the gate runs on every eligible call and rejects it
# Largest ||forecast - uncached|| / ||uncached|| of the final latent with SLG active on every step
# and every eligible call forecast: measured 0.0615 on v0.3.64 and v0.30.0; about 1.5 times that.
SLG_FORECAST_RELATIVE_L2 = 0.09


def node_output(result: Any) -> Any:
    """The MODEL a V3 node's execute() returned (io.NodeOutput), or a V1 node's tuple."""
    return (result.result if hasattr(result, "result") else result)[0]


def skip_layer_guidance(comfyui: Any, model: Any, double_layers: str, single_layers: str) -> Any:
    node = comfyui.nodes.NODE_CLASS_MAPPINGS["SkipLayerGuidanceDiT"]
    return node_output(node.execute(model=model, scale=3.0, start_percent=0.0, end_percent=1.0,
                                    double_layers=double_layers, single_layers=single_layers, rescaling_scale=0.0))


def sample_with_stats(comfyui: Any, model: Any) -> tuple[torch.Tensor, dict]:
    first_event = len(comfyui.events)
    out = sample_flux(comfyui, model, CFG4)
    (payload,) = [e.data for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    return out, payload


def test_skip_layer_guidance_in_either_order_is_accelerated_and_kept_apart(comfyui: Any, tiny_flux: Any) -> None:
    cls = node_class(comfyui)
    huge = every_call(cls)
    middle_layers = {"double_layers": "1", "single_layers": "1, 2"}  # block 0 and the last block stay ours
    baseline = sample_flux(comfyui, skip_layer_guidance(comfyui, tiny_flux, **middle_layers), CFG4)

    slg_first, slg_first_stats = sample_with_stats(comfyui, apply_node(
        cls, skip_layer_guidance(comfyui, tiny_flux, **middle_layers), unique_id="slg", **huge, warmup_steps=1))
    node_first, node_first_stats = sample_with_stats(comfyui, skip_layer_guidance(
        comfyui, apply_node(cls, tiny_flux, unique_id="slg", **huge, warmup_steps=1), **middle_layers))
    assert torch.equal(slg_first, node_first)
    assert slg_first_stats == node_first_stats
    totals = slg_first_stats["totals"]
    assert totals["calls"] == 2 * len(slg_first_stats["steps"])  # the batched cond/uncond call and SLG's call
    assert totals["forecast"] > 0
    (note,) = slg_first_stats["notes"]
    assert "cached as streams of their own" in note and "double_block 1" in note
    assert relative_l2(slg_first, baseline) < SLG_FORECAST_RELATIVE_L2

    rejecting = apply_node(cls, skip_layer_guidance(comfyui, tiny_flux, **middle_layers), unique_id="slg",
                           tolerance=NEVER_ACCEPTS, warmup_steps=1)
    exact, exact_stats = sample_with_stats(comfyui, rejecting)
    assert torch.equal(exact, baseline) and exact_stats["totals"]["forecast"] == 0


def test_skip_layer_guidance_on_block_zero_computes_its_calls_in_full(comfyui: Any, tiny_flux: Any) -> None:
    cls = node_class(comfyui)
    patched = apply_node(cls, tiny_flux, unique_id="slg0", **every_call(cls), warmup_steps=1)
    out, stats = sample_with_stats(comfyui, skip_layer_guidance(comfyui, patched, double_layers="0", single_layers=""))
    assert torch.isfinite(out).all()
    steps = len(stats["steps"])
    assert stats["totals"]["calls"] == 2 * steps
    assert 0 < stats["totals"]["forecast"] < steps  # only the main calls forecast
    (note,) = stats["notes"]
    assert "including block 0 or the last block" in note and "computed in full" in note


# ----------------------------------------------------------------------------- TorchCompileModel

def torch_compile(comfyui: Any, model: Any, backend: str) -> Any:
    node = comfyui.nodes.NODE_CLASS_MAPPINGS["TorchCompileModel"]
    return node_output(node.execute(model=model, backend=backend))


def same_decisions(stats: dict, reference: dict) -> bool:
    """The same calls forecast and computed, step by step; gate errors may differ in the last
    digits (inductor fuses the block's arithmetic differently)."""
    def decisions(payload: dict) -> list:
        return [(s["step"], s["calls"], s["forecast"]) for s in payload["steps"]]

    errors = [(s["gate_error"], r["gate_error"]) for s, r in zip(stats["steps"], reference["steps"])]
    return (stats["totals"] == reference["totals"] and decisions(stats) == decisions(reference)
            and all((a is None) == (b is None) and (a is None or abs(a - b) <= 1e-3 * abs(b)) for a, b in errors))


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


# Graphs dynamo builds for a whole run of the tiny FLUX (2 double + 4 single blocks, forecast
# and full calls, cfg 4 batch 2). Measured 19 (17 graph breaks) on v0.3.64 and v0.30.0, in
# either order: the runtime's decisions run eagerly, so no graph depends on the cache's state.
# Before that the same run built 42.
MAX_GRAPHS = 25


@pytest.mark.parametrize(("order", "backend"), [
    ("compile-then-node", "aot_eager"),
    ("node-then-compile", "aot_eager"),
    ("node-then-compile", "inductor"),  # with the system C++ compiler; about a minute on 2 CPU cores
])
def test_whole_model_compile_gives_the_uncompiled_nodes_image(comfyui: Any, tiny_flux: Any, order: str,
                                                              backend: str) -> None:
    import torch._dynamo

    cls = node_class(comfyui)
    settings = {**every_call(cls), "warmup_steps": 1}
    eager, eager_stats = sample_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="c", **settings))
    if order == "compile-then-node":
        model = apply_node(cls, torch_compile(comfyui, tiny_flux, backend), unique_id="c", **settings)
    else:
        model = torch_compile(comfyui, apply_node(cls, tiny_flux, unique_id="c", **settings), backend)
    torch._dynamo.reset()
    first = compiled_graphs()
    compiled, compiled_stats = sample_with_stats(comfyui, model)
    graphs = compiled_graphs() - first
    again, _ = sample_with_stats(comfyui, model)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert same_decisions(compiled_stats, eager_stats) and compiled_stats["totals"]["forecast"] > 0
    assert 0 < graphs <= MAX_GRAPHS, f"{graphs} graphs compiled"
    assert compiled_graphs() - first == graphs, "a second run compiled again"
    assert torch.equal(again, compiled)


def test_a_compiled_diffusion_model_set_as_an_object_patch_is_accelerated(comfyui: Any, tiny_flux: Any) -> None:
    """Other packs' compile nodes put ``torch.compile(diffusion_model)`` on the model as an object patch:
    ComfyUI's get_model_object then answers an ``OptimizedModule``, which the node looks through for the
    family, and ComfyUI runs the compiled forward with the node's hooks inside."""
    import torch._dynamo

    cls = node_class(comfyui)
    settings = {**every_call(cls), "warmup_steps": 1}
    eager, eager_stats = sample_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="o", **settings))
    compiled_model = tiny_flux.clone()
    torch._dynamo.reset()
    compiled_model.add_object_patch("diffusion_model",
                                    torch.compile(tiny_flux.get_model_object("diffusion_model"), backend="aot_eager"))
    patched = apply_node(cls, compiled_model, unique_id="o", **settings)
    assert type(patched.get_model_object("diffusion_model")).__name__ == "OptimizedModule"
    compiled, compiled_stats = sample_with_stats(comfyui, patched)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert same_decisions(compiled_stats, eager_stats) and compiled_stats["totals"]["forecast"] > 0
