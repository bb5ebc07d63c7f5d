"""core/ must work with no ComfyUI anywhere: it is the framework-independent half of the pack."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = f"""
import importlib.abc, sys
COMFY = {{"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution"}}

class NoComfy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in COMFY:
            raise ImportError("ComfyUI module imported by core: " + name)
        return None

sys.meta_path.insert(0, NoComfy())
sys.path.insert(0, {str(ROOT)!r})
import core, core.engine, core.taylor, core.gate, core.policy, core.schedule, core.stats, core.steps
print(sorted(name for name in sys.modules if name.split(".")[0] in COMFY))
"""


def test_core_imports_without_comfyui():
    result = subprocess.run([sys.executable, "-I", "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_sources_import_only_torch_and_the_standard_library():
    allowed = {"torch", "__future__", "collections", "dataclasses", "enum", "math", "typing"}
    for path in (ROOT / "core").glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and not words[1].startswith("."):
                assert words[1].split(".")[0] in allowed, f"{path.name}: {line.strip()}"
