// Opens workflows saved by older versions of the pack as they were meant (see cgtaylor_saved.js).
import { app } from "../../scripts/app.js";
import { keepSavedGate } from "./cgtaylor_saved.js";

app.registerExtension({
  name: "cgtaylor.savedWorkflows",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "CGTaylorCache") return;
    const configure = nodeType.prototype.onConfigure;
    // LGraphNode.configure restores widgets_values by position, then calls onConfigure(info).
    nodeType.prototype.onConfigure = function (info) {
      const result = configure?.apply(this, arguments);
      keepSavedGate(this, info?.widgets_values);
      return result;
    };
  },
});
