"""Where a model call sits in the sampling schedule.

Samplers such as heun or dpmpp_2s call the model more than once per step, at sigmas
between the scheduled ones, so counting calls says nothing about time. A call is
located by its sigma instead: a fractional step position interpolated in the run's
sigma schedule, and the step index it is reported under.

The last step is the stretch from the second-to-last scheduled sigma to the end: dpm_fast and
dpm_adaptive integrate only down to the last nonzero sigma (comfy/samplers.py ``ksampler`` passes
them ``sigma_min``) at sigmas of their own, so their final calls never reach the last scheduled
sigma, and they are the calls that fix the image's detail all the same. A run whose schedule stops
above 0 (KSamplerAdvanced returning leftover noise, the first of Wan 2.2's two experts) hands its
latent to another run, so none of its calls is the image's last step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StepPoint:
    index: int  # step the call is reported under, 0 .. num_steps - 1
    position: float  # fractional step index; calls between scheduled sigmas fall in between
    sigma: float
    num_steps: int
    finishes: bool = True  # the run's schedule ends at sigma 0: its last step is the image's

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.finishes and self.position > self.num_steps - 2


def locate(sigma: float, schedule: Sequence[float]) -> StepPoint:
    """Place ``sigma`` in a decreasing sigma schedule of ``num_steps + 1`` values.

    A sigma equal to ``schedule[i]`` is step ``i``; one between ``schedule[i]`` and
    ``schedule[i + 1]`` gets a position linearly in between. Sigmas outside the
    schedule are clamped to its ends.
    """
    sigmas = [float(s) for s in schedule]
    if len(sigmas) < 2:
        raise ValueError(f"a sigma schedule needs at least 2 values (1 step), got {len(sigmas)}.")
    num_steps = len(sigmas) - 1
    sigma = float(sigma)
    position = 0.0 if sigma >= sigmas[0] else float(num_steps)
    for i in range(num_steps):
        high, low = sigmas[i], sigmas[i + 1]
        if math.isclose(sigma, high, rel_tol=1e-6, abs_tol=1e-9):
            position = float(i)
            break
        if high > sigma > low:
            position = i + (high - sigma) / (high - low)
            break
    index = min(int(math.floor(position + 1e-9)), num_steps - 1)
    return StepPoint(index=index, position=position, sigma=sigma, num_steps=num_steps, finishes=sigmas[-1] == 0.0)


def step_weights(schedule: Sequence[float]) -> list[float]:
    """Per step, how much more a miss at that step moves the image than at an average step, never less
    than 1: ``max(1, sigma drop / mean sigma drop)``. An Euler step moves the latent by its sigma drop
    times the model's output, and on the benchmark's models the image moved by that much for a miss at
    any step, at shift 3 and at shift 8 alike (bench/sensitivity.py: image change per unit of miss and of
    sigma drop within a factor 2 across the run). How far the rest of the run carries an early change is
    the model's own: a model that decides its layout in the first steps carries it much further than
    these do (a shift-8 Wan layout trained elsewhere moved its images 27 dB at early steps the sigma drop
    alone called cheap), so a small drop never makes a miss count for less than at an average step. A
    schedule that does not fall at every step weighs every step alike."""
    sigmas = [float(s) for s in schedule]
    drops = [high - low for high, low in zip(sigmas, sigmas[1:])]
    if not drops or min(drops) <= 0:
        return [1.0] * len(drops)
    mean = sum(drops) / len(drops)
    return [max(1.0, drop / mean) for drop in drops]


def scheduled_points(schedule: Sequence[float]) -> list[StepPoint]:
    """A call at every scheduled sigma but the final one (what a one-call-per-step sampler makes)."""
    return [locate(sigma, schedule) for sigma in list(schedule)[:-1]]
