"""The benchmark's budget-driven rivals of `target_speedup` (bench/baselines: DPCache's path plan, BudCache's mask
search, SoftCap's controller, the key-step schedule they run on) and the equal-budget reading (bench/budgets.py)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

import bench  # noqa: F401  (registers the pack as cgtaylor_cache)
from bench.baselines import FixedInterval, KeySteps, SoftCap
from bench.baselines.budget_search import search, spread
from bench.baselines.path_plan import NO_KEY, path_cost, path_costs, plan_keys
from bench.budgets import at_share, either_side, fixed_interval_for, interval_full_steps
from cgtaylor_cache.core import ForecastEngine, Mode, StepPoint
from engine_driver import drive


def random_costs(steps: int, seed: int) -> torch.Tensor:
    """A cost tensor of the path planner's shape with random entries where a path can go."""
    g = torch.Generator().manual_seed(seed)
    cost = torch.full((steps + 1, steps, steps), math.inf, dtype=torch.float64)
    for before in [None, *range(steps)]:
        for key in ([0] if before is None else range(before + 1, steps)):
            for after in range(key + 1, steps):
                cost[NO_KEY if before is None else before + 1, key, after] = float(torch.rand(1, generator=g)) * (after - key)
    return cost


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_path_plan_is_the_cheapest_path_of_its_budget(seed):
    """The dynamic programme against every path: the same least cost, the first and last step among the keys."""
    steps = 8
    cost = random_costs(steps, seed)
    for keys in range(2, steps + 1):
        planned = plan_keys(cost, keys)
        assert len(planned) == keys and planned[0] == 0 and planned[-1] == steps - 1
        best = min(path_cost(cost, [0, *middle, steps - 1])
                   for middle in itertools.combinations(range(1, steps - 1), keys - 2))
        assert path_cost(cost, planned) == pytest.approx(best)


def test_the_path_cost_depends_on_the_key_step_before():
    """Features on a parabola: a forecast from two key steps misses by what the parabola bends, and by how far
    apart those two were; from step 0 alone it misses by the whole change."""
    steps = 6
    trajectory = [torch.full((2, 3), 1.0 + 0.5 * t + 0.1 * t * t) for t in range(steps)]
    cost = path_costs([trajectory], order=2)

    def miss(before: list[int], at: int) -> float:
        points = [(t, float(trajectory[t][0, 0])) for t in before]
        if len(points) == 1:
            forecast = points[0][1]
        else:
            (t0, v0), (t1, v1) = points
            forecast = v1 + (v1 - v0) / (t1 - t0) * (at - t1)
        value = float(trajectory[at][0, 0])
        return abs(forecast - value) / abs(value)

    assert float(cost[NO_KEY, 0, 3]) == pytest.approx(miss([0], 1) + miss([0], 2))
    assert float(cost[1 + 1, 2, 5]) == pytest.approx(miss([1, 2], 3) + miss([1, 2], 4))
    assert float(cost[0 + 1, 2, 5]) > float(cost[1 + 1, 2, 5])  # the older key step bends the line further off
    assert float(cost[2, 2, 3]) == 0.0  # no step between two neighbours
    assert math.isinf(float(cost[3, 2, 4]))  # no key step after the one it follows


def test_the_mask_search_keeps_its_budget_and_climbs_to_a_mask_no_shift_improves():
    """A scripted cost: each forecast step costs its weight times its distance from the last full step, the
    weights high early. The search samples at most its evaluations, every mask with the same number of full
    steps; hill climbing ends where shifting no full step by one improves, and with annealing to explore
    first the search ends on the cheapest mask there is."""
    steps, keys = 10, 4
    weights = [0.0, 5.0, 4.0, 1.0, 1.0, 0.5, 0.5, 0.2, 0.2, 0.0]

    def cost(mask: frozenset[int]) -> float:
        total, last = 0.0, 0
        for s in range(steps):
            if s in mask:
                last = s
            else:
                total += weights[s] * (s - last)
        return total

    for seed in range(5):
        climbed = search(cost, steps, keys, anneal=2, climb=30, seed=seed)
        assert len(climbed.tried) <= 32
        assert all(len(mask) == keys and {0, steps - 1} <= mask for mask in climbed.tried)
        mask, found = climbed.best
        shifted = [(mask - {s}) | {s + d} for s in mask - {0, steps - 1} for d in (-1, 1)
                   if 0 < s + d < steps - 1 and s + d not in mask]
        assert found < cost(spread(steps, keys)) and all(cost(other) >= found for other in shifted)
    optimum = min(cost(frozenset({0, steps - 1, *middle}))
                  for middle in itertools.combinations(range(1, steps - 1), keys - 2))
    assert search(cost, steps, keys, anneal=30, climb=10, seed=0).best[1] == pytest.approx(optimum)


def drift(index: int, consecutive: int) -> float:
    """A scripted drift observer: large early, small late, growing with every forecast in a row."""
    return 0.02 * (1 + 3 * math.exp(-index / 5)) * (consecutive + 1) ** 2


@pytest.mark.parametrize("speedup", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("steps", [30, 50])
def test_softcap_spends_about_its_budget_on_a_scripted_run(speedup, steps):
    """The controller moves the threshold until the run's compute is near the budget (within 10%)."""
    blocks = 57
    policy = SoftCap(1 / speedup, blocks)
    consecutive, spent = 0, 0.0
    for index in range(steps):
        mode, _ = policy.plan(StepPoint(index, float(index), 1 - index / steps, steps), consecutive, ready=index > 0)
        if mode is Mode.GATE and policy.accepts(drift(index, consecutive)):
            consecutive, spent = consecutive + 1, spent + 1 / blocks
        else:
            consecutive, spent = 0, spent + 1
    assert steps / spent == pytest.approx(speedup, rel=0.1)


class Stack:
    """Blocks that add a bias each: the engine's stand-in for a transformer (tests/engine_driver.py)."""

    def __init__(self, depth: int) -> None:
        self.biases = [0.01 * (i + 1) for i in range(depth)]
        self.ran = 0

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        self.ran += 1
        return x + self.biases[i]


def test_softcap_counts_what_the_engine_ran():
    """Through the engine: the controller's own count of compute is the engine's block count, as it reads each
    call's outcome from the forecasts in a row the engine reports."""
    steps, depth = 40, 20
    policy = SoftCap(0.4, depth)
    engine, stack = ForecastEngine(policy, 2, 2), Stack(depth)
    for index in range(steps):
        drive(engine, stack, torch.full((1, 4, 3), math.sin(index / 7) + 0.02 * index * index), index, steps)
    policy.plan(StepPoint(steps, float(steps), 0.0, steps + 1), max(s.consecutive for s in engine._streams.values()),
                True)  # settles the last call
    assert policy.spent * depth == pytest.approx(engine.stats.blocks_run)
    assert engine.stats.forecast_calls > 0


def test_key_steps_run_in_full_exactly_where_planned():
    policy, steps = KeySteps({0, 3, 4, 9}, "dpcache"), 10
    planned = [policy.plan(StepPoint(i, float(i), 1 - i / steps, steps), 0, ready=i > 0)[0] for i in range(steps)]
    assert [i for i, mode in enumerate(planned) if mode is Mode.FULL] == [0, 3, 4, 9]
    assert policy.forecastable_steps([1.0] * (steps + 1)) == 6
    with pytest.raises(ValueError, match="key steps must be step indices"):
        KeySteps(set())


@pytest.mark.parametrize("steps", [20, 30, 50])
def test_a_fixed_interval_is_found_for_each_number_of_full_steps(steps):
    """TaylorSeer's schedule with exactly the full steps asked, its warm-up as near the usual 3 as that allows."""
    for full in range(3, steps // 2 + 2):
        interval, warmup = fixed_interval_for(steps, full)
        assert interval_full_steps(steps, interval, warmup) == full
        assert sum(FixedInterval(interval, warmup).is_full_step(s) for s in range(steps)) == full
        assert not any(interval_full_steps(steps, n, w) == full for n in range(2, steps + 1) for w in range(1, steps + 1)
                       if abs(w - 3) < abs(warmup - 3))
    assert fixed_interval_for(20, 0) is None  # the warm-up computes one step at least


def test_rivals_are_read_at_the_node_speed_between_their_settings():
    assert either_side(10.0, 50) == [10] and either_side(10.4, 50) == [10, 11] and either_side(60.0, 50) == [50]
    low = {"share": 0.4, "images": {"worst": 30.0, "p10": 32.0, "median": 40.0, "mean": 39.0}}
    high = {"share": 0.5, "images": {"worst": 40.0, "p10": 42.0, "median": 50.0, "mean": math.inf}}
    halfway = at_share([high, low], 0.45)
    assert halfway["images"]["worst"] == pytest.approx(35.0) and halfway["images"]["median"] == pytest.approx(45.0)
    assert halfway["images"]["mean"] == pytest.approx(69.5)  # an exact image counts as 100 dB on the line
    assert at_share([low, high], 0.3) is None  # the curve never spends that little
    assert at_share([low, high], 0.39)["images"]["median"] == 40.0  # within 3% of its end: the end itself


def test_a_point_reports_its_worst_images():
    from bench.measures import percentile, tails

    images = [50.0 + i for i in range(18)] + [34.0, 39.0]
    found = tails(images)
    assert found["worst"] == 34.0 and found["p10"] == 39.0  # of 20 images, the second worst
    assert found["under_35"] == 1 and found["under_40"] == 2 and found["images"] == 20
    assert found["median"] == pytest.approx(57.5)
    assert percentile([3.0, 1.0, 2.0], 0.1) == 1.0 and math.isinf(tails([math.inf, 40.0])["mean"])
    random.Random(0).shuffle(images)
    assert tails(images) == found
