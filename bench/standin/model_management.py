"""comfy/model_management.py, as far as the node's memory plan reaches: what ``load_models_gpu`` was
asked for (v0.3.64 :606, the same parameters at v0.30.0), kept so that tests can read the plan."""

from __future__ import annotations

loads: list[dict] = []  # one entry per call, newest last (the models are not kept)


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    loads.append({"models": len(models), "memory_required": memory_required,
                  "minimum_memory_required": minimum_memory_required})
