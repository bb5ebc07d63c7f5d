"""Where a stream's cached states rest: on the model's device, or in host memory.

At video sizes the last block's Taylor cache is the big one (Wan 14B at 1280x720x81: 774 MB per
state in bf16, three states per stream at order 2), so it may rest in host memory while block 0's
(small, see core/subset.py) stays on the device, where every call reads it.

Every read and write of a cached term goes through a store, one slice of ``SLICE_VALUES`` values
at a time, and all arithmetic runs on the device the features come from. So

* the device holds at most one slice of working buffers beside the cache, wherever it lives
  (the arithmetic dtype's slice plus two slices of the state's dtype, see ``working_bytes``);
* an offloaded forecast moves only the terms it uses, slice by slice; an offloaded update moves
  the terms the divided differences read in and the new terms out, nothing else;
* the result is bit-identical wherever the terms rest: the same elementwise operations run on
  the same device in the same order, and a copy is exact.

Copies are blocking (``non_blocking=False``): ``Tensor.to`` and ``copy_`` across devices return
only once the data has arrived, after the work that produced it (the copy runs on the current
stream, behind it). No pinned buffer is read or written while a copy may still be in flight, so
the code needs no synchronisation it does not make.
"""

from __future__ import annotations

import torch

PLACEMENTS = ("auto", "gpu", "cpu")
# Values per slice: 64 MiB of float32 working buffer, so a Wan 14B 720p state (387M values) takes
# 24 slices and the working buffers stay at 128 MiB whatever the state's size.
SLICE_VALUES = 2**24


def arithmetic_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision features are extrapolated in float32 and stored back in their dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def working_bytes(dtype: torch.dtype, numel: int) -> int:
    """Device memory the store's slice-wise arithmetic holds at once for states of ``numel`` values: one
    slice in the arithmetic dtype, one term read into the state's dtype, one converted for writing."""
    values = min(numel, SLICE_VALUES)
    return values * (arithmetic_dtype(dtype).itemsize + 2 * dtype.itemsize)


def slices(numel: int) -> list[slice]:
    return [slice(start, min(start + SLICE_VALUES, numel)) for start in range(0, numel, SLICE_VALUES)] or [slice(0, 0)]


class TransferMeter:
    """Bytes copied between the host and the device, by direction."""

    def __init__(self) -> None:
        self.to_device = 0
        self.to_host = 0

    @property
    def total(self) -> int:
        return self.to_device + self.to_host


class DeviceStore:
    """Terms rest on the device they are computed on: reads are views, writes copy in place."""

    offloaded = False

    def allocate(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=device)

    def read(self, term: torch.Tensor, part: slice, device: torch.device) -> torch.Tensor:
        return term.view(-1)[part]

    def write(self, term: torch.Tensor, part: slice, values: torch.Tensor) -> None:
        term.view(-1)[part].copy_(values)

    def follow(self, terms: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        """The terms where the stream's calls now run (multi-GPU work units may move a stream)."""
        return [term.to(device) for term in terms]


class HostStore:
    """Terms rest on ``host`` (ComfyUI's offload device, normally the CPU); every read and write is a
    counted, blocking copy of one slice, so a test sees the offload path taken even where the host and
    the device are the same CPU."""

    offloaded = True

    def __init__(self, host: torch.device, meter: TransferMeter) -> None:
        self.host = torch.device(host)
        self.meter = meter

    def allocate(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.host)

    def read(self, term: torch.Tensor, part: slice, device: torch.device) -> torch.Tensor:
        values = term.view(-1)[part].to(device, copy=True)  # blocking: the values are there on return
        self.meter.to_device += values.numel() * values.element_size()
        return values

    def write(self, term: torch.Tensor, part: slice, values: torch.Tensor) -> None:
        target = term.view(-1)[part]
        target.copy_(values)  # blocking: waits for the kernels that computed ``values``, then copies
        self.meter.to_host += target.numel() * target.element_size()

    def follow(self, terms: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        return terms  # host memory serves every device


Store = DeviceStore | HostStore


class Placement:
    """Chooses, once per stream, where its last block's cache rests.

    ``choice``: ``gpu`` keeps every cache on the model's device; ``cpu`` keeps the last block's on
    ``host``; ``auto`` keeps a stream's on the device while the bounds placed there so far, this one's
    included, fit in ``budget`` bytes, and on ``host`` otherwise. Without a ``host`` (no offload
    device distinct from the model's) or a ``budget`` (nobody measured free memory), ``auto`` keeps
    everything on the device, as before offloading existed. The node sets both once ComfyUI has
    loaded the model (nodes/planner.py).
    """

    def __init__(self, choice: str = "auto", host: torch.device | None = None, budget: int | None = None) -> None:
        if choice not in PLACEMENTS:
            raise ValueError(f"cache_device must be one of {PLACEMENTS}, got {choice!r}.")
        self.choice = choice
        self.host = host
        self.budget = budget
        self.meter = TransferMeter()
        self._on_device = 0  # bytes of last-block bounds placed on the device so far

    def configure(self, host: torch.device | None, budget: int | None) -> None:
        self.host = None if host is None else torch.device(host)
        self.budget = budget

    def store_for(self, bound: int) -> Store:
        """The store of a stream whose last-block cache will hold up to ``bound`` bytes."""
        if self.choice == "cpu":
            return HostStore(self.host or torch.device("cpu"), self.meter)
        if self.choice == "auto" and self.host is not None and self.budget is not None:
            if self._on_device + bound > self.budget:
                return HostStore(self.host, self.meter)
        self._on_device += bound
        return DeviceStore()
