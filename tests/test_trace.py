"""The benchmark's curve tracing (bench/trace.py): where it adds thresholds, and where it stops."""

from __future__ import annotations

import math

import bench  # noqa: F401
from bench.methods import Curve, Point
from bench.trace import DB_GAP, GAP, REFINEMENTS, RESOLUTION, between, trace


def curve_of(ratio_at, grid, psnr_at=lambda t: 50.0):
    """A curve whose block ratio and PSNR at threshold t are ``ratio_at(t)`` and ``psnr_at(t)``, and the
    thresholds it got measured at."""
    asked: list[float] = []

    def measure(point: Point) -> dict:
        t = point.settings["threshold"]
        asked.append(t)
        return {"threshold": t, "block_ratio": ratio_at(t), "psnr": psnr_at(t)}

    curve = Curve(lambda t: Point("test", f"thr {t:g}", {"threshold": t}), tuple(grid))
    return curve, asked, measure


def test_a_curve_without_gaps_is_left_as_measured():
    curve, asked, measure = curve_of(lambda t: 1 + t, (0.05, 0.1, 0.15, 0.2))
    points = trace(curve, measure)
    assert asked == [0.05, 0.1, 0.15, 0.2]
    assert [p["threshold"] for p in points] == [0.05, 0.1, 0.15, 0.2]


def test_the_widest_gap_is_bisected_first_until_none_is_wider_than_the_rule():
    curve, asked, measure = curve_of(lambda t: 1 + 10 * t, (0.01, 0.1, 0.4))
    points = trace(curve, measure)
    assert asked[:4] == [0.01, 0.1, 0.4, between(0.1, 0.4)]  # 5x -> 2x before 1.1x -> 2x
    ratios = [p["block_ratio"] for p in points]
    assert ratios == sorted(ratios)
    gaps = [b / a for a, b in zip(ratios, ratios[1:])]
    assert len(asked) == 3 + REFINEMENTS or max(gaps) <= GAP


def test_a_jump_in_the_curve_stops_at_the_threshold_resolution():
    """Block ratios that jump at t = 0.3 cannot be filled: bisection stops once the thresholds are close."""
    curve, asked, measure = curve_of(lambda t: 1.0 if t < 0.3 else 2.0, (0.2, 0.4))
    points = trace(curve, measure)
    low = max(t for t in asked if t < 0.3)
    high = min(t for t in asked if t >= 0.3)
    assert high / low <= RESOLUTION * RESOLUTION
    assert len(points) == len(set(asked)) < 2 + REFINEMENTS  # stopped by the resolution, not the bound


def test_refinements_are_bounded():
    curve, asked, measure = curve_of(lambda t: 1 + 1000 * t * t, (0.001, 1.0))
    trace(curve, measure)
    assert len(asked) == 2 + REFINEMENTS


def test_a_fidelity_gap_between_lossy_points_is_filled_at_equal_speed():
    """Equal speed, falling PSNR: the dB rule alone adds points between lossy neighbours."""
    curve, asked, measure = curve_of(lambda t: 1.05, (0.1, 0.4), lambda t: 60.0 - 20 * t)
    points = trace(curve, measure)
    drops = [a["psnr"] - b["psnr"] for a, b in zip(points, points[1:])]
    assert max(drops) <= DB_GAP and 2 < len(asked) < 2 + REFINEMENTS


def test_next_to_a_lossless_point_only_speed_counts():
    """No loss to the first loss is infinitely many dB; bisecting it would spend the budget on the first
    percent of speed-up, so a lossless point's gap is judged by block ratio alone."""
    curve, asked, measure = curve_of(lambda t: 1.0 if t < 0.15 else 1.05, (0.1, 0.2),
                                     lambda t: math.inf if t < 0.15 else 40.0)
    trace(curve, measure)
    assert asked == [0.1, 0.2]
    curve, asked, measure = curve_of(lambda t: 1.0 if t < 0.15 else 1.5, (0.1, 0.2),
                                     lambda t: math.inf if t < 0.15 else 40.0)
    trace(curve, measure)
    assert asked[2] == between(0.1, 0.2)


def test_midpoints_are_geometric_and_readable():
    assert between(0.01, 0.04) == 0.02
    assert between(0.003, 0.004) == 0.00346
