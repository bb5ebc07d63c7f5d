// The unmodified widget module in headless Chromium, on a harness page with fake app/api modules
// served at ComfyUI's import paths. Checks pixels, the summary text, the aria label, routing by node
// id, persistence in node.properties, hover, theme and resize. Run: node --test tests/browser
import assert from "node:assert/strict";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { layout } from "../../web/cgtaylor_draw.js";
import { LONG_NOTES, longRunPayload, v2Payload } from "./payloads.mjs";
import { launchChromium, openHarness, startServer } from "./serve.mjs";

const FIXTURE = JSON.parse(await readFile(new URL("./stats_fixture.json", import.meta.url), "utf8"));
const PAYLOAD = { ...FIXTURE, node: "7" };
const N = FIXTURE.steps.length;
// The harness page's dark palette (index.html) and the size of each node's host box.
const DARK = { bg: [0x22, 0x22, 0x22], accent: [0x0b, 0x8c, 0xe9], muted: [0x8a, 0x8a, 0x8a] };
const LIGHT_BG = [0xc9, 0xc9, 0xc9];
const W = 400;
const H = 250;

const forecastSteps = FIXTURE.steps.filter((s) => s.forecast > 0).length;
const EXPECTED_SUMMARY = `${forecastSteps}/${N} steps forecast · ${FIXTURE.totals.block_ratio.toFixed(1)}x fewer block evaluations`;

let server;
let browser;
let page;
let errors;

before(async () => {
  server = await startServer();
  browser = await launchChromium();
  ({ page, errors } = await openHarness(browser, server.url));
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** Let the widget's requestAnimationFrame redraw happen. */
const frames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

/** RGB at CSS-pixel points of a host's canvas. */
const probe = (hostId, points) =>
  page.evaluate(({ hostId, points }) => {
    const canvas = document.querySelector(`#${hostId} canvas`);
    const scale = canvas.width / canvas.clientWidth;
    const ctx = canvas.getContext("2d");
    return points.map(([x, y]) => [...ctx.getImageData(Math.floor(x * scale), Math.floor(y * scale), 1, 1).data.slice(0, 3)]);
  }, { hostId, points });

/** A checksum of all of a host's canvas pixels, to tell drawings apart. */
const digest = (hostId) =>
  page.evaluate((hostId) => {
    const canvas = document.querySelector(`#${hostId} canvas`);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let hash = 0;
    for (let i = 0; i < data.length; i++) hash = (Math.imul(hash, 31) + data[i]) | 0;
    return `${canvas.width}x${canvas.height}:${hash}`;
  }, hostId);

const chartState = (hostId) =>
  page.evaluate((hostId) => {
    const root = document.querySelector(`#${hostId} .cgtaylor-chart`);
    const canvas = root.querySelector("canvas");
    return { ...root.dataset, aria: canvas.getAttribute("aria-label"), role: canvas.getAttribute("role"), width: canvas.width };
  }, hostId);

const near = (actual, expected, tolerance = 8) => actual.every((v, i) => Math.abs(v - expected[i]) <= tolerance);
const assertColour = (actual, expected, what) => assert.ok(near(actual, expected), `${what}: got rgb(${actual}), want rgb(${expected})`);

/** Probe points: middle of the plot and just above the baseline, at the centre of step i's bar. */
function points(i, width = W, height = H, n = N) {
  const box = layout(width, height, n);
  const x = box.barX(i) + box.barW / 2;
  return { mid: [x, box.plot.y + box.plot.h / 2], base: [x, box.plot.y + box.plot.h - 1.5] };
}

async function emit(detail) {
  await page.evaluate((detail) => window.harness.api.emit("cgtaylor.stats", detail), detail);
  await frames();
}

let emptyDigest;

test("before any run the node shows an empty state with an aria label", async () => {
  await page.evaluate(() => window.harness.createNode(window.harness.CGTaylorCache, 7));
  await frames();
  const state = await chartState("host-7");
  assert.equal(state.steps, "0");
  assert.equal(state.role, "img");
  assert.match(state.aria, /no cache stats/i);
  const forecastStep = FIXTURE.steps.findIndex((s) => s.forecast > 0);
  const [mid] = await probe("host-7", [points(forecastStep).mid]);
  assert.ok(!near(mid, DARK.accent), "no bar before any stats");
  // The chart's whole room says what a run will show (it was one line over an empty box).
  const painted = await page.evaluate(() => {
    const canvas = document.querySelector("#host-7 canvas");
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let clear = 0;
    for (let i = 3; i < data.length; i += 4) if (!data[i]) clear++;
    return { clear, height: canvas.height };
  });
  assert.deepEqual([painted.clear, painted.height], [0, H], "every pixel of the 250 rows painted");
  const [centre] = await probe("host-7", [[W / 2, H * 0.75]]);
  assertColour(centre, DARK.bg, "the chart's background below its words");
  emptyDigest = await digest("host-7");
});

const captures = () => page.evaluate(() => window.harness.app.extensionManager.workflow.activeWorkflow.changeTracker.captures);

test("the stats event draws a bar per forecast step, a grey bar per full step, the summary and the label", async () => {
  assert.equal(await captures(), 0);
  await emit(PAYLOAD);
  assert.equal(await captures(), 1, "the open workflow is saved with the stats");
  const state = await chartState("host-7");
  assert.equal(state.steps, String(N));
  assert.equal(state.summary, EXPECTED_SUMMARY);
  assert.ok(state.aria.includes(EXPECTED_SUMMARY), state.aria);
  assert.ok(state.aria.includes(`${FIXTURE.totals.forecast} of ${FIXTURE.totals.calls} model calls forecast`), state.aria);

  // Every kind of step the fixture holds is probed, and it holds all three (record_fixture.py).
  const kinds = { forecast: 0, full: 0, partial: 0 };
  const box = layout(W, H, N);
  const probes = FIXTURE.steps.flatMap((s, i) => {
    const { mid, base } = points(i);
    const top = box.plot.y + box.plot.h - (box.plot.h * s.forecast) / Math.max(1, s.calls); // the bar's top edge
    return [mid, base, [mid[0], (top + box.plot.y + box.plot.h) / 2], [mid[0], top - 4], [mid[0], box.plot.y + box.plot.h - 9]];
  });
  const colours = await probe("host-7", probes);
  FIXTURE.steps.forEach((s, i) => {
    const [mid, base, insideBar, aboveBar, tenAbove] = colours.slice(5 * i, 5 * i + 5);
    if (s.calls > 0 && s.forecast === s.calls) {
      kinds.forecast += 1;
      assertColour(mid, DARK.accent, `step ${i} bar`);
      assertColour(base, DARK.accent, `step ${i} bar foot`);
    } else if (s.calls > 0 && s.forecast === 0) {
      kinds.full += 1;
      assertColour(mid, DARK.bg, `step ${i} above its bar`);
      assertColour(base, DARK.muted, `step ${i} full-compute bar`);
      assertColour(tenAbove, DARK.muted, `step ${i}: a bar 10 px high, not a stub`);
    } else if (s.calls > 0) {
      kinds.partial += 1; // a bar as high as the step's forecast share, nothing above it
      assertColour(insideBar, DARK.accent, `step ${i} partial bar (${s.forecast}/${s.calls})`);
      assertColour(base, DARK.accent, `step ${i} partial bar foot`);
      assertColour(aboveBar, DARK.bg, `step ${i} above its partial bar`);
    }
  });
  assert.ok(kinds.forecast > 0 && kinds.full > 0 && kinds.partial > 0, JSON.stringify(kinds));
  // The summary line is drawn: its row holds pixels brighter than the background.
  const row = await probe("host-7", Array.from({ length: 60 }, (_, k) => [8 + k * 2, 14]));
  assert.ok(row.some((c) => c[0] > 120), "summary text pixels");
  assert.notEqual(await digest("host-7"), emptyDigest);
});

test("the stats are kept in node.properties and never serialized as a widget value", async () => {
  const saved = await page.evaluate(() => {
    const node = window.harness.app.rootGraph.getNodeById(7);
    const widget = window.harness.chartOf(node);
    return {
      properties: node.properties,
      optionsSerialize: widget.options.serialize,
      widgetSerialize: widget.serialize,
      type: widget.type,
      widgetsValues: node.serialize().widgets_values,
    };
  });
  assert.deepEqual(saved.properties.cgtaylor_stats, PAYLOAD);
  assert.equal(saved.optionsSerialize, false, "options.serialize keeps it out of the prompt");
  assert.equal(saved.widgetSerialize, false, "widget.serialize keeps it out of widgets_values");
  assert.deepEqual(saved.widgetsValues, []);
  assert.notEqual(saved.type, "chart", "a built-in type name would be replaced by a Vue component");
});

test("a reloaded workflow restores the chart from the saved properties", async () => {
  await page.evaluate(() => {
    const { app, createNode, CGTaylorCache, FakeGraph } = window.harness;
    const info = JSON.parse(JSON.stringify(app.rootGraph.getNodeById(7).serialize()));
    // A reload builds a new graph and configures each node with its saved id.
    createNode(CGTaylorCache, 7, { info, graph: new FakeGraph(), hostId: "host-reloaded-7" });
  });
  await frames();
  const state = await chartState("host-reloaded-7");
  assert.equal(state.summary, EXPECTED_SUMMARY);
  assert.equal(await digest("host-reloaded-7"), await digest("host-7"));
});

test("a pasted copy of the node starts with an empty chart, whichever order the frontend configures it in", async () => {
  for (const [id, addFirst] of [[8, false], [9, true]]) {
    const properties = await page.evaluate(({ id, addFirst }) => {
      const { app, pasteNode, CGTaylorCache } = window.harness;
      const info = JSON.parse(JSON.stringify(app.rootGraph.getNodeById(7).serialize()));
      return pasteNode(CGTaylorCache, info, id, { addFirst }).properties;
    }, { id, addFirst });
    assert.deepEqual(properties.cgtaylor_stats, PAYLOAD, "configure copies the original's properties");
    await frames();
    const state = await chartState(`host-${id}`);
    assert.equal(state.steps, "0", `copy ${id}: the original's run is not shown`);
    assert.match(state.aria, /no cache stats/i);
    const kept = await page.evaluate((id) => window.harness.app.rootGraph.getNodeById(id).properties, id);
    assert.equal(kept.cgtaylor_stats, undefined, "and not saved with the copy");
  }
  assert.equal((await chartState("host-7")).summary, EXPECTED_SUMMARY, "the original keeps its chart");
});

test("events are routed by node id, through subgraphs, and ignored for other nodes", async () => {
  const before7 = await digest("host-7");
  await page.evaluate(() => {
    const { createNode, createSubgraphNode, CGTaylorCache, KSampler } = window.harness;
    createNode(CGTaylorCache, 5);
    const outer = createSubgraphNode(12);
    createNode(CGTaylorCache, 5, { graph: outer.subgraph });
    createNode(KSampler, 3);
  });
  // An interrupted run inside the subgraph: the last five steps made no call.
  const interrupted = structuredClone(PAYLOAD);
  interrupted.node = "12:5";
  for (const s of interrupted.steps.slice(N - 5)) Object.assign(s, { calls: 0, forecast: 0, gate_error: null });
  await emit(interrupted);
  await emit({ ...PAYLOAD, node: "99" });
  await emit({ ...PAYLOAD, node: "3" });
  await emit({ ...PAYLOAD, node: "12:77" });

  assert.equal((await chartState("host-sub-5")).steps, String(N));
  assert.equal((await chartState("host-5")).steps, "0", "node 5 of the root graph is another node");
  assert.equal(await digest("host-7"), before7);
  const hasChart = await page.evaluate(() => window.harness.app.rootGraph.getNodeById(3).widgets.length);
  assert.equal(hasChart, 0, "other node types get no chart");
  // Interrupted steps: neither a bar nor a tick.
  const last = N - 1;
  const [mid, base] = await probe("host-sub-5", [points(last).mid, points(last).base]);
  assertColour(mid, DARK.bg, "no-call step, middle");
  assertColour(base, DARK.bg, "no-call step, baseline");
});

test("hovering a bar draws its tooltip; leaving removes it", async () => {
  const i = FIXTURE.steps.findIndex((s) => s.forecast > 0);
  const plain = await digest("host-7");
  const box = await page.evaluate(() => {
    const r = document.querySelector("#host-7 canvas").getBoundingClientRect();
    return { x: r.x, y: r.y };
  });
  const { mid } = points(i);
  await page.mouse.move(box.x + mid[0], box.y + mid[1]);
  await frames();
  assert.equal((await chartState("host-7")).hover, String(i));
  assert.notEqual(await digest("host-7"), plain);
  await page.mouse.move(box.x + W + 50, box.y + H + 50);
  await frames();
  assert.equal((await chartState("host-7")).hover, "-1");
  assert.equal(await digest("host-7"), plain);
});

test("colours follow the theme variables and the chart redraws on resize", async () => {
  const corner = [3, H - 3];
  assertColour((await probe("host-7", [corner]))[0], DARK.bg, "dark background");
  await page.evaluate(() => document.documentElement.style.setProperty("--comfy-input-bg", "#C9C9C9"));
  await frames();
  assertColour((await probe("host-7", [corner]))[0], LIGHT_BG, "light background");
  await page.evaluate(() => document.documentElement.style.removeProperty("--comfy-input-bg"));

  // Move the element into a narrower container, as the Vue node renderer mounts it in its own.
  const narrow = 300;
  await page.evaluate((narrow) => {
    const root = document.querySelector("#host-7 .cgtaylor-chart");
    const box = document.createElement("div");
    box.id = "vue-7";
    box.style.cssText = `width:${narrow}px;height:250px`;
    document.body.append(box);
    box.replaceChildren(root);
  }, narrow);
  await frames();
  await frames(); // ResizeObserver fires after layout, then the redraw frame
  assert.equal((await chartState("vue-7")).width, narrow);
  const i = FIXTURE.steps.findIndex((s) => s.forecast === s.calls && s.calls > 0);
  assertColour((await probe("vue-7", [points(i, narrow).mid]))[0], DARK.accent, "bar at its narrower place");
});

test("a malformed payload draws the empty state without errors", async () => {
  await page.evaluate(() => {
    const root = document.querySelector("#vue-7 .cgtaylor-chart");
    document.querySelector("#host-7").replaceChildren(root);
  });
  await emit({ node: "7", steps: "garbage", totals: 3 });
  await emit({ node: "7", steps: [null, 5, { calls: "x" }] }); // odd but drawable: columns with no call
  assert.equal((await chartState("host-7")).steps, "3");
  await emit({ node: "7", steps: "garbage" });
  await emit(null);
  await emit("7");
  await frames();
  const state = await chartState("host-7");
  assert.equal(state.steps, "0");
  assert.match(state.aria, /no cache stats/i);
  assert.equal(await digest("host-7"), emptyDigest);
});

/** A new node in a host box of its own, scrolled into view, showing `payload`; resolves to its canvas's page box. */
async function nodeWith(id, payload) {
  await page.evaluate((id) => window.harness.createNode(window.harness.CGTaylorCache, id), id);
  await emit(payload);
  await page.locator(`#host-${id}`).scrollIntoViewIfNeeded();
  return page.evaluate((id) => {
    const r = document.querySelector(`#host-${id} canvas`).getBoundingClientRect();
    return { x: r.x, y: r.y };
  }, id);
}

/** The notes box as shown, or null while hidden. */
const notesBox = () =>
  page.evaluate(() => {
    const el = document.querySelector(".cgtaylor-notes");
    if (!el || el.hidden) return null;
    const r = el.getBoundingClientRect();
    return { text: el.textContent, notes: [...el.querySelectorAll(".cgtaylor-note")].map((li) => li.textContent),
      box: [r.left, r.top, r.right, r.bottom], viewport: [innerWidth, innerHeight] };
  });

test("hovering the footer or the summary shows every note in full; the bars and leaving do not", async () => {
  const payload = v2Payload(20);
  const at = await nodeWith(20, payload);
  assert.equal(await notesBox(), null);
  for (const [what, x, y] of [["footer", W - 60, H - 8], ["summary", 40, 10]]) {
    await page.mouse.move(at.x + x, at.y + y);
    const shown = await notesBox();
    assert.ok(shown, `${what}: the notes box shows`);
    assert.deepEqual(shown.notes, LONG_NOTES, `${what}: every note, in full`);
    assert.ok(shown.text.includes("Full calls: 4 warm-up"), shown.text);
    assert.ok(shown.text.includes("Gate calibration: 9 full calls compared"), shown.text);
    const [left, top, right, bottom] = shown.box;
    assert.ok(left >= 0 && top >= 0 && right <= shown.viewport[0] && bottom <= shown.viewport[1], `${what}: inside the viewport`);
    assert.equal(await page.evaluate(() => document.querySelector("#host-20 canvas").style.cursor), "help");
  }
  const { mid } = points(8, W, H, payload.steps.length);
  await page.mouse.move(at.x + mid[0], at.y + mid[1]);
  assert.equal(await notesBox(), null, "a bar shows its own tooltip instead");
  assert.equal((await chartState("host-20")).hover, "8");
  await page.mouse.move(at.x + 40, at.y + 10);
  assert.ok(await notesBox());
  await page.mouse.move(at.x + W + 40, at.y + 10);
  assert.equal(await notesBox(), null, "leaving the chart hides it");
});

test("a run of 600 steps keeps bars apart and marks every full step", async () => {
  const steps = 600;
  const payload = longRunPayload(21, steps);
  await nodeWith(21, payload);
  const box = layout(W, H, steps);
  assert.ok(!box.perStep, "more steps than columns");
  const base = box.plot.y + box.plot.h - 1.5;
  const probes = Array.from({ length: box.columns }, (_, c) => [
    [box.barX(c) + box.barW / 2, base], // the bar's foot: accent, or muted under a full step
    [box.barX(c) + box.barW / 2, box.plot.y + box.plot.h / 2], // the bar's middle
    [box.barX(c) + box.barW + 0.5, box.plot.y + box.plot.h / 2], // the gap after it
  ]).flat();
  const colours = await probe("host-21", probes);
  let marked = 0;
  for (let c = 0; c < box.columns; c++) {
    const [foot, middle, gap] = colours.slice(3 * c, 3 * c + 3);
    const [first, end] = box.stepRange(c);
    const run = payload.steps.slice(first, end);
    const full = run.some((s) => s.forecast === 0);
    const share = run.reduce((a, s) => a + s.forecast, 0) / run.reduce((a, s) => a + s.calls, 0);
    assertColour(foot, full ? DARK.muted : DARK.accent, `column ${c} (steps ${first}-${end - 1}) foot`);
    if (share > 0.6) assertColour(middle, DARK.accent, `column ${c} bar`);
    if (c < box.columns - 1) assertColour(gap, DARK.bg, `gap after column ${c}`);
    marked += full ? 1 : 0;
  }
  assert.ok(marked >= 13, `${marked} columns marked: warm-up, a full step every 50, the last step`);
});

test("the chart takes the height its node gives it, down to its minimum, whatever height it was drawn at", async () => {
  // As the Vue node renderer holds it: a grid row sized by its content, stretched while the node has
  // room. Unfolding the node's inputs takes that room away; the chart must give it up.
  await nodeWith(22, PAYLOAD);
  const heights = (hostStyle) =>
    page.evaluate(async (hostStyle) => {
      const host = document.querySelector("#host-22");
      host.style.cssText += hostStyle;
      for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
      const root = host.querySelector(".cgtaylor-chart");
      return { chart: root.clientHeight, drawn: root.querySelector("canvas").height };
    }, hostStyle);
  assert.deepEqual(await heights("display:grid;grid-template-rows:auto;height:400px"), { chart: 400, drawn: 400 });
  assert.deepEqual(await heights("height:auto"), { chart: 140, drawn: 140 }, "its CSS minimum, as the frontend's getMinHeight less the margins");
  assert.deepEqual(await heights("height:300px"), { chart: 300, drawn: 300 }, "and grows again with room");
});

test("the chart is drawn at devicePixelRatio times the canvas zoom, with crisp edges across and down", async () => {
  const sharp = await openHarness(browser, server.url, { deviceScaleFactor: 2 });
  const HEIGHT = 241; // times most zooms, not a whole number of pixels: the two axes scale differently
  try {
    const steps = 300;
    await sharp.page.evaluate(({ payload, height }) => {
      window.harness.createNode(window.harness.CGTaylorCache, 30, { height });
      window.harness.api.emit("cgtaylor.stats", payload);
    }, { payload: longRunPayload(30, steps), height: HEIGHT });
    /**
     * The canvas's size, and the colours it holds along one pixel row through the bars and one pixel
     * column down a bar, from above the 100% line to below the baseline.
     */
    const state = async () => {
      await sharp.page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      const size = await sharp.page.evaluate(() => {
        const canvas = document.querySelector("#host-30 canvas");
        return { width: canvas.width, height: canvas.height, client: [canvas.clientWidth, canvas.clientHeight] };
      });
      const ratio = [size.width / W, size.height / HEIGHT];
      const box = layout(W, HEIGHT, steps, ratio);
      const c = Math.floor(box.columns / 2) + 1;
      const probeLines = { row: Math.floor((box.plot.y + box.plot.h * 0.6) * ratio[1]), column: Math.floor((box.barX(c) + box.barW / 2) * ratio[0]),
        from: Math.round(box.plot.y * ratio[1]) - 3, to: Math.round((box.plot.y + box.plot.h) * ratio[1]) + 3 };
      const colours = await sharp.page.evaluate(({ row, column, from, to }) => {
        const ctx = document.querySelector("#host-30 canvas").getContext("2d");
        const set = (data) => {
          const seen = new Set();
          for (let i = 0; i < data.length; i += 4) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
          return [...seen];
        };
        return { row: set(ctx.getImageData(16, row, ctx.canvas.width - 32, 1).data), column: set(ctx.getImageData(column, from, 1, to - from).data) };
      }, probeLines);
      return { ...size, ...colours };
    };
    const palette = [DARK.bg, DARK.accent, DARK.muted, [0x4e, 0x4e, 0x4e]]; // the border colour draws the lines
    const blended = (colours) => colours.filter((c) => !palette.some((k) => near(c.split(",").map(Number), k, 2)));
    let seen = await state();
    assert.equal(seen.width, 2 * W, "devicePixelRatio 2");
    assert.deepEqual(blended(seen.row), [], "no blended pixels between bars");
    assert.deepEqual(blended(seen.column), [], "no blended pixels at the bar's top, the ticks or the lines");
    // Zoom the graph canvas as both renderers do: a CSS scale on the element, then a canvas frame.
    for (const zoom of [1.5, 1.37]) {
      await sharp.page.evaluate((zoom) => {
        const host = document.querySelector("#host-30");
        host.style.transformOrigin = "0 0";
        host.style.transform = `scale(${zoom})`;
        window.harness.app.canvas.ds.scale = zoom;
        window.harness.app.canvas.onDrawForeground?.();
      }, zoom);
      seen = await state();
      assert.deepEqual(seen.client, [W, HEIGHT], "the element keeps its CSS size");
      assert.deepEqual([seen.width, seen.height], [Math.round(2 * zoom * W), Math.round(2 * zoom * HEIGHT)], `zoom ${zoom}: one canvas pixel per screen pixel`);
      assert.deepEqual(blended(seen.row), [], `zoom ${zoom}: no blended pixels between bars`);
      assert.deepEqual(blended(seen.column), [], `zoom ${zoom}: no blended pixels down a bar`);
    }
    assert.deepEqual(sharp.errors, []);
  } finally {
    await sharp.page.context().close();
  }
});

test("no console or page errors, and a screenshot is saved", async (t) => {
  await emit(PAYLOAD);
  const dir = await mkdtemp(join(tmpdir(), "cgtaylor-widget-"));
  const file = join(dir, "widget.png");
  await page.locator("#host-7").screenshot({ path: file });
  const png = await readFile(file);
  assert.equal(png.subarray(1, 4).toString(), "PNG");
  t.diagnostic(`screenshot: ${file}`);
  assert.deepEqual(errors, []);
});
