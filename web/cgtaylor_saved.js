// Workflows saved before the calibrated gate existed: their CGTaylorCache node has no `gate` value,
// and its first value was a threshold on block 0's own forecast error. The frontend restores widget
// values by position and leaves a widget with no saved value at its default, which would quietly
// reread that threshold as a tolerance of the calibrated gate. Such a node keeps the gate its
// threshold was meant for, "block0", so a shared workflow still samples the image it did.
// Pure: no ComfyUI imports, so node --test runs it (cgtaylor_upgrade.js installs it).

export const GATE_WIDGET = "gate";
export const GATE_BEFORE_CALIBRATION = "block0";

/**
 * Set the gate of a node configured from `savedValues` (its workflow's widgets_values) that predate
 * the gate input. Returns true when the node was such a one.
 */
export function keepSavedGate(node, savedValues) {
  if (!Array.isArray(savedValues)) return false;
  const widgets = node?.widgets ?? [];
  const index = widgets.findIndex((widget) => widget?.name === GATE_WIDGET);
  if (index < 0 || savedValues.length > index) return false;
  widgets[index].value = GATE_BEFORE_CALIBRATION;
  return true;
}
