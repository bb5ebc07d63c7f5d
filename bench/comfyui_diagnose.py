"""Why a point of the real-ComfyUI sweep misses issue 31's image target: which step moved its worst image, what
the gate predicted there, and whether a lower tolerance keeps the image.

    COMFYUI_PATH=<checkout> OMP_NUM_THREADS=1 <checkout>/.venv/bin/python bench/comfyui_diagnose.py

For each point of bench/results/comfyui_sweep.json that misses (bench/comfyui_sweep_report.py), the run holding
its worst image is sampled again, with the node and without, through ComfyUI's own sampler, and both runs' latents
are kept at every step (the sampler's callback: the latent a step starts from). The worst image is then finished
without the node from each step's latent of either run: how far the two finished images are apart, restarted at
step k, is what the node's calls before step k did to the image, so the fall from one step to the next is what
that step's calls did (restarting both runs keeps a multistep sampler's restart alike on both sides). The step
record of the node's payload says what the gate predicted there. The whole point is sampled again at lower
tolerances. The diagnoses are written into the results file, which the report renders next to each miss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
LOWER_TOLERANCES = (0.1, 0.05)  # tried on a point that misses the image target
HIGHER_TOLERANCES = (0.4, 0.8)  # and on one that misses the speed target, with the speed asked for (target_speedup)
SHOWN_STEPS = 3  # the steps that moved the image most, in the diagnosis
# No step to restart from: dpm_fast and dpm_adaptive integrate at sigmas of their own, uni_pc's callback hands
# out its own (noise-scaled) state after the step (comfy/extra_samplers/uni_pc.py ``UniPC.sample``).
NO_STEP_SAMPLERS = ("dpm_fast", "dpm_adaptive", "uni_pc", "uni_pc_bh2")


def trajectory(sampling: Any, model: Any, point: Any, seed: int) -> tuple[Any, list, dict | None]:
    """The samples, the latent each step started from, and the node's payload (ComfyUI's sample(), as KSampler calls
    it, with a callback)."""
    import comfy.sample
    import torch

    latent = sampling.latent()["samples"]
    noise = comfy.sample.prepare_noise(latent, seed)
    steps: list = []
    first = len(sampling.comfy.events)
    with torch.inference_mode():
        out = comfy.sample.sample(model, noise, point.steps, point.cfg, point.sampler, "simple", sampling.positive,
                                  sampling.negative, latent, callback=lambda i, x0, x, total: steps.append(x.clone()),
                                  disable_pbar=True, seed=seed)
    payloads = sampling.comfy.payloads_since(first)
    return out, steps, (payloads[-1] if payloads else None)


def finish(sampling: Any, point: Any, start: Any, step: int, index: int, seed: int) -> Any:
    """Image ``index`` finished without the node from ``start``, the latent step ``step`` began with."""
    import comfy.sample
    import comfy.samplers
    import torch

    from bench.comfyui_sweep import one

    model = sampling.model(point.shift)
    sigma = float(comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", point.steps)[step])
    latent = start[index : index + 1] / (1.0 - sigma)  # what KSamplerAdvanced hands on with leftover noise
    with torch.inference_mode():
        return comfy.sample.sample(model, torch.zeros_like(latent), point.steps, point.cfg, point.sampler, "simple",
                                   one(sampling.positive, index), one(sampling.negative, index), latent,
                                   start_step=step, last_step=point.steps, force_full_denoise=True, disable_noise=True,
                                   disable_pbar=True, seed=seed)


def moved_by_step(sampling: Any, point: Any, row: dict) -> dict:
    """The worst image's PSNR when finished without the node after each step, and the steps that brought the largest
    shares of its final squared error."""
    from bench.comfyui_sweep import SEEDS, per_image_psnr

    worst_at = min(range(len(row["psnr"])), key=lambda i: row["psnr"][i] if row["psnr"][i] is not None else math.inf)
    seed, index = SEEDS[worst_at // sampling.batch], worst_at % sampling.batch
    model = sampling.model(point.shift)
    cached = sampling.with_node(model, unique_id="diagnose")
    test, test_steps, payload = trajectory(sampling, cached, point, seed)
    reference, reference_steps, _ = trajectory(sampling, model, point, seed)
    again = per_image_psnr(sampling.images(test), sampling.images(reference))[index]
    diagnosis = {"image": {"seed": seed, "digit": index}, "psnr": round(again, 2)}
    if point.sampler in NO_STEP_SAMPLERS or len(test_steps) != point.steps:
        return diagnosis
    at = [math.inf]  # finished from step 0: the same noise, the same image
    for step in range(1, point.steps):
        finished = [finish(sampling, point, steps[step], step, index, seed) for steps in (test_steps, reference_steps)]
        at.append(per_image_psnr(sampling.images(finished[0]), sampling.images(finished[1]))[0])
    at.append(again)
    records = {record["step"]: record for record in payload["steps"]}
    error = [10 ** (-db / 10) if math.isfinite(db) else 0.0 for db in at]  # squared error, the peak being 1
    falls = []
    for step in range(point.steps):
        record = records.get(step, {})
        share = (error[step + 1] - error[step]) / error[-1] if error[-1] else 0.0
        falls.append({"step": step, "to_db": _db(at[step + 1]), "share": round(share, 3),
                      "forecast": record.get("forecast", 0), "predicted": _round(record.get("predicted")),
                      "spent": _round(record.get("spent")), "weight": record.get("weight", 1.0),
                      "gain": record.get("gain", 1.0)})
    ranked = sorted(falls, key=lambda f: -f["share"])
    diagnosis["falls"] = ranked[:SHOWN_STEPS]
    diagnosis["forecast_steps"] = [f["step"] for f in falls if f["forecast"]]
    return diagnosis


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def at_settings(sampling: Any, point: Any, settings: dict) -> dict:
    """The whole point again with the node at ``settings``: worst, 10th percentile, images under 40 dB, blocks, and
    why its full calls were full (summed over the runs)."""
    from bench.comfyui_sweep import SEEDS, per_image_psnr, percentile

    model = sampling.model(point.shift)
    cached = sampling.with_node(model, unique_id="diagnose", **settings)
    psnrs, ratios, reasons = [], [], {}
    for seed in SEEDS:
        reference, _, _ = sampling.sample(model, point, seed)
        test, _, payload = sampling.sample(cached, point, seed)
        psnrs += per_image_psnr(sampling.images(test), sampling.images(reference))
        ratios.append(payload["totals"]["block_ratio"])
        for reason, count in payload["totals"]["full"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return {"worst": _db(min(psnrs)), "p10": _db(percentile(psnrs, 0.1)), "under_40": sum(v < 40 for v in psnrs),
            "block_ratio": round(sorted(ratios)[len(ratios) // 2], 3), "full": reasons}


def _db(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def cause(row: dict, diagnosis: dict) -> str:
    """The diagnosis in a sentence for the report."""
    image = diagnosis["image"]
    parts = [f"Its worst image (seed {image['seed']}, digit {image['digit']})"]
    steps = diagnosis.get("falls")
    if steps:
        top = steps[0]
        what = (f"a forecast (guided miss predicted {_number(top['predicted'])}, the run's forecasts before it had "
                f"spent {_number(top['spent'] or 0)}, step weight {top['weight']:g}, gain {top['gain']:g})"
                if top["forecast"] else "a step computed in full (what the forecasts before it left grew there)")
        parts.append(f" took {top['share']:.0%} of its final error at step {top['step']} (finished from there: "
                     f"{_text(top['to_db'])}), {what}; next: "
                     + ", ".join(f"step {s['step']} {s['share']:.0%}" for s in steps[1:]))
    else:
        parts.append(" cannot be traced step by step (this sampler's steps cannot be restarted from outside)")
    return "".join(parts) + f". {settings_text(diagnosis['settings'])}."


def settings_text(settings: dict) -> str:
    return "At " + "; ".join(f"{name}: worst {_text(r['worst'])}, {r['under_40']} under 40 dB, {r['block_ratio']:.2f}x"
                             for name, r in settings.items())


def speed_cause(diagnosis: dict) -> str:
    """Why the default stays under the speed target, in a sentence: its full calls by reason, then what faster
    settings give."""
    default = diagnosis["settings"]["default"]
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(default["full"].items(), key=lambda r: -r[1]))
    faster = {name: r for name, r in diagnosis["settings"].items() if name != "default"}
    return f"Full calls of the default's runs: {reasons}. {settings_text(faster)}."


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _text(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f} dB"


def main() -> None:
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    # ComfyUI's checkout first (its comfy_api, not the bench's stand-in, when `bench` is imported), this one last.
    sys.path[:0], sys.path[len(sys.path):] = [str(root)], [str(ROOT)]
    from bench.comfyui_sweep import Point, Sampling, boot, point_key, write

    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="?", default=ROOT / "bench" / "results" / "comfyui_sweep.json")
    parser.add_argument("--misses", choices=("all", "images", "speed"), default="all", help="which misses to diagnose")
    args = parser.parse_args()
    results_path = args.results
    results = json.loads(results_path.read_text())
    with tempfile.TemporaryDirectory(prefix="cgtaylor-diagnose-") as workdir:
        comfy = boot(root, Path(workdir))
        import comfy.utils as comfy_utils

        from bench.comfyui_sweep_report import SPEED_TARGETS, meets_images, meets_speed, speed_points

        comfy_utils.PROGRESS_BAR_ENABLED = False
        samplings: dict[str, Any] = {}

        def sampling_of(point: Any) -> Any:
            if point.family not in samplings:
                samplings[point.family] = Sampling(comfy, point.family)
            return samplings[point.family]

        diagnoses, slow = [], []
        for row in results["points"]:
            if meets_images(row) or args.misses == "speed":
                continue
            point = Point(*point_key(row))
            diagnosis = moved_by_step(sampling_of(point), point, row)
            diagnosis["settings"] = {f"tolerance {t:g}": at_settings(sampling_of(point), point, {"tolerance": t})
                                     for t in LOWER_TOLERANCES}
            diagnosis.update({k: row[k] for k in ("model", "sampler", "steps", "cfg", "shift")})
            diagnosis["cause"] = cause(row, diagnosis)
            diagnoses.append(diagnosis)
            print(f"{point}: {diagnosis['cause']}", flush=True)
        for row in speed_points(results):
            if meets_speed(row) or args.misses == "images":
                continue
            point = Point(*point_key(row))
            tries = {"default": {}, **{f"tolerance {t:g}": {"tolerance": t} for t in HIGHER_TOLERANCES},
                     f"target_speedup {SPEED_TARGETS[point.steps]:g}": {"target_speedup": SPEED_TARGETS[point.steps]}}
            diagnosis = {k: row[k] for k in ("model", "sampler", "steps", "cfg", "shift")}
            diagnosis["settings"] = {name: at_settings(sampling_of(point), point, s) for name, s in tries.items()}
            diagnosis["cause"] = speed_cause(diagnosis)
            slow.append(diagnosis)
            print(f"{point}: {diagnosis['cause']}", flush=True)
    if args.misses != "speed":
        results["diagnoses"] = diagnoses
    if args.misses != "images":
        results["speed_diagnoses"] = slow
    write(results, results_path)
    print(f"wrote the diagnoses into {results_path}")


if __name__ == "__main__":
    main()
