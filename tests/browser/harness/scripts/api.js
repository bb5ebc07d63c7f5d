// Stand-in for ComfyUI's /scripts/api.js: an EventTarget like the real `api`, plus emit() so the
// harness can play the server's websocket messages (the real api dispatches them as CustomEvents).
class FakeApi extends EventTarget {
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  fetchApi(path, init) {
    return fetch("/api" + path, init);
  }
}

export const api = new FakeApi();
