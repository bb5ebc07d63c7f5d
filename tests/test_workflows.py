"""The example workflows in workflows/ load in ComfyUI and run as they are meant to.

ComfyUI's frontend loads a UI-format workflow even when it is broken: a link between the
wrong types, a widget value out of place or a missing input only shows up when the user
queues the prompt. These tests check each file the way ComfyUI would read it:

* our node against its real ``CGTaylorCache.INPUT_TYPES()`` (so retuned defaults or a new
  input are caught here, not by a user);
* core ComfyUI nodes against tests/workflow_signatures.json, recorded from ComfyUI
  v0.30.0 by tests/tools/dump_signatures.py (ComfyUI itself is not needed to run this file).

The validator returns a list of problems; a few tests break copies of the workflows on
purpose to show that it notices.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
from cgtaylor_cache.nodes.node import CGTaylorCache
from cgtaylor_cache.nodes.settings import CacheSettings

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows"
SIGNATURE_FILE = Path(__file__).with_name("workflow_signatures.json")
SIGNATURES = json.loads(SIGNATURE_FILE.read_text(encoding="utf-8"))

NODE_ID = "CGTaylorCache"
# Nodes that exist only in the frontend: they never reach the backend and carry just text.
FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGET_TYPES = set(SIGNATURES["widget_types"])
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
SAMPLERS = {"KSampler", "KSamplerAdvanced"}

# What issue 5 asks for, with the model files ComfyUI's own templates use.
EXPECTED = {
    "flux1_dev_t2i_cgtaylor": {
        "UNETLoader": [["flux1-dev.safetensors"]],
        "DualCLIPLoader": [["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux"]],
        "VAELoader": [["ae.safetensors"]],
    },
    "wan21_t2v_cgtaylor": {
        "UNETLoader": [["wan2.1_t2v_1.3B_fp16.safetensors"]],
        "CLIPLoader": [["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan"]],
        "VAELoader": [["wan_2.1_vae.safetensors"]],
    },
    "wan22_a14b_t2v_cgtaylor": {
        "UNETLoader": [
            ["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"],
            ["wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"],
        ],
        "CLIPLoader": [["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan"]],
        "VAELoader": [["wan_2.1_vae.safetensors"]],
    },
    # Issue 11: the file names of ComfyUI's image_qwen_Image_2512 and video_hunyuan_video_1.5_720p_t2v
    # templates (comfyui-workflow-templates 0.11.27, pinned by v0.30.0).
    "qwen_image_2512_t2i_cgtaylor": {
        "UNETLoader": [["qwen_image_2512_fp8_e4m3fn.safetensors"]],
        "CLIPLoader": [["qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image"]],
        "VAELoader": [["qwen_image_vae.safetensors"]],
    },
    "hunyuan_video15_t2v_cgtaylor": {
        "UNETLoader": [["hunyuanvideo1.5_720p_t2v_fp16.safetensors"]],
        "DualCLIPLoader": [["qwen_2.5_vl_7b_fp8_scaled.safetensors", "byt5_small_glyphxl_fp16.safetensors",
                            "hunyuan_video_15"]],
        "VAELoader": [["hunyuanvideo15_vae_fp16.safetensors"]],
    },
}


# ---------------------------------------------------------------------------------------
# Schemas: one shape for core nodes (from the JSON) and our node (from INPUT_TYPES)


def our_node_signature() -> dict:
    """CGTaylorCache's inputs in the same shape as the recorded core signatures."""
    declared = CGTaylorCache.INPUT_TYPES()
    inputs = []
    for section, optional in (("required", False), ("optional", True)):
        for name, spec in declared.get(section, {}).items():
            raw, options = spec[0], (spec[1] if len(spec) > 1 else {})
            kind = "COMBO" if isinstance(raw, (list, tuple)) else raw
            entry: dict[str, Any] = {
                "name": name, "type": kind, "optional": optional,
                "widget": kind in WIDGET_TYPES and not options.get("forceInput", False),
            }
            if kind == "COMBO":
                entry["options"] = list(raw) if isinstance(raw, (list, tuple)) else list(options.get("options", []))
            for key in ("min", "max"):
                if key in options:
                    entry[key] = options[key]
            if options.get("control_after_generate"):
                entry["control_after_generate"] = True
            inputs.append(entry)
    return {"inputs": inputs, "outputs": list(CGTaylorCache.RETURN_TYPES)}


def signature_of(node_type: str) -> dict | None:
    if node_type == NODE_ID:
        return our_node_signature()
    return SIGNATURES["nodes"].get(node_type)


# ---------------------------------------------------------------------------------------
# The validator


def widget_problems(where: str, entry: dict, value: Any) -> list[str]:
    kind, name = entry["type"], entry["name"]
    label = f"{where} widget {name!r}={value!r}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{label}: expected INT"]
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [f"{label}: expected FLOAT"]
    elif kind == "STRING":
        return [] if isinstance(value, str) else [f"{label}: expected STRING"]
    elif kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{label}: expected BOOLEAN"]
    elif kind == "COMBO":
        if not isinstance(value, str):
            return [f"{label}: expected a COMBO string"]
        options = entry.get("options")
        if options is not None and value not in options:
            return [f"{label}: not one of {options}"]
        return []
    if "min" in entry and value < entry["min"]:
        return [f"{label}: below min {entry['min']}"]
    if "max" in entry and value > entry["max"]:
        return [f"{label}: above max {entry['max']}"]
    return []


def node_problems(node: dict, signature: dict) -> list[str]:
    """Sockets and widget values of one node against its declared inputs and outputs."""
    where = f"node {node['id']} ({node['type']})"
    problems = []
    declared = {entry["name"]: entry for entry in signature["inputs"]}
    for slot in node.get("inputs", []):
        entry = declared.get(slot["name"])
        if entry is None:
            problems.append(f"{where}: input {slot['name']!r} is not an input of {node['type']}")
        elif slot["type"] != entry["type"]:
            problems.append(f"{where}: input {slot['name']!r} typed {slot['type']}, declared {entry['type']}")
        elif entry["widget"] and "widget" not in slot:
            problems.append(f"{where}: widget input {slot['name']!r} listed as a socket")
    connected = {slot["name"] for slot in node.get("inputs", []) if slot.get("link") is not None}
    for entry in signature["inputs"]:
        if not entry["widget"] and not entry["optional"] and entry["name"] not in connected:
            problems.append(f"{where}: required input {entry['name']!r} is not connected")

    outputs = [slot["type"] for slot in node.get("outputs", [])]
    if outputs != signature["outputs"]:
        problems.append(f"{where}: outputs {outputs}, declared {signature['outputs']}")

    values = list(node.get("widgets_values", []))
    expected_count = sum(1 + bool(e.get("control_after_generate")) for e in signature["inputs"] if e["widget"])
    if len(values) != expected_count:
        return problems + [f"{where}: {len(values)} widget values, the inputs need {expected_count}"]
    position = 0
    for entry in signature["inputs"]:
        if not entry["widget"]:
            continue
        problems += widget_problems(where, entry, values[position])
        position += 1
        if entry.get("control_after_generate"):
            if values[position] not in SEED_CONTROLS:
                problems.append(f"{where}: control_after_generate {values[position]!r} after {entry['name']!r}")
            position += 1
    return problems


def link_problems(workflow: dict) -> list[str]:
    """Links against both ends: slot types, declared types and the nodes' own link fields."""
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    seen_ids = set()
    for link in workflow["links"]:
        if len(link) != 6:
            problems.append(f"link {link}: expected [id, from, from_slot, to, to_slot, type]")
            continue
        link_id, src_id, src_slot, dst_id, dst_slot, kind = link
        if link_id in seen_ids:
            problems.append(f"link id {link_id} used twice")
        seen_ids.add(link_id)
        src, dst = nodes.get(src_id), nodes.get(dst_id)
        if src is None or dst is None:
            problems.append(f"link {link_id}: joins a missing node")
            continue
        if not 0 <= src_slot < len(src.get("outputs", [])) or not 0 <= dst_slot < len(dst.get("inputs", [])):
            problems.append(f"link {link_id}: slot out of range")
            continue
        out_slot, in_slot = src["outputs"][src_slot], dst["inputs"][dst_slot]
        if link_id not in (out_slot.get("links") or []):
            problems.append(f"link {link_id}: not listed in node {src_id} output {src_slot}")
        if in_slot.get("link") != link_id:
            problems.append(f"link {link_id}: node {dst_id} input {in_slot['name']!r} holds {in_slot.get('link')}")
        if not kind == out_slot["type"] == in_slot["type"]:
            problems.append(f"link {link_id}: type {kind}, output {out_slot['type']}, input {in_slot['type']}")
        src_sig, dst_sig = signature_of(src["type"]), signature_of(dst["type"])
        if src_sig and src_slot < len(src_sig["outputs"]) and src_sig["outputs"][src_slot] != kind:
            problems.append(f"link {link_id}: {src['type']} output {src_slot} is {src_sig['outputs'][src_slot]}")
        if dst_sig:
            declared = {e["name"]: e["type"] for e in dst_sig["inputs"]}
            if declared.get(in_slot["name"]) != kind:
                problems.append(f"link {link_id}: {dst['type']}.{in_slot['name']} is {declared.get(in_slot['name'])}")
    # The other direction: every link a node claims exists.
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in seen_ids:
                problems.append(f"node {node['id']} input {slot['name']!r}: unknown link {slot['link']}")
        for slot in node.get("outputs", []):
            for link_id in slot.get("links") or []:
                if link_id not in seen_ids:
                    problems.append(f"node {node['id']} output {slot['name']!r}: unknown link {link_id}")
    return problems


def workflow_problems(workflow: dict) -> list[str]:
    problems = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        if key not in workflow:
            problems.append(f"missing top-level {key!r}")
    if problems:
        return problems
    ids = [node["id"] for node in workflow["nodes"]]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate node ids in {sorted(ids)}")
    if ids and workflow["last_node_id"] < max(ids):
        problems.append(f"last_node_id {workflow['last_node_id']} < largest node id {max(ids)}")
    link_ids = [link[0] for link in workflow["links"]]
    if link_ids and workflow["last_link_id"] < max(link_ids):
        problems.append(f"last_link_id {workflow['last_link_id']} < largest link id {max(link_ids)}")
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            text = node.get("widgets_values", [])
            if len(text) != 1 or not isinstance(text[0], str) or node.get("inputs") or node.get("outputs"):
                problems.append(f"node {node['id']} ({node['type']}): a note holds one text and no sockets")
            continue
        signature = signature_of(node["type"])
        if signature is None:
            problems.append(f"node {node['id']}: type {node['type']!r} is neither ours nor in {SIGNATURE_FILE.name}")
            continue
        problems += node_problems(node, signature)
    return problems + link_problems(workflow)


# ---------------------------------------------------------------------------------------
# Helpers over a loaded workflow


def load(name: str) -> dict:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text(encoding="utf-8"))


def nodes_of(workflow: dict, node_type: str) -> list[dict]:
    return [node for node in workflow["nodes"] if node["type"] == node_type]


def upstream(workflow: dict, node: dict, input_name: str) -> dict | None:
    """The node feeding ``input_name`` of ``node``."""
    slot = next((s for s in node.get("inputs", []) if s["name"] == input_name), None)
    if slot is None or slot.get("link") is None:
        return None
    link = next(link for link in workflow["links"] if link[0] == slot["link"])
    return next(n for n in workflow["nodes"] if n["id"] == link[1])


def model_chain(workflow: dict, sampler: dict) -> list[str]:
    """Node types from the sampler's model input back to the loader, nearest first."""
    chain, node = [], upstream(workflow, sampler, "model")
    while node is not None:
        chain.append(node["type"])
        node = upstream(workflow, node, "model")
    return chain


def widget(node: dict, name: str) -> Any:
    """A widget value by input name, using the node's declared widget order."""
    position = 0
    for entry in signature_of(node["type"])["inputs"]:
        if not entry["widget"]:
            continue
        if entry["name"] == name:
            return node["widgets_values"][position]
        position += 1 + bool(entry.get("control_after_generate"))
    raise KeyError(name)


# ---------------------------------------------------------------------------------------
# Tests

NAMES = sorted(EXPECTED)


def test_the_signature_file_cites_the_comfyui_it_was_recorded_from():
    source = SIGNATURES["comfyui"]
    assert source["version"] == "0.30.0"
    assert source["commit"].startswith("b1693ecb")
    assert "nodes.py" in source["files"]
    for node_type, signature in SIGNATURES["nodes"].items():
        assert signature["inputs"] and all({"name", "type", "widget", "optional"} <= set(e) for e in signature["inputs"])


def test_the_workflow_folder_holds_exactly_the_documented_workflows():
    assert sorted(p.stem for p in WORKFLOW_DIR.glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_valid_for_comfyui(name):
    workflow = load(name)
    assert workflow["version"] == 0.4
    assert workflow_problems(workflow) == []


@pytest.mark.parametrize("name", NAMES)
def test_cache_settings_in_workflow_are_accepted_by_the_node(name):
    """Values that pass the widget checks must also pass the node's own cross-field checks."""
    workflow = load(name)
    caches = nodes_of(workflow, NODE_ID)
    assert caches, "no CGTaylorCache node"
    names = [e["name"] for e in our_node_signature()["inputs"] if e["widget"]]
    for node in caches:
        CacheSettings(**dict(zip(names, node["widgets_values"])))  # raises ValueError if rejected
        assert node["properties"].get("cnr_id") == "cgtaylor-cache"


@pytest.mark.parametrize("name", NAMES)
def test_settings_saved_before_the_newest_inputs_existed_still_run(name):
    """A workflow saved before ``target_speedup`` (issue 32), or before ``cache_device`` too, holds one or two
    values less: its settings and the prompt it queues, without those inputs, are accepted and get the
    defaults, so the tolerance decides as it did and the cache is placed automatically."""
    names = [e["name"] for e in our_node_signature()["inputs"] if e["widget"]]
    assert names[-2:] == ["cache_device", "target_speedup"]
    assert all(e["optional"] for e in our_node_signature()["inputs"][-2:])
    for node in nodes_of(load(name), NODE_ID):
        for dropped in (1, 2):
            old = dict(zip(names[:-dropped], node["widgets_values"][:-dropped]))
            settings = CacheSettings(**old)
            assert settings.target_speedup == 0.0 and settings.cache_device == (
                "auto" if dropped == 2 else node["widgets_values"][-2])
            engine = settings.new_engine()
            assert engine.target is None and engine.placement.choice == settings.cache_device


@pytest.mark.parametrize("name", NAMES)
def test_cache_node_sits_between_the_loader_and_a_sampler(name):
    workflow = load(name)
    samplers = [n for n in workflow["nodes"] if n["type"] in SAMPLERS]
    assert samplers
    for sampler in samplers:
        chain = model_chain(workflow, sampler)
        assert chain[0] == NODE_ID, chain
        assert chain[-1] == "UNETLoader", chain
    for cache in nodes_of(workflow, NODE_ID):
        targets = [link[3] for link in workflow["links"] if link[1] == cache["id"]]
        assert targets and all(n["type"] in SAMPLERS for n in workflow["nodes"] if n["id"] in targets)


@pytest.mark.parametrize("name", NAMES)
def test_a_note_explains_every_setting_of_the_node(name):
    workflow = load(name)
    settings = [e["name"] for e in our_node_signature()["inputs"] if e["widget"]]
    explaining = [n for kind in FRONTEND_ONLY for n in nodes_of(workflow, kind)
                  if all(s in n["widgets_values"][0] for s in settings)]
    assert explaining, f"no note names all of {settings}"
    # A Note shows its text in small monospace; a MarkdownNote in the frontend's text font, as a list.
    assert all(n["type"] == "MarkdownNote" for n in explaining)


@pytest.mark.parametrize("name", NAMES)
def test_workflow_uses_the_model_files_of_comfyuis_templates(name):
    workflow = load(name)
    for loader, expected in EXPECTED[name].items():
        found = sorted(n["widgets_values"][: len(expected[0])] for n in nodes_of(workflow, loader))
        assert found == sorted(expected), loader


@pytest.mark.parametrize("name", NAMES)
def test_workflow_has_a_same_name_thumbnail(name):
    images = [WORKFLOW_DIR / f"{name}{ext}" for ext in (".jpg", ".png")]
    present = [p for p in images if p.exists()]
    assert present, f"no thumbnail for {name}"
    head = present[0].read_bytes()[:8]
    assert head.startswith(b"\xff\xd8\xff") or head == b"\x89PNG\r\n\x1a\n"
    assert present[0].stat().st_size < 300_000


def test_wan22_runs_each_expert_through_its_own_cache_and_sampler():
    workflow = load("wan22_a14b_t2v_cgtaylor")
    caches, samplers = nodes_of(workflow, NODE_ID), nodes_of(workflow, "KSamplerAdvanced")
    assert len(caches) == 2 and len(samplers) == 2

    def loader_file(sampler: dict) -> str:
        node = upstream(workflow, sampler, "model")
        while node["type"] != "UNETLoader":
            node = upstream(workflow, node, "model")
        return node["widgets_values"][0]

    by_file = {loader_file(s): s for s in samplers}
    high = by_file["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"]
    low = by_file["wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"]
    assert upstream(workflow, high, "model")["id"] != upstream(workflow, low, "model")["id"]
    assert [model_chain(workflow, s)[:2] for s in (high, low)] == [[NODE_ID, "ModelSamplingSD3"]] * 2

    assert widget(high, "add_noise") == "enable" and widget(low, "add_noise") == "disable"
    assert widget(high, "return_with_leftover_noise") == "enable"
    assert widget(low, "return_with_leftover_noise") == "disable"
    assert widget(high, "start_at_step") == 0
    assert widget(high, "end_at_step") == widget(low, "start_at_step") < widget(high, "steps")
    assert widget(low, "end_at_step") >= widget(low, "steps") == widget(high, "steps")
    assert upstream(workflow, low, "latent_image")["id"] == high["id"]


# ---------------------------------------------------------------------------------------
# The validator itself notices broken workflows


def broken(mutate) -> list[str]:
    workflow = copy.deepcopy(load("wan22_a14b_t2v_cgtaylor"))
    mutate(workflow)
    return workflow_problems(workflow)


def first(workflow: dict, node_type: str) -> dict:
    return nodes_of(workflow, node_type)[0]


def test_validator_catches_a_missing_widget_value():
    assert any("widget values" in p for p in broken(lambda w: first(w, NODE_ID)["widgets_values"].pop()))


def widget_index(name: str) -> int:
    return [e["name"] for e in our_node_signature()["inputs"] if e["widget"]].index(name)


def test_validator_catches_a_combo_value_the_node_does_not_offer():
    def mutate(w):
        first(w, NODE_ID)["widgets_values"][widget_index("distance")] = "timestep"

    assert any("not one of" in p for p in broken(mutate))


def test_validator_catches_a_boolean_given_as_text():
    def mutate(w):
        first(w, NODE_ID)["widgets_values"][widget_index("forecast_residual")] = "true"

    assert any("expected BOOLEAN" in p for p in broken(mutate))


def test_validator_catches_a_value_outside_the_declared_range():
    def mutate(w):
        first(w, NODE_ID)["widgets_values"][0] = -1.0  # tolerance

    assert any("below min" in p for p in broken(mutate))


def test_validator_catches_a_seed_without_its_control_value():
    def mutate(w):
        del first(w, "KSamplerAdvanced")["widgets_values"][2]

    assert broken(mutate)


def test_validator_catches_a_link_between_different_types():
    def mutate(w):
        link = next(link for link in w["links"] if link[5] == "MODEL")
        link[5] = "LATENT"

    assert any("type LATENT" in p for p in broken(mutate))


def test_validator_catches_a_dangling_link_and_a_duplicate_node_id():
    def mutate(w):
        w["nodes"][1]["id"] = w["nodes"][0]["id"]

    assert any("duplicate node ids" in p for p in broken(mutate))

    def drop_link(w):
        w["links"].pop()

    assert any("unknown link" in p for p in broken(drop_link))


def test_validator_catches_an_unconnected_required_input():
    def mutate(w):
        sampler = first(w, "KSamplerAdvanced")
        slot = next(s for s in sampler["inputs"] if s["name"] == "positive")
        w["links"] = [link for link in w["links"] if link[0] != slot["link"]]
        for node in w["nodes"]:
            for out in node["outputs"]:
                out["links"] = [i for i in out["links"] if i != slot["link"]]
        slot["link"] = None

    assert any("'positive' is not connected" in p for p in broken(mutate))


# ---------------------------------------------------------------------------------------
# Workflows saved before the calibrated gate (their first value was a threshold on block 0's error)

SAVED_BEFORE_CALIBRATION = ROOT / "tests" / "fixtures" / "flux1_dev_t2i_cgtaylor_threshold.json"


def configured_as_the_frontend_does(saved: list) -> list:
    """Widget values after the frontend loads ``saved``: LGraphNode.configure restores them by position,
    later widgets keep their defaults, then web/cgtaylor_saved.js runs (in node, the real module)."""
    names = [e["name"] for e in our_node_signature()["inputs"] if e["widget"]]
    declared = {**CGTaylorCache.INPUT_TYPES()["required"], **CGTaylorCache.INPUT_TYPES()["optional"]}
    defaults = [declared[name][1]["default"] for name in names]
    script = (
        "import('./web/cgtaylor_saved.js').then(({keepSavedGate}) => {"
        f"const names = {json.dumps(names)}, saved = {json.dumps(saved)}, defaults = {json.dumps(defaults)};"
        "const node = {widgets: names.map((name, i) => ({name, value: i < saved.length ? saved[i] : defaults[i]}))};"
        "keepSavedGate(node, saved); console.log(JSON.stringify(node.widgets.map((w) => w.value)));})"
    )
    run = subprocess.run(["node", "-e", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def test_a_workflow_saved_with_a_threshold_loads_validates_and_keeps_its_gate():
    old = json.loads(SAVED_BEFORE_CALIBRATION.read_text(encoding="utf-8"))
    node = copy.deepcopy(first(old, NODE_ID))
    assert any("widget values" in p for p in workflow_problems(old))  # as saved: one value short
    node["widgets_values"] = configured_as_the_frontend_does(node["widgets_values"])
    assert node_problems(node, our_node_signature()) == []
    names = [e["name"] for e in our_node_signature()["inputs"] if e["widget"]]
    settings = dict(zip(names, node["widgets_values"]))
    assert settings["gate"] == "block0" and settings["tolerance"] == 0.15  # the threshold keeps its meaning
    engine = CacheSettings(**settings).new_engine()
    assert not engine.policy.calibrated and engine.policy.threshold == 0.15


def test_the_widget_list_of_the_javascript_test_is_the_nodes():
    text = (ROOT / "tests" / "js" / "saved.test.mjs").read_text(encoding="utf-8")
    listed = re.search(r"WIDGETS = (\[.*?\]);", text, re.S).group(1)
    assert json.loads(listed) == [e["name"] for e in our_node_signature()["inputs"] if e["widget"]]


# ---------------------------------------------------------------------------------------
# Layout as saved. The frontend can only grow a node on load (tests/browser/real_comfyui.test.mjs
# checks the laid-out boxes in a real frontend); a saved layout that already overlaps is wrong in
# every frontend.

TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar sits above a node's pos


def node_box(node: dict) -> tuple[float, float, float, float]:
    """left, top, right, bottom with the title bar."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE, x + w, y + h


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def group_boxes(group: dict) -> tuple[tuple, tuple]:
    """The group's whole box and the part below its title bar, as left, top, right, bottom."""
    x, y, w, h = group["bounding"]
    return (x, y, x + w, y + h), (x, y + round(group["font_size"] * 1.4), x + w, y + h)


@pytest.mark.parametrize("name", NAMES)
def test_saved_nodes_do_not_overlap_and_sit_wholly_inside_or_outside_each_group(name):
    workflow = load(name)
    boxes = {node["id"]: node_box(node) for node in workflow["nodes"]}
    for a in boxes:
        for b in boxes:
            assert a >= b or not overlap(boxes[a], boxes[b]), f"nodes {a} and {b} overlap"
    grouped = set()
    for group in workflow["groups"]:
        whole, below_title = group_boxes(group)
        members = {i for i, box in boxes.items() if inside(box, below_title)}
        assert members, f"group {group['title']!r} holds no node"
        for i, box in boxes.items():
            assert i in members or not overlap(box, whole), f"node {i} straddles {group['title']!r}"
        grouped |= members
    assert all(n["id"] in grouped for n in nodes_of(workflow, NODE_ID)), "each cache node sits in a group"


READABLE = float(re.search(r"READABLE_SCALE = ([0-9.]+);", (ROOT / "web" / "cgtaylor_view.js").read_text()).group(1))


@pytest.mark.parametrize("name", NAMES)
def test_a_template_carries_a_view_at_which_the_classic_canvas_draws_its_nodes(name):
    """Frontend 1.27 opens a template at extra.ds; later ones fit it to the window and web/cgtaylor_view.js
    moves to extra.cgtaylor_view where that fit would draw the nodes as blank boxes (below 0.57)."""
    extra = load(name)["extra"]
    assert extra["cgtaylor_view"] == extra["ds"]
    assert READABLE >= 0.6 and extra["ds"]["scale"] >= READABLE, extra["ds"]
