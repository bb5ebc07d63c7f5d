// Opt-in check that ComfyUI's own node search finds the node by the words users type for a cache
// (the node's SEARCH_ALIASES): a real ComfyUI server with this pack, its real frontend in headless
// Chromium, a double click on the empty canvas, the word typed into the search box. Skipped unless
// COMFYUI_PATH names a ComfyUI checkout (see real_server.mjs for COMFYUI_PYTHON and COMFYUI_FRONTEND_ROOT):
//   COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python node --test tests/browser/real_search.test.mjs
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { openFrontend, skipWithoutComfyUI as skip, startComfyUI } from "./real_server.mjs";
import { launchChromium } from "./serve.mjs";

const DISPLAY_NAME = "Confidence-Gated Taylor Cache";

let comfyui;
let browser;

before(async () => {
  if (skip) return;
  comfyui = await startComfyUI();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await comfyui?.stop();
});

/** The search box, opened by a double click on the empty canvas (retried: a page still busy
 * loading its first workflow may swallow the click). */
async function openSearchBox(page) {
  const box = page.locator("input[role=combobox]:visible").first(); // 1.47-1.48: "Add a node..." / "Search Nodes..."
  for (let attempt = 1; ; attempt++) {
    await page.evaluate(() => window.app.graph.clear());
    await page.waitForTimeout(1000);
    const canvas = await page.locator("canvas#graph-canvas").boundingBox();
    await page.mouse.dblclick(canvas.x + canvas.width / 2, canvas.y + canvas.height / 2);
    try {
      await box.waitFor({ state: "visible", timeout: 10000 });
      return box;
    } catch (error) {
      if (attempt === 3) throw error;
      await page.keyboard.press("Escape");
    }
  }
}

/** The node names the search box lists after ``query`` is typed into it. */
async function searchResults(page, query) {
  const box = await openSearchBox(page);
  await box.fill(query);
  await page.waitForTimeout(1000); // the search is debounced
  const options = await page.getByRole("option").allTextContents();
  await page.keyboard.press("Escape");
  return options.map((text) => text.trim());
}

test("typing 'teacache' into ComfyUI's node search lists the node", { skip }, async (t) => {
  const info = await (await fetch(`${comfyui.url}/api/object_info/CGTaylorCache`)).json();
  if (!("search_aliases" in info.CGTaylorCache)) {
    t.skip("this ComfyUI does not send search aliases (v0.3.64); its search finds the node by its display name only");
    return;
  }
  const { page, errors } = await openFrontend(browser, comfyui.url);
  const version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? "?");
  const found = await searchResults(page, "teacache");
  t.diagnostic(`frontend ${version}: "teacache" lists ${JSON.stringify(found.map((o) => o.slice(0, 40)))}`);
  assert.ok(found.some((option) => option.startsWith(DISPLAY_NAME)), `"teacache" does not list ${DISPLAY_NAME}`);
  // The same search box with a word that names nothing of the node: the check can fail.
  const unrelated = await searchResults(page, "zzqx");
  assert.ok(!unrelated.some((option) => option.startsWith(DISPLAY_NAME)), JSON.stringify(unrelated));
  assert.deepEqual(errors.filter((e) => e.includes("cgtaylor")), []);
  await page.context().close();
});
