// What the real-frontend test reads off a template open in the page, beyond the boxes
// (real_comfyui.test.mjs laidOut): which nodes fold inputs away, which texts the canvases cut
// short, whether a note shows all its text. Each takes a Playwright page with ComfyUI's frontend.

const SHOW_ADVANCED = "Show advanced inputs";

/**
 * Unfold every node's advanced inputs as a user does; resolves to the titles of the nodes unfolded.
 * Vue nodes: a click on each node's own "Show advanced inputs" button (frontends 1.47.11 to 1.58.1).
 * The classic canvas has no such button and shows every input anyway (1.27.10 to 1.58.1): the flag
 * the button sets (LGraphNode.showAdvanced) is set on every node, for a frontend that reads it there.
 */
export async function showAdvancedInputs(page, vue) {
  if (!vue) {
    return page.evaluate(() => window.app.graph._nodes.map((node) => {
      node.showAdvanced = true;
      window.app.canvas.setDirty(true, true);
      return node.title;
    }));
  }
  const unfolded = [];
  const buttons = page.locator("[data-node-id]").getByText(SHOW_ADVANCED, { exact: true });
  for (let left = await buttons.count(); left > 0; left = await buttons.count()) {
    const button = buttons.first();
    unfolded.push(await button.evaluate((el) => el.closest("[data-node-id]").dataset.nodeId));
    await button.click();
    // The button turns into "Hide advanced inputs" once the node has unfolded.
    for (let wait = 0; (await buttons.count()) >= left; wait++) {
      if (wait > 50) throw new Error(`node ${unfolded.at(-1)} did not unfold its inputs`);
      await page.waitForTimeout(100);
    }
  }
  return page.evaluate((ids) => ids.map((id) => window.app.graph.getNodeById(id).title), unfolded);
}

/**
 * Start recording the text the page's canvases draw: the graph canvas (with the node being drawn)
 * and each cache node's chart. stopRecordingText() ends it and says which texts were cut short.
 */
export const recordText = (page) =>
  page.evaluate(() => {
    const proto = CanvasRenderingContext2D.prototype;
    const graphCanvas = window.app.canvas;
    const drawNode = graphCanvas.drawNode;
    const fillText = proto.fillText;
    const record = { texts: [], drawing: null, drawn: new Set(), undo: null };
    graphCanvas.drawNode = function (node, ...rest) {
      record.drawing = node;
      record.drawn.add(node);
      try {
        return drawNode.call(this, node, ...rest);
      } finally {
        record.drawing = null;
      }
    };
    proto.fillText = function (text, ...rest) {
      const chart = this.canvas.closest?.(".cgtaylor-chart");
      const node = chart ? window.app.graph._nodes.find((n) => n.widgets?.some((w) => w.element === chart)) : record.drawing;
      if (chart || this.canvas === graphCanvas.canvas) {
        record.texts.push({ owner: `${chart ? "chart of " : ""}${node?.title ?? "graph"}`, node, text: String(text) });
      }
      return fillText.call(this, text, ...rest);
    };
    record.undo = () => {
      graphCanvas.drawNode = drawNode;
      proto.fillText = fillText;
    };
    window.__cgtaylorTextRecord = record;
  });

/**
 * End recordText(); resolves to { texts: [{owner, text}], cut: ["owner: text…"], missing: ["owner: text"] }.
 * cut: LiteGraph draws a text it shortens as its start and then "…" on its own (1.58.1), older code as
 * one string ending in "…": either way the cut text is the start before the ellipsis. missing: the
 * label of a widget drawn on the graph canvas, or a combo's value, that a node drawn meanwhile never
 * drew whole: LiteGraph leaves out a label it has no room for at all, with no ellipsis to show for it.
 */
export const stopRecordingText = (page) =>
  page.evaluate(() => {
    const record = window.__cgtaylorTextRecord;
    record.undo();
    delete window.__cgtaylorTextRecord;
    const cut = [];
    record.texts.forEach(({ owner, text }, i) => {
      if (text === "…") cut.push(`${owner}: ${record.texts[i - 1]?.text ?? ""}…`);
      else if (text.endsWith("…")) cut.push(`${owner}: ${text}`);
    });
    const missing = [...record.drawn].flatMap((node) => {
      const drawn = new Set(record.texts.filter((t) => t.node === node && !t.owner.startsWith("chart of")).map((t) => t.text));
      const shown = (node.widgets ?? []).filter((w) => !w.element && !w.hidden && !w.options?.hidden && !String(w.type).includes("hidden"));
      const expected = shown.flatMap((w) => [w.displayName ?? w.label ?? w.name, ...(w.type === "combo" ? [String(w.value)] : [])]);
      return expected.filter((text) => !drawn.has(text)).map((text) => `${node.title}: ${text}`);
    });
    return { texts: record.texts.map(({ owner, text }) => ({ owner, text })), cut, missing };
  });

/**
 * What of note node `id`'s text (a Note or MarkdownNote, in view) does not fit it: each part of it that
 * holds more than its height and scrolls (the classic canvas's textarea) or clips (the Vue node's,
 * which hides its scroll bar until hovered). Left out: parts the note itself hides, such as a
 * markdown note's editor (transparent in frontend 1.58.1, under the rendered text in 1.27.10). A part
 * that something else covers, such as a dialog, still counts.
 */
export const noteOverflow = (page, id) =>
  page.evaluate((id) => {
    const node = window.app.graph.getNodeById(id);
    const roots = [document.querySelector(`[data-node-id="${id}"]`), ...(node.widgets ?? []).map((w) => w.element)]
      .filter(Boolean);
    const hiddenByNote = (el) => {
      if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) return true;
      const r = el.getBoundingClientRect();
      // The note's own topmost part at a point near the top of `el`, whatever lies over the note.
      const topmost = document.elementsFromPoint(r.x + r.width / 2, r.y + Math.min(r.height / 2, 20))
        .find((e) => roots.some((root) => root.contains(e)));
      return Boolean(topmost && !el.contains(topmost));
    };
    return roots.flatMap((root) => [root, ...root.querySelectorAll("*")])
      .filter((el) => el.clientHeight > 0 && el.scrollHeight > el.clientHeight + 1 &&
        getComputedStyle(el).overflowY !== "visible" && !hiddenByNote(el))
      .map((el) => `${node.title}: ${el.scrollHeight} px of text in ${el.clientHeight}`);
  }, id);
