"""Polynomial extrapolation of one feature tensor from the steps where it was computed.

TaylorSeer and CG-Taylor keep a feature and its finite-difference derivatives at the
latest fully computed step and extrapolate with ``sum D_i (x - a)^i / i!``. Their
derivative recursion divides by the latest gap only, so with uneven gaps between
refreshes (the normal case once a gate decides when to refresh) the second and higher
terms are wrong. This forecaster keeps Newton's backward divided differences instead,
which are the exact coefficients of the polynomial through the stored points: the
forecast is exact for any feature that is a polynomial of degree <= order in the
position, whatever the gaps. For order 0 and 1 the two forms are the same.

The terms rest in a store (core/placement.py): on the features' device, or in host memory.
Either way the arithmetic runs on the features' device one slice at a time, and an update
rewrites the terms in place, so the cache never holds more than ``order + 1`` tensors, not even
for a moment, and where the terms rest changes no bit of a forecast. A term read in another
dtype is converted explicitly (``.to``) before it meets the float32 arithmetic: mixed-dtype
operations make hidden float32 copies on some devices (the CPU) and none on others (CUDA), and
explicit copies keep the working set the same everywhere (core/placement.py ``working_bytes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .placement import DeviceStore, Store, arithmetic_dtype, slices

# Two positions closer than this are treated as the same point (a duplicate refresh).
SAME_POSITION = 1e-9


@dataclass
class Miss:
    """How far a forecast lands from a computed tensor, per image (axis 0). ``offset`` is added to the
    forecast in its dtype (a residual forecast adds block 0's output back); ``sums`` is
    ``(sum|forecast - actual|, sum|actual|)`` per image as float32 vectors on the device once measured."""

    actual: torch.Tensor
    position: float
    order: int | None = None
    offset: torch.Tensor | None = None
    sums: tuple[torch.Tensor, torch.Tensor] | None = None


def check_order(order: object) -> int:
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= 4:
        raise ValueError(f"Taylor order must be an integer from 0 to 4, got {order!r}.")
    return order


class TaylorForecaster:
    """Value and divided differences of one tensor, refreshed at computed steps only.

    Holds at most ``order + 1`` tensors of the feature's shape. Positions are whatever
    the caller measures distance in (step index, or sigma). A second feature at the newest
    position replaces the first one there (see ``update``).

    ``place`` picks the store for the first feature the cache takes (called with it); without
    it the terms rest on the features' device.
    """

    def __init__(self, order: int, place: Callable[[torch.Tensor], Store] | None = None) -> None:
        self.order = check_order(order)
        self._place = place
        self.store: Store | None = None
        self._terms: list[torch.Tensor] = []  # [f[x_m], f[x_m-1, x_m], f[x_m-2, x_m-1, x_m], ...]
        self._positions: list[float] = []  # [x_m, x_m-1, ...], newest first
        self._signature: tuple | None = None  # shape, dtype and device of the features

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
        """Shape, dtype and device of the features the cache was fed (None when empty); the terms
        themselves may rest elsewhere."""
        return self._signature if self._terms else None

    @property
    def device(self) -> torch.device | None:
        """Where the features come from and the forecasts go (None when empty)."""
        return self._signature[2] if self._terms else None

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
        signature = (tuple(feature.shape), feature.dtype, feature.device)
        if self._terms and self._signature != signature:
            self.reset()
        if self._positions and abs(position - self._positions[0]) <= SAME_POSITION:
            self._replace_newest(feature)
            return True
        if any(abs(position - known) <= SAME_POSITION for known in self._positions):
            return False
        store = self._store_for(feature)
        self._signature = signature
        flat = feature.detach().reshape(-1)
        gaps = [position - known for known in self._positions[: self.order]]
        # The oldest term drops out of a full cache: its tensor takes the new value. Each older
        # term is read before the next divided difference overwrites it (new term k + 1 goes where
        # old term k was), so the update needs no second set of tensors.
        full = len(self._terms) == self.order + 1
        newest = self._terms[-1] if full else store.allocate(feature.shape, feature.dtype, feature.device)
        work = arithmetic_dtype(feature.dtype)
        for part in slices(flat.numel()):
            carried = flat[part].to(work, copy=True)
            store.write(newest, part, flat[part])
            for term, gap in zip(self._terms, gaps):
                previous = store.read(term, part, feature.device)
                carried.sub_(previous.to(work)).div_(gap)
                del previous
                store.write(term, part, carried)
            del carried  # before the next slice's: one slice's buffers at a time
        kept = self._terms[: len(gaps)]
        self._terms = [newest, *kept]
        self._positions = [position, *self._positions][: self.order + 1]
        return True

    def _store_for(self, feature: torch.Tensor) -> Store:
        if self.store is None:
            self.store = self._place(feature) if self._place is not None else DeviceStore()
        return self.store

    def _replace_newest(self, feature: torch.Tensor) -> None:
        """Swap the value at the newest position, as if the old one had never been stored.

        Each divided difference through the newest point is linear in its value:
        f[x_m-k, ..., x_m] changes by delta / prod_{j=1..k} (x_m - x_m-j) when f(x_m) changes
        by delta, so every term is corrected in place of a recomputation from older points
        (which the cache no longer holds once it is at full order).
        """
        store, device = self.store, feature.device
        flat = feature.detach().reshape(-1)
        work = arithmetic_dtype(feature.dtype)
        for part in slices(flat.numel()):
            delta = flat[part].to(work, copy=True)
            delta.sub_(store.read(self._terms[0], part, device).to(work))
            store.write(self._terms[0], part, flat[part])
            for i in range(1, len(self._terms)):
                delta.div_(self._positions[0] - self._positions[i])
                corrected = store.read(self._terms[i], part, device).to(work, copy=True)
                store.write(self._terms[i], part, corrected.add_(delta))
                del corrected
            del delta

    @torch.no_grad()
    def predict(self, position: float, order: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Extrapolate to ``position``; always a new tensor, never a stored one. ``order`` below the
        current one uses the polynomial through the newest ``order + 1`` refreshes only (0: the
        newest value as it is). ``out``: a tensor of the feature's shape and dtype to write into
        (a stream's part of a batch), which is returned."""
        shape, dtype, device = self._check_predictable()
        parts = slices(math.prod(shape))
        if out is None and len(parts) > 1:
            out = torch.empty(shape, dtype=dtype, device=device)
        for part in parts:
            acc = self._forecast_part(part, float(position), order)
            if out is None:
                return acc.to(dtype).view(shape)
            out.view(-1)[part].copy_(acc)
            del acc  # before the next slice's: one slice's buffers at a time
        return out

    @torch.no_grad()
    def miss(self, actual: torch.Tensor, position: float, order: int | None = None,
             offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum|forecast - actual|`` and ``sum|actual|`` per image (axis 0) as float32 vectors on the device,
        with the forecast (``offset`` added to it in its dtype, as a residual forecast adds block 0's output)
        built one slice at a time: measuring a forecast takes no forecast-sized tensor, and no float32 copy
        of the state. The same values as ``predict`` and a comparison of whole tensors."""
        shape, _, _ = self._check_predictable()
        if tuple(actual.shape) != shape:
            raise ValueError(f"prediction shape {shape} does not match output shape {tuple(actual.shape)}.")
        measured = Miss(actual, position, order, offset)
        for part in slices(actual.numel()):
            self._measure_part(measured, part)
        return measured.sums

    @torch.no_grad()
    def predict_rows(self, rows: torch.Tensor, position: float, order: int | None = None) -> torch.Tensor:
        """The float32 forecast of the rows ``rows`` of axis 1 only (``[images, len(rows), ...]``): the terms
        are read at those rows and nowhere else, so a forecast measured at a sample of tokens moves and holds
        only that sample, wherever the terms rest."""
        _, dtype, device = self._check_predictable()
        terms = self._terms if order is None else self._terms[: order + 1]
        work = arithmetic_dtype(dtype)
        acc = None
        for i in range(len(terms) - 1, -1, -1):
            values = self.store.rows(terms[i], rows, device)
            acc = values.to(work, copy=True) if acc is None else acc.mul_(position - self._positions[i]).add_(values.to(work))
            del values
        return acc.float()

    def _check_predictable(self) -> tuple:
        if not self._terms:
            raise RuntimeError("TaylorForecaster.predict called before any update.")
        return self._signature

    def _forecast_part(self, part: slice, position: float, order: int | None) -> torch.Tensor:
        """One slice of the forecast, in the arithmetic dtype: Horner's form of
        D0 + D1 (x - x_m) + D2 (x - x_m)(x - x_m-1) + ... over the terms ``order`` uses."""
        terms = self._terms if order is None else self._terms[: order + 1]
        device, work = self._signature[2], arithmetic_dtype(self._signature[1])
        acc = None
        for i in range(len(terms) - 1, -1, -1):
            values = self.store.read(terms[i], part, device)
            if acc is None:
                acc = values.to(work, copy=True)
            else:
                acc.mul_(position - self._positions[i]).add_(values.to(work))
            del values
        return acc

    def _measure_part(self, miss: Miss, part: slice) -> None:
        """Add one slice's float32 ``sum|forecast - actual|`` and ``sum|actual|`` per image to ``miss.sums``,
        in place on the forecast's float32 slice (no float32 copy of the state)."""
        acc = self._forecast_part(part, float(miss.position), miss.order)
        forecast = acc.to(self._signature[1])  # as predict gives it (acc itself when already in that dtype)
        if miss.offset is not None:
            forecast.add_(miss.offset.reshape(-1)[part])
        difference = acc if acc.dtype == torch.float32 else torch.empty_like(acc, dtype=torch.float32)
        if forecast is not difference:
            difference.copy_(forecast)
        del forecast, acc
        images = miss.actual.shape[0]
        if miss.sums is None:
            miss.sums = tuple(torch.zeros(images, dtype=torch.float32, device=difference.device) for _ in range(2))
        missed, size = miss.sums
        actual = miss.actual.reshape(-1)[part]
        difference.sub_(actual.float()).abs_()
        _add_by_image(missed, difference, part, miss.actual.numel() // max(images, 1))
        _add_by_image(size, difference.copy_(actual).abs_(), part, miss.actual.numel() // max(images, 1))

    @torch.no_grad()
    def progress(self, feature: torch.Tensor) -> float | None:
        """How far past the latest refresh ``feature`` lies along the cached trend: the offset ``s``
        that brings the linear part ``D0 + s D1`` closest to it (least squares), so whatever moved
        across the trend (a sampler's fresh noise) does not count. None without a trend (fewer
        than two refreshes) or when the trend is flat."""
        if len(self._terms) < 2:
            return None
        work = arithmetic_dtype(self._terms[0].dtype)
        flat = feature.reshape(-1)
        norm, along = 0.0, 0.0
        for part in slices(flat.numel()):
            slope = self.store.read(self._terms[1], part, feature.device).to(work, copy=True)
            norm += float((slope * slope).sum())
            moved = self.store.read(self._terms[0], part, feature.device).to(work, copy=True)
            torch.sub(flat[part].to(work), moved, out=moved)  # feature - D0, written over D0's copy
            along += float((moved * slope).sum())
            del slope, moved
        if not 0.0 < norm < float("inf"):
            return None
        offset = along / norm
        return offset if abs(offset) < float("inf") else None

    def to(self, device: torch.device) -> None:
        """Follow the stream's calls to another device (multi-GPU work units): terms on the old
        device move along, terms in host memory stay there."""
        if self._terms:
            self._terms = self.store.follow(self._terms, torch.device(device))
            shape, dtype, _ = self._signature
            self._signature = (shape, dtype, torch.device(device))

    def reset(self) -> None:
        """Forget every term; the store chosen for this cache stays (where it rests does not change mid-run)."""
        self._terms = []
        self._positions = []
        self._signature = None


def _add_by_image(totals: torch.Tensor, values: torch.Tensor, part: slice, per_image: int) -> None:
    """Add the sums of a flat slice ``values`` (the positions ``part`` of a batch of images of
    ``per_image`` values each) to each image's total: a slice may hold many small images or a piece of
    one large image."""
    start = part.start
    while start < part.stop:
        image = start // per_image if per_image else 0
        stop = min(part.stop, (image + 1) * per_image) if per_image else part.stop
        totals[image] += values[start - part.start : stop - part.start].sum()
        start = stop
