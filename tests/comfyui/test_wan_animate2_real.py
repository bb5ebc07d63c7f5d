"""The node on ComfyUI's own Wan Animate 2 (``WanAnimate2Model``, v0.33.0), with and without pose latents.

Skipped unless $COMFYUI_PATH points at a ComfyUI checkout (see conftest.py) that has the class.
Wan Animate 2 is a ``WanModel`` and runs its generation blocks through the same block patches,
but it calls ``block.forward_gen`` / ``block.forward_pose`` rather than the blocks themselves
(comfy/ldm/wan/model_animate2.py:356-380), so block hooks never fire: what ran is counted on each
block's feed-forward, whose token count tells the generation branch (the reference frame and the
video) from the pose branch (the pose video, one frame fewer). The pose branch runs in every block
whether the block is patched or not (:366-370), unless WanAnimate2Cache's pose cache is filled,
after which each block only projects the cached input to K/V (:361-365).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from conftest import TINY_WAN21_T2V, as_model_patcher, build_model
from test_families_real import EVERY_CALL, has, same
from test_real_comfyui import SEED, STEPS, apply_node, node_class

pytestmark = pytest.mark.comfyui

CFG = 4.0
FRAMES = 2  # pose video latent frames; the generation branch has one more, the reference image's slot
SIZE = 4  # latent height and width: 2x2 tokens per frame after the 1x2x2 patch
TOKENS_PER_FRAME = (SIZE // 2) ** 2
GEN_TOKENS, POSE_TOKENS = (FRAMES + 1) * TOKENS_PER_FRAME, FRAMES * TOKENS_PER_FRAME
# model_type "animate2" is the I2V layout: 16 latent + 4 mask + 16 image channels in.
TINY_ANIMATE2 = {**TINY_WAN21_T2V, "model_type": "animate2", "in_dim": 36}


@dataclass
class Animate2:
    patcher: Any
    num_blocks: int
    pose: torch.Tensor

    def conditioning(self, seed: int, with_pose: bool) -> list:
        extra = {"pose_video_latent": self.pose} if with_pose else {}  # what WanAnimate2ToVideo sets
        return [[torch.randn(1, 8, 4096, generator=torch.Generator().manual_seed(seed)), extra]]

    def sample(self, comfyui: Any, model: Any, with_pose: bool) -> torch.Tensor:
        with torch.inference_mode():
            (out,) = comfyui.nodes.KSampler().sample(
                model, SEED, STEPS, CFG, "euler", "simple", self.conditioning(91, with_pose),
                self.conditioning(92, with_pose), {"samples": torch.zeros(1, 16, 1 + FRAMES, SIZE, SIZE)}, denoise=1.0,
            )
        return out["samples"].clone()


@pytest.fixture(scope="module")
def animate2(comfyui: Any) -> Animate2:
    if not has("comfy.supported_models", "WAN_Animate2"):
        pytest.skip("no Wan Animate 2 in this ComfyUI release")
    import comfy.supported_models

    model = build_model(comfy.supported_models.WAN_Animate2, TINY_ANIMATE2, seed=3007)
    pose = torch.randn(1, 16, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(93))
    return Animate2(as_model_patcher(model), TINY_ANIMATE2["num_layers"], pose)


@pytest.fixture(params=[False, True], ids=["no-pose", "pose"])
def with_pose(request: pytest.FixtureRequest) -> bool:
    return request.param


class BranchCounter:
    """Per model call, how many generation and pose blocks ran (their feed-forwards, told apart by
    token count); the head ends each call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.events: list[str] = []
        self.handles = [block.ffn.register_forward_hook(self._ffn) for block in model.blocks]
        self.handles.append(model.head.register_forward_hook(lambda module, args, output: self.events.append("head")))

    def _ffn(self, module: Any, args: tuple, output: Any) -> None:
        tokens = args[0].shape[1]
        assert tokens in (GEN_TOKENS, POSE_TOKENS), tokens
        self.events.append("gen" if tokens == GEN_TOKENS else "pose")

    def calls(self) -> list[tuple[int, int]]:
        """(generation blocks, pose blocks) run by each model call, in order."""
        out, gen, pose = [], 0, 0
        for event in self.events:
            if event == "head":
                out.append((gen, pose))
                gen = pose = 0
            else:
                gen, pose = gen + (event == "gen"), pose + (event == "pose")
        return out

    def __enter__(self) -> BranchCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def pose_cached(patcher: Any) -> Iterator[Any]:
    """The model as WanAnimate2Cache returns it (comfy_extras/nodes_wan.py:1405-1411): a clone whose
    transformer_options hold a fresh PoseBranchCache, in RAM; freed afterwards. A cache outlives a
    sampling run (it is keyed on the pose latents), so each run gets its own here."""
    from comfy.ldm.wan.model_animate2 import PoseBranchCache

    cache = PoseBranchCache(store_device=torch.device("cpu"))
    clone = patcher.clone()
    clone.model_options["transformer_options"]["animate2_cache"] = cache
    try:
        yield clone
    finally:
        cache.free()


def stats_after(comfyui: Any, first_event: int) -> dict:
    (event,) = [e for e in comfyui.events[first_event:] if e.event == "cgtaylor.stats"]
    return event.data


def test_wan_animate2_is_detected_as_wan_with_every_block(comfyui: Any, animate2: Animate2) -> None:
    detect = sys.modules[node_class(comfyui).__module__].detect
    layout = detect(animate2.patcher.model.diffusion_model)
    assert layout.family == "Wan" and layout.model_class == "WanAnimate2Model"
    assert list(layout.keys) == [("double_block", i) for i in range(animate2.num_blocks)]


def test_tolerance_zero_is_bit_identical(comfyui: Any, animate2: Animate2, with_pose: bool) -> None:
    baseline = animate2.sample(comfyui, animate2.patcher, with_pose)
    patched = apply_node(node_class(comfyui), animate2.patcher, "animate2-zero", tolerance=0.0)
    assert same([animate2.sample(comfyui, patched, with_pose)], [baseline])


def test_forecast_calls_run_generation_block_zero_only_and_the_pose_branch_in_every_block(
        comfyui: Any, animate2: Animate2, with_pose: bool) -> None:
    baseline = animate2.sample(comfyui, animate2.patcher, with_pose)
    patched = apply_node(node_class(comfyui), animate2.patcher, "animate2-huge", **EVERY_CALL)
    first_event = len(comfyui.events)
    with BranchCounter(animate2.patcher.model.diffusion_model) as counter:
        out = animate2.sample(comfyui, patched, with_pose)
    calls = counter.calls()
    blocks = animate2.num_blocks
    forecast = [gen for gen, _ in calls if gen == 1]
    assert forecast and all(gen in (1, blocks) for gen, _ in calls), calls
    assert {pose for _, pose in calls} == {blocks if with_pose else 0}, calls  # skipped or not, the pose branch ran
    assert torch.isfinite(out).all() and not torch.equal(out, baseline)
    payload = stats_after(comfyui, first_event)
    assert payload["model"] == "Wan"
    assert payload["totals"]["calls"] == len(calls) and payload["totals"]["forecast"] == len(forecast)
    assert not [note for note in payload["notes"] if "computed in full" in note], payload["notes"]


def test_with_the_pose_cache_filled_a_forecast_call_runs_block_zero_and_k_v_projections_only(
        comfyui: Any, animate2: Animate2) -> None:
    node = node_class(comfyui)
    with pose_cached(animate2.patcher) as model:
        baseline = animate2.sample(comfyui, model, with_pose=True)
    with pose_cached(animate2.patcher) as model:
        assert same([animate2.sample(comfyui, apply_node(node, model, "animate2-cache-zero", tolerance=0.0),
                                     with_pose=True)], [baseline])
    with pose_cached(animate2.patcher) as model, BranchCounter(animate2.patcher.model.diffusion_model) as counter:
        out = animate2.sample(comfyui, apply_node(node, model, "animate2-cache-huge", **EVERY_CALL),
                              with_pose=True)
    calls = counter.calls()
    assert [pose for _, pose in calls] == [animate2.num_blocks] + [0] * (len(calls) - 1), calls  # filled by call 1
    assert [gen for gen, _ in calls].count(1) > 0 and torch.isfinite(out).all() and not torch.equal(out, baseline)
