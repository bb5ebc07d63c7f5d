"""comfy/model_management.py, as far as the node's memory plan reaches: what ``load_models_gpu`` was
asked for (v0.3.64 :606, the same parameters at v0.30.0), kept so that tests can read the plan, and
the free memory ComfyUI reads (``get_free_memory``), which a test sets.

The free memory newer patchers report also counts what comfy-aimdo's virtual VRAM would give back:
``comfy.memory_management.aimdo_enabled`` and ``comfy_aimdo.model_vbar.vbars_analyze()``, stood in
for by ``aimdo_enabled`` and ``aimdo_reclaimable`` here (read by bench/standin/patcher.py).
"""

from __future__ import annotations

loads: list[dict] = []  # one entry per call, newest last (the models are not kept)
free_bytes = 0  # what get_free_memory answers: the device's free memory, torch's freed blocks included
aimdo_enabled = False
aimdo_reclaimable = 0  # bytes of resident weights the VBARs would evict


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    loads.append({"models": len(models), "memory_required": memory_required,
                  "minimum_memory_required": minimum_memory_required})


def get_free_memory(dev=None, torch_free_too=False):
    """v0.33.0 :1748-1795: the device's free memory plus what torch holds free in its cache."""
    return (free_bytes, 0) if torch_free_too else free_bytes
