"""The methods the benchmark compares CG-Taylor with, on the node's own engine and adapter.

The node uses none of them: ``core/`` holds what the node runs, and these extend it from outside
(a policy is any object with core/policy.py ``Policy``'s methods; the residual baselines subclass
``ForecastEngine`` with streams that hold tensors of their own, ``HeldStream``).
"""

from .dicache import ProbeAlignedCache
from .policies import AlwaysFull, FixedInterval, KeySteps
from .residual import FirstBlockCache, HeldStream, InputChangeCache, ResidualReuse
from .softcap import SoftCap

__all__ = ["AlwaysFull", "FirstBlockCache", "FixedInterval", "HeldStream", "InputChangeCache", "KeySteps",
           "ProbeAlignedCache", "ResidualReuse", "SoftCap"]
