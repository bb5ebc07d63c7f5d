"""ComfyUI side of the pack: the node (node.py, on ComfyUI's V3 schema) and the adapters that patch its
supported models (families.py)."""
