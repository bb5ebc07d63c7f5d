"""The gate's view of block 0: a fixed random subset of its tokens, chosen once per stream.

The gate compares block 0's output with its Taylor forecast through one number, a relative L1
error: a mean over the whole state. A mean is estimated well from a sample, so block 0's cache
and the gate need not hold every token. Keeping ``share`` of them (at least ``minimum``, never
more than there are) divides block 0's cache by about ``1 / share``: for Wan 14B at
1280x720x81 frames, 1/16 of 75,600 tokens keeps 4,725 of them, 48 MB per state instead of 774 MB.

The tokens are drawn at random (seeded, so a run is reproducible) rather than on a stride: a
stride through a row-major image or video picks the same columns in every row. The subset is
drawn again only if the number of tokens changes.
"""

from __future__ import annotations

import math

import torch


def sampled_tokens(tokens: int, share: float, minimum: int, maximum: int | None = None) -> int:
    """How many of ``tokens`` the gate looks at."""
    kept = min(tokens, max(minimum, math.ceil(share * tokens)))
    return kept if maximum is None else min(kept, max(maximum, minimum))


class TokenSubset:
    """Selects the same tokens (axis 1 of a ``[batch, tokens, ...]`` state) on every call."""

    def __init__(self, share: float, minimum: int, seed: int = 0, maximum: int | None = None) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the gate's token share must be in (0, 1], got {share!r}.")
        self.share = share
        self.minimum = minimum
        self.maximum = maximum
        self.seed = seed
        self._index: torch.Tensor | None = None
        self._tokens: int | None = None

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        """The sampled tokens of ``state``; ``state`` itself when the sample is every token."""
        index = self.index(state.shape[1], state.device)
        return state if index is None else state.index_select(1, index)

    def index(self, tokens: int, device: torch.device) -> torch.Tensor | None:
        """The sampled token indices of a state of ``tokens`` tokens (None: every token)."""
        kept = sampled_tokens(tokens, self.share, self.minimum, self.maximum)
        if kept == tokens:
            return None
        if self._tokens != tokens:
            generator = torch.Generator().manual_seed(self.seed)
            self._index = torch.randperm(tokens, generator=generator)[:kept].sort().values
            self._tokens = tokens
        if self._index.device != torch.device(device):
            self._index = self._index.to(device)
        return self._index
