"""The node at its defaults on the bench's trained models, sampled by a real ComfyUI: per image, per sampler.

    COMFYUI_PATH=<checkout> OMP_NUM_THREADS=1 <checkout>/.venv/bin/python bench/comfyui_sweep.py [--time]

The bench samples through stand-ins of ComfyUI's samplers; this runs ComfyUI's own. Each trained model
(bench/comfyui_models.py: ComfyUI's class, the bench's weights, the same output proved first) is sampled by
the stock KSampler node, shift set the way ComfyUI's nodes set it (Wan: ModelSamplingSD3 at 8, the Wan
config's default, and at 3, the bench's; FLUX and Qwen-Image: their configs' own model sampling), with the
pack's node at its defaults (loaded by ComfyUI's custom-node loader, run as the executor runs a V3 node)
against the same graph without it. Every image is measured against its uncached twin with the bench's
PSNR (bench/measures.py) on the decoded digits; block ratios and sampler gains come from the node's
websocket payload (``cgtaylor.stats``). Time is process CPU time on one thread.

Points: every sampler of this ComfyUI that is deterministic (measured: the same noise gives the same sample
whatever the sampler's seed; the rest inject noise and are listed with the reason) at 20 and 30 steps, cfg 4;
and euler at 12/20/30/50 steps and cfg 1, 3, 5, 8. Writes bench/results/comfyui_sweep.json (``--time``:
one point per model, to size the run, written nowhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "comfyui_sweep.json"
FAMILIES = ("flux_deep", "wan_deep", "wan_rough", "qwen", "flux_holdout", "wan_holdout_rough")
WAN_SHIFTS = (8.0, 3.0)  # ComfyUI's WAN21 config default, and the bench's
SAMPLER_STEPS, SAMPLER_CFG = (20, 30), 4.0
EULER_STEPS, EULER_CFGS = (12, 20, 30, 50), (1.0, 3.0, 5.0, 8.0)
SEEDS = (0, 1)  # one run per seed, the ten digit classes in a batch: 20 images a point
SCHEDULER = "simple"
# Why a sampler that the measurement finds stochastic is, by its name (comfy/k_diffusion/sampling.py).
NOISE_REASONS = (
    ("ancestral", "ancestral: adds fresh noise after every step"),
    ("er_sde", "ER-SDE: stochastic by default (s_noise 1)"),
    ("sde", "SDE solver: adds Brownian noise every step"),
    ("lcm", "LCM: re-noises the denoised sample every step"),
    ("ddpm", "DDPM: samples the posterior, fresh noise every step"),
    ("seeds", "SEEDS: stochastic by default (eta 1)"),
    ("sa_solver", "SA-Solver: stochastic Adams steps (tau 1 in the middle of the schedule)"),
)
NOTE_CHARS = 90  # a note's first clause says which it is; the whole of it is in the node's log
SAVE_EVERY = 10  # points between two writes of the results so far (a run stopped half way keeps them)


def boot(root: Path, workdir: Path) -> Any:
    """ComfyUI imported as main.py imports it, with the pack loaded from a custom_nodes folder by ComfyUI's own
    loader, and every websocket event recorded (tests/comfyui/conftest.py boots it the same way)."""
    sys.path.append(str(ROOT / "tests" / "comfyui"))
    from conftest import PACK_FOLDER_NAME, _import_comfyui

    dirs = {name: workdir / name for name in ("output", "input", "temp", "user", "diffusion_models", "custom_nodes")}
    for path in dirs.values():
        path.mkdir()
    (dirs["custom_nodes"] / PACK_FOLDER_NAME).symlink_to(ROOT, target_is_directory=True)
    folder_paths, server, execution, nodes = _import_comfyui(root, dirs)
    sys.path.append(str(ROOT))  # after ComfyUI's own top-level modules (`nodes`)
    loop = asyncio.new_event_loop()
    prompt_server = server.PromptServer(loop)
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    events: list[tuple[str, Any]] = []
    send = prompt_server.send_sync
    prompt_server.send_sync = lambda event, data, sid=None: (events.append((event, data)), send(event, data, sid))
    return Comfy(root, nodes, events)


@dataclass
class Comfy:
    root: Path
    nodes: Any
    events: list

    def payloads_since(self, first: int) -> list[dict]:
        return [data for event, data in self.events[first:] if event == "cgtaylor.stats"]

    def release(self) -> dict:
        import torch

        version = (self.root / "comfyui_version.py").read_text().split("__version__ =", 1)[1].split()[0].strip("\"'")
        commit_file = self.root / ".comfyui-commit"
        commit = commit_file.read_text().strip() if commit_file.is_file() else _git_head(self.root)
        return {"release": version, "commit": commit, "torch": torch.__version__, "python": platform.python_version()}


def pack_commit() -> str:
    """The commit of the pack the sweep measured (read from .git: the shipped code starts no process)."""
    return (_git_head(ROOT) or "unknown")[:12]


def _git_head(root: Path) -> str | None:
    head = root / ".git" / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text().strip()
    if ref.startswith("ref: "):
        ref_file = root / ".git" / ref[5:]
        return ref_file.read_text().strip() if ref_file.is_file() else None
    return ref


@dataclass(frozen=True)
class Point:
    family: str
    sampler: str
    steps: int
    cfg: float
    shift: float | None  # None: the model config's own model sampling

    def key(self) -> tuple:
        return (self.family, self.sampler, self.steps, self.cfg, self.shift)


def shifts(family: str) -> tuple[float | None, ...]:
    from bench.weights import LAYOUT

    return WAN_SHIFTS if LAYOUT[family] == "wan" else (None,)


def sweep_points(families: tuple[str, ...], samplers: list[str]) -> list[Point]:
    """Euler's grid on every model first, then every sampler: a run cut short still has the whole grid."""
    configs = [(family, shift) for family in families for shift in shifts(family)]
    points = [Point(f, "euler", n, cfg, shift) for f, shift in configs for n in EULER_STEPS for cfg in EULER_CFGS]
    return points + [Point(f, s, n, SAMPLER_CFG, shift) for f, shift in configs for s in samplers for n in SAMPLER_STEPS]


class Sampling:
    """One model in ComfyUI with the bench's prompts: sampled by the stock KSampler, with the node or without."""

    def __init__(self, comfy: Comfy, family: str, one_by_one: bool = False) -> None:
        from bench.comfyui_models import build, check_same_output
        from bench.digits import CLASSES, Prompts
        from bench.weights import LAYOUT

        import torch

        self.comfy, self.family = comfy, family
        self.built = build(family)
        self.same_output = check_same_output(self.built)
        prompts, labels = Prompts(), torch.arange(CLASSES)
        uncond = torch.full_like(labels, CLASSES)
        self.batch = CLASSES
        # None: the ten digits in one batch; else each digit alone, as a user samples one image at a time
        self.groups: list[int | None] = list(range(CLASSES)) if one_by_one else [None]

        def conditioning(index: torch.Tensor) -> list:
            extra = {"pooled_output": prompts.pooled[index]} if LAYOUT[family] == "flux" else {}
            return [[prompts.tokens[index], extra]]

        self.positive, self.negative = conditioning(labels), conditioning(uncond)
        self._shifted: dict[float | None, Any] = {}

    def model(self, shift: float | None) -> Any:
        """The model with ``shift`` set by the stock ModelSamplingSD3 node (None: the config's model sampling)."""
        if shift not in self._shifted:
            patcher = self.built.patcher
            if shift is not None:
                (patcher,) = self.comfy.nodes.NODE_CLASS_MAPPINGS["ModelSamplingSD3"]().patch(patcher, shift)
            self._shifted[shift] = patcher
        return self._shifted[shift]

    def schedule_shift(self, shift: float | None) -> float:
        return float(self.model(shift).get_model_object("model_sampling").shift)

    def with_node(self, model: Any, unique_id: str, **overrides: Any) -> Any:
        from test_real_comfyui import apply_node, node_class

        return apply_node(node_class(self.comfy), model, unique_id, **overrides)

    def latent(self, batch: int | None = None) -> dict:
        import torch

        from bench.comfyui_models import latent_shape

        return {"samples": torch.zeros((batch or self.batch, *latent_shape(self.family)))}

    def sample(self, model: Any, point: Point, seed: int, digit: int | None = None) -> tuple[Any, float, dict | None]:
        """The samples (of the ten digits, or of ``digit`` alone on its own seed), the CPU seconds they took, and the
        node's payload when the node is on the model."""
        import torch

        first = len(self.comfy.events)
        started = time.process_time()
        positive, negative, latent = self.positive, self.negative, self.latent()
        if digit is not None:
            positive, negative, latent = one(self.positive, digit), one(self.negative, digit), self.latent(1)
            seed = seed * self.batch + digit
        with torch.inference_mode():
            (out,) = self.comfy.nodes.KSampler().sample(model, seed, point.steps, point.cfg, point.sampler, SCHEDULER,
                                                        positive, negative, latent, denoise=1.0)
        seconds = time.process_time() - started
        payloads = self.comfy.payloads_since(first)
        return out["samples"].clone(), seconds, (payloads[-1] if payloads else None)

    def images(self, samples: Any) -> Any:
        """Decoded digits [N, 1, (T,) 16, 16] in [-1, 1] (bench/digits.py), Qwen-Image's one frame dropped."""
        from bench.digits import decode
        from bench.weights import LAYOUT

        return decode(samples[:, :, 0] if LAYOUT[self.family] == "qwen" else samples)


def one(conditioning: list, index: int) -> list:
    """One image's conditioning out of a batch's."""
    return [[c[index : index + 1], {k: v[index : index + 1] for k, v in extra.items()}] for c, extra in conditioning]


def per_image_psnr(test: Any, reference: Any) -> list[float]:
    from bench.measures import psnr

    return [psnr(test[i : i + 1], reference[i : i + 1]) for i in range(test.shape[0])]


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the value at or below which ``share`` of the values lie (of 20 images, 10%: the 2nd worst)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def finite(value: float) -> float | None:
    """JSON has no infinity: an image the node left exactly as it was is stored as null."""
    return round(value, 2) if math.isfinite(value) else None


def summarise(point: Point, schedule_shift: float, psnrs: list[float], payloads: list[dict], seconds: dict) -> dict:
    gains = [step["gain"] for payload in payloads for step in payload["steps"] if "gain" in step]
    finite_values = [v for v in psnrs if math.isfinite(v)]
    notes = sorted({note for payload in payloads for note in payload["notes"]})
    return {
        "model": point.family, "sampler": point.sampler, "steps": point.steps, "cfg": point.cfg,
        "shift": round(schedule_shift, 4), "shift_node": point.shift is not None,
        "images": len(psnrs), "worst": finite(min(psnrs)), "p10": finite(percentile(psnrs, 0.1)),
        "median": finite(statistics.median(psnrs)),
        "mean": round(statistics.fmean(finite_values), 2) if finite_values else None,
        "under_35": sum(v < 35 for v in psnrs), "under_40": sum(v < 40 for v in psnrs),
        "block_ratio": round(statistics.median(p["totals"]["block_ratio"] for p in payloads), 3),
        "speed": round(statistics.median(seconds["off"]) / statistics.median(seconds["on"]), 3),
        "forecast_share": round(sum(p["totals"]["forecast"] for p in payloads) / sum(p["totals"]["calls"] for p in payloads), 3),
        "gain_max": round(max(gains), 3) if gains else None,
        "gain_steps": round(len(gains) / sum(len(p["steps"]) for p in payloads), 3),
        "psnr": [finite(v) for v in psnrs],
        "notes": [note.split(";")[0][:NOTE_CHARS] for note in notes],
    }


def run_point(sampling: Sampling, point: Point) -> dict:
    import torch

    model = sampling.model(point.shift)
    cached = sampling.with_node(model, unique_id="sweep")
    psnrs, payloads, seconds = [], [], {"off": [], "on": []}
    for seed, digit in ((seed, digit) for seed in SEEDS for digit in sampling.groups):
        reference, off, _ = sampling.sample(model, point, seed, digit)
        test, on, payload = sampling.sample(cached, point, seed, digit)
        if payload is None:
            raise RuntimeError(f"{point}: the node sent no cgtaylor.stats payload")
        if not torch.isfinite(test).all():
            raise RuntimeError(f"{point}: the node's sample is not finite")
        psnrs += per_image_psnr(sampling.images(test), sampling.images(reference))
        payloads.append(payload)
        seconds["off"].append(off)
        seconds["on"].append(on)
    return summarise(point, sampling.schedule_shift(point.shift), psnrs, payloads, seconds)


def classify_samplers(sampling: Sampling) -> tuple[list[str], dict[str, str]]:
    """Every sampler name this ComfyUI lists, split by measurement: a sampler is deterministic when the same
    starting noise gives the same sample under two different sampler seeds (the seed only feeds noise it adds)."""
    import comfy.sample
    import comfy.samplers
    import torch

    model = sampling.model(None)
    latent = sampling.latent()["samples"][:2]
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
    positive = [[c[0][:2], {k: v[:2] for k, v in c[1].items()}] for c in sampling.positive]
    negative = [[c[0][:2], {k: v[:2] for k, v in c[1].items()}] for c in sampling.negative]
    deterministic, excluded = [], {}
    for name in comfy.samplers.SAMPLER_NAMES:
        outs = []
        for seed in (1, 2):
            with torch.inference_mode():
                outs.append(comfy.sample.sample(model, noise, 4, 2.0, name, SCHEDULER, positive, negative, latent,
                                                disable_pbar=True, seed=seed))
        if torch.equal(outs[0], outs[1]):
            deterministic.append(name)
        else:
            excluded[name] = next((why for word, why in NOISE_REASONS if word in name), "stochastic (measured)")
    return deterministic, excluded


def point_key(row: dict) -> tuple:
    """A results row's Point.key() (the shift as the point asked for it: None where no node set it)."""
    return (row["model"], row["sampler"], row["steps"], row["cfg"], row["shift"] if row["shift_node"] else None)


def write(results: dict, path: Path) -> None:
    """One point a line: compact, and a change to one point is a one-line diff."""
    head = {k: v for k, v in results.items() if k != "points"}
    text = json.dumps(head, indent=1)[:-2] + ',\n "points": [\n'
    text += ",\n".join("  " + json.dumps(p, separators=(",", ":")) for p in results["points"]) + "\n ]\n}\n"
    path.write_text(text)


def parse_point(text: str) -> Point:
    model, sampler, steps, cfg, shift = text.split(":")
    return Point(model, sampler, int(steps), float(cfg), None if shift == "none" else float(shift))


def merge(parts: list[Path], out: Path) -> None:
    """Sweeps run side by side (--families, --points) as one results file, in FAMILIES' order, each point once."""
    loaded = [json.loads(path.read_text()) for path in parts]
    head = {k: v for k, v in loaded[0].items() if k != "points"}
    head["same_output"] = {k: v for part in loaded for k, v in part["same_output"].items()}
    head["complete"] = all(part.get("complete") for part in loaded)
    unique = {point_key(row): row for part in loaded for row in part["points"]}  # parts resumed from one file share points
    rows = sorted(unique.values(), key=lambda row: FAMILIES.index(row["model"]))
    write({**head, "points": rows}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", action="store_true", help="one point per model and sampler class, to size the run")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the points --out already holds")
    parser.add_argument("--merge", type=Path, nargs="+", help="write these results files into --out as one, and stop")
    parser.add_argument("--one-by-one", action="store_true", help="each digit alone (batch 1) instead of ten a batch")
    parser.add_argument("--points", nargs="*", default=[], metavar="MODEL:SAMPLER:STEPS:CFG:SHIFT",
                        help="only these points (SHIFT 'none' for the config's own)")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    # Run as a file, Python put bench/ first on sys.path: its modules must not stand in for top-level ones.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    root = Path(os.environ["COMFYUI_PATH"]).resolve()

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cgtaylor-sweep-") as workdir:
        comfy = boot(root, Path(workdir))
        import comfy.utils as comfy_utils

        comfy_utils.PROGRESS_BAR_ENABLED = False
        from bench.weights import HOLDOUT

        samplings = {family: Sampling(comfy, family, args.one_by_one) for family in args.families}
        first = samplings[args.families[0]]
        deterministic, excluded = classify_samplers(first)
        print(f"deterministic: {deterministic}\nexcluded: {excluded}", flush=True)
        points = sweep_points(tuple(args.families), deterministic)
        if args.points:
            chosen = {parse_point(text).key() for text in args.points}
            points = [p for p in points if p.key() in chosen]
        if args.time:
            points = [p for p in points if (p.sampler, p.steps, p.cfg) in (("euler", 30, 4.0), ("heun", 20, 4.0))][:4]
        started = time.monotonic()
        done = {point_key(row): row for row in (json.loads(args.out.read_text())["points"] if args.resume else [])}
        rows = []
        head = {
            "comfyui": comfy.release(),
            "pack": pack_commit(),
            "node": "CGTaylorCache at its defaults",
            "images_per_point": len(SEEDS) * first.batch, "batch": 1 if args.one_by_one else first.batch,
            "seeds": list(SEEDS),
            "scheduler": SCHEDULER, "holdout": list(HOLDOUT),
            "same_output": {f: float(f"{s.same_output:.2g}") for f, s in samplings.items()},
            "deterministic_samplers": deterministic, "excluded_samplers": excluded,
        }
        for index, point in enumerate(points):
            t0 = time.process_time()
            if point.key() in done:
                rows.append(done[point.key()])
                continue
            row = run_point(samplings[point.family], point)
            rows.append(row)
            if not args.time and len(rows) % SAVE_EVERY == 0:
                kept = [row for key, row in done.items() if key not in {point_key(r) for r in rows}]
                write({**head, "complete": False, "points": rows + kept}, args.out)
            print(f"[{index + 1}/{len(points)} {time.monotonic() - started:.0f}s] {point.family} {point.sampler} "
                  f"{point.steps} cfg {point.cfg:g} shift {row['shift']:g}: worst {row['worst']} p10 {row['p10']} "
                  f"under40 {row['under_40']} blocks {row['block_ratio']}x time {row['speed']}x "
                  f"({time.process_time() - t0:.1f} cpu s)", flush=True)
        if args.time:
            return
        write({**head, "complete": True, "points": rows}, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
