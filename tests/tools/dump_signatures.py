"""Writes tests/workflow_signatures.json from a real ComfyUI checkout.

The workflow test must not import ComfyUI (the default CI has none), yet it should check
the core nodes of the example workflows against what ComfyUI really declares. This script
records those declarations once; re-run it when moving to a newer ComfyUI and review the diff:

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python tests/tools/dump_signatures.py

(COMFYUI_COMMIT=<sha> names the commit when the checkout is not a git work tree.)

Only the nodes the example workflows use are recorded (NODES below). Combo inputs whose
options come from model folders are recorded without options: they depend on the user's
files, not on ComfyUI.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "workflow_signatures.json"

# Core nodes used by workflows/*.json (frontend-only Note/MarkdownNote are not backend nodes).
NODES = [
    "UNETLoader", "CLIPLoader", "DualCLIPLoader", "VAELoader", "CLIPTextEncode", "ConditioningZeroOut",
    "FluxGuidance", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo", "ModelSamplingSD3", "KSampler",
    "KSamplerAdvanced", "VAEDecode", "SaveImage", "CreateVideo", "SaveVideo", "SaveAnimatedWEBP",
    "ModelSamplingAuraFlow", "EmptyHunyuanVideo15Latent",
]
# comfy_api/latest/_io.py DynamicCombo (v0.30.0): drawn as a combo widget, e.g. SaveVideo's codec.
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
# The frontend draws these types as widgets; every other type is a socket (a link endpoint).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Combo inputs filled from the user's model folders; their options say nothing about ComfyUI itself.
FOLDER_COMBOS = {
    ("UNETLoader", "unet_name"), ("CLIPLoader", "clip_name"), ("DualCLIPLoader", "clip_name1"),
    ("DualCLIPLoader", "clip_name2"), ("VAELoader", "vae_name"),
}


def import_comfyui(root: Path) -> Any:
    """Imports ComfyUI as main.py does (server before nodes) and loads the built-in extra nodes."""
    sys.path.insert(0, str(root))
    sys.argv = ["main.py", "--cpu", "--disable-api-nodes"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parses --cpu)
    # isort: off
    import utils.extra_config  # noqa: F401
    import server  # noqa: F401
    import nodes
    # isort: on

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    return nodes


def describe_input(node: str, name: str, spec: tuple, optional: bool) -> dict:
    """One input as the workflow test needs it: type, widget or socket, and the widget's limits."""
    raw_type = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    choices = None
    if isinstance(raw_type, (list, tuple)):
        kind, choices = "COMBO", list(raw_type)
    elif raw_type == DYNAMIC_COMBO:
        # A V3 DynamicCombo is one combo widget; a choice may add inputs of its own (not recorded: the
        # workflows pick choices that add none, e.g. SaveVideo's codec "auto").
        kind = "COMBO"
        choices = [o["key"] if isinstance(o, dict) else o for o in options.get("options", [])]
    else:
        kind = raw_type
        if kind == "COMBO":
            choices = list(options.get("options", []))
    entry: dict[str, Any] = {"name": name, "type": kind, "optional": optional}
    entry["widget"] = kind in WIDGET_TYPES and not options.get("forceInput", False)
    if kind == "COMBO":
        entry["options"] = None if (node, name) in FOLDER_COMBOS else choices
    for key in ("min", "max"):
        if key in options and kind in ("INT", "FLOAT"):
            entry[key] = options[key]
    if options.get("control_after_generate"):
        entry["control_after_generate"] = True
    return entry


def signature(nodes: Any, node: str) -> dict:
    cls = nodes.NODE_CLASS_MAPPINGS[node]
    declared = cls.INPUT_TYPES()
    inputs = [describe_input(node, n, s, False) for n, s in declared.get("required", {}).items()]
    inputs += [describe_input(node, n, s, True) for n, s in declared.get("optional", {}).items()]
    return {
        "inputs": inputs,
        "outputs": [t if isinstance(t, str) else "COMBO" for t in cls.RETURN_TYPES],
        "source": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
    }


def checkout_commit(root: Path) -> str | None:
    """HEAD of the checkout, or None when it is not itself a git work tree (e.g. an unpacked release)."""
    try:
        top, head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    return head if Path(top).resolve() == root else None


def main() -> None:
    raw = os.environ.get("COMFYUI_PATH")
    if not raw:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    root = Path(raw).resolve()
    nodes = import_comfyui(root)
    import comfyui_version

    commit = os.environ.get("COMFYUI_COMMIT") or checkout_commit(root) or "unknown"
    document = {
        "comfyui": {
            "version": comfyui_version.__version__,
            "commit": commit,
            "files": sorted({signature(nodes, n)["source"].replace(".", "/") + ".py" for n in NODES}),
            "generator": "tests/tools/dump_signatures.py",
        },
        "widget_types": sorted(WIDGET_TYPES),
        "nodes": {n: signature(nodes, n) for n in NODES},
    }
    OUTPUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(NODES)} nodes, ComfyUI {document['comfyui']['version']} {commit})")


if __name__ == "__main__":
    main()
