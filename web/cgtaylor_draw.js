// Pure drawing for the CG-Taylor cache chart: stats payload + Canvas 2D context in, pixels out.
// No ComfyUI or DOM imports, so node --test can drive it with a fake context, and no side effects at
// import time (ComfyUI imports every .js under WEB_DIRECTORY as an extension entry point).
//
// Coordinates are CSS pixels; the caller scales the context by `pixelRatio` (devicePixelRatio times
// the canvas zoom: one number, or [x, y] where the canvas's rounded size makes the two differ) and
// passes the same ratio here, so that bar edges and lines land on whole device pixels.

const MAX_STEPS = 10000; // a guard against absurd payloads, far above any real schedule
// Device pixels one bar needs to stay apart from its neighbours: two of bar, one of gap. With less
// room per step, neighbouring steps share a bar (one per column of this width).
const MIN_SLOT_PX = 3;
// Between the summary's parts: on one line where the summary fits, else a line per part.
const SUMMARY_SEPARATOR = " · ";
// Lines the footer gives the first note, below the legend: its first clause (up to ": "), wrapped.
const NOTE_LINES = 3;
const MORE = " (more\u00a0on\u00a0hover)"; // no-break spaces: wrapped as one word
// A step computed in full: a muted bar this share of the plot high, at least FULL_BAR_PX, so that it
// reads as a bar of its own beside the forecast ones (a share of forecast calls would be 0).
const FULL_BAR_SHARE = 0.2;
const FULL_BAR_PX = 10;

export const DEFAULT_THEME = Object.freeze({
  bg: "#222222", // plot background (--comfy-input-bg)
  fg: "#dddddd", // summary and tooltip text (--fg-color)
  muted: "#8a8a8a", // secondary text, full-compute bars (--descrip-text)
  border: "#4e4e4e", // frame, baseline, 100% line (--border-color)
  accent: "#0b8ce9", // forecast bars (--primary)
  panel: "#171718", // tooltip box (--comfy-menu-bg)
  font: "12px sans-serif",
});

// Theme key -> CSS variables to try, first found wins (newer design tokens are not in older frontends).
const THEME_VARIABLES = {
  bg: ["--comfy-input-bg"],
  fg: ["--fg-color", "--input-text", "--foreground"],
  muted: ["--descrip-text", "--muted-foreground"],
  border: ["--border-color", "--border"],
  accent: ["--primary"],
  panel: ["--comfy-menu-bg", "--bg-color"],
};

/**
 * Why a model call ran in full (payload v2, steps[i].full and totals.full), in the node's order of
 * precedence: a short label for the step tooltip and a sentence part for the run's explanation.
 * The node sends its own list with the stats (payload.reasons, core/stats.py FULL_REASONS); this copy
 * labels payloads recorded before it did.
 */
export const FULL_REASONS = Object.freeze({
  warmup: { short: "warm-up", long: "warm-up (or no forecast held yet)" },
  edge: { short: "first/last step", long: "first or last step (always full)" },
  window: { short: "outside window", long: "outside start_fraction .. end_fraction" },
  cap: { short: "forecast cap", long: "max_consecutive forecasts in a row reached" },
  gate: { short: "gate", long: "rejected by the confidence gate" },
  fallback: { short: "fallback", long: "forced full compute (fallback)" },
});

/** Theme colours from a CSSStyleDeclaration-like object (getComputedStyle(document.documentElement)). */
export function readTheme(style) {
  const theme = { ...DEFAULT_THEME };
  for (const [key, names] of Object.entries(THEME_VARIABLES)) {
    for (const name of names) {
      let value = "";
      try {
        value = String(style?.getPropertyValue?.(name) ?? "").trim();
      } catch {
        value = "";
      }
      if (value) {
        theme[key] = value;
        break;
      }
    }
  }
  return theme;
}

const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const count = (v) => {
  const n = finite(v);
  return n === null || n < 0 ? 0 : Math.floor(n);
};
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** The payload's reason labels where it sends whole ones ({name: {short, long}}), else FULL_REASONS. */
function reasonLabels(raw) {
  if (!isObject(raw)) return FULL_REASONS;
  const entries = Object.entries(raw).filter(([, l]) => isObject(l) && typeof l.short === "string" && typeof l.long === "string");
  return entries.length ? Object.fromEntries(entries) : FULL_REASONS;
}

/** A {reason: count} map with positive counts only, known reasons first in their order. */
function reasonCounts(raw, labels) {
  if (!isObject(raw)) return {};
  const names = [...Object.keys(labels), ...Object.keys(raw).filter((k) => !(k in labels))];
  const out = {};
  for (const name of names) {
    const n = count(raw[name]);
    if (n > 0) out[name] = n;
  }
  return out;
}

function addCounts(into, more) {
  for (const [name, n] of Object.entries(more)) into[name] = (into[name] ?? 0) + n;
  return into;
}

/**
 * The payload reduced to what the chart needs, or null when there is nothing to draw.
 * Tolerates missing, extra and wrongly typed keys: a bad field becomes 0/null, never an exception.
 * Also accepts the list-wrapped `ui` output shape ([payload]) and takes its last entry.
 * Reads version 1 payloads and the fields version 2 adds (full reasons, predicted and measured
 * errors, tolerance, calibration); any of those may be absent.
 */
export function normalizeStats(payload) {
  try {
    return normalize(payload);
  } catch {
    return null; // e.g. a payload with throwing getters: draw the empty state rather than break the node
  }
}

function normalize(payload) {
  if (Array.isArray(payload)) payload = payload[payload.length - 1];
  if (!payload || typeof payload !== "object" || !Array.isArray(payload.steps)) return null;
  const raw = payload.steps.slice(0, MAX_STEPS);
  if (!raw.length) return null;
  const reasons = reasonLabels(payload.reasons);
  const steps = Array.from(raw, (entry, index) => { // Array.from: a sparse array's holes too
    const r = entry && typeof entry === "object" ? entry : {};
    const calls = count(r.calls);
    return {
      step: Number.isInteger(r.step) ? r.step : index,
      sigma: finite(r.sigma),
      calls,
      forecast: Math.min(calls, count(r.forecast)),
      gateError: finite(r.gate_error),
      full: reasonCounts(r.full, reasons),
      predicted: finite(r.predicted),
      measured: finite(r.measured),
      // What the gate weighed the prediction by: the step's weight, and before payload version 3 the
      // sampler's guidance gain (from version 3 on it is in the prediction, and shown as it is).
      gain: positiveOr(r.gain, 1),
      weight: positiveOr(r.weight, 1),
      // What the forecasts in a row before the step's calls had used of the tolerance (version 3).
      spent: finite(r.spent) ?? 0,
    };
  });
  const gainInPrediction = Number.isInteger(payload.v) && payload.v >= 3;
  // An interrupted run may report fewer step records than planned steps: the rest had no call.
  const planned = Math.min(MAX_STEPS, count(payload.num_steps));
  for (let i = steps.length; i < planned; i++) {
    steps.push({ step: i, sigma: null, calls: 0, forecast: 0, gateError: null, full: {}, predicted: null, measured: null,
      gain: 1, weight: 1, spent: 0 });
  }
  const totals = isObject(payload.totals) ? payload.totals : {};
  const sum = (key) => steps.reduce((acc, s) => acc + s[key], 0);
  let blockRatio = finite(totals.block_ratio);
  if (blockRatio === null && count(totals.blocks_run) > 0) {
    blockRatio = count(totals.blocks_total) / count(totals.blocks_run);
  }
  const tolerance = finite(payload.tolerance);
  const target = isObject(payload.target) && finite(payload.target.speedup) > 0 ? finite(payload.target.speedup) : null;
  const fullTotals = isObject(totals.full)
    ? reasonCounts(totals.full, reasons)
    : steps.reduce((acc, s) => addCounts(acc, s.full), {});
  return {
    steps,
    gainInPrediction,
    // The value the gate compares with: the v2 tolerance, else the v1 threshold; none under a speed target,
    // whose threshold the run sets call by call (core/target.py).
    limit: target !== null ? null : tolerance ?? finite(payload.threshold),
    limitName: tolerance === null ? "threshold" : "tolerance",
    target,
    method: typeof payload.method === "string" ? payload.method : null,
    model: typeof payload.model === "string" ? payload.model : null,
    calls: totals.calls === undefined ? sum("calls") : count(totals.calls),
    forecast: totals.forecast === undefined ? sum("forecast") : count(totals.forecast),
    blockRatio: blockRatio !== null && blockRatio > 0 ? blockRatio : null,
    fullTotals,
    reasons,
    calibration: isObject(payload.calibration) ? payload.calibration : null,
    notes: Array.isArray(payload.notes) ? payload.notes.filter((n) => typeof n === "string") : [],
  };
}

/** ``v`` when it is a finite number above 0, else ``fallback``. */
const positiveOr = (v, fallback) => (finite(v) !== null && v > 0 ? v : fallback);

/**
 * The notes of a payload that reports no run: the node found, when it ran, that nothing will be
 * sampled through it (its model went into a merge node as model2), and said so.
 */
function standingNotes(payload) {
  if (Array.isArray(payload)) payload = payload[payload.length - 1];
  if (!isObject(payload) || !Array.isArray(payload.notes) || (Array.isArray(payload.steps) && payload.steps.length)) {
    return [];
  }
  return payload.notes.filter((n) => typeof n === "string");
}

/** Short number for labels: 0.05, 0.0312, 12.5 (no float noise such as 0.949999988). */
const fmt = (v) => (v === null ? "?" : String(Number(v.toPrecision(3))));
const percent = (share) => `${Math.round(share * 100)}%`;

/** "3 warm-up, 1 gate" (counts of full calls by reason, in the node's order, in the run's labels). */
function reasonList(stats, reasons, label) {
  return Object.entries(reasons)
    .map(([name, n]) => `${n} ${stats.reasons[name]?.[label] ?? name}`)
    .join(", ");
}

/**
 * Text for the summary line and the aria-label, from a raw payload or a normalizeStats() result.
 * A step counts as forecast when at least one of its model calls was forecast.
 */
export function summarize(payload) {
  return summarizeStats(normalizeStats(payload), standingNotes(payload));
}

function summarizeStats(stats, notes = []) {
  if (!stats) {
    const text = notes.length ? `Not accelerating: ${notes[0]}` : "No cache stats yet: run the workflow";
    return { empty: true, text, aria: `CG-Taylor cache chart: ${text.toLowerCase()}.` };
  }
  const forecastSteps = stats.steps.filter((s) => s.forecast > 0).length;
  const numSteps = stats.steps.length;
  const saving = (stats.blockRatio !== null && stats.blockRatio >= 1.05
    ? `${stats.blockRatio.toFixed(1)}x fewer block evaluations`
    : "every block evaluated") + (stats.target !== null ? ` (target ${fmt(stats.target)}x)` : "");
  const text = `${forecastSteps}/${numSteps} steps forecast${SUMMARY_SEPARATOR}${saving}`;
  const parts = [
    `CG-Taylor cache, last run: ${text}`,
    `${stats.forecast} of ${stats.calls} model calls forecast`,
  ];
  if (stats.limit !== null) parts.push(`${stats.limitName} ${fmt(stats.limit)}`);
  if (stats.target !== null) parts.push(`target ${fmt(stats.target)}x, reached ${fmt(stats.blockRatio ?? 1)}x`);
  if (Object.keys(stats.fullTotals).length) parts.push(`full calls: ${reasonList(stats, stats.fullTotals, "short")}`);
  parts.push(...stats.notes);
  return { empty: false, text, aria: parts.join("; ") + ".", forecastSteps, numSteps };
}

/**
 * Everything the run has to say, for the box shown while the pointer rests on the summary or the
 * footer: the summary, the calls, why full calls were full, how well the gate's predictions held,
 * and every note in full (the footer has room for the start of the first one only).
 */
export function explain(payload) {
  const stats = normalizeStats(payload);
  if (!stats) {
    const notes = standingNotes(payload);
    return notes.length ? { heading: "Not accelerating", lines: [], notes } : null;
  }
  const lines = [`${stats.forecast} of ${stats.calls} model calls forecast` +
    (stats.limit === null ? "" : ` · ${stats.limitName} ${fmt(stats.limit)}`) +
    (stats.target === null ? "" : ` · target ${fmt(stats.target)}x, reached ${fmt(stats.blockRatio ?? 1)}x`)];
  if (Object.keys(stats.fullTotals).length) lines.push(`Full calls: ${reasonList(stats, stats.fullTotals, "long")}.`);
  const cal = stats.calibration;
  const pairs = count(cal?.pairs);
  if (pairs > 0) {
    const covered = finite(cal.covered);
    const medians = [finite(cal.predicted_median), finite(cal.measured_median)];
    let text = `Gate calibration: ${pairs} full call${pairs === 1 ? "" : "s"} compared`;
    if (covered !== null) text += `, measured error within the prediction for ${percent(covered)}`;
    const parts = [];
    if (medians[0] !== null) parts.push(`median predicted ${fmt(medians[0])}`);
    else if (stats.forecast === 0) parts.push("no forecast accepted");
    if (medians[1] !== null) parts.push(`${medians[0] === null ? "median " : ""}measured ${fmt(medians[1])}`);
    if (parts.length) text += ` (${parts.join(", ")})`;
    lines.push(text + ".");
  }
  const memory = memoryLine(payload.memory);
  if (memory) lines.push(memory);
  return { heading: summarizeStats(stats).text, lines, notes: stats.notes };
}

const bytes = (n) => (n >= 1e9 ? `${fmt(n / 1e9)} GB` : n >= 1e6 ? `${fmt(n / 1e6)} MB` : `${fmt(n / 1e3)} kB`);

/** Where the cache lived and its peak, from the payload's memory record (absent from older payloads). */
function memoryLine(memory) {
  if (!isObject(memory) || finite(memory.peak_bytes) === null) return null;
  let text = `Cache memory: peak ${bytes(memory.peak_bytes)} on ${memory.device ?? "the model's device"}`;
  if (count(memory.host_bytes) > 0) text += `, ${bytes(memory.host_bytes)} in ${memory.host ?? "host"} memory`;
  return text + ".";
}

const PAD = 6;
const LINE = 16;

const positive = (v) => (finite(v) !== null && v > 0 ? v : 1);

/**
 * Where things go in a width x height chart with n steps, drawn at `pixelRatio` device pixels per
 * CSS pixel (a number, or [x, y]) under a summary of `summaryLines` lines (summaryLines()) and above a
 * footer of the legend and `noteLines` lines of note (noteLines()); shared by drawing and hit testing.
 * Bars are columns: one per step while each step has MIN_SLOT_PX device pixels, otherwise as many
 * columns as fit, each covering a run of steps.
 */
export function layout(width, height, n, pixelRatio = 1, summaryLines = 1, noteLines = 0) {
  const w = Math.max(0, finite(width) ?? 0);
  const h = Math.max(0, finite(height) ?? 0);
  const [rx, ry] = Array.isArray(pixelRatio) ? pixelRatio.map(positive) : [positive(pixelRatio), positive(pixelRatio)];
  // To the nearest device pixel edge, across and down.
  const snapX = (v) => Math.round(v * rx) / rx;
  const snapY = (v) => Math.round(v * ry) / ry;
  const lines = Math.max(1, Math.floor(finite(summaryLines) ?? 1));
  const notes = Math.max(0, Math.floor(finite(noteLines) ?? 0));
  const top = snapY(PAD + lines * LINE + 4); // below the summary
  const bottom = Math.max(top, snapY(h - PAD - (1 + notes) * LINE)); // above the legend and the note
  const left = snapX(PAD);
  const plot = { x: left, y: top, w: Math.max(0, snapX(w - PAD) - left), h: bottom - top };
  const steps = Math.max(0, Math.floor(finite(n) ?? 0));
  const fit = Math.floor((plot.w * rx) / MIN_SLOT_PX);
  const columns = steps <= fit ? steps : Math.max(1, fit);
  const slot = columns > 0 ? plot.w / columns : 0;
  const perStep = columns === steps;
  // One step per column: a bar of 72% of its slot; shared columns: the slot less a one-pixel gap.
  const barW = Math.max(1 / rx, perStep ? snapX(slot * 0.72) : snapX(slot) - 1 / rx);
  return {
    width: w,
    height: h,
    pixel: { x: 1 / rx, y: 1 / ry }, // one device pixel, in CSS pixels
    plot,
    /** The middle of footer line i: the legend (0), then the note's lines. */
    footerY: (i) => snapY(h - PAD - (notes + 1 - i) * LINE) + LINE / 2,
    steps,
    columns,
    perStep,
    slot,
    barW,
    barX: (c) => snapX(plot.x + c * slot + (perStep ? (slot - barW) / 2 : 0)),
    /** Column c's whole slot, [left, right], on device pixel edges (the hover highlight). */
    slotSpan: (c) => [snapX(plot.x + c * slot), snapX(plot.x + (c + 1) * slot)],
    /** The steps column c covers: [first, end). */
    stepRange: (c) => [Math.floor((c * steps) / columns), Math.floor(((c + 1) * steps) / columns)],
    /** Height of a bar for a forecast share, at least one device pixel. */
    barHeight: (share) => Math.max(1 / ry, snapY(plot.h * share)),
    fullBar: Math.min(snapY(Math.max(FULL_BAR_PX, plot.h * FULL_BAR_SHARE)), plot.h), // a step computed in full
    tick: Math.min(snapY(4), plot.h), // the muted foot of a shared column that holds a full step
  };
}

/** What a column of bars stands for: its steps and their summed calls, forecasts and full reasons. */
function column(stats, box, c) {
  const [first, end] = box.stepRange(c);
  const steps = stats.steps.slice(first, end);
  const col = { first, last: end - 1, steps, calls: 0, forecast: 0, full: {}, fullSteps: 0 };
  for (const s of steps) {
    col.calls += s.calls;
    col.forecast += s.forecast;
    addCounts(col.full, s.full);
    if (s.calls > 0 && s.forecast === 0) col.fullSteps += 1;
  }
  return col;
}

/** The part of the chart under (x, y) in CSS pixels: a column of bars, the summary line or the footer. */
export function hitRegion(payload, size, x, y) {
  const stats = normalizeStats(payload);
  if (!stats || !size || !(x >= 0 && x <= size.width && y >= 0 && y <= size.height)) return null;
  const box = layout(size.width, size.height, stats.steps.length, size.pixelRatio, size.summaryLines, size.noteLines);
  const { plot } = box;
  if (y < plot.y - 2) return { kind: "summary" };
  if (y > plot.y + plot.h + 2) return { kind: "footer" };
  if (!(x >= plot.x && x < plot.x + plot.w)) return null;
  const index = Math.floor((x - plot.x) / box.slot);
  return index >= 0 && index < box.columns ? { kind: "column", index } : null;
}

/** Index of the column of bars under (x, y) in CSS pixels (the step, while each step has its own), or -1. */
export function hitTest(payload, size, x, y) {
  const region = hitRegion(payload, size, x, y);
  return region?.kind === "column" ? region.index : -1;
}

/** The tooltip lines for one step (1-based step numbers, as ComfyUI's progress bar shows them). */
export function describeStep(payload, index) {
  return describeStats(normalizeStats(payload), index);
}

/** The tooltip lines for column `index` of a chart of `size` (one step, or the run of steps it covers). */
export function describeColumn(payload, size, index) {
  const stats = normalizeStats(payload);
  if (!stats || !size) return [];
  const box = layout(size.width, size.height, stats.steps.length, size.pixelRatio, size.summaryLines);
  return describeColumnOf(stats, box, index);
}

function describeColumnOf(stats, box, index) {
  if (!Number.isInteger(index) || index < 0 || index >= box.columns) return [];
  if (box.perStep) return describeStats(stats, index);
  const col = column(stats, box, index);
  const n = stats.steps.length;
  const sigmas = col.steps.map((s) => s.sigma).filter((s) => s !== null);
  const head = `steps ${col.first + 1}–${col.last + 1}/${n}` +
    (sigmas.length ? ` · sigma ${fmt(sigmas[0])}–${fmt(sigmas[sigmas.length - 1])}` : "");
  if (col.calls === 0) return [head, "no model call"];
  const lines = [head, `${col.calls} calls · ${col.forecast} forecast`];
  if (col.fullSteps) lines.push(`${col.fullSteps} step${col.fullSteps === 1 ? "" : "s"} computed in full`);
  if (Object.keys(col.full).length) lines.push(`full: ${reasonList(stats, col.full, "short")}`);
  return lines;
}

function describeStats(stats, index) {
  const s = stats?.steps[index];
  if (!s) return [];
  const head = `step ${index + 1}/${stats.steps.length}` + (s.sigma === null ? "" : ` · sigma ${fmt(s.sigma)}`);
  if (s.calls === 0) return [head, "no model call"];
  const lines = [head, `${s.calls} call${s.calls === 1 ? "" : "s"} · ${s.forecast} forecast`];
  const reasons = Object.entries(s.full);
  if (reasons.length) {
    // One reason for every full call reads as the reason alone; otherwise each with its count.
    const fullCalls = s.calls - s.forecast;
    const only = reasons.length === 1 && reasons[0][1] === fullCalls;
    lines.push(`full: ${only ? stats.reasons[reasons[0][0]]?.short ?? reasons[0][0] : reasonList(stats, s.full, "short")}`);
  }
  const compare = (error) => {
    if (stats.limit === null) return fmt(error);
    // A step whose calls went both ways has a mean on no particular side of the limit.
    if (s.forecast > 0 && s.forecast < s.calls) return `${fmt(error)} · ${stats.limitName} ${fmt(stats.limit)}`;
    // The gate accepts a call when its error is below the limit (core/gate.py: error < threshold),
    // so equality reads as a rejection.
    return `${fmt(error)} ${error < stats.limit ? "<" : "≥"} ${stats.limitName} ${fmt(stats.limit)}`;
  };
  const mean = s.calls > 1 ? "mean " : "";
  // The gate compares the error weighed by the step's weight (and, before payload version 3, the sampler's
  // guidance gain), plus what the forecasts in a row before it had scored.
  const gain = stats.gainInPrediction ? 1 : s.gain;
  const scale = gain * s.weight;
  const weighed = (name, error) => {
    const spent = s.spent > 0 ? ` + ${fmt(s.spent)} (forecasts in a row before)` : "";
    if (scale === 1 && !spent) return `${mean}${name} ${compare(error)}`;
    const why = [gain !== 1 ? `sampler ${fmt(gain)}` : null, s.weight !== 1 ? `step ${fmt(s.weight)}` : null];
    const times = scale === 1 ? "" : ` × ${fmt(scale)} (${why.filter(Boolean).join(", ")})`;
    return `${mean}${name} ${fmt(error)}${times}${spent} = ${compare(error * scale + s.spent)}`;
  };
  if (stats.gainInPrediction && s.gain > 1) lines.push(`sampler weighs the guidance ${fmt(s.gain)}x an Euler step`);
  if (s.predicted !== null) {
    lines.push(weighed("predicted error", s.predicted));
  } else if (s.gateError !== null) {
    lines.push(weighed("gate error", s.gateError));
  } else if (!reasons.length) {
    lines.push("gate not evaluated (full compute)");
  }
  if (s.measured !== null) lines.push(`${mean}measured error ${fmt(s.measured)}`);
  return lines;
}

/**
 * The summary as drawn in maxWidth: one line where it fits, else its parts (SUMMARY_SEPARATOR) one
 * per line, so that a long run's numbers stay whole at the node's default width.
 */
export function summaryLines(ctx, text, maxWidth) {
  if (ctx.measureText(text).width <= maxWidth || !text.includes(SUMMARY_SEPARATOR)) return [text];
  return text.split(SUMMARY_SEPARATOR);
}

/** `text` cut with an ellipsis to fit maxWidth. */
function fitText(ctx, text, maxWidth) {
  if (maxWidth <= 0) return "";
  if (ctx.measureText(text).width <= maxWidth) return text;
  let cut = text;
  while (cut.length > 1 && ctx.measureText(cut + "…").width > maxWidth) cut = cut.slice(0, -1);
  return cut + "…";
}

/** `text` in lines of at most maxWidth, broken between words; at most `max` lines, the last cut with "…". */
export function wrapText(ctx, text, maxWidth, max = Infinity) {
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    const longer = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(longer).width > maxWidth) {
      lines.push(line);
      line = word;
    } else line = longer;
  }
  if (line) lines.push(line);
  if (lines.length <= max) return lines;
  const kept = lines.slice(0, max);
  let last = `${kept[max - 1]} ${lines[max]}`;
  while (last.includes(" ") && ctx.measureText(`${last}…`).width > maxWidth) last = last.slice(0, last.lastIndexOf(" "));
  kept[max - 1] = `${last}…`;
  return kept;
}

/**
 * What the footer says of the run's notes: the first note's first clause (up to its first ": "), which
 * states what happened, and that hovering shows the rest when there is more.
 */
export function footerNote(notes) {
  if (!notes.length) return "";
  const [first] = notes;
  const clause = first.split(": ")[0];
  return clause === first && notes.length === 1 ? first : `${clause}${MORE}`;
}

/** The footer's note as drawn in maxWidth: whole words, NOTE_LINES lines at most. */
export function noteLines(ctx, notes, maxWidth) {
  const note = footerNote(notes);
  return note ? wrapText(ctx, note, maxWidth, NOTE_LINES) : [];
}

function drawLegend(ctx, box, colours, right) {
  const y = box.footerY(0);
  ctx.fillStyle = colours.accent;
  ctx.fillRect(PAD, y - 4, 8, 8);
  ctx.fillStyle = colours.muted;
  ctx.fillRect(PAD + 72, y - 4, 8, 8);
  ctx.fillText("forecast", PAD + 12, y);
  ctx.fillText("full", PAD + 84, y);
  if (right) {
    ctx.textAlign = "right";
    ctx.fillText(fitText(ctx, right, box.width - 2 * PAD - 120), box.width - PAD, y);
    ctx.textAlign = "left";
  }
}

function drawTooltip(ctx, lines, anchorX, box, theme) {
  const width = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 2 * PAD;
  const height = lines.length * LINE + PAD;
  // Beside the hovered bar, flipped to the left near the right edge, kept inside the canvas.
  let x = anchorX + 8;
  if (x + width > box.width - 2) x = anchorX - 8 - width;
  x = Math.round(Math.max(2, x));
  const y = Math.round(Math.max(2, box.plot.y + 2));
  ctx.globalAlpha = 0.95;
  ctx.fillStyle = theme.panel;
  ctx.fillRect(x, y, width, height);
  ctx.globalAlpha = 1;
  ctx.strokeStyle = theme.border;
  ctx.strokeRect(x + 0.5, y + 0.5, width - 1, height - 1);
  ctx.fillStyle = theme.fg;
  lines.forEach((line, i) => ctx.fillText(line, x + PAD, y + PAD / 2 + (i + 0.5) * LINE));
}

// Before a run, under the summary's words: what the chart will show.
const HINT = "After a run: a bar per sampling step, as high as the share of its model calls that were forecast, " +
  "and a grey bar where a step was computed in full.";

/**
 * Draw the chart for `payload` into ctx; returns summarize()'s result (text and aria label) and the
 * number of lines the summary and the footer's note took (summaryLines, noteLines, for hit testing the
 * same layout).
 * Bars: height = forecast share of the calls of the column's steps (accent); a step computed in full
 * gets a muted bar of its own (FULL_BAR_SHARE of the plot), and a shared column that holds one among
 * forecast steps a muted foot over its bar, so that a full step stays visible among hundreds; a step
 * with no call gets nothing. Before any run the chart's whole room shows what it will hold, with the
 * legend. Never throws on bad data.
 */
export function drawChart(ctx, payload, { width, height, theme, hoverIndex = -1, pixelRatio = 1 } = {}) {
  const colours = { ...DEFAULT_THEME, ...(theme || {}) };
  const stats = normalizeStats(payload);
  const summary = summarizeStats(stats, standingNotes(payload));
  ctx.save();
  ctx.font = colours.font;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  const textWidth = (finite(width) ?? 0) - 2 * PAD;
  const lines = stats ? summaryLines(ctx, summary.text, textWidth) : [summary.text];
  const notes = stats ? noteLines(ctx, stats.notes, textWidth) : [];
  const drawn = { ...summary, summaryLines: lines.length, noteLines: notes.length };
  const box = layout(width, height, stats ? stats.steps.length : 0, pixelRatio, lines.length, notes.length);
  if (box.width < 1 || box.height < 1) {
    ctx.restore();
    return drawn;
  }

  ctx.clearRect(0, 0, box.width, box.height);
  // Lines are filled rectangles one device pixel thick, so that they stay sharp at any pixel ratio.
  const { x: px, y: py } = box.pixel;
  const hline = (x, y, w) => ctx.fillRect(x, y, w, py);
  ctx.fillStyle = colours.bg;
  ctx.fillRect(0, 0, box.width, box.height);
  ctx.fillStyle = colours.border;
  hline(0, 0, box.width);
  hline(0, box.height - py, box.width);
  ctx.fillRect(0, 0, px, box.height);
  ctx.fillRect(box.width - px, 0, px, box.height);

  if (!stats) {
    drawPlaceholder(ctx, box, summary, colours, textWidth);
    ctx.restore();
    return drawn;
  }

  const { plot } = box;
  ctx.fillStyle = colours.fg;
  lines.forEach((line, i) => ctx.fillText(fitText(ctx, line, box.width - 2 * PAD), PAD, PAD + (i + 0.5) * LINE));

  // 100% line and baseline frame the bars so a short bar still reads as a share.
  ctx.fillStyle = colours.border;
  hline(plot.x, plot.y - py, plot.w);
  hline(plot.x, plot.y + plot.h, plot.w);

  const hovered = Number.isInteger(hoverIndex) && hoverIndex >= 0 && hoverIndex < box.columns;
  if (hovered) {
    const [from, to] = box.slotSpan(hoverIndex);
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = colours.fg;
    ctx.fillRect(from, plot.y, to - from, plot.h);
    ctx.globalAlpha = 1;
  }

  const baseline = plot.y + plot.h;
  for (let c = 0; c < box.columns; c++) {
    const col = column(stats, box, c);
    if (col.calls === 0) continue; // no call: leave the column empty
    const x = box.barX(c);
    if (col.forecast === 0) {
      ctx.fillStyle = colours.muted;
      ctx.fillRect(x, baseline - box.fullBar, box.barW, box.fullBar);
      continue;
    }
    const barH = box.barHeight(col.forecast / col.calls);
    ctx.fillStyle = colours.accent;
    ctx.fillRect(x, baseline - barH, box.barW, barH);
    if (col.fullSteps > 0 && !box.perStep) {
      ctx.fillStyle = colours.muted;
      ctx.fillRect(x, baseline - box.tick, box.barW, box.tick);
    }
  }

  // Footer: the legend and the gate's limit, then the first note's first clause, wrapped (every note in
  // full on hover).
  drawLegend(ctx, box, colours, stats.limit === null ? "" : `${stats.limitName} ${fmt(stats.limit)}`);
  ctx.fillStyle = colours.fg;
  notes.forEach((line, i) => ctx.fillText(line, PAD, box.footerY(i + 1)));

  const tooltip = hovered ? describeColumnOf(stats, box, hoverIndex) : [];
  if (tooltip.length) drawTooltip(ctx, tooltip, box.barX(hoverIndex) + box.barW, box, colours);
  ctx.restore();
  return drawn;
}

/** Before a run: the summary's words (or why the node will not accelerate) and what the chart will show,
 * centred in the chart's room, with the legend below. */
function drawPlaceholder(ctx, box, summary, colours, textWidth) {
  drawLegend(ctx, box, colours, "");
  const room = Math.floor((box.footerY(0) - LINE / 2 - 2 * PAD) / LINE);
  const heading = wrapText(ctx, summary.text, textWidth, Math.max(1, room));
  const hint = summary.text.startsWith("Not accelerating") ? [] : wrapText(ctx, HINT, textWidth, Math.max(0, room - heading.length - 1));
  const shown = heading.length + (hint.length ? hint.length + 1 : 0);
  const top = Math.max(PAD, (box.footerY(0) - LINE / 2 - shown * LINE) / 2);
  ctx.fillStyle = colours.fg;
  heading.forEach((line, i) => ctx.fillText(line, PAD, top + (i + 0.5) * LINE));
  ctx.fillStyle = colours.muted;
  hint.forEach((line, i) => ctx.fillText(line, PAD, top + (heading.length + 1 + i + 0.5) * LINE));
}
