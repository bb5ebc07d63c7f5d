"""TorchCompileModel, as ComfyUI runs it: the whole diffusion model compiled, swapped in per call.

Mirrors comfy_api/torch_helpers/torch_compile.py (identical at v0.3.64 a125cd84 and v0.30.0
b1693ecb): ``set_torch_compile_wrapper`` (:33-69) compiles ``get_model_object(key)`` for each key
(``["diffusion_model"]`` by default, the only thing comfy_extras/nodes_torch_compile.py's node
passes) and adds an APPLY_MODEL wrapper (``apply_torch_compile_factory``, :16-30) that sets the
compiled module on the BaseModel for the call and puts the original back afterwards. So the
node's DIFFUSION_MODEL wrapper and block patches run inside the compiled forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .patcher import ModelPatcher, WrappersMP, _get_attr, _set_attr

COMPILE_KEY = "torch.compile"


def apply_torch_compile_factory(compiled_module_dict: dict[str, Callable]) -> Callable:
    def apply_torch_compile_wrapper(executor, *args, **kwargs):
        originals = {}
        try:
            for key, value in compiled_module_dict.items():
                originals[key] = _get_attr(executor.class_obj, key)
                _set_attr(executor.class_obj, key, value)
            return executor(*args, **kwargs)
        finally:
            for key, value in originals.items():
                _set_attr(executor.class_obj, key, value)

    return apply_torch_compile_wrapper


def set_torch_compile_wrapper(model: ModelPatcher, backend: str, options: dict | None = None, mode: str | None = None,
                              fullgraph: bool = False, dynamic: bool | None = None,
                              keys: list[str] | None = None) -> None:
    model.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY)
    compile_kwargs = {"backend": backend, "options": options, "mode": mode, "fullgraph": fullgraph, "dynamic": dynamic}
    compiled = {key: torch.compile(model=model.get_model_object(key), **compile_kwargs)
                for key in keys or ["diffusion_model"]}
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, apply_torch_compile_factory(compiled))
    model.model_options["torch_compile_kwargs"] = compile_kwargs


def torch_compile_model(model: ModelPatcher, backend: str) -> ModelPatcher:
    """The TorchCompileModel node (comfy_extras/nodes_torch_compile.py ``execute``)."""
    patched = model.clone()
    set_torch_compile_wrapper(patched, backend)
    return patched
