"""What the pack's install routes deliver, what `comfy node validate` checks, and what a governed
ComfyUI accepts (docs/install.md).

* comfy-cli 1.23.0's ``comfy node pack`` (comfy_cli/file_utils.py ``zip_files``) archives the
  git-tracked files (``git ls-files``) minus the gitwildmatch patterns of ``.comfyignore``
  (``_load_comfyignore_spec``), plus ``[tool.comfy] includes``; ``comfy node publish`` uploads that
  archive. ComfyUI-Manager's ``cm-cli install <git URL>`` clones every tracked file instead.
* ComfyUI's governance (app/governance.py ``pack_digest`` at Comfy-Org 0db9a846, after v0.33.0):
  under a custom-node policy a pack folder that holds a symlink, a ``.pyc``/``.pyo`` file or a
  ``__pycache__`` folder anywhere is refused.
* ``comfy node validate`` (comfy_cli/command/custom_nodes/command.py ``validate_node_for_publishing``):
  pyproject.toml read by comfy_cli/registry/config_parser.py ``extract_node_configuration`` (which
  takes the issue tracker from ``[project.urls] Issues`` and keeps only valid classifiers), a static
  version, then ``ruff check . --select S102,S307,E702`` over the folder.
"""

from __future__ import annotations

import ast
import io
import subprocess
import tokenize
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
SYMLINK, SUBMODULE = "120000", "160000"  # git index modes
BYTECODE = (".pyc", ".pyo")  # governance _BYTECODE_EXTENSIONS


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


def tracked(root: Path) -> dict[str, str]:
    """Every tracked path with its git mode: what `cm-cli install <git URL>` checks out."""
    entries = [line.split("\t", 1) for line in git(root, "ls-files", "-s", "-z").split("\0") if line]
    return {path: meta.split()[0] for meta, path in entries}


def registry_archive(root: Path) -> list[str]:
    """The files of `comfy node pack`'s archive: tracked, not matched by .comfyignore (git applies the
    same gitwildmatch rules as comfy-cli's pathspec), plus the ``includes``."""
    files = set(tracked(root))
    if (root / ".comfyignore").is_file():
        files -= set(git(root, "ls-files", "-z", "-c", "-i", "--exclude-from=.comfyignore").split("\0"))
    comfy = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("comfy", {})
    files |= {include.strip("/") for include in comfy.get("includes", [])}
    return sorted(f for f in files if f)


def governance_refusals(paths: list[str], modes: dict[str, str]) -> list[str]:
    """Why a governed ComfyUI would refuse a pack folder holding these files."""
    reasons = []
    for path in paths:
        parts = PurePosixPath(path)
        if modes.get(path) == SYMLINK:
            reasons.append(f"{path}: symlink")
        if modes.get(path) == SUBMODULE:
            reasons.append(f"{path}: submodule (cloned without its files)")
        if parts.suffix.lower() in BYTECODE or "__pycache__" in parts.parts:
            reasons.append(f"{path}: compiled bytecode")
    return reasons


def test_the_registry_archive_holds_the_node_and_leaves_the_tests_out():
    archive = registry_archive(ROOT)
    assert {"__init__.py", "nodes/node.py", "core/engine.py", "pyproject.toml", "LICENSE"} <= set(archive)
    assert not [f for f in archive if f.startswith(("tests/", ".github/", ".ci/"))]


@pytest.mark.parametrize("route", ["registry archive", "git clone"])
def test_no_install_route_brings_a_symlink_or_bytecode(route):
    modes = tracked(ROOT)
    paths = registry_archive(ROOT) if route == "registry archive" else sorted(modes)
    assert governance_refusals(paths, modes) == []


def test_the_check_finds_what_governance_refuses(tmp_path):
    """The checks above must be able to fail: a planted symlink and bytecode are found; what
    .comfyignore leaves out stays out of the archive only."""
    for command in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        git(tmp_path, *command)
    (tmp_path / "pyproject.toml").write_text("[tool.comfy]\nincludes = []\n")
    (tmp_path / "node.py").write_text("X = 1\n")
    (tmp_path / "link.py").symlink_to("node.py")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "node.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "old.pyc").write_bytes(b"\0")
    (tmp_path / ".comfyignore").write_text("old.pyc\n")
    git(tmp_path, "add", "-f", ".")
    modes = tracked(tmp_path)
    assert governance_refusals(sorted(modes), modes) == [
        "__pycache__/node.cpython-311.pyc: compiled bytecode", "link.py: symlink", "old.pyc: compiled bytecode",
    ]
    assert "old.pyc" not in registry_archive(tmp_path) and "node.py" in registry_archive(tmp_path)


# --- comfy node validate ------------------------------------------------------------------------


def test_project_urls_give_comfy_cli_the_issue_tracker():
    """config_parser.py reads ``Homepage``, ``Documentation``, ``Repository`` and ``Issues`` (not
    ``Bug Tracker``, which its own scaffold writes)."""
    urls = PROJECT["urls"]
    assert urls.get("Issues") == urls["Repository"].rstrip("/") + "/issues"
    assert all(urlparse(url).scheme == "https" for url in urls.values())


def test_classifiers_are_ones_comfy_cli_keeps():
    """``validate_and_extract_os_classifiers`` / ``..._accelerator_classifiers``: one invalid entry
    makes comfy-cli drop all of its kind."""
    classifiers = PROJECT.get("classifiers", [])
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    assert all(s.startswith(("Microsoft", "POSIX", "MacOS", "OS Independent")) for s in systems), systems
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    valid = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
    assert set(accelerators) <= valid, accelerators


def ruff_findings(path: str, source: str) -> list[str]:
    """What ``ruff --select S102,S307,E702`` reports: ``exec``/``eval`` called as builtins, and
    statements joined by ``;`` (the only place Python's grammar has a ``;`` token)."""
    findings = [f"{path}:{node.lineno}: {node.func.id}" for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval")]
    findings += [f"{path}:{token.start[0]}: ;" for token in tokenize.generate_tokens(io.StringIO(source).readline)
                 if token.type == tokenize.OP and token.string == ";"]
    return findings


def test_every_tracked_python_file_passes_the_checks_comfy_node_validate_runs():
    python = [p for p in tracked(ROOT) if p.endswith(".py")]
    assert len(python) > 50
    assert [f for p in python for f in ruff_findings(p, (ROOT / p).read_text(encoding="utf-8"))] == []
    assert ruff_findings("x.py", "import os; eval('1')\nmodel.eval()\n") == ["x.py:1: eval", "x.py:1: ;"]
