"""Memory over many prompts in a real ComfyUI: the node keeps nothing of a run once the run is over.

A hundred mixed prompts (latent sizes, frame counts, batches, cfg, steps) go through one
PromptExecutor, as ComfyUI's prompt worker runs a queue, once without the node and once through it,
each sequence in a process of its own (tests/comfyui/prompt_memory.py), so neither inherits the
other's heap. glibc keeps freed memory for later and hands it back in its own time, which moves the
resident size by tens of MB either way from one prompt to the next; so before each reading it is asked
to give back what it keeps (``malloc_trim``), and what stays is what something still holds. From the
sixth prompt on (every latent size has run once by then) the node may add no more than what the same
prompts add without it, within ``MARGIN``: a run's cached states are 0.2-2 MB here, so what one run
left behind would show after a hundred.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui

SCRIPT = Path(__file__).with_name("prompt_memory.py")
PROMPTS = 100
SETTLED = 5  # readings before this prompt are the heap growing to the largest latent's size
WINDOW = 10  # medians of this many readings at either end: one reading may catch a late free
MARGIN = 8e6  # bytes the node's sequence may grow beyond the other's


def prompt_sequence(comfyui_root: Path, with_node: bool) -> dict:
    command = [sys.executable, str(SCRIPT), "--prompts", str(PROMPTS), "--trim", *(["--node"] if with_node else [])]
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_root)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth(resident: list[int]) -> float:
    """Resident bytes the later prompts hold beyond the settled ones."""
    return statistics.median(resident[-WINDOW:]) - statistics.median(resident[SETTLED:SETTLED + WINDOW])


def test_a_hundred_mixed_prompts_grow_no_more_with_the_node_than_without(comfyui_root: Path) -> None:
    without, with_node = (prompt_sequence(comfyui_root, node) for node in (False, True))
    assert len(with_node["resident"]) == len(without["resident"]) == PROMPTS
    # Nothing of any run is alive once the prompts are done (ComfyUI's cache keeps the node's last
    # output, the patched model, which holds the hooks but no run).
    assert with_node["alive"] == {name: 0 for name in with_node["alive"]}, with_node["alive"]
    grown = {"without": growth(without["resident"]), "with": growth(with_node["resident"])}
    assert grown["with"] <= grown["without"] + MARGIN, {k: f"{v / 1e6:+.1f} MB" for k, v in grown.items()}
