"""The real-ComfyUI sweep (bench/comfyui_sweep.py) as docs/compatibility.md shows it, judged against issue 31's targets.

Rendered from bench/results/comfyui_sweep.json by ``python -m bench.report``; the first lines are the summary the
README can quote. A point meets the image target when every image is at least TARGET_WORST dB from its uncached
twin and at least TARGET_SHARE_40 of them at least 40 dB; a deep model at cfg 3 meets the speed target when its
block ratio is at least SPEED_TARGETS at 30 and 50 steps (the bench's targets are block ratios too).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "comfyui_sweep.json"
TARGET_WORST, TARGET_SHARE_40 = 35.0, 0.9
SPEED_TARGETS = {30: 2.0, 50: 2.5}  # block ratio at the bench's usual cfg
SPEED_CFG = 3.0
SHALLOW = ("qwen",)  # six blocks: the speed target is the deep layouts'


def meets_images(point: dict) -> bool:
    worst = point["worst"] if point["worst"] is not None else float("inf")  # null: every image exact
    return worst >= TARGET_WORST and point["images"] - point["under_40"] >= TARGET_SHARE_40 * point["images"]


def speed_points(results: dict) -> list[dict]:
    return [p for p in results["points"] if p["sampler"] == "euler" and p["cfg"] == SPEED_CFG
            and p["steps"] in SPEED_TARGETS and p["model"] not in SHALLOW]


def meets_speed(point: dict) -> bool:
    return point["block_ratio"] >= SPEED_TARGETS[point["steps"]]


def _db(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def _where(p: dict) -> str:
    return f"{p['model']} shift {p['shift']:g}, {p['sampler']} {p['steps']} steps cfg {p['cfg']:g}"


def _config(p: dict) -> str:
    return f"{p['model']} {p['shift']:g}"


def summary(results: dict) -> str:
    """Two or three lines: how many points and images meet the image target, the worst image, the speed target."""
    points = results["points"]
    images = sum(p["images"] for p in points)
    missed = [p for p in points if not meets_images(p)]
    worst = min(points, key=lambda p: p["worst"] if p["worst"] is not None else float("inf"))
    under_35 = sum(p["under_35"] for p in points)
    under_40 = sum(p["under_40"] for p in points)
    speed = speed_points(results)
    slow = [p for p in speed if not meets_speed(p)]
    ratios = {steps: [p["block_ratio"] for p in speed if p["steps"] == steps] for steps in SPEED_TARGETS}
    span = "; ".join(f"{steps} steps {min(r):.2f}-{max(r):.2f}x" for steps, r in ratios.items() if r)
    comfy = results["comfyui"]
    speed_line = (f"\nBlocks saved at cfg {SPEED_CFG:g} on the deep models: {span} (target {SPEED_TARGETS[30]:g}x at 30, "
                  f"{SPEED_TARGETS[50]:g}x at 50 steps): {len(speed) - len(slow)} of {len(speed)} points meet it."
                  if speed else "")
    stopped = "" if results.get("complete") else " The sweep stopped before its end: what is not listed was not measured."
    return (f"In ComfyUI v{comfy['release']}, the default on {coverage(results)}, {len(points)} points, {images} images: "
            f"{len(points) - len(missed)} of {len(points)} points keep every image >= "
            f"{TARGET_WORST:g} dB and 90% >= 40 dB; {under_35} images are under {TARGET_WORST:g} dB and {under_40} "
            f"under 40 dB; the worst is {_db(worst['worst'])} dB ({_where(worst)}).{stopped}{speed_line}")


def coverage(results: dict) -> str:
    """What the sweep sampled, read from its points: a sweep stopped early claims no more than it measured."""
    points = results["points"]
    models = list(dict.fromkeys(p["model"] for p in points))
    samplers = {p["sampler"] for p in points} - {"euler"}
    sampled = [m for m in models if any(p["model"] == m and p["sampler"] != "euler" for p in points)]
    return (f"{len(models)} trained models (euler at 12-50 steps and cfg 1-8, Wan at shift 3 and 8; "
            f"{len(samplers) + 1} of the {len(results['deterministic_samplers'])} deterministic samplers at 20 and 30 steps "
            f"on {', '.join(sampled) or 'none'})")


def euler_table(results: dict) -> str:
    """Euler's grid: a row per model, shift and step count, a column per cfg; worst image / 10th percentile, blocks."""
    cells: dict[tuple, dict] = {}
    cfgs = sorted({p["cfg"] for p in results["points"] if p["sampler"] == "euler"})
    for p in results["points"]:
        if p["sampler"] == "euler":
            cells[(_config(p), p["steps"], p["cfg"])] = p
    rows = sorted({key[:2] for key in cells}, key=lambda key: (_order(results, key[0]), key[1]))
    lines = ["| model, shift | steps | " + " | ".join(f"cfg {c:g}" for c in cfgs) + " |",
             "|---|---|" + "---|" * len(cfgs)]
    for config, steps in rows:
        row = [_cell(cells.get((config, steps, c))) for c in cfgs]
        lines.append(f"| {config} | {steps} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _order(results: dict, config: str) -> int:
    configs = list(dict.fromkeys(_config(p) for p in results["points"]))
    return configs.index(config)


def _cell(p: dict | None) -> str:
    if p is None:
        return ""
    mark = "" if meets_images(p) else " **x**"
    return f"{_db(p['worst'])} / {_db(p['p10'])} · {p['block_ratio']:.2f}x{mark}"


def sampler_table(results: dict) -> str:
    """Every sampler at cfg 4: a row per sampler and step count, a column per model and shift."""
    cells = {(p["sampler"], p["steps"], _config(p)): p for p in results["points"] if p["cfg"] == 4.0}
    configs = sorted({key[2] for key in cells}, key=lambda c: _order(results, c))
    samplers = [s for s in results["deterministic_samplers"] if any(key[0] == s for key in cells)]
    steps = sorted({key[1] for key in cells})
    lines = ["| sampler | steps | " + " | ".join(configs) + " |", "|---|---|" + "---|" * len(configs)]
    for sampler in samplers:
        for n in steps:
            lines.append(f"| {sampler} | {n} | " + " | ".join(_cell(cells.get((sampler, n, c))) for c in configs) + " |")
    return "\n".join(lines)


def misses(results: dict) -> str:
    """Each point that misses a target, worst first, with what its diagnosis measured where there is one."""
    diagnosed = {_diagnosis_key(d): d for d in results.get("diagnoses", [])}
    image_misses = sorted((p for p in results["points"] if not meets_images(p)),
                          key=lambda p: p["worst"] if p["worst"] is not None else float("inf"))
    lines = []
    for p in image_misses:
        line = (f"- {_where(p)}: worst {_db(p['worst'])} dB, {p['under_40']} of {p['images']} under 40 dB, "
                f"blocks {p['block_ratio']:.2f}x")
        cause = diagnosed.get(_diagnosis_key(p))
        lines.append(line + (f". {cause['cause']}" if cause else ""))
    slow_causes = {_diagnosis_key(d): d for d in results.get("speed_diagnoses", [])}
    for p in speed_points(results):
        if not meets_speed(p):
            cause = slow_causes.get(_diagnosis_key(p))
            lines.append(f"- {_where(p)}: blocks {p['block_ratio']:.2f}x, under the {SPEED_TARGETS[p['steps']]:g}x target "
                         f"(CPU time {p['speed']:.2f}x)" + (f". {cause['cause']}" if cause else ""))
    return "\n".join(lines) if lines else "- none"


def _diagnosis_key(row: dict) -> tuple:
    return (row["model"], row["sampler"], row["steps"], row["cfg"], row["shift"])


def section(results: dict) -> str:
    comfy = results["comfyui"]
    same = max(results["same_output"].values())
    excluded = defaultdict(list)
    for name, why in results["excluded_samplers"].items():
        excluded[why].append(name)
    return "\n".join([
        summary(results),
        "",
        f"Measured by `bench/comfyui_sweep.py` in ComfyUI v{comfy['release']} ({(comfy['commit'] or '?')[:8]}, torch "
        f"{comfy['torch']}) on the pack at {results['pack']}: each trained model built as ComfyUI's own class with the "
        f"bench's weights (their outputs agree to {same:.0e} of the velocity), sampled by the stock KSampler "
        f"(`{results['scheduler']}` schedule; Wan's shift set by ModelSamplingSD3, FLUX's and Qwen-Image's the "
        f"config's own), {results['images_per_point']} images a point (the ten digits x {len(results['seeds'])} seeds, "
        f"batch {results['batch']}), CGTaylorCache at its defaults against the same graph without it. A cell is worst "
        f"image / 10th percentile in dB (PSNR per decoded image; exact: identical) · the node's block ratio (median "
        f"over runs); **x**: the point misses the image target. The held-out pair ({', '.join(results['holdout'])}) "
        "chose nothing.",
        "",
        "Euler:",
        "",
        euler_table(results),
        "",
        "Every deterministic sampler, cfg 4:",
        "",
        sampler_table(results),
        "",
        "Points that miss a target:",
        "",
        misses(results),
        "",
        "Left out, because they add fresh noise (measured: the same starting noise gives another sample under another "
        "seed): " + "; ".join(f"{', '.join(names)}: {why.split(':', 1)[-1].strip()}" for why, names in excluded.items())
        + ".",
    ])
