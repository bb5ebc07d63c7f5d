"""DPCache (Cui et al., CVPR 2026, arXiv 2602.22654), reproduced from its paper for the benchmark.

Its facts: the choice of the steps to compute in full is a path through the run's steps, planned once
for all prompts. Full runs on a small calibration set give a cost tensor: the error of skipping from one
key step to the next, conditioned on the key step before (a forecast depends on the path that fed its
cache); dynamic programming then finds the key steps, for a budget of K, whose summed cost is least.
Only the key steps are computed; every other step is forecast from the cache.

Here the calibration runs are the uncached runs of other seeds than the ones measured, the error is the
relative L1 miss of the last block's Taylor forecast (core/taylor.py, the engine's own forecaster) at each
skipped step, and the planned key steps run through the engine as ``KeySteps``. The tensor conditions on
one key step before, as the paper's does, so a forecaster of a higher order is costed from the two key
steps it would hold on that path's last stretch.
"""

from __future__ import annotations

import torch

from cgtaylor_cache.core.taylor import TaylorForecaster

NO_KEY = 0  # the first index of the tensor's first axis: no key step before (the run's first stretch)


def _miss(forecast: torch.Tensor, actual: torch.Tensor) -> float:
    """The engine's relative L1 miss (core/gate.py ``relative_l1``) of one forecast."""
    return float((forecast.float() - actual.float()).abs().sum() / actual.float().abs().sum().clamp_min(1e-12))


def path_costs(trajectories: list[list[torch.Tensor]], order: int) -> torch.Tensor:
    """``cost[k + 1, i, j]``: the summed miss, averaged over the calibration ``trajectories`` (the last block's
    output at every step of uncached runs), of the steps strictly between key steps ``i`` and ``j`` forecast
    from the cache that key steps ``k`` and ``i`` filled (``cost[NO_KEY, 0, j]``: from step 0 alone).
    Entries that are no path (``j <= i``, ``i <= k``) are infinite."""
    steps = len(trajectories[0])
    if any(len(states) != steps for states in trajectories):
        raise ValueError("every calibration trajectory needs the same number of steps.")
    cost = torch.full((steps + 1, steps, steps), float("inf"), dtype=torch.float64)
    pairs = [(None, 0)] + [(k, i) for k in range(steps) for i in range(k + 1, steps - 1)]
    for before, key in pairs:
        misses = torch.zeros(steps, dtype=torch.float64)
        for states in trajectories:
            forecaster = TaylorForecaster(order)
            for step in ([] if before is None else [before]) + [key]:
                forecaster.update(states[step], float(step))
            for step in range(key + 1, steps):
                misses[step] += _miss(forecaster.predict(float(step)), states[step]) / len(trajectories)
        # skipping from key to j forecasts key+1 .. j-1: cumulative sums of the misses before j
        summed = torch.cat([torch.zeros(1, dtype=torch.float64), misses.cumsum(0)[:-1]])
        row = NO_KEY if before is None else before + 1
        cost[row, key, key + 1 :] = summed[key + 1 :]
    return cost


def plan_keys(cost: torch.Tensor, keys: int) -> list[int]:
    """The ``keys`` key steps, the first and the last step among them, whose path costs least.

    The state of the dynamic programme is the last two key steps of a path; a path of ``c + 1`` key steps
    ending at ``(i, j)`` is the cheapest one of ``c`` ending at ``(k, i)`` plus ``cost[k + 1, i, j]``."""
    steps = cost.shape[1]
    if not 2 <= keys or steps < 2:
        raise ValueError(f"a path needs at least the first and the last step as key steps, got {keys} of {steps}.")
    if keys >= steps:
        return list(range(steps))
    best = torch.full((steps + 1, steps), float("inf"), dtype=torch.float64)
    best[NO_KEY, 0] = 0.0
    choices = []
    for _ in range(keys - 1):
        totals, came_from = (best[:, :, None] + cost).min(dim=0)  # [i, j]: over the key step k before i
        choices.append(came_from)
        best = torch.full_like(best, float("inf"))
        best[1:, :] = totals
    row = int(best[:, steps - 1].argmin())
    if not torch.isfinite(best[row, steps - 1]):
        raise ValueError(f"no path of {keys} key steps through {steps} steps.")
    path, last = [steps - 1], steps - 1
    for came_from in reversed(choices):
        previous = row - 1  # the key step before ``last``
        path.append(previous)
        row, last = int(came_from[previous, last]), previous
    return sorted(path)


def path_cost(cost: torch.Tensor, path: list[int]) -> float:
    """What ``plan_keys`` minimises, for any path that starts at step 0."""
    rows = [NO_KEY] + [key + 1 for key in path[:-2]]
    return float(sum(cost[row, i, j] for row, i, j in zip(rows, path[:-1], path[1:])))
