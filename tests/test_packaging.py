"""The pack installs from the Comfy Registry, ComfyUI-Manager or a plain `git clone`.

The registry reads pyproject.toml (docs.comfy.org/registry/specifications), archives the
git-tracked files minus .comfyignore, and scans the Python in that archive; ComfyUI-Manager
refuses packs that pin torch. A `git clone` into custom_nodes/ runs nothing but ComfyUI's
loader, so the pack must not need a package ComfyUI does not already bring.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import struct
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest

import bench  # noqa: F401  (registers the pack as `cgtaylor_cache`)
import cgtaylor_cache

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT.get("project", {})
COMFY = PYPROJECT.get("tool", {}).get("comfy", {})

NODE_IDS = {"CGTaylorCache"}
# Installed by ComfyUI itself (its requirements.txt) or ComfyUI's own modules.
PROVIDED_BY_COMFYUI = {
    "torch", "numpy", "safetensors", "PIL", "aiohttp", "einops", "tqdm", "yaml",
    "comfy", "comfy_api", "comfy_execution", "comfy_extras", "server", "folder_paths", "nodes",
    "node_helpers", "latent_preview",
}
# ComfyUI-Manager will not install or upgrade these for a pack.
MANAGER_REFUSES = {"torch", "torchvision", "torchaudio"}
# What the node and `make demo` need at run time: nothing here may be ignored.
SHIPPED_DIRS = ("core", "nodes", "web", "workflows")
SHIPPED_FILES = ("__init__.py", "pyproject.toml", "README.md", "LICENSE", "Makefile", "bench/cpu-torch.sh")
SKIP_WALK = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache"}


def requirement_name(requirement: str) -> str:
    """`torch>=2; sys_platform...` -> `torch` (PEP 508 names, normalised)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unparsable requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


# ---------------------------------------------------------------------------------------
# .comfyignore: the gitwildmatch rules comfy-cli applies (via pathspec), enough of them
# for the patterns this repository uses.


def _translate(glob: str) -> str:
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return out


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        body = _translate(line.lstrip("/"))
        prefix = "" if anchored else "(?:.*/)?"
        suffix = "/.*" if dir_only else "(?:/.*)?"
        rules.append((negate, re.compile(f"^{prefix}{body}{suffix}$")))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    ignored = False
    for negate, pattern in rules:
        if pattern.match(path):
            ignored = not negate
    return ignored


def repo_files() -> list[str]:
    files = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if path.is_file() and not SKIP_WALK.intersection(parts) and path.suffix != ".pyc":
            files.append("/".join(parts))
    return sorted(files)


COMFYIGNORE = ROOT / ".comfyignore"
RULES = ignore_rules(COMFYIGNORE.read_text(encoding="utf-8")) if COMFYIGNORE.exists() else []
SHIPPED = [f for f in repo_files() if not is_ignored(f, RULES)]
SHIPPED_PYTHON = [f for f in SHIPPED if f.endswith(".py")]


# ---------------------------------------------------------------------------------------
# [project]


def test_project_name_is_a_valid_registry_id():
    name = PROJECT.get("name", "")
    assert 0 < len(name) < 100
    assert re.fullmatch(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*", name), f"{name!r}: lowercase, no leading or doubled specials"
    assert "comfyui" not in name.lower()


def test_version_is_semver():
    version = PROJECT.get("version", "")
    assert re.fullmatch(
        r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?", version
    ), version
    assert "version" not in PROJECT.get("dynamic", []), "the registry does not evaluate dynamic versions"


def stated_versions(root: Path) -> dict[str, str]:
    """Every version the pack states besides pyproject.toml: ``__version__ = "..."`` in its Python
    files and the ``ver`` property ComfyUI's frontend records on our node in saved workflows."""
    found = {}
    for path in root.rglob("*.py"):
        if SKIP_WALK.intersection(path.relative_to(root).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
                found[str(path.relative_to(root))] = ast.literal_eval(node.value)
    for path in (root / "workflows").glob("*.json"):
        for node in json.loads(path.read_text(encoding="utf-8")).get("nodes", []):
            if node.get("type") in NODE_IDS and "ver" in node.get("properties", {}):
                found[f"{path.relative_to(root)} node {node.get('id')}"] = node["properties"]["ver"]
    return found


def test_version_agrees_wherever_the_pack_states_it():
    stated = stated_versions(ROOT)
    assert all(version == PROJECT["version"] for version in stated.values()), (PROJECT["version"], stated)
    assert getattr(cgtaylor_cache, "__version__", PROJECT["version"]) == PROJECT["version"]


def test_version_scan_finds_a_disagreeing_version(tmp_path):
    """The check above must be able to fail: a planted stale version is found in both kinds of place."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "pkg.py").write_text('__version__ = "0.0.9"\n')
    workflow = {"nodes": [{"id": 3, "type": "CGTaylorCache", "properties": {"ver": "0.0.8"}}]}
    (tmp_path / "workflows" / "w.json").write_text(json.dumps(workflow))
    assert stated_versions(tmp_path) == {"pkg.py": "0.0.9", "workflows/w.json node 3": "0.0.8"}


def test_description_and_licence_file():
    assert isinstance(PROJECT.get("description"), str) and len(PROJECT["description"].strip()) > 20
    licence = PROJECT.get("license")
    assert isinstance(licence, dict) and "file" in licence, "license = { file = \"LICENSE\" }"
    path = ROOT / licence["file"]
    assert path.is_file() and "GNU GENERAL PUBLIC LICENSE" in path.read_text(encoding="utf-8", errors="replace")


def test_dependencies_leave_torch_to_comfyui():
    declared = [requirement_name(r) for r in PROJECT.get("dependencies", [])]
    requirements = ROOT / "requirements.txt"
    if requirements.exists():
        lines = requirements.read_text(encoding="utf-8").splitlines()
        declared += [requirement_name(l) for l in lines if l.strip() and not l.lstrip().startswith(("#", "-"))]
    assert not MANAGER_REFUSES.intersection(declared), declared


def test_repository_url():
    url = PROJECT.get("urls", {}).get("Repository", "")
    parsed = urlparse(url)
    assert parsed.scheme == "https" and parsed.netloc and len(parsed.path.strip("/").split("/")) == 2, url


# ---------------------------------------------------------------------------------------
# [tool.comfy]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_tool_comfy_publisher_and_display_name():
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", COMFY.get("PublisherId", "")), COMFY.get("PublisherId")
    assert isinstance(COMFY.get("DisplayName"), str) and COMFY["DisplayName"].strip()


def test_icon_is_a_file_of_this_repository_within_the_registry_limits():
    """The registry shows the icon from its URL; it must point at the PNG checked in here."""
    icon = urlparse(COMFY.get("Icon", ""))
    repository = urlparse(PROJECT["urls"]["Repository"]).path.strip("/")
    assert icon.scheme == "https" and icon.netloc == "raw.githubusercontent.com", COMFY.get("Icon")
    owner_repo_branch_path = icon.path.strip("/").split("/", 3)
    assert "/".join(owner_repo_branch_path[:2]) == repository
    local = ROOT / owner_repo_branch_path[3]
    assert local.is_file() and local.relative_to(ROOT).as_posix() in SHIPPED
    width, height = png_size(local.read_bytes())
    assert width <= 800 and height <= 400


def test_includes_name_existing_paths():
    for path in COMFY.get("includes", []):
        assert (ROOT / path).exists(), path


# ---------------------------------------------------------------------------------------
# What ComfyUI's loader sees


def registered_nodes() -> dict:
    """The pack's nodes as ComfyUI's loader registers a V3 extension (nodes.py ``load_custom_node`` at v0.3.64,
    v0.30.0 and v0.33.0): ``await comfy_entrypoint()``, ``await extension.get_node_list()``, then each node's
    ``GET_SCHEMA().node_id``."""
    async def load() -> list:
        extension = await cgtaylor_cache.comfy_entrypoint()
        await extension.on_load()
        return await extension.get_node_list()

    return {node.GET_SCHEMA().node_id: node for node in asyncio.run(load())}


def test_the_pack_registers_exactly_its_node():
    """A V3 extension only: ComfyUI's loader takes NODE_CLASS_MAPPINGS first and then never calls the entrypoint."""
    assert not hasattr(cgtaylor_cache, "NODE_CLASS_MAPPINGS")
    assert inspect.iscoroutinefunction(cgtaylor_cache.comfy_entrypoint)
    nodes = registered_nodes()
    assert set(nodes) == NODE_IDS
    for node_id, cls in nodes.items():
        schema = cls.GET_SCHEMA()
        assert cls.__name__ == node_id and schema.display_name and schema.category and schema.outputs
        assert "required" in cls.INPUT_TYPES()


def test_the_node_names_every_model_the_readme_opens_with():
    """ComfyUI shows the node's description in its node library and the model input's tooltip on the
    node: both name each model the README's first sentence lists, so that no place leaves one out."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    listed = re.search(r"diffusion transformers \(([^)]*)\)", readme).group(1)
    models = [name.strip() for part in listed.split(",") for name in part.split(" / ")]
    assert len(models) >= 8, models
    node = registered_nodes()["CGTaylorCache"]
    tooltip = node.INPUT_TYPES()["required"]["model"][1]["tooltip"]
    for text in (node.DESCRIPTION, tooltip):
        assert [model for model in models if model not in text] == [], text


def test_web_directory_is_an_existing_folder_of_the_pack():
    web = (ROOT / cgtaylor_cache.WEB_DIRECTORY).resolve()
    assert web.is_dir() and web.is_relative_to(ROOT)


def test_workflows_name_the_pack_by_its_registry_id():
    """ComfyUI-Manager offers to install missing nodes by the `cnr_id` a workflow gives them."""
    import json

    for path in sorted((ROOT / "workflows").glob("*.json")):
        nodes = [n for n in json.loads(path.read_text(encoding="utf-8"))["nodes"] if n["type"] in NODE_IDS]
        assert nodes and all(n["properties"].get("cnr_id") == PROJECT["name"] for n in nodes), path.name


# ---------------------------------------------------------------------------------------
# The published archive


def test_comfyignore_keeps_what_the_node_and_the_demo_need():
    assert COMFYIGNORE.exists()
    needed = [f for f in repo_files() if f.split("/")[0] in SHIPPED_DIRS or f in SHIPPED_FILES]
    needed += [f for f in repo_files() if f.startswith("bench/") and f.endswith((".py", ".safetensors"))]
    assert any(f.startswith("bench/weights/") for f in needed) or not (ROOT / "bench" / "weights").exists()
    assert [f for f in needed if is_ignored(f, RULES)] == []


@pytest.mark.parametrize("path", [
    "tests/test_node.py", "tests/comfyui/conftest.py", "tests/workflow_signatures.json",
    ".github/workflows/publish.yml", ".ci/run", "bench/results/run.json", "bench/data/digits.npz",
    "bench/checkpoints/flux_step1000.pt", "node_modules/playwright-core/index.js", "package.json",
])
def test_comfyignore_leaves_out_tests_automation_and_training_data(path):
    assert is_ignored(path, RULES)


def test_ignore_matcher_follows_gitignore_rules():
    rules = ignore_rules("tests/\n*.pt\n/Makefile\n!keep.pt\nweb/**/*.map\n")
    assert is_ignored("tests/a.py", rules) and is_ignored("x/tests/a.py", rules)
    assert not is_ignored("tests.py", rules) and not is_ignored("contests/a.py", rules)
    assert is_ignored("bench/a.pt", rules) and not is_ignored("bench/keep.pt", rules)
    assert is_ignored("Makefile", rules) and not is_ignored("sub/Makefile", rules)
    assert is_ignored("web/a/b/c.js.map", rules) and is_ignored("web/c.js.map", rules)


def calls_and_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield "import", alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield "import", node.module, node.lineno
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                yield "call", func.id, node.lineno
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                yield "call", f"{func.value.id}.{func.attr}", node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield "text", node.value, node.lineno


def test_shipped_python_is_the_node_code():
    for path in ("__init__.py", "nodes/node.py", "core/engine.py"):
        assert path in SHIPPED_PYTHON
    assert not any(p.startswith("tests/") for p in SHIPPED_PYTHON)


@pytest.mark.parametrize("path", SHIPPED_PYTHON)
def test_shipped_python_runs_no_code_strings_and_installs_nothing(path):
    source = (ROOT / path).read_text(encoding="utf-8")
    problems = []
    for kind, name, line in calls_and_imports(ast.parse(source, filename=path)):
        if kind == "call" and name in {"eval", "exec", "compile", "__import__"}:
            problems.append(f"{path}:{line}: {name}()")
        if kind == "call" and re.fullmatch(r"os\.(system|popen|exec\w*|spawn\w*)", name):
            problems.append(f"{path}:{line}: {name}()")
        if kind == "import" and name.split(".")[0] in {"subprocess", "pip", "ensurepip"}:
            problems.append(f"{path}:{line}: import {name}")
        if kind == "text" and re.search(r"\bpip3?\s+install\b|-m\s+pip\b", name):
            problems.append(f"{path}:{line}: pip command in a string")
    # The registry's scanner reads text, not syntax: no builtin-looking eval/exec anywhere.
    problems += [f"{path}: {m.group(0)!r}" for m in re.finditer(r"(?<![\w.])(eval|exec)\s*\(", source)]
    assert problems == []


@pytest.mark.parametrize("path", [p for p in SHIPPED_PYTHON if p.split("/")[0] in ("core", "nodes", "__init__.py")])
def test_node_code_imports_only_what_comfyui_provides(path):
    """A `git clone` into custom_nodes/ must work with no pip step."""
    declared = {requirement_name(r).replace("-", "_") for r in PROJECT.get("dependencies", [])}
    allowed = PROVIDED_BY_COMFYUI | declared | set(sys.stdlib_module_names) | {"__future__"}
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    foreign = [name for kind, name, _ in calls_and_imports(tree) if kind == "import" and name.split(".")[0] not in allowed]
    assert foreign == []


# ---------------------------------------------------------------------------------------
# The registry's publishing workflow


def test_publish_workflow_uses_the_registry_action_on_pyproject_changes_to_main():
    text = (ROOT / ".github" / "workflows" / "publish.yml").read_text(encoding="utf-8")
    assert re.search(r"uses:\s*Comfy-Org/publish-node-action@\S+", text)
    assert re.search(r"personal_access_token:\s*\$\{\{\s*secrets\.\w+\s*\}\}", text)
    push = re.search(r"^\s*push:\s*\n((?:\s{4,}.*\n)+)", text, re.MULTILINE)
    assert push, "no push trigger"
    trigger = push.group(1)
    assert re.search(r"branches:\s*(?:\n\s*-\s*[\"']?main[\"']?|\[\s*[\"']?main)", trigger), trigger
    assert re.search(r"paths:\s*(?:\n\s*-\s*[\"']?pyproject\.toml[\"']?|\[\s*[\"']?pyproject\.toml)", trigger), trigger


ESSENTIAL_INPUTS = ("model", "tolerance", "warmup_steps")


def test_secondary_inputs_are_marked_advanced_and_the_essential_ones_are_not():
    """Frontends from 2026 fold inputs marked ``"advanced": True`` away (comfy_api/latest/_io.py:164-182
    at v0.30.0); older frontends ignore the flag, so every input keeps its default and range."""
    required = registered_nodes()["CGTaylorCache"].INPUT_TYPES()["required"]
    advanced = {name for name, spec in required.items() if spec[1].get("advanced")}
    assert advanced == set(required) - set(ESSENTIAL_INPUTS)
    assert all("default" in spec[1] for name, spec in required.items() if name != "model")


# Words a user types into ComfyUI's node search when looking for a cache that speeds sampling up.
SEARCH_WORDS = ("cache", "TeaCache", "first block cache", "TaylorSeer", "speed up", "faster", "accelerate")


def test_node_search_finds_the_node_by_the_words_users_type():
    """ComfyUI sends a V3 node's ``Schema.search_aliases`` with its definition (comfy_api/latest/_io.py
    ``get_v1_info`` at v0.30.0 and v0.33.0; v0.3.64's Schema has none), which the frontend's node search matches
    next to the name and display name
    (frontend 1.47-1.48: Fuse keys name, display_name, search_aliases). tests/browser/real_search.test.mjs
    types one of them into a real frontend."""
    aliases = registered_nodes()["CGTaylorCache"].GET_SCHEMA().search_aliases
    assert isinstance(aliases, list) and all(isinstance(a, str) and a.strip() == a and a for a in aliases)
    assert json.loads(json.dumps(aliases)) == aliases
    assert {w.lower() for w in SEARCH_WORDS} <= {a.lower() for a in aliases}
    assert len({a.lower() for a in aliases}) == len(aliases)
