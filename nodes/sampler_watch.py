"""What the sampler steps with, for the engine's fit of the sampler (core/sampler_response.py).

Two hooks see a guided evaluation: the post-CFG functions (comfy/samplers.py ``cfg_function`` hands each one
the latent, both denoised predictions, the cfg scale and the sigma) and the guider's ``predict_noise``
(PREDICT_NOISE wrapper), which returns what the sampler actually steps with. A guider may combine more
predictions than its post-CFG functions saw (DualCFGGuider adds its second prompt's, PerpNegGuider combines
three), so inside ``predict_noise`` the evaluation waits for the guider's return; outside it (a sampler
driven without a guider's wrapper) the post-CFG function's own denoised prediction is what is stepped with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class SamplerWatch:
    """One sampling run's watch: hands ``observe(evaluation, stepped)`` each evaluation once, per thread."""

    def __init__(self, observe: Callable[[dict, object], None]) -> None:
        self._observe = observe
        self._local = threading.local()  # per thread: inside predict_noise, and the evaluation it saw

    def post_cfg(self, args: dict) -> None:
        if getattr(self._local, "predicting", False):
            self._local.evaluation = args
        else:
            self._observe(args, args.get("denoised"))

    def predict(self, executor, args: tuple, kwargs: dict):
        """The guider's whole prediction: the evaluation its post-CFG functions saw, with what it returned."""
        self._local.predicting, self._local.evaluation = True, None
        try:
            stepped = executor(*args, **kwargs)
        finally:
            self._local.predicting = False
        evaluation, self._local.evaluation = self._local.evaluation, None
        if evaluation is not None:
            self._observe(evaluation, stepped)
        return stepped
