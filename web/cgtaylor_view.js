// The pack's templates open at a zoom where the classic canvas draws their nodes. Frontends from 1.47
// open a template fitted to 75% of the window (loadGraphData with openSource "template" calls fitView
// and passes over the template's saved view), and in a window below about 1920x1080 that is under the
// zoom where the classic canvas stops drawing node text and widgets (LiteGraph.Canvas.MinFontSizeForLOD,
// 8 px, over its 14 px node text: 0.57): the nodes show as blank boxes. A template of this pack carries
// its view (extra.cgtaylor_view, the same as its extra.ds, which 1.27 opens at) and opens there instead.
// Any other workflow, and a template the frontend already opens readable, keeps the frontend's view.
import { app } from "../../scripts/app.js";

export const READABLE_SCALE = 0.6;
const VIEW_KEY = "cgtaylor_view";

app.registerExtension({
  name: "cgtaylor.templateView",
  afterConfigureGraph() {
    const canvas = app.canvas;
    const view = (app.rootGraph ?? app.graph)?.extra?.[VIEW_KEY];
    if (!canvas?.ds || !(view?.scale >= READABLE_SCALE) || !Array.isArray(view.offset)) return;
    if (canvas.ds.scale >= READABLE_SCALE) return;
    if (app.extensionManager?.setting?.get?.("Comfy.EnableWorkflowViewRestore") === false) return;
    canvas.ds.scale = view.scale;
    canvas.ds.offset = [...view.offset];
    canvas.setDirty(true, true);
  },
});
