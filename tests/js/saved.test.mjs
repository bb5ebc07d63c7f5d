// Workflows saved before the calibrated gate keep the gate their threshold was meant for.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { keepSavedGate } from "../../web/cgtaylor_saved.js";

// The node's widgets as the frontend builds them from INPUT_TYPES (required, then optional); the
// Python test tests/test_workflows.py checks this list against the node.
export const WIDGETS = ["tolerance", "warmup_steps", "start_fraction", "end_fraction", "first_block_order",
  "last_block_order", "max_consecutive", "distance", "forecast_residual", "gate", "cache_device", "target_speedup"];
const DEFAULTS = { gate: "calibrated", cache_device: "auto", target_speedup: 0 };
const gateOf = (node) => node.widgets.find((w) => w.name === "gate").value;

/** A node as LGraphNode.configure leaves it: saved values by position, defaults after them. */
function configured(saved, defaults) {
  const widgets = WIDGETS.map((name, i) => ({ name, value: i < saved.length ? saved[i] : defaults[name] }));
  return { widgets };
}

const OLD = JSON.parse(readFileSync(new URL("../fixtures/flux1_dev_t2i_cgtaylor_threshold.json", import.meta.url), "utf8"));
const OLD_VALUES = OLD.nodes.find((n) => n.type === "CGTaylorCache").widgets_values;

test("a node saved with a threshold keeps the block-0 gate it was tuned for", () => {
  assert.equal(OLD_VALUES.length, 9); // threshold .. forecast_residual, no gate
  const node = configured(OLD_VALUES, DEFAULTS);
  assert.equal(keepSavedGate(node, OLD_VALUES), true);
  const values = Object.fromEntries(node.widgets.map((w) => [w.name, w.value]));
  assert.equal(values.gate, "block0"); // the gate a threshold on block 0's error was set for
  assert.equal(values.tolerance, 0.15); // the old threshold, read by the gate it was set for
  assert.equal(values.max_consecutive, 2);
  assert.equal(values.cache_device, "auto"); // inputs added since keep their defaults
  assert.equal(values.target_speedup, 0); // the tolerance decides, as when it was saved
});

test("a node saved with a gate keeps the gate it was saved with", () => {
  for (const gate of ["calibrated", "block0"]) {
    const saved = [0.1, 1, 0, 1, 2, 2, 8, "step", false, gate];
    const node = configured(saved, DEFAULTS);
    assert.equal(keepSavedGate(node, saved), false);
    assert.equal(gateOf(node), gate);
  }
});

test("nodes without saved values (new ones) and foreign nodes are left alone", () => {
  const fresh = configured([], DEFAULTS);
  assert.equal(keepSavedGate(fresh, undefined), false);
  assert.equal(gateOf(fresh), "calibrated");
  assert.equal(keepSavedGate({ widgets: [{ name: "seed", value: 1 }] }, [1]), false);
  assert.equal(keepSavedGate(null, [1]), false);
});
