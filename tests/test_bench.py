"""The benchmark's own parts: shipped weights, measures, cache-size arithmetic, training evidence."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

import bench  # noqa: F401
from bench import gpu
from bench.digits import NearestMeanClassifier, decode, digit_images, encode, to_video
from bench.measures import psnr, ssim
from bench.methods import METHODS, Curve, sweep
from bench.models import WanParams
from bench.weights import FAMILIES, MODELS, WeightsError, load_trained, weights_path


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_weights_load_and_are_small(family):
    model = load_trained(family)
    assert weights_path(family).stat().st_size < 8 * 2**20
    assert not any(p.requires_grad for p in model.parameters())


def test_loader_names_the_problem_with_a_wrong_file(tmp_path):
    from safetensors.torch import load_file, save_file

    with pytest.raises(FileNotFoundError, match="bench.train"):
        load_trained("wan", tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="holds flux weights, not wan"):
        load_trained("wan", weights_path("flux"))
    state = load_file(str(weights_path("wan")))
    state["head.head.weight"] = state["head.head.weight"][:, :3].contiguous()
    broken = tmp_path / "wan_digits.safetensors"
    save_file(state, str(broken), metadata={"family": "wan"})
    with pytest.raises(WeightsError, match=r"head\.head\.weight: file \(16, 3\) vs model \(16, 64\)"):
        load_trained("wan", broken)


def test_latents_fold_pixels_losslessly():
    images, labels = digit_images()
    assert images.shape == (1797, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    video = to_video(images[:4])
    assert torch.equal(decode(encode(images[:4])), images[:4]) and torch.equal(decode(encode(video)), video)
    assert torch.equal(video[..., 1, :, 1:], video[..., 0, :, :-1])  # one pixel to the right per frame


def test_psnr_and_ssim():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    assert psnr(image, image) == math.inf and ssim(image, image) == pytest.approx(1.0)
    shifted = image + 0.2  # error 0.1 on the [0, 1] scale, before clamping
    assert psnr(shifted.clamp(-1, 1), image) >= 20.0 - 1e-6
    noisy = [image + s * torch.randn(image.shape, generator=g) for s in (0.05, 0.2, 0.5)]
    scores = [ssim(n, image) for n in noisy]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.9


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_every_sweep_point_builds_its_engine(sampler):
    items = sweep(quick=False, sampler=sampler)
    points = [p for item in items for p in (item.points() if isinstance(item, Curve) else [item])]
    assert {p.method for p in points} == set(METHODS)
    for point in points:
        assert point.new_engine().policy.name == point.method


@pytest.mark.parametrize("family", FAMILIES)
def test_trained_models_are_trained(family):
    """Samples show their digit, and the last block's features follow a line far better than at random init
    (wan_rough is made rough on purpose: its own test below)."""
    from bench.run import evidence_of_training
    from bench.runs import Setup

    setup = Setup.load(family)
    references = {0: setup.sample(setup.patcher, 0)}
    evidence = evidence_of_training(setup, references, NearestMeanClassifier())
    assert evidence["accuracy_no_cache"] >= 0.9
    assert evidence["trained"]["linear_error_over_change"] < 0.5 * evidence["random_init"]["linear_error_over_change"]


def test_the_roughened_model_still_samples_its_digits_but_forecasts_miss_far_further():
    """wan_rough: wan_deep's timestep pathway perturbed at load time. A one-step forecast of its last block
    misses at least five times as far as on wan_deep at 50 steps, while its samples still read as their digits."""
    from bench.run import roughness
    from bench.runs import Setup

    rough, smooth = (replace(Setup.load(family), steps=50) for family in ("wan_rough", "wan_deep"))
    assert roughness(rough)["median"] > 5 * roughness(smooth)["median"]
    samples = torch.cat([decode(rough.sample(rough.patcher, seed)) for seed in (0, 1)])
    assert float((NearestMeanClassifier()(samples) == rough.labels.repeat(2)).float().mean()) >= 0.9


def test_deep_models_have_the_real_block_counts():
    """FLUX.1: 19 double + 38 single blocks; Wan 2.1 1.3B: 30 blocks. Only then is block 0's share of a
    forecast call (1/57, 1/30) the real one."""
    from bench.runs import Setup

    assert len(Setup.load("flux_deep").layout.keys) == 19 + 38
    assert len(Setup.load("wan_deep").layout.keys) == 30


@pytest.mark.parametrize("family", ["flux_deep", "wan_deep"])
def test_deep_models_show_their_digit_at_a_real_step_count(family):
    """The bar the deep models were trained to: at least 95% of uncached samples (2 seeds x 10 digits,
    28 steps, cfg 3) read as their digit."""
    from dataclasses import replace

    from bench.runs import Setup

    setup, judge = replace(Setup.load(family), steps=28), NearestMeanClassifier()
    samples = torch.cat([decode(setup.sample(setup.patcher, seed)) for seed in (0, 1)])
    assert float((judge(samples) == setup.labels.repeat(2)).float().mean()) >= 0.95


def test_measured_cache_matches_the_memory_bound():
    tiny = gpu.Size("tiny", "wan", WanParams(in_dim=4, out_dim=4, dim=32, ffn_dim=64, freq_dim=32, text_dim=16,
                                             num_heads=2, num_layers=3), (4, 2, 8, 8), 4, 6)
    result = gpu.measure(tiny, torch.device("cpu"), torch.float32)
    assert result["cache_peak_mb"] == pytest.approx(result["cache_bound_mb"])
    # Counted, not timed: 6 steps at the node's defaults, at most 2 forecasts in a row (warm-up 1), so
    # steps 1, 2 and 4 are forecast (1 of 3 blocks each) and steps 0, 3 and 5 run all 3 blocks: 18 / 12
    # evaluations. Which call is faster belongs to the benchmark's printout; a loaded machine would make
    # such a test flaky.
    assert result["block_ratio"] == pytest.approx(18 / 12)
    assert result["forecast_call_ms"] is not None and result["gate_overhead_pct"] is not None
    flux1 = gpu.SIZES["flux1"]
    cached = gpu.node_memory(flux1, torch.bfloat16).bound["device"]
    assert gpu.taylorseer_module_cache_bytes(flux1) > 40 * cached
    # Orders 2/2: three sampled block-0 states (1/16 of 4096 image tokens) and three last-block states.
    assert cached == 3 * 256 * 3072 * 2 + 3 * (4096 + 512) * 3072 * 2


def test_speedups_divide_the_median_of_uncached_timings_taken_through_the_run(monkeypatch):
    """CPU time drifts on a shared machine: the uncached sample is timed again every RETIME_EVERY points,
    and every point's speedup is against the median of those timings."""
    from bench import run, runs

    monkeypatch.setattr(run, "RETIME_EVERY", 3)
    clock = itertools.count(1)  # every timed sample takes a second longer than the one before
    for module in (run, runs):  # the points' timings and the uncached ones (bench/runs.py References)
        monkeypatch.setattr(module, "cpu_timed", lambda sample: (sample(), float(next(clock))))
    checkpoints = []  # the results so far, after every run: a sweep cut short keeps them
    data = run.run_family("flux", run.QUICK_RUNS, quick=True, seeds=[0], judge=NearestMeanClassifier(),
                          checkpoint=lambda family, data: checkpoints.append((family, list(data["runs"]))))
    assert checkpoints == [("flux", [run.run_key(*r) for r in run.QUICK_RUNS])]
    entry = data["runs"][run.run_key(*run.QUICK_RUNS[0])]
    evaluated = len(entry["points"]) + (entry["default"] not in entry["points"])
    assert entry["uncached_timings"] == 1 + (evaluated - 1) // 3 > 1
    for point in [*entry["points"], entry["default"]]:
        assert point["wall_speedup"] * point["sample_seconds"] == pytest.approx(entry["uncached_seconds"])


def test_a_sweep_of_only_a_noisy_sampler_runs(monkeypatch, tmp_path):
    """`--runs euler_ancestral-50` alone: the training evidence, taken at the most euler steps, has no euler
    run to come from, and the sample plot no samples: both are left out instead of ending the sweep after
    its points were measured."""
    from bench import run
    from bench.plots import samples_plot

    monkeypatch.setattr(run, "sweep", lambda quick, sampler: [])  # the node default alone is measured
    data = run.run_family("flux", [("euler_ancestral", 4)], quick=True, seeds=[0], judge=NearestMeanClassifier(),
                          checkpoint=lambda family, data: None)
    assert list(data["runs"]) == ["euler_ancestral-4"] and "evidence" not in data
    samples_plot({"families": {"flux": data}}, tmp_path / "samples.png")
    assert not (tmp_path / "samples.png").exists()


def test_the_gate_exam_finds_the_rejected_calls_would_have_missed_by_more():
    """bench/gate_exam.py replays the node default's engine over an uncached run of the 6-block Wan: the
    calls its gate accepted are checked against the blocks' real output, and a gate that decides ranks
    the calls it rejected above them."""
    from bench.gate_exam import Exam, recorded_calls, replay
    from bench.runs import Setup

    setup = Setup.load("wan")
    calls = recorded_calls(setup, seed=0)
    assert len(calls) == setup.steps and all(c.last is not None for c in calls)
    exam = Exam()
    replay(setup, calls, exam)
    summary = exam.summary(tolerance=0.1)
    assert summary["accepted"] and summary["rejected"], summary
    assert summary["accepted_miss_median"] < summary["rejected_miss_median"] and summary["auc"] > 0.5, summary


def test_a_default_that_forecast_nothing_is_no_gap_below_the_best_point():
    """On a run too rough for the gate to trust any forecast, the default is exact (inf dB), as is the best
    point at its speed: the gap is 0, not inf - inf."""
    from bench.run import summarise

    def measured(method: str, label: str, ratio: float, db: float) -> dict:
        return {"method": method, "label": label, "settings": {}, "block_ratio": ratio, "psnr": db, "ssim": 1.0,
                "accuracy": 1.0, "wall_speedup": ratio, "cache_hidden_states": 6.0, "notes": []}

    default = measured("cg-taylor", "tol 0.1", 1.0, math.inf)
    points = [measured("cg-taylor", "tol 0.02", 1.0, math.inf), measured("cg-taylor", "tol 0.5", 1.4, 50.0), default]
    assert summarise(points, default)["default_below_best_db"] == 0.0
    slower = measured("cg-taylor", "tol 0.2", 1.4, 47.0)
    assert summarise(points, slower)["default_below_best_db"] == pytest.approx(3.0)


def test_a_partial_sweep_updates_its_runs_and_keeps_the_others(tmp_path):
    """`python -m bench.run --families f --runs euler-50` re-measures one run; the file keeps the rest the sweep
    still defines (flux_deep's euler-12 left the sweep: its figures go)."""
    import json

    from bench.run import merged

    path = tmp_path / "full.json"
    before = {"mode": "full", "seeds": 2, "families": {
        "flux_deep": {"blocks": 57, "runs": {"euler-12": {"v": "old 12"}, "euler-28": {"v": "old 28"},
                                             "euler-50": {"v": "old 50"}}},
        "wan_deep": {"blocks": 30, "runs": {"euler-50": {"v": "wan"}}}}}
    path.write_text(json.dumps(before))
    update = {"mode": "full", "seeds": 2, "families": {"flux_deep": {"blocks": 57, "runs": {"euler-50": {"v": "new 50"}}}}}
    after = merged(update, path)
    assert after["families"]["flux_deep"]["runs"] == {"euler-28": {"v": "old 28"}, "euler-50": {"v": "new 50"}}
    assert after["families"]["wan_deep"] == before["families"]["wan_deep"]
    assert merged({**update, "seeds": 3}, path) == {**update, "seeds": 3}  # another sweep's file is not mixed in


def test_the_results_file_keeps_what_the_report_reads_rounded():
    """bench/results/full.json is rewritten by every `make bench`: it keeps each point's figures and forecast
    pattern, the node default's and the documented settings' gate record and notes, and every float to
    seven significant digits, so it stays small in the repository's history."""
    import json

    from bench.run import stored
    from bench.runs import forecast_pattern

    steps = [{"calls": 2, "forecast": 0}, {"calls": 2, "forecast": 2}, {"calls": 2, "forecast": 1}]

    def point(label: str) -> dict:
        return {"method": "cg-taylor", "label": label, "settings": {"threshold": 0.1}, "block_ratio": 2.123456789,
                "psnr": math.inf, "gate": {"full": {"gate": 3}, "coverage": 0.987654321}, "notes": ["a note"],
                "pattern": forecast_pattern(steps)}

    default, other = point("default"), point("other")
    report = {"mode": "full", "seeds": 2, "families": {"flux_deep": {"blocks": 57, "runs": {"euler-50": {
        "points": [other, default], "default": default, "faster": other, "summary": {"default_below_best_db": 1 / 3},
        "samples": {"no_cache": [[0.123456789, -1.0]]}}}}}}
    kept = stored(report)["families"]["flux_deep"]["runs"]["euler-50"]
    assert default["pattern"] == ".Ff"
    assert [set(p) for p in kept["points"]] == [set(other) - {"gate", "notes"}] * 2  # figures and pattern only
    assert kept["default"] == {**default, "block_ratio": 2.123457, "gate": {"full": {"gate": 3}, "coverage": 0.9876543}}
    assert kept["faster"]["notes"] == ["a note"] and kept["summary"]["default_below_best_db"] == 0.3333333
    assert kept["samples"] == {"no_cache": [[0.1235, -1.0]]}
    assert math.isinf(kept["points"][0]["psnr"])  # no cache's own image: infinitely close, and still so
    assert json.loads(json.dumps(stored(report))) == stored(report)
    assert default["gate"]["coverage"] == 0.987654321, "the report in memory is left as measured"


def test_the_spread_at_the_defaults_speed_needs_two_settings_to_span():
    """The report's spread of the CG-Taylor settings that made as many forecasts as the default: with only the
    default there, it says so instead of spanning "1 settings" from a value to itself."""
    from bench.report import same_ratio_spread

    def point(label: str, ratio: float, db: float) -> dict:
        return {"method": "cg-taylor", "label": label, "block_ratio": ratio, "psnr": db}

    default = point("tol 0.2", 2.0, 50.0)
    assert same_ratio_spread({"default": default, "points": [default, point("tol 0.3", 2.5, 45.0)]}) == (
        "no other CG-Taylor setting made as many forecasts")
    assert same_ratio_spread({"default": default, "points": [default, point("tol 0.25", 2.0, 53.0)]}) == (
        "the 2 CG-Taylor settings with as many forecasts: 50.0 to 53.0 dB")
