// Stand-in for ComfyUI's /scripts/app.js (in the real frontend a shim onto window.comfyAPI.app.app).
// Only what the widget touches: registerExtension, and the graph the harness page builds.
export const app = {
  extensions: [],
  rootGraph: null,
  graph: null,
  registerExtension(extension) {
    this.extensions.push(extension);
  },
};
