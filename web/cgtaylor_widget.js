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
import { drawChart, hitTest, readTheme, summarize } from "./cgtaylor_draw.js";

const NODE_TYPE = "CGTaylorCache";
const STATS_EVENT = "cgtaylor.stats";
const PROPERTY = "cgtaylor_stats"; // node.properties key: saved in the workflow, never in the prompt
const WIDGET_NAME = "cgtaylor_chart";
// Must not be a built-in widget type name ("chart", "text", ...): the Vue renderer would draw its own
// component for those instead of this element.
const WIDGET_TYPE = "cgtaylor_stats_chart";
const MIN_HEIGHT = 160;
const CHART = Symbol("cgtaylorChart");

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
    this.canvas.style.cssText = "display:block;width:100%;height:100%;";
    this.root.append(this.canvas);

    this.canvas.addEventListener("pointermove", (e) => this.setHover(this.stepAt(e)));
    this.canvas.addEventListener("pointerleave", () => this.setHover(-1));
    this.resizeObserver = new ResizeObserver(() => this.schedule());
    this.resizeObserver.observe(this.root);
    // The palette service writes the theme variables into <html>'s style: redraw when it does.
    this.themeObserver = new MutationObserver(() => this.schedule());
    this.themeObserver.observe(document.documentElement, { attributes: true, attributeFilter: ["style", "class"] });
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

  draw() {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return; // collapsed or not mounted: the resize observer calls again
    const dpr = window.devicePixelRatio || 1;
    const pixelWidth = Math.round(width * dpr);
    const pixelHeight = Math.round(height * dpr);
    if (this.canvas.width !== pixelWidth) this.canvas.width = pixelWidth;
    if (this.canvas.height !== pixelHeight) this.canvas.height = pixelHeight;
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const theme = readTheme(getComputedStyle(document.documentElement));
    drawChart(ctx, this.payload, { width, height, theme, hoverIndex: this.hover });
  }

  /** The step under a pointer event, in the canvas's CSS pixels (the classic canvas zooms the element). */
  stepAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return -1;
    const x = ((event.clientX - rect.left) * this.canvas.clientWidth) / rect.width;
    const y = ((event.clientY - rect.top) * this.canvas.clientHeight) / rect.height;
    return hitTest(this.payload, { width: this.canvas.clientWidth, height: this.canvas.clientHeight }, x, y);
  }

  setHover(index) {
    if (index === this.hover) return;
    this.hover = index;
    this.root.dataset.hover = String(index);
    this.schedule();
  }

  destroy() {
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
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      attachChart(this);
    });
    // Loading a workflow configures the node after it was created: show the stats it was saved with.
    chain(nodeType.prototype, "onConfigure", function () {
      this[CHART]?.refresh();
    });
    chain(nodeType.prototype, "onRemoved", function () {
      this[CHART]?.destroy();
    });
  },
});
