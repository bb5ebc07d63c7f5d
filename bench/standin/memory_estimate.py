"""ComfyUI's memory estimate before sampling as newer releases make it (read, not run).

Mirrors, at Comfy-Org/ComfyUI 53757775 (after v0.33.0):
* comfy/model_patcher.py ``call_model_memory_required``: calls ``model.memory_required(*args,
  **kwargs)`` and adds ``memory_efficient_attention`` only when that method's
  ``inspect.signature`` takes it (a named parameter or ``**kwargs``), so model classes that
  override ``memory_required`` the old way keep working; a signature it cannot inspect gets no
  profile;
* comfy/sampler_helpers.py ``estimate_memory``: both estimates go through that helper, with the
  profile ``model.model_options.get("optimized_attention_memory_efficient")`` (set by
  ``ModelPatcher.set_model_optimized_attention(..., memory_efficient=)``; absent: None);
* comfy/model_base.py ``BaseModel.memory_required(input_shape, cond_shapes={},
  memory_efficient_attention=None)``: None falls back to ComfyUI's global attention choice; a
  memory-efficient attention plans ``area * dtype bytes * 0.01 * factor`` MB, another
  ``area * 0.15 * factor`` MB.

The CI tier swaps ``estimate_memory`` in for bench/standin/sampling.py's (v0.3.64's) one.
"""

from __future__ import annotations

import inspect
import math

from .sampling import FlowModel

# comfy.ldm.modules.attention.optimized_attention_memory_efficient: a CPU without xformers or flash
# attention runs the split attention, which is not memory-efficient.
GLOBAL_MEMORY_EFFICIENT_ATTENTION = False


def call_model_memory_required(model, *args, memory_efficient_attention=None, **kwargs):
    if memory_efficient_attention is not None:
        try:
            parameters = inspect.signature(model.memory_required).parameters
        except (TypeError, ValueError):
            parameters = None
        if parameters is not None:
            profile = parameters.get("memory_efficient_attention")
            takes_profile = (
                profile is not None
                and profile.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            ) or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            if takes_profile:
                kwargs["memory_efficient_attention"] = memory_efficient_attention
    return model.memory_required(*args, **kwargs)


def estimate_memory(model, noise_shape, conds: dict) -> tuple[float, float]:
    """The batch of cond and uncond, and one (these models have no conds that count, so
    ``cond_shapes`` stays empty, as in bench/standin/sampling.py)."""
    profile = model.model_options.get("optimized_attention_memory_efficient")
    memory_required = call_model_memory_required(
        model.model, [noise_shape[0] * 2] + list(noise_shape[1:]), cond_shapes={}, memory_efficient_attention=profile
    )
    minimum_memory_required = call_model_memory_required(
        model.model, [noise_shape[0]] + list(noise_shape[1:]), cond_shapes={}, memory_efficient_attention=profile
    )
    return memory_required, minimum_memory_required


class ProfiledFlowModel(FlowModel):
    """A BaseModel whose estimate takes the attention profile (model_base.py at 53757775)."""

    def memory_required(self, input_shape, cond_shapes={}, memory_efficient_attention=None) -> float:
        if memory_efficient_attention is None:
            memory_efficient_attention = GLOBAL_MEMORY_EFFICIENT_ATTENTION
        area = input_shape[0] * math.prod(input_shape[2:])
        if memory_efficient_attention:
            return (area * self.get_dtype().itemsize * 0.01 * self.memory_usage_factor) * (1024 * 1024)
        return (area * 0.15 * self.memory_usage_factor) * (1024 * 1024)
