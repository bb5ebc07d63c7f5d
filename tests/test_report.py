"""The generated parts of the README and docs/ are what bench.report renders from the committed results,
and the targets it lists are judged from the numbers, met or missed."""

from __future__ import annotations

import copy

import bench  # noqa: F401
from bench.report import (FULL_TABLES, PLACES, ROOT, full_tables, gate_table, generated_parts, published,
                          summary_section, targets, with_results)


def test_the_readme_and_docs_show_what_bench_report_renders_from_the_committed_results():
    current = published()
    assert set(current) == set(PLACES.values()) and ROOT / "README.md" in current
    for path, text in with_results(current).items():
        assert text == current[path], f"{path.relative_to(ROOT)}'s generated parts are stale: run `python -m bench.report`"
    assert FULL_TABLES.read_text() == full_tables(), "bench/results/table_full.md is stale: run `python -m bench.report`"


def test_each_generated_part_lives_in_one_file_and_the_benchmark_summary_in_the_readme():
    """A part PLACES puts in a file must have its markers there, once: a part left in the README and also
    copied to docs/ would go stale in one of the two."""
    assert PLACES["<!-- bench:start -->"] == ROOT / "README.md"
    texts = published()
    for start, end in generated_parts():
        holders = [path for path, text in texts.items() if start in text]
        assert holders == [PLACES[start]], (start, holders)
        assert texts[PLACES[start]].count(start) == texts[PLACES[start]].count(end) == 1


def point(ratio: float, db: float, method: str = "cg-taylor", **extra) -> dict:
    return {"method": method, "label": f"{method} {ratio}", "settings": {}, "block_ratio": ratio, "psnr": db,
            "ssim": 0.999, "accuracy": 1.0, "wall_speedup": ratio * 0.9, "cache_hidden_states": 5.0, "notes": [],
            **extra}


def gate(cap: int = 0, coverage: float = 0.95, auc: float = 0.9) -> dict:
    return {"full": {"warmup": 2, "edge": 2, "gate": 10, "cap": cap}, "cap_share": cap / (10 + cap),
            "rejection_share": 0.4, "judged": 10, "measured_median": 0.05, "measured_max": 0.2,
            "predicted_accepted_median": 0.04, "predicted_accepted_max": 0.09, "auc": auc, "coverage": coverage}


def run(steps: int, default: dict, best: dict) -> dict:
    at_default = {m: None for m in ("fixed-interval", "fbcache", "input-change", "dicache")}
    return {"sampler": "euler", "steps": steps, "points": [best, default], "default": default, "cpu_seconds": 60.0,
            "roughness": {"order": 2, "min": 0.01, "median": 0.3 / steps, "max": 0.1},
            "summary": {"at_default": {"cg-taylor": best, **at_default},
                        "default_below_best_db": best["psnr"] - default["psnr"], "psnr_at": {},
                        "cg_minus_taylorseer_db": {}, "cg_dominates_share": 1.0, "unmatched": []}}


def report(runs: dict) -> dict:
    return {"cfg": 3.0, "seeds": 2, "machine": {"cpu": "x86_64", "torch": "2.13.0"},
            "families": {"flux_deep": {"blocks": 57, "runs": runs}}}


def verdicts(results: dict) -> dict[str, bool | None]:
    return {t.text.split(" (")[0]: t.ok for t in targets(results)}


def good() -> dict:
    """Three runs whose defaults meet every target they are judged by."""
    return report({
        "euler-12": run(12, point(1.4, 52.0, gate=gate()), point(1.45, 52.5)),
        "euler-28": run(28, point(2.2, 56.0, gate=gate()), point(2.2, 56.5)),
        "euler-50": run(50, point(3.4, 54.0, gate=gate()), point(3.5, 55.0)),
    })


def test_targets_are_met_by_numbers_that_meet_them():
    found = verdicts(good())
    assert found["node default at least 40 dB"] is True
    assert found["node default within 1.5 dB of the run's best CG-Taylor point at its speed"] is True
    assert found["the cap forces at most 10% of the full calls after the warm-up"] is True
    assert found["node default at 50 steps: at least 2.5x and at most 4x fewer block evaluations"] is True
    assert found["the roughest run at least 10x rougher than the smoothest"] is False  # 0.025 against 0.006: 4x


def test_each_miss_is_caught_and_named():
    results = good()
    runs = results["families"]["flux_deep"]["runs"]
    runs["euler-12"]["default"]["psnr"] = 39.0  # under 40 dB, and now 13.5 dB below the run's best point
    runs["euler-12"]["summary"]["default_below_best_db"] = 13.5
    runs["euler-50"]["default"]["block_ratio"] = 4.4  # faster than the smooth models' ceiling
    runs["euler-28"]["default"]["gate"] = gate(cap=3)  # the cap forced 3 of 13 full calls
    found = {t.text.split(" (")[0]: t for t in targets(results)}
    assert found["node default at least 40 dB"].ok is False and "flux_deep euler 12" in found["node default at least 40 dB"].detail
    assert found["node default within 1.5 dB of the run's best CG-Taylor point at its speed"].ok is False
    assert found["node default at 50 steps: at least 2.5x and at most 4x fewer block evaluations"].ok is False
    assert found["the cap forces at most 10% of the full calls after the warm-up"].ok is False


def test_the_summary_stays_short():
    assert len(summary_section(good()).splitlines()) < 40


def exam(auc: float) -> dict:
    return {"accepted": 20, "rejected": 10, "accepted_miss_median": 0.03, "accepted_miss_max": 0.08,
            "rejected_miss_median": 0.07, "accepted_within_tolerance": 1.0, "auc": auc}


def test_the_gate_is_judged_by_its_exam_rejected_against_accepted_calls():
    """The AUC target reads the gate's exam (bench/gate_exam.py), the one place accepted forecasts are checked."""
    results = good()
    target = "where the gate rejects, the forecast would have missed by more than where it accepts"
    assert verdicts(results)[target] is None  # no exam taken: nothing to judge
    results["gate_exam"] = {"runs": {f"flux_deep {key}": exam(0.9) for key in ("euler-12", "euler-28", "euler-50")}}
    assert verdicts(results)[target] is True
    results["gate_exam"]["runs"]["flux_deep euler-28"] = exam(0.45)
    found = {t.text.split(" (")[0]: t for t in targets(results)}[target]
    assert found.ok is False and "flux_deep euler 28: AUC 0.45" in found.detail
    assert "0.03 / 0.07, 0.45" in gate_table(results)  # table_full.md's gate table shows the exam's misses and AUC


def test_the_widget_labels_full_calls_as_the_node_does():
    """The stats carry the node's reasons (core/stats.py FULL_REASONS); the widget's own copy, which labels
    payloads recorded before they did, names the same reasons in the same order with the same words."""
    import json
    import re

    from cgtaylor_cache.core.stats import FULL_REASONS

    source = (ROOT / "web" / "cgtaylor_draw.js").read_text()
    table = re.search(r"export const FULL_REASONS = Object\.freeze\(\{(.*?)\n\}\);", source, re.S).group(1)
    entries = re.findall(r'^\s*(\w+): \{ short: ("[^"]*"), long: ("[^"]*") \},$', table, re.M)
    assert len(entries) == len(table.strip().splitlines())  # every line of the table was read
    widget = {name: {"short": json.loads(short), "long": json.loads(long)} for name, short, long in entries}
    assert list(widget.items()) == list(FULL_REASONS.items())
