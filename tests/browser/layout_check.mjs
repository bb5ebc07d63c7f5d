// What is wrong with a workflow as the frontend laid it out: nodes that overlap, nodes that stick out
// of their group or into a group they are not in, a chart that spills out of its node. Pure (boxes in,
// problems out), so that the real-frontend test and its unit test share it. Boxes are
// [left, top, right, bottom] in graph units; a node's box includes its title bar.

const overlaps = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
const inside = (inner, outer, slack = 0) =>
  inner[0] >= outer[0] - slack && inner[1] >= outer[1] - slack && inner[2] <= outer[2] + slack && inner[3] <= outer[3] + slack;
const show = (box) => `[${box.map(Math.round).join(", ")}]`;

/**
 * The nodes each group holds in a saved workflow (UI format): those wholly inside it below its title
 * bar, as the file lays them out (tests/tools/build_workflows.py).
 */
export function savedMembers(workflow, titleBar = 30) {
  const members = {};
  for (const group of workflow.groups ?? []) {
    const [x, y, w, h] = group.bounding;
    const area = [x, y + group.font_size * 1.4, x + w, y + h];
    members[group.title] = workflow.nodes
      .filter((n) => inside([n.pos[0], n.pos[1] - titleBar, n.pos[0] + n.size[0], n.pos[1] + n.size[1]], area))
      .map((n) => String(n.id));
  }
  return members;
}

/**
 * Problems with a laid-out graph, as sentences; none when it is clean.
 * nodes: [{id, title, box, chart?}], groups: [{title, box, titleHeight}], members: savedMembers().
 * `slack` (graph units) absorbs sub-pixel rounding of measured DOM boxes.
 */
export function layoutProblems({ nodes, groups, members }, slack = 1) {
  const problems = [];
  const name = (n) => `node ${n.id} (${n.title})`;
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      const [a, b] = [nodes[i], nodes[j]];
      const shrunk = a.box.map((v, k) => (k < 2 ? v + slack : v - slack));
      if (overlaps(shrunk, b.box)) problems.push(`${name(a)} ${show(a.box)} overlaps ${name(b)} ${show(b.box)}`);
    }
    const node = nodes[i];
    if (node.chart && !inside(node.chart, node.box, slack)) {
      problems.push(`${name(node)}: its chart ${show(node.chart)} spills out of the node ${show(node.box)}`);
    }
  }
  for (const group of groups) {
    const area = [group.box[0], group.box[1] + group.titleHeight, group.box[2], group.box[3]];
    const held = new Set(members[group.title] ?? []);
    for (const node of nodes) {
      if (held.has(String(node.id))) {
        if (!inside(node.box, area, slack)) {
          problems.push(`${name(node)} ${show(node.box)} leaves group "${group.title}" ${show(area)}`);
        }
      } else if (overlaps(node.box, group.box.map((v, k) => (k < 2 ? v + slack : v - slack)))) {
        problems.push(`${name(node)} ${show(node.box)} reaches into group "${group.title}" ${show(group.box)}`);
      }
    }
  }
  return problems;
}
