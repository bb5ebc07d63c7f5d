// Writes web/assets/widget.png (the README's picture of the widget): the harness page at
// devicePixelRatio 2, the recorded fixture, and the pointer resting on one step to show its tooltip.
//   node tests/browser/screenshot.mjs [output.png] [--no-hover]
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { layout } from "../../web/cgtaylor_draw.js";
import { REPO, launchChromium, openHarness, startServer } from "./serve.mjs";

const args = process.argv.slice(2);
const out = args.find((a) => !a.startsWith("--")) ?? join(REPO, "web", "assets", "widget.png");
const fixture = JSON.parse(await readFile(new URL("./stats_fixture.json", import.meta.url), "utf8"));
const [width, height] = [400, 250];

const server = await startServer();
const browser = await launchChromium();
try {
  const { page, errors } = await openHarness(browser, server.url, { deviceScaleFactor: 2 });
  await page.evaluate(({ width, height }) => window.harness.createNode(window.harness.CGTaylorCache, 7, { width, height }), { width, height });
  await page.evaluate((payload) => window.harness.api.emit("cgtaylor.stats", payload), { ...fixture, node: "7" });
  if (!args.includes("--no-hover")) {
    // A step the gate turned down (error above the threshold), else any step after the warm-up.
    const { threshold } = fixture;
    let step = fixture.steps.findIndex((s, i) => i > 0 && s.gate_error !== null && s.gate_error > threshold);
    if (step < 0) step = Math.floor(fixture.steps.length / 2);
    const box = layout(width, height, fixture.steps.length);
    const rect = await page.locator("#host-7 canvas").boundingBox();
    await page.mouse.move(rect.x + box.barX(step) + box.barW / 2, rect.y + box.plot.y + box.plot.h * 0.7);
  }
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.locator("#host-7").screenshot({ path: out });
  if (errors.length) throw new Error(errors.join("\n"));
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
}
