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

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
LOWER_TOLERANCES = (0.1, 0.05)
SHOWN_STEPS = 3  # the steps that moved the image most, in the diagnosis
# No step to restart from: dpm_fast and dpm_adaptive integrate at sigmas of their own, uni_pc's callback hands
# out its own (noise-scaled) state after the step (comfy/extra_samplers/uni_pc.py ``UniPC.sample``).
NO_STEP_SAMPLERS = ("dpm_fast", "dpm_adaptive", "uni_pc", "uni_pc_bh2")


def single(conditioning: list, index: int) -> list:
    """One image's conditioning out of a batch's."""
    return [[c[index : index + 1], {k: v[index : index + 1] for k, v in extra.items()}] for c, extra in conditioning]


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

    model = sampling.model(point.shift)
    sigma = float(comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", point.steps)[step])
    latent = start[index : index + 1] / (1.0 - sigma)  # what KSamplerAdvanced hands on with leftover noise
    with torch.inference_mode():
        return comfy.sample.sample(model, torch.zeros_like(latent), point.steps, point.cfg, point.sampler, "simple",
                                   single(sampling.positive, index), single(sampling.negative, index), latent,
                                   start_step=step, last_step=point.steps, force_full_denoise=True, disable_noise=True,
                                   disable_pbar=True, seed=seed)


def moved_by_step(sampling: Any, point: Any, row: dict) -> dict:
    """The worst image's PSNR when finished without the node from each step, and the steps where it fell most."""
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
    falls = []
    for step in range(point.steps):
        before, after = at[step], at[step + 1]
        fall = (before - after) if math.isfinite(before) else (math.inf if math.isfinite(after) else 0.0)
        record = records.get(step, {})
        falls.append({"step": step, "to_db": round(after, 2) if math.isfinite(after) else None,
                      "fall_db": round(fall, 2) if math.isfinite(fall) else None, "forecast": record.get("forecast", 0),
                      "predicted": _round(record.get("predicted")), "spent": _round(record.get("spent")),
                      "weight": record.get("weight", 1.0), "gain": record.get("gain", 1.0)})
    ranked = sorted(falls, key=lambda f: -(f["fall_db"] if f["fall_db"] is not None else 1e9))
    diagnosis["steps"] = ranked[:SHOWN_STEPS]
    diagnosis["forecast_steps"] = [f["step"] for f in falls if f["forecast"]]
    return diagnosis


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def at_lower_tolerances(sampling: Any, point: Any) -> dict:
    """The whole point again at each of LOWER_TOLERANCES: worst, 10th percentile, images under 40 dB, blocks."""
    from bench.comfyui_sweep import SEEDS, per_image_psnr, percentile

    model = sampling.model(point.shift)
    out = {}
    for tolerance in LOWER_TOLERANCES:
        cached = sampling.with_node(model, unique_id="diagnose", tolerance=tolerance)
        psnrs, ratios = [], []
        for seed in SEEDS:
            reference, _, _ = sampling.sample(model, point, seed)
            test, _, payload = sampling.sample(cached, point, seed)
            psnrs += per_image_psnr(sampling.images(test), sampling.images(reference))
            ratios.append(payload["totals"]["block_ratio"])
        out[f"{tolerance:g}"] = {"worst": _db(min(psnrs)), "p10": _db(percentile(psnrs, 0.1)),
                                 "under_40": sum(v < 40 for v in psnrs), "block_ratio": round(sorted(ratios)[len(ratios) // 2], 3)}
    return out


def _db(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def cause(row: dict, diagnosis: dict) -> str:
    """The diagnosis in a sentence for the report."""
    image = diagnosis["image"]
    parts = [f"Its worst image (seed {image['seed']}, digit {image['digit']})"]
    steps = diagnosis.get("steps")
    if steps:
        top = steps[0]
        what = (f"a forecast (guided miss predicted {top['predicted']:.3g}, the run's forecasts before it had spent "
                f"{top['spent'] or 0:.3g}, step weight {top['weight']:g}, gain {top['gain']:g})" if top["forecast"]
                else "a full call after forecasts")
        parts.append(f" fell {top['fall_db']:.1f} dB at step {top['step']}, {what}; the next largest falls: "
                     + ", ".join(f"step {s['step']} {s['fall_db']:.1f} dB" for s in steps[1:] if s["fall_db"] is not None))
    else:
        parts.append(" cannot be traced step by step (the sampler integrates at sigmas of its own)")
    lower = "; ".join(f"tolerance {t}: worst {_text(r['worst'])} dB, {r['under_40']} under 40 dB, {r['block_ratio']:.2f}x"
                      for t, r in diagnosis["tolerances"].items())
    return "".join(parts) + f". At {lower}."


def _text(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def main() -> None:
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    # ComfyUI's checkout first (its comfy_api, not the bench's stand-in, when `bench` is imported), this one last.
    sys.path[:0], sys.path[len(sys.path):] = [str(root)], [str(ROOT)]
    from bench.comfyui_sweep import Point, Sampling, boot, point_key, write

    import torch

    torch.set_num_threads(1)
    results_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "comfyui_sweep.json"
    results = json.loads(results_path.read_text())
    with tempfile.TemporaryDirectory(prefix="cgtaylor-diagnose-") as workdir:
        comfy = boot(root, Path(workdir))
        import comfy.utils as comfy_utils

        from bench.comfyui_sweep_report import meets_images

        comfy_utils.PROGRESS_BAR_ENABLED = False
        samplings: dict[str, Any] = {}
        diagnoses = []
        for row in results["points"]:
            if meets_images(row):
                continue
            point = Point(*point_key(row))
            if point.family not in samplings:
                samplings[point.family] = Sampling(comfy, point.family)
            sampling = samplings[point.family]
            diagnosis = moved_by_step(sampling, point, row)
            diagnosis["tolerances"] = at_lower_tolerances(sampling, point)
            diagnosis.update({k: row[k] for k in ("model", "sampler", "steps", "cfg", "shift")})
            diagnosis["cause"] = cause(row, diagnosis)
            diagnoses.append(diagnosis)
            print(f"{point}: {diagnosis['cause']}", flush=True)
    results["diagnoses"] = diagnoses
    write(results, results_path)
    print(f"wrote {len(diagnoses)} diagnoses into {results_path}")


if __name__ == "__main__":
    main()
