"""Set up a ComfyUI release checkout and a CPU virtual environment for the real-ComfyUI tier.

    python tests/comfyui/setup_comfyui.py --git-dir <a ComfyUI git clone> --commit <release commit> --dest <folder>

Then run the tier with ``COMFYUI_PATH=<folder> <folder>/.venv/bin/python -m pytest tests/comfyui``.

Tested with v0.3.64 (a125cd84, Comfy-Org/ComfyUI), v0.30.0 (b1693ecb) and v0.33.0 (2f35f4a0;
both from a mirror that holds the release commits, e.g. yzkee/ComfyUI). Large files a partial
clone lacks (tokenizer data nothing here needs) are skipped, which is why the tree is written
blob by blob instead of with ``git archive``. The venv gets a CPU build of torch with
torchvision and torchaudio first (bench/cpu-torch.sh: a local CPU wheel, else PyTorch's CPU
index, else the registry's default build with a warning), so no requirement can pull another
torch, then ComfyUI's requirements with torch pinned.

Where torchvision and torchaudio come from the registry beside a CPU torch, two of their
wheels do not load; the venv (never ComfyUI, never this pack) is mended so that they import,
as ComfyUI's CPU paths need:
* torchvision registers fake kernels for its compiled ``nms``/``qnms`` ops at import, which
  fails while its CUDA-linked ``_C`` cannot load; a registration whose op is absent is skipped;
* torchaudio (imported unconditionally by v0.30.0) loads a CUDA-linked extension; a load that
  fails counts as an absent extension, so its pure-Python paths are used.
A file is mended only while its package fails to import, and only once (a marker says so).
Last, ComfyUI boots once with ``--quick-test-for-ci``, so a venv that cannot run it fails here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH = "torch==2.13.0"  # a CPU build; see the Makefile
CPU_TORCH = Path(__file__).resolve().parents[2] / "bench" / "cpu-torch.sh"
SKIPPED_REQUIREMENTS = ("torch", "torchvision", "torchaudio")
# comfy-angle (v0.30.0, "non essential") has no wheel for every platform; ComfyUI runs without it.
OPTIONAL_REQUIREMENTS = ("comfy-angle", "PyOpenGL")
# v0.3.64 imports requests (app/frontend_management.py) without listing it: transformers 4 brought
# it along, transformers 5 does not. pytest runs the tier.
EXTRA_REQUIREMENTS = ("pytest", "requests")


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def extract_tree(git_dir: Path, commit: str, dest: Path) -> None:
    listing = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-z", commit], check=True, capture_output=True
    ).stdout
    skipped = []
    for entry in filter(None, listing.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        mode, kind, sha = meta.decode().split()
        if kind != "blob":  # submodules
            continue
        target = dest / path.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "blob", sha], capture_output=True)
        if blob.returncode:
            skipped.append(path.decode())
            continue
        if mode == "120000":
            target.unlink(missing_ok=True)
            target.symlink_to(blob.stdout.decode())
        else:
            target.write_bytes(blob.stdout)
            if mode == "100755":
                target.chmod(0o755)
    (dest / ".comfyui-commit").write_text(commit + "\n")
    if skipped:
        print(f"skipped {len(skipped)} file(s) absent from the clone: {skipped}")


def requirements(dest: Path) -> tuple[list[str], list[str]]:
    needed, optional = [], []
    for line in (dest / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip()
        if not line or name in SKIPPED_REQUIREMENTS:
            continue
        (optional if name in OPTIONAL_REQUIREMENTS else needed).append(line)
    return needed, optional


def build_venv(dest: Path) -> Path:
    venv = dest / ".venv"
    python = venv / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", str(venv))
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    run(*pip, "--upgrade", "pip")
    run("bash", str(CPU_TORCH), str(python), TORCH, "torchvision", "torchaudio")
    needed, optional = requirements(dest)
    constraint = dest / ".torch-constraint.txt"
    constraint.write_text(TORCH + "\n")
    run(*pip, "-c", str(constraint), *EXTRA_REQUIREMENTS, *needed)
    for package in optional:
        if subprocess.run([*pip, "-c", str(constraint), package]).returncode:
            print(f"optional requirement {package} did not install; ComfyUI runs without it")
    mend_venv(python)
    return python


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def mend_file(path: Path, replacements: list[tuple[str, str]]) -> None:
    """Applies each (old, new) replacement; a file already mended is left alone, an unknown one stops the setup."""
    text = path.read_text()
    if MEND_MARKER in text:
        return
    for old, new in replacements:
        if old not in text:
            raise SystemExit(f"cannot mend {path}: {old!r} not found (another version of the package?)")
        text = text.replace(old, new)
    path.write_text(text)


MEND_MARKER = "setup_comfyui.py mend"

# torchvision: a registration whose compiled op is absent leaves the function unregistered.
TORCHVISION_ANCHOR = "import torchvision.extension  # noqa: F401\n"
TORCHVISION_GUARD = f"""{TORCHVISION_ANCHOR}

def _register_fake_if_op_exists(op_name):  # {MEND_MARKER}: the compiled op is absent beside a CPU torch
    def decorate(fn):
        try:
            return _register_fake(op_name)(fn)
        except RuntimeError:
            return fn
    return decorate


_register_fake = torch.library.register_fake
"""

# torchaudio: an extension that fails to load counts as absent, so the pure-Python paths are used.
TORCHAUDIO_ANCHOR = "    torch.ops.load_library(paths[0])\n    return True\n"
TORCHAUDIO_GUARD = f"""    try:  # {MEND_MARKER}: the CUDA-linked extension does not load beside a CPU torch
        torch.ops.load_library(paths[0])
    except OSError:
        return False
    return True
"""


def mend_venv(python: Path) -> None:
    packages = site_packages(python)
    if not imports(python, "torchvision"):
        mend_file(packages / "torchvision" / "_meta_registrations.py", [
            (TORCHVISION_ANCHOR, TORCHVISION_GUARD),
            ("@torch.library.register_fake(", "@_register_fake_if_op_exists("),
        ])
    if not imports(python, "torchaudio"):
        mend_file(packages / "torchaudio" / "_extension" / "utils.py", [(TORCHAUDIO_ANCHOR, TORCHAUDIO_GUARD)])
    broken = [module for module in ("torchvision", "torchaudio") if not imports(python, module)]
    if broken:
        raise SystemExit(f"{broken} still fail to import in {python}; see `{python} -c 'import {broken[0]}'`")


def check_comfyui_boots(dest: Path, python: Path) -> None:
    """Boots ComfyUI once (all built-in node modules, no server loop) so a broken venv shows here, not in the tier."""
    with tempfile.TemporaryDirectory() as base:
        boot = subprocess.run(
            [str(python), "main.py", "--cpu", "--quick-test-for-ci", "--disable-all-custom-nodes",
             "--disable-api-nodes", "--base-directory", base],
            cwd=dest, capture_output=True, text=True,
        )
    failed = [line for line in boot.stderr.splitlines() if "IMPORT FAILED" in line or "Cannot import" in line]
    if boot.returncode or failed:
        raise SystemExit(f"ComfyUI does not boot with {python}:\n" + (("\n".join(failed)) or boot.stderr[-3000:]))
    print("ComfyUI boots with", python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-dir", type=Path, required=True, help="a ComfyUI clone (its .git folder or a bare repo)")
    parser.add_argument("--commit", required=True, help="release commit, e.g. b1693ecb for v0.30.0")
    parser.add_argument("--dest", type=Path, required=True, help="folder for the checkout and its .venv")
    args = parser.parse_args()
    dest = args.dest.resolve()
    if not (dest / "main.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        extract_tree(args.git_dir.resolve(), args.commit, dest)
    python = build_venv(dest)
    check_comfyui_boots(dest, python)
    print(f"\nready: COMFYUI_PATH={dest} {python} -m pytest tests/comfyui")


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    main()
