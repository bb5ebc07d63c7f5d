"""The CGTaylorCache node on ComfyUI's V3 schema: MODEL in, the same model with confidence-gated forecasting out.

Written as ComfyUI's own EasyCache node is (comfy_extras/nodes_easycache.py). Its id, input names, defaults,
ranges and order are those of the V1 node it replaces, so saved workflows and API prompts keep working.
"""

from __future__ import annotations

import inspect

from comfy_api.latest import ComfyExtension, io

from ..core import PLACEMENTS, Schedule
from .families import SUPPORTED, detect
from .graph import merges_dropping
from .report import reporter, warn
from .runtime import CacheRuntime, install
from .settings import GATES, CacheSettings

# From the benchmark (README, `make bench`: FLUX.1's 57 and Wan 1.3B's 30 blocks, a rougher deep model and
# the Qwen layout, euler at 12-50 steps, cfg 1-8, shift 3 and 8; nothing chosen on the held-out pair). The
# tolerance bounds what a run of forecasts in a row adds up to: each forecast's predicted miss of the guided
# prediction the sampler steps with (cond and uncond as its own steps weigh them, core/guidance.py), weighed
# up by the step's sigma drop where that is above the average (core/steps.py). At 0.2 the deep models kept
# every image above 50 dB against no cache at 2.1-2.3x fewer block evaluations at 30 steps and 2.6-2.9x at
# 50 (cfg 3), where the gate before it, which bounded each forecast's own miss of one stream at 0.1, let
# single images of models trained elsewhere drift to 27 dB on shifted schedules and high cfg.
# max_consecutive is a backstop the gate rarely reaches.
# Orders 2: the gate forecasts block 0 with orders 0 to 2 and the last block follows the order that
# tracked block 0 best, which gained 2-4 dB over orders 1 at the same speed on both deep models.
DEFAULTS = {
    "tolerance": 0.2,
    "warmup_steps": 1,
    "start_fraction": 0.0,
    "end_fraction": 1.0,
    "first_block_order": 2,
    "last_block_order": 2,
    "max_consecutive": 8,
    "distance": "step",
    "forecast_residual": False,
    "gate": "calibrated",
    "cache_device": "auto",
    "target_speedup": 0.0,
}

DESCRIPTION = (
    "Speeds up FLUX.1/FLUX.2, Chroma, Qwen-Image, HunyuanVideo, LTX-Video/LTX-2, MiniMax H3 and Wan "
    "sampling by skipping transformer blocks. Block 0 always runs; when a Taylor forecast of its output is "
    "close to the real one, the last block's output is forecast too and the blocks in between are skipped. "
    "Otherwise the step is computed in full and the forecasts refresh."
)
# The words people type into ComfyUI's node search for a node like this one; the frontend's node search
# matches them next to the node's name and display name.
SEARCH_ALIASES = [
    "cache", "TeaCache", "first block cache", "TaylorSeer", "speed up", "speedup", "faster", "accelerate",
    "skip blocks",
]
WINDOW = ("as a share of the model's noise range (ComfyUI's percent, as EasyCache reads its start and end "
          "percent), not of the sampler's steps: the same sigmas in every sampler run")


def supported(constructor: type, **options: object) -> dict:
    """The ``options`` this ComfyUI's ``constructor`` takes: V3 gained advanced inputs and search aliases
    after v0.3.64, whose ``io.Schema`` and inputs would refuse them."""
    known = inspect.signature(constructor).parameters
    return {name: value for name, value in options.items() if name in known}


class CGTaylorCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = DEFAULTS
        # Frontends from 2026 fold advanced inputs away; the essential ones stay in view.
        advanced = supported(io.Float.Input, advanced=True)
        return io.Schema(
            node_id="CGTaylorCache",
            display_name="Confidence-Gated Taylor Cache",
            category="model_patches",
            description=DESCRIPTION,
            inputs=[
                io.Model.Input("model", tooltip=f"The diffusion model to accelerate: {SUPPORTED}."),
                io.Float.Input(
                    "tolerance", default=d["tolerance"], min=0.0, max=100.0, step=0.005,
                    tooltip="How far a run of forecasts in a row may miss, added up: each forecast's relative miss of "
                    "the last block's output as the sampler combines cond and uncond, predicted from block 0's "
                    "forecast error with ratios learned during the run (0.2: two forecasts missing by 10% each). "
                    "The same value means the same on every model, sampler, cfg and step count. Higher = faster, "
                    "lower = closer to the uncached image. 0 turns forecasting off (bit-identical output).",
                ),
                io.Int.Input(
                    "warmup_steps", default=d["warmup_steps"], min=0, max=1000,
                    tooltip="The first steps are always computed in full: they lay out the image. "
                    "The first and the last step are always full whatever this says.",
                ),
                io.Float.Input(
                    "start_fraction", default=d["start_fraction"], min=0.0, max=1.0, step=0.01, **advanced,
                    tooltip=f"Forecasting may start once sampling has come this far, {WINDOW}.",
                ),
                io.Float.Input(
                    "end_fraction", default=d["end_fraction"], min=0.0, max=1.0, step=0.01, **advanced,
                    tooltip=f"Forecasting stops once sampling has come this far, {WINDOW}; lower it (e.g. 0.9) to "
                    "keep the final detail steps full.",
                ),
                io.Int.Input(
                    "first_block_order", default=d["first_block_order"], min=0, max=4, **advanced,
                    tooltip="Highest Taylor order of block 0's forecast, used only by the confidence gate: it "
                    "tries every order up to this one and the last block follows the order that tracked block 0 best.",
                ),
                io.Int.Input(
                    "last_block_order", default=d["last_block_order"], min=0, max=4, **advanced,
                    tooltip="Taylor order of the last block's forecast: 0 reuses the last computed state, "
                    "1 extrapolates linearly, 2+ follow curvature (one more cached tensor each). A lower order is "
                    "used on calls where it tracked block 0 better.",
                ),
                io.Int.Input(
                    "max_consecutive", default=d["max_consecutive"], min=0, max=1000, **advanced,
                    tooltip="Most forecasts in a row before a full step is forced. 0 = no cap.",
                ),
                io.Combo.Input(
                    "distance", options=["step", "sigma", "block0"], default=d["distance"], **advanced,
                    tooltip="How far a forecast call lies from the last full one: in steps (as in the paper), in "
                    "noise level sigma (follows non-uniform schedules), or block0: as far as block 0's output "
                    "actually moved along its trend (the last block is forecast at the same place).",
                ),
                # Optional, so prompts saved before these inputs existed still validate.
                io.Boolean.Input(
                    "forecast_residual", default=d["forecast_residual"], optional=True, **advanced,
                    tooltip="Forecast only what the blocks after block 0 add, and add block 0's current output "
                    "back. Turn on, with gate block0 and max_consecutive 1, for samplers that inject noise every step "
                    "(euler_ancestral, dpmpp_sde, ...): "
                    "block 0 carries the fresh noise into the forecast.",
                ),
                io.Combo.Input(
                    "gate", options=list(GATES), default=d["gate"], optional=True, **advanced,
                    tooltip="calibrated: the tolerance bounds the forecasts' predicted misses (see tolerance). block0: it "
                    "bounds block 0's own forecast error, the method paper's gate, whose scale differs per model "
                    "(workflows saved before the calibrated gate keep it).",
                ),
                io.Combo.Input(
                    "cache_device", options=list(PLACEMENTS), default=d["cache_device"], optional=True, **advanced,
                    tooltip="Where the last block's cached states live. auto: on the GPU when they fit beside the "
                    "model and its activations once ComfyUI has loaded it, else in system RAM. gpu: always on the "
                    "model's device (ComfyUI makes room for them before sampling). cpu: in system RAM; each forecast "
                    "copies its states to the GPU slice by slice (same image, less VRAM, some time per step).",
                ),
                io.Float.Input(
                    "target_speedup", default=d["target_speedup"], min=0.0, max=20.0, step=0.05, optional=True,
                    tooltip="0: the tolerance decides how much is forecast. Else a speed to reach, as fewer block "
                    "evaluations (2.0: about half): the node forecasts the calls whose predicted misses are lowest "
                    "until the run has that many, whatever the model, sampler and step count, and never a run of "
                    "forecasts adding up to more than 0.6 (the guard); the chart and the log say when a target "
                    "was not reached and why. The tolerance is not used then (0 still turns forecasting off). Use it "
                    "for a known speed; for the closest image at a given speed, use the tolerance.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The same model, patched to forecast its blocks when that is safe.")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
            **supported(io.Schema, search_aliases=SEARCH_ALIASES),
        )

    @classmethod
    def validate_inputs(cls, start_fraction: float | None, end_fraction: float | None) -> bool | str:
        """The one check ComfyUI's own validation of the declared ranges and options cannot make: the window's
        ends against each other, with the message execute would give. ComfyUI reports a failure once per input
        named here, so only these two are; a value linked from another node arrives as None and waits for
        execute, which checks every setting before sampling."""
        if start_fraction is None or end_fraction is None:
            return True
        try:
            Schedule(start_fraction=start_fraction, end_fraction=end_fraction)
        except ValueError as error:
            return f"CGTaylorCache: {error}"
        return True

    @classmethod
    def execute(
        cls,
        model: io.Model.Type,
        tolerance: float,
        warmup_steps: int,
        start_fraction: float,
        end_fraction: float,
        first_block_order: int,
        last_block_order: int,
        max_consecutive: int,
        distance: str,
        forecast_residual: bool = DEFAULTS["forecast_residual"],
        gate: str = DEFAULTS["gate"],
        cache_device: str = DEFAULTS["cache_device"],
        target_speedup: float = DEFAULTS["target_speedup"],
    ) -> io.NodeOutput:
        try:
            settings = CacheSettings(
                tolerance, warmup_steps, start_fraction, end_fraction, first_block_order, last_block_order,
                max_consecutive, distance, forecast_residual, gate, cache_device, target_speedup,
            )
        except ValueError as error:
            raise ValueError(f"CGTaylorCache: {error}") from None
        node_id = cls.hidden.unique_id
        layout = detect(model.get_model_object("diffusion_model"))
        patched = model.clone()
        install(patched, CacheRuntime(settings.new_engine, layout, reporter(node_id)))
        dropping = merges_dropping(cls.hidden.prompt, node_id)
        if dropping:
            warn(node_id, f"its model goes into {', '.join(dropping)} as model2, and merge nodes keep only model1's "
                 "patches, so the cache is dropped and nothing will be forecast; put CGTaylorCache after the merge")
        return io.NodeOutput(patched)


class CGTaylorCacheExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CGTaylorCache]
