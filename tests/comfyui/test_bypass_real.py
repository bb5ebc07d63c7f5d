"""A model whose calls never reach the node's hooks: ComfyUI's autoregressive Wan (v0.30.0 and later).

``CausalWanModel`` (comfy/ldm/wan/ar_model.py) is a WanModel, so the node patches it; under
the ``ar_video`` sampler its forward() runs forward_block(), which calls the blocks directly,
past the DIFFUSION_MODEL wrapper and every block patch. The image must be the uncached one
and the run must say why nothing was cached, in the log and in the chart's notes.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from conftest import TINY_WAN21_T2V, as_model_patcher, build_model
from test_real_comfyui import apply_node, every_call, node_class

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def tiny_causal_wan(comfyui: Any) -> Any:
    import comfy.supported_models

    config = getattr(comfy.supported_models, "WAN21_CausalAR_T2V", None)
    if config is None:
        pytest.skip("this ComfyUI has no autoregressive Wan (added in 2026)")
    return as_model_patcher(build_model(config, TINY_WAN21_T2V, seed=2102))


def sample_autoregressive(comfyui: Any, model: Any) -> torch.Tensor:
    import comfy.sample
    import comfy.samplers

    conditioning = comfyui.nodes.NODE_CLASS_MAPPINGS["CGTTestRandomConditioning"]()
    (positive,) = conditioning.make(seed=21, tokens=8, width=4096, pooled_width=0)
    (negative,) = conditioning.make(seed=22, tokens=8, width=4096, pooled_width=0)
    latent = torch.zeros(1, 16, 3, 8, 8)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4)
    sampler = comfy.samplers.ksampler("ar_video", {"num_frame_per_block": 1})
    noise = comfy.sample.prepare_noise(latent, 7)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, positive, negative, latent, seed=7).clone()


def test_autoregressive_wan_gives_the_uncached_image_and_says_why(comfyui: Any, tiny_causal_wan: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cls = node_class(comfyui)
    baseline = sample_autoregressive(comfyui, tiny_causal_wan)
    patched = apply_node(cls, tiny_causal_wan, unique_id="ar", **every_call(cls))
    first_event = len(comfyui.events)
    with caplog.at_level(logging.INFO):
        out = sample_autoregressive(comfyui, patched)
    assert torch.equal(out, baseline)
    (payload,) = [e.data for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    assert payload["node"] == "ar" and payload["totals"]["calls"] == 0
    (note,) = payload["notes"]
    assert "CausalWanModel" in note and "autoregressive" in note and "nothing was cached" in note
    assert any("CausalWanModel made no model call" in r.getMessage() for r in caplog.records)
