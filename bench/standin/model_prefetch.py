"""comfy/model_prefetch.py's allocation-graph pause, as far as the node uses it.

ComfyUI after v0.33 (read in the search index at Comfy-Org/ComfyUI and zhongzichang/ComfyUI
v0.38.0, not run: no release that has it could be built here) plans each block's allocations
with a "malloc graph" recorded per thread (``malloc_graph_begin``); ``pause_malloc_graph(sync=False)``
returns a ``_PauseMallocGraph`` context that pauses the calling thread's active graph on entry and
resumes it on exit, so what is allocated inside stays out of the plan. Here the graph is a depth
counter a test reads, one per thread as ComfyUI keeps them (``MALLOC_GRAPHS[threading.get_ident()]``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_paused = threading.local()


def paused() -> bool:
    """Whether the calling thread's graph is paused now."""
    return getattr(_paused, "depth", 0) > 0


@contextmanager
def pause_malloc_graph(sync: bool = False):
    _paused.depth = getattr(_paused, "depth", 0) + 1
    try:
        yield
    finally:
        _paused.depth -= 1
