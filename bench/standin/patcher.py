"""Wrappers and the model patcher, as far as the node uses them.

Mirrors comfy/patcher_extension.py:49-129 (WrappersMP, get_all_wrappers, WrapperExecutor)
and comfy/model_patcher.py at v0.3.64 (__init__ :219-236, clone :284-340, set_model_options_patch_replace :54-73,
set_model_patch :405-409, set_model_patch_replace :411-412, wrapper methods :934-953,
get_model_object :466-486 with object patches :453-454, :291, :746-749, :794-798,
set_model_options_post_cfg_function :75-79 with
set_model_sampler_post_cfg_function :390-391; v0.30.0: :93-112, :114-118, :646-647), and at v0.33.0
the sizes a memory decision reads (``is_dynamic`` :402-403, ``model_size`` :405-409, ``loaded_size``
:411-412) with Dynamic VRAM's patcher (``ModelPatcherDynamic`` :1749-1811). v0.30.0 differs in one
way that matters here: ``clone()``
copies model_options with comfy/utils.py:1476-1493 ``deepcopy_list_dict`` (model_patcher.py:453),
which copies dicts and lists and shares every other object, where v0.3.64 deep-copied.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from . import model_management
from .protocol import LEGACY, Protocol


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"
    PREDICT_NOISE = "predict_noise"


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options: bool = False) -> list[Callable]:
    if is_model_options:
        transformer_options = transformer_options.get("transformer_options", {})
    found = []
    for wrappers in transformer_options.get("wrappers", {}).get(wrapper_type, {}).values():
        found.extend(wrappers)
    return found


class WrapperExecutor:
    """Calls the wrappers in order, the original last; ``class_obj`` is the wrapped instance."""

    def __init__(self, original: Callable, class_obj: object, wrappers: list[Callable], idx: int) -> None:
        self.original = original
        self.class_obj = class_obj
        self.wrappers = wrappers.copy()
        self.idx = idx
        self.is_last = idx == len(wrappers)

    def __call__(self, *args, **kwargs):
        return WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1).execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    @classmethod
    def new_executor(cls, original: Callable, wrappers: list[Callable], idx: int = 0):
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: object, wrappers: list[Callable], idx: int = 0):
        return cls(original, class_obj, wrappers, idx)


def copy_nested_dicts(input_dict: dict) -> dict:
    """comfy/patcher_extension.py:136-143 (create_model_options_clone in model_patcher.py:87-88)."""
    copied = input_dict.copy()
    for key, value in input_dict.items():
        if isinstance(value, dict):
            copied[key] = copy_nested_dicts(value)
        elif isinstance(value, list):
            copied[key] = value.copy()
    return copied


def deepcopy_list_dict(obj, memo: dict | None = None):
    """comfy/utils.py:1476-1493 (v0.30.0): dicts and lists copied, everything else shared."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        copied = {deepcopy_list_dict(k, memo): deepcopy_list_dict(v, memo) for k, v in obj.items()}
    elif isinstance(obj, list):
        copied = [deepcopy_list_dict(item, memo) for item in obj]
    else:
        copied = obj
    memo[id(obj)] = copied
    return copied


def set_model_options_patch_replace(model_options: dict, patch: Callable, name: str, block_name: str,
                                    number: int) -> dict:
    """comfy/model_patcher.py:54-73: a block patch set on (copies of) the options' inner dicts only, so
    the options it was copied from (SkipLayerGuidance: the sampler's) keep their own patches."""
    options = model_options["transformer_options"].copy()
    replace = options.get("patches_replace", {}).copy()
    replace[name] = {**replace.get(name, {}), (block_name, number): patch}
    options["patches_replace"] = replace
    model_options["transformer_options"] = options
    return model_options


class ModelPatcher:
    """``model`` is the BaseModel-like object whose ``diffusion_model`` the node patches; ``load_device``
    and ``offload_device`` as ComfyUI's (:219-236; default: where the weights are, and the CPU)."""

    def __init__(self, model: nn.Module, protocol: Protocol = LEGACY, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None) -> None:
        self.model = model
        self.protocol = protocol
        self.load_device = load_device or next(model.parameters(), torch.empty(0)).device
        self.offload_device = offload_device or torch.device("cpu")
        self.model_options: dict = {"transformer_options": {}}
        self.wrappers: dict[str, dict[str, list[Callable]]] = {}
        self.object_patches: dict[str, object] = {}

    def clone(self) -> ModelPatcher:
        clone = type(self)(self.model, self.protocol, self.load_device, self.offload_device)  # :431 self.__class__
        copy_options = deepcopy_list_dict if self.protocol.clone_shares_objects else copy.deepcopy
        clone.model_options = copy_options(self.model_options)
        clone.wrappers = {kind: {key: list(w) for key, w in by_key.items()} for kind, by_key in self.wrappers.items()}
        clone.object_patches = self.object_patches.copy()  # :291
        return clone

    def is_dynamic(self) -> bool:
        return False

    def model_size(self) -> int:
        """The bytes of the model's parameters and buffers (model_management.module_size)."""
        return sum(t.numel() * t.element_size() for t in itertools.chain(self.model.parameters(), self.model.buffers()))

    def loaded_size(self) -> int:
        """The bytes of weights loading put on the load device (``model_loaded_weight_memory``)."""
        return getattr(self.model, "model_loaded_weight_memory", 0)

    def set_model_patch(self, patch: Callable, name: str) -> None:
        options = self.model_options["transformer_options"]
        options.setdefault("patches", {})
        options["patches"][name] = options["patches"].get(name, []) + [patch]

    def set_model_patch_replace(self, patch: Callable, name: str, block_name: str, number: int) -> None:
        options = self.model_options["transformer_options"].copy()  # copy-on-write, as ComfyUI does
        replace = options.get("patches_replace", {}).copy()
        replace[name] = {**replace.get(name, {}), (block_name, number): patch}
        options["patches_replace"] = replace
        self.model_options["transformer_options"] = options

    def set_model_sampler_post_cfg_function(self, post_cfg_function: Callable) -> None:
        options = self.model_options
        options["sampler_post_cfg_function"] = options.get("sampler_post_cfg_function", []) + [post_cfg_function]

    def add_wrapper_with_key(self, wrapper_type: str, key: str, wrapper: Callable) -> None:
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type: str, key: str) -> None:
        self.wrappers.get(wrapper_type, {}).pop(key, None)

    def add_object_patch(self, name: str, obj: object) -> None:
        """:453-454: an attribute of the model (dotted path) replaced while the model is loaded."""
        self.object_patches[name] = obj

    def get_model_object(self, name: str):
        """:466-486: an object patch first, else the model's own attribute."""
        if name in self.object_patches:
            return self.object_patches[name]
        return _get_attr(self.model, name)

    @contextmanager
    def objects_patched(self):
        """What loading the model does to object patches (patch_model :746-749, unpatch_model :794-798):
        set on the model for the sampling run, the originals put back afterwards."""
        backup = {name: _get_attr(self.model, name) for name in self.object_patches}
        try:
            for name, obj in self.object_patches.items():
                _set_attr(self.model, name, obj)
            yield
        finally:
            for name, obj in backup.items():
                _set_attr(self.model, name, obj)


class FreeMemoryModelPatcher(ModelPatcher):
    """The patcher's own free-memory figure, present from v0.30.0 on (comfy/model_patcher.py
    ``get_free_memory`` :417-425 at v0.33.0, unchanged at Comfy-Org 08d0e510 and 53757775): what
    ``model_management.get_free_memory`` reads, plus, with comfy-aimdo enabled, what its VBARs would
    give back (``vbars_analyze``). ComfyUI batches cond and uncond by it (comfy/samplers.py :273)."""

    def get_free_memory(self, device: torch.device) -> int:
        aimdo = model_management.aimdo_reclaimable if model_management.aimdo_enabled else 0
        return model_management.get_free_memory(device) + aimdo


class DynamicModelPatcher(ModelPatcher):
    """``ModelPatcherDynamic``: loading only reserves the weights' address space (a VBAR, kept on the
    model and shared by clones, ``model.dynamic_vbars``); they enter the device as the model runs, and
    ``loaded_size`` is the VBAR's resident bytes plus the weights loaded outright (:1809-1811). Here the
    model's ``vbar_resident`` bytes stand for the VBAR's ``loaded_size()``."""

    def is_dynamic(self) -> bool:
        return True

    def loaded_size(self) -> int:
        return getattr(self.model, "vbar_resident", 0) + super().loaded_size()


def _get_attr(obj: object, name: str):
    """comfy/utils.py get_attr: a dotted attribute path."""
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _set_attr(obj: object, name: str, value: object) -> None:
    *path, last = name.split(".")
    setattr(_get_attr(obj, ".".join(path)) if path else obj, last, value)
