#!/usr/bin/env bash
# Install a CPU build of torch into a Python environment: `make test`, `make demo` and
# tests/comfyui/setup_comfyui.py call this before anything else that needs torch.
#
#   bash bench/cpu-torch.sh PYTHON TORCH_REQUIREMENT [PACKAGE...]
#   bash bench/cpu-torch.sh .venv/bin/python torch==2.13.0 torchvision torchaudio
#
# On Linux the registry's default torch is the CUDA build, with several GB of NVIDIA libraries
# that nothing here uses. Where the build comes from, first match wins:
#  1. a CPU wheel pip finds without any index (a --find-links folder, as on this project's own
#     machines): the plain install, which picks it up, offline and fast;
#  2. macOS: the registry's build, which has no CUDA;
#  3. PyTorch's CPU wheel index (CPU_TORCH_INDEX, default https://download.pytorch.org/whl/cpu),
#     when it answers: added as an extra index, where the "+cpu" builds outrank the registry's;
#  4. otherwise the registry's default build, with a warning that says what that means.
# The PACKAGEs (e.g. torchvision, torchaudio) are installed in the same command, from the same
# source, so pip picks the releases that go with the torch requirement.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 PYTHON TORCH_REQUIREMENT [PACKAGE...]" >&2
  exit 2
fi
python=$1
torch=$2
cpu_index=${CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
shift
install() { "$python" -m pip install --quiet "$@"; }

# 1. What pip would install for the torch requirement from --find-links alone (no index, no deps).
local_build=$("$python" -m pip install --dry-run --no-deps --no-index --ignore-installed --quiet --report - "$torch" 2>/dev/null \
  | "$python" -c 'import json, sys; print(" ".join(i["metadata"]["version"] for i in json.load(sys.stdin)["install"]))' 2>/dev/null || true)
if [[ "$local_build" == *+cpu* ]]; then
  echo "cpu-torch: torch $local_build from a local wheel"
  install "$@"
  exit 0
fi

# 2. macOS wheels on the registry are CPU (and Metal) builds.
if [ "$(uname -s)" = Darwin ]; then
  echo "cpu-torch: $torch from the package index (macOS builds have no CUDA)"
  install "$@"
  exit 0
fi

# 3. PyTorch's own CPU wheel index, if it answers within 10 seconds.
if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)' \
     "$cpu_index" 2>/dev/null; then
  echo "cpu-torch: $torch, CPU build, from $cpu_index"
  install --extra-index-url "$cpu_index" "$@"
  exit 0
fi

# 4. The registry's default build.
cat >&2 <<EOF
cpu-torch: PyTorch's CPU wheel index ($cpu_index) does not answer from here, so $torch comes from
pip's configured index instead. On Linux that is the CUDA build: several GB of NVIDIA libraries
that nothing here uses (everything still runs on the CPU). For the CPU build, make that index
reachable or set CPU_TORCH_INDEX to a mirror of it, remove the environment and run this again.
EOF
install "$@"
