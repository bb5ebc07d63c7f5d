"""The memory table of docs/memory.md: what each cache keeps at real sizes, computed from shapes.

    python -m bench.memory        # prints the table; tests/test_memory.py checks docs/memory.md holds it

CG-Taylor's columns are the node's own accounting (core/footprint.py: one first call driven
through the engine with meta tensors, nothing allocated); the others are the arithmetic their
descriptions give. bf16 states, 1 GB = 10^9 bytes. Tokens x width from the models' published
dimensions; cfg runs keep one stream per cond and uncond.

The last column is what ``auto`` decides under Dynamic VRAM (ComfyUI's default on NVIDIA with
torch >= 2.8), by the node's own rule (nodes/planner.py ``auto_budget``): loading only reserves
the weights' address space, so right after it a card shows all but ``TAKEN`` free; the cache may
take ``AUTO_SHARE`` of what is left beyond ComfyUI's activation estimate and the fp8 weights still
to come. Cards of 16, 24, 32 and 80 GiB (what "16 GB" and so on hold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import cgtaylor_cache  # noqa: F401  (registered by bench/__init__.py)
from cgtaylor_cache.core.footprint import META, footprint
from cgtaylor_cache.nodes import planner
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.settings import CacheSettings

BYTES = 2  # bf16
TAYLORSEER_ORDER = 1
GIB = 2**30
CARDS = (16, 24, 32, 80)  # GiB
TAKEN = GIB // 2  # the CUDA context, a desktop and whatever else a card holds before ComfyUI loads a model


@dataclass(frozen=True)
class DynamicVram:
    """What ``auto``'s decision under Dynamic VRAM needs beside the states: the weights still to come
    (an fp8 checkpoint, none of it resident on the first run), and ComfyUI's activation estimate for cond
    and uncond: comfy/model_base.py ``memory_required`` with flash or PyTorch attention (v0.33.0 :412-434),
    batch x frames x height x width of the latent x 2 bytes (bf16) x 0.01 x the family's
    ``memory_usage_factor`` MiB (comfy/supported_models.py v0.33.0: Flux 3.1 :746; Wan dim / 2222 :1330)."""

    weights: int
    latent: tuple[int, ...]  # one sample's latent, channels first
    usage_factor: float

    def comfy_estimate(self) -> float:
        return 2 * math.prod(self.latent[1:]) * BYTES * 0.01 * self.usage_factor * 2**20


@dataclass(frozen=True)
class Workload:
    name: str
    image_tokens: int  # block 0's output: what the gate compares
    last_tokens: int  # the last block's state (FLUX.1, HunyuanVideo: text tokens joined)
    width: int
    streams: int
    # TaylorSeer caches every attention and MLP (Wan: self-, cross-attention, FFN) output of every block.
    taylorseer_values: int
    dynamic: DynamicVram | None = None


WAN_14B_FP8 = 14_290_000_000  # wan2.1/2.2 14B fp8_e4m3fn diffusion model
WORKLOADS = (
    # 19 double blocks (image attention + MLP, text attention + MLP) and 38 single ones (attention + MLP
    # over text and image tokens); FLUX.1-dev is guidance-distilled, so one stream.
    Workload("FLUX.1-dev 1024x1024 (4,096 + 512 text tokens x 3,072)", 4096, 4608, 3072, 1,
             (19 + 38) * 2 * 4608 * 3072, DynamicVram(11_900_000_000, (16, 128, 128), 3.1)),
    # 60 dual-stream blocks; image stream only (the prompt's length varies).
    Workload("Qwen-Image 1328x1328, cfg (6,889 x 3,072)", 6889, 6889, 3072, 2, 60 * 2 * 6889 * 3072),
    Workload("Wan 2.1 1.3B 832x480x81, cfg (32,760 x 1,536)", 32760, 32760, 1536, 2, 30 * 3 * 32760 * 1536),
    Workload("Wan 2.1 / 2.2 14B 832x480x81, cfg (32,760 x 5,120)", 32760, 32760, 5120, 2, 40 * 3 * 32760 * 5120,
             DynamicVram(WAN_14B_FP8, (16, 21, 60, 104), 5120 / 2222)),
    Workload("Wan 2.1 / 2.2 14B 1280x720x81, cfg (75,600 x 5,120)", 75600, 75600, 5120, 2, 40 * 3 * 75600 * 5120,
             DynamicVram(WAN_14B_FP8, (16, 21, 90, 160), 5120 / 2222)),
    # 20 double and 40 single blocks; HunyuanVideo is guidance-distilled too.
    Workload("HunyuanVideo 1280x720x129 (118,800 + 256 text tokens x 3,072)", 118800, 119056, 3072, 1,
             (20 + 40) * 2 * 119056 * 3072),
)


def node_memory(workload: Workload, budget: int | None = None, **settings):
    """The bound the node reports after its first call, with the node's defaults and ``settings``;
    ``budget``: the device bytes ``auto`` was given (None: nobody measured free memory)."""
    engine = CacheSettings(**{**DEFAULTS, **settings}).new_engine()
    engine.placement.configure(META, budget)
    return footprint(engine, (1, workload.image_tokens, workload.width), (1, workload.last_tokens, workload.width),
                     torch.bfloat16, workload.streams)


def dynamic_vram_decision(workload: Workload, card: int) -> str:
    """Where ``auto`` keeps the last block's caches on a ``card`` GiB card under Dynamic VRAM: GPU, RAM,
    or how many streams stayed on the GPU."""
    run = workload.dynamic
    budget = planner.auto_budget(card * GIB - TAKEN, run.comfy_estimate(), run.weights)
    memory = node_memory(workload, budget=budget, cache_device="auto")
    offloaded = round(workload.streams * memory.bound["host"] / node_memory(workload, cache_device="cpu").bound["host"])
    if offloaded == 0:
        return "GPU"
    return "RAM" if offloaded == workload.streams else f"{workload.streams - offloaded} of {workload.streams} GPU"


def gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if size < 1e10 else f"{size / 1e9:.0f} GB"


def row(workload: Workload) -> str:
    state = workload.last_tokens * workload.width * BYTES
    full_gate = node_memory(workload, cache_device="gpu", gate_share=1.0)
    on_device = node_memory(workload, cache_device="gpu")
    offloaded = node_memory(workload, cache_device="cpu")
    taylorseer = workload.taylorseer_values * (TAYLORSEER_ORDER + 1) * BYTES * workload.streams
    dynamic = "–" if workload.dynamic is None else " · ".join(
        f"{card}: {dynamic_vram_decision(workload, card)}" for card in CARDS)
    return (f"| {workload.name} | {state / 1e6:.0f} MB | {gb(state * workload.streams)} | {gb(taylorseer)} | "
            f"{gb(full_gate.device_bound)} | {gb(on_device.device_bound)} | "
            f"{gb(offloaded.device_bound)} + {gb(offloaded.bound['host'])} | {dynamic} |")


def table() -> str:
    orders = f"{DEFAULTS['first_block_order']}/{DEFAULTS['last_block_order']}"
    return "\n".join([
        f"| workload (bf16) | one state | one-state reuse caches (TeaCache-like) | TaylorSeer, order {TAYLORSEER_ORDER} "
        f"| CG-Taylor, orders {orders}, every token gated, GPU | CG-Taylor default, GPU (auto when it fits) | "
        "CG-Taylor default, offloaded (cpu, or auto when it does not fit): GPU + host | "
        f"auto under Dynamic VRAM, fp8 weights, {' / '.join(map(str, CARDS))} GB cards |",
        "|---|---|---|---|---|---|---|---|",
        *(row(w) for w in WORKLOADS),
    ])


if __name__ == "__main__":
    print(table())
