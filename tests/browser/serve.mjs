// Shared by the browser test and the screenshot script: a loopback static server that reproduces
// ComfyUI's URL layout, and the offline headless Chromium launch.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = fileURLToPath(new URL(".", import.meta.url));
export const REPO = join(HERE, "..", "..");

// URL prefix -> folder. /extensions/<pack>/ is where ComfyUI serves WEB_DIRECTORY, so the widget's
// "../../scripts/app.js" import lands on /scripts/app.js: the fakes.
const ROUTES = [
  ["/extensions/cgtaylor-cache/", join(REPO, "web")],
  ["/scripts/", join(HERE, "harness", "scripts")],
  ["/harness/", join(HERE, "harness")],
];
const TYPES = { ".js": "text/javascript", ".html": "text/html", ".json": "application/json", ".png": "image/png" };

function fileFor(url) {
  const path = decodeURIComponent(new URL(url, "http://localhost").pathname);
  for (const [prefix, folder] of ROUTES) {
    if (!path.startsWith(prefix)) continue;
    const file = normalize(join(folder, path.slice(prefix.length)));
    return file.startsWith(folder + sep) ? file : null; // no escaping the folder with ../
  }
  return null;
}

/** Start the server on a free loopback port; resolves to { url, close }. */
export async function startServer() {
  const server = createServer(async (request, response) => {
    const file = fileFor(request.url);
    try {
      if (!file) throw new Error("not routed");
      const body = await readFile(file);
      response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      response.end(body);
    } catch {
      response.writeHead(404, { "content-type": "text/plain" });
      response.end("not found");
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** Debian's Chromium, headless and with nothing that phones home (the test machines are offline). */
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    ],
  });
}

/** A page on the harness with console errors and page errors collected into `errors`. */
export async function openHarness(browser, baseUrl, { deviceScaleFactor = 1 } = {}) {
  const context = await browser.newContext({ deviceScaleFactor, viewport: { width: 900, height: 1400 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (message) => {
    // The tests' own getImageData probes make Chromium suggest willReadFrequently: not the widget's doing.
    if (message.text().includes("willReadFrequently")) return;
    if (message.type() === "error" || message.type() === "warning") errors.push(`console ${message.type()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
  await page.goto(`${baseUrl}/harness/index.html`);
  await page.waitForFunction(() => window.__ready === true, null, { timeout: 15000 });
  return { page, errors };
}
