"""Guiders that combine more predictions than they hand the post-CFG functions (DualCFGGuider as ComfyUI runs
it, bench/standin/guiders.py): the sampler's measured weights are the sampler's, not the guider's.

In ComfyUI v0.33.0, plain euler under DualCFGGuider read as a sampler with 12.6 times Euler's guidance gain and
got the CFG++ note, and under euler_cfg_pp only 7 of 20 steps yielded a gain (issue 31 item 3): the fit saw
the middle and negative predictions but not the positive one the guider adds after its post-CFG functions.
"""

from __future__ import annotations

import pytest
import torch

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from bench.standin.guiders import sample_dual_cfg
from bench.standin.sampling import Cond
from bench.tiny import flux_scene, wan_scene
from test_forecast_wiring import apply_node, reports  # noqa: F401

SCENES = {"flux": flux_scene, "wan": wan_scene}
STEPS = 12
CFG_PP_NOTE = "carries the guidance difference"


def dual_cfg_run(family: str, sampler: str):
    scene = SCENES[family]()
    middle = Cond({k: v + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(3))
                   for k, v in scene.positive.inputs.items()})
    patcher = apply_node(scene.patcher, tolerance=0.5)
    return sample_dual_cfg(patcher, scene.noise(), scene.positive, middle, scene.negative, cfg_conds=3.0,
                           cfg_cond2_negative=2.0, steps=STEPS, sampler=sampler)


@pytest.mark.parametrize("family", SCENES)
def test_euler_under_dual_cfg_is_measured_as_euler(family, reports):
    dual_cfg_run(family, "euler")
    run = reports[-1]
    assert len(run.sampler_gains) >= STEPS - 2
    assert all(gain == pytest.approx(1.0, abs=1e-3) for gain in run.sampler_gains), run.sampler_gains
    assert not any(CFG_PP_NOTE in note for note in run.notes), run.notes


@pytest.mark.parametrize("family", SCENES)
def test_euler_cfg_pp_under_dual_cfg_is_measured_as_cfg_pp(family, reports):
    dual_cfg_run(family, "euler_cfg_pp")
    run = reports[-1]  # (1 - s') s / (s - s') on the flow schedule: 1 at the first step, then rising
    assert len(run.sampler_gains) >= STEPS - 2 and min(run.sampler_gains) >= 0.999, run.sampler_gains
    assert max(run.sampler_gains) > 3.0, run.sampler_gains
