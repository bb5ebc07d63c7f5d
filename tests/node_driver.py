"""The node run as ComfyUI's executor runs a V3 node (execution.py ``_async_map_node_over_list`` at v0.33.0):
``execute`` on a class clone that holds the hidden inputs (``PREPARE_CLASS_CLONE``)."""

from __future__ import annotations

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`, and comfy_api outside ComfyUI)
from comfy_api.latest import io

from cgtaylor_cache.nodes.node import CGTaylorCache


def patched_by_node(patcher, unique_id: str | None = "7", prompt: dict | None = None, **settings):
    """The model the node returns for ``patcher`` with ``settings`` (every required one), as node ``unique_id``
    of the API-format ``prompt``."""
    hidden = {io.Hidden.unique_id: unique_id, io.Hidden.prompt: prompt}
    return CGTaylorCache.PREPARE_CLASS_CLONE({"hidden_inputs": hidden}).execute(patcher, **settings)[0]
