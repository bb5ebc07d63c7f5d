"""Per-call cost of the gate and the forecast at real model sizes, and the memory they hold.

    python -m bench.gpu                       # FLUX.1 and Wan 1.3B sizes on a GPU (bf16, random weights)
    python -m bench.gpu --reduced             # the same measurement at CPU-friendly sizes
    python -m bench.gpu --sizes medium        # width 1024, 16 blocks, 1024 tokens
    python -m bench.gpu --offload             # only the offload's cost per call at Wan 1.3B 832x480x81

Four sampling runs per size through the node's adapter, each call timed by an outermost
DIFFUSION_MODEL wrapper (synchronised on CUDA):
  * uncached: the cost of a full call;
  * gate always rejects (threshold 1e-12): full calls that also pay for the gate, so the
    difference is the gate's overhead (end to end, as noisy as a full call);
  * gate always accepts (huge threshold, warm-up 1): forecast calls, and the wall-clock
    speedup of the whole run next to its block-evaluation ratio;
  * the same with the last block's cache in host memory (cache_device cpu): what offloading
    costs per forecast and per full call, and the GPU memory it saves.
On CUDA each run also records its peak GPU memory above what was allocated before it: with and
without the node, with the cache on the GPU and offloaded.
The engine's own work on a forecast call (gate + forecast) is also timed on its own, which
resolves costs far below the noise of a full call. So is the offload's: the engine's work per
forecast and per full call with the cache on the device and in host memory, wall time and the
process's CPU time, at Wan 1.3B 832x480x81 frames with cfg (``offload_cost``). Random weights
time the same as trained ones: the work per call does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import cgtaylor_cache.core as core
from cgtaylor_cache.core.footprint import META, footprint
from cgtaylor_cache.nodes.families import detect
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.runtime import CacheRuntime, install
from cgtaylor_cache.nodes.settings import CacheSettings

from .measures import median, tensor_bytes
from .memory import WORKLOADS
from .models import Flux, FluxParams, WanModel, WanParams
from .standin.patcher import ModelPatcher
from .standin.sampling import Cond, FlowModel, sample

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Size:
    name: str
    family: str
    params: object
    latent: tuple[int, ...]  # per sample, channels first
    text_tokens: int
    steps: int


SIZES = {
    # FLUX.1 [dev]: 19 double + 38 single blocks, hidden 3072; 1024x1024 -> 4096 image tokens, 512 T5 tokens.
    "flux1": Size("flux1", "flux", FluxParams(in_channels=16, hidden_size=3072, num_heads=24, depth=19,
                  depth_single_blocks=38, mlp_ratio=4.0, context_in_dim=4096, vec_in_dim=768, guidance_embed=True),
                  (16, 128, 128), 512, 10),
    # Wan 2.1 1.3B: 30 blocks, dim 1536; 832x480, 33 frames -> 9 x 30 x 52 = 14,040 tokens.
    "wan1.3b": Size("wan1.3b", "wan", WanParams(in_dim=16, out_dim=16, dim=1536, ffn_dim=8960, freq_dim=256,
                    text_dim=4096, num_heads=12, num_layers=30), (16, 9, 60, 104), 512, 10),
    # The "medium model": width 1024, 16 blocks, 1024 tokens.
    "medium": Size("medium", "wan", WanParams(in_dim=16, out_dim=16, dim=1024, ffn_dim=4096, freq_dim=256,
                   text_dim=512, num_heads=16, num_layers=16), (16, 4, 32, 32), 64, 8),
    # CPU-sized stand-ins for the first two, same layouts.
    "flux1-reduced": Size("flux1-reduced", "flux", FluxParams(in_channels=16, hidden_size=256, num_heads=4, depth=3,
                          depth_single_blocks=6, mlp_ratio=4.0, context_in_dim=256, vec_in_dim=64, guidance_embed=True),
                          (16, 32, 32), 64, 8),
    "wan1.3b-reduced": Size("wan1.3b-reduced", "wan", WanParams(in_dim=16, out_dim=16, dim=256, ffn_dim=1024,
                            freq_dim=256, text_dim=256, num_heads=4, num_layers=8), (16, 2, 32, 32), 64, 8),
}


def build(size: Size, device: torch.device, dtype: torch.dtype) -> tuple[ModelPatcher, Cond]:
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: FLUX.1 in fp32 would need 48 GB
    try:
        with torch.device(device):
            model = Flux(size.params) if size.family == "flux" else WanModel(size.params)
    finally:
        torch.set_default_dtype(previous)
    model = model.eval().requires_grad_(False)
    p = size.params
    inputs = {"context": torch.randn(1, size.text_tokens, p.context_in_dim if size.family == "flux" else p.text_dim,
                                     device=device, dtype=dtype)}
    if size.family == "flux":
        inputs["y"] = torch.randn(1, p.vec_in_dim, device=device, dtype=dtype)
        inputs["guidance"] = torch.full((1,), 3.5, device=device, dtype=dtype)
    return ModelPatcher(FlowModel(model, 1.0 if size.family == "flux" else 1000.0)), Cond(inputs)


def timed_run(patcher: ModelPatcher, cond: Cond, noise: torch.Tensor, size: Size, new_engine=None) -> dict:
    """One sampling run; per-call times from an outermost DIFFUSION_MODEL wrapper."""
    clone = patcher.clone()
    calls: list[float] = []
    sync = torch.cuda.synchronize if noise.is_cuda else (lambda: None)

    def clock(executor, *args, **kwargs):
        sync()
        started = time.perf_counter()
        out = executor(*args, **kwargs)
        sync()
        calls.append(time.perf_counter() - started)
        return out

    clone.add_wrapper_with_key("diffusion_model", "bench-clock", clock)
    reports, peak = [], [0]
    runtime = None
    if new_engine is not None:
        runtime = CacheRuntime(new_engine, detect(patcher.get_model_object("diffusion_model")), reports.append)
        install(clone, runtime)

    def watch(step, x):
        if runtime is not None and runtime.engine is not None:
            peak[0] = max(peak[0], tensor_bytes(runtime.engine.cached_tensors()))

    if noise.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    base_memory = torch.cuda.memory_allocated() if noise.is_cuda else 0
    sync()
    started = time.perf_counter()
    sample(clone, noise, cond, steps=size.steps, shift=3.0, callback=watch)
    sync()
    total = time.perf_counter() - started
    result = {"total_s": total, "call_s": calls, "cache_peak_bytes": peak[0]}
    if noise.is_cuda:
        result["gpu_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base_memory
    if reports:
        stats = reports[-1]
        result.update(forecast_calls=stats.forecast_calls, calls=stats.calls, block_ratio=stats.block_ratio,
                      forecast_flags=[r["forecast"] > 0 for r in stats.to_json()["steps"]])
    return result


def image_tokens(size: Size) -> int:
    """Tokens of one sample's latent after 2x2 patching (Wan: every frame)."""
    patches = (size.latent[-2] // 2) * (size.latent[-1] // 2)
    return patches * (size.latent[1] if size.family == "wan" else 1)


def width(size: Size) -> int:
    return size.params.hidden_size if size.family in ("flux", "qwen") else size.params.dim


def hidden_shapes(size: Size) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Block 0's output and the last block's output for one sample, as the engine sees them
    (FLUX's last block also carries the text tokens)."""
    img, hidden = image_tokens(size), width(size)
    text = size.text_tokens if size.family == "flux" else 0
    return (1, img, hidden), (1, img + text, hidden)


def taylorseer_module_cache_bytes(size: Size, order: int = 1, bytes_per_value: int = 2) -> int:
    """TaylorSeer caches every attention and MLP output of every block, (order + 1) tensors each."""
    p, img, hidden = size.params, image_tokens(size), width(size)
    if size.family == "flux":
        # double: img attn + img mlp + txt attn + txt mlp; single: attn + mlp of the joint stream
        values = (p.depth + p.depth_single_blocks) * 2 * (img + size.text_tokens) * hidden
    else:
        values = p.num_layers * 3 * img * hidden  # self-attn, cross-attn, ffn
    return values * (order + 1) * bytes_per_value


def node_memory(size: Size, dtype: torch.dtype) -> core.CacheMemory:
    """What the node's own accounting gives one stream of ``size`` with its cache on the device
    (core/footprint.py): ``bound["device"]`` the cached tensors (the gate's sampled tokens included),
    ``working`` the slice buffers of its arithmetic."""
    first, last = hidden_shapes(size)
    engine = gated_engine(1e9)
    engine.placement.configure(META, None)
    return footprint(engine, first, last, dtype)


ORDERS = (DEFAULTS["first_block_order"], DEFAULTS["last_block_order"])  # measured at the node's defaults


def gated_engine(threshold: float, cache_device: str = "gpu") -> core.ForecastEngine:
    """The engine the node builds from its defaults, with the paper's gate on block 0's error at the
    given threshold, so that a huge one accepts every call from the first (the calibrated gate waits
    for pairs) and a tiny one none, and at most 2 forecasts in a row, so that the full steps fill the
    caches to the default orders within a few steps and the peak cache meets its bound; the last
    block's cache where ``cache_device`` says."""
    settings = {**DEFAULTS, "tolerance": threshold, "gate": "block0", "max_consecutive": 2, "cache_device": cache_device}
    return CacheSettings(**settings).new_engine()


def engine_ms(size: Size, device: torch.device, dtype: torch.dtype, repeats: int = 20) -> float:
    """Median time of the engine's own work on an accepted call: plan, gate (block-0 forecast and
    error), last-block forecast. Timed apart from the model, so the noise of a full call cannot
    hide a cost that is a few percent of it."""
    first_shape, last_shape = hidden_shapes(size)
    engine = gated_engine(1e9)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = repeats + 3
    times = []
    for index in range(steps - 1):
        step = core.StepPoint(index, float(index), 1 - index / steps, steps)
        first = torch.randn(first_shape, device=device, dtype=dtype) * (1 + 0.01 * index)
        sync()
        started = time.perf_counter()
        call = engine.begin_call(step, ["cond"], first_shape)
        engine.first_block_output(call, first)
        if call.skips_blocks:
            engine.take_forecast(call)
            sync()
            times.append(time.perf_counter() - started)
        else:
            engine.last_block_output(call, torch.randn(last_shape, device=device, dtype=dtype))
        engine.end_call(call, 1, 2)
    return 1000 * median(times)


def measure(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    patcher, cond = build(size, device, dtype)
    noise = torch.randn((1, *size.latent), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    timed_run(patcher, cond, noise, size)  # warm-up: kernels, allocator
    uncached = timed_run(patcher, cond, noise, size)
    never = timed_run(patcher, cond, noise, size, lambda: gated_engine(1e-12))
    always = timed_run(patcher, cond, noise, size, lambda: gated_engine(1e9))
    offloaded = timed_run(patcher, cond, noise, size, lambda: gated_engine(1e9, "cpu"))
    full_call = median(uncached["call_s"])
    gated_calls = never["call_s"][2:-1]  # after warm-up and the first gate seed, before the last step
    forecast_calls = [t for t, f in zip(always["call_s"], always["forecast_flags"]) if f]
    wall = uncached["total_s"] / always["total_s"]
    bytes_per_value = torch.finfo(dtype).bits // 8
    result = {
        "size": size.name, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "steps": size.steps,
        "full_call_ms": 1000 * full_call,
        "gate_overhead_pct": 100 * (median(gated_calls) - full_call) / full_call if gated_calls else None,
        "engine_ms": engine_ms(size, device, dtype),
        "forecast_call_ms": 1000 * median(forecast_calls) if forecast_calls else None,
        "engine_pct_of_full_call": None,
        "block_ratio": always["block_ratio"], "wall_speedup": wall, "efficiency": wall / always["block_ratio"],
        "cache_peak_mb": always["cache_peak_bytes"] / 2**20,
        "cache_bound_mb": node_memory(size, dtype).bound["device"] / 2**20,
        "working_mb": node_memory(size, dtype).working / 2**20,
        "taylorseer_cache_mb": taylorseer_module_cache_bytes(size, bytes_per_value=bytes_per_value) / 2**20,
        # Offloaded: every call's cost against the same call with the cache on the device.
        "offload_ms_per_forecast_call": 1000 * (median(_calls(offloaded, True)) - median(_calls(always, True))),
        "offload_ms_per_full_call": 1000 * (median(_calls(offloaded, False)) - median(_calls(always, False))),
        "offload_wall_s": offloaded["total_s"] - always["total_s"],
        **({"gpu_peak_extra_mb": always["gpu_peak_extra_bytes"] / 2**20,
            "gpu_peak_extra_offloaded_mb": offloaded["gpu_peak_extra_bytes"] / 2**20,
            "gpu_peak_extra_uncached_mb": uncached["gpu_peak_extra_bytes"] / 2**20} if device.type == "cuda" else {}),
    }
    result["engine_pct_of_full_call"] = 100 * result["engine_ms"] / result["full_call_ms"]
    return result


def _calls(run: dict, forecast: bool) -> list[float]:
    """A run's call times of one kind, from its second step on (the first one's full call warms up)."""
    flags = run["forecast_flags"]
    return [t for t, f in zip(run["call_s"][1:], flags[1:]) if f == forecast] or [math.nan]


# The Wan 1.3B size: 832x480, 81 frames (32,760 tokens x 1,536), cfg.
OFFLOAD_WORKLOAD = next(w for w in WORKLOADS if w.name.startswith("Wan 2.1 1.3B"))


def offload_cost(device: torch.device, dtype: torch.dtype, repeats: int = 6) -> dict:
    """The engine's own work per call with the last block's cache on the device and in host memory, at
    Wan 1.3B 832x480x81 frames with cfg (two streams): wall time, the process's CPU time (on CUDA the
    CPU side of the copies; on the CPU everything), and the bytes each call moved. Forecast calls
    (gate accepted) and full calls (the caches refreshed) alternate, once the caches are full."""
    w = OFFLOAD_WORKLOAD
    shape = (w.streams, w.last_tokens, w.width)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = {"workload": w.name, "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    for placement in ("gpu", "cpu"):
        settings = {**DEFAULTS, "tolerance": 1e9, "gate": "block0", "warmup_steps": 1, "max_consecutive": 1,
                    "cache_device": placement}
        engine = CacheSettings(**settings).new_engine()
        generator = torch.Generator().manual_seed(0)
        base = torch.randn(shape, generator=generator).to(device, dtype)
        times = {True: [], False: []}
        steps = 2 * repeats + 6
        for index in range(steps - 1):
            step = core.StepPoint(index, float(index), 1 - index / steps, steps)
            state = base * (1 + 0.01 * index)
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            moved = engine.placement.meter.total
            call = engine.begin_call(step, ["cond", "uncond"], shape)
            engine.first_block_output(call, state)
            if call.skips_blocks:
                engine.take_forecast(call)
            else:
                engine.last_block_output(call, state)
            engine.end_call(call, 1, 2)
            sync()
            if index >= 4:  # the caches are full from here on
                times[call.skips_blocks].append((time.perf_counter() - wall, time.process_time() - cpu,
                                                 engine.placement.meter.total - moved))
        for forecast, kind in ((True, "forecast"), (False, "full")):
            entries = times[forecast]
            result[f"{placement}_{kind}_ms"] = 1000 * median([e[0] for e in entries])
            result[f"{placement}_{kind}_cpu_ms"] = 1000 * median([e[1] for e in entries])
            result[f"{placement}_{kind}_moved_mb"] = median([e[2] for e in entries]) / 1e6
        del engine, base
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", choices=sorted(SIZES), help="default: flux1 wan1.3b (reduced on CPU)")
    parser.add_argument("--reduced", action="store_true", help="CPU-friendly sizes even on a GPU")
    parser.add_argument("--offload", action="store_true", help="only the offload's cost per call (offload_cost)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device, dtype = (torch.device("cuda"), torch.bfloat16) if cuda else (torch.device("cpu"), torch.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    offload = offload_cost(device, torch.bfloat16)
    print(json.dumps(offload), flush=True)
    (args.out / ("offload.json" if cuda else "offload_cpu.json")).write_text(json.dumps(offload, indent=1))
    if args.offload:
        return
    sizes = args.sizes or (["flux1", "wan1.3b"] if cuda and not args.reduced else ["flux1-reduced", "wan1.3b-reduced"])
    results = []
    for name in sizes:
        result = measure(SIZES[name], device, dtype)
        results.append(result)
        print(json.dumps(result), flush=True)
    for name in ("flux1", "wan1.3b"):  # memory at full size is arithmetic on shapes: no GPU needed
        size = SIZES[name]
        print(f"{name} caches per stream at bf16: CG-Taylor bound {node_memory(size, torch.bfloat16).bound['device'] / 2**20:.0f} MB, "
              f"TaylorSeer module caches {taylorseer_module_cache_bytes(size) / 2**20:.0f} MB")
    target = args.out / ("gpu.json" if cuda else "gpu_cpu.json")
    target.write_text(json.dumps(results, indent=1))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
