"""Telling ComfyUI's memory planner about the cache, and choosing where the cache lives.

ComfyUI decides how much memory a run needs before it loads the model: ``prepare_sampling``
runs the PREPARE_SAMPLING wrappers around ``_prepare_sampling``, which asks ``estimate_memory``
for two numbers and hands them to ``load_models_gpu`` (comfy/sampler_helpers.py ``prepare_sampling``,
``_prepare_sampling``, ``estimate_memory``: the same calls at v0.3.64, v0.30.0 and v0.33.0):

* ``memory_required = model.model.memory_required([2 * batch, ...])``: cond and uncond together,
  what ComfyUI unloads other models to make room for;
* ``minimum_memory_required = model.model.memory_required([batch, ...])``: the least it keeps
  free, below which it loads this model's weights only partly (comfy/model_management.py
  ``load_models_gpu``).

Newer ComfyUI (Comfy-Org 53757775, read, not run) asks through
``comfy.model_patcher.call_model_memory_required(model.model, shape, cond_shapes=...,
memory_efficient_attention=...)``: it looks the method up on the base model as before, and passes
the attention profile only when ``inspect.signature`` of that method takes it (a model class that
overrides ``memory_required`` the old way keeps working). So the node's replacement carries the
signature of the method it replaces (``functools.wraps``): ComfyUI then passes the profile exactly
when it would without the node, and the cache is added on both paths.

Nothing else in that path takes an extra amount, so while the node's wrapper runs, the base
model's ``memory_required`` answers ComfyUI's own estimate plus the cache's device bound. Both
numbers count every stream the conditioning makes (one per entry: cond and uncond): the minimum's
one-sample batch is the case where the model only partly fits and ComfyUI runs cond and uncond as
separate calls, but both streams' caches stay resident between them. The previous attribute is
put back when the wrapper returns, so no state stays on the shared model. The bound comes from the
engine's own accounting run on meta tensors of the planned shapes (core/footprint.py).

Placement (``cache_device``; core/placement.py ``Placement`` decides it, nodes/memory_plan.py asks):

* ``gpu``: both numbers grow by the whole cache; ComfyUI makes room, offloading weights if it must.
* ``cpu``: both grow by what stays on the device (block 0's sampled cache, the working slices);
  the last block's cache rests in system RAM (``HOST``), never on the patcher's offload device,
  which is the GPU itself under --highvram and --gpu-only.
* ``auto``: the first grows by the whole cache (ComfyUI unloads other models for it if it can),
  the minimum only as for ``cpu`` (ComfyUI never offloads this model's weights for the cache's
  sake). Once the model is loaded, a stream's cache stays on the device while the caches placed
  there fit in ``AUTO_SHARE`` of the memory then free (as ComfyUI judges it, ``free_memory``)
  beyond ComfyUI's own activation estimate and the weights still to come (``weights_to_come``:
  under Dynamic VRAM loading only reserves the weights' place, and they fill the device during the
  first steps); the rest goes to system RAM.
  A model that runs on the CPU keeps ``auto`` as ``gpu``: there is nothing to offload to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..core import ForecastEngine
from ..core.footprint import footprint
from .families import BlockLayout

# Share of the device memory left free after loading, beyond ComfyUI's activation estimate, that
# ``auto`` lets the caches take; the rest stays a margin (allocator fragmentation, estimates).
AUTO_SHARE = 0.9
# Where offloaded states rest: system RAM.
HOST = torch.device("cpu")


@dataclass(frozen=True)
class PlannedShapes:
    """Per stream, block 0's output (what the gate samples) and the last block's state."""

    gate: tuple[int, ...]
    last: tuple[int, ...]
    dtype: torch.dtype


def planned_shapes(layout: BlockLayout, diffusion_model: torch.nn.Module, noise_shape, conds: dict,
                   dtype: torch.dtype) -> PlannedShapes | None:
    """The hidden states one sample will have, from the latent's shape and the model's patch size and
    width (and the text and reference tokens the conditioning adds); None for a layout whose states
    this cannot tell (LTX-2's video and audio parts), or a model without the usual attributes.

    Every family patchifies the latent's trailing dimensions (comfy/ldm/common_dit.py
    pad_to_patch_size pads them up to whole patches): FLUX.1, Chroma, Qwen-Image by ``patch_size``
    (an int, the last two dimensions), Wan and HunyuanVideo by ``patch_size`` per dimension, LTX-Video
    by its ``patchifier.patch_size``. The width is ``hidden_size`` (FLUX.1, Chroma, HunyuanVideo),
    ``inner_dim`` (Qwen-Image, LTX-Video) or ``dim`` (Wan). Reference latents (Kontext, Qwen-Image-Edit:
    ``reference_latents`` of a conditioning) add their tokens to the image's; where the last block sees
    text and image tokens together, the longest prompt's tokens are added to its state."""
    if layout.state_kind != "tensor":
        return None
    width = next((w for w in (getattr(diffusion_model, n, None) for n in ("hidden_size", "inner_dim", "dim"))
                  if isinstance(w, int)), None)
    patch = getattr(diffusion_model, "patch_size", None)
    if patch is None:
        patch = getattr(getattr(diffusion_model, "patchifier", None), "patch_size", None)
    if width is None or patch is None:
        return None
    entries = [entry for group in conds.values() for entry in group if isinstance(entry, dict)]
    tokens = _tokens(noise_shape[2:], patch)
    tokens += max((sum(_tokens(ref.shape[2:], patch) for ref in entry.get("reference_latents") or ())
                   for entry in entries), default=0)
    batch = noise_shape[0]
    last = tokens
    if layout.joins_text and layout.keys[-1][0] != layout.keys[0][0]:
        last += max((entry["cross_attn"].shape[1] for entry in entries
                     if isinstance(entry.get("cross_attn"), torch.Tensor)), default=0)
    if dtype.itemsize < 2:  # 8-bit weights compute in a wider dtype (model_base manual_cast_dtype)
        dtype = torch.bfloat16
    return PlannedShapes((batch, tokens, width), (batch, last, width), dtype)


def _tokens(spatial, patch) -> int:
    sizes = list(spatial)
    patches = [patch] * min(2, len(sizes)) if isinstance(patch, int) else list(patch)[-len(sizes):]
    patches = [1] * (len(sizes) - len(patches)) + patches
    return math.prod(math.ceil(size / p) for size, p in zip(sizes, patches))


def stream_count(conds: dict) -> int:
    """How many streams the run's conditioning makes: one per entry of every group (positive,
    negative), as nodes/comfy_calls.py ``stream_keys`` names them by their uuids; at least one."""
    return max(1, sum(isinstance(entry, dict) for group in conds.values() for entry in group))


def device_bytes(new_engine: Callable[[], ForecastEngine], shapes: PlannedShapes, streams: int, offload: bool) -> int:
    """What ``streams`` streams' caches take on the device, last block's cache offloaded or not."""
    return footprint(new_engine(), shapes.gate, shapes.last, shapes.dtype, streams, offload).device_bound


@dataclass
class Plan:
    """What the node asked ComfyUI for, and what ComfyUI itself planned (its 2-stream estimate)."""

    added: int | None = None  # bytes added to ComfyUI's 2-stream estimate
    comfy_estimate: float | None = None  # ComfyUI's own 2-stream estimate, without the cache


@contextmanager
def cache_in_plan(base_model, noise_batch: int, full_bytes: int, minimum_bytes: int, plan: Plan):
    """While ComfyUI prepares sampling, ``base_model.memory_required`` adds the cache: ``full_bytes`` to
    ComfyUI's estimate for cond and uncond together (a batch larger than the noise's), ``minimum_bytes``
    to its estimate for one."""
    own = vars(base_model).get("memory_required")
    original = base_model.memory_required

    @functools.wraps(original)  # its signature: what call_model_memory_required inspects
    def memory_required(input_shape, *args, **kwargs):
        estimate = original(input_shape, *args, **kwargs)
        if int(input_shape[0]) > noise_batch:
            plan.added, plan.comfy_estimate = full_bytes, estimate
            return estimate + full_bytes
        return estimate + minimum_bytes

    base_model.memory_required = memory_required
    try:
        yield plan
    finally:
        if own is None:
            del base_model.memory_required
        else:
            base_model.memory_required = own


def free_memory(patcher, device: torch.device) -> int | None:
    """Bytes free on ``device`` as the ComfyUI the node runs in judges them for sampling; None
    outside ComfyUI.

    Where the patcher has ``get_free_memory`` (v0.30.0 on: comfy/model_patcher.py :417-425 at
    v0.33.0, the same at Comfy-Org 08d0e510), that is the figure: torch's free memory plus what
    comfy-aimdo's virtual VRAM would give back by evicting resident weights. ComfyUI decides with it
    whether cond and uncond run as one batch (comfy/samplers.py :273 at v0.33.0), preferring
    activations over resident weights; ``auto`` weighs the cache against the same figure. Weights
    Dynamic VRAM has yet to load still count as free in it, as before (``weights_to_come`` takes them
    off). Older ComfyUI has no such method: ``comfy.model_management.get_free_memory`` (its cache of
    freed blocks included)."""
    own = getattr(patcher, "get_free_memory", None)
    if callable(own):
        return int(own(device))
    try:
        import comfy.model_management as model_management
    except ImportError:
        return None
    return int(model_management.get_free_memory(device))


def weights_to_come(patcher) -> int:
    """Bytes of the model's weights not yet on the device that will want to be there: under Dynamic
    VRAM (ComfyUI's default on NVIDIA since 2026), ``ModelPatcherDynamic.load`` only reserves the
    weights' address space and they fill the device during the first steps, so the memory free right
    after loading still counts them as free (comfy/model_patcher.py at v0.33.0: ``ModelPatcherDynamic.is_dynamic``
    and ``loaded_size``, the resident part; ``ModelPatcher.model_size``, all of them). A classic
    patcher has loaded what fits and streams the rest from system RAM on purpose: 0."""
    is_dynamic = getattr(patcher, "is_dynamic", None)
    if not callable(is_dynamic) or not is_dynamic():
        return 0
    return max(0, int(patcher.model_size()) - int(patcher.loaded_size()))


def auto_budget(free_after_load: int | None, comfy_estimate: float | None, to_come: int = 0) -> int | None:
    """Bytes ``auto`` may keep on the device: ``AUTO_SHARE`` of what loading left free beyond ComfyUI's
    activation estimate and the weights still to come (``weights_to_come``); None when the free memory
    is not known (then the cache stays on the device)."""
    if free_after_load is None:
        return None
    return int(AUTO_SHARE * max(0.0, free_after_load - (comfy_estimate or 0.0) - to_come))
