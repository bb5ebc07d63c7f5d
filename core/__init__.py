"""Confidence-gated Taylor caching for diffusion transformers: the framework-independent engine.

Imports torch and the standard library only, so it can be tested and reused outside
ComfyUI; ``nodes/`` adapts it to ComfyUI's model patcher. It holds what the node runs; the
benchmark's other methods extend it from bench/baselines.
"""

from .call import Call, Stream
from .engine import ForecastEngine
from .gate import ConfidenceGate, relative_l1
from .memory import CacheMemory
from .placement import PLACEMENTS, Placement
from .policy import ConfidenceGated, Mode, Policy
from .schedule import Schedule
from .stats import RunStats
from .steps import StepPoint, locate
from .target import SpeedTarget
from .taylor import TaylorForecaster

__all__ = [
    "CacheMemory",
    "Call",
    "ConfidenceGate",
    "ConfidenceGated",
    "ForecastEngine",
    "Mode",
    "PLACEMENTS",
    "Placement",
    "Policy",
    "RunStats",
    "Schedule",
    "SpeedTarget",
    "StepPoint",
    "Stream",
    "TaylorForecaster",
    "locate",
    "relative_l1",
]
