"""core/ must work with no ComfyUI anywhere: it is the framework-independent half of the pack."""

import ast
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


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, read from its syntax tree (a
    docstring line that happens to start with "from" is not an import)."""
    tree = ast.parse(source)
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    return {name.split(".")[0] for name in names}


def test_core_sources_import_only_torch_and_the_standard_library():
    allowed = {"torch", "__future__", "collections", "dataclasses", "enum", "math", "statistics", "typing"}
    for path in (ROOT / "core").glob("*.py"):
        assert imported_modules(path.read_text()) <= allowed, path.name


def test_the_import_scan_sees_nested_imports_and_ignores_prose():
    source = 'def f():\n    """\n    from the corrected x\n    """\n    import comfy.utils\nfrom .engine import Call\n'
    assert imported_modules(source) == {"comfy"}
