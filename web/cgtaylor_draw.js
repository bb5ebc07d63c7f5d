// Pure drawing for the CG-Taylor cache chart: stats payload + Canvas 2D context in, pixels out.
// No ComfyUI or DOM imports, so node --test can drive it with a fake context, and no side effects at
// import time (ComfyUI imports every .js under WEB_DIRECTORY as an extension entry point).
//
// Coordinates are CSS pixels; the caller scales the context for devicePixelRatio.

const MAX_STEPS = 10000; // a guard against absurd payloads, far above any real schedule

export const DEFAULT_THEME = Object.freeze({
  bg: "#222222", // plot background (--comfy-input-bg)
  fg: "#dddddd", // summary and tooltip text (--fg-color)
  muted: "#8a8a8a", // secondary text, full-compute ticks (--descrip-text)
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

/**
 * The payload reduced to what the chart needs, or null when there is nothing to draw.
 * Tolerates missing, extra and wrongly typed keys: a bad field becomes 0/null, never an exception.
 * Also accepts the list-wrapped `ui` output shape ([payload]) and takes its last entry.
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
  const steps = raw.map((entry, index) => {
    const r = entry && typeof entry === "object" ? entry : {};
    const calls = count(r.calls);
    return {
      step: Number.isInteger(r.step) ? r.step : index,
      sigma: finite(r.sigma),
      calls,
      forecast: Math.min(calls, count(r.forecast)),
      gateError: finite(r.gate_error),
    };
  });
  // An interrupted run may report fewer step records than planned steps: the rest had no call.
  const planned = Math.min(MAX_STEPS, count(payload.num_steps));
  for (let i = steps.length; i < planned; i++) {
    steps.push({ step: i, sigma: null, calls: 0, forecast: 0, gateError: null });
  }
  const totals = payload.totals && typeof payload.totals === "object" ? payload.totals : {};
  const sum = (key) => steps.reduce((acc, s) => acc + s[key], 0);
  let blockRatio = finite(totals.block_ratio);
  if (blockRatio === null && count(totals.blocks_run) > 0) {
    blockRatio = count(totals.blocks_total) / count(totals.blocks_run);
  }
  return {
    steps,
    threshold: finite(payload.threshold),
    method: typeof payload.method === "string" ? payload.method : null,
    model: typeof payload.model === "string" ? payload.model : null,
    calls: totals.calls === undefined ? sum("calls") : count(totals.calls),
    forecast: totals.forecast === undefined ? sum("forecast") : count(totals.forecast),
    blockRatio: blockRatio !== null && blockRatio > 0 ? blockRatio : null,
    notes: Array.isArray(payload.notes) ? payload.notes.filter((n) => typeof n === "string") : [],
  };
}

/** Short number for labels: 0.05, 0.0312, 12.5 (no float noise such as 0.949999988). */
const fmt = (v) => (v === null ? "?" : String(Number(v.toPrecision(3))));

/**
 * Text for the summary line and the aria-label, from a raw payload or a normalizeStats() result.
 * A step counts as forecast when at least one of its model calls was forecast.
 */
export function summarize(payload) {
  return summarizeStats(normalizeStats(payload));
}

function summarizeStats(stats) {
  if (!stats) {
    const text = "No cache stats yet: run the workflow";
    return { empty: true, text, aria: `CG-Taylor cache chart: ${text.toLowerCase()}.` };
  }
  const forecastSteps = stats.steps.filter((s) => s.forecast > 0).length;
  const numSteps = stats.steps.length;
  const saving = stats.blockRatio !== null && stats.blockRatio >= 1.05
    ? `${stats.blockRatio.toFixed(1)}x fewer block evaluations`
    : "every block evaluated";
  const text = `${forecastSteps}/${numSteps} steps forecast · ${saving}`;
  const parts = [
    `CG-Taylor cache, last run: ${text}`,
    `${stats.forecast} of ${stats.calls} model calls forecast`,
  ];
  if (stats.threshold !== null) parts.push(`threshold ${fmt(stats.threshold)}`);
  parts.push(...stats.notes);
  return { empty: false, text, aria: parts.join("; ") + ".", forecastSteps, numSteps };
}

const PAD = 6;
const LINE = 16;

/** Where things go in a width x height chart with n steps; shared by drawing and hit testing. */
export function layout(width, height, n) {
  const w = Math.max(0, finite(width) ?? 0);
  const h = Math.max(0, finite(height) ?? 0);
  const top = PAD + LINE + 4; // below the summary line
  const bottom = Math.max(top, h - PAD - LINE); // above the footer line
  const plot = { x: PAD, y: top, w: Math.max(0, w - 2 * PAD), h: bottom - top };
  const slot = n > 0 ? plot.w / n : 0;
  const barW = Math.max(1, slot * 0.72);
  return {
    width: w,
    height: h,
    plot,
    slot,
    barW,
    barX: (i) => plot.x + i * slot + (slot - barW) / 2,
  };
}

/** Index of the step under (x, y) in CSS pixels, or -1. */
export function hitTest(payload, size, x, y) {
  const stats = normalizeStats(payload);
  if (!stats || !size) return -1;
  const box = layout(size.width, size.height, stats.steps.length);
  const { plot } = box;
  if (!(x >= plot.x && x < plot.x + plot.w && y >= plot.y - 2 && y <= plot.y + plot.h + 2)) return -1;
  const index = Math.floor((x - plot.x) / box.slot);
  return index >= 0 && index < stats.steps.length ? index : -1;
}

/** The tooltip lines for one step (1-based step numbers, as ComfyUI's progress bar shows them). */
export function describeStep(payload, index) {
  return describeStats(normalizeStats(payload), index);
}

function describeStats(stats, index) {
  const s = stats?.steps[index];
  if (!s) return [];
  const head = `step ${index + 1}/${stats.steps.length}` + (s.sigma === null ? "" : ` · sigma ${fmt(s.sigma)}`);
  if (s.calls === 0) return [head, "no model call"];
  const lines = [head, `${s.calls} call${s.calls === 1 ? "" : "s"} · ${s.forecast} forecast`];
  // The node reports the mean of the step's gate errors; the gate accepts a call when its error is
  // below the threshold (core/gate.py: error < threshold), so equality reads as a rejection.
  const label = s.calls > 1 ? "mean gate error" : "gate error";
  if (s.gateError === null) {
    lines.push("gate not evaluated (full compute)");
  } else if (stats.threshold === null) {
    lines.push(`${label} ${fmt(s.gateError)}`);
  } else {
    const side = s.gateError < stats.threshold ? "<" : "≥";
    lines.push(`${label} ${fmt(s.gateError)} ${side} threshold ${fmt(stats.threshold)}`);
  }
  return lines;
}

/** `text` cut with an ellipsis to fit maxWidth. */
function fitText(ctx, text, maxWidth) {
  if (maxWidth <= 0) return "";
  if (ctx.measureText(text).width <= maxWidth) return text;
  let cut = text;
  while (cut.length > 1 && ctx.measureText(cut + "…").width > maxWidth) cut = cut.slice(0, -1);
  return cut + "…";
}

function drawTooltip(ctx, lines, anchorX, box, theme) {
  const width = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 2 * PAD;
  const height = lines.length * LINE + PAD;
  // Beside the hovered bar, flipped to the left near the right edge, kept inside the canvas.
  let x = anchorX + 8;
  if (x + width > box.width - 2) x = anchorX - 8 - width;
  x = Math.max(2, x);
  const y = Math.max(2, box.plot.y + 2);
  ctx.globalAlpha = 0.95;
  ctx.fillStyle = theme.panel;
  ctx.fillRect(x, y, width, height);
  ctx.globalAlpha = 1;
  ctx.strokeStyle = theme.border;
  ctx.strokeRect(x + 0.5, y + 0.5, width - 1, height - 1);
  ctx.fillStyle = theme.fg;
  lines.forEach((line, i) => ctx.fillText(line, x + PAD, y + PAD / 2 + (i + 0.5) * LINE));
}

/**
 * Draw the chart for `payload` into ctx; returns summarize()'s result (text and aria label).
 * Bars: height = forecast share of the step's calls (accent); a step computed in full gets a short
 * muted tick on the baseline; a step with no call gets nothing. Never throws on bad data.
 */
export function drawChart(ctx, payload, { width, height, theme, hoverIndex = -1 } = {}) {
  const colours = { ...DEFAULT_THEME, ...(theme || {}) };
  const stats = normalizeStats(payload);
  const summary = summarizeStats(stats);
  const box = layout(width, height, stats ? stats.steps.length : 0);
  if (box.width < 1 || box.height < 1) return summary;

  ctx.save();
  ctx.clearRect(0, 0, box.width, box.height);
  ctx.fillStyle = colours.bg;
  ctx.fillRect(0, 0, box.width, box.height);
  ctx.strokeStyle = colours.border;
  ctx.lineWidth = 1;
  ctx.strokeRect(0.5, 0.5, box.width - 1, box.height - 1);
  ctx.font = colours.font;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";

  if (!stats) {
    ctx.fillStyle = colours.muted;
    ctx.textAlign = "center";
    ctx.fillText(fitText(ctx, summary.text, box.width - 2 * PAD), box.width / 2, box.height / 2);
    ctx.restore();
    return summary;
  }

  const { plot } = box;
  ctx.fillStyle = colours.fg;
  ctx.fillText(fitText(ctx, summary.text, box.width - 2 * PAD), PAD, PAD + LINE / 2);

  // 100% line and baseline frame the bars so a short bar still reads as a share.
  ctx.strokeStyle = colours.border;
  ctx.beginPath();
  ctx.moveTo(plot.x, Math.round(plot.y) + 0.5);
  ctx.lineTo(plot.x + plot.w, Math.round(plot.y) + 0.5);
  ctx.moveTo(plot.x, Math.round(plot.y + plot.h) + 0.5);
  ctx.lineTo(plot.x + plot.w, Math.round(plot.y + plot.h) + 0.5);
  ctx.stroke();

  if (Number.isInteger(hoverIndex) && hoverIndex >= 0 && hoverIndex < stats.steps.length) {
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = colours.fg;
    ctx.fillRect(plot.x + hoverIndex * box.slot, plot.y, box.slot, plot.h);
    ctx.globalAlpha = 1;
  }

  const tick = Math.min(3, plot.h);
  stats.steps.forEach((s, i) => {
    if (s.calls === 0) return; // no call: leave the column empty
    const x = box.barX(i);
    if (s.forecast === 0) {
      ctx.fillStyle = colours.muted;
      ctx.fillRect(x, plot.y + plot.h - tick, box.barW, tick);
      return;
    }
    const barH = Math.max(1, (plot.h * s.forecast) / s.calls);
    ctx.fillStyle = colours.accent;
    ctx.fillRect(x, plot.y + plot.h - barH, box.barW, barH);
  });

  // Footer: a legend on the left, the gate threshold (or the first note) on the right.
  const footerY = box.height - PAD - LINE / 2 + 2;
  const right = stats.notes[0] ?? (stats.threshold === null ? "" : `threshold ${fmt(stats.threshold)}`);
  ctx.fillStyle = colours.accent;
  ctx.fillRect(PAD, footerY - 4, 8, 8);
  ctx.fillStyle = colours.muted;
  ctx.fillRect(PAD + 72, footerY + 1, 8, 3);
  ctx.fillText("forecast", PAD + 12, footerY);
  ctx.fillText("full", PAD + 84, footerY);
  if (right) {
    ctx.textAlign = "right";
    ctx.fillText(fitText(ctx, right, box.width - 2 * PAD - 120), box.width - PAD, footerY);
    ctx.textAlign = "left";
  }

  const lines = describeStats(stats, hoverIndex);
  if (lines.length) drawTooltip(ctx, lines, box.barX(hoverIndex) + box.barW, box, colours);
  ctx.restore();
  return summary;
}
