// The box that shows a run's explanation in full (every note, why full calls were full, how the
// gate's predictions held) while the pointer rests on the chart's summary line or footer: the
// chart itself has room for the start of one note only. Plain DOM, no ComfyUI imports, nothing
// done at import time (ComfyUI imports every .js under WEB_DIRECTORY as an extension).
//
// One box for the page, fixed to the viewport under <body>, so that neither a node's bounds nor
// the canvas zoom clip or shrink the text.

const STYLE = [
  "position:fixed", "z-index:10000", "max-width:440px", "box-sizing:border-box", "padding:8px 10px",
  "border-radius:6px", "pointer-events:none", "font:12px/1.45 sans-serif", "white-space:normal",
  "overflow-wrap:anywhere", "box-shadow:0 4px 16px rgba(0,0,0,.35)",
  "background:var(--comfy-menu-bg,#171718)", "color:var(--fg-color,#ffffff)",
  "border:1px solid var(--border-color,#4e4e4e)",
].join(";");

let box = null;

function element() {
  if (!box) {
    box = document.createElement("div");
    box.className = "cgtaylor-notes";
    box.setAttribute("role", "tooltip");
    box.style.cssText = STYLE;
    box.hidden = true;
  }
  if (!box.isConnected) document.body.append(box);
  return box;
}

/** Show `explanation` (cgtaylor_draw.js explain()) next to the viewport point (x, y). */
export function showNotes(explanation, x, y) {
  const el = element();
  const heading = document.createElement("div");
  heading.style.fontWeight = "bold";
  heading.textContent = explanation.heading;
  const parts = [heading];
  for (const line of explanation.lines) {
    const p = document.createElement("div");
    p.textContent = line;
    parts.push(p);
  }
  if (explanation.notes.length) {
    const list = document.createElement("ul");
    list.style.cssText = "margin:4px 0 0;padding-left:16px";
    for (const note of explanation.notes) {
      const item = document.createElement("li");
      item.className = "cgtaylor-note";
      item.textContent = note;
      list.append(item);
    }
    parts.push(list);
  }
  el.replaceChildren(...parts);
  el.hidden = false;
  // Below and right of the pointer; flipped above or left where the viewport ends.
  const { width, height } = el.getBoundingClientRect();
  const left = x + 14 + width > innerWidth ? Math.max(4, x - 14 - width) : x + 14;
  const top = y + 18 + height > innerHeight ? Math.max(4, y - 10 - height) : y + 18;
  el.style.left = `${left}px`;
  el.style.top = `${top}px`;
}

export function hideNotes() {
  if (box) box.hidden = true;
}
