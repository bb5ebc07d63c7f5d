"""Confidence-gated Taylor caching for diffusion transformers: the framework-independent engine.

Imports torch and the standard library only, so it can be tested and reused outside
ComfyUI; ``nodes/`` adapts it to ComfyUI's model patcher.
"""

from .dicache import ProbeAlignedCache
from .engine import Call, ForecastEngine, Stream
from .gate import ConfidenceGate, relative_l1
from .memory import CacheMemory
from .placement import PLACEMENTS, Placement
from .policy import AlwaysFull, ConfidenceGated, FixedInterval, Mode, Policy
from .residual import FirstBlockCache, InputChangeCache
from .schedule import Schedule
from .stats import RunStats
from .target import SpeedTarget
from .steps import StepPoint, locate
from .taylor import TaylorForecaster

__all__ = [
    "AlwaysFull",
    "CacheMemory",
    "Call",
    "ConfidenceGate",
    "ConfidenceGated",
    "FirstBlockCache",
    "FixedInterval",
    "ForecastEngine",
    "InputChangeCache",
    "Mode",
    "PLACEMENTS",
    "Placement",
    "Policy",
    "ProbeAlignedCache",
    "RunStats",
    "Schedule",
    "SpeedTarget",
    "StepPoint",
    "Stream",
    "TaylorForecaster",
    "locate",
    "relative_l1",
]
