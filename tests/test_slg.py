"""SkipLayerGuidanceDiT as ComfyUI runs it (bench/standin/slg.py, after comfy_extras/nodes_slg.py):
one extra model call per step with the positive cond, made by a post-CFG function, with skip
patches on a copy of the sampler's model_options that replace the node's patches on those
blocks for that call only.

The node must accelerate the main calls, and the skip-layer calls must either be cached as
streams of their own (only middle blocks skipped) or computed in full with a note that says
so (block 0 or the last block skipped) — never mixed into the positive cond's caches, which
share their uuid. The node order does not matter: SLG patches nothing on the model itself.
"""

from __future__ import annotations

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.standin.sampling import sample
from bench.standin.slg import skip_layer_guidance
from bench.tiny import flux_scene, wan_scene
from test_forecast_wiring import ALWAYS, NEVER, Recorder, apply_node, assert_forecasts_extrapolate, reports, runtime_of  # noqa: F401

SCENES = {"flux": flux_scene, "wan": wan_scene}
# Middle blocks (block 0 and the last block stay the node's) and block 0 itself, per family:
# tiny Flux runs double 0-1 then single 0-3; tiny Wan runs blocks 0-3.
MIDDLE = {"flux": {"double_layers": (1,), "single_layers": (1,)}, "wan": {"double_layers": (1, 2)}}
FIRST = {"flux": {"double_layers": (0,)}, "wan": {"double_layers": (0,)}}
STEPS, CFG = 12, 3.0
WINDOW = {"start_percent": 0.0, "end_percent": 1.0, "scale": 2.0}  # every step, to exercise the SLG stream


def with_slg(patcher, layers: dict, node_first: bool, **node):
    """CGTaylorCache then SkipLayerGuidanceDiT in the graph, or the other way round."""
    if node_first:
        return skip_layer_guidance(apply_node(patcher, **node), **WINDOW, **layers)
    return apply_node(skip_layer_guidance(patcher, **WINDOW, **layers), **node)


def is_slg_call(call: dict) -> bool:
    """An extra SLG call: some block patch on it is not the node's (the skip function)."""
    return any(getattr(patch, "cgtaylor_runtime", None) is None for patch in call["patches"].values())


def run(scene, patcher, **kwargs):
    return sample(patcher, scene.noise(), scene.positive, scene.negative, cfg=CFG, steps=STEPS, **kwargs)


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("node_first", [True, False], ids=["node-then-slg", "slg-then-node"])
def test_skip_layer_calls_are_cached_as_their_own_stream(family, node_first, reports):
    scene = SCENES[family]()
    patcher = with_slg(scene.patcher, MIDDLE[family], node_first, **ALWAYS)
    runtime = runtime_of(patcher)
    streams = set()
    recorder = Recorder(scene)
    run(scene, patcher, callback=lambda step, x: streams.update(runtime.engine._streams))
    recorder.close()
    assert sum(map(is_slg_call, recorder.calls)) == STEPS  # one extra call per step
    checked = assert_forecasts_extrapolate(recorder, family, STEPS, 1.0, "step", 1,
                                           group=lambda call: "slg" if is_slg_call(call) else "main")
    assert checked["main"] > 0 and checked["slg"] > 0  # both accelerated, each from its own history
    assert len(streams) == 3  # uncond, cond, and the skip-layer call of the cond
    slg_streams = [key for key in streams if len(key) == 3]
    assert len(slg_streams) == 1 and slg_streams[0][0] == scene.positive.uuid
    notes = reports[-1].notes
    assert any("cached as streams of their own" in n for n in notes), notes
    assert not any("update ComfyUI" in n or "computed in full" in n for n in notes), notes


@pytest.mark.parametrize("family", SCENES)
def test_node_order_with_slg_does_not_matter(family, reports):
    scene = SCENES[family]()
    outputs = [run(scene, with_slg(scene.patcher, MIDDLE[family], node_first, **ALWAYS)) for node_first in (True, False)]
    assert torch.equal(*outputs)
    assert reports[0].to_json() == reports[1].to_json()


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("layers", ["middle", "first"])
@pytest.mark.parametrize("node_first", [True, False], ids=["node-then-slg", "slg-then-node"])
def test_gate_that_always_rejects_with_slg_is_bit_identical(family, layers, node_first, reports):
    scene = SCENES[family]()
    chosen = (MIDDLE if layers == "middle" else FIRST)[family]
    baseline = run(scene, skip_layer_guidance(scene.patcher, **WINDOW, **chosen))
    assert torch.equal(run(scene, with_slg(scene.patcher, chosen, node_first, tolerance=NEVER)), baseline)
    assert reports[-1].forecast_calls == 0 and any(r.gate_errors for r in reports[-1].steps.values())


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("node_first", [True, False], ids=["node-then-slg", "slg-then-node"])
def test_skip_layer_calls_without_block_zero_are_computed_in_full_and_say_so(family, node_first, reports):
    scene = SCENES[family]()
    patcher = with_slg(scene.patcher, FIRST[family], node_first, **ALWAYS, max_consecutive=2)
    recorder = Recorder(scene)
    run(scene, patcher)
    recorder.close()
    slg_calls = [call for call in recorder.calls if is_slg_call(call)]
    main = [call for call in recorder.calls if not is_slg_call(call)]
    assert len(slg_calls) == STEPS
    recorder.calls = main
    checked = assert_forecasts_extrapolate(recorder, family, STEPS, 1.0, "step", 1)
    assert checked[None] == reports[-1].forecast_calls > 0  # only main calls forecast
    # The skip-layer calls ran every block SLG left in place, the last one included.
    assert all(call["last"] is not None for call in slg_calls), "a skip-layer call was forecast"
    assert reports[-1].calls == 2 * STEPS
    notes = reports[-1].notes
    assert any("including block 0 or the last block, so those calls were computed in full" in n
               and "in either node order" in n for n in notes), notes
    assert not any("update ComfyUI" in n or "place CGTaylorCache after" in n for n in notes), notes


@pytest.mark.parametrize("family", SCENES)
@pytest.mark.parametrize("node_first", [True, False], ids=["node-then-slg", "slg-then-node"])
def test_slgs_extra_prediction_keeps_the_samplers_measured_weights(family, node_first, reports):
    """SkipLayerGuidanceDiT adds a prediction the sampler's fit cannot see (issue 31): under euler the steps
    still measure as Euler steps and no CFG++ note is shown; under euler_cfg_pp the CFG++ weights are still
    read from every step."""
    scene = SCENES[family]()
    run(scene, with_slg(scene.patcher, MIDDLE[family], node_first, tolerance=0.5), sampler="euler")
    euler = reports[-1]
    assert len(euler.sampler_gains) >= STEPS - 2
    assert all(gain == pytest.approx(1.0, abs=1e-3) for gain in euler.sampler_gains), euler.sampler_gains
    assert not any("carries the guidance difference" in note for note in euler.notes), euler.notes
    run(scene, with_slg(scene.patcher, MIDDLE[family], node_first, tolerance=0.5), sampler="euler_cfg_pp")
    cfg_pp = reports[-1]  # (1 - s') s / (s - s') on the flow schedule: 1 at the first step, then rising
    assert len(cfg_pp.sampler_gains) >= STEPS - 2 and min(cfg_pp.sampler_gains) >= 0.999, cfg_pp.sampler_gains
    assert max(cfg_pp.sampler_gains) > 3.0, cfg_pp.sampler_gains
