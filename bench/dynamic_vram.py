"""GPU checks of the cache's memory that a CPU cannot make: what crosses the bus, what the device
holds, and what Dynamic VRAM leaves free after loading.

    python -m bench.dynamic_vram [COMFYUI_CHECKOUT] [--out FILE]

1. Transfers and working set (torch and the pack only): an offloaded cache of one Wan 1.3B
   832x480x81 stream (bf16, order 2) through every operation of core/taylor.py. Each operation's
   host<->device copies are read from the CUDA profiler's memcpy records and set against the
   transfer meter the log line reports; the device's peak allocation beyond what was held before
   is set against ``working_bytes``.
2. Dynamic VRAM's address-space reservation (needs the comfy-aimdo wheel): a VBAR the size of fp8
   Wan 14B weights is reserved and its pages faulted in, as ``ModelPatcherDynamic.load`` and then
   the forward do; the free memory is read after each, and then what ``auto`` decides from it, with
   and without the weights still to come (nodes/planner.py ``auto_budget``).
3. With a ComfyUI checkout whose requirements import here: ComfyUI's own ``ModelPatcherDynamic`` on a
   Wan 2.1 1.3B of random bf16 weights, loaded by ``load_models_gpu`` and run once; the free memory,
   ``loaded_size`` and ``weights_to_come`` after each.

Every part that cannot run says why in the result instead of failing the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import torch

import cgtaylor_cache  # noqa: F401  (registered by bench/__init__.py)
from cgtaylor_cache.core import TaylorForecaster
from cgtaylor_cache.core.placement import HostStore, TransferMeter, working_bytes
from cgtaylor_cache.nodes import planner

GIB = 2**30
STATE = (1, 32_760, 1_536)  # one Wan 1.3B 832x480x81 stream
WAN_14B_FP8 = 14_290_000_000


SCALAR = 64  # copies this small are reductions read back (block 0's trend), not cache terms


def memcpy_bytes(operation) -> dict[str, int]:
    """Bytes the CUDA profiler saw copied host-to-device and device-to-host while ``operation`` ran,
    leaving out scalars read back."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        operation()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "trace.json")
        profiler.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    moved = {"to_device": 0, "to_host": 0}
    for event in events:
        name, size = event.get("name", ""), event.get("args", {}).get("bytes")
        if size is None or int(size) <= SCALAR:
            continue
        if "Memcpy HtoD" in name:
            moved["to_device"] += int(size)
        elif "Memcpy DtoH" in name:
            moved["to_host"] += int(size)
    return moved


def transfers_and_working_set() -> dict:
    device, dtype, order = torch.device("cuda"), torch.bfloat16, 2
    meter = TransferMeter()
    forecaster = TaylorForecaster(order, lambda feature: HostStore(torch.device("cpu"), meter))
    generator = torch.Generator(device=device).manual_seed(0)
    states = [torch.randn(STATE, generator=generator, device=device).to(dtype) for _ in range(8)]
    for x in range(order + 1):
        forecaster.update(states[x], float(x))
    out = torch.empty(STATE, dtype=dtype, device=device)
    operations = {
        "update": lambda: forecaster.update(states[3], 3.0),
        "second update": lambda: forecaster.update(states[4], 4.0),
        "corrector": lambda: forecaster.update(states[5], 4.0),
        "forecast": lambda: forecaster.predict(5.0, out=out),
        "miss": lambda: forecaster.miss(states[6], 5.0),
        "trend": lambda: forecaster.progress(states[7]),
        "rows": lambda: forecaster.predict_rows(torch.arange(0, STATE[1], 74, device=device), 5.0),
    }
    rows = {}
    for name, operation in operations.items():  # each runs once: a second update would be a corrector
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        held, metered = torch.cuda.memory_allocated(), (meter.to_device, meter.to_host)
        copied = memcpy_bytes(operation)
        metered = {"to_device": meter.to_device - metered[0], "to_host": meter.to_host - metered[1]}
        rows[name] = {"copied": copied, "metered": metered, "bytes_match": copied == metered,
                      "peak_beyond_held": torch.cuda.max_memory_allocated() - held}
    bound = working_bytes(dtype, STATE[1] * STATE[2], order)
    return {"state": list(STATE), "dtype": "bfloat16", "order": order, "working_bytes": bound,
            "within_working_bytes": all(r["peak_beyond_held"] <= bound + 4096 for r in rows.values()),
            "operations": rows}


def auto_decisions(free: int, estimate: float, to_come: int, cache: int) -> dict:
    """What ``auto`` keeps on the device for ``cache`` bytes of last-block caches."""
    counted = planner.auto_budget(free, estimate, to_come)
    read_as_free = planner.auto_budget(free, estimate)
    return {"budget": counted, "cache_on_gpu": cache <= counted,
            "budget_without_weights_to_come": read_as_free, "cache_on_gpu_without": cache <= read_as_free}


def reservation(weights: int = WAN_14B_FP8) -> dict:
    import comfy_aimdo.control as control

    if not control.init() or not control.init_devices([0]):
        return {"skipped": "comfy-aimdo did not initialise on this device"}
    import comfy_aimdo.model_vbar as model_vbar
    import comfy_aimdo.torch as aimdo_torch

    free = {"before": torch.cuda.mem_get_info()[0]}
    vbar = model_vbar.ModelVBAR(weights * 10, 0)  # the address space ModelPatcherDynamic reserves (x10)
    chunks = [vbar.alloc(min(256 * 2**20, weights - start)) for start in range(0, weights, 256 * 2**20)]
    free["after_reserving"] = torch.cuda.mem_get_info()[0]
    faulted = 0
    for chunk in chunks:  # what each op's first use does during the forward
        if model_vbar.vbar_fault(chunk) is None:
            break
        aimdo_torch.aimdo_to_tensor(chunk, torch.device("cuda")).fill_(1)
        model_vbar.vbar_unpin(chunk)
        faulted += chunk[2]
    torch.cuda.synchronize()
    free["after_faulting"] = torch.cuda.mem_get_info()[0]
    result = {"weights": weights, "faulted": faulted, "loaded_size_after_faulting": vbar.loaded_size(), "free": free}
    # Wan 14B 832x480x81 with cfg: ComfyUI's estimate and both streams' last-block caches (bench/memory.py).
    estimate, cache = 2 * 21 * 60 * 104 * 2 * 0.01 * (5120 / 2222) * 2**20, 2 * 3 * 32_760 * 5_120 * 2
    result["auto_right_after_loading"] = auto_decisions(free["after_reserving"], estimate, weights, cache)
    del chunks, vbar
    return result


def comfyui_dynamic_patcher(checkout: Path) -> dict:
    """ComfyUI's own patcher, as main.py sets it up under Dynamic VRAM (v0.33.0 main.py:251-280)."""
    sys.path.insert(0, str(checkout))
    sys.argv = [sys.argv[0]]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy_aimdo.control

    comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    if not comfy_aimdo.control.init_devices([0]):
        return {"skipped": "comfy-aimdo did not initialise on this device"}
    comfy.memory_management.aimdo_enabled = True
    config = {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 16,
              "dim": 1536, "ffn_dim": 8960, "freq_dim": 256, "text_dim": 4096, "out_dim": 16, "num_heads": 12,
              "num_layers": 30, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
    model_config = comfy.supported_models.WAN21_T2V(config)
    model_config.set_inference_dtype(torch.bfloat16, None)
    model = model_config.get_model({})
    for parameter in model.parameters():
        parameter.data = torch.randn_like(parameter, dtype=torch.float32).mul_(0.02).to(parameter.dtype)
    device = comfy.model_management.get_torch_device()
    patcher = comfy.model_patcher.ModelPatcherDynamic(model, device, torch.device("cpu"))
    rows = {"model_size": patcher.model_size(), "before": comfy.model_management.get_free_memory(device)}
    comfy.model_management.load_models_gpu([patcher])
    rows["after_load"] = {"free": comfy.model_management.get_free_memory(device), "loaded_size": patcher.loaded_size(),
                          "weights_to_come": planner.weights_to_come(patcher)}
    x = torch.randn(1, 16, 1, 60, 104, device=device)
    context = torch.randn(1, 512, 4096, device=device)
    with torch.inference_mode():
        patcher.model.apply_model(x, torch.tensor([0.5], device=device), c_crossattn=context)
    torch.cuda.synchronize()
    rows["after_forward"] = {"free": comfy.model_management.get_free_memory(device), "loaded_size": patcher.loaded_size(),
                             "weights_to_come": planner.weights_to_come(patcher)}
    return rows


def guarded(part) -> dict:
    try:
        return part()
    except Exception as error:  # one part's failure must not hide the others' results
        return {"failed": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comfyui", nargs="?", type=Path, help="a ComfyUI checkout (part 3)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "dynamic_vram.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.dynamic_vram measures a CUDA device; none is available here.")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transfers_and_working_set": guarded(transfers_and_working_set)}
    try:
        import comfy_aimdo  # noqa: F401
    except ImportError:
        result["reservation"] = {"skipped": "comfy-aimdo is not installed (carry its wheel)"}
    else:
        result["reservation"] = guarded(reservation)
    if args.comfyui is not None:
        result["comfyui_dynamic_patcher"] = guarded(lambda: comfyui_dynamic_patcher(args.comfyui.resolve()))
    text = json.dumps(result, indent=1, default=str)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
