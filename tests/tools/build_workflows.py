"""Builds the example workflows (workflows/*.json, UI format) and their thumbnails.

Run from the repository root with a Python that has torch (for the node's schema):
    python tests/tools/build_workflows.py            # writes the JSON files
    python tests/tools/build_workflows.py --thumbs   # also the .jpg thumbnails (needs Pillow)
    python tests/tools/build_workflows.py --icon     # also web/assets/icon.png (needs Pillow)

Core node sockets come from tests/workflow_signatures.json and the node's from its real
INPUT_TYPES(), so a schema change shows up here and in the test alike.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402,F401
from cgtaylor_cache.nodes.node import DEFAULTS, CGTaylorCache  # noqa: E402

RECORDED = json.loads((ROOT / "tests" / "workflow_signatures.json").read_text())
SIGNATURES = RECORDED["nodes"]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
PACK_ID = "cgtaylor-cache"
CORE_VERSION = RECORDED["comfyui"]["version"]  # the ComfyUI the core node signatures were recorded from


def node_sockets(node_type: str) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) as the UI format lists them: sockets only, widgets stay in widgets_values."""
    if node_type == "CGTaylorCache":
        declared = CGTaylorCache.INPUT_TYPES()["required"]
        ins = [{"name": n, "type": s[0], "link": None} for n, s in declared.items()
               if isinstance(s[0], str) and s[0] not in WIDGET_TYPES]
        outs = [{"name": t, "type": t, "links": [], "slot_index": i} for i, t in enumerate(CGTaylorCache.RETURN_TYPES)]
        return ins, outs
    sig = SIGNATURES[node_type]
    ins = []
    for entry in sig["inputs"]:
        if entry["widget"]:
            continue
        socket = {"name": entry["name"], "type": entry["type"], "link": None}
        if entry["optional"]:
            socket["shape"] = 7
        ins.append(socket)
    outs = [{"name": t, "type": t, "links": [], "slot_index": i} for i, t in enumerate(sig["outputs"])]
    return ins, outs


class Graph:
    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, node_type: str, pos, size, widgets, title=None, models=None, color=None) -> dict:
        node_id = len(self.nodes) + 1
        ins, outs = ([], []) if node_type in ("Note", "MarkdownNote") else node_sockets(node_type)
        node = {
            "id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {},
            "order": 0, "mode": 0, "inputs": ins, "outputs": outs,
        }
        if title:
            node["title"] = title
        if node_type in ("Note", "MarkdownNote"):
            node["properties"] = {}
        elif node_type == "CGTaylorCache":
            node["properties"] = {"Node name for S&R": node_type, "cnr_id": PACK_ID}
        else:
            node["properties"] = {"Node name for S&R": node_type, "cnr_id": "comfy-core", "ver": CORE_VERSION}
        if models:
            node["properties"]["models"] = models
        node["widgets_values"] = list(widgets)
        if color:
            node["color"], node["bgcolor"] = color
        self.nodes.append(node)
        return node

    def link(self, src: dict, src_slot: int, dst: dict, dst_name: str) -> None:
        link_id = len(self.links) + 1
        dst_slot = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == dst_name)
        kind = src["outputs"][src_slot]["type"]
        self.links.append([link_id, src["id"], src_slot, dst["id"], dst_slot, kind])
        src["outputs"][src_slot]["links"].append(link_id)
        dst["inputs"][dst_slot]["link"] = link_id

    def group(self, title: str, bounding, color="#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [round(v) for v in bounding],
                            "color": color, "font_size": GROUP_FONT, "flags": {}})

    def _orders(self) -> None:
        """Execution order the frontend stores: a topological order of the linked nodes."""
        incoming = {n["id"]: {l[1] for l in self.links if l[3] == n["id"]} for n in self.nodes}
        done: list[int] = []
        while len(done) < len(self.nodes):
            for n in self.nodes:
                if n["id"] not in done and incoming[n["id"]] <= set(done):
                    done.append(n["id"])
                    break
        for n in self.nodes:
            n["order"] = done.index(n["id"])

    def document(self, uid: str) -> dict:
        self._orders()
        return {
            "id": uid, "revision": 0,
            "last_node_id": max(n["id"] for n in self.nodes),
            "last_link_id": max(l[0] for l in self.links),
            "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
            # ds: where frontend 1.27 opens a template; cgtaylor_view: where web/cgtaylor_view.js opens it
            # in the later frontends, which fit it to the window instead, when that fit is unreadable.
            "extra": {"ds": opening_view(self.nodes, self.groups), "cgtaylor_view": opening_view(self.nodes, self.groups)},
            "version": 0.4,
        }


def cache_widget_names() -> list[str]:
    """The node's widgets in the order the UI lists their values: required, then optional ones."""
    declared = CGTaylorCache.INPUT_TYPES()
    return [n for section in ("required", "optional") for n in declared.get(section, {}) if n != "model"]


def cache_widgets(**overrides) -> list:
    values = {**DEFAULTS, **overrides}
    return [values[n] for n in cache_widget_names()]


# ---------------------------------------------------------------------------------------
# Layout. A template has to open clean: the frontend sizes each node on load (the cache node grows
# by its chart, the Vue node renderer adds a few pixels to many core nodes), and a node that grows
# into its neighbour or out of its group is the pack's first impression. So every node is saved at
# least as large as the frontends lay it out, nodes are stacked in columns with room between them,
# and each group is drawn around its members. tests/browser/real_comfyui.test.mjs loads every
# template in each frontend and renderer and checks the laid-out boxes.

TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar sits above its pos
GAP = 40  # between a node and the next one's title bar; the frontend draws node badges just above a title
COLUMN_GAP = 70
PAD = 15  # inside a group, around its members
GROUP_FONT = 24
GROUP_TITLE = round(GROUP_FONT * 1.4)  # LGraphGroup's title bar height

# The largest size frontends 1.47.11, 1.48.7 and 1.58.1 give these nodes on load, classic canvas or
# Vue nodes (measured in each; 1.27.10's classic canvas lays them out no larger): saved at least this
# large, a node does not grow on load. The real-frontend test's layout check fails where one does.
LAID_OUT = {
    "UNETLoader": (360, 86), "CLIPLoader": (360, 114), "DualCLIPLoader": (360, 142), "VAELoader": (360, 62),
    "EmptySD3LatentImage": (340, 118), "EmptyHunyuanLatentVideo": (360, 146), "EmptyHunyuanVideo15Latent": (360, 146),
    "ModelSamplingSD3": (300, 62), "ModelSamplingAuraFlow": (300, 62), "FluxGuidance": (320, 62),
    "ConditioningZeroOut": (320, 34), "CLIPTextEncode": (400, 160), "KSampler": (320, 262),
    "KSamplerAdvanced": (340, 334), "VAEDecode": (225, 54), "CreateVideo": (270, 110), "SaveVideo": (560, 126),
}


def cache_node_height() -> int:
    """CGTaylorCache's height with every input shown and its chart at its minimum, in whichever renderer
    lays it out taller, so that it does not grow when a user unfolds its advanced inputs. Classic canvas:
    its socket row, a 24 px row per widget input and the chart (cgtaylor_widget.js MIN_HEIGHT 160 and its
    4 px gap), measured at 414 px with nine widget inputs. Vue nodes: header, socket row and the
    advanced-inputs button, a 28 px row per widget input and the chart's CSS minimum of 140 px,
    measured at 534 px with eleven in frontends 1.47.11, 1.48.7 and 1.58.1. Derived from the node's
    inputs, so a new input moves what is below it."""
    inputs = len(cache_widget_names())
    return max(34 + 24 * inputs + 164, 86 + 28 * inputs + 140)


# The classic canvas draws a widget's label and value on one row and shortens the label (down to
# nothing) where both do not fit: the loaders' long model file names need wider nodes than LAID_OUT's.
# Margins, arrows and the gap between label and value take 90 px, a character of either up to 7 px
# (frontend 1.58.1 at 12 px: the templates' model names measured 6.2 to 6.8 px a character).
WIDGET_ROW_PADDING = 90
WIDGET_CHAR = 7.0


def file_name_width(node_type: str, widgets) -> int:
    """The width the node's file-name inputs (combos listing the user's files) need to show whole."""
    if node_type not in SIGNATURES:
        return 0
    longest, values = 0, iter(widgets)
    for entry in SIGNATURES[node_type]["inputs"]:
        if not entry["widget"]:
            continue
        value = next(values)
        if entry["type"] == "COMBO" and entry["options"] is None:
            longest = max(longest, len(entry["name"]) + len(str(value)))
        if entry.get("control_after_generate"):
            next(values)  # the seed's "fixed"/"randomize" value follows it
    return math.ceil(WIDGET_ROW_PADDING + WIDGET_CHAR * longest) if longest else 0


class Column:
    """Places nodes top to bottom at x, each below the last; groups wrap runs of them."""

    def __init__(self, graph: Graph, x: int, width: int) -> None:
        self.graph, self.x, self.width, self.y = graph, x, width, 0
        self.group_start = 0
        self.group_width = 0

    def add(self, node_type: str, size, widgets, **kw) -> dict:
        """The node at the column's next free place, at `size` or the size it is laid out at if larger."""
        floor = LAID_OUT.get(node_type, (0, cache_node_height() if node_type == "CGTaylorCache" else 0))
        size = (max(size[0], floor[0], file_name_width(node_type, widgets)), max(size[1], floor[1]))
        assert size[0] <= self.width, f"{node_type} ({size[0]} wide) does not fit its column ({self.width})"
        node = self.graph.add(node_type, (self.x, self.y + TITLE), size, widgets, **kw)
        self.y += TITLE + size[1] + GAP
        self.group_width = max(self.group_width, size[0])
        return node

    def begin_group(self) -> None:
        self.group_start, self.group_width = self.y, 0
        self.y += GROUP_TITLE + PAD

    def end_group(self, title: str, color: str = "#3f789e") -> None:
        bottom = self.y - GAP + PAD
        self.graph.group(title, (self.x - PAD, self.group_start, self.group_width + 2 * PAD, bottom - self.group_start),
                         color)
        self.y = bottom + GAP


def columns(graph: Graph, *widths: int) -> list[Column]:
    """Columns left to right, each as wide as given, with room between them for a group's padding."""
    placed, x = [], 0
    for width in widths:
        placed.append(Column(graph, x, width))
        x += width + COLUMN_GAP
    return placed


# The part of the screen a workflow opened from its file shows the whole graph in: a 1920 x 1080
# window less the frontend's side bar, top bar and bottom controls. (The template browser ignores
# the saved view and fits the graph to 75% of the window.)
VIEW = {"left": 80, "top": 100, "width": 1780, "height": 880}


# The classic canvas draws node text from this zoom up (8 px over its 14 px node text, 0.57, and a margin):
# web/cgtaylor_view.js READABLE_SCALE.
READABLE_SCALE = 0.6


def opening_view(nodes: list[dict], groups: list[dict]) -> dict:
    """The saved canvas view: the whole graph in VIEW, at most at 100 % and at least readable (a graph too
    large for VIEW at READABLE_SCALE opens on its top left)."""
    boxes = [(n["pos"][0], n["pos"][1] - TITLE, n["size"][0], n["size"][1] + TITLE) for n in nodes]
    boxes += [tuple(g["bounding"]) for g in groups]
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    scale = max(READABLE_SCALE, min(1.0, VIEW["width"] / (right - left), VIEW["height"] / (bottom - top)))
    scale = int(scale * 100) / 100
    return {"scale": scale, "offset": [round(VIEW["left"] / scale - left), round(VIEW["top"] / scale - top)]}


def model(name: str, folder: str, url: str) -> dict:
    return {"name": name, "url": url, "directory": folder}


# The notes' column, and each note as tall as the frontend that lays its text out tallest shows it: the
# Vue node renderer grows a markdown note to its text (measured with frontends 1.47.11, 1.48.7 and
# 1.58.1: up to 667 px for the settings, 138 px for the model files at this width); the classic canvas
# needs less (1.27.10 to 1.58.1) and would otherwise scroll it.
NOTES_WIDTH = 520
SETTINGS_NOTE = (NOTES_WIDTH, 680)
MODELS_NOTE = (NOTES_WIDTH, 160)

NOTE_COLOR = ("#432", "#653")
CACHE_COLOR = ("#233", "#355")
POS_COLOR = ("#232", "#353")
NEG_COLOR = ("#322", "#533")

WAN_NEGATIVE = ("blurry, low quality, overexposed, static frame, frozen motion, subtitles, watermark, "
                "deformed hands, extra fingers, distorted face, cluttered background")


def settings_note(values: list, family: str, extra: str) -> str:
    """The template's note on the cache node and its settings, in Markdown: a MarkdownNote shows it in the
    frontend's text font (a plain Note shows small monospace text), with the settings as a list. Setting
    names in bold: code spans read poorly on the note's colour in frontend 1.48.7's Vue nodes."""
    v = dict(zip(cache_widget_names(), values))
    return (
        f"**Confidence-Gated Taylor Cache ({family})**\n\n"
        "The cache node sits between the model and the sampler. On every step block 0 of the transformer runs "
        "and its output is compared with a Taylor forecast of it. From how far that forecast missed, the node "
        "predicts how far a forecast of the last block would miss (it learns the ratios during the run); while "
        "the forecasts in a row add up to less than the **tolerance**, the last block's output is forecast and "
        "all blocks in between are skipped. Otherwise the "
        "step runs in full and the forecasts refresh. After each run the node shows a per-step chart (hover a "
        "bar: why a step was full) and logs how many model calls were forecast.\n\n"
        "**Settings in this workflow**\n\n"
        f"- **tolerance** {v['tolerance']}: how far forecasts in a row may miss, added up (0.2: two missing by "
        "10% each); the same on every model and step count. Raise for more speed, lower for output closer to "
        "the uncached model; 0 switches forecasting off (bit-identical to bypassing the node).\n"
        f"- **warmup_steps** {v['warmup_steps']}: the first steps always run in full (they lay out the composition); "
        "the first and last step of every run are full anyway.\n"
        f"- **start_fraction** {v['start_fraction']} / **end_fraction** {v['end_fraction']}: the part of the "
        "model's noise range (as EasyCache's percent; not of the steps) where forecasting is allowed; lower "
        "end_fraction (e.g. 0.9) to keep the last detail steps full.\n"
        f"- **first_block_order** {v['first_block_order']} / **last_block_order** {v['last_block_order']}: Taylor "
        "orders; 1 (linear) is the safe choice; 2 follows curvature but keeps more tensors and needs more full "
        "steps before it helps.\n"
        f"- **max_consecutive** {v['max_consecutive']}: a backstop on forecasts in a row (0 = no cap); the gate "
        "normally stops a run of forecasts well before it.\n"
        f"- **distance** {v['distance']}: 'step' extrapolates over the step index, 'sigma' over the noise level, "
        "'block0' as far as block 0's output actually moved.\n"
        f"- **forecast_residual** {str(v['forecast_residual']).lower()}: turn on (with max_consecutive 1, gate "
        "block0) for samplers that inject noise every step, such as euler_ancestral or dpmpp_sde.\n"
        f"- **gate** {v['gate']}: 'block0' instead bounds block 0's own forecast error (the method paper's gate, "
        "whose scale differs per model); workflows saved before the calibrated gate keep it.\n"
        f"- **cache_device** {v['cache_device']}: where the last block's cached states live. auto keeps them on the "
        "GPU when they fit beside the model once ComfyUI has loaded it, else in system RAM; cpu always keeps them "
        "in system RAM (the same output, less VRAM, some copying per step).\n"
        f"- **target_speedup** {v['target_speedup']}: 0 lets the tolerance decide; 2.0 asks for half the block "
        "evaluations instead.\n\n"
        f"{extra}\n\n"
        "To compare, bypass the node (Ctrl+B) and queue again with the same seed."
    )


def flux_dev() -> dict:
    g = Graph()
    notes, loaders, middle, sampling = columns(g, NOTES_WIDTH, 360, 400, 540)
    loaders.begin_group()
    unet = loaders.add("UNETLoader", (loaders.width, 82), ["flux1-dev.safetensors", "default"],
                       models=[model("flux1-dev.safetensors", "diffusion_models",
                                     "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors")])
    clip = loaders.add("DualCLIPLoader", (loaders.width, 130), ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"],
                       models=[
                           model("clip_l.safetensors", "text_encoders",
                                 "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
                           model("t5xxl_fp16.safetensors", "text_encoders",
                                 "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"),
                       ])
    vae = loaders.add("VAELoader", (loaders.width, 58), ["ae.safetensors"],
                      models=[model("ae.safetensors", "vae",
                                    "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors")])
    loaders.end_group("Load models")
    latent = loaders.add("EmptySD3LatentImage", (320, 106), [1024, 1024, 1])
    values = cache_widgets()
    middle.begin_group()
    cache = middle.add("CGTaylorCache", (340, 290), values, title="Confidence-Gated Taylor Cache", color=CACHE_COLOR)
    middle.end_group("Cache", "#3f8f8f")
    pos = middle.add("CLIPTextEncode", (400, 160),
                     ["a paper lantern festival over a quiet river at dusk, warm reflections on the water, "
                      "detailed wooden boats, soft mist, photograph, 35mm"],
                     title="CLIP Text Encode (Positive Prompt)", color=POS_COLOR)
    guidance = middle.add("FluxGuidance", (320, 58), [3.5])
    zero = middle.add("ConditioningZeroOut", (320, 26), [])
    sampler = sampling.add("KSampler", (320, 262), [42, "fixed", 20, 1.0, "euler", "simple", 1.0])
    decode = sampling.add("VAEDecode", (210, 46), [])
    save = sampling.add("SaveImage", (540, 580), ["cgtaylor/flux1-dev"])
    g.link(unet, 0, cache, "model")
    g.link(cache, 0, sampler, "model")
    g.link(clip, 0, pos, "clip")
    g.link(pos, 0, guidance, "conditioning")
    g.link(guidance, 0, sampler, "positive")
    g.link(pos, 0, zero, "conditioning")
    g.link(zero, 0, sampler, "negative")
    g.link(latent, 0, sampler, "latent_image")
    g.link(sampler, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, save, "images")
    notes.add("MarkdownNote", SETTINGS_NOTE, [settings_note(values, "FLUX.1-dev", (
        "FLUX.1-dev is guidance-distilled: cfg stays 1.0 (one model call per step, the negative prompt is "
        "zeroed out) and FluxGuidance sets the guidance strength. Few-step models such as FLUX.1-schnell "
        "(4 steps) leave almost nothing between warm-up and the always-full last step, so the node saves "
        "little there.")
    )], title="CGTaylorCache settings", color=NOTE_COLOR)
    notes.add("MarkdownNote", MODELS_NOTE, [
        "**Models** (ComfyUI/models/...)\n\n"
        "- diffusion_models/[flux1-dev.safetensors](https://huggingface.co/black-forest-labs/FLUX.1-dev) "
        "(accept the licence on Hugging Face first)\n"
        "- text_encoders/[clip_l.safetensors](https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors)\n"
        "- text_encoders/[t5xxl_fp16.safetensors](https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors)\n"
        "- vae/[ae.safetensors](https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors)\n"
    ], title="Model files", color=NOTE_COLOR)
    return g.document("6f1b7e0c-3a41-4c8e-9d0f-c0a7a10f1d01")


def wan21_t2v() -> dict:
    g = Graph()
    notes, loaders, middle, sampling = columns(g, NOTES_WIDTH, 420, 420, 560)
    loaders.begin_group()
    unet = loaders.add("UNETLoader", (loaders.width, 82), ["wan2.1_t2v_1.3B_fp16.safetensors", "default"],
                       models=[model("wan2.1_t2v_1.3B_fp16.safetensors", "diffusion_models",
                                     "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors")])
    clip = loaders.add("CLIPLoader", (loaders.width, 106), ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"],
                       models=[model("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                                     "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")])
    vae = loaders.add("VAELoader", (loaders.width, 58), ["wan_2.1_vae.safetensors"],
                      models=[model("wan_2.1_vae.safetensors", "vae",
                                    "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors")])
    loaders.end_group("Load models")
    latent = loaders.add("EmptyHunyuanLatentVideo", (340, 130), [832, 480, 33, 1])
    middle.begin_group()
    shift = middle.add("ModelSamplingSD3", (300, 58), [8.0])
    values = cache_widgets()
    cache = middle.add("CGTaylorCache", (340, 290), values, title="Confidence-Gated Taylor Cache", color=CACHE_COLOR)
    middle.end_group("Cache", "#3f8f8f")
    pos = middle.add("CLIPTextEncode", (420, 160),
                     ["a red fox trotting through fresh snow in a pine forest, low tracking shot, morning sun, "
                      "breath visible in the cold air"],
                     title="CLIP Text Encode (Positive Prompt)", color=POS_COLOR)
    neg = middle.add("CLIPTextEncode", (420, 140), [WAN_NEGATIVE],
                     title="CLIP Text Encode (Negative Prompt)", color=NEG_COLOR)
    sampler = sampling.add("KSampler", (320, 262), [42, "fixed", 30, 6.0, "uni_pc", "simple", 1.0])
    decode = sampling.add("VAEDecode", (210, 46), [])
    video = sampling.add("CreateVideo", (270, 102), [16.0, 8])
    save = sampling.add("SaveVideo", (560, 400), ["video/cgtaylor-wan21", "auto", "auto"])
    g.link(unet, 0, shift, "model")
    g.link(shift, 0, cache, "model")
    g.link(cache, 0, sampler, "model")
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    g.link(pos, 0, sampler, "positive")
    g.link(neg, 0, sampler, "negative")
    g.link(latent, 0, sampler, "latent_image")
    g.link(sampler, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, video, "images")
    g.link(video, 0, save, "video")
    notes.add("MarkdownNote", SETTINGS_NOTE, [settings_note(values, "Wan 2.1 text-to-video 1.3B", (
        "Wan runs cfg 6, so every step makes a cond and an uncond call; each keeps its own forecasts. "
        "The node is placed after ModelSamplingSD3 (shift 8), between the model and the sampler. The 14B "
        "text-to-video model is set up the same way: swap the file in the loader.")
    )], title="CGTaylorCache settings", color=NOTE_COLOR)
    notes.add("MarkdownNote", MODELS_NOTE, [
        "**Models** (ComfyUI/models/...)\n\n"
        "- diffusion_models/[wan2.1_t2v_1.3B_fp16.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors)\n"
        "- text_encoders/[umt5_xxl_fp8_e4m3fn_scaled.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors)\n"
        "- vae/[wan_2.1_vae.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors)\n"
    ], title="Model files", color=NOTE_COLOR)
    return g.document("0b0d5a2e-91c3-4f57-8a6e-c0a7a10f1d02")


def wan22_a14b_t2v() -> dict:
    g = Graph()
    notes, loaders, middle, sampling, sampling_low = columns(g, NOTES_WIDTH, 500, 340, 420, 560)
    repo = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
    high_name = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
    low_name = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
    loaders.begin_group()
    high = loaders.add("UNETLoader", (loaders.width, 82), [high_name, "default"], title="Load Diffusion Model (high noise)",
                       models=[model(high_name, "diffusion_models", f"{repo}/diffusion_models/{high_name}")])
    low = loaders.add("UNETLoader", (loaders.width, 82), [low_name, "default"], title="Load Diffusion Model (low noise)",
                      models=[model(low_name, "diffusion_models", f"{repo}/diffusion_models/{low_name}")])
    clip = loaders.add("CLIPLoader", (loaders.width, 106), ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"],
                       models=[model("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                                     "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")])
    vae = loaders.add("VAELoader", (loaders.width, 58), ["wan_2.1_vae.safetensors"],
                      models=[model("wan_2.1_vae.safetensors", "vae", f"{repo}/vae/wan_2.1_vae.safetensors")])
    loaders.end_group("Load models")
    # The shift nodes beside the loaders, so that each expert's group holds just its cache node: two
    # groups of shift and cache node stacked would make the template too tall for the template
    # browser to open it at a zoom the classic canvas draws text at, in a 1920 x 1080 window.
    shift_high = loaders.add("ModelSamplingSD3", (300, 58), [8.0], title="ModelSamplingSD3 (high noise)")
    shift_low = loaders.add("ModelSamplingSD3", (300, 58), [8.0], title="ModelSamplingSD3 (low noise)")
    latent = loaders.add("EmptyHunyuanLatentVideo", (360, 130), [640, 640, 81, 1])
    values = cache_widgets()
    middle.begin_group()
    cache_high = middle.add("CGTaylorCache", (340, 290), values, title="CG-Taylor Cache (high noise)",
                            color=CACHE_COLOR)
    middle.end_group("High-noise expert", "#3f8f8f")
    middle.begin_group()
    cache_low = middle.add("CGTaylorCache", (340, 290), values, title="CG-Taylor Cache (low noise)",
                           color=CACHE_COLOR)
    middle.end_group("Low-noise expert", "#3f8f8f")
    s_high = sampling.add("KSamplerAdvanced", (320, 334),
                          ["enable", 42, "fixed", 20, 3.5, "euler", "simple", 0, 10, "enable"],
                          title="KSampler (Advanced) high noise: steps 0-10")
    s_low = sampling_low.add("KSamplerAdvanced", (320, 334),
                             ["disable", 0, "fixed", 20, 3.5, "euler", "simple", 10, 10000, "disable"],
                             title="KSampler (Advanced) low noise: steps 10-20")
    pos = sampling.add("CLIPTextEncode", (420, 160),
                       ["a lighthouse on a rocky cliff during a storm, waves crashing below, slow aerial orbit, "
                        "rain streaks, dramatic clouds, cinematic"],
                       title="CLIP Text Encode (Positive Prompt)", color=POS_COLOR)
    neg = sampling.add("CLIPTextEncode", (420, 140), [WAN_NEGATIVE],
                       title="CLIP Text Encode (Negative Prompt)", color=NEG_COLOR)
    decode = sampling_low.add("VAEDecode", (210, 46), [])
    video = sampling_low.add("CreateVideo", (270, 102), [16.0, 8])
    save = sampling_low.add("SaveVideo", (560, 400), ["video/cgtaylor-wan22", "auto", "auto"])
    g.link(high, 0, shift_high, "model")
    g.link(shift_high, 0, cache_high, "model")
    g.link(cache_high, 0, s_high, "model")
    g.link(low, 0, shift_low, "model")
    g.link(shift_low, 0, cache_low, "model")
    g.link(cache_low, 0, s_low, "model")
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    g.link(pos, 0, s_high, "positive")
    g.link(neg, 0, s_high, "negative")
    g.link(pos, 0, s_low, "positive")
    g.link(neg, 0, s_low, "negative")
    g.link(latent, 0, s_high, "latent_image")
    g.link(s_high, 0, s_low, "latent_image")
    g.link(s_low, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, video, "images")
    g.link(video, 0, save, "video")
    notes.add("MarkdownNote", SETTINGS_NOTE, [settings_note(values, "Wan 2.2 A14B text-to-video", (
        "Wan 2.2 A14B is two models: the high-noise expert samples steps 0-10 of 20, the low-noise expert "
        "steps 10-20. Each gets its own cache node, because each model has its own features to forecast; "
        "each node only sees its own sampler's half of the schedule, so warm-up and the always-full first "
        "and last steps apply per half. The high-noise half decides layout and motion: if motion looks "
        "off, lower the tolerance on the high-noise node first (or set it to 0) and keep the low-noise one.")
    )], title="CGTaylorCache settings", color=NOTE_COLOR)
    notes.add("MarkdownNote", MODELS_NOTE, [
        "**Models** (ComfyUI/models/...)\n\n"
              f"- diffusion_models/[{high_name}]({repo}/diffusion_models/{high_name})\n"
              f"- diffusion_models/[{low_name}]({repo}/diffusion_models/{low_name})\n"
        "- text_encoders/[umt5_xxl_fp8_e4m3fn_scaled.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors)\n"
              f"- vae/[wan_2.1_vae.safetensors]({repo}/vae/wan_2.1_vae.safetensors)\n"
    ], title="Model files", color=NOTE_COLOR)
    return g.document("9c3e2f41-6d0a-4b1e-8f52-c0a7a10f1d03")


def qwen_image_2512_t2i() -> dict:
    g = Graph()
    notes, loaders, middle, sampling = columns(g, NOTES_WIDTH, 420, 420, 540)
    repo = "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files"
    unet_name, te_name, vae_name = ("qwen_image_2512_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                    "qwen_image_vae.safetensors")
    loaders.begin_group()
    unet = loaders.add("UNETLoader", (loaders.width, 82), [unet_name, "default"],
                       models=[model(unet_name, "diffusion_models", f"{repo}/diffusion_models/{unet_name}")])
    clip = loaders.add("CLIPLoader", (loaders.width, 106), [te_name, "qwen_image", "default"],
                       models=[model(te_name, "text_encoders", f"{repo}/text_encoders/{te_name}")])
    vae = loaders.add("VAELoader", (loaders.width, 58), [vae_name], models=[model(vae_name, "vae", f"{repo}/vae/{vae_name}")])
    loaders.end_group("Load models")
    latent = loaders.add("EmptySD3LatentImage", (340, 106), [1328, 1328, 1])
    middle.begin_group()
    shift = middle.add("ModelSamplingAuraFlow", (300, 58), [3.1])
    values = cache_widgets()
    cache = middle.add("CGTaylorCache", (340, 290), values, title="Confidence-Gated Taylor Cache", color=CACHE_COLOR)
    middle.end_group("Cache", "#3f8f8f")
    pos = middle.add("CLIPTextEncode", (420, 160),
                     ["a hand-painted shop sign reading \"OPEN LATE\" above a small noodle bar in the rain, neon "
                      "reflections on wet cobblestones, steam from the kitchen, evening, photograph"],
                     title="CLIP Text Encode (Positive Prompt)", color=POS_COLOR)
    neg = middle.add("CLIPTextEncode", (420, 140),
                     ["low resolution, low quality, deformed hands, oversaturated, waxy skin, blurry text, distorted"],
                     title="CLIP Text Encode (Negative Prompt)", color=NEG_COLOR)
    sampler = sampling.add("KSampler", (320, 262), [42, "fixed", 50, 4.0, "euler", "simple", 1.0])
    decode = sampling.add("VAEDecode", (210, 46), [])
    save = sampling.add("SaveImage", (540, 580), ["cgtaylor/qwen-image-2512"])
    g.link(unet, 0, shift, "model")
    g.link(shift, 0, cache, "model")
    g.link(cache, 0, sampler, "model")
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    g.link(pos, 0, sampler, "positive")
    g.link(neg, 0, sampler, "negative")
    g.link(latent, 0, sampler, "latent_image")
    g.link(sampler, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, save, "images")
    notes.add("MarkdownNote", SETTINGS_NOTE, [settings_note(values, "Qwen-Image 2512 text-to-image", (
        "Set up as ComfyUI's Qwen-Image 2512 template: ModelSamplingAuraFlow shift 3.1, 50 steps, cfg 4, so "
        "every step makes a cond and an uncond call, each with its own forecasts. The node is placed after "
        "the shift node, between the model and the sampler. Qwen-Image-Edit 2509/2511 workflows take the node "
        "the same way; the reference images' tokens are forecast along with the image. With a 4-step "
        "Lightning LoRA there is almost nothing left to forecast between warm-up and the last step.")
    )], title="CGTaylorCache settings", color=NOTE_COLOR)
    notes.add("MarkdownNote", MODELS_NOTE, [
        "**Models** (ComfyUI/models/...)\n\n"
              f"- diffusion_models/[{unet_name}]({repo}/diffusion_models/{unet_name})\n"
              f"- text_encoders/[{te_name}]({repo}/text_encoders/{te_name})\n"
              f"- vae/[{vae_name}]({repo}/vae/{vae_name})\n"
    ], title="Model files", color=NOTE_COLOR)
    return g.document("3d5a7c21-8e44-4f0b-9a61-c0a7a10f1d04")


def hunyuan_video15_t2v() -> dict:
    g = Graph()
    notes, loaders, middle, sampling = columns(g, NOTES_WIDTH, 440, 420, 560)
    repo = "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files"
    unet_name = "hunyuanvideo1.5_720p_t2v_fp16.safetensors"
    te_names = ("qwen_2.5_vl_7b_fp8_scaled.safetensors", "byt5_small_glyphxl_fp16.safetensors")
    vae_name = "hunyuanvideo15_vae_fp16.safetensors"
    loaders.begin_group()
    unet = loaders.add("UNETLoader", (loaders.width, 82), [unet_name, "default"],
                       models=[model(unet_name, "diffusion_models", f"{repo}/diffusion_models/{unet_name}")])
    clip = loaders.add("DualCLIPLoader", (loaders.width, 130), [*te_names, "hunyuan_video_15", "default"],
                       models=[model(name, "text_encoders", f"{repo}/text_encoders/{name}") for name in te_names])
    vae = loaders.add("VAELoader", (loaders.width, 58), [vae_name], models=[model(vae_name, "vae", f"{repo}/vae/{vae_name}")])
    loaders.end_group("Load models")
    latent = loaders.add("EmptyHunyuanVideo15Latent", (360, 130), [1280, 720, 121, 1])
    middle.begin_group()
    shift = middle.add("ModelSamplingSD3", (300, 58), [7.0])
    values = cache_widgets()
    cache = middle.add("CGTaylorCache", (340, 290), values, title="Confidence-Gated Taylor Cache", color=CACHE_COLOR)
    middle.end_group("Cache", "#3f8f8f")
    pos = middle.add("CLIPTextEncode", (420, 160),
                     ["a paper airplane released from a rooftop glides between tall buildings at sunset, the camera "
                      "follows it, warm golden light, smooth motion"],
                     title="CLIP Text Encode (Positive Prompt)", color=POS_COLOR)
    neg = middle.add("CLIPTextEncode", (420, 140), [""], title="CLIP Text Encode (Negative Prompt)",
                     color=NEG_COLOR)
    sampler = sampling.add("KSampler", (320, 262), [42, "fixed", 20, 6.0, "euler", "simple", 1.0])
    decode = sampling.add("VAEDecode", (210, 46), [])
    video = sampling.add("CreateVideo", (270, 102), [24.0, 8])
    save = sampling.add("SaveVideo", (560, 400), ["video/cgtaylor-hunyuan15", "auto", "auto"])
    g.link(unet, 0, shift, "model")
    g.link(shift, 0, cache, "model")
    g.link(cache, 0, sampler, "model")
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    g.link(pos, 0, sampler, "positive")
    g.link(neg, 0, sampler, "negative")
    g.link(latent, 0, sampler, "latent_image")
    g.link(sampler, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, video, "images")
    g.link(video, 0, save, "video")
    notes.add("MarkdownNote", SETTINGS_NOTE, [settings_note(values, "HunyuanVideo 1.5 720p text-to-video", (
        "Set up as the first stage of ComfyUI's HunyuanVideo 1.5 720p template (20 steps, cfg 6, shift 7, "
        "121 frames at 24 fps), with CGTaylorCache in place of the template's EasyCache node: use one of "
        "the two, not both. The optional 1080p super-resolution stage is left out.")
    )], title="CGTaylorCache settings", color=NOTE_COLOR)
    notes.add("MarkdownNote", MODELS_NOTE, [
        "**Models** (ComfyUI/models/...)\n\n"
              f"- diffusion_models/[{unet_name}]({repo}/diffusion_models/{unet_name})\n"
              + "".join(f"- text_encoders/[{name}]({repo}/text_encoders/{name})\n" for name in te_names)
              + f"- vae/[{vae_name}]({repo}/vae/{vae_name})\n"
    ], title="Model files", color=NOTE_COLOR)
    return g.document("5e8b9d32-0f55-4a1c-8b72-c0a7a10f1d05")


WORKFLOWS = {
    "flux1_dev_t2i_cgtaylor": (flux_dev, "FLUX.1-dev", "text to image", ["UNETLoader", "CGTaylorCache", "KSampler"]),
    "wan21_t2v_cgtaylor": (wan21_t2v, "Wan 2.1 1.3B", "text to video",
                           ["UNETLoader", "ModelSamplingSD3", "CGTaylorCache", "KSampler"]),
    "wan22_a14b_t2v_cgtaylor": (wan22_a14b_t2v, "Wan 2.2 A14B", "text to video, two experts",
                                ["high / low noise", "CGTaylorCache x2", "KSamplerAdvanced x2"]),
    "qwen_image_2512_t2i_cgtaylor": (qwen_image_2512_t2i, "Qwen-Image 2512", "text to image",
                                     ["UNETLoader", "ModelSamplingAuraFlow", "CGTaylorCache", "KSampler"]),
    "hunyuan_video15_t2v_cgtaylor": (hunyuan_video15_t2v, "HunyuanVideo 1.5", "text to video, 720p",
                                     ["UNETLoader", "ModelSamplingSD3", "CGTaylorCache", "KSampler"]),
}


# Where a thumbnail's model name starts, in its 512 px: below the badge the template browser lays
# over a card's top-left corner ("Node graph": 1.48.7 covers about the top 80 px and the left 270 px,
# 1.58.1 a little less); tests/browser/real_comfyui.test.mjs checks the badge against it.
THUMB_TITLE_TOP = 104


def thumbnail(path: Path, title: str, subtitle: str, chain: list[str]) -> None:
    """A plain 512x512 card: model name, task, and the node chain with the cache node highlighted."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size: int):
        for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
            try:
                return ImageFont.truetype(name, size)
            except OSError:
                continue
        return ImageFont.load_default(size)

    img = Image.new("RGB", (512, 512), (24, 28, 36))
    d = ImageDraw.Draw(img)
    for y in range(512):  # a soft vertical gradient
        shade = int(18 * y / 512)
        d.line([(0, y), (512, y)], fill=(24 + shade, 28 + shade, 40 + shade))
    d.rounded_rectangle((16, 16, 496, 496), radius=24, outline=(70, 150, 150), width=3)
    # The pack's name in the top-right corner, which the badge leaves free.
    label = font(18)
    d.text((472 - d.textlength("CG-Taylor Cache", font=label), 40), "CG-Taylor Cache", font=label, fill=(150, 200, 195))
    d.text((40, THUMB_TITLE_TOP), title, font=font(40), fill=(240, 240, 240))
    d.text((40, THUMB_TITLE_TOP + 54), subtitle, font=font(22), fill=(170, 190, 200))
    y = THUMB_TITLE_TOP + 104
    for i, label_text in enumerate(chain):
        is_cache = "CGTaylorCache" in label_text
        fill = (40, 110, 110) if is_cache else (52, 58, 72)
        d.rounded_rectangle((80, y, 432, y + 44), radius=10, fill=fill,
                            outline=(120, 220, 210) if is_cache else (90, 98, 116), width=2)
        f = font(21)
        w = d.textlength(label_text, font=f)
        d.text((256 - w / 2, y + 10), label_text, font=f, fill=(250, 250, 250))
        if i < len(chain) - 1:
            d.polygon([(247, y + 48), (265, y + 48), (256, y + 59)], fill=(150, 160, 175))
        y += 64
    d.text((40, 462), "confidence-gated forecasting", font=font(16), fill=(150, 200, 195))
    img.save(path, "JPEG", quality=88)


def icon(path: Path) -> None:
    """400x400 registry icon: a stack of blocks, the middle ones faded (skipped), an arrow across them."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((8, 8, 392, 392), radius=72, fill=(28, 34, 46, 255))
    top, height, gap = 70, 36, 14
    for i in range(6):
        y = top + i * (height + gap)
        run = i in (0, 5)
        fill = (52, 170, 160, 255) if run else (70, 80, 100, 255)
        d.rounded_rectangle((82, y, 282, y + height), radius=10, fill=fill)
    # forecast arrow from block 0 to the last block, outside the skipped ones
    d.line([(292, top + height / 2), (327, top + height / 2), (327, top + 5 * (height + gap) + height / 2),
            (300, top + 5 * (height + gap) + height / 2)], fill=(245, 200, 90, 255), width=10, joint="curve")
    yl = top + 5 * (height + gap) + height / 2
    d.polygon([(286, yl), (306, yl - 14), (306, yl + 14)], fill=(245, 200, 90, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "PNG")


def main() -> None:
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, (build, title, subtitle, chain) in WORKFLOWS.items():
        (out / f"{name}.json").write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if "--thumbs" in sys.argv:
            thumbnail(out / f"{name}.jpg", title, subtitle, chain)
        print("wrote", out / name)
    if "--icon" in sys.argv:
        icon(ROOT / "web" / "assets" / "icon.png")


if __name__ == "__main__":
    main()


