"""Record stats_fixture.json from a real run of the node, with its current defaults, on the
trained FLUX-layout benchmark model.

The browser and drawing tests feed this payload to the widget, so it must be what the node
really sends: the node (every input at its default) is applied and sampled as in
tests/test_node.py, and the `cgtaylor.stats` event it emits through a stand-in PromptServer is
written out unchanged. `make fixture` runs

    .venv/bin/python tests/browser/record_fixture.py

which recorded the committed fixture: 20 heun steps on all ten digit prompts, cfg 3. heun's two
calls per step gate separately, so the fixture holds the warm-up step, fully forecast steps,
partly forecast steps (one call of two) and the always-full last step. Run it again whenever the
defaults or the node's decisions change: tests/test_node.py records it afresh and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import bench  # noqa: E402,F401  (registers the pack as `cgtaylor_cache`)
from bench.runs import Setup  # noqa: E402
from bench.standin.sampling import sample  # noqa: E402
from bench.weights import SHIFT  # noqa: E402
from cgtaylor_cache.nodes.node import DEFAULTS  # noqa: E402
from node_driver import patched_by_node  # noqa: E402


def record(steps: int, cfg: float, sampler: str, node_id: str) -> dict:
    """Run one sampling pass and return the payload the node sent to the browser."""
    sent: list[tuple[str, dict, str]] = []
    server = types.SimpleNamespace(client_id="fixture", send_sync=lambda event, data, sid: sent.append((event, data, sid)))
    sys.modules["server"] = types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server))
    setup = Setup.load("flux")
    patched = patched_by_node(setup.patcher, node_id, **DEFAULTS)
    sample(patched, setup.noise(0), setup.positive, setup.negative, cfg=cfg, steps=steps, sampler=sampler,
           shift=SHIFT["flux"])
    (event, payload, _client), = sent
    assert event == "cgtaylor.stats"
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--sampler", default="heun", help="heun: two calls per step, so some steps are partly forecast")
    parser.add_argument("--node", default="7")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("stats_fixture.json"))
    args = parser.parse_args()
    payload = record(args.steps, args.cfg, args.sampler, args.node)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}: {payload['totals']}")


if __name__ == "__main__":
    main()
