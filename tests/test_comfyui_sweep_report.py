"""The real-ComfyUI sweep's part of docs/compatibility.md is what bench.report renders from the committed
bench/results/comfyui_sweep.json, and its verdicts follow issue 31's targets from the numbers."""

from __future__ import annotations

import json

import bench  # noqa: F401
from bench import comfyui_sweep_report as sweep
from bench.report import PLACES, SWEEP_END, SWEEP_START, published


def point(worst: float | None, under_40: int = 0, model: str = "wan_deep", steps: int = 30, cfg: float = 3.0,
          ratio: float = 2.2, sampler: str = "euler") -> dict:
    return {"model": model, "sampler": sampler, "steps": steps, "cfg": cfg, "shift": 8.0, "images": 20,
            "worst": worst, "p10": worst, "under_35": int(worst is not None and worst < 35), "under_40": under_40,
            "block_ratio": ratio, "speed": ratio * 0.9}


def results(points: list[dict]) -> dict:
    return {"comfyui": {"release": "0.33.0", "commit": "2f35f4a0", "torch": "2.13.0"}, "pack": "abc",
            "scheduler": "simple", "images_per_point": 20, "seeds": [0, 1], "batch": 10, "holdout": ["flux_holdout"],
            "same_output": {"wan_deep": 3e-7}, "deterministic_samplers": ["euler"],
            "excluded_samplers": {"euler_ancestral": "ancestral: adds fresh noise after every step"}, "points": points}


def test_the_compatibility_page_shows_the_committed_sweep():
    assert sweep.OUT.is_file(), "bench/results/comfyui_sweep.json is not committed"
    page = published()[PLACES[SWEEP_START]]
    shown = page.split(SWEEP_START, 1)[1].split(SWEEP_END, 1)[0].strip()
    assert shown == sweep.section(json.loads(sweep.OUT.read_text())), "run `python -m bench.report`"


def test_an_image_under_35_db_or_a_tenth_under_40_misses_the_image_target():
    assert sweep.meets_images(point(35.0, under_40=2)) and sweep.meets_images(point(None))
    assert not sweep.meets_images(point(34.9))
    assert not sweep.meets_images(point(45.0, under_40=3))


def test_each_miss_is_listed_with_its_numbers():
    listed = sweep.misses(results([point(30.6, under_40=1, model="qwen", cfg=8.0), point(50.0),
                                   point(50.0, steps=50, ratio=2.4)]))
    assert "qwen shift 8, euler 30 steps cfg 8: worst 30.6 dB, 1 of 20 under 40 dB" in listed
    assert "wan_deep shift 8, euler 50 steps cfg 3: blocks 2.40x, under the 2.5x target" in listed
    assert listed.count("\n") == 1  # the point that meets both targets is not listed
    assert sweep.misses(results([point(50.0)])) == "- none"


def test_the_summary_counts_points_images_and_speed():
    text = sweep.summary(results([point(30.6, under_40=1), point(None, steps=50, ratio=2.6), point(41.0, cfg=4.0)]))
    assert "2 of 3 points keep every image" in text and "1 images are under 35 dB and 1 under 40 dB" in text
    assert "the worst is 30.6 dB" in text and "2 of 2 points meet it" in text
    assert text.count("\n") <= 2


def test_a_sweep_stopped_early_says_what_it_measured():
    early = results([point(50.0), point(50.0, model="flux_deep", sampler="heun", cfg=4.0)])
    early["deterministic_samplers"] = ["euler", "heun", "lms"]
    text = sweep.summary({**early, "complete": False})
    assert "2 trained models" in text and "2 of the 3 deterministic samplers at 20 and 30 steps on flux_deep" in text
    assert "stopped before its end" in text
    assert "stopped" not in sweep.summary({**early, "complete": True})
