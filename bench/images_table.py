"""bench/results/images.json as tables and as the issue's targets at the default (bench/images.py)."""

from __future__ import annotations

from .images import LEAST_DB, MOST_DB, MOST_SHARE, SPEED, SPEED_CFG, SPEED_FAMILIES, STEPS, meets

SHOWN = 4  # misses named in a target's detail (the rest counted)


def _db(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


def _points(results: dict):
    for family, entry in results["families"].items():
        for key, point in entry["points"].items():
            yield family, key, point


def default_table(results: dict) -> str:
    """The README's: per model and step count, the default's worst image and 10th percentile over every cfg and
    shift, and the range of its speeds."""
    lines = ["| model | " + " | ".join(f"{steps} steps" for steps in STEPS) + " |", "|---" * (len(STEPS) + 1) + "|"]
    for family, entry in results["families"].items():
        cells = []
        for steps in STEPS:
            defaults = [p["default"] for p in entry["points"].values() if p["steps"] == steps]
            if not defaults:
                cells.append("—")
                continue
            worst = min(d["images"]["worst"] for d in defaults)
            p10 = min(d["images"]["p10"] for d in defaults)
            ratios = [d["block_ratio"] for d in defaults]
            mark = "" if all(meets(d["images"]) for d in defaults) else "**"
            cells.append(f"{mark}{_db(worst)} / {_db(p10)} dB{mark}, {min(ratios):.2f}-{max(ratios):.2f}x")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(figures: dict) -> str:
    i = figures["images"]
    return (f"{figures['block_ratio']:.2f}x, {_db(i['worst'])} / {_db(i['p10'])} / {_db(i['median'])} / "
            f"{_db(i['mean'])}, {i[f'under_{LEAST_DB:g}']} / {i[f'under_{MOST_DB:g}']}")


def full_table(results: dict) -> str:
    """table_full.md's: every point, the default and the documented settings."""
    names = [name for name in results["settings"]]
    lines = [f"Each cell: fewer block evaluations; worst / 10th percentile / median / mean image (dB against no "
             f"cache, {results['images']} images); images under {LEAST_DB:g} / {MOST_DB:g} dB. Bold: the default "
             f"misses the target (every image at least {LEAST_DB:g} dB, {MOST_SHARE:.0%} at least {MOST_DB:g} dB).",
             "", "| model | point | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for family, key, point in _points(results):
        mark = "" if meets(point["default"]["images"]) else "**"
        lines.append(f"| {family} | {mark}{key}{mark} | "
                     + " | ".join(_cell(point[n]) if n in point else "—" for n in names) + " |")
    return "\n".join(lines)


def cause_line(family: str, key: str, cause: dict) -> str:
    """What took the worst image of a run apart says (bench/images.py ``cause``)."""
    moved = cause["moved"]
    if not moved:
        return f"{family}, {key}: the worst image ({_db(cause['db'])} dB) had no forecast to refuse."
    top, rest = moved[0], moved[1:]
    predicted = "—" if top["predicted"] is None else f"{top['predicted']:.3f}"
    text = (f"{family}, {key}, seed {cause['seed']} digit {cause['digit']} at {_db(cause['db'])} dB: refusing the "
            f"forecast at step {top['step']} alone (forecast {top['in_a_row']} in a row, predicted guided miss "
            f"{predicted}, step weight {top['weight']:.2f}, the run's sum before it {top['spent']:.3f}) brings the "
            f"image to {_db(top['refused_db'])} dB")
    if rest:
        text += (f"; refusing any other of its {len(rest)} forecasts moves it at most "
                 f"{max(m['moved_db'] for m in rest):+.1f} dB")
    return text + "."


def causes(results: dict) -> list[str]:
    return [cause_line(family, key, cause) for family, entry in results["families"].items()
            for key, cause in entry.get("causes", {}).items()]


def _misses(checks: list[tuple[str, bool, str]]) -> tuple[bool | None, str]:
    if not checks:
        return None, "no run measured it"
    missed = [f"{where}: {value}" for where, ok, value in checks if not ok]
    if not missed:
        return True, f"all {len(checks)} points"
    more = f"; {len(missed) - SHOWN} more in bench/results/table_full.md" if len(missed) > SHOWN else ""
    return False, f"missed at {len(missed)} of {len(checks)} points: " + "; ".join(missed[:SHOWN]) + more


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    """The issue's targets at the default as (text, met, measured)."""
    points = sorted(_points(results), key=lambda fkp: fkp[2]["default"]["images"]["worst"])
    worst = [(f"{f}, {k}", p["default"]["images"]["worst"] >= LEAST_DB, f"{_db(p['default']['images']['worst'])} dB")
             for f, k, p in points]
    ok, detail = _misses(worst)
    found = [(f"every image at least {LEAST_DB:g} dB at the default (euler; cfg 1-8; 12-50 steps; Wan at shift 3 "
              "and 8; every model, the held-out pair included; `bench/images.py`)", ok, detail
              + "".join(f". Cause: {line}" for line in causes(results)[:2]))]
    share = sorted(points, key=lambda fkp: -fkp[2]["default"]["images"][f"under_{MOST_DB:g}"])
    most = [(f"{f}, {k}", p["default"]["images"][f"under_{MOST_DB:g}"] <= (1 - MOST_SHARE) * p["default"]["images"]["images"],
             f"{p['default']['images'][f'under_{MOST_DB:g}']} of {p['default']['images']['images']} under {MOST_DB:g} dB")
            for f, k, p in share]
    found.append((f"at least {MOST_SHARE:.0%} of images at least {MOST_DB:g} dB at the default (the same points)",
                  *_misses(most)))
    speed = [(f"{f}, {k}", p["default"]["block_ratio"] >= SPEED[p["steps"]], f"{p['default']['block_ratio']:.2f}x")
             for f, k, p in _points(results)
             if f in SPEED_FAMILIES and p["cfg"] == SPEED_CFG and p["steps"] in SPEED]
    found.append((" and ".join(f"at least {ratio:g}x at {steps} steps" for steps, ratio in SPEED.items())
                  + f" fewer block evaluations at the default ({', '.join(SPEED_FAMILIES)}, cfg {SPEED_CFG:g}, "
                  "every shift)", *_misses(speed)))
    return found
