"""What keeps the cache's decisions out of code that is compiled, captured or allocation-planned.

Owned here, used by nodes/runtime.py (the hooks) and nodes/sampling_run.py (the run):

* ``torch.compile``: per-block compile never sees the cache, whose decisions are taken outside the
  blocks. Under whole-model compile (TorchCompileModel compiles the diffusion model with the hooks
  inside it) each hook's own frame and every decision run eagerly (``eager_frame``, ``eager``), while
  the model code they call, blocks included, still compiles: the graphs follow the block loop, never
  the cache's state, so a run does not recompile as decisions change.
* CUDA graphs: a graph captured around the blocks would replay one call's decisions on every step, so
  a capture in progress (``capturing``) turns the cache off for the run (``CAPTURED`` says why).
* ComfyUI's allocation graph: cache states outlive the call, so the engine allocates with ComfyUI's
  "malloc graph" paused (``outside_allocation_graph``).
"""

from __future__ import annotations

import contextlib

import torch

# A hook's own frame runs eagerly; what it calls (the model, its blocks) is still compiled.
eager_frame = torch.compiler.disable(recursive=False)
# A decision, with everything it calls, runs eagerly: no guard ever depends on the cache's state.
eager = torch.compiler.disable

CAPTURED = (
    "a CUDA graph was being captured around the model's blocks: a captured graph replays the same kernels on "
    "every step, so a per-step decision to skip blocks cannot live inside it; the run is computed in full. "
    "Turn off what captures the model (ComfyUI: --disable-cuda-graphs; another node's CUDA-graph option) "
    "to use the cache"
)


@eager
def capturing() -> bool:
    """Whether a CUDA graph is being captured on this thread's stream (ComfyUI's own since v0.33,
    comfy/model_prefetch.py ``prefetch_queue_pop``, or another node's)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


_PAUSE_ALLOCATION_GRAPH: list = []  # ComfyUI's pause_malloc_graph once looked up (None: this ComfyUI has none)


def outside_allocation_graph():
    """The engine's own allocations kept out of ComfyUI's model compiler. After v0.33.0 (read in the
    index, not run) comfy/model_prefetch.py records each block's allocations in a "malloc graph" and
    replays the plan on the next step; MiniMax H3's forward opens one around the DIFFUSION_MODEL
    wrappers (comfy/ldm/minimax/model.py ``MiniMaxH3Model``, read at v0.38.0). Cache states outlive the
    call, so they are made with the graph paused (``pause_malloc_graph``), as ComfyUI's own Qwen-Image
    2.1 prefix cache is. A no-op where ComfyUI has no such graph (v0.33 and older, outside ComfyUI)."""
    if not _PAUSE_ALLOCATION_GRAPH:
        try:
            from comfy.model_prefetch import pause_malloc_graph
        except ImportError:
            pause_malloc_graph = None
        _PAUSE_ALLOCATION_GRAPH.append(pause_malloc_graph)
    pause = _PAUSE_ALLOCATION_GRAPH[0]
    return contextlib.nullcontext() if pause is None else pause()
