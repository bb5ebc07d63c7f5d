"""Where a stream's cached states rest: on the model's device, or in host memory.

At video sizes the last block's Taylor cache is the big one (Wan 14B at 1280x720x81: 774 MB per
state in bf16, three states per stream at order 2), so it may rest in host memory while block 0's
(small, see core/subset.py) stays on the device, where every call reads it.

Every read and write of a cached term goes through a store, one slice of ``SLICE_VALUES`` values
at a time, and all arithmetic runs on the device the features come from. So

* the device holds at most one slice's working buffers beside the cache, wherever it lives
  (a few slices of the arithmetic and the state's dtype, see ``working_bytes``);
* an offloaded forecast moves only the terms it uses, slice by slice; an offloaded update moves
  the terms the divided differences read in and the new terms out, nothing else; a judged full
  call measures the forecast it did not use at a sample of tokens, and moves only those rows;
  every byte crosses in the state's dtype, converted on the device;
* the result is bit-identical wherever the terms rest: the same elementwise operations run on
  the same device in the same order, and a copy is exact.

Copies are blocking (``non_blocking=False``): ``Tensor.to`` and ``copy_`` across devices return
only once the data has arrived, after the work that produced it (the copy runs on the current
stream, behind it). No pinned buffer is read or written while a copy may still be in flight, so
the code needs no synchronisation it does not make.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

PLACEMENTS = ("auto", "gpu", "cpu")
# Values per slice: 64 MiB of float32, so a Wan 14B 720p state (387M values) takes 24 slices and
# the working buffers stay at 192 MiB (bf16 states, order 2) whatever the state's size.
SLICE_VALUES = 2**24


def arithmetic_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision features are extrapolated in float32 and stored back in their dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def working_bytes(dtype: torch.dtype, numel: int, order: int) -> int:
    """Device memory the slice-wise arithmetic of a cache of ``order`` holds at once, for states of
    ``numel`` values in ``dtype``: ``a`` bytes per value of the arithmetic dtype, ``s`` of the state's,
    ``c`` for a term converted to the arithmetic dtype (``a``, none for float32 states).

    The largest of core/taylor.py's operations, each slice read from host memory (a term read is a
    slice in ``s``; the device store's reads are views and hold less):

    * an update, a forecast and a measured miss: the float32 running value, a term read and its
      converted copy: ``a + s + c``;
    * a corrector replacing the newest value: the change, a term read and its float32 copy: ``2a + s``;
    * block 0's trend (``progress``, orders from 1): the slope, the distance moved and their product, ``3a``.

    Measured against the allocator in tests/test_placement.py; the scalars the reductions return
    are left out."""
    values = min(numel, SLICE_VALUES)
    work, state = arithmetic_dtype(dtype).itemsize, dtype.itemsize
    converted = work if arithmetic_dtype(dtype) != dtype else 0
    largest = max(work + state + converted, 2 * work + state, 3 * work if order else 0)
    return values * largest


def row_bytes(dtype: torch.dtype, values: int, order: int) -> int:
    """Device memory a forecast at a sample of ``values`` of a state's values holds (core/taylor.py
    ``predict_rows``): the float32 forecast, a term's rows as read and converted, and the forecast's
    difference from the output kept for the pair's measurement (core/guidance.py)."""
    work, state = arithmetic_dtype(dtype).itemsize, dtype.itemsize
    converted = work if arithmetic_dtype(dtype) != dtype else 0
    return values * (2 * 4 + state + converted)


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

    def rows(self, term: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The rows ``index`` of the term's axis 1 (a sample of tokens), a copy."""
        return term.index_select(1, index.to(term.device))

    def follow(self, terms: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        """The terms where the stream's calls now run (multi-GPU work units may move a stream)."""
        return [term.to(device) for term in terms]


class HostStore:
    """Terms rest on ``host`` (system RAM: the node passes the CPU, never ComfyUI's offload device,
    which is the GPU itself under --highvram and --gpu-only); every read and write is a counted,
    blocking copy of one slice, so a test sees the offload path taken even where the host and the
    device are the same CPU."""

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
        """Converted to the term's dtype on the device first: a copy across devices converts on the
        host side, so float32 values would cross the bus at twice the bytes the meter counts."""
        target = term.view(-1)[part]
        target.copy_(values.to(target.dtype))  # blocking: waits for the kernels that computed ``values``
        self.meter.to_host += target.numel() * target.element_size()

    def rows(self, term: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The rows ``index`` of the term's axis 1, gathered in host memory and copied over: only the
        sample crosses."""
        values = term.index_select(1, index.to(term.device)).to(device, copy=True)
        self.meter.to_device += values.numel() * values.element_size()
        return values

    def follow(self, terms: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        return terms  # host memory serves every device


Store = DeviceStore | HostStore


class Placement:
    """What ``cache_device`` means, in one place: where each stream's last-block cache rests, what
    ComfyUI's memory plan counts of it before loading, and how that is settled once it has loaded.

    ``choice``: ``gpu`` keeps every cache on the model's device; ``cpu`` keeps the last block's on
    ``host``; ``auto`` keeps a stream's on the device while the bounds placed there so far, this one's
    included, fit in ``budget`` bytes, and on ``host`` otherwise. Without a ``host`` (the model runs
    in system RAM already) or a ``budget`` (nobody measured free memory), ``auto`` keeps everything
    on the device. The node settles both once ComfyUI has loaded the model (``settle``, from
    nodes/memory_plan.py).
    """

    def __init__(self, choice: str = "auto", host: torch.device | None = None, budget: int | None = None) -> None:
        if choice not in PLACEMENTS:
            raise ValueError(f"cache_device must be one of {PLACEMENTS}, got {choice!r}.")
        self.choice = choice
        self.host = host
        self.budget = budget
        self.meter = TransferMeter()
        self._on_device = 0  # bytes of last-block bounds placed on the device so far

    @classmethod
    def sizing(cls, offload: bool) -> Placement:
        """The placement a memory plan sizes: every cache on the device, or the last block's in host
        memory, which for sizing is the meta device (nothing is allocated)."""
        return cls("cpu" if offload else "gpu", torch.device("meta"))

    def configure(self, host: torch.device | None, budget: int | None) -> None:
        self.host = None if host is None else torch.device(host)
        self.budget = budget

    def offloaded_in_plan(self, model_on_host: bool) -> tuple[bool, bool]:
        """Whether the last block's caches count as resting in host memory in ComfyUI's two estimates
        before it loads the model (cond and uncond together; the least it keeps free): ``cpu`` in both,
        ``auto`` in the least only (ComfyUI makes room for the whole cache when it can, but never
        offloads the model's weights for it), ``gpu`` in neither. A model in system RAM already has
        nothing to offload to, so there ``auto`` counts everything on the device."""
        if self.choice == "cpu":
            return True, True
        return False, self.choice == "auto" and not model_on_host

    def settle(self, host: torch.device, budget: Callable[[], int | None], model_on_host: bool) -> None:
        """Once ComfyUI has loaded the model: ``cpu`` rests on ``host``; ``auto`` on ``host`` beyond
        ``budget()`` bytes on the device (asked only then: the memory free after loading); ``gpu``, and
        ``auto`` with the model in system RAM, on the device."""
        if self.choice == "cpu":
            self.configure(host, None)
        elif self.choice == "auto" and not model_on_host:
            self.configure(host, budget())

    def store_for(self, bound: int) -> Store:
        """The store of a stream whose last-block cache will hold up to ``bound`` bytes."""
        if self.choice == "cpu":
            return HostStore(self.host or torch.device("cpu"), self.meter)
        if self.choice == "auto" and self.host is not None and self.budget is not None:
            if self._on_device + bound > self.budget:
                return HostStore(self.host, self.meter)
        self._on_device += bound
        return DeviceStore()
