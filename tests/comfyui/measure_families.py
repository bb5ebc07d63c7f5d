"""The two measurements the README gives for the families ComfyUI added in 2026, on ComfyUI's own classes.

    COMFYUI_PATH=<checkout> <checkout>/.venv/bin/python tests/comfyui/measure_families.py

writes bench/results/families.json, which `python -m bench.report` renders into the README.

* MiniMax H3: which rows of the packed sequence the confidence gate should read. An uncached run of
  a tiny random ``MiniMaxH3Model`` (ComfyUI's class and sampler, the real tier's config at the
  proportions of a short first-frame-to-video clip) records block 0's and the last block's output
  on every step; at each step the gate's measure (relative L1 error of block 0's order-2 Taylor
  forecast from the three steps before) is taken on each part of the sequence, next to the error
  of the same forecast of the last block on the rows the output layer reads (video and audio): how
  well each part ranks the calls, and how steady its ratio to the last block's error is, which is
  what the calibrated gate learns (core/calibration.py).
* Wan Animate 2: what a forecast call saves while the pose branch runs. FLOPs of one model call of
  ComfyUI's ``WanAnimate2Model`` at its released size (Wan 2.1 I2V 14B: 40 blocks, width 5120) and
  a 480x832, 81-frame video, counted by torch's FlopCounterMode on the meta device (nothing is
  computed), with every block run (a full call) and with blocks 1..39 passed over by block patches
  as the node's forecast calls do; without pose latents, with the pose branch, and with
  WanAnimate2Cache's pose cache filled. One block-equivalent is one generation block of that call.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def boot_comfyui() -> None:
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    sys.path.insert(0, str(root))
    # PyTorch's attention, which the meta device can run (the CPU default asks for free memory).
    sys.argv = ["main.py", "--cpu", "--use-pytorch-cross-attention"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401
    sys.path += [str(ROOT / "tests" / "comfyui"), str(ROOT)]  # after ComfyUI's: its `nodes` is not the pack's


# ----------------------------------------------------------------------------- MiniMax H3


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, index in enumerate(order):
            out[index] = float(rank)
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def minimax_gate_rows(steps: int = 30, seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    import bench  # noqa: F401  (the pack as cgtaylor_cache)
    import comfy.nested_tensor
    import nodes
    from cgtaylor_cache.core.gate import relative_l1
    from cgtaylor_cache.core.taylor import TaylorForecaster
    from test_families_real import minimax_h3

    text_rows, frames, size, audio_frames = 64, 6, 12, 24  # video 6 x 36 rows, audio 48, keyframe 36, text 64
    parts = ("text", "keyframe", "audio", "video", "whole")
    gate: dict[str, list[float]] = {p: [] for p in parts}
    last_error: list[float] = []
    for seed in seeds:
        family = minimax_h3(keyframe=True)
        model = family.patcher.model.diffusion_model
        keyframe = {"latent": torch.randn(1, 24, 1, size, size, generator=torch.Generator().manual_seed(seed)),
                    "resolved_frame_index": 0}
        conditioning = [[torch.randn(1, text_rows, 48, generator=torch.Generator().manual_seed(100 + seed)),
                         {"minimax_keyframes": [keyframe], "minimax_frame_count": 4 * frames - 3}]]
        latent = comfy.nested_tensor.NestedTensor((torch.zeros(1, 24, frames, size, size),
                                                  torch.zeros(1, 32, 2, audio_frames)))
        seen: dict[str, list[torch.Tensor]] = {"first": [], "last": []}
        segments: list = []

        def block0(module, args, out) -> None:  # copies: the next block adds into `out` in place
            seen["first"].append(out.clone())
            segments.append(args[2])

        def last_block(module, args, out) -> None:
            seen["last"].append(out.clone())

        hooks = [model.blocks[0].register_forward_hook(block0), model.blocks[-1].register_forward_hook(last_block)]
        try:
            with torch.inference_mode():
                nodes.KSampler().sample(family.patcher, seed, steps, 1.0, "euler", "simple", conditioning,
                                        conditioning, {"samples": latent}, denoise=1.0)
        finally:
            for hook in hooks:
                hook.remove()
        (t0, t1, _), (c0, c1, _), (a0, a1, _), (v0, v1, _) = segments[0]
        rows = {"text": slice(t0, t1), "keyframe": slice(c0, c1), "audio": slice(a0, a1), "video": slice(v0, v1),
                "whole": slice(None)}
        output_rows = torch.cat([torch.arange(a0, a1), torch.arange(v0, v1)])
        first, last = TaylorForecaster(2), TaylorForecaster(2)
        for step, (b0, bl) in enumerate(zip(seen["first"], seen["last"])):
            if first.current_order == 2 and step < steps - 1:  # the last step is always full: not gated
                predicted, predicted_last = first.predict(step), last.predict(step)
                for part in parts:
                    gate[part].append(relative_l1([predicted[rows[part]]], [b0[rows[part]]]))
                last_error.append(relative_l1([predicted_last[output_rows]], [bl[output_rows]]))
            first.update(b0, step)
            last.update(bl, step)
    video, measured = gate["video"], {}
    for part in parts:
        values = gate[part]
        logs = [math.log(last / value) for last, value in zip(last_error, values) if last > 0 and value > 0]
        measured[part] = {"over_video": statistics.median(v / w for v, w in zip(values, video)),
                          "spearman": spearman(values, last_error), "log_ratio_spread": statistics.stdev(logs)}
    return {"seeds": len(seeds), "steps": steps, "gated_calls": len(last_error), "parts": measured}


# ----------------------------------------------------------------------------- Wan Animate 2


def animate2_block_equivalents() -> dict:
    import comfy.ops
    from comfy.ldm.wan.model_animate2 import PoseBranchCache, WanAnimate2Model
    from torch.utils.flop_counter import FlopCounterMode

    dtype = torch.bfloat16
    with torch.device("meta"):
        model = WanAnimate2Model(device="meta", dtype=dtype, operations=comfy.ops.disable_weight_init)
    blocks = len(model.blocks)
    frames, height, width = 21, 60, 104  # 81 frames at 480x832 in Wan's VAE latent
    x = torch.zeros(1, 36, 1 + frames, height, width, device="meta", dtype=dtype)  # + the reference frame's slot
    pose = torch.zeros(1, 16, frames, height, width, device="meta", dtype=dtype)
    context = torch.zeros(1, 512, 4096, device="meta", dtype=dtype)
    timestep = torch.zeros(1, device="meta")

    def passed_over(args, extra):  # what the node's patches do to blocks 1..L-1 on a forecast call
        return {"img": args["img"]}

    def flops(pose_latents, forecast: bool, cache=None) -> float:
        options = {"patches_replace": {"dit": {("double_block", i): passed_over for i in range(1, blocks)}}} if forecast else {}
        if cache is not None:
            options["animate2_cache"] = cache
        with FlopCounterMode(display=False) as counter:
            model(x, timestep, context, pose_latents=pose_latents, transformer_options=options)
        return float(counter.get_total_flops())

    class OneSlotCache(PoseBranchCache):
        """A slot is found by comparing pose latents' values, which meta tensors have none of; one pose
        video here, so one slot."""

        def select(self, pose_latents):
            if self.slots:
                self.slot = self.slots[-1]
            else:
                super().select(pose_latents)

    def filled_cache() -> PoseBranchCache:
        cache = OneSlotCache(store_device=torch.device("meta"))
        flops(pose, forecast=False, cache=cache)  # the first call of a run fills it
        return cache

    calls = {}
    for name, pose_latents, cache in (("none", None, None), ("pose branch every call", pose, None),
                                      ("WanAnimate2Cache filled", pose, filled_cache())):
        full = flops(pose_latents, False, cache)
        forecast = flops(pose_latents, True, cache)
        block = (full - forecast) / (blocks - 1)
        calls[name] = {"full": full / block, "forecast": forecast / block, "saved": 1 - forecast / full}
    return {"blocks": blocks, "pose": calls}


if __name__ == "__main__":
    boot_comfyui()
    torch.manual_seed(0)
    results = {"minimax_h3_gate": minimax_gate_rows(), "wan_animate2_block_equivalents": animate2_block_equivalents()}
    out = ROOT / "bench" / "results" / "families.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1), f"\nwrote {out}; `python -m bench.report` renders it into the README")
