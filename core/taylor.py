"""Polynomial extrapolation of one feature tensor from the steps where it was computed.

TaylorSeer and CG-Taylor keep a feature and its finite-difference derivatives at the
latest fully computed step and extrapolate with ``sum D_i (x - a)^i / i!``. Their
derivative recursion divides by the latest gap only, so with uneven gaps between
refreshes (the normal case once a gate decides when to refresh) the second and higher
terms are wrong. This forecaster keeps Newton's backward divided differences instead,
which are the exact coefficients of the polynomial through the stored points: the
forecast is exact for any feature that is a polynomial of degree <= order in the
position, whatever the gaps. For order 0 and 1 the two forms are the same.
"""

from __future__ import annotations

import torch

# Two positions closer than this are treated as the same point (a duplicate refresh).
SAME_POSITION = 1e-9


def _arithmetic_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision features are extrapolated in float32 and stored back in their dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_order(order: object) -> int:
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= 4:
        raise ValueError(f"Taylor order must be an integer from 0 to 4, got {order!r}.")
    return order


class TaylorForecaster:
    """Value and divided differences of one tensor, refreshed at computed steps only.

    Holds at most ``order + 1`` tensors of the feature's shape. Positions are whatever
    the caller measures distance in (step index, or sigma). A second feature at the newest
    position replaces the first one there (see ``update``).
    """

    def __init__(self, order: int) -> None:
        self.order = check_order(order)
        self._terms: list[torch.Tensor] = []  # [f[x_m], f[x_m-1, x_m], f[x_m-2, x_m-1, x_m], ...]
        self._positions: list[float] = []  # [x_m, x_m-1, ...], newest first

    @property
    def ready(self) -> bool:
        return bool(self._terms)

    @property
    def current_order(self) -> int:
        """Order of the polynomial a forecast uses now: it ramps up as refreshes arrive."""
        return len(self._terms) - 1

    @property
    def anchor(self) -> float | None:
        """Position of the latest refresh."""
        return self._positions[0] if self._positions else None

    @property
    def signature(self) -> tuple | None:
        """Shape, dtype and device of the stored feature (None when empty)."""
        if not self._terms:
            return None
        head = self._terms[0]
        return (tuple(head.shape), head.dtype, head.device)

    def tensors(self) -> list[torch.Tensor]:
        return list(self._terms)

    @torch.no_grad()
    def update(self, feature: torch.Tensor, position: float) -> bool:
        """Refresh with a computed feature. Returns False (and keeps the cache) for a position
        older than the newest one.

        At the newest position the feature replaces the one stored there: predictor-corrector
        samplers (heun, dpmpp_2s) evaluate a second, different x at a sigma they have just
        visited (heun's step i evaluates its predictor at sigma i+1, then step i+1 starts there
        with the corrected x), and the trajectory continues with the later evaluation. Features
        are copied: callers' tensors may be modified in place afterwards. A feature of another
        shape, dtype or device starts the cache afresh.
        """
        position = float(position)
        if self._terms and self.signature != (tuple(feature.shape), feature.dtype, feature.device):
            self.reset()
        if self._positions and abs(position - self._positions[0]) <= SAME_POSITION:
            self._replace_newest(feature)
            return True
        if any(abs(position - known) <= SAME_POSITION for known in self._positions):
            return False
        work = _arithmetic_dtype(feature.dtype)
        new_terms = [feature.detach().clone()]
        carried = feature.detach().to(work)
        for i in range(min(len(self._terms), self.order)):
            gap = position - self._positions[i]
            carried = (carried - self._terms[i].to(work)) / gap
            new_terms.append(carried.to(feature.dtype))
        self._terms = new_terms
        self._positions = [position, *self._positions][: self.order + 1]
        return True

    def _replace_newest(self, feature: torch.Tensor) -> None:
        """Swap the value at the newest position, as if the old one had never been stored.

        Each divided difference through the newest point is linear in its value:
        f[x_m-k, ..., x_m] changes by delta / prod_{j=1..k} (x_m - x_m-j) when f(x_m) changes
        by delta, so every term is corrected in place of a recomputation from older points
        (which the cache no longer holds once it is at full order).
        """
        work = _arithmetic_dtype(feature.dtype)
        delta = feature.detach().to(work) - self._terms[0].to(work)
        terms = [feature.detach().clone()]
        for i in range(1, len(self._terms)):
            delta = delta / (self._positions[0] - self._positions[i])
            terms.append((self._terms[i].to(work) + delta).to(feature.dtype))
        self._terms = terms

    @torch.no_grad()
    def predict(self, position: float, order: int | None = None) -> torch.Tensor:
        """Extrapolate to ``position``; always a new tensor, never a stored one. ``order`` below the
        current one uses the polynomial through the newest ``order + 1`` refreshes only (0: the
        newest value as it is)."""
        if not self._terms:
            raise RuntimeError("TaylorForecaster.predict called before any update.")
        terms = self._terms if order is None else self._terms[: order + 1]
        position = float(position)
        dtype = terms[0].dtype
        work = _arithmetic_dtype(dtype)
        # Horner form of D0 + D1 (x - x_m) + D2 (x - x_m)(x - x_m-1) + ...
        acc = terms[-1].to(work, copy=True)
        for i in range(len(terms) - 2, -1, -1):
            acc.mul_(position - self._positions[i]).add_(terms[i].to(work))
        return acc.to(dtype)

    @torch.no_grad()
    def progress(self, feature: torch.Tensor) -> float | None:
        """How far past the latest refresh ``feature`` lies along the cached trend: the offset ``s``
        that brings the linear part ``D0 + s D1`` closest to it (least squares), so whatever moved
        across the trend (a sampler's fresh noise) does not count. None without a trend (fewer
        than two refreshes) or when the trend is flat."""
        if len(self._terms) < 2:
            return None
        work = _arithmetic_dtype(self._terms[0].dtype)
        slope = self._terms[1].to(work)
        norm = float((slope * slope).sum())
        if not 0.0 < norm < float("inf"):
            return None
        offset = float(((feature.to(work) - self._terms[0].to(work)) * slope).sum()) / norm
        return offset if abs(offset) < float("inf") else None

    def to(self, device: torch.device) -> None:
        """Move the stored terms, e.g. when the stream's calls now run on another GPU."""
        self._terms = [term.to(device) for term in self._terms]

    def reset(self) -> None:
        self._terms = []
        self._positions = []
