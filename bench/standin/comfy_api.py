"""ComfyUI's V3 node API (``comfy_api.latest``: ``io`` and ``ComfyExtension``), as far as the node uses it.

Mirrors comfy_api/latest/_io.py at v0.33.0 (2f35f4a0): ``comfytype`` :92-129, ``Input`` / ``WidgetInput`` /
``Output`` :160-234, ``Boolean`` / ``Int`` / ``Float`` / ``Combo`` :247-398, ``Model`` :613-616,
``HiddenHolder`` / ``Hidden`` :1490-1550, ``Schema`` :1643-1759 (its fields, ``validate``, ``finalize``) with
``create_input_dict_v1`` / ``add_to_dict_v1`` :1859-1872, ``_ComfyNodeBaseInternal`` :1914-2233 (``hidden``,
``validate_inputs``, ``PREPARE_CLASS_CLONE``, ``GET_SCHEMA``, ``INPUT_TYPES`` and the class properties the
tests read), ``NodeOutput`` :2281-2300; ``ComfyExtension`` from comfy_api/latest/__init__.py :116-127;
``shallow_clone_class`` and ``prune_dict`` from comfy_api/internal/__init__.py. v0.3.64's V3 (a125cd84) has
no ``advanced`` input option and no ``search_aliases``, which the node detects; the real tier runs it there.
"""

from __future__ import annotations

import sys
import types
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def shallow_clone_class(cls: type, new_name: str | None = None) -> type:
    return type(new_name or f"{cls.__name__}Clone", (cls,) + cls.__bases__, dict(cls.__dict__))


class classproperty:
    def __init__(self, f):
        self.f = f

    def __get__(self, obj, owner):
        return self.f(owner)


def comfytype(io_type: str):
    """Binds ``io_type`` to a type and to its Input and Output classes (their ``Parent``)."""

    def decorator(cls: type) -> type:
        cls.io_type = io_type
        for kind in ("Input", "Output"):
            if getattr(cls, kind, None) is not None:
                setattr(cls, kind, type(kind, (getattr(cls, kind),), {"Parent": cls}))
        return cls

    return decorator


class _IO_V3:
    Parent: type = None

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def validate(self) -> None:
        pass


class Input(_IO_V3):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None, raw_link: bool = None, advanced: bool = None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict:
        return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy, "rawLink": self.rawLink, "advanced": self.advanced}) | prune_dict(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type

    def get_all(self) -> list[Input]:
        return [self]


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None, raw_link: bool = None, advanced: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default, self.socketless, self.widget_type, self.force_input = default, socketless, widget_type, force_input

    def as_dict(self) -> dict:
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO_V3):
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name or id, tooltip, is_output_list

    def get_io_type(self) -> str:
        return self.io_type


class ComfyTypeIO:
    Input = Input
    Output = Output


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: bool = None, label_on: str = None, label_off: str = None, socketless: bool = None,
                     force_input: bool = None, extra_dict=None, raw_link: bool = None, advanced: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


class _Number(WidgetInput):
    """Int.Input's and Float.Input's shared options (the real classes spell them out each)."""

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default=None, min=None, max=None, step=None, display_mode=None, socketless: bool = None,
                 force_input: bool = None, extra_dict=None, raw_link: bool = None, advanced: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                         extra_dict, raw_link, advanced)
        self.min, self.max, self.step, self.display_mode = min, max, step, display_mode

    def as_dict(self) -> dict:
        return super().as_dict() | prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                               "display": self.display_mode})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    class Input(_Number):
        pass


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    class Input(_Number):
        pass


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, options: list[str] = None, display_name: str = None, optional=False,
                     tooltip: str = None, lazy: bool = None, default: str = None, socketless: bool = None,
                     extra_dict=None, raw_link: bool = None, advanced: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None, extra_dict,
                             raw_link, advanced)
            self.multiselect = False
            self.options = options

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"multiselect": self.multiselect, "options": self.options})


@comfytype(io_type="MODEL")
class Model(ComfyTypeIO):
    pass


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


class HiddenHolder:
    def __init__(self, unique_id: str, prompt: Any, extra_pnginfo: Any, dynprompt: Any, **kwargs):
        self.unique_id, self.prompt, self.extra_pnginfo, self.dynprompt = unique_id, prompt, extra_pnginfo, dynprompt

    def __getattr__(self, key: str):
        return None

    @classmethod
    def from_dict(cls, d: dict | None) -> HiddenHolder:
        d = d or {}
        return cls(**{h.name: d.get(h, None) for h in Hidden})

    @classmethod
    def from_v3_data(cls, v3_data: dict | None) -> HiddenHolder:
        return cls.from_dict(v3_data["hidden_inputs"] if v3_data else None)


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_output_node: bool = False
    is_experimental: bool = False

    def validate(self) -> None:
        input_ids = [i.id for i in self.inputs]
        output_ids = [o.id for o in self.outputs]
        issues = []
        if len(set(input_ids)) != len(input_ids):
            issues.append(f"Input ids must be unique, but {[i for i, n in Counter(input_ids).items() if n > 1]} are not.")
        if len(set(output_ids)) != len(output_ids):
            issues.append(f"Output ids must be unique, but {[i for i, n in Counter(output_ids).items() if n > 1]} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self) -> None:
        if self.is_output_node:
            self.hidden += [h for h in (Hidden.prompt, Hidden.extra_pnginfo) if h not in self.hidden]
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"


def add_to_dict_v1(i: Input, d: dict) -> None:
    as_dict = i.as_dict()
    as_dict.pop("optional", None)
    d.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), as_dict)


class ComfyNode:
    hidden: HiddenHolder = None

    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        raise NotImplementedError

    @classmethod
    def PREPARE_CLASS_CLONE(cls, v3_data: dict | None) -> type[ComfyNode]:
        clone = shallow_clone_class(cls)
        clone.hidden = HiddenHolder.from_v3_data(v3_data)
        return clone

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        schema = cls.FINALIZE_SCHEMA()
        inputs = {"required": {}}
        for i in schema.inputs:
            add_to_dict_v1(i, inputs)
        for hidden in schema.hidden:
            inputs.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return inputs

    @classproperty
    def DESCRIPTION(cls) -> str:  # noqa: N802
        return cls.GET_SCHEMA().description

    @classproperty
    def CATEGORY(cls) -> str:  # noqa: N802
        return cls.GET_SCHEMA().category

    @classproperty
    def RETURN_TYPES(cls) -> list[str]:  # noqa: N802
        return [o.io_type for o in cls.GET_SCHEMA().outputs]


class NodeOutput:
    def __init__(self, *args: Any, ui: dict = None, expand: dict = None, block_execution: str = None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index) -> Any:
        return self.args[index]


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        pass

    @abstractmethod
    async def get_node_list(self) -> list[type[ComfyNode]]:
        ...


def register() -> None:
    """Makes this module importable as ComfyUI's ``comfy_api.latest.io`` (and ``ComfyExtension`` from
    ``comfy_api.latest``), for a process with no ComfyUI: the CI tier and the benchmark."""
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ComfyExtension = sys.modules[__name__], ComfyExtension
    package = types.ModuleType("comfy_api")
    package.__path__, package.latest = [], latest
    sys.modules.update({"comfy_api": package, "comfy_api.latest": latest})
