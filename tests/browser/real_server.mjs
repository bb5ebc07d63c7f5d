// A real ComfyUI server with this pack, for the opt-in real-frontend tests (real_*.test.mjs).
// COMFYUI_PATH names the ComfyUI checkout; COMFYUI_PYTHON (default: the repo's .venv) must have
// ComfyUI's requirements; COMFYUI_FRONTEND_ROOT optionally serves another frontend build.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { REPO } from "./serve.mjs";

export const COMFYUI = process.env.COMFYUI_PATH;
// Like `make test`'s real-ComfyUI pytest tier: the repo's .venv unless told otherwise.
const VENV_PYTHON = join(REPO, ".venv", "bin", "python");
const PYTHON = process.env.COMFYUI_PYTHON || (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");
const FRONTEND = process.env.COMFYUI_FRONTEND_ROOT;
// Python must not write bytecode into the ComfyUI folder (its __pycache__ folders) while we run it.
const PYTHON_ENV = { ...process.env, PYTHONDONTWRITEBYTECODE: "1" };
export const skipWithoutComfyUI = COMFYUI ? false : "set COMFYUI_PATH (and COMFYUI_PYTHON) to run against a real ComfyUI";

const freePort = () =>
  new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });

/**
 * Starts ComfyUI on a free loopback port with a fresh --base-directory prepared by
 * real_comfyui_setup.py (this pack, the test conditioning node, the tiny Wan model, the templates'
 * model files), and waits until it answers. Nothing is written into the ComfyUI folder.
 * Resolves to { url, base, log(), stop() }.
 */
export async function startComfyUI() {
  const base = await mkdtemp(join(tmpdir(), "cgtaylor-real-"));
  const setup = spawnSync(PYTHON, [join(REPO, "tests/browser/real_comfyui_setup.py"), "--comfyui", COMFYUI, "--base", base],
    { encoding: "utf8", env: PYTHON_ENV });
  assert.equal(setup.status, 0, setup.stderr);
  const port = await freePort();
  // --base-directory moves models, custom nodes, input, output, temp and user files, but not the
  // database: every release here (v0.3.64 to v0.33.0) defaults it to <ComfyUI>/user/comfyui.db.
  const args = ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", String(port), "--base-directory", base,
    "--database-url", `sqlite:///${join(base, "comfyui.db")}`,
    "--disable-auto-launch", "--disable-api-nodes", ...(FRONTEND ? ["--front-end-root", FRONTEND] : [])];
  // Its own process group, so stop() can end the server and anything it started by this one id.
  const server = spawn(PYTHON, args, { cwd: COMFYUI, detached: true, stdio: ["ignore", "pipe", "pipe"], env: PYTHON_ENV });
  let log = "";
  server.stdout.on("data", (d) => (log += d));
  server.stderr.on("data", (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    // Once stopped by its signal, a process has no exit code: stopping twice must not signal again.
    if (server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((resolve) => server.once("exit", resolve));
      process.kill(-server.pid, "SIGTERM");
      await exited;
    }
    await rm(base, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    if (server.exitCode !== null) {
      await stop();
      assert.fail(`ComfyUI exited:\n${log.slice(-3000)}`);
    }
    if (await fetch(`${url}/api/system_stats`).then((r) => r.ok, () => false)) break;
    if (i >= 240) {
      await stop();
      assert.fail(`ComfyUI did not answer within 120 s:\n${log.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { url, base, log: () => log, stop };
}

/** A page on the server's frontend, past the first-run dialog, with its page errors collected. */
export async function openFrontend(browser, url, settings = {}, viewport = { width: 1400, height: 900 }) {
  await fetch(`${url}/api/settings`, { method: "POST", body: JSON.stringify({ "Comfy.TutorialCompleted": true, ...settings }) });
  const page = await (await browser.newContext({ viewport })).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.stack ?? e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph, null, { timeout: 60000 });
  return { page, errors };
}
