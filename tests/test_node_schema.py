"""The node's V3 schema: the inputs saved workflows and API prompts were made with, the checks ComfyUI runs
before a prompt is queued, and the schema on a ComfyUI whose V3 lacks the newer options.

Against bench/standin/comfy_api.py (ComfyUI v0.33.0's V3); tests/comfyui loads the node through ComfyUI's own
loader and executor on v0.3.64, v0.30.0 and v0.33.0.
"""

from __future__ import annotations

import inspect

import pytest

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`, and comfy_api outside ComfyUI)
from comfy_api.latest import io

from cgtaylor_cache.nodes.node import DEFAULTS, CGTaylorCache

# The V1 node's inputs (nodes/node.py INPUT_TYPES before the V3 schema): name, type, default, min, max, optional.
# Saved workflows store widget values by this order; API prompts name these inputs.
V1_INPUTS = [
    ("model", "MODEL", None, None, None, False),
    ("tolerance", "FLOAT", 0.2, 0.0, 100.0, False),  # 0.1 and max 10 before issue 31's gate bounded runs of forecasts
    ("warmup_steps", "INT", 1, 0, 1000, False),
    ("start_fraction", "FLOAT", 0.0, 0.0, 1.0, False),
    ("end_fraction", "FLOAT", 1.0, 0.0, 1.0, False),
    ("first_block_order", "INT", 2, 0, 4, False),
    ("last_block_order", "INT", 2, 0, 4, False),
    ("max_consecutive", "INT", 8, 0, 1000, False),
    ("distance", ["step", "sigma", "block0"], "step", None, None, False),
    ("forecast_residual", "BOOLEAN", False, None, None, True),
    ("gate", ["calibrated", "block0"], "calibrated", None, None, True),
    ("cache_device", ["auto", "gpu", "cpu"], "auto", None, None, True),
    ("target_speedup", "FLOAT", 0.0, 0.0, 20.0, True),  # issue 32: last and optional, old prompts validate
]


def declared() -> list[tuple]:
    """INPUT_TYPES() as ComfyUI sends it to the frontend and validates prompts with, in the V1 table's shape."""
    types = CGTaylorCache.INPUT_TYPES()
    rows = []
    for section in ("required", "optional"):
        for name, (kind, options) in types.get(section, {}).items():
            kind = options["options"] if kind == "COMBO" else kind
            rows.append((name, kind, options.get("default"), options.get("min"), options.get("max"), section == "optional"))
    return rows


def test_the_inputs_are_the_v1_nodes_in_name_type_default_range_order_and_optionality():
    assert declared() == V1_INPUTS
    assert {name: default for name, _, default, *_ in V1_INPUTS if name != "model"} == DEFAULTS


def test_the_node_asks_comfyui_for_its_id_and_the_queued_prompt():
    assert CGTaylorCache.INPUT_TYPES()["hidden"] == {"unique_id": ("UNIQUE_ID",), "prompt": ("PROMPT",)}


@pytest.mark.parametrize(("start", "end"), [(0.9, 0.5), (0.5, 0.5)])
def test_a_window_that_ends_before_it_starts_is_refused_before_the_prompt_runs(start, end):
    message = CGTaylorCache.validate_inputs(start_fraction=start, end_fraction=end)
    assert message == (f"CGTaylorCache: start_fraction ({start}) must be below end_fraction ({end}); "
                       "set start_fraction lower or end_fraction higher.")


def test_validation_passes_a_good_window_and_leaves_linked_values_to_execute():
    assert CGTaylorCache.validate_inputs(start_fraction=0.2, end_fraction=0.9) is True
    # ComfyUI validates before upstream nodes run: a linked input arrives as None.
    assert CGTaylorCache.validate_inputs(start_fraction=None, end_fraction=0.1) is True


def test_validation_names_only_inputs_whose_ranges_comfyui_cannot_check_alone():
    """ComfyUI skips its own range and option checks for the inputs validate_inputs names, and repeats a
    failure once per named input (execution.py validate_inputs at v0.3.64-v0.33.0)."""
    assert inspect.getfullargspec(CGTaylorCache.validate_inputs).args == ["cls", "start_fraction", "end_fraction"]


def older(cls: type, option: str) -> type:
    """``cls`` as a ComfyUI whose V3 predates ``option`` has it: the keyword is not in its signature."""
    parameters = [p for p in inspect.signature(cls).parameters.values() if p.name != option]

    class Older(cls):
        def __init__(self, *args, **kwargs):
            if option in kwargs:
                raise TypeError(f"__init__() got an unexpected keyword argument '{option}'")
            super().__init__(*args, **kwargs)

    Older.__signature__ = inspect.Signature(parameters)
    return Older


def test_on_a_v3_without_advanced_inputs_or_search_aliases_the_schema_leaves_them_out(monkeypatch):
    """v0.3.64 (a125cd84): comfy_api/latest/_io.py Input.__init__ has no ``advanced`` and Schema no
    ``search_aliases``; passing either would stop the node from loading."""
    for kind in (io.Boolean, io.Int, io.Float, io.Combo):
        monkeypatch.setattr(kind, "Input", older(kind.Input, "advanced"))
    monkeypatch.setattr(io, "Schema", older(io.Schema, "search_aliases"))
    schema = CGTaylorCache.GET_SCHEMA()
    assert [i.id for i in schema.inputs] == [row[0] for row in V1_INPUTS]
    assert not any(i.advanced for i in schema.inputs)
    assert schema.search_aliases == []
