"""How much memory a run's caches took, where it lived, and what moved between host and device.

The bound is known from the first call's shapes, before the caches fill: per stream, block 0's
(sampled) state times ``first_order + 1`` on the device, the last block's state times
``last_order + 1`` where its store keeps it, and, wherever the cache rests, the slice-wise
arithmetic's working buffers (core/placement.py ``working_bytes``) on the device once per run
(calls work one stream at a time), and ``measuring``: what a judged full call holds of each stream's
forecast at a sample of tokens while the caches refresh (core/placement.py ``row_bytes``). With
``forecast_residual`` each stream also holds block 0's output in the last block's layout on the device
while a call runs. The peak is measured: the cached tensors after every call.

``planned_bytes`` is what the node added to ComfyUI's memory plan before sampling
(nodes/planner.py); None when no plan was made (outside ComfyUI, or a model whose shapes the
planner does not know).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

DEVICE, HOST = "device", "host"


@dataclass
class CacheMemory:
    device: str | None = None  # where the model ran
    host: str | None = None  # where offloaded states rested (None: nothing was offloaded)
    bound: dict[str, int] = field(default_factory=lambda: {DEVICE: 0, HOST: 0})
    peak: dict[str, int] = field(default_factory=lambda: {DEVICE: 0, HOST: 0})
    planned: int | None = None
    working: int = 0  # the largest slice working set any stream needs (once per run: calls take turns)
    measuring: int = 0  # a judged call's forecasts at sampled tokens, every stream's (held together)
    moved: dict[str, list[int]] = field(default_factory=lambda: {"full": [0, 0], "forecast": [0, 0]})  # bytes, calls

    def add_bound(self, where: str, size: int, device: torch.device, host: torch.device | None = None) -> None:
        """A stream's cache will hold up to ``size`` bytes ``where`` (DEVICE or HOST)."""
        self.device = self.device or str(device)
        if where == HOST and host is not None:
            self.host = str(host)
        self.bound[where] += size

    def need_working(self, size: int) -> None:
        self.working = max(self.working, size)

    def add_measuring(self, size: int) -> None:
        self.measuring += size

    def observe(self, device_bytes: int, host_bytes: int) -> None:
        """What the caches hold now, after a call."""
        self.peak[DEVICE] = max(self.peak[DEVICE], device_bytes)
        self.peak[HOST] = max(self.peak[HOST], host_bytes)

    def record_call(self, forecast: bool, moved: int) -> None:
        totals = self.moved["forecast" if forecast else "full"]
        totals[0] += moved
        totals[1] += 1

    @property
    def device_bound(self) -> int:
        return self.bound[DEVICE] + self.working + self.measuring

    def moved_per_call(self) -> dict[str, int]:
        return {kind: total // calls if calls else 0 for kind, (total, calls) in self.moved.items()}

    def to_json(self) -> dict:
        return {
            "device": self.device,
            "peak_bytes": self.peak[DEVICE],
            "bound_bytes": self.device_bound,
            "host": self.host,
            "host_bytes": self.peak[HOST],
            "host_bound_bytes": self.bound[HOST],
            "planned_bytes": self.planned,
            "moved_bytes_per_call": self.moved_per_call(),
        }

    def summary(self) -> str | None:
        """The log line's memory part; None when nothing was cached."""
        if self.device is None:
            return None
        text = f"cache peak {_size(self.peak[DEVICE])} on {self.device} (bound {_size(self.device_bound)})"
        if self.host is not None:
            moved = self.moved_per_call()
            text += (f", {_size(self.peak[HOST])} in {self.host} memory (bound {_size(self.bound[HOST])}), "
                     f"{_size(moved['forecast'])} moved per forecast call and {_size(moved['full'])} per full call")
        if self.planned is not None:
            text += f", {_size(self.planned)} added to ComfyUI's memory plan"
        return text


def _size(size: int) -> str:
    """Decimal units, as the README's memory table (1 GB = 10^9 bytes)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
