"""What ComfyUI hands the node's hooks, read alike on every release the node supports.

Owned here: where a hook finds the options of its call, which streams a call holds, which of the
node's block patches another node replaced, where a block loop says it is (releases since v0.30.0),
which other caches sit on the model, the sampler's and the model's names for the run's record.
Each function reads; none keeps anything. Names of ComfyUI's code are cited by file and function
(and the release they were read at, where releases differ), never by line.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .families import BlockLayout

BlockKey = tuple[str, int]

# Why a model class may make every call around the DIFFUSION_MODEL wrapper and the block patches.
BYPASS_REASONS = {
    # comfy/ldm/wan/ar_model.py ``CausalWanModel.forward`` (read at v0.30.0): with
    # transformer_options["ar_state"] set by the ar_video sampler it runs ``forward_block``, which
    # calls the blocks directly.
    "CausalWanModel": "autoregressive sampling calls its blocks directly, past every model patch",
}

UNWRAPPED_CALLS = (
    "the model ran its blocks without calling DIFFUSION_MODEL wrappers, so nothing was cached; "
    "this ComfyUI is older than the node needs: update ComfyUI"
)


def transformer_options_of(args: tuple, kwargs: dict) -> dict:
    """``transformer_options`` of a DIFFUSION_MODEL call: the last positional dict (``Flux.forward`` and
    ``WanModel.forward`` hand their ``_forward`` its arguments with it last) or a keyword."""
    options = kwargs.get("transformer_options")
    if isinstance(options, dict):
        return options
    return next((arg for arg in reversed(args) if isinstance(arg, dict)), {})


def stream_keys(options: dict, x: torch.Tensor, replaced: tuple[BlockKey, ...] = ()) -> list:
    """One stream per conditioning entry (cond/uncond uuid), context window and set of blocks
    other nodes replaced for the call (a skip-layer call shares the positive cond's uuid)."""
    entries = list(options.get("uuids") or options.get("cond_or_uncond") or [None])
    window = options.get("context_window")
    window_key = tuple(getattr(window, "index_list", ()) or ()) if window is not None else None
    extra = (replaced,) if replaced else ()
    if x.shape[0] % len(entries):
        return [(tuple(entries), window_key, *extra)]
    return [(entry, window_key, *extra) for entry in entries]


def stream_roles(options: dict, keys: list, replaced: tuple[BlockKey, ...] = ()) -> list[int | None]:
    """Each stream's place in the guidance pair: ComfyUI's ``cond_or_uncond`` (0 the cond, 1 the uncond, the
    index of any further entry of the guider's conds), one per stream. A call whose blocks another node
    replaced (SkipLayerGuidanceDiT's extra call) computes another prediction than the pair's: no role."""
    roles = options.get("cond_or_uncond")
    if replaced or not isinstance(roles, (list, tuple)) or len(roles) != len(keys):
        return [None] * len(keys)
    return [role if isinstance(role, int) else None for role in roles]


def replaced_patches(options: dict, layout: BlockLayout, owner: object) -> tuple[BlockKey, ...]:
    """The keys whose ``patches_replace["dit"]`` patch in this call is not ``owner``'s.

    SkipLayerGuidanceDiT replaces patches per call: its extra call per step runs the positive cond
    with skip patches set on a copy of the sampler's model_options (comfy_extras/nodes_slg.py, the
    post-CFG function ``SkipLayerGuidanceDiT`` sets), whatever the node order."""
    patches = options.get("patches_replace", {}).get("dit", {})
    return tuple(key for key in layout.keys if getattr(patches.get(key), "cgtaylor_runtime", None) is not owner)


def replacement_note(replaced: tuple[BlockKey, ...], layout: BlockLayout) -> str:
    """What the run says of calls whose block patches (``replaced``) another node replaced: with block 0's or
    the last block's gone they are computed in full; otherwise they are cached as streams of their own."""
    shown = ", ".join(f"{name} {index}" for name, index in replaced)
    if layout.first in replaced or layout.last in replaced:
        return (f"another node's block patches replaced CGTaylorCache's on {shown} for some calls, including "
                "block 0 or the last block, so those calls were computed in full (SkipLayerGuidanceDiT does "
                "this for its extra call in either node order: leave the first and last block out of its "
                "layers to have it cached; a node that patches the model itself goes before CGTaylorCache)")
    return (f"another node's block patches replaced CGTaylorCache's on {shown} for some calls "
            "(e.g. SkipLayerGuidanceDiT's extra call); those calls were cached as streams of their own")


def block_position_error(layout: BlockLayout, key: BlockKey, args: dict) -> str | None:
    """Why the patch for ``key`` cannot trust its place in the block loop, or None. Since v0.30.0 the
    block loops say where they are (``block_type``, ``block_index``, ``total_blocks`` in
    transformer_options: ``Flux.forward_orig``, ``WanModel.forward_orig``); a patch reached elsewhere
    than its key says means the model's loop is not the one the layout describes. Older releases do
    not tell."""
    options = args.get("transformer_options")
    if not isinstance(options, dict) or "block_index" not in options or "block_type" not in options:
        return None
    where = (f"{options['block_type']}_block", options["block_index"])
    total, expected_total = options.get("total_blocks"), layout.group_size(key[0])
    if where == key and (total is None or expected_total is None or total == expected_total):
        return None
    return (f"the patch for {key} ran at {where} of {total} blocks, but {layout.model_class} was "
            f"expected to run {expected_total} {key[0]}s; this model's block loop differs from what the node knows")


def other_caches(model_options: dict | None, own_key: str) -> list[str]:
    """The other caches on the model a run samples: ComfyUI's EasyCache and LazyCache keep their holder in
    ``transformer_options["easycache"]`` (comfy_extras/nodes_easycache.py, named by its ``name``), and caches
    of other packs register their wrappers under keys that name them (this node's own: ``own_key``)."""
    options = model_options.get("transformer_options", {}) if isinstance(model_options, dict) else {}
    names = []
    holder = options.get("easycache")
    if holder is not None:
        names.append(str(getattr(holder, "name", "EasyCache")))
    for by_key in (options.get("wrappers") or {}).values():
        names += [key for key in by_key if key not in (own_key, "easycache") and "cache" in key.lower()]
    return list(dict.fromkeys(names))


# Sampler functions whose name is not ComfyUI's name for the sampler (comfy/samplers.py ``sampler_object``:
# "uni_pc" and "uni_pc_bh2" are comfy/extra_samplers/uni_pc.py's ``sample_unipc`` and ``sample_unipc_bh2``).
SAMPLER_NAMES = {"unipc": "uni_pc", "unipc_bh2": "uni_pc_bh2"}


def sampler_name(sampler) -> str | None:
    """ComfyUI's name for a sampler object: comfy/samplers.py ``KSAMPLER`` keeps the k-diffusion function
    (``sample_euler_cfg_pp`` -> ``euler_cfg_pp``; ``ksampler()`` wraps dpm_fast and dpm_adaptive in
    ``dpm_fast_function`` and ``dpm_adaptive_function``); None for samplers that keep none."""
    name = getattr(getattr(sampler, "sampler_function", None), "__name__", None)
    if not isinstance(name, str):
        return None
    name = name.removeprefix("sample_").removesuffix("_function")
    return SAMPLER_NAMES.get(name, name)


def percent_to_sigma(guider) -> Callable[[float], float] | None:
    """The model's ``percent_to_sigma`` (comfy/model_sampling.py), through the guider OUTER_SAMPLE runs on
    (``executor.class_obj``, as comfy_extras/nodes_easycache.py reads it); None where there is none."""
    patcher = getattr(guider, "model_patcher", None)
    try:
        model_sampling = patcher.get_model_object("model_sampling")
    except Exception:  # another guider, or a model without model sampling
        return None
    function = getattr(model_sampling, "percent_to_sigma", None)
    return function if callable(function) else None


def compute_dtype(base_model) -> torch.dtype:
    """The dtype the model's hidden states have: its manual-cast dtype, else its weights'
    (comfy/model_base.py ``BaseModel.manual_cast_dtype``, ``get_dtype``)."""
    return getattr(base_model, "manual_cast_dtype", None) or base_model.get_dtype()
