"""CG-Taylor cache: confidence-gated Taylor forecasting for ComfyUI's diffusion transformers
(FLUX, Chroma, Qwen-Image, HunyuanVideo, LTX, Wan)."""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI's loader calls this once it has imported the pack, which exports no NODE_CLASS_MAPPINGS: with
    them, the loader would register those and never call this. The node module is imported here, not above,
    because it is written against ComfyUI's own ``comfy_api``: the pack itself imports with no ComfyUI present."""
    from .nodes.node import CGTaylorCacheExtension

    return CGTaylorCacheExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
