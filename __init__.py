"""CG-Taylor cache: confidence-gated Taylor forecasting for ComfyUI's diffusion transformers
(FLUX, Chroma, Qwen-Image, HunyuanVideo, LTX, Wan)."""

WEB_DIRECTORY = "./web"

# ComfyUI imports this folder as a package. pytest may import this file on its own too (as
# the repository root's package, which has no usable name when the checkout folder is called
# e.g. "cgtaylor-cache"); there is nothing to register then.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
