"""bench/cpu-torch.sh picks where torch comes from; checked offline against a stand-in Python.

The stand-in answers pip's offline dry run with a chosen local wheel (or none) and records the
install command instead of installing; every other call (the index probe) goes to this Python.
PyTorch's CPU index is played by a local HTTP server, or by a closed port when it must not answer.
"""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "cpu-torch.sh"
TORCH = "torch==2.13.0"


@pytest.fixture
def fake_python(tmp_path: Path):
    """A Python whose pip only reports (a dry run) and records (an install)."""

    def make(local_version: str | None) -> tuple[Path, Path]:
        log = tmp_path / "installs.log"
        report = {"install": [{"metadata": {"name": "torch", "version": local_version}}] if local_version else []}
        report_file = tmp_path / "report.json"
        report_file.write_text(json.dumps(report))
        python = tmp_path / "python"
        python.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2 $3" = "-m pip install" ]; then
  case " $* " in
    *" --dry-run "*) cat {shlex.quote(str(report_file))} ;;
    *) echo "$*" >> {shlex.quote(str(log))} ;;
  esac
  exit 0
fi
exec {shlex.quote(sys.executable)} "$@"
""")
        python.chmod(0o755)
        return python, log

    return make


@pytest.fixture
def cpu_index():
    """A local stand-in of https://download.pytorch.org/whl/cpu; ``requests`` lists the paths asked for."""
    requests: list[str] = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name in http.server)
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html></html>")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu", requests
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"  # nothing listens there once the probe socket is closed


def install(python: Path, index: str, *packages: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(python), TORCH, *packages], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CPU_TORCH_INDEX": index}, timeout=60)


pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the registry's build is used directly")


def test_a_local_cpu_wheel_is_installed_as_before_without_asking_any_index(fake_python, cpu_index):
    python, log = fake_python("2.13.0+cpu")
    url, requests = cpu_index
    done = install(python, url, "torchvision")
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["-m", "pip", "install", "--quiet", TORCH, "torchvision"]
    assert requests == [] and "local wheel" in done.stdout


@pytest.mark.parametrize("local_version", [None, "2.13.0"])
def test_without_a_local_cpu_wheel_the_cpu_index_is_added_when_it_answers(fake_python, cpu_index, local_version):
    """No local wheel, or only the registry's (CUDA) build cached locally: PyTorch's CPU index."""
    python, log = fake_python(local_version)
    url, requests = cpu_index
    done = install(python, url, "torchvision", "torchaudio")
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["-m", "pip", "install", "--quiet", "--extra-index-url", url, TORCH,
                                       "torchvision", "torchaudio"]
    assert requests == ["/whl/cpu/torch/"] and url in done.stdout


def test_an_unreachable_cpu_index_falls_back_to_the_default_build_and_says_what_that_means(fake_python):
    python, log = fake_python(None)
    url = closed_port_url()
    done = install(python, url)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["-m", "pip", "install", "--quiet", TORCH]
    assert url in done.stderr and "CUDA build" in done.stderr and "CPU_TORCH_INDEX" in done.stderr


def test_every_install_of_torch_goes_through_the_script():
    """`make test` / `make demo` (Makefile) and the real tier's setup script choose the build here."""
    makefile = (ROOT / "Makefile").read_text()
    setup = (ROOT / "tests" / "comfyui" / "setup_comfyui.py").read_text()
    assert "bench/cpu-torch.sh" in makefile and "cpu-torch.sh" in setup
