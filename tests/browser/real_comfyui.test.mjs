// Opt-in end-to-end check: a real ComfyUI server with this pack, its real frontend in headless
// Chromium, a real sampling run on a tiny random Wan model, and the chart drawn from the stats event
// the node sent, in the classic canvas and in the Vue node renderer, then again after a page reload.
// Skipped unless COMFYUI_PATH names a ComfyUI checkout; COMFYUI_PYTHON (default: the repo's .venv)
// must have ComfyUI's requirements; COMFYUI_FRONTEND_ROOT optionally serves another frontend build:
//   COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \
//   [COMFYUI_FRONTEND_ROOT=.../comfyui_frontend_package/static] node --test tests/browser/real_comfyui.test.mjs
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { openFrontend as openPage, skipWithoutComfyUI as skip, startComfyUI } from "./real_server.mjs";
import { launchChromium } from "./serve.mjs";

const CACHE_NODE = 6;
const STEPS = 20;
// The inputs a newer frontend shows on the node; the rest are marked "advanced" and folded away.
const ESSENTIAL_INPUTS = ["threshold", "warmup_steps"];

let comfyui;
let url;
let browser;

before(async () => {
  if (skip) return;
  comfyui = await startComfyUI();
  url = comfyui.url;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await comfyui?.stop();
});

/** The API prompt: tiny Wan -> CGTaylorCache -> KSampler (cond/uncond from random tensors) -> SaveLatent. */
function prompt(seed) {
  return {
    1: { class_type: "UNETLoader", inputs: { unet_name: "cgtaylor-tiny-wan21-t2v.safetensors", weight_dtype: "default" } },
    2: { class_type: "CGTTestRandomConditioning", inputs: { seed: 1, tokens: 16, width: 4096, pooled_width: 0 } },
    3: { class_type: "CGTTestRandomConditioning", inputs: { seed: 2, tokens: 16, width: 4096, pooled_width: 0 } },
    4: { class_type: "EmptyHunyuanLatentVideo", inputs: { width: 64, height: 64, length: 9, batch_size: 1 } },
    [CACHE_NODE]: { class_type: "CGTaylorCache", inputs: {
      model: ["1", 0], threshold: 1.0, warmup_steps: 3, start_fraction: 0, end_fraction: 1,
      first_block_order: 1, last_block_order: 1, max_consecutive: 0, distance: "step", forecast_residual: false } },
    5: { class_type: "KSampler", inputs: {
      model: [String(CACHE_NODE), 0], seed, steps: STEPS, cfg: 3.0, sampler_name: "euler", scheduler: "simple",
      denoise: 1.0, positive: ["2", 0], negative: ["3", 0], latent_image: ["4", 0] } },
    7: { class_type: "SaveLatent", inputs: { samples: ["5", 0], filename_prefix: "cgtaylor_browser/wan" } },
  };
}

// Skip the first-run template dialog; pick the renderer.
const openFrontend = (vue) => openPage(browser, url, { "Comfy.VueNodes.Enabled": vue });

/** What the chart on the cache node shows, and the pixels of its canvas that have the theme's accent colour. */
const chartOnNode = (page) =>
  page.evaluate(async (id) => {
    const { readTheme } = await import("/extensions/cgtaylor-cache/cgtaylor_draw.js");
    const node = window.app.graph.getNodeById(id);
    const root = node?.widgets?.find((w) => w.name === "cgtaylor_chart")?.element;
    const canvas = root?.querySelector("canvas");
    if (!canvas || !document.contains(canvas) || !canvas.width) return { mounted: false, properties: node?.properties };
    // The accent as the canvas renders it: paint the theme colour once into a scratch canvas.
    const scratch = document.createElement("canvas").getContext("2d");
    scratch.fillStyle = readTheme(getComputedStyle(document.documentElement)).accent;
    scratch.fillRect(0, 0, 1, 1);
    const accent = [...scratch.getImageData(0, 0, 1, 1).data.slice(0, 3)];
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let accentPixels = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - accent[0]) + Math.abs(data[i + 1] - accent[1]) + Math.abs(data[i + 2] - accent[2]) < 12) accentPixels++;
    }
    return { mounted: true, ...root.dataset, aria: canvas.getAttribute("aria-label"), accentPixels, properties: node.properties };
  }, CACHE_NODE);

/** The names of the inputs the server marks "advanced" in CGTaylorCache's schema. */
async function advancedInputs() {
  const info = await (await fetch(`${url}/api/object_info/CGTaylorCache`)).json();
  const { required, optional = {} } = info.CGTaylorCache.input;
  return Object.entries({ ...required, ...optional })
    .filter(([, spec]) => spec[1]?.advanced === true)
    .map(([name]) => name);
}

/** The labels of the widgets the Vue renderer shows on the cache node, top to bottom. */
const shownWidgetLabels = (page) =>
  page.evaluate((id) => [...document.querySelectorAll(`[data-node-id="${id}"] [data-testid="widget-layout-field-label"]`)]
    .map((label) => label.textContent.trim()), CACHE_NODE);

const expectedSummary = (payload) => {
  const forecast = payload.steps.filter((s) => s.forecast > 0).length;
  return `${forecast}/${payload.steps.length} steps forecast · ${payload.totals.block_ratio.toFixed(1)}x fewer block evaluations`;
};

for (const vue of [false, true]) {
  test(`a real run draws the chart in the ${vue ? "Vue node" : "classic canvas"} renderer and survives a reload`, { skip }, async (t) => {
    const { page, errors } = await openFrontend(vue);
    const version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? "0");
    const [major, minor] = version.split(".").map(Number);
    if (vue && (major < 1 || (major === 1 && minor < 30))) {
      // Measured with 1.27.10: its early Vue nodes render built-in widget types only, no DOM widgets.
      t.skip(`frontend ${version}: its Vue node renderer does not mount DOM widgets`);
      return;
    }
    // A new seed each time: ComfyUI would answer an identical prompt from its cache, without sampling.
    const seed = Date.now() % 1_000_000 + (vue ? 1 : 0);
    await page.evaluate((p) => window.app.loadApiJson(p, "cgtaylor-real.json"), prompt(seed));
    await page.evaluate(() => window.app.queuePrompt(0));
    await page.waitForFunction((id) => window.app.graph.getNodeById(id)?.properties?.cgtaylor_stats, CACHE_NODE, { timeout: 180000 });
    await page.waitForTimeout(500); // a frame or two for the redraw

    const chart = await chartOnNode(page);
    const payload = chart.properties.cgtaylor_stats;
    assert.equal(payload.node, String(CACHE_NODE));
    assert.equal(payload.model, "Wan");
    assert.equal(payload.steps.length, STEPS);
    assert.ok(payload.totals.forecast > 0, "a loose threshold forecasts some steps");
    assert.ok(chart.mounted, "the chart's canvas is in the page");
    assert.equal(chart.steps, String(STEPS));
    assert.equal(chart.summary, expectedSummary(payload));
    assert.ok(chart.aria.includes(expectedSummary(payload)), chart.aria);
    assert.ok(chart.accentPixels > 50, `forecast bars drawn (${chart.accentPixels} accent pixels)`);

    const inputs = await page.evaluate(async (id) => (await window.app.graphToPrompt()).output[id].inputs, CACHE_NODE);
    // The prompt holds the node's inputs and nothing of the chart (it would change ComfyUI's cache key).
    assert.deepEqual(Object.keys(inputs).sort(), Object.keys(prompt(seed)[CACHE_NODE].inputs).sort());

    const dir = await mkdtemp(join(tmpdir(), "cgtaylor-real-shot-"));
    await page.screenshot({ path: join(dir, `${vue ? "vue" : "classic"}.png`) });
    t.diagnostic(`frontend ${version}, ${payload.totals.forecast}/${payload.totals.calls} calls forecast; screenshot in ${dir}`);

    // Every input stays a widget of the node, whatever the frontend folds away.
    const widgets = await page.evaluate((id) => window.app.graph.getNodeById(id).widgets.map((w) => w.name), CACHE_NODE);
    const widgetInputs = Object.keys(prompt(seed)[CACHE_NODE].inputs).filter((name) => name !== "model");
    assert.deepEqual(widgets.filter((name) => widgetInputs.includes(name)), widgetInputs);
    if (vue) {
      // The Vue renderer folds inputs the server marks "advanced" (measured on 1.47.11 and 1.58.1).
      const advanced = await advancedInputs();
      assert.deepEqual(widgetInputs.filter((name) => !advanced.includes(name)), ESSENTIAL_INPUTS);
      assert.deepEqual(await shownWidgetLabels(page), ESSENTIAL_INPUTS);
      await page.locator(`[data-node-id="${CACHE_NODE}"]`).getByText("Show advanced inputs").click();
      await page.waitForFunction((id) => document.querySelectorAll(
        `[data-node-id="${id}"] [data-testid="widget-layout-field-label"]`).length > 2, CACHE_NODE);
      assert.deepEqual(await shownWidgetLabels(page), widgetInputs);
      await page.screenshot({ path: join(dir, "vue-advanced-shown.png") });
    }

    // The frontend keeps the open workflow (node properties included) across a reload.
    await page.reload();
    await page.waitForFunction(() => window.app?.graph && window.LiteGraph, null, { timeout: 60000 });
    await page.waitForFunction((id) => {
      const node = window.app.graph.getNodeById(id);
      return node?.widgets?.find((w) => w.name === "cgtaylor_chart")?.element?.dataset.steps === "20";
    }, CACHE_NODE, { timeout: 30000 });
    await page.waitForTimeout(500);
    const restored = await chartOnNode(page);
    assert.equal(restored.summary, expectedSummary(payload));
    assert.ok(restored.accentPixels > 50);
    const own = errors.filter((e) => e.includes("cgtaylor"));
    assert.deepEqual(own, [], "no page errors from the widget");
    await page.context().close();
  });
}
