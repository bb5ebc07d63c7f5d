"""The node under ComfyUI's own samplers and beside ComfyUI's own caching and merge nodes (issue 26).

* CFG++ samplers (comfy/k_diffusion/sampling.py ``*_cfg_pp``) carry the guidance difference into their
  next latent far more strongly than Euler steps; the node measures that from the sampler's steps
  (a post-CFG function) and weighs its gate by it. Euler measures 1.
* Rejections are blamed on the sampler's noise only where its measured steps carry noise.
* dpm_fast and dpm_adaptive integrate to the last nonzero sigma at sigmas of their own: their final
  stretch is the last step, computed in full.
* KSamplerAdvanced split over two runs keeps one start/end window (shares of the model's noise range).
* EasyCache after the node answers some calls without running the model: the node names it and counts
  those calls as running no block, without falling back to full compute.
* ModelMergeSimple keeps model1's patches only: the node says so when it feeds model2.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from test_integrations_real import node_output
from test_real_comfyui import (CACHE_NODE, SAVE_NODE, Sampling, apply_node, assert_ran, every_call, node_class, node_inputs,
                               wan_prompt)

pytestmark = pytest.mark.comfyui

CFG4 = Sampling("cfg4-batch2", cfg=4.0, batch=2)
STEPS = 12


def conditioning(comfyui: Any) -> tuple[Any, Any]:
    make = comfyui.nodes.NODE_CLASS_MAPPINGS["CGTTestRandomConditioning"]().make
    return make(seed=11, tokens=8, width=4096, pooled_width=768)[0], make(seed=12, tokens=8, width=4096, pooled_width=768)[0]


def ksampler_advanced(comfyui: Any, model: Any, sampler: str, start: int = 0, end: int = 10000,
                      latent: torch.Tensor | None = None, leftover_noise: bool = False, batch: int = CFG4.batch) -> torch.Tensor:
    """The stock KSamplerAdvanced node, called as the executor does (inference mode)."""
    positive, negative = conditioning(comfyui)
    samples = torch.zeros(batch, 16, 16, 16) if latent is None else latent
    with torch.inference_mode():
        (out,) = comfyui.nodes.KSamplerAdvanced().sample(
            model, "enable" if start == 0 else "disable", 7, STEPS, CFG4.cfg, sampler, "simple", positive, negative,
            {"samples": samples}, start, end, "enable" if leftover_noise else "disable")
    return out["samples"].clone()


def run_with_stats(comfyui: Any, model: Any, sampler: str, **kwargs: Any) -> tuple[torch.Tensor, dict]:
    first = len(comfyui.events)
    out = ksampler_advanced(comfyui, model, sampler, **kwargs)
    (payload,) = [e.data for e in comfyui.events[first:] if e.event == "cgtaylor.stats"]
    return out, payload


@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp"])
def test_cfg_pp_samplers_weigh_the_gate_by_their_measured_gain(comfyui: Any, tiny_flux: Any, sampler: str) -> None:
    cls = node_class(comfyui)
    _, euler = run_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="e", warmup_steps=1), "euler")
    _, cfg_pp = run_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="p", warmup_steps=1), sampler)
    assert euler["sampler"] == "euler" and not any("gain" in step for step in euler["steps"])
    assert cfg_pp["sampler"] == sampler
    gains = [step["gain"] for step in cfg_pp["steps"] if "gain" in step]
    # the last steps step to (nearly) sigma 0, where a CFG++ step is an Euler step
    assert len(gains) >= STEPS - 4 and max(gains) > 2.0, cfg_pp["steps"]
    if sampler == "euler_cfg_pp":  # each call weighed by its own step's gain, (1 - s') s / (s - s') on a flow model
        sigmas = [step["sigma"] for step in cfg_pp["steps"]] + [0.0]
        for index in range(3, STEPS - 1):  # from the second fitted step on
            sigma, following = sigmas[index], sigmas[index + 1]
            expected = (1 - following) * sigma / (sigma - following)
            assert cfg_pp["steps"][index].get("gain", 1.0) == pytest.approx(max(1.0, expected), rel=1e-3), index


@pytest.mark.parametrize("sampler, note", [("euler", "features moved more between steps"),
                                            ("euler_ancestral", "euler_ancestral injects fresh noise every step"),
                                            ("dpmpp_2m", "features moved more between steps")])
def test_rejections_are_blamed_on_noise_only_where_the_sampler_adds_it(comfyui: Any, tiny_flux: Any, sampler: str,
                                                                      note: str) -> None:
    """A tolerance nothing meets rejects every call; the note says why from the sampler's measured steps."""
    cls = node_class(comfyui)
    _, stats = run_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="n", tolerance=1e-9, warmup_steps=1), sampler)
    assert stats["totals"]["forecast"] == 0
    assert any(note in n for n in stats["notes"]), stats["notes"]
    assert sampler == "euler_ancestral" or not any("injects fresh noise" in n for n in stats["notes"])


@pytest.mark.parametrize("sampler", ["dpm_fast", "dpm_adaptive"])
def test_the_final_stretch_of_dpm_solvers_is_computed_in_full(comfyui: Any, tiny_flux: Any, sampler: str) -> None:
    """Their calls between the second-to-last and the last nonzero sigma (reported under the second-to-last
    step) are the last step: none is forecast, even when every other call may be."""
    cls = node_class(comfyui)
    settings = {**every_call(cls), "max_consecutive": 0, "warmup_steps": 1}
    _, stats = run_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="d", **settings), sampler)
    final = stats["steps"][STEPS - 2]
    assert final["calls"] > 0 and final["forecast"] == 0 and final["full"].get("edge") == final["calls"]
    assert stats["totals"]["forecast"] > 0


@pytest.mark.parametrize("sampler", ["uni_pc", "uni_pc_bh2"])
def test_uni_pc_keeps_its_last_step_full(comfyui: Any, tiny_flux: Any, sampler: str) -> None:
    """ComfyUI's uni_pc writes 0.001 over the final 0 of the schedule it is handed, the tensor the node reads
    as ``sample_sigmas``: the run still ends at 0 for the node, its last step is computed in full and counted
    so, and the run is named as ComfyUI names the sampler (issue 31)."""
    cls = node_class(comfyui)
    settings = {**every_call(cls), "max_consecutive": 0, "warmup_steps": 1}
    _, stats = run_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="u", **settings), sampler)
    assert stats["sampler"] == sampler
    last = stats["steps"][STEPS - 1]
    assert last["calls"] > 0 and last["forecast"] == 0 and last["full"] == {"edge": last["calls"]}
    assert stats["totals"]["forecast"] > 0


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_a_speed_target_through_comfyuis_ksampler(comfyui: Any, tiny_flux: Any, sampler: str) -> None:
    """The node's target_speedup input through ComfyUI's own KSamplerAdvanced (issue 32): the run reaches the
    target within 10% in block evaluations (heun's two calls per step both count), or says why it did not;
    the payload carries the target, and the same settings without it sample as the tolerance decides."""
    cls = node_class(comfyui)
    model = apply_node(cls, tiny_flux, unique_id="t", warmup_steps=1, target_speedup=1.5)
    _, stats = run_with_stats(comfyui, model, sampler)
    assert stats["target"]["speedup"] == 1.5
    ratio = stats["totals"]["block_ratio"]
    reached = abs(ratio / 1.5 - 1) <= 0.1
    note = [n for n in stats["notes"] if n.startswith("target 1.5x not reached")]
    assert reached != bool(note), (ratio, stats["notes"])
    if note:  # the tiny random model's features may move too fast for the guard
        assert f"{ratio:.2f}x" in note[0] and stats["target"]["refused"] > 0
    _, plain = run_with_stats(comfyui, apply_node(cls, tiny_flux, unique_id="p", warmup_steps=1), sampler)
    assert "target" not in plain


def test_split_sampling_keeps_one_window_over_both_runs(comfyui: Any, tiny_flux: Any) -> None:
    """One patched model sampled by two KSamplerAdvanced (steps 0-6 with leftover noise, then 6-12): end_fraction
    0.5 is half of the model's noise range, so the second run forecasts nothing, and the first run's last call,
    which hands its latent on, may be forecast."""
    cls = node_class(comfyui)
    settings = {**every_call(cls), "max_consecutive": 0, "warmup_steps": 1, "end_fraction": 0.5}
    patched = apply_node(cls, tiny_flux, unique_id="s", **settings)
    latent, first = run_with_stats(comfyui, patched, "euler", end=6, leftover_noise=True)
    _, second = run_with_stats(comfyui, patched, "euler", start=6, latent=latent)
    assert [s["step"] for s in first["steps"] if s["forecast"]] == list(range(1, 6))
    assert second["totals"]["forecast"] == 0 and second["totals"]["full"].get("window", 0) > 0


def easy_cache(comfyui: Any, model: Any) -> Any:
    node = comfyui.nodes.NODE_CLASS_MAPPINGS["EasyCache"]
    return node_output(node.execute(model=model, reuse_threshold=0.5, start_percent=0.15, end_percent=0.95,
                                    verbose=False))


@pytest.mark.parametrize("tolerance", [0.0, None])
def test_easycache_after_the_node_is_named_and_counted(comfyui: Any, tiny_flux: Any, block_counter: Any,
                                                        tolerance: float | None) -> None:
    if "EasyCache" not in comfyui.nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no EasyCache node")
    from test_real_comfyui import flux_modules

    cls = node_class(comfyui)
    settings = {"tolerance": tolerance} if tolerance is not None else {}
    # One latent: v0.3.64's EasyCache alone stops on a batch of two with cfg (a batch-size mismatch of 4
    # against 2 inside its own wrapper).
    alone = ksampler_advanced(comfyui, easy_cache(comfyui, tiny_flux), "euler", batch=1)
    with block_counter(flux_modules(tiny_flux)) as counter:
        out, stats = run_with_stats(comfyui, easy_cache(comfyui, apply_node(cls, tiny_flux, unique_id="ec", **settings)),
                                    "euler", batch=1)
    totals = stats["totals"]
    assert totals.get("served", 0) > 0
    assert totals["blocks_run"] == sum(n for name, n in counter.counts.items() if name != "final_layer")
    assert "fallback" not in totals["full"]
    assert any("EasyCache" in note and "one cache at a time" in note for note in stats["notes"]), stats["notes"]
    assert not any("never called its block patches" in note for note in stats["notes"])
    if tolerance == 0.0:
        assert torch.equal(out, alone)  # the node forecasts nothing, EasyCache does what it does alone


def test_a_merge_that_drops_the_node_says_so(comfyui: Any, run_prompt: Any, tiny_wan: Any, caplog: Any) -> None:
    prompt = wan_prompt(tiny_wan.name, node_inputs(node_class(comfyui)), Sampling("cfg1", cfg=1.0, batch=1))
    prompt["31"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": [CACHE_NODE, 0],
                                                                "ratio": 0.5}}
    prompt["5"]["inputs"]["model"] = ["31", 0]
    with caplog.at_level(logging.WARNING):
        run = run_prompt(prompt)
    assert_ran(run)
    assert run.saved_latent(SAVE_NODE) is not None
    warnings = [r.getMessage() for r in caplog.records if "CGTaylorCache" in r.getMessage()]
    assert any("ModelMergeSimple (node 31) as model2" in w for w in warnings), warnings
    (event,) = [e.data for e in run.events if e.event == "cgtaylor.stats"]
    assert event["node"] == CACHE_NODE and event["steps"] == [] and "put CGTaylorCache after the merge" in event["notes"][0]
