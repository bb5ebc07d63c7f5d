"""ComfyUI side of the pack: the node and the adapters that patch its supported models (families.py)."""

from .node import CGTaylorCache

NODE_CLASS_MAPPINGS = {"CGTaylorCache": CGTaylorCache}
NODE_DISPLAY_NAME_MAPPINGS = {"CGTaylorCache": "Confidence-Gated Taylor Cache"}
