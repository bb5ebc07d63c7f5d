"""BudCache (ICML 2026, arXiv 2606.13496), reproduced from its paper for the benchmark.

Its facts: for a fixed budget of full computations, one static cache mask (which steps run in full) is
searched offline, on calibration prompts, by simulated annealing and then hill climbing, each candidate
judged by sampling with it; the mask found is used for every prompt.

Here a mask keeps the first and the last step full and holds exactly ``keys`` full steps; a move shifts one
of the others to a step that was forecast (annealing: anywhere, or nearby half the time; climbing: to a
neighbouring step). The candidate's cost is what ``evaluate`` says (the benchmark: how far a sample on the
calibration seeds lands from the uncached one, in dB, lower is better). Each distinct mask is sampled once,
and the search stops after ``anneal + climb`` of them: the evaluations are what it costs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

Mask = frozenset[int]
START_TEMPERATURE, END_TEMPERATURE = 1.0, 0.05  # in the cost's unit (dB): how much worse a move may be taken
NEARBY = 3  # a nearby move shifts a step by at most this many


@dataclass
class Search:
    """The masks a search sampled, in order, with their costs."""

    evaluate: Callable[[Mask], float]
    tried: dict[Mask, float] = field(default_factory=dict)

    def cost(self, mask: Mask) -> float:
        if mask not in self.tried:
            self.tried[mask] = self.evaluate(mask)
        return self.tried[mask]

    @property
    def best(self) -> tuple[Mask, float]:
        return min(self.tried.items(), key=lambda item: item[1])


def spread(steps: int, keys: int) -> Mask:
    """``keys`` full steps spread as evenly as the steps allow, the first and the last among them."""
    if not 2 <= keys <= steps:
        raise ValueError(f"a mask needs 2 to {steps} full steps, got {keys}.")
    return frozenset(round(i * (steps - 1) / (keys - 1)) for i in range(keys))


def _moved(mask: Mask, steps: int, rng: random.Random, nearby: bool) -> Mask | None:
    """One of the mask's movable full steps shifted to a forecast step (None: nowhere to go)."""
    movable = sorted(mask - {0, steps - 1})
    free = [s for s in range(1, steps - 1) if s not in mask]
    if not movable or not free:
        return None
    step = rng.choice(movable)
    if nearby:
        free = [s for s in free if abs(s - step) <= NEARBY] or free
    return (mask - {step}) | {rng.choice(free)}


def search(evaluate: Callable[[Mask], float], steps: int, keys: int, anneal: int, climb: int,
           seed: int = 0) -> Search:
    """Simulated annealing from the evenly spread mask for ``anneal`` evaluations (the temperature falling
    geometrically), then first-improvement hill climbing from the best mask found, one step to either side,
    until no neighbour improves or ``anneal + climb`` masks were sampled."""
    rng = random.Random(seed)
    found = Search(evaluate)
    current = spread(steps, keys)
    current_cost = found.cost(current)
    budget = anneal + climb
    for _ in range(4 * anneal):  # a move to a mask already sampled costs nothing, so allow a few
        if len(found.tried) >= anneal:
            break
        candidate = _moved(current, steps, rng, nearby=rng.random() < 0.5)
        if candidate is None:
            break
        temperature = START_TEMPERATURE * (END_TEMPERATURE / START_TEMPERATURE) ** (len(found.tried) / max(1, anneal))
        cost = found.cost(candidate)
        if cost <= current_cost or rng.random() < math.exp(-(cost - current_cost) / temperature):
            current, current_cost = candidate, cost
    current, current_cost = found.best
    improved = True
    while improved and len(found.tried) < budget:
        improved = False
        neighbours = [(current - {s}) | {s + d} for s in sorted(current - {0, steps - 1}) for d in (-1, 1)
                      if 0 < s + d < steps - 1 and s + d not in current]
        rng.shuffle(neighbours)
        for neighbour in neighbours:
            if len(found.tried) >= budget:
                break
            if neighbour in found.tried:
                continue
            if found.cost(neighbour) < current_cost:
                current, current_cost = neighbour, found.tried[neighbour]
                improved = True
                break
    return found
