"""The gate's exam: how far the last block's forecast misses on the calls it accepted, and on those it rejected.

In a run the node cannot know how far an accepted forecast missed (the blocks did not run), so the
benchmark replays the node default's engine over an uncached run, where every block ran on every
call: on each call the engine sees block 0's real output and decides; where it accepts, its
forecast is compared with the last block's real output; where it rejects, the engine measures the
same miss itself and learns from it, as in a run. A gate that decides tells the two apart: the
calls it rejected would have missed by more than those it accepted (AUC above 0.5).

    python -m bench.gate_exam    # every euler run of the full benchmark: bench/results/gate_exam.json

The replay follows the uncached trajectory, not the cached one the node's forecasts bend a little,
and runs cond and uncond as the node does (one call, two streams).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from cgtaylor_cache.core import StepPoint
from cgtaylor_cache.core.gate import relative_l1_by_stream
from cgtaylor_cache.nodes.comfy_calls import stream_keys

from .gate import auc, finite_median
from .methods import node_default
from .runs import FULL_FAMILIES, FULL_RUNS, RESULTS, Setup, run_key
from .standin.sampling import flow_sigmas
from .weights import SHIFT

SEEDS = (0, 1)


@dataclass
class Recorded:
    """One model call of an uncached run: its stream keys, block 0's gate state and the last block's state."""

    keys: list
    first: torch.Tensor
    last: torch.Tensor | None = None


@dataclass
class Exam:
    accepted: list[float] = field(default_factory=list)  # the last block's forecast miss, per call
    rejected: list[float] = field(default_factory=list)

    def summary(self, tolerance: float) -> dict:
        accepted, rejected = self.accepted, self.rejected
        return {
            "accepted": len(accepted), "rejected": len(rejected),
            "accepted_miss_median": finite_median(accepted), "accepted_miss_max": max(accepted, default=None),
            "rejected_miss_median": finite_median(rejected),
            "accepted_within_tolerance": sum(m <= tolerance for m in accepted) / len(accepted) if accepted else None,
            # P(a rejected call's forecast would have missed by more than an accepted one's)
            "auc": auc(rejected, accepted),
        }


def recorded_calls(setup: Setup, seed: int) -> list[Recorded]:
    """Every model call of an uncached run, as the node's block patches see it."""
    calls: list[Recorded] = []
    patcher = setup.patcher.clone()
    layout = setup.layout

    def first(args, extra):
        out = extra["original_block"](args)
        x = layout.state(out)
        keys = stream_keys(args.get("transformer_options", {}), x)
        calls.append(Recorded(keys, layout.gate_state(out, args).clone()))
        return out

    def last(args, extra):
        out = extra["original_block"](args)
        calls[-1].last = layout.state(out).clone()
        return out

    patcher.set_model_patch_replace(first, "dit", *layout.first)
    patcher.set_model_patch_replace(last, "dit", *layout.last)
    setup.sample(patcher, seed)
    return calls


def replay(setup: Setup, calls: list[Recorded], exam: Exam) -> None:
    """The node default's engine over the recorded calls, one per step."""
    engine = node_default().new_engine()
    sigmas = flow_sigmas(setup.steps, SHIFT[setup.family])
    engine.note_schedule([float(s) for s in sigmas])  # what the runtime hands it from the sampler's schedule
    if len(calls) != setup.steps:
        raise ValueError(f"expected one model call per step ({setup.steps}), recorded {len(calls)}.")
    for index, recorded in enumerate(calls):
        step = StepPoint(index, float(index), float(sigmas[index]), setup.steps)
        size = recorded.last.shape[0] // len(recorded.keys)
        call = engine.begin_call(step, recorded.keys, (size, tuple(recorded.last.shape[1:]), recorded.last.dtype))
        if not call.skips_blocks:  # a plan to forecast before block 0 runs (not the gate's) skips it too
            engine.first_block_output(call, recorded.first)
        if call.skips_blocks:
            forecast = engine.take_forecast(call)
            _, missed = relative_l1_by_stream(forecast.split(size), recorded.last.split(size))
            exam.accepted.append(max(missed))
            blocks = 1
        else:
            engine.last_block_output(call, recorded.last)
            if call.reason == "gate" and call.measured is not None:
                exam.rejected.append(call.measured)
            blocks = len(setup.layout.keys)
        engine.end_call(call, blocks, len(setup.layout.keys))


def run(families=FULL_FAMILIES) -> dict:
    tolerance = node_default().settings["threshold"]  # the calibrated gate's tolerance
    report = {"tolerance": tolerance, "seeds": len(SEEDS), "sampler": "euler", "runs": {}}
    for family in families:
        base = Setup.load(family)
        for sampler, steps in FULL_RUNS[family]:
            if sampler != "euler":
                continue
            setup, exam = replace(base, steps=steps, sampler=sampler), Exam()
            for seed in SEEDS:
                replay(setup, recorded_calls(setup, seed), exam)
            report["runs"][f"{family} {run_key(sampler, steps)}"] = summary = exam.summary(tolerance)
            print(family, steps, summary, flush=True)
    return report


def write(out: Path = RESULTS, families=FULL_FAMILIES) -> None:
    """Take the exam on ``families`` and write ``out``/gate_exam.json (`make bench` does, after its sweep)."""
    started = time.process_time()
    report = run(families)
    report["cpu_seconds"] = round(time.process_time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate_exam.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'gate_exam.json'} ({report['cpu_seconds']} CPU s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=list(FULL_FAMILIES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    write(args.out, args.families)


if __name__ == "__main__":
    main()
