"""Render the README's benchmark summary, the other generated parts of the README and docs/, and
bench/results/table_full.md from bench/results/*.json.

    python -m bench.report      # after `python -m bench.run` and/or `python -m bench.gpu`

`make bench` calls this at its end, so the numbers in the README and docs/ always come from the
results files in the repository (tests/test_report.py checks that they do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cgtaylor_cache.core.calibration import COVERAGE
from cgtaylor_cache.core.stats import FULL_REASONS
from cgtaylor_cache.nodes.node import DEFAULTS

from .methods import CLOSER, FASTER, STOCHASTIC
from .plots import NAMES, _front
from .trace import DB_GAP, GAP, REFINEMENTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FULL_TABLES = RESULTS / "table_full.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
FAMILIES_START, FAMILIES_END = "<!-- families:start -->", "<!-- families:end -->"
MEMORY_START, MEMORY_END = "<!-- memory:start -->", "<!-- memory:end -->"
TIER_START, TIER_END = "<!-- real-tier:start -->", "<!-- real-tier:end -->"
SAMPLERS_START, SAMPLERS_END = "<!-- samplers:start -->", "<!-- samplers:end -->"
SWEEP_START, SWEEP_END = "<!-- comfyui-sweep:start -->", "<!-- comfyui-sweep:end -->"
TIER_RECORDS = ROOT / "tests" / "comfyui" / "results"  # written by tests/comfyui/conftest.py
# The file each generated part lives in, by its start marker: the README keeps the benchmark summary and
# the real tier's table, its docs/ pages the detail.
PLACES = {
    START: ROOT / "README.md",
    TIER_START: ROOT / "README.md",
    MEMORY_START: ROOT / "docs" / "memory.md",
    SAMPLERS_START: ROOT / "docs" / "compatibility.md",
    FAMILIES_START: ROOT / "docs" / "compatibility.md",
    SWEEP_START: ROOT / "docs" / "compatibility.md",
}


TABLE_HEAD = ("| method | setting | fewer blocks | speedup (CPU time) | PSNR dB | worst / p10 / mean image dB | SSIM | "
              "digit kept | cache / stream (hidden states) |\n|---|---|---|---|---|---|---|---|---|")
# The node default's block-ratio targets (least, most) at a step count, on the smooth trained models with
# the real block counts; at most 4x, the authors' range on real models (3.2x FLUX.1-dev, 4.1x Wan 2.1),
# because these models are smoother than real ones. Wan is run at 30 steps where FLUX is at 28.
STEP_TARGETS = {28: (2.0, None), 50: (2.5, 4.0)}
ALSO_AT = {28: 30}
TARGET_FAMILIES = ("flux_deep", "wan_deep")
MIN_DB = 40.0  # the node default's least PSNR against no cache on every run
DEFAULT_GAP_DB = 1.5  # ... and at most this far below the run's best CG-Taylor point at its speed
CAP_SHARE = 0.1  # the cap is a backstop: at most this share of the full calls after the warm-up
ROUGHNESS_SPAN = 10.0  # the benchmark's runs span at least this factor of one-step forecast misses


def point_row(p: dict, method: str | None = None) -> str:
    """One benchmark point as a table row; ``method`` overrides the method's name."""
    return (f"| {method or NAMES[p['method']]} | {p['label']} | {p['block_ratio']:.2f}x | {p['wall_speedup']:.2f}x | "
            f"{p['psnr']:.1f} | {_tails(p) or '—'} | {p['ssim']:.3f} | {p['accuracy']:.0%} | {p['cache_hidden_states']:.1f} |")


def _tails(p: dict) -> str:
    """A point's worst, 10th-percentile and mean image (dB), where it was measured per image."""
    images = p.get("images")
    return "" if images is None else " / ".join(f"{images[k]:.1f}" for k in ("worst", "p10", "mean"))


def _db(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} dB"


def evidence_line(family: str, data: dict) -> str:
    ev, info = data["evidence"], data.get("training", {})
    trained = (f"trained {info['steps']} steps ({float(info['seconds']) / 60:.0f} min, final loss {info['final_loss']}); "
               if "seconds" in info else "")
    return (f"**{family}** ({data['blocks']} blocks; {trained}{ev['accuracy_no_cache']:.0%} of uncached samples show "
            f"their digit). The last block's output moves {ev['trained']['step_change']:.1%} per step (random "
            f"initialisation: {ev['random_init']['step_change']:.1%}) and a linear forecast leaves "
            f"{ev['trained']['linear_error_over_change']:.2f} of that change unexplained (random initialisation: "
            f"{ev['random_init']['linear_error_over_change']:.2f}"
            f"{', worse than no forecast' if ev['random_init']['linear_error_over_change'] > 1 else ''}).")


def run_section(family: str, run: dict, report: dict) -> str:
    summary = run["summary"]
    lines = [f"*{family}, {run['sampler']}, {run['steps']} steps, cfg {report['cfg']}, {report['seeds']} seeds x 10 "
             f"digits* (an uncached run: {run['uncached_seconds']:.1f} CPU s):", "", TABLE_HEAD]
    for method in NAMES:
        front = [p for p in _front([p for p in run["points"] if p["method"] == method]) if p["block_ratio"] > 1.01]
        lines += [point_row(p) for p in front]
    lines.append(point_row(run["default"], "node default"))
    for name, title in DOCUMENTED.items():
        if name in run:
            lines.append(point_row(run[name], f"documented setting: {title}"))
    for ratio, at in summary["psnr_at"].items():
        lines.append(("" if ratio != next(iter(summary["psnr_at"])) else "\n") +
                     f"Best PSNR at {ratio}x or more fewer block evaluations: " +
                     ", ".join(f"{NAMES[m]} {_db(v)}" for m, v in at.items()) + ".")
    lines.append(f"CG-Taylor matches or beats {summary['cg_dominates_share']:.0%} of the other methods' points on both axes"
                 + (f"; not: {'; '.join(summary['unmatched'])}." if summary.get("unmatched") else "."))
    if run["default"]["notes"]:
        lines.append("Node default's notes: " + "; ".join(run["default"]["notes"]) + ".")
    best = summary["at_default"]["cg-taylor"]
    if best and best["label"] != run["default"]["label"]:
        twin = next(p for p in run["points"] if p["method"] == "cg-taylor" and p["label"] == best["label"])
        lines.append("Which steps were forecast (seed 0; F all calls, f some, . none), the node default and the run's "
                     f"best CG-Taylor point at its speed ({best['label']}):\n\n"
                     f"    {pattern(run['default'])}  default, {run['default']['psnr']:.1f} dB\n"
                     f"    {pattern(twin)}  best, {twin['psnr']:.1f} dB")
    return "\n".join(lines)


def same_ratio_spread(run: dict) -> str:
    """The PSNRs of the run's CG-Taylor settings that skipped exactly as many blocks as the default: how far
    apart settings with the same number of forecasts land, by which steps they forecast."""
    ratio = run["default"]["block_ratio"]
    same = sorted(p["psnr"] for p in run["points"]
                  if p["method"] == "cg-taylor" and abs(p["block_ratio"] / ratio - 1) < 1e-3)
    if len(same) < 2:
        return "no other CG-Taylor setting made as many forecasts"
    return f"the {len(same)} CG-Taylor settings with as many forecasts: {same[0]:.1f} to {same[-1]:.1f} dB"


def pattern(point: dict) -> str:
    """One character per step: F every call forecast, f some, . none (bench/runs.py ``forecast_pattern``)."""
    return point["pattern"]


def _verdict(ok: bool | None) -> str:
    return "not measurable" if ok is None else ("**met**" if ok else "**not met**")


@dataclass(frozen=True)
class Target:
    text: str
    ok: bool | None
    detail: str


def _where(family: str, run: dict) -> str:
    return f"{family} {run['sampler']} {run['steps']}"


def _each(checks: list[tuple[str, bool, str]]) -> tuple[bool | None, str]:
    """All of (where, ok, value) met? The details: every miss, or the count when none missed."""
    if not checks:
        return None, "no run measured it"
    misses = [f"{where}: {value}" for where, ok, value in checks if not ok]
    return not misses, ("missed at " + "; ".join(misses)) if misses else f"all {len(checks)} runs"


def targets(report: dict) -> list[Target]:
    """Every target of the benchmark with what was measured (each from one run of every method on the same noise)."""
    runs = list(_runs(report))
    euler = [(f, r) for f, r in runs if r["sampler"] == "euler"]
    deep = [(f, r) for f, r in euler if f in TARGET_FAMILIES]
    found = []

    def add(text: str, checks: list[tuple[str, bool, str]], extra: str = "") -> None:
        ok, detail = _each(checks)
        found.append(Target(text, ok, detail + extra))

    fmt = lambda p: f"{p['block_ratio']:.2f}x, {p['psnr']:.1f} dB"  # noqa: E731
    add("node default at least 40 dB (every model and step count, euler)",
        [(_where(f, r), r["default"]["psnr"] >= MIN_DB, fmt(r["default"])) for f, r in euler],
        f"; lowest {min(r['default']['psnr'] for _, r in euler):.1f} dB" if euler else "")
    add(f"node default within {DEFAULT_GAP_DB:g} dB of the run's best CG-Taylor point at its speed",
        [(_where(f, r), r["summary"]["default_below_best_db"] <= DEFAULT_GAP_DB,
          f"{r['summary']['default_below_best_db']:.1f} dB below; {same_ratio_spread(r)}") for f, r in euler],
        f"; largest gap {max(r['summary']['default_below_best_db'] for _, r in euler):.1f} dB" if euler else "")
    add(f"the cap forces at most {CAP_SHARE:.0%} of the full calls after the warm-up (node default, euler)",
        [(_where(f, r), (r["default"]["gate"]["cap_share"] or 0) <= CAP_SHARE,
          _share(r["default"]["gate"]["cap_share"])) for f, r in euler])
    for steps, (low, high) in STEP_TARGETS.items():
        add(f"node default at {steps} steps: at least {low:g}x" + (f" and at most {high:g}x" if high else "")
            + f" fewer block evaluations ({', '.join(TARGET_FAMILIES)})",
            [(_where(f, r), r["default"]["block_ratio"] >= low and (high is None or r["default"]["block_ratio"] <= high),
              fmt(r["default"])) for f, r in deep if r["steps"] in (steps, ALSO_AT.get(steps))])
    add("documented faster setting at least 3.5x at 35 dB or more (deep models, 50 steps)",
        [(_where(f, r), r["faster"]["block_ratio"] >= 3.5 and r["faster"]["psnr"] >= 35, fmt(r["faster"]))
         for f, r in deep if r["steps"] == 50 and "faster" in r])
    add("documented setting for noisy samplers at least 1.5x at 35 dB or more",
        [(_where(f, r), r["stochastic"]["block_ratio"] >= 1.5 and r["stochastic"]["psnr"] >= 35, fmt(r["stochastic"]))
         for f, r in runs if "stochastic" in r])
    judged = [(f, r) for f, r in euler if r["default"]["gate"]["coverage"] is not None]
    held = [r["default"]["gate"]["coverage"] for _, r in judged]
    found.append(Target(
        f"the calibration's prediction holds on at least {COVERAGE:.0%} of the judged full calls (node default, euler)",
        None if not held else sum(held) / len(held) >= COVERAGE,
        "no run measured it" if not held else f"{sum(held) / len(held):.0%} on average over {len(held)} runs, "
        f"lowest {min(held):.0%} ({_where(*min(judged, key=lambda fr: fr[1]['default']['gate']['coverage']))})"))
    exams = [(f, r, _exam(report, f, r)) for f, r in euler]
    add("where the gate rejects, the forecast would have missed by more than where it accepts (AUC above 0.5 in the "
        "gate's exam, `bench/gate_exam.py`; runs with both kinds of call)",
        [(_where(f, r), e["auc"] > 0.5, f"AUC {e['auc']:.2f}") for f, r, e in exams if e and e["auc"] is not None])
    rough = [(r["roughness"]["median"], _where(f, r)) for f, r in euler]
    if rough:
        (smooth, smooth_at), (coarse, coarse_at) = min(rough), max(rough)
        found.append(Target(f"the roughest run at least {ROUGHNESS_SPAN:g}x rougher than the smoothest",
                            coarse / smooth >= ROUGHNESS_SPAN,
                            f"{coarse / smooth:.0f}x: median one-step miss {coarse:.3f} ({coarse_at}) against "
                            f"{smooth:.4f} ({smooth_at})"))
    at_50 = [(f, r) for f, r in deep if r["steps"] == 50]
    add("CG-Taylor on or above every other method's curve (deep models, 50 steps)",
        [(_where(f, r), r["summary"]["cg_dominates_share"] == 1,
          f"{r['summary']['cg_dominates_share']:.0%} of their points; not: {'; '.join(r['summary']['unmatched'])}")
         for f, r in at_50])
    add("CG-Taylor at least 3 dB above TaylorSeer at 2.5x and 3x (deep models, 50 steps)",
        [(f"{_where(f, r)} at {ratio}x", gap is not None and gap >= 3,
          f"{_db(r['summary']['psnr_at'][ratio]['cg-taylor'])} against {_db(r['summary']['psnr_at'][ratio]['fixed-interval'])}")
         for f, r in at_50 for ratio, gap in r["summary"]["cg_minus_taylorseer_db"].items()])
    return found + issue_targets(report)


def issue_targets(report: dict) -> list[Target]:
    """The targets of every image at the default (bench/images.py) and of the speed targets (bench/targets.py),
    where they were measured."""
    from . import images_table, targets_table

    found = images_table.targets(report["images"]) if "images" in report else []
    found += targets_table.criteria(report["speed_targets"]) if "speed_targets" in report else []
    if "speed_targets" in report and "target_seeds" in report:
        found.append(targets_table.seed_criterion(report["speed_targets"], report["target_seeds"]))
    return [Target(*target) for target in found]


def issue_summaries(report: dict) -> list[str]:
    """The README's two tables of every image at the default and of the speed targets, where measured."""
    from . import images_table, targets_table

    parts = []
    if "images" in report:
        images = report["images"]
        parts.append(f"The node default on every image (`bench/images.py`: euler, cfg 1/3/5/8, Wan at shift 3 and 8, "
                     f"{images['images']} images per point, the held-out pair chose nothing): the worst / 10th "
                     "percentile image over every cfg and shift (dB against no cache; bold: under the issue's bounds "
                     "somewhere) and the range of fewer block evaluations.\n\n" + images_table.default_table(images))
    if "speed_targets" in report:
        speed = report["speed_targets"]
        parts.append(f"`target_speedup` (`bench/targets.py`: cfg {speed['cfg']:g}, 20/30/50 steps on flux_deep, "
                     "wan_deep and the held-out pair): how often the speed was reached, the node's median image, and "
                     "against each rival at the node's speed the node's median / worst image minus the rival's (dB, "
                     "median over the runs; BudCache and SoftCap at the speeds their schedules gave). The rivals: the "
                     "node's own gate at a fixed tolerance, TaylorSeer's fixed interval, and the 2026 budget-driven "
                     "schedulers reproduced from their papers, DPCache (arXiv 2602.22654), BudCache (2606.13496) and "
                     "SoftCap (2605.27075), all forecasting with the node's Taylor machinery.\n\n"
                     + targets_table.summary_table(speed))
        if "target_seeds" in report:
            parts.append(targets_table.seed_summary(speed, report["target_seeds"]))
    return parts


def issue_sections(report: dict) -> list[str]:
    """table_full.md's sections of every image at the default and of the speed targets, where measured."""
    from . import images_table, targets_table

    parts = []
    if "images" in report:
        parts.append("## Every image at the node's settings\n\n`python -m bench.images`. "
                     + images_table.full_table(report["images"]))
        parts += ["What moved the worst image, the run taken apart: " + line for line in images_table.causes(report["images"])]
    if "speed_targets" in report:
        parts.append("## Speed targets\n\n`python -m bench.targets`. " + targets_table.full_table(report["speed_targets"]))
        if "target_seeds" in report:
            parts.append("### On more seeds\n\n`python -m bench.target_seeds`. "
                         + targets_table.seed_table(report["speed_targets"], report["target_seeds"]))
    return parts


def targets_section(report: dict) -> str:
    return "Targets:\n\n" + "\n".join(f"- {t.text}: {_verdict(t.ok)} ({t.detail})." for t in targets(report))


def targets_table(report: dict) -> str:
    return "\n".join(["| target | result | measured |", "|---|---|---|",
                      *(f"| {t.text} | {_verdict(t.ok)} | {t.detail} |" for t in targets(report))])


def _changes(settings: dict) -> str:
    """The node inputs a documented setting changes from the default, as the README names them."""
    return ", ".join(f"`{name}` {str(value).lower() if isinstance(value, bool) else value}"
                     for name, value in settings.items() if DEFAULTS.get(name, False) != value)


DOCUMENTED = {"closer": "closer to no cache", "faster": "faster", "stochastic": "samplers that inject noise"}
SETTINGS = {"closer": CLOSER, "faster": FASTER, "stochastic": STOCHASTIC}


def _short(point: dict | None) -> str:
    if point is None:
        return "—"
    tails = _tails(point)
    return f"{point['block_ratio']:.2f}x, {point['psnr']:.1f}" + (f" ({tails})" if tails else "") + " dB"


def settings_table(report: dict) -> str:
    """The node's default and the README's documented choices, as measured on every model and run."""
    lines = ["| model, sampler, steps | default | " + " | ".join(f"{title} ({_changes(SETTINGS[name])})"
                                                        for name, title in DOCUMENTED.items()) + " |",
             "|---" * (2 + len(DOCUMENTED)) + "|"]
    for family, run in _runs(report):
        lines.append(f"| {family}, {run['sampler']} {run['steps']} | {_short(run['default'])} | "
                     + " | ".join(_short(run.get(name)) for name in DOCUMENTED) + " |")
    return "\n".join(lines)


def method_paragraph(report: dict) -> str:
    """How the figures were obtained, and what they do not show."""
    cpu_minutes = sum(r["cpu_seconds"] for d in report["families"].values() for r in d["runs"].values()) / 60
    return (f"Tiny models trained on scikit-learn's digits with the real block counts (FLUX.1's 19 double + 38 single "
            f"blocks, Wan 2.1 1.3B's 30 blocks; `wan_rough` is that Wan with noise in its timestep pathway, so its "
            f"features move unevenly from step to step; `qwen` has 6 blocks), sampled with cfg {report['cfg']} through the node's own adapter and "
            f"compared with the uncached model on the same noise ({report['seeds']} seeds x 10 digits per point, "
            f"`make bench`, {report['machine']['cpu']}, torch {report['machine']['torch']}, about {cpu_minutes:.0f} "
            "minutes of one core). Fewer blocks counts transformer block evaluations, the quantity caching saves; the "
            "speedup is the CPU time of one thread against the median of uncached timings taken through the run, and "
            "drifts by about ±20% on this shared machine. Every rival is shown at the node default's speed: its best "
            "point that skips at least as many blocks (each thresholded method's curve traced by one rule, "
            f"`bench/trace.py`). What this does not show: real models are far rougher than these tiny smooth ones "
            "(absolute PSNR here is much higher than on FLUX.1 or Wan; the comparison at equal speed is what carries "
            f"over), and {gpu_sentence()}")


def gpu_sentence() -> str:
    """What the GPU measured per call at real sizes (bench/results/gpu.json), or that nothing did."""
    path = RESULTS / "gpu.json"
    if not path.is_file():
        return "no GPU timings (`python -m bench.gpu` measures them on a GPU)."
    measured = "; ".join(
        f"{r['size']}: a forecast call {r['forecast_call_ms']:.1f} ms against {r['full_call_ms']:.1f} ms for a full "
        f"one, the gate and forecast {r['engine_pct_of_full_call']:.1f}% of a full call, {r['wall_speedup']:.2f}x wall "
        f"time at {r['block_ratio']:.2f}x fewer blocks" for r in json.loads(path.read_text()))
    device = json.loads(path.read_text())[0]["device"]
    return (f"the GPU only per call: on one {device} at real sizes with random weights (`python -m bench.gpu`, "
            f"[table_full.md](bench/results/table_full.md)) {measured}.")


def _cell(p: dict | None) -> str:
    if p is None:
        return "—"
    speed = f", {p['wall_speedup']:.2f}x" if "wall_speedup" in p else ""
    return f"{_short(p)}{speed}"


def _runs(report: dict):
    for family, data in report["families"].items():
        for run in data["runs"].values():
            yield family, run


def comparison_table(report: dict) -> str:
    """Per model and run: the node default, the documented settings, and every method at the default's speed."""
    at = lambda run, m: run["summary"]["at_default"][m]  # noqa: E731
    rivals = [m for m in NAMES if m != "cg-taylor"]
    lines = ["The node default and the documented settings (fewer block evaluations, PSNR over the batch against no "
             "cache, in brackets its worst / 10th percentile / mean image), and every method at the default's speed (the "
             "same, then the CPU-time speedup; — where a method never skipped that many blocks).", "",
             "| model, sampler, steps | node default | "
             + " | ".join(f"{title} ({_changes(SETTINGS[name])})" for name, title in DOCUMENTED.items())
             + " | best CG-Taylor setting at the default's speed | " + " | ".join(NAMES[m] for m in rivals) + " |",
             "|---" * (3 + len(DOCUMENTED) + len(rivals)) + "|"]
    for family, run in _runs(report):
        lines.append(f"| {family}, {run['sampler']} {run['steps']} | {_cell(run['default'])} | "
                     + "".join(f"{_short(run.get(name))} | " for name in DOCUMENTED)
                     + f"{_cell(at(run, 'cg-taylor'))} | " + " | ".join(_cell(at(run, m)) for m in rivals) + " |")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def gate_table(report: dict) -> str:
    """What the node default's gate decided per run, and how well (bench/gate.py)."""
    lines = ["What the node default's gate decided. Roughness: how far the last block's forecast misses one step ahead "
             "on the uncached run (order 2; min / median / max over the steps). Rejected: share of judged calls the "
             "gate sent to full compute. Held: share of judged full calls whose measured miss stayed within the "
             "prediction. Exam (`bench/gate_exam.py`: the default's engine replayed over uncached runs, where every "
             "block ran, so accepted forecasts can be checked too): the median miss of the forecasts it accepted and "
             "of those it rejected, and the AUC, the chance that a rejected call would have missed by more than an "
             "accepted one (1 = always, 0.5 = a coin).", "",
             "| model, sampler, steps | roughness | rejected | held | why calls were full | "
             "accepted: predicted miss (median, max) | full: measured miss (median, max) | exam: accepted / rejected "
             "miss, AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for family, run in _runs(report):
        r, g, e = run["roughness"], run["default"]["gate"], _exam(report, family, run)
        reasons = ", ".join(f"{n} {FULL_REASONS[k]['short']}" for k, n in g["full"].items()) or "—"
        exam = "—" if e is None else (f"{_number(e['accepted_miss_median'])} / {_number(e['rejected_miss_median'])}, "
                                       f"{_number(e['auc'])}")
        lines.append(f"| {family}, {run['sampler']} {run['steps']} | {r['min']:.3f} / {r['median']:.3f} / "
                     f"{r['max']:.3f} | {_share(g['rejection_share'])} | {_share(g['coverage'])} | {reasons} | "
                     f"{_number(g['predicted_accepted_median'])}, {_number(g['predicted_accepted_max'])} | "
                     f"{_number(g['measured_median'])}, {_number(g['measured_max'])} | {exam} |")
    return "\n".join(lines)


def results_section(report: dict) -> str:
    """The full per-setting tables (bench/results/table_full.md)."""
    parts = ["# Benchmark: every setting of every method", method_paragraph(report),
             "Each thresholded method is measured on its threshold grid, and then its curve's widest gaps are filled "
             f"by one rule for every method, blind to the others' points (a point between neighbours more than {GAP:g}x "
             f"or, both lossy, {DB_GAP:g} dB apart, at most {REFINEMENTS} per curve: `bench/trace.py`), so that no "
             "method wins or loses by where its grid fell. The tables show each method's best trade-offs (its points "
             "that no other point of the same method beats on both axes)."]
    for family, data in report["families"].items():
        parts.append(evidence_line(family, data))
        parts += [run_section(family, run, report) for run in data["runs"].values()]
    parts.append("The node's settings as measured here (fewer block evaluations, PSNR against no cache):\n\n"
                 + settings_table(report))
    parts.append(gate_table(report))
    parts += issue_sections(report)
    parts.append(targets_section(report))
    return "\n\n".join(parts)


def summary_section(report: dict) -> str:
    """The README's benchmark summary: every figure rendered from the committed results."""
    return "\n\n".join([
        method_paragraph(report), comparison_table(report), *issue_summaries(report), targets_table(report),
        "![Speed against fidelity per method](bench/results/pareto_full.png)\n\n"
        "![Samples without cache and with CG-Taylor at the node default](bench/results/samples_full.png)",
        "Every setting of every method, per run: [bench/results/table_full.md](bench/results/table_full.md).",
    ])


def gpu_section(results: list[dict]) -> str:
    lines = ["| size | device | full call | gate + forecast (engine) | forecast call | fewer blocks | wall speedup | wall / blocks | cache (bound) | TaylorSeer caches |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['device']} {r['dtype']} | {r['full_call_ms']:.1f} ms | "
            f"{r['engine_ms']:.2f} ms = {r['engine_pct_of_full_call']:.2f}% | "
            f"{r['forecast_call_ms']:.1f} ms | {r['block_ratio']:.2f}x | {r['wall_speedup']:.2f}x | {r['efficiency']:.0%} | "
            f"{r['cache_peak_mb']:.1f} MB ({r['cache_bound_mb']:.1f}) | {r['taylorseer_cache_mb']:.0f} MB |")
    peaks = [r for r in results if "gpu_peak_extra_offloaded_mb" in r]
    if peaks:
        lines += ["", "| size | GPU peak above the model: no node | node, cache on the GPU | node, cache offloaded | "
                  "offloading costs per forecast call | per full call |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['gpu_peak_extra_uncached_mb']:.0f} MB | {r['gpu_peak_extra_mb']:.0f} MB | "
                  f"{r['gpu_peak_extra_offloaded_mb']:.0f} MB | {r['offload_ms_per_forecast_call']:+.1f} ms | "
                  f"{r['offload_ms_per_full_call']:+.1f} ms |" for r in peaks]
    medium = [r for r in results if r["size"] == "medium"]
    if medium:
        m = medium[0]
        lines.append(f"\nTargets on the medium model: wall speedup at least 90% of the block ratio: "
                     f"{'met' if m['efficiency'] >= 0.9 else 'not met'} ({m['efficiency']:.0%}); gate + forecast under "
                     f"2% of a full call: {'met' if m['engine_pct_of_full_call'] < 2 else 'not met'} "
                     f"({m['engine_pct_of_full_call']:.2f}%).")
    return "\n".join(lines)


def offload_section(result: dict) -> str:
    """The engine's own work per call with the last block's cache on the device and offloaded (bench.gpu)."""
    rows = []
    for kind in ("forecast", "full"):
        rows.append(f"| {kind} call | {result[f'gpu_{kind}_ms']:.1f} ms ({result[f'gpu_{kind}_cpu_ms']:.1f} ms) | "
                    f"{result[f'cpu_{kind}_ms']:.1f} ms ({result[f'cpu_{kind}_cpu_ms']:.1f} ms) | "
                    f"{result[f'cpu_{kind}_moved_mb']:.0f} MB |")
    return (f"Offloading the last block's cache, {result['workload']}, {result['dtype']} on {result['device']} "
            "(`python -m bench.gpu --offload`; the engine's own work per call, wall time and the process's CPU "
            "time in brackets):\n\n| call | cache on the device | cache in host memory | copied |\n|---|---|---|---|\n"
            + "\n".join(rows)
            + ("\n\nHere the device is the CPU too, so the difference between the columns is what the copies cost the "
               "CPU; on a GPU the same script also times the transfers." if result["device"] == "cpu" else ""))


def gpu_sections() -> list[str]:
    parts = []
    for name, title in (("gpu.json", "On a GPU"), ("gpu_cpu.json", "Per-call cost on this CPU")):
        path = RESULTS / name
        if path.is_file():
            parts.append(f"{title} (`python -m bench.gpu`; random weights, the work per call does not depend on them):"
                         f"\n\n{gpu_section(json.loads(path.read_text()))}")
    for name in ("offload.json", "offload_cpu.json"):
        path = RESULTS / name
        if path.is_file():
            parts.append(offload_section(json.loads(path.read_text())))
    if not (RESULTS / "gpu.json").is_file():
        parts.append("No GPU was lent to the session that produced these results, so there are no GPU timings "
                     "here (FLUX.1-dev 1024x1024 and Wan 1.3B 832x480x33 shapes): `python -m bench.gpu` on a "
                     "CUDA machine measures them. Nothing here estimates them.")
    return parts


def _results() -> dict | None:
    """bench/results/full.json, with the gate's exam (bench/gate_exam.py) where it was taken."""
    full = RESULTS / "full.json"
    if not full.is_file():
        return None
    report = json.loads(full.read_text())
    for key, name in (("gate_exam", "gate_exam.json"), ("images", "images.json"), ("speed_targets", "targets.json"),
                       ("target_seeds", "target_seeds.json")):
        if (RESULTS / name).is_file():
            report[key] = json.loads((RESULTS / name).read_text())
    return report


def _exam(report: dict, family: str, run: dict) -> dict | None:
    """The gate's exam of one run: the misses of the calls it accepted and rejected, and their AUC."""
    return report.get("gate_exam", {}).get("runs", {}).get(f"{family} {run['sampler']}-{run['steps']}")


def section() -> str:
    """The README's benchmark section: the summary (the cache's memory is under "Memory")."""
    report = _results()
    return summary_section(report) if report else "No benchmark results yet: run `make bench`."


def full_tables() -> str:
    """bench/results/table_full.md: every setting of every method, the targets in detail, the per-call costs."""
    report = _results()
    return "\n\n".join(([results_section(report)] if report else []) + gate_sample_sections() + gpu_sections()) + "\n"


def gate_sample_sections() -> list[str]:
    """How the gate's decisions and the PSNR at equal speed depend on the share of block 0's tokens it reads."""
    from . import gate_subset

    path = RESULTS / "gate_subset.json"
    if not path.is_file():
        return []
    measured = json.loads(path.read_text())
    tokens = ", ".join(f"{family} {data['gate_tokens']}" for family, data in measured["families"].items())
    return [f"## The gate's token sample\n\n`python -m bench.gate_subset` ({measured['sampler']} {measured['steps']} steps, "
            f"{measured['seeds']} seeds; image tokens per call: {tokens}). Per share of block 0's tokens the gate reads, "
            "per model and cap: the share of steps decided as with every token, and the mean (worst) PSNR difference "
            "against the full gate at equal speed.\n\n" + gate_subset.summary_table(measured)]


def filled(text: str, start: str, end: str, content: str) -> str:
    """``text`` with ``content`` between its ``start`` and ``end`` markers."""
    if start not in text or end not in text:
        raise SystemExit(f"no {start} ... {end} markers to fill.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def families_section(measured: dict) -> str:
    """The two 2026 families' measurements (bench/results/families.json, tests/comfyui/measure_families.py)."""
    gate, animate = measured["minimax_h3_gate"], measured["wan_animate2_block_equivalents"]
    parts = gate["parts"]
    agreement = ", ".join(f"{part} {m['spearman']:.2f}" for part, m in parts.items())
    spread = ", ".join(f"{part} {m['log_ratio_spread']:.2f}" for part, m in parts.items())
    saved = {"none": "without pose video", "pose branch every call": "with the pose branch running",
             "WanAnimate2Cache filled": "with WanAnimate2Cache filled"}
    savings = "; ".join(f"{saved.get(name, name)} {c['forecast']:.1f} of {c['full']:.1f} ({c['saved']:.0%} saved)"
                        for name, c in animate["pose"].items())
    return (f"- MiniMax H3, ComfyUI's class with tiny random weights ({gate['seeds']} seeds x {gate['steps']} euler steps, "
            f"{gate['gated_calls']} gated calls): how block 0's error on each part of the sequence ranks the calls as the "
            f"last block's error does (Spearman): {agreement}; spread of log(last block's error / its): {spread}.\n"
            f"- Wan Animate 2 at its released size ({animate['blocks']} blocks, 480x832, 81 frames), a forecast call's "
            f"work against a full call's, in generation-block FLOP equivalents: {savings}.")


def real_tier_table(records: list[dict]) -> str:
    """The real tier's last recorded run per ComfyUI release, oldest release first."""
    def release(record: dict) -> tuple[int, ...]:
        return tuple(int(part) for part in record["release"].split("."))

    lines = ["| ComfyUI | commit | passed | skipped | failed | run on |", "|---|---|---|---|---|---|"]
    lines += [f"| v{r['release']} | {(r['commit'] or '?')[:8]} | {r['passed']} | {r['skipped']} | {r['failed'] + r['error']} | "
              f"{r['date']}, torch {r['torch']}, {r['seconds'] / 60:.0f} min |" for r in sorted(records, key=release)]
    return "\n".join(lines)


def generated_parts() -> dict[tuple[str, str], str]:
    """Every generated part by its start and end markers, rendered from the committed results (a part whose
    results are absent is left out, and keeps what its file holds)."""
    from . import comfyui_sweep_report, memory, samplers

    parts = {(START, END): section(), (MEMORY_START, MEMORY_END): memory.table()}
    records = [json.loads(path.read_text()) for path in sorted(TIER_RECORDS.glob("*.json"))]
    if records:
        parts[TIER_START, TIER_END] = real_tier_table(records)
    families = RESULTS / "families.json"
    if families.is_file():
        parts[FAMILIES_START, FAMILIES_END] = families_section(json.loads(families.read_text()))
    if samplers.OUT.is_file():
        parts[SAMPLERS_START, SAMPLERS_END] = samplers.table(json.loads(samplers.OUT.read_text()))
    if comfyui_sweep_report.OUT.is_file():
        parts[SWEEP_START, SWEEP_END] = comfyui_sweep_report.section(json.loads(comfyui_sweep_report.OUT.read_text()))
    return parts


def with_results(texts: dict[Path, str]) -> dict[Path, str]:
    """The texts of the files in PLACES with every generated part rendered from the committed results."""
    texts = dict(texts)
    for (start, end), content in generated_parts().items():
        texts[PLACES[start]] = filled(texts[PLACES[start]], start, end, content)
    return texts


def published() -> dict[Path, str]:
    """The files that hold generated parts, as they are now."""
    return {path: path.read_text() for path in sorted(set(PLACES.values()))}


def publish() -> None:
    """Rewrite the generated parts of the README and docs/, and bench/results/table_full.md, from the committed results."""
    for path, text in with_results(published()).items():
        path.write_text(text)
    FULL_TABLES.write_text(full_tables())
    print(f"updated the generated parts of {', '.join(str(p.relative_to(ROOT)) for p in published())} and {FULL_TABLES}")


if __name__ == "__main__":
    publish()
