"""The README's memory table: what each cache keeps at real sizes, computed from shapes.

    python -m bench.memory        # prints the table; tests/test_memory.py checks the README holds it

CG-Taylor's columns are the node's own accounting (core/footprint.py: one first call driven
through the engine with meta tensors, nothing allocated); the others are the arithmetic their
descriptions give. bf16 states, 1 GB = 10^9 bytes. Tokens x width from the models' published
dimensions; cfg runs keep one stream per cond and uncond.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import cgtaylor_cache  # noqa: F401  (registered by bench/__init__.py)
from cgtaylor_cache.core.footprint import META, footprint
from cgtaylor_cache.nodes.node import DEFAULTS
from cgtaylor_cache.nodes.settings import CacheSettings

BYTES = 2  # bf16
TAYLORSEER_ORDER = 1


@dataclass(frozen=True)
class Workload:
    name: str
    image_tokens: int  # block 0's output: what the gate compares
    last_tokens: int  # the last block's state (FLUX.1, HunyuanVideo: text tokens joined)
    width: int
    streams: int
    # TaylorSeer caches every attention and MLP (Wan: self-, cross-attention, FFN) output of every block.
    taylorseer_values: int


WORKLOADS = (
    # 19 double blocks (image attention + MLP, text attention + MLP) and 38 single ones (attention + MLP
    # over text and image tokens); FLUX.1-dev is guidance-distilled, so one stream.
    Workload("FLUX.1-dev 1024x1024 (4,096 + 512 text tokens x 3,072)", 4096, 4608, 3072, 1,
             (19 + 38) * 2 * 4608 * 3072),
    # 60 dual-stream blocks; image stream only (the prompt's length varies).
    Workload("Qwen-Image 1328x1328, cfg (6,889 x 3,072)", 6889, 6889, 3072, 2, 60 * 2 * 6889 * 3072),
    Workload("Wan 2.1 1.3B 832x480x81, cfg (32,760 x 1,536)", 32760, 32760, 1536, 2, 30 * 3 * 32760 * 1536),
    Workload("Wan 2.1 / 2.2 14B 1280x720x81, cfg (75,600 x 5,120)", 75600, 75600, 5120, 2, 40 * 3 * 75600 * 5120),
    # 20 double and 40 single blocks; HunyuanVideo is guidance-distilled too.
    Workload("HunyuanVideo 1280x720x129 (118,800 + 256 text tokens x 3,072)", 118800, 119056, 3072, 1,
             (20 + 40) * 2 * 119056 * 3072),
)


def node_memory(workload: Workload, **settings):
    """The bound the node reports after its first call, with the node's defaults and ``settings``."""
    engine = CacheSettings(**{**DEFAULTS, **settings}).new_engine()
    engine.placement.configure(META, None)
    return footprint(engine, (1, workload.image_tokens, workload.width), (1, workload.last_tokens, workload.width),
                     torch.bfloat16, workload.streams)


def gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if size < 1e10 else f"{size / 1e9:.0f} GB"


def row(workload: Workload) -> str:
    state = workload.last_tokens * workload.width * BYTES
    full_gate = node_memory(workload, cache_device="gpu", gate_share=1.0)
    on_device = node_memory(workload, cache_device="gpu")
    offloaded = node_memory(workload, cache_device="cpu")
    taylorseer = workload.taylorseer_values * (TAYLORSEER_ORDER + 1) * BYTES * workload.streams
    return (f"| {workload.name} | {state / 1e6:.0f} MB | {gb(state * workload.streams)} | {gb(taylorseer)} | "
            f"{gb(full_gate.device_bound)} | {gb(on_device.device_bound)} | "
            f"{gb(offloaded.device_bound)} + {gb(offloaded.bound['host'])} |")


def table() -> str:
    orders = f"{DEFAULTS['first_block_order']}/{DEFAULTS['last_block_order']}"
    return "\n".join([
        f"| workload (bf16) | one state | one-state reuse caches (TeaCache-like) | TaylorSeer, order {TAYLORSEER_ORDER} "
        f"| CG-Taylor, orders {orders}, every token gated, GPU | CG-Taylor default, GPU (auto when it fits) | "
        "CG-Taylor default, offloaded (cpu, or auto when it does not fit): GPU + host |",
        "|---|---|---|---|---|---|---|",
        *(row(w) for w in WORKLOADS),
    ])


if __name__ == "__main__":
    print(table())
