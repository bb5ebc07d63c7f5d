"""Many mixed prompts through one ComfyUI PromptExecutor, and the process's resident memory after each.

    COMFYUI_PATH=... python tests/comfyui/prompt_memory.py [--node] [--prompts 100] [--trim]

Run by tests/comfyui/test_memory_over_runs_real.py in a process of its own per sequence (with and
without CGTaylorCache), so neither inherits the other's heap. ComfyUI is booted as the tier's conftest
boots it, the tiny Wan is saved where UNETLoader finds it, and the prompts cycle through latent sizes,
frame counts, batches, cfg scales and step counts, one executor for all as ComfyUI's prompt worker
keeps one; after each prompt the garbage is collected, as the worker does between prompts. With
``--trim`` glibc is asked to hand its free memory back to the system before each reading
(``malloc_trim``), so what stays is what something still holds, not what the allocator keeps for
later. Prints one JSON line: resident bytes after each prompt, and how many of the pack's run
objects are still alive at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import inspect
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402  (the tier's boot helpers)

# (width = height, frames): latents of 4x4x2 to 8x8x5 patches on the tiny Wan, cfg 1 to 4, batch 1 or 2
SIZES = ((64, 9), (96, 13), (128, 9), (128, 17), (64, 17), (96, 5))
# What a run of the node is made of (the pack's classes, by module): none may outlive its run.
RUN_OBJECTS = {"core.engine": ("ForecastEngine",), "core.call": ("Stream",), "core.stats": ("RunStats",),
               "core.sampler_response": ("SamplerResponse",), "nodes.sampling_run": ("SamplingRun",)}


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def prompt(n: int, with_node: bool) -> dict:
    """The ``n``-th prompt of the sequence: UNETLoader -> [CGTaylorCache] -> KSampler -> SaveLatent."""
    width, frames = SIZES[n % len(SIZES)]
    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": conftest.TINY_WAN_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "CGTTestRandomConditioning",
              "inputs": {"seed": 1 + n, "tokens": 8 + n % 9, "width": 4096, "pooled_width": 0}},
        "3": {"class_type": "CGTTestRandomConditioning", "inputs": {"seed": 2, "tokens": 16, "width": 4096, "pooled_width": 0}},
        "4": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": width, "height": width, "length": frames, "batch_size": 1 + (n // 2) % 2}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["27", 0] if with_node else ["1", 0], "seed": n, "steps": 4 + n % 5, "cfg": (1.0, 4.0, 3.0)[n % 3],
            "sampler_name": "euler", "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "cgtaylor_memory/wan"}},
    }
    if with_node:  # the node's defaults, as a saved workflow holds them
        graph["27"] = {"class_type": "CGTaylorCache", "inputs": {
            "model": ["1", 0], "tolerance": 0.1, "warmup_steps": 1, "start_fraction": 0.0, "end_fraction": 1.0,
            "first_block_order": 2, "last_block_order": 2, "max_consecutive": 8, "distance": "step"}}
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", action="store_true", help="sample through CGTaylorCache")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--trim", action="store_true", help="malloc_trim before each reading")
    args = parser.parse_args()
    root, reason = conftest.comfyui_checkout()
    if root is None:
        raise SystemExit(reason)
    base = Path(tempfile.mkdtemp(prefix="cgtaylor-memory-"))
    dirs = {name: base / name for name in ("output", "input", "temp", "user", "diffusion_models", "custom_nodes")}
    for path in dirs.values():
        path.mkdir()
    (dirs["custom_nodes"] / conftest.PACK_FOLDER_NAME).symlink_to(conftest.REPO_ROOT, target_is_directory=True)
    (dirs["custom_nodes"] / "cgtaylor_test_harness_nodes.py").symlink_to(conftest.HARNESS_NODES)
    folder_paths, server, execution, nodes = conftest._import_comfyui(root, dirs)
    loop = asyncio.new_event_loop()
    prompt_server = server.PromptServer(loop)
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))

    import comfy.supported_models
    import comfy.utils

    model = conftest.build_model(comfy.supported_models.WAN21_T2V, conftest.TINY_WAN21_T2V, seed=2101)
    comfy.utils.save_torch_file(model.diffusion_model.state_dict(), str(dirs["diffusion_models"] / conftest.TINY_WAN_FILE))
    del model
    kwargs = {"cache_type": execution.CacheType.CLASSIC}
    if "cache_args" in inspect.signature(execution.PromptExecutor.__init__).parameters:
        kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}
    executor = execution.PromptExecutor(prompt_server, **kwargs)
    trim = ctypes.CDLL("libc.so.6").malloc_trim if args.trim else None
    resident = []
    for n in range(args.prompts):
        graph, prompt_id = prompt(n, args.node), str(uuid.uuid4())
        valid, error, outputs, _ = loop.run_until_complete(execution.validate_prompt(prompt_id, graph, None))
        if not valid:
            raise SystemExit(f"ComfyUI rejected prompt {n}: {error}")
        executor.execute(graph, prompt_id, extra_data={"client_id": "cgtaylor-memory"}, execute_outputs=outputs)
        if not executor.success:
            raise SystemExit(f"prompt {n} failed: {executor.status_messages}")
        loop.run_until_complete(asyncio.sleep(0))  # the server's loop sends what the prompt queued
        gc.collect()
        if trim is not None:
            trim(0)
        resident.append(resident_bytes())
    alive = {name: 0 for names in RUN_OBJECTS.values() for name in names}
    for obj in gc.get_objects():
        kind = type(obj)
        where = kind.__dict__.get("__module__")  # a str for a class defined in Python
        if isinstance(where, str) and any(where.endswith("." + module) and kind.__name__ in names
                                          for module, names in RUN_OBJECTS.items()):
            alive[kind.__name__] += 1
    print(json.dumps({"node": args.node, "resident": resident, "alive": alive}))


if __name__ == "__main__":
    main()
