"""bench/results/targets.json as tables and as the issue's criteria (bench/targets.py)."""

from __future__ import annotations

import statistics

from .targets import CLOSER_DB, CLOSER_LOSSY_DB, LOSSY_DB, REACH, RIVALS

SHOWN = 4  # misses named in a criterion's detail (the rest counted)


def runs(results: dict):
    """Every (model, steps, target) measured, with its entry."""
    for family, by_steps in results["families"].items():
        for steps, run in by_steps.items():
            for target, entry in run["targets"].items():
                yield family, int(steps), float(target), run, entry


def rival(entry: dict, name: str) -> dict | None:
    """A rival's figures at the node's speed (``{"share", "images"}``), None where it never came that close."""
    found = entry[name]
    return found.get("at", found) if found is not None else None


def _where(family: str, steps: int, target: float) -> str:
    return f"{family} {steps} steps {target:g}x"


def reached(run: dict, target: float, node: dict) -> bool | None:
    """The speed within ``REACH`` of the target; None where the schedule allows no such speed."""
    if target > run["fastest"] * (1 + REACH):
        return None
    return abs(node["block_ratio"] / target - 1) <= REACH


def refused(node: dict) -> bool:
    """The run's note says the guard refused forecasts its target needed (core/stats.py): the issue's documented
    exception to reaching the target, where the log and the chart say what was reached instead."""
    return any(note.startswith("target") and "guard" in note for note in node["notes"])


REFUSED = "refused"


def reach(run: dict, target: float, node: dict) -> bool | str | None:
    """``reached``, with a miss the guard refused and the run's note names told apart as ``REFUSED``."""
    ok = reached(run, target, node)
    return REFUSED if ok is False and refused(node) else ok


def as_close_as_tolerance(entry: dict) -> bool | None:
    other = rival(entry, "fixed_tolerance")
    return None if other is None else entry["node"]["images"]["median"] >= other["images"]["median"]


def closer_than_interval(entry: dict) -> bool | None:
    other = rival(entry, "fixed_interval")
    if other is None:
        return None
    node, theirs = entry["node"]["images"], other["images"]
    margin = CLOSER_LOSSY_DB if theirs["median"] < LOSSY_DB else CLOSER_DB
    return node["median"] >= theirs["median"] + margin and node["worst"] >= theirs["worst"]


def _guarded(node: dict) -> str:
    return " (the guard refused)" if refused(node) else ""


def _judged(checks: list[tuple[str, bool | None, str]]) -> tuple[bool | None, str]:
    judged = [(where, ok, value) for where, ok, value in checks if ok is not None]
    if not judged:
        return None, "nothing to judge"
    missed = [f"{where}: {value}" for where, ok, value in judged if not ok]
    skipped = len(checks) - len(judged)
    tail = f" ({skipped} not judged: no such speed)" if skipped else ""
    if not missed:
        return True, f"all {len(judged)} points{tail}"
    return False, f"missed at {len(missed)} of {len(judged)} points{tail}: " + _named(missed)


def _named(items: list[str]) -> str:
    """The first ``SHOWN`` of ``items``, the rest counted."""
    more = f"; {len(items) - SHOWN} more in bench/results/table_full.md" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _delta(node: dict, other: dict | None, stat: str = "median") -> str:
    return "—" if other is None else f"{node['images'][stat] - other['images'][stat]:+.1f} dB"


def _distinct(points: list) -> list:
    """The points of ``runs`` whose node run differs from the lower targets' at its model and step count: targets
    beyond reach repeat the fastest run, and a comparison with the rivals is one comparison however often it
    repeats."""
    seen, found = set(), []
    for point in points:
        family, steps, _, _, entry = point
        key = (family, steps, entry["node"]["share"])
        if key not in seen:
            seen.add(key)
            found.append(point)
    return found


def criteria(results: dict) -> list[tuple[str, bool | None, str]]:
    """The issue's criteria as (text, met, measured)."""
    points = list(runs(results))
    reaches, refusals = [], []
    for f, s, t, run, e in points:
        ok, speed = reach(run, t, e["node"]), f"{e['node']['block_ratio']:.2f}x"
        if ok == REFUSED:
            refusals.append(f"{_where(f, s, t)}: {speed}")
        else:
            reaches.append((_where(f, s, t), ok, speed))
    reach_met, reach_measured = _judged(reaches)
    if refusals:
        reach_measured += (f"; the guard refused {len(refusals)} (each run's note says so and what it reached): "
                           + _named(refusals))
    distinct = _distinct(points)
    tolerance = [(_where(f, s, t), as_close_as_tolerance(e), _delta(e["node"], rival(e, "fixed_tolerance")))
                 for f, s, t, _, e in distinct]
    interval = [(_where(f, s, t), closer_than_interval(e),
                 f"median {_delta(e['node'], rival(e, 'fixed_interval'))}, worst "
                 f"{_delta(e['node'], rival(e, 'fixed_interval'), 'worst')}") for f, s, t, _, e in distinct]
    return [
        (f"`target_speedup` reached within {REACH:.0%} wherever the schedule allows and the guard refuses none of the "
         "forecasts it needs (deep models and the held-out pair, 20/30/50 steps, 1.5x-4x; `bench/targets.py`)",
         reach_met, reach_measured),
        ("`target_speedup`'s median image at least as close as the best fixed tolerance at the same speed",
         *_judged(tolerance)),
        (f"`target_speedup` closer than TaylorSeer's fixed interval at the same budget: the median image by "
         f"{CLOSER_DB:g} dB ({CLOSER_LOSSY_DB:g} dB where the interval's is under {LOSSY_DB:g} dB), the worst no "
         "further", *_judged(interval)),
    ]


def _figures(figures: dict | None) -> str:
    if figures is None:
        return "—"
    i = figures["images"]
    speed = f"{figures['block_ratio']:.2f}x, " if "block_ratio" in figures else ""
    return f"{speed}{i['worst']:.1f} / {i['p10']:.1f} / {i['median']:.1f} / {i['mean']:.1f}"


def _mark(ok: bool | str | None) -> str:
    if ok == REFUSED:
        return REFUSED
    return "—" if ok is None else ("yes" if ok else "**no**")


def full_table(results: dict) -> str:
    """table_full.md's: every point, the node and every rival at its speed, and the criteria."""
    lines = [f"Cells: worst / 10th percentile / median / mean image (dB against no cache, {results['seeds']} seeds x "
             "10 digits), after the speed where the schedule's own. Fixed tolerance, TaylorSeer and DPCache are read at "
             "the node's speed between their two settings either side of it (bench/budgets.py: TaylorSeer at the "
             "interval and warm-up that give exactly each whole number of full steps, the warm-up nearest 3; DPCache "
             "planned on two other seeds' uncached runs for each); BudCache searched "
             f"its mask for the nearest whole number of full steps ({results['budcache_evaluations']} masks sampled "
             "on one other seed, the count after its speed); SoftCap got the budget the node spent. Criteria: speed "
             "reached (refused: the guard refused forecasts it needed, and the run's note says so), as close as the "
             "fixed tolerance, closer than TaylorSeer.", "",
             "| model, steps, target | node | " + " | ".join(RIVALS.values()) + " | criteria |",
             "|---" * (3 + len(RIVALS)) + "|"]
    for family, steps, target, run, entry in runs(results):
        cells = []
        for name in RIVALS:
            cell = _figures(rival(entry, name))
            if name == "budcache" and entry[name] is not None:
                cell = f"{_figures(entry[name])} ({entry[name]['evaluations']})"
            cells.append(cell)
        verdicts = " / ".join(_mark(ok) for ok in (reach(run, target, entry["node"]), as_close_as_tolerance(entry),
                                                    closer_than_interval(entry)))
        lines.append(f"| {family}, {steps}, {target:g}x | {_figures(entry['node'])}{_guarded(entry['node'])} | "
                     + " | ".join(cells) + f" | {verdicts} |")
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    """The README's: per target, how often it was reached (and how often the guard refused it), and the node's median
    and worst image against each rival's at its speed (median over the runs of the node's minus the rival's)."""
    targets = results["targets"]
    lines = [f"| target | reached within {REACH:.0%} | node: median image | "
             + " | ".join(RIVALS.values()) + " |", "|---" * (3 + len(RIVALS)) + "|"]
    for target in targets:
        rows = [(run, e) for _, _, t, run, e in runs(results) if t == target]
        verdicts = [reach(run, target, e["node"]) for run, e in rows]
        judged = [ok for ok in verdicts if isinstance(ok, bool)]
        reached_cell = [f"{sum(judged)} of {len(judged)}"] if judged else []
        if REFUSED in verdicts:
            reached_cell.append(f"the guard refused {verdicts.count(REFUSED)}")
        medians = [e["node"]["images"]["median"] for _, e in rows]
        cells = []
        for name in RIVALS:
            pairs = [(e["node"]["images"], rival(e, name)["images"]) for _, e in rows if rival(e, name) is not None]
            if not pairs:
                cells.append("—")
                continue
            cells.append(" / ".join(f"{statistics.median(n[s] - o[s] for n, o in pairs):+.1f}" for s in ("median", "worst")))
        lines.append(f"| {target:g}x | {', '.join(reached_cell) or '—'} | {min(medians):.1f}-{max(medians):.1f} dB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_pairs(results: dict, seeds: dict):
    """Every distinct point of bench/targets.py with, per pair of seeds it was sampled on (its own pair and
    bench/target_seeds.py's), the node's median and worst image minus the fixed tolerance's at its speed
    (pairs where the tolerance never came that close are left out). Targets beyond reach repeat a point:
    it is given once, under the lowest of them."""
    own = ",".join(map(str, range(results["seeds"])))
    seen = set()
    for family, steps, target, _, entry in runs(results):
        more = seeds.get("families", {}).get(family, {}).get(str(steps), {})
        key = f"{target:g}"
        entries = {own: entry, **{pair: found[key] for pair, found in more.items() if key in found}}
        shares = (family, steps, tuple(round(e["node"]["share"], 4) for e in entries.values()))
        if shares in seen:
            continue
        seen.add(shares)
        diffs = {pair: (e["node"]["images"]["median"] - e["fixed_tolerance"]["images"]["median"],
                        e["node"]["images"]["worst"] - e["fixed_tolerance"]["images"]["worst"])
                 for pair, e in entries.items() if e["fixed_tolerance"] is not None}
        if len(diffs) > 1:
            yield _where(family, steps, target), diffs


def _averaged(diffs: dict) -> tuple[float, float]:
    """A point's median-image and worst-image differences, each averaged over its pairs of seeds."""
    return statistics.mean(m for m, _ in diffs.values()), statistics.mean(w for _, w in diffs.values())


def _pairs(points: list) -> list[str]:
    """The pairs of seeds any point was judged on, in the order the files give them."""
    return list(dict.fromkeys(pair for _, diffs in points for pair in diffs))


def seed_criterion(results: dict, seeds: dict) -> tuple[str, bool | None, str]:
    """Ask 3's comparison with the fixed tolerance judged on every pair of seeds: the node's median image at
    least as close on average over the pairs."""
    points = list(seed_pairs(results, seeds))
    checks = [(where, _averaged(d)[0] >= 0,
               " / ".join(f"{m:+.1f}" for m, _ in d.values()) + " dB") for where, d in points]
    return ("`target_speedup`'s median image at least as close as the best fixed tolerance at the same speed, on "
            f"average over {len(_pairs(points))} pairs of seeds (`bench/target_seeds.py`)",
            *_judged(checks))


def seed_summary(results: dict, seeds: dict) -> str:
    """The README's sentence on the seed pairs: how the differences spread, and which losses repeat."""
    points = list(seed_pairs(results, seeds))
    if not points:
        return ""
    medians, worsts = zip(*(_averaged(d) for _, d in points))
    swing = statistics.median(max(m for m, _ in d.values()) - min(m for m, _ in d.values()) for _, d in points)
    every = [(where, d) for where, d in points if all(m < 0 for m, _ in d.values())]
    named = "; ".join(f"{where} ({' / '.join(f'{m:+.1f}' for m, _ in d.values())} dB)" for where, d in every)
    return (f"On {len(_pairs(points))} pairs of seeds (`bench/target_seeds.py`), the node's median image "
            f"minus the fixed tolerance's at the same speed, averaged over the pairs, is "
            f"{statistics.median(medians):+.1f} dB at the median point ({sum(m >= 0 for m in medians)} of "
            f"{len(points)} points at least as close), the worst image {statistics.median(worsts):+.1f} dB; one "
            f"point's difference swings by {swing:.1f} dB between pairs at the median. Below on every pair: "
            f"{len(every)} points" + (f": {named}." if every else "."))


def seed_table(results: dict, seeds: dict) -> str:
    """table_full.md's: every distinct point's differences pair by pair."""
    points = list(seed_pairs(results, seeds))
    if not points:
        return ""
    pairs = _pairs(points)
    lines = ["Node minus the fixed tolerance at the node's speed, median / worst image (dB), by pair of seeds.", "",
             "| model, steps, target | " + " | ".join(f"seeds {p}" for p in pairs) + " | mean |",
             "|---" * (len(pairs) + 2) + "|"]
    for where, d in points:
        cells = [f"{d[p][0]:+.1f} / {d[p][1]:+.1f}" if p in d else "—" for p in pairs]
        mean = _averaged(d)
        lines.append(f"| {where} | " + " | ".join(cells) + f" | {mean[0]:+.1f} / {mean[1]:+.1f} |")
    return "\n".join(lines)
