"""Benchmarks, the demo, and the tiny ComfyUI-layout models they and the tests share.

Importing ``bench`` also makes this checkout importable as the package
``cgtaylor_cache``: ``nodes/`` uses relative imports (ComfyUI loads the pack folder as
a package), so scripts and tests reach it through that name. Outside ComfyUI it also
provides ComfyUI's V3 node API (``comfy_api.latest``), which the node is written against, as
bench/standin/comfy_api.py mirrors it.
"""

import importlib.util
import sys
from pathlib import Path

PACK_NAME = "cgtaylor_cache"
PACK_ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("comfy_api") is None:
    from .standin import comfy_api as _comfy_api

    _comfy_api.register()

if PACK_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    _pack = importlib.util.module_from_spec(_spec)
    sys.modules[PACK_NAME] = _pack
    _spec.loader.exec_module(_pack)
