// The geometry behind the real-frontend layout test (tests/browser/layout_check.mjs), on the shipped
// templates as saved and on copies broken on purpose (node --test tests/js).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { layoutProblems, savedMembers } from "../browser/layout_check.mjs";

const DIR = new URL("../../workflows/", import.meta.url);
const WORKFLOWS = readdirSync(DIR).filter((f) => f.endsWith(".json"));
const load = (file) => JSON.parse(readFileSync(new URL(file, DIR), "utf8"));

/** The graph as the file lays it out, in the shape the real-frontend test measures. */
function asSaved(workflow) {
  return {
    nodes: workflow.nodes.map((n) => ({
      id: String(n.id), title: n.title ?? n.type, type: n.type,
      box: [n.pos[0], n.pos[1] - 30, n.pos[0] + n.size[0], n.pos[1] + n.size[1]],
    })),
    groups: workflow.groups.map((g) => ({
      title: g.title, titleHeight: g.font_size * 1.4,
      box: [g.bounding[0], g.bounding[1], g.bounding[0] + g.bounding[2], g.bounding[1] + g.bounding[3]],
    })),
    members: savedMembers(workflow),
  };
}

test("every shipped template is clean as saved, and each cache node sits in a group", () => {
  assert.equal(WORKFLOWS.length, 5);
  for (const file of WORKFLOWS) {
    const workflow = load(file);
    const graph = asSaved(workflow);
    assert.deepEqual(layoutProblems(graph), [], file);
    const grouped = Object.values(graph.members).flat();
    for (const cache of workflow.nodes.filter((n) => n.type === "CGTaylorCache")) assert.ok(grouped.includes(String(cache.id)), file);
  }
});

test("a node grown into its neighbour, out of its group or into another group is reported", () => {
  const workflow = load("wan22_a14b_t2v_cgtaylor.json");
  const graph = asSaved(workflow);
  const cache = graph.nodes.find((n) => n.title === "CG-Taylor Cache (high noise)");
  cache.box[3] += 200; // as the chart grew the old 290 px node on load
  const problems = layoutProblems(graph);
  assert.ok(problems.some((p) => p.includes("leaves group \"High-noise expert\"")), problems.join("\n"));
  assert.ok(problems.some((p) => p.includes("reaches into group \"Low-noise expert\"")), problems.join("\n"));
  assert.ok(problems.some((p) => /overlaps node \d+ \(CG-Taylor Cache \(low noise\)\)/.test(p)), problems.join("\n"));
});

test("a chart spilling out of its node is reported; a pixel of rounding is not", () => {
  const graph = asSaved(load("flux1_dev_t2i_cgtaylor.json"));
  const cache = graph.nodes.find((n) => n.type === "CGTaylorCache");
  cache.chart = [cache.box[0] + 10, cache.box[3] - 150, cache.box[2] - 10, cache.box[3] + 0.6];
  assert.deepEqual(layoutProblems(graph), []);
  cache.chart[2] = cache.box[2] + 300; // the chart kept the properties panel's width
  assert.match(layoutProblems(graph).join("\n"), /its chart .* spills out of the node/);
});
