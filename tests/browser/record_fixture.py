"""Record stats_fixture.json from a real run of the node on the tiny FLUX-layout test model.

The browser test feeds this payload to the widget, so it must be what the node really sends:
the node is applied and sampled exactly as in tests/test_node.py, and the `cgtaylor.stats`
event it emits through a stand-in PromptServer is written out unchanged.

    .venv/bin/python tests/browser/record_fixture.py --threshold 0.05 --steps 20 --cfg 3 --separate-conds

recorded the committed fixture: 20 euler steps, cond and uncond as separate calls (2 per step), so it
holds warm-up steps, forecast steps and steps the gate rejected (gate error above the threshold).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import bench  # noqa: E402,F401  (registers the pack as `cgtaylor_cache`)
from bench.standin.sampling import sample  # noqa: E402
from bench.tiny import flux_scene  # noqa: E402
from cgtaylor_cache.nodes.node import DEFAULTS, CGTaylorCache  # noqa: E402


def record(threshold: float, steps: int, cfg: float, separate: bool, node_id: str) -> dict:
    """Run one sampling pass and return the payload the node sent to the browser."""
    sent: list[tuple[str, dict, str]] = []
    server = types.SimpleNamespace(client_id="fixture", send_sync=lambda event, data, sid: sent.append((event, data, sid)))
    sys.modules["server"] = types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server))
    scene = flux_scene()
    patched = CGTaylorCache().patch(scene.patcher, unique_id=node_id, **{**DEFAULTS, "threshold": threshold})[0]
    sample(patched, scene.noise(1), scene.positive, scene.negative, cfg=cfg, steps=steps,
           separate_conds=separate)
    (event, payload, _client), = sent
    assert event == "cgtaylor.stats"
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--separate-conds", action="store_true", help="cond and uncond as two model calls per step")
    parser.add_argument("--node", default="7")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("stats_fixture.json"))
    args = parser.parse_args()
    payload = record(args.threshold, args.steps, args.cfg, args.separate_conds, args.node)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}: {payload['totals']}")


if __name__ == "__main__":
    main()
