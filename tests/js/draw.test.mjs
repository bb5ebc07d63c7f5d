// Unit tests of the pure drawing module with a recording fake Canvas 2D context (node --test tests/js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  DEFAULT_THEME,
  describeColumn,
  describeStep,
  drawChart,
  explain,
  hitRegion,
  hitTest,
  layout,
  normalizeStats,
  noteLines,
  readTheme,
  summarize,
  summaryLines,
} from "../../web/cgtaylor_draw.js";
import { LONG_NOTES, longRunPayload, V2_STEP, v2Payload } from "../browser/payloads.mjs";

const FIXTURE = JSON.parse(readFileSync(new URL("../browser/stats_fixture.json", import.meta.url), "utf8"));
const SIZE = { width: 400, height: 200 };
const THEME = { ...DEFAULT_THEME, accent: "#00aa00", muted: "#777777", fg: "#eeeeee", bg: "#111111" };

/** A stand-in for CanvasRenderingContext2D that records every call with the styles in force. */
function recordingContext() {
  const calls = [];
  const state = { fillStyle: "#000000", strokeStyle: "#000000", globalAlpha: 1, font: "", lineWidth: 1 };
  const ctx = new Proxy(state, {
    get(target, prop) {
      if (prop === "calls") return calls;
      if (prop === "measureText") return (text) => ({ width: String(text).length * 6 });
      if (prop in target) return target[prop];
      return (...args) => calls.push({ op: prop, args, fillStyle: target.fillStyle, globalAlpha: target.globalAlpha });
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return ctx;
}

const step = (calls, forecast, gate_error = null) => ({ calls, forecast, gate_error, sigma: 0.5 });

/** fillRects in the given colour that lie inside the plot area (the footer legend uses the same colours). */
function plotRects(ctx, colour, n, size = SIZE, pixelRatio = 1) {
  const { plot } = layout(size.width, size.height, n, pixelRatio);
  return ctx.calls.filter(
    (c) => c.op === "fillRect" && c.fillStyle === colour && c.globalAlpha === 1 &&
      c.args[1] >= plot.y - 1e-9 && c.args[1] + c.args[3] <= plot.y + plot.h + 1e-9,
  );
}

const texts = (ctx) => ctx.calls.filter((c) => c.op === "fillText").map((c) => c.args[0]);

test("one bar per forecast step, height = forecast share, at the step's slot", () => {
  const payload = { threshold: 0.1, steps: [step(2, 2, 0.01), step(2, 1, 0.05), step(2, 0, 0.3), step(0, 0), step(1, 1, 0.02)] };
  const ctx = recordingContext();
  drawChart(ctx, payload, { ...SIZE, theme: THEME });
  const box = layout(SIZE.width, SIZE.height, 5);
  const bars = plotRects(ctx, THEME.accent, 5);
  assert.deepEqual(bars.map((b) => b.args[0]), [0, 1, 4].map(box.barX));
  assert.deepEqual(bars.map((b) => b.args[3]), [box.plot.h, box.barHeight(0.5), box.plot.h]);
  for (const b of bars) assert.equal(b.args[1] + b.args[3], box.plot.y + box.plot.h); // standing on the baseline
});

// A full step's bar: at least this high wherever the chart has room for it (it was a 3 px stub).
const FULL_BAR_MIN_PX = 10;

test("a step computed in full gets a muted bar of its own; a step with no call gets nothing", () => {
  const payload = { steps: [step(2, 0), step(0, 0), step(1, 1, 0.01)] };
  for (const size of [SIZE, { width: 320, height: 140 }]) {
    const ctx = recordingContext();
    drawChart(ctx, payload, { ...size, theme: THEME });
    const box = layout(size.width, size.height, 3);
    const bars = plotRects(ctx, THEME.muted, 3, size);
    assert.deepEqual(bars.map((b) => b.args[0]), [box.barX(0)]);
    assert.ok(bars[0].args[3] >= FULL_BAR_MIN_PX && bars[0].args[3] >= Math.floor(box.plot.h / 5), `a bar: ${bars[0].args[3]} px`);
    assert.equal(bars[0].args[2], box.barW, "as wide as a forecast bar");
    assert.equal(bars[0].args[1] + bars[0].args[3], box.plot.y + box.plot.h, "standing on the baseline");
  }
  const ctx = recordingContext();
  drawChart(ctx, payload, { ...SIZE, theme: THEME });
  const box = layout(SIZE.width, SIZE.height, 3);
  const inColumn1 = ctx.calls.filter((c) => c.op === "fillRect" && c.args[0] === box.barX(1));
  assert.deepEqual(inColumn1, []);
});

test("the fixture draws one bar per forecast step and the summary line", () => {
  const ctx = recordingContext();
  const summary = drawChart(ctx, FIXTURE, { ...SIZE, theme: THEME });
  const forecastSteps = FIXTURE.steps.filter((s) => s.forecast > 0).length;
  assert.equal(plotRects(ctx, THEME.accent, FIXTURE.steps.length).length, forecastSteps);
  assert.equal(plotRects(ctx, THEME.muted, FIXTURE.steps.length).length, FIXTURE.steps.length - forecastSteps);
  const ratio = FIXTURE.totals.block_ratio.toFixed(1);
  assert.equal(summary.text, `${forecastSteps}/${FIXTURE.steps.length} steps forecast · ${ratio}x fewer block evaluations`);
  assert.ok(texts(ctx).includes(summary.text));
  assert.ok(texts(ctx).includes(`tolerance ${FIXTURE.tolerance}`), "the footer names the gate's limit");
});

test("summary wording matches the issue's example and falls back to the block counts", () => {
  const steps = Array.from({ length: 50 }, (_, i) => step(1, i < 31 ? 1 : 0));
  assert.equal(summarize({ steps, totals: { block_ratio: 2.7 } }).text, "31/50 steps forecast · 2.7x fewer block evaluations");
  assert.equal(summarize({ steps, totals: { blocks_run: 100, blocks_total: 300 } }).text, "31/50 steps forecast · 3.0x fewer block evaluations");
  assert.equal(summarize({ steps: [step(1, 0)], totals: { block_ratio: 1 } }).text, "0/1 steps forecast · every block evaluated");
  const aria = summarize({ ...FIXTURE, notes: ["warm-up covers every step"] }).aria;
  const forecastSteps = FIXTURE.steps.filter((s) => s.forecast > 0).length; // partly forecast steps count
  assert.ok(aria.includes(`${forecastSteps}/${FIXTURE.steps.length} steps forecast`), aria);
  assert.ok(aria.includes(`${FIXTURE.totals.forecast} of ${FIXTURE.totals.calls} model calls forecast`), aria);
  assert.match(aria, /warm-up covers every step/);
});

test("empty state: no bars, the message, what a run will show and the legend", () => {
  for (const payload of [undefined, null, {}, { steps: [] }]) {
    const ctx = recordingContext();
    const summary = drawChart(ctx, payload, { ...SIZE, theme: THEME });
    assert.equal(summary.empty, true);
    assert.equal(plotRects(ctx, THEME.accent, 1).length, 0);
    const drawn = texts(ctx);
    assert.equal(drawn[2], summary.text);
    assert.deepEqual(drawn.slice(0, 2), ["forecast", "full"], "the legend");
    assert.match(drawn.slice(3).join(" "), /^After a run: a bar per sampling step.*computed in full\.$/);
    assert.match(summary.aria, /no cache stats/i);
  }
});

test("before any run the chart fills the room the node gives it: no empty box under a one-line note", () => {
  for (const height of [140, 224, 392]) {
    const ctx = recordingContext();
    drawChart(ctx, null, { width: 320, height, theme: THEME });
    const background = ctx.calls.find((c) => c.op === "fillRect" && c.fillStyle === THEME.bg);
    assert.deepEqual(background.args, [0, 0, 320, height], `${height} px: the background fills the chart`);
    const lines = ctx.calls.filter((c) => c.op === "fillText").map((c) => c.args[2]);
    const [top, bottom] = [Math.min(...lines), Math.max(...lines)];
    assert.ok(bottom > height - 20, `${height} px: the legend at the foot (${bottom})`);
    // The words sit in the middle of the room above the legend, not on its first line.
    assert.ok(Math.abs(height - 22 - (bottom - 16 + 0) - top) < height / 2 + 20, `${height} px: text from ${top}`);
  }
});

test("a merge note before any run is drawn whole, wrapped over the chart's room", () => {
  const note = "its model goes into ModelMergeSimple (node 12) as model2, and merge nodes keep only model1's patches, " +
    "so the cache is dropped and nothing will be forecast; put CGTaylorCache after the merge";
  const ctx = recordingContext();
  const summary = drawChart(ctx, { v: 2, num_steps: 0, steps: [], notes: [note] }, { width: 320, height: 224, theme: THEME });
  const drawn = texts(ctx).slice(2);
  assert.equal(drawn.join(" "), summary.text, "every word, in order");
  assert.ok(drawn.every((line) => line.length * 6 <= 320 - 12), drawn);
});

test("a summary too long for the chart's width takes a line per part, and the bars move down under it", () => {
  const payload = longRunPayload(7, 400);
  const text = summarize(payload).text; // "396/400 steps forecast · 3.9x fewer block evaluations": 318 px here
  const narrow = { width: 320, height: 200 };
  const ctx = recordingContext();
  const drawn = drawChart(ctx, payload, { ...narrow, theme: THEME });
  assert.equal(drawn.summaryLines, 2);
  const parts = text.split(" · ");
  assert.deepEqual(texts(ctx).slice(0, 2), parts, "each part whole, none cut");
  const one = layout(narrow.width, narrow.height, 400);
  const two = layout(narrow.width, narrow.height, 400, 1, 2);
  assert.equal(two.plot.y - one.plot.y, 16, "one line lower");
  assert.ok(plotRects(ctx, THEME.accent, 400).every((r) => r.args[1] >= two.plot.y), "no bar under the second line");
  // Hit testing reads the layout the chart was drawn with.
  const size = { ...narrow, summaryLines: drawn.summaryLines };
  assert.deepEqual(hitRegion(payload, size, 50, one.plot.y + 2), { kind: "summary" });
  assert.deepEqual(hitRegion(payload, { ...narrow }, 50, one.plot.y + 2)?.kind, "column");
  // Where it fits, one line as before.
  assert.deepEqual(summaryLines(ctx, text, 400), [text]);
  assert.equal(drawChart(recordingContext(), payload, { ...SIZE, theme: THEME }).summaryLines, 1);
});

test("malformed payloads never throw and bad fields are clamped", () => {
  const cyclic = { steps: [step(1, 1)] };
  cyclic.self = cyclic;
  const throwing = Object.defineProperty({}, "steps", { get() { throw new Error("boom"); } });
  const junk = [
    0, "stats", true, [], [null], { steps: "20" }, { steps: [null, 1, "a", [], { calls: -3 }, { calls: NaN }] },
    { steps: new Array(4), num_steps: "many", totals: null, threshold: "0.1", notes: [1, null, "ok"] },
    { steps: [{ calls: 1e308, forecast: 1e308, sigma: Infinity, gate_error: "0.3", step: 2.5 }], num_steps: 1e12 },
    { steps: [step(2, 5)], totals: { block_ratio: -4, calls: "x" } }, cyclic, throwing,
  ];
  for (const payload of junk) {
    for (const hoverIndex of [-1, 0, 3, null, "2", NaN, 1.5]) {
      for (const size of [SIZE, { width: 0, height: 0 }, { width: NaN, height: -5 }, { width: 30, height: 12 }]) {
        const ctx = recordingContext();
        assert.doesNotThrow(() => drawChart(ctx, payload, { ...size, theme: THEME, hoverIndex }), String(payload));
        assert.doesNotThrow(() => hitTest(payload, size, 10, 40));
        assert.doesNotThrow(() => describeStep(payload, hoverIndex));
      }
    }
  }
  assert.doesNotThrow(() => drawChart(recordingContext(), FIXTURE)); // no options at all
  const clamped = normalizeStats({ steps: [step(2, 5), { calls: -1, forecast: 3 }] });
  assert.deepEqual(clamped.steps.map((s) => [s.calls, s.forecast]), [[2, 2], [0, 0]]);
  assert.equal(normalizeStats({ steps: [{}] }).limit, null);
  assert.equal(normalizeStats(throwing), null);
  assert.equal(normalizeStats([{ steps: [step(1, 1)] }]).steps.length, 1, "the list-wrapped ui shape is accepted");
});

test("an interrupted run is padded to num_steps with no-call steps", () => {
  const stats = normalizeStats({ num_steps: 6, steps: [step(1, 0), step(1, 1)] });
  assert.deepEqual(stats.steps.map((s) => s.calls), [1, 1, 0, 0, 0, 0]);
  assert.equal(summarize({ num_steps: 6, steps: [step(1, 0), step(1, 1)] }).text.split(" ")[0], "1/6");
});

test("hit testing maps each bar's centre to its step and misses outside the plot", () => {
  const box = layout(SIZE.width, SIZE.height, FIXTURE.steps.length);
  FIXTURE.steps.forEach((_, i) => {
    assert.equal(hitTest(FIXTURE, SIZE, box.barX(i) + box.barW / 2, box.plot.y + box.plot.h / 2), i);
  });
  assert.equal(hitTest(FIXTURE, SIZE, 1, box.plot.y + 5), -1);
  assert.equal(hitTest(FIXTURE, SIZE, SIZE.width / 2, 2), -1, "the summary line is not a step");
  assert.equal(hitTest(null, SIZE, SIZE.width / 2, SIZE.height / 2), -1);
});

test("the tooltip names the step's numbers and compares the gate error with the threshold", () => {
  const payload = { threshold: 0.05, steps: [step(2, 0), step(2, 2, 0.021), step(2, 0, 0.0621), step(0, 0), step(1, 0, 0.05)] };
  assert.deepEqual(describeStep(payload, 1), ["step 2/5 · sigma 0.5", "2 calls · 2 forecast", "mean gate error 0.021 < threshold 0.05"]);
  assert.match(describeStep(payload, 2)[2], /^mean gate error 0\.0621 ≥ threshold 0\.05$/);
  // One call: its own error; at the threshold itself the gate (error < threshold) rejects.
  assert.deepEqual(describeStep(payload, 4)[2], "gate error 0.05 ≥ threshold 0.05");
  assert.match(describeStep(payload, 0)[2], /not evaluated/);
  assert.match(describeStep(payload, 3)[1], /no model call/);
  assert.deepEqual(describeStep(payload, 9), []);
  const ctx = recordingContext();
  drawChart(ctx, payload, { ...SIZE, theme: THEME, hoverIndex: 2 });
  for (const line of describeStep(payload, 2)) assert.ok(texts(ctx).includes(line), line);
  const unhovered = recordingContext();
  drawChart(unhovered, payload, { ...SIZE, theme: THEME });
  assert.ok(!texts(unhovered).includes(describeStep(payload, 2)[0]));
});

test("theme colours come from the palette variables, with fallbacks", () => {
  const vars = { "--fg-color": " #171718 ", "--comfy-input-bg": "#C9C9C9", "--primary": "rgb(49, 185, 244)" };
  const theme = readTheme({ getPropertyValue: (name) => vars[name] ?? "" });
  assert.equal(theme.fg, "#171718");
  assert.equal(theme.bg, "#C9C9C9");
  assert.equal(theme.accent, "rgb(49, 185, 244)");
  assert.equal(theme.border, DEFAULT_THEME.border);
  assert.deepEqual(readTheme(undefined), { ...DEFAULT_THEME });
  const ctx = recordingContext();
  drawChart(ctx, FIXTURE, { ...SIZE, theme });
  assert.equal(ctx.calls.find((c) => c.op === "fillRect").fillStyle, "#C9C9C9", "background first");
  assert.ok(plotRects(ctx, "rgb(49, 185, 244)", FIXTURE.steps.length).length > 0);
});

// ---------------------------------------------------------------------------------------------
// Payload version 2: why steps were full, predicted and measured errors, the run's explanation.

/** A payload as version 1 sent it: no reasons, predictions, tolerance, calibration or memory. */
function asVersion1(payload) {
  const { tolerance, calibration, memory, ...rest } = payload;
  const { full, ...totals } = payload.totals;
  return { ...rest, v: 1, totals, steps: payload.steps.map(({ full: _, predicted, measured, ...s }) => s) };
}

test("a v2 step's tooltip says why its calls were full and compares the predicted error with the tolerance", () => {
  const payload = v2Payload(7);
  assert.deepEqual(describeStep(payload, V2_STEP.warmup).slice(1), ["2 calls · 0 forecast", "full: warm-up"]);
  assert.equal(describeStep(payload, V2_STEP.edge)[2], "full: first/last step");
  assert.equal(describeStep(payload, V2_STEP.window)[2], "full: outside window");
  assert.equal(describeStep(payload, V2_STEP.cap)[2], "full: forecast cap");
  assert.equal(describeStep(payload, V2_STEP.fallback)[2], "full: fallback");
  assert.equal(describeStep(payload, V2_STEP.mixed)[2], "full: 1 forecast cap, 1 gate", "each reason with its count");
  // A partly forecast step: one call forecast, the other rejected by the gate; their mean error
  // is on no particular side of the tolerance.
  const partial = describeStep(payload, V2_STEP.partialGate);
  assert.deepEqual(partial.slice(1), [
    "2 calls · 1 forecast", "full: gate", "mean predicted error 0.21 · tolerance 0.15", "mean measured error 0.075",
  ]);
  assert.equal(describeStep(payload, V2_STEP.gate)[3], "mean predicted error 0.21 ≥ tolerance 0.15");
  assert.equal(describeStep(payload, 2)[2], "mean predicted error 0.09 < tolerance 0.15");
  // A version 1 payload has no reasons: the gate error against the threshold, as before.
  assert.match(describeStep(asVersion1(FIXTURE), 1)[2], /^mean gate error [\d.]+ · threshold 0\.2$/); // one call of two forecast
});

test("a v3 step's tooltip adds what the forecasts in a row before it scored, and shows the sampler's gain unmultiplied", () => {
  const payload = { ...v2Payload(7), v: 3 };
  payload.steps = payload.steps.map((s, i) => (i === 2 ? { ...s, gain: 7.5, weight: 2, spent: 0.04 } : s));
  const lines = describeStep(payload, 2);
  assert.ok(lines.includes("sampler weighs the guidance 7.5x an Euler step"), lines);
  // v3: the prediction has the sampler's weights in it; the gate adds the run's earlier forecasts' scores.
  assert.ok(lines.includes("mean predicted error 0.09 × 2 (step 2) + 0.04 (forecasts in a row before) = 0.22 ≥ tolerance 0.15"),
    lines);
  // the same step in a v2 payload: the gain multiplied, as the gate of that version did
  const v2 = { ...payload, v: 2 };
  assert.ok(describeStep(v2, 2).some((line) => line.includes("× 15 (sampler 7.5, step 2)")), describeStep(v2, 2));
});

test("a run with a speed target shows the target and the speed reached, and no tolerance to compare with", () => {
  const payload = { ...v2Payload(7), v: 3, target: { speedup: 2, refused: 3 } };
  payload.totals = { ...payload.totals, block_ratio: 1.62 };
  const { heading, lines } = explain(payload);
  assert.match(heading, /1\.6x fewer block evaluations \(target 2x\)$/);
  assert.match(lines[0], / · target 2x, reached 1\.62x$/);
  assert.ok(!lines[0].includes("tolerance"));
  assert.match(summarize(payload).aria, /target 2x, reached 1\.62x/);
  assert.ok(describeStep(payload, 2).every((line) => !line.includes("tolerance")), describeStep(payload, 2));
});

test("the reasons' labels are the ones the payload sends; a payload without them gets the built-in ones", () => {
  const payload = v2Payload(7);
  const reasons = { warmup: { short: "warming", long: "still warming up" }, cap: { short: "capped", long: "capped run" } };
  const sent = { ...payload, reasons };
  assert.equal(describeStep(sent, V2_STEP.warmup)[2], "full: warming");
  assert.equal(describeStep(sent, V2_STEP.mixed)[2], "full: 1 capped, 1 gate", "a reason the payload does not name keeps its key");
  assert.match(explain(sent).lines[1], /^Full calls: 4 still warming up, 3 capped run, /);
  assert.match(summarize(sent).aria, /full calls: 4 warming, 3 capped, \d/, "the payload's reasons first, in its order");
  for (const unusable of [undefined, null, [], { warmup: "warm-up" }, { warmup: { short: 1, long: 2 } }]) {
    assert.equal(describeStep({ ...payload, reasons: unusable }, V2_STEP.cap)[2], "full: forecast cap", String(unusable));
  }
});

test("the run's explanation holds every note in full, the full calls by reason and the calibration", () => {
  const payload = v2Payload(7);
  const { heading, lines, notes } = explain(payload);
  assert.equal(heading, summarize(payload).text);
  assert.deepEqual(notes, LONG_NOTES);
  assert.equal(lines[0], `${payload.totals.forecast} of ${payload.totals.calls} model calls forecast · tolerance 0.15`);
  assert.equal(lines[1], "Full calls: 4 warm-up (or no forecast held yet), 2 first or last step (always full), " +
    "2 outside start_fraction .. end_fraction, 3 max_consecutive forecasts in a row reached, " +
    "5 rejected by the confidence gate, 2 forced full compute (fallback).");
  assert.equal(lines[2], "Gate calibration: 9 full calls compared, measured error within the prediction for 89% " +
    "(median predicted 0.09, measured 0.075).");
  assert.match(summarize(payload).aria, /full calls: 4 warm-up, 2 first\/last step, 2 outside window, 3 forecast cap, 5 gate, 2 fallback/);
  assert.equal(explain({ ...payload, memory: { device: "cuda:0", peak_bytes: 420e6, host: "cpu", host_bytes: 4.64e9 } })
    .lines.at(-1), "Cache memory: peak 420 MB on cuda:0, 4.64 GB in cpu memory.");
  assert.equal(explain({ ...payload, memory: { device: "cpu", peak_bytes: 583680, host_bytes: 0 } }).lines.at(-1),
    "Cache memory: peak 584 kB on cpu.");
  // Version 1: the calls and the threshold only; nothing to explain without stats.
  assert.deepEqual(explain(asVersion1(FIXTURE)).lines, [`${FIXTURE.totals.forecast} of ${FIXTURE.totals.calls} model calls forecast · threshold 0.2`]);
  assert.equal(explain(null), null);
});

test("the summary line and the footer are their own hover regions", () => {
  const box = layout(SIZE.width, SIZE.height, 20);
  const payload = v2Payload(7);
  assert.deepEqual(hitRegion(payload, SIZE, 50, 8), { kind: "summary" });
  assert.deepEqual(hitRegion(payload, SIZE, 300, SIZE.height - 8), { kind: "footer" });
  assert.deepEqual(hitRegion(payload, SIZE, box.barX(3) + 1, box.plot.y + 10), { kind: "column", index: 3 });
  assert.equal(hitRegion(null, SIZE, 50, 8), null, "no stats: nothing to explain");
  assert.equal(hitRegion(payload, SIZE, -3, 8), null);
});

// ---------------------------------------------------------------------------------------------
// Long runs and pixel ratios

test("hundreds of steps share columns: every column a bar, every full step still marked", () => {
  const steps = 600;
  const payload = longRunPayload(7, steps);
  const ctx = recordingContext();
  drawChart(ctx, payload, { ...SIZE, theme: THEME });
  const box = layout(SIZE.width, SIZE.height, steps);
  assert.ok(!box.perStep && box.columns < steps && box.columns >= 100, `${box.columns} columns`);
  const bars = plotRects(ctx, THEME.accent, steps);
  const ticks = plotRects(ctx, THEME.muted, steps);
  // Bars keep a gap: each ends before the next begins.
  for (let c = 1; c < bars.length; c++) assert.ok(bars[c - 1].args[0] + bars[c - 1].args[2] < bars[c].args[0]);
  // Every full step's column carries a muted tick, and only those.
  const fullSteps = payload.steps.flatMap((s, i) => (s.forecast === 0 ? [i] : []));
  const columnsWithFull = new Set(fullSteps.map((i) => Array.from({ length: box.columns }, (_, c) => c)
    .find((c) => { const [a, b] = box.stepRange(c); return i >= a && i < b; })));
  assert.deepEqual(ticks.map((t) => t.args[0]), [...columnsWithFull].sort((a, b) => a - b).map(box.barX));
  // A column with a full step among forecast ones: a shorter bar, the tick over its foot.
  const c = [...columnsWithFull][2];
  const bar = bars.find((b) => b.args[0] === box.barX(c));
  assert.ok(bar.args[3] < box.plot.h && bar.args[3] > box.plot.h / 4, "a bar for the column's forecast share");
  const lines = describeColumn(payload, SIZE, c);
  const [first, end] = box.stepRange(c);
  assert.match(lines[0], new RegExp(`^steps ${first + 1}–${end}/${steps} · sigma `));
  assert.ok(lines.includes("1 step computed in full"), lines.join(" | "));
  assert.ok(lines.includes("full: 2 gate"), lines.join(" | "));
  assert.equal(hitTest(payload, SIZE, box.barX(c) + box.barW / 2, box.plot.y + 5), c);
  // The same run on a wide chart gets a bar per step again.
  assert.ok(layout(2000, 200, steps).perStep);
});

test("bars, ticks and lines fall on whole device pixels at any pixel ratio", () => {
  // The widget sizes the canvas to round(CSS size x ratio) and passes the scales that result, which
  // differ across and down (320 x 141 CSS px at 2.3 is 736 x 324 pixels: 2.3 and 2.2979).
  for (const [width, height, zoom] of [[400, 200, 1], [400, 200, 1.25], [320, 141, 2], [320, 141, 2.3], [333, 157, 1.6], [250, 171, 3.5]]) {
    const ratio = [Math.round(width * zoom) / width, Math.round(height * zoom) / height];
    for (const payload of [FIXTURE, longRunPayload(7, 400)]) {
      const ctx = recordingContext();
      drawChart(ctx, payload, { width, height, theme: THEME, pixelRatio: ratio });
      const rects = ctx.calls.filter((c) => c.op === "fillRect" && [THEME.accent, THEME.muted, THEME.border].includes(c.fillStyle) &&
        c.args[1] < height - 20); // bars, ticks and lines; not the footer's legend swatches
      assert.ok(rects.length > 10);
      const whole = (v, r) => Math.abs(v * r - Math.round(v * r)) < 1e-6;
      for (const { args: [x, y, w, h] } of rects) {
        assert.ok(whole(x, ratio[0]) && whole(w, ratio[0]) && whole(y, ratio[1]) && whole(h, ratio[1]), `${width}x${height} at ${zoom}: ${[x, y, w, h]}`);
        assert.ok(w * ratio[0] >= 1 - 1e-9 && h * ratio[1] >= 1 - 1e-9, "at least one device pixel");
      }
    }
  }
});

test("with no forecast accepted the calibration line says so instead of printing a '?' median", () => {
  const payload = { ...FIXTURE, totals: { ...FIXTURE.totals, forecast: 0 },
    calibration: { pairs: 5, predicted_median: null, predicted_max: null, measured_median: 0.09, measured_max: 0.2, covered: 1 } };
  const line = explain(payload).lines.find((l) => l.startsWith("Gate calibration"));
  assert.equal(line, "Gate calibration: 5 full calls compared, measured error within the prediction for 100% " +
    "(no forecast accepted, median measured 0.09).");
  assert.ok(!explain(payload).lines.some((l) => l.includes("?")));
});

test("a payload without a run but with a note says why nothing will be accelerated", () => {
  const note = "its model goes into ModelMergeSimple (node 12) as model2, and merge nodes keep only model1's patches";
  const payload = { v: 2, node: "7", num_steps: 0, steps: [], notes: [note] };
  assert.equal(summarize(payload).text, `Not accelerating: ${note}`);
  assert.deepEqual(explain(payload), { heading: "Not accelerating", lines: [], notes: [note] });
  const ctx = recordingContext();
  drawChart(ctx, payload, { ...SIZE, theme: THEME });
  assert.ok(texts(ctx).some((t) => t.startsWith("Not accelerating: its model goes into")));
  assert.equal(summarize({ v: 2, steps: [], notes: [] }).text, "No cache stats yet: run the workflow");
});

test("a step's tooltip compares the prediction as the gate weighed it (sampler gain, step weight)", () => {
  const payload = { v: 2, tolerance: 0.1, threshold: 0.1, num_steps: 3, notes: [], steps: [
    { step: 0, calls: 1, forecast: 0, full: { edge: 1 } },
    { step: 1, calls: 1, forecast: 0, predicted: 0.06, gain: 2, weight: 1.25, full: { gate: 1 } },
    { step: 2, calls: 1, forecast: 1, predicted: 0.06, weight: 0.8 },
  ] };
  assert.equal(describeStep(payload, 1)[3], "predicted error 0.06 × 2.5 (sampler 2, step 1.25) = 0.15 ≥ tolerance 0.1");
  assert.equal(describeStep(payload, 2)[2], "predicted error 0.06 × 0.8 (step 0.8) = 0.048 < tolerance 0.1");
});

test("the footer wraps the first note's first clause in whole words below the legend, and says there is more", () => {
  const payload = v2Payload(7);
  for (const width of [320, 400, 700]) {
    const ctx = recordingContext();
    const drawn = drawChart(ctx, payload, { width, height: 260, theme: THEME });
    const clause = LONG_NOTES[0].split(": ")[0];
    const box = layout(width, 260, payload.steps.length, 1, drawn.summaryLines, drawn.noteLines);
    const footer = ctx.calls.filter((c) => c.op === "fillText" && c.args[2] > box.plot.y + box.plot.h + 10 && c.args[0] !== "forecast" &&
      c.args[0] !== "full" && !c.args[0].startsWith("tolerance"));
    assert.equal(footer.map((c) => c.args[0]).join(" "), `${clause} (more\u00a0on\u00a0hover)`, `${width} px`);
    assert.equal(footer.length, drawn.noteLines);
    assert.ok(footer.every((c) => !c.args[0].endsWith("…") && c.args[0].length * 6 <= width - 12), `${width} px: whole lines`);
    assert.ok(texts(ctx).includes("tolerance 0.15"), "the gate's limit stays beside the legend");
    // The plot makes room for the note, and hovering the note shows every note.
    assert.ok(box.plot.y + box.plot.h <= 260 - 6 - (1 + drawn.noteLines) * 16 + 1e-9);
    const size = { width, height: 260, summaryLines: drawn.summaryLines, noteLines: drawn.noteLines };
    assert.deepEqual(hitRegion(payload, size, 40, footer[0].args[2]), { kind: "footer" });
  }
  // A note of one clause is drawn whole; with none the footer is the legend alone.
  const ctx = recordingContext();
  assert.deepEqual(noteLines(ctx, [LONG_NOTES[1]], 700), [LONG_NOTES[1]]);
  assert.deepEqual(noteLines(ctx, [], 700), []);
});
