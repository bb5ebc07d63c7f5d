"""The two ComfyUI block protocols the CI tier follows: v0.3.64 (October 2025) and v0.30.0 (August 2026).

The tiny models and the patcher stand-in take one of these and behave like that release,
so every node test can run against both without a real ComfyUI. v0.33.0 (2f35f4a0, August 2026)
follows v0.30.0's: comfy/ldm/flux/model.py, comfy/patcher_extension.py and comfy/utils.py are
unchanged, model_patcher.py's clone is too (:453), and Wan's loop only moved 9 lines down (block
positions :606-609, post-block patches :620-623) when its feed-forward became its own class.
After v0.33.0 (read, not run: docs/comfyui-versions.md) Wan's ``forward_orig`` is v0.33.0's line for
line at v0.38.0 (zhongzichang/ComfyUI caa09649), and Flux's blocks keep their arguments and in-place
updates (comfy/ldm/flux/layers.py at v0.36.0, zoidypuh/ComfyUI 4441d221): no third protocol.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    # Block loops write block_type / block_index / total_blocks into transformer_options
    # (comfy/ldm/flux/model.py:217-220, 272-276; comfy/ldm/wan/model.py:597-600 at v0.30.0).
    reports_block_positions: bool
    # Flux copies transformer_options at the top of forward_orig (comfy/ldm/flux/model.py:162).
    flux_copies_options: bool
    # Wan runs transformer_options["patches"]["double_block"] after every block, skipped or not
    # (comfy/ldm/wan/model.py:612-615).
    wan_post_block_patches: bool
    # ModelPatcher.clone() shares non-container objects (comfy/model_patcher.py:453).
    clone_shares_objects: bool

    def __str__(self) -> str:
        return self.name


LEGACY = Protocol("v0.3.64", False, False, False, False)
CURRENT = Protocol("v0.30.0", True, True, True, True)
PROTOCOLS = (LEGACY, CURRENT)
