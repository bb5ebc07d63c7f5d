// ComfyUI glue for the CG-Taylor cache chart: puts a <canvas> DOM widget on every CGTaylorCache node,
// feeds it the "cgtaylor.stats" websocket event the node sends after each sampling run, and keeps the
// last payload in node.properties so a reload, a tab switch or a shared workflow shows it again.
// All drawing lives in cgtaylor_draw.js.
//
// A DOM widget (not a canvas-drawn widget or onDrawForeground) because it is the one approach that
// renders in both the classic LiteGraph canvas and the Vue node renderer: the same element is mounted
// in the DOM-widget overlay or inside the Vue node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { drawChart, explain, hitRegion, readTheme, summarize } from "./cgtaylor_draw.js";
import { hideNotes, showNotes } from "./cgtaylor_notes.js";

const NODE_TYPE = "CGTaylorCache";
const STATS_EVENT = "cgtaylor.stats";
const PROPERTY = "cgtaylor_stats"; // node.properties key: saved in the workflow, never in the prompt
const WIDGET_NAME = "cgtaylor_chart";
// Must not be a built-in widget type name ("chart", "text", ...): the Vue renderer would draw its own
// component for those instead of this element.
const WIDGET_TYPE = "cgtaylor_stats_chart";
const MIN_HEIGHT = 160;
// Backing-store pixels per CSS pixel at most: far zoomed in, a sharper chart is not worth the memory.
const MAX_PIXEL_RATIO = 8;
const CHART = Symbol("cgtaylorChart");
const charts = new Set(); // every chart on the page, to redraw when the zoom changes

/** One chart per node: owns the element, its observers, and redraws at most once per frame. */
class StatsChart {
  constructor(node) {
    this.node = node;
    this.hover = -1;
    this.frame = 0;
    this.root = document.createElement("div");
    this.root.className = "cgtaylor-chart";
    // min-height: the Vue node gives the element no height of its own. The classic renderer sizes it
    // to the widget's height less a 10px margin each side, so stay below getMinHeight to fit there.
    this.root.style.cssText = `position:relative;width:100%;height:100%;min-height:${MIN_HEIGHT - 20}px;box-sizing:border-box;`;
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("role", "img");
    // Out of the flow: a canvas in it is as tall as its backing store's aspect ratio makes it at its
    // width, and the Vue node sizes its row by that, so the chart would keep whatever height it was
    // last drawn at (and the node grow) when the node's inputs unfold. This way the node alone sizes it.
    this.canvas.style.cssText = "position:absolute;inset:0;display:block;width:100%;height:100%;";
    this.summaryLines = 1;
    this.noteLines = 0;
    this.root.append(this.canvas);

    this.canvas.addEventListener("pointermove", (e) => this.onPointer(e));
    this.canvas.addEventListener("pointerleave", () => this.leave());
    this.resizeObserver = new ResizeObserver(() => this.schedule());
    this.resizeObserver.observe(this.root);
    // The palette service writes the theme variables into <html>'s style: redraw when it does.
    this.themeObserver = new MutationObserver(() => this.schedule());
    this.themeObserver.observe(document.documentElement, { attributes: true, attributeFilter: ["style", "class"] });
    charts.add(this);
    this.refresh();
  }

  get payload() {
    return this.node.properties?.[PROPERTY] ?? null;
  }

  /** Store a run's stats on the node (so they are saved with the workflow) and show them. */
  setStats(payload) {
    this.node.properties ??= {};
    this.node.properties[PROPERTY] = payload;
    this.hover = -1;
    this.refresh();
    this.node.setDirtyCanvas?.(true, false);
    saveOpenWorkflow();
  }

  /** Update the label now (a hidden canvas may not draw for a while) and redraw on the next frame. */
  refresh() {
    const summary = summarize(this.payload);
    this.canvas.setAttribute("aria-label", summary.aria);
    this.root.dataset.summary = summary.text;
    this.root.dataset.steps = String(summary.numSteps ?? 0);
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  /**
   * Device pixels per CSS pixel of the canvas as it is shown: devicePixelRatio times the zoom of the
   * graph canvas, which both renderers apply to the element as a CSS transform.
   */
  pixelRatio() {
    const width = this.canvas.clientWidth;
    const shown = this.canvas.getBoundingClientRect().width;
    const zoom = width && shown ? shown / width : 1;
    return Math.min(MAX_PIXEL_RATIO, (window.devicePixelRatio || 1) * zoom);
  }

  draw() {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return; // collapsed or not mounted: the resize observer calls again
    const ratio = this.pixelRatio();
    const pixelWidth = Math.round(width * ratio);
    const pixelHeight = Math.round(height * ratio);
    if (this.canvas.width !== pixelWidth) this.canvas.width = pixelWidth;
    if (this.canvas.height !== pixelHeight) this.canvas.height = pixelHeight;
    // The exact scales of the rounded backing store (across and down), for edges on whole device pixels.
    const scale = [pixelWidth / width, pixelHeight / height];
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(scale[0], 0, 0, scale[1], 0, 0);
    const theme = readTheme(getComputedStyle(document.documentElement));
    const drawn = drawChart(ctx, this.payload, { width, height, theme, hoverIndex: this.hover, pixelRatio: scale });
    this.summaryLines = drawn.summaryLines;
    this.noteLines = drawn.noteLines;
    this.root.dataset.summaryLines = String(drawn.summaryLines);
    this.root.dataset.noteLines = String(drawn.noteLines);
  }

  /** The chart's size, pixel ratio, summary and note lines as drawn, as the drawing module reads them. */
  size() {
    const { width, height, clientWidth, clientHeight } = this.canvas;
    return { width: clientWidth, height: clientHeight, pixelRatio: [width / clientWidth || 1, height / clientHeight || 1],
      summaryLines: this.summaryLines, noteLines: this.noteLines };
  }

  /** Hover: a column of bars gets its tooltip on the canvas, the summary and the footer the run's full explanation. */
  onPointer(event) {
    const rect = this.canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return;
    // The pointer in the canvas's own CSS pixels (the graph canvas zooms the element).
    const x = ((event.clientX - rect.left) * this.canvas.clientWidth) / rect.width;
    const y = ((event.clientY - rect.top) * this.canvas.clientHeight) / rect.height;
    const region = hitRegion(this.payload, this.size(), x, y);
    this.setHover(region?.kind === "column" ? region.index : -1);
    const explanation = region?.kind === "summary" || region?.kind === "footer" ? explain(this.payload) : null;
    this.canvas.style.cursor = explanation ? "help" : "";
    if (explanation) showNotes(explanation, event.clientX, event.clientY);
    else hideNotes();
  }

  leave() {
    this.setHover(-1);
    hideNotes();
  }

  setHover(index) {
    if (index === this.hover) return;
    this.hover = index;
    this.root.dataset.hover = String(index);
    this.schedule();
  }

  /**
   * Drop stats that another node's run left: a pasted, duplicated or cloned node arrives with a copy
   * of the original's properties. The stats name the node that ran (its execution id, "12:5" inside a
   * subgraph), and a loaded workflow keeps its node ids, so only a copy's id differs.
   */
  forgetForeignStats() {
    const owner = this.payload?.node;
    if (owner == null || String(owner).split(":").pop() === String(this.node.id)) return;
    delete this.node.properties[PROPERTY];
    this.hover = -1;
    this.refresh();
  }

  destroy() {
    charts.delete(this);
    hideNotes();
    this.resizeObserver.disconnect();
    this.themeObserver.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
  }
}

/**
 * Have the frontend store the open workflow now, stats included. It keeps the open workflow for
 * reloads and tab switches when its change tracker notices a change, which otherwise happens only on
 * the user's next edit. Internal API (captureCanvasState in recent frontends, checkState before), so
 * guarded: without it the stats are still saved with the user's next change or save.
 */
function saveOpenWorkflow() {
  try {
    const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
    if (typeof tracker?.captureCanvasState === "function") tracker.captureCanvasState();
    else if (typeof tracker?.checkState === "function") tracker.checkState();
  } catch (error) {
    console.debug("cgtaylor: could not mark the workflow changed", error);
  }
}

function attachChart(node) {
  if (node[CHART] || typeof node.addDOMWidget !== "function") return;
  const chart = new StatsChart(node);
  const widget = node.addDOMWidget(WIDGET_NAME, WIDGET_TYPE, chart.root, {
    serialize: false, // options.serialize: keeps the chart out of the prompt (and the backend cache key)
    getMinHeight: () => MIN_HEIGHT,
    // Out of the properties panel (frontend 1.37+): it would list the chart as an empty input and mount
    // the element there at the panel's width, which the node's chart then kept after the panel closed.
    hideInPanel: true,
    // The classic canvas calls this on every frame it draws the node.
    onDraw: noticeZoom,
  });
  if (widget) {
    widget.serialize = false; // widget.serialize: keeps it out of the workflow's widgets_values
    const onRemove = widget.onRemove;
    widget.onRemove = function (...args) {
      chart.destroy();
      return onRemove?.apply(this, args);
    };
  }
  node[CHART] = chart;
  // The node was sized before this widget existed: grow it so the chart is not squashed.
  const needed = node.computeSize?.();
  if (Array.isArray(needed) && Array.isArray(node.size)) {
    node.setSize?.([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  }
}

/** The node an execution id points at: "7" at the top level, "12:7:5" through nested subgraphs. */
function findNodeByExecutionId(executionId) {
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const part of String(executionId).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

function onStats(event) {
  const payload = event?.detail;
  if (!payload || typeof payload !== "object" || payload.node == null) return;
  const chart = findNodeByExecutionId(payload.node)?.[CHART];
  chart?.setStats(payload);
}

let drawnScale = null;

/**
 * Redraw every chart when the graph canvas's zoom changed, so that it stays sharp: the element's CSS
 * size does not change (the zoom is a CSS transform), so no resize is observed. Called on the graph
 * canvas's frames, which follow every zoom in both renderers (links and groups stay on it with Vue
 * nodes), and on the classic renderer's node frames.
 */
function noticeZoom() {
  const scale = app.canvas?.ds?.scale;
  if (scale === drawnScale) return;
  drawnScale = scale;
  charts.forEach((chart) => chart.schedule());
}

/** Redraw on zoom (noticeZoom) and when devicePixelRatio changes (browser zoom, another screen). */
function watchZoom() {
  if (app.canvas) chain(app.canvas, "onDrawForeground", noticeZoom);
  const watchPixelRatio = () => {
    matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`).addEventListener("change", () => {
      charts.forEach((chart) => chart.schedule());
      watchPixelRatio();
    }, { once: true });
  };
  watchPixelRatio();
}

/** Wrap prototype[name] so the original (the frontend's or another extension's) still runs first. */
function chain(prototype, name, extra) {
  const original = prototype[name];
  prototype[name] = function (...args) {
    const result = original?.apply(this, args);
    extra.apply(this, args);
    return result;
  };
}

app.registerExtension({
  name: "cgtaylor.cache.chart",
  setup() {
    // Registered before any run: the frontend drops custom events that have no listener yet.
    api.addEventListener(STATS_EVENT, onStats);
    watchZoom();
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      attachChart(this);
    });
    // Loading a workflow configures the node after it was created: show the stats it was saved with.
    // Pasting configures it too, before (older frontends) or after (newer) it gets its own id: judge
    // whose stats they are once the paste is done.
    chain(nodeType.prototype, "onConfigure", function () {
      this[CHART]?.refresh();
      queueMicrotask(() => this[CHART]?.forgetForeignStats());
    });
    chain(nodeType.prototype, "onRemoved", function () {
      this[CHART]?.destroy();
    });
  },
});
