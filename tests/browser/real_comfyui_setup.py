"""Prepare a ComfyUI --base-directory for the real-ComfyUI browser test (real_comfyui.test.mjs).

Run with a Python that has ComfyUI's requirements, from anywhere:

    python tests/browser/real_comfyui_setup.py --comfyui $COMFYUI_PATH --base /tmp/some-dir

It links this pack and the test-only conditioning node (tests/comfyui/harness_nodes.py) into
<base>/custom_nodes, saves the real-ComfyUI tier's tiny random Wan 2.1 model (built by
tests/comfyui/conftest.py's helpers) where the stock UNETLoader finds it, and puts an empty file in
place of each model file the shipped templates (workflows/*.json) name, so that they open as they
do for a user who has downloaded their models: no missing-model marks on the loaders.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_tier_helpers():
    """tests/comfyui/conftest.py as a plain module: its tiny-model config and builders."""
    spec = importlib.util.spec_from_file_location("cgtaylor_real_tier", REPO / "tests" / "comfyui" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    args = parser.parse_args()
    tier = load_tier_helpers()

    custom_nodes = args.base / "custom_nodes"
    models = args.base / "models" / "diffusion_models"
    for folder in (custom_nodes, models):
        folder.mkdir(parents=True, exist_ok=True)
    links = {tier.PACK_FOLDER_NAME: REPO, "cgtaylor_test_harness_nodes.py": tier.HARNESS_NODES}
    for name, target in links.items():
        if not (custom_nodes / name).exists():
            (custom_nodes / name).symlink_to(target, target_is_directory=target.is_dir())

    for workflow in sorted((REPO / "workflows").glob("*.json")):
        for node in json.loads(workflow.read_text(encoding="utf-8"))["nodes"]:
            for file in node.get("properties", {}).get("models", []):
                placeholder = args.base / "models" / file["directory"] / file["name"]
                placeholder.parent.mkdir(parents=True, exist_ok=True)
                placeholder.touch()

    sys.path.insert(0, str(args.comfyui.resolve()))
    sys.argv = ["main.py", "--cpu"]  # comfy.cli_args parses sys.argv on import
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401
    import comfy.supported_models
    import comfy.utils

    model = tier.build_model(comfy.supported_models.WAN21_T2V, tier.TINY_WAN21_T2V, seed=2101)
    comfy.utils.save_torch_file(model.diffusion_model.state_dict(), str(models / tier.TINY_WAN_FILE))
    print(models / tier.TINY_WAN_FILE)


if __name__ == "__main__":
    main()
