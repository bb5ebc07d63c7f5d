"""A run's state lives with the run (nodes/sampling_run.py): nothing of one sampling run reaches the next,
two runs at once keep apart, and a run leaves nothing on the node's model once it is over.

Every check compares with what a run does on its own: the same image bit for bit, and the same
statistics, as the same settings sampled through a freshly applied node.
"""

from __future__ import annotations

import gc
import json
import threading
import types
import weakref

import pytest
import torch

from bench.standin.sampling import sample
from bench.tiny import flux_scene, wan_scene
from test_node import ALWAYS, apply_node, runtime_of, server  # noqa: F401  (server is a fixture)


class Interrupted(Exception):
    """What ComfyUI's cancel raises inside sampling (comfy.model_management.InterruptProcessingException)."""


def sampled(scene, patcher, server, **settings) -> tuple[torch.Tensor, dict]:
    """A run's image and the statistics it reported."""
    reported = len(server)
    out = sample(patcher, scene.noise(settings.pop("batch", 1)), scene.positive, scene.negative, **settings)
    assert len(server) == reported + 1, "one report per run"
    return out, server[-1][1]


def alone(scene, server, **settings) -> tuple[torch.Tensor, dict]:
    """The same settings through a node applied afresh: what the run must give whatever ran before."""
    return sampled(scene, apply_node(scene.patcher, **ALWAYS), server, **settings)


def interrupt_inside_a_block(patcher, at_call: int):
    """A patcher whose block 1 raises ``Interrupted`` on its ``at_call``-th run: sampling stops in the middle of
    a model call, with the call's streams claimed and block 0's gate fed."""
    calls = [0]
    original = patcher.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 1)]

    def interrupting(args, extra):
        calls[0] += 1
        if calls[0] == at_call:
            raise Interrupted
        return original(args, extra)

    interrupting.cgtaylor_runtime, interrupting.cgtaylor_previous = original.cgtaylor_runtime, original.cgtaylor_previous
    patches = patcher.model_options["transformer_options"]["patches_replace"]["dit"]
    patches[("double_block", 1)] = interrupting
    return lambda: patches.__setitem__(("double_block", 1), original)


OTHER_SETTINGS = [
    {"cfg": 1.0, "steps": 6},  # one stream instead of two, another schedule
    {"cfg": 3.0, "steps": 10, "batch": 2},  # another batch: every stream's caches of another shape
    {"cfg": 4.0, "steps": 8, "separate_conds": True},  # cond and uncond in calls of their own
]


@pytest.mark.parametrize("settings", OTHER_SETTINGS, ids=["cfg1", "batch2", "separate"])
def test_a_run_interrupted_inside_a_call_leaves_nothing_for_the_next_run(settings, server):
    scene = wan_scene()
    expected, expected_stats = alone(scene, server, **settings)
    patched = apply_node(scene.patcher, **ALWAYS)
    restore = interrupt_inside_a_block(patched, at_call=5)  # step 4 of 8: caches full, forecasting
    with pytest.raises(Interrupted):
        sampled(scene, patched, server, cfg=3.0, steps=8)
    restore()
    assert runtime_of(patched).engine is None
    out, stats = sampled(scene, patched, server, **settings)
    assert torch.equal(out, expected)
    assert stats == expected_stats
    assert stats["totals"]["forecast"] > 0


def test_a_run_that_fails_as_it_starts_leaves_nothing_for_the_next_run(server, monkeypatch):
    """The run's start reads the model's noise range (``percent_to_sigma``, for the start/end window); a
    model sampling that fails there stops sampling before the first call, and leaves no run behind."""
    scene = wan_scene()
    expected, expected_stats = alone(scene, server, cfg=3.0, steps=8)
    patched = apply_node(scene.patcher, **ALWAYS)
    runtime = runtime_of(patched)

    def failing(percent: float) -> float:
        raise ValueError("this model sampling has no noise range")

    with monkeypatch.context() as patch, pytest.raises(ValueError, match="no noise range"):
        patch.setattr(patched.get_model_object("model_sampling"), "percent_to_sigma", failing)
        sample(patched, scene.noise(), scene.positive, scene.negative, cfg=3.0, steps=8)
    assert runtime.engine is None, "the failed run's engine stayed on the node"
    out, stats = sampled(scene, patched, server, cfg=3.0, steps=8)
    assert torch.equal(out, expected) and stats == expected_stats
    assert runtime.engine is None


def test_after_an_interrupted_run_the_node_patches_another_model_as_if_new(server):
    """The same node (graph node 7, executed as ComfyUI executes a V3 node) applied to another model after its
    run on the first was interrupted."""
    from node_driver import patched_by_node

    from cgtaylor_cache.nodes.node import DEFAULTS

    settings = {**DEFAULTS, "warmup_steps": 1, **ALWAYS}
    flux, wan = flux_scene(), wan_scene()
    expected, expected_stats = alone(wan, server, cfg=3.0, steps=8)
    first = patched_by_node(flux.patcher, unique_id="7", **settings)
    restore = interrupt_inside_a_block(first, at_call=5)
    with pytest.raises(Interrupted):
        sampled(flux, first, server, cfg=3.0, steps=8)
    restore()
    out, stats = sampled(wan, patched_by_node(wan.patcher, unique_id="7", **settings), server, cfg=3.0, steps=8)
    assert torch.equal(out, expected) and stats == expected_stats


def test_two_runs_on_two_threads_at_once_keep_apart(server):
    """One patched model sampled on two threads at once, step for step (a barrier in the sampler's
    callback keeps both runs in progress together): each gives what it gives alone."""
    scene = wan_scene()
    settings = [{"cfg": 3.0, "steps": 8}, {"cfg": 5.0, "steps": 8, "batch": 2}]
    expected = [alone(scene, server, **s) for s in settings]
    patched = apply_node(scene.patcher, **ALWAYS)
    together = threading.Barrier(2, timeout=60)
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def step_together(step, x):
        together.wait()

    def sample_on_thread(n: int) -> None:
        try:
            s = dict(settings[n])
            results[n] = sample(patched, scene.noise(s.pop("batch", 1)), scene.positive, scene.negative,
                                callback=step_together, **s)
        except BaseException as error:  # re-raised on the test's thread
            together.abort()
            errors.append(error)

    threads = [threading.Thread(target=sample_on_thread, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for n, (image, _) in enumerate(expected):
        assert torch.equal(results[n], image), f"run {n} differs from the same run alone"
    reported = sorted(json.dumps(event[1], sort_keys=True) for event in server[2:])
    assert reported == sorted(json.dumps(stats, sort_keys=True) for _, stats in expected)
    assert runtime_of(patched).engine is None


def test_a_sampler_run_inside_another_on_the_same_model_leaves_the_outer_run_as_it_was(server):
    """A node that samples the same model inside the sampler's step (a callback here): the inner run has
    its own state, and the outer run goes on with its caches and decisions as if nothing had run."""
    scene = flux_scene()
    outer_settings, inner_settings = {"cfg": 3.0, "steps": 8}, {"cfg": 1.0, "steps": 6}
    outer_expected, outer_stats = alone(scene, server, **outer_settings)
    inner_expected, inner_stats = alone(scene, server, **inner_settings)
    patched = apply_node(scene.patcher, **ALWAYS)
    inner: list[torch.Tensor] = []

    def sample_inside(step, x):
        if step == 3:
            inner.append(sample(patched, scene.noise(), scene.positive, scene.negative, **inner_settings))

    out = sample(patched, scene.noise(), scene.positive, scene.negative, callback=sample_inside, **outer_settings)
    assert torch.equal(inner[0], inner_expected) and server[-2][1] == inner_stats
    assert torch.equal(out, outer_expected) and server[-1][1] == outer_stats


def reachable_tensors(root: object, limit: int = 100_000) -> list[torch.Tensor]:
    """Every tensor reachable from ``root`` through references: object attributes, containers, bound methods,
    closures (not a function's module globals, and not modules or classes: they belong to no run)."""
    seen, found, todo = {id(root)}, [], [root]
    while todo:
        assert len(seen) < limit, "the walk did not end"
        obj = todo.pop()
        if isinstance(obj, torch.Tensor):
            found.append(obj)
            continue
        if isinstance(obj, (types.ModuleType, type, torch.nn.Module)):
            continue
        if isinstance(obj, types.FunctionType):
            refs = [obj.__dict__, *(obj.__defaults__ or ()), *(_contents(cell) for cell in obj.__closure__ or ())]
        else:
            refs = gc.get_referents(obj)
        for ref in refs:
            if id(ref) not in seen:
                seen.add(id(ref))
                todo.append(ref)
    return found


def _contents(cell) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not filled yet
        return None


@pytest.mark.parametrize("interrupted", [False, True], ids=["completed", "interrupted"])
def test_once_a_run_is_over_nothing_of_it_stays_on_the_node(interrupted, server):
    """The run's engine and everything it held (caches, the schedule, the sampler's samples) are freed with the
    run: nothing of them is reachable from the node's runtime, the model it patched or its options."""
    scene = wan_scene()
    patched = apply_node(scene.patcher, **ALWAYS)
    runtime = runtime_of(patched)
    engines: list[weakref.ref] = []
    held: list[weakref.ref] = []

    def watch(step, x):
        engines.append(weakref.ref(runtime.engine))
        held.extend(weakref.ref(t) for t in runtime.engine.cached_tensors())
        if interrupted and step == 4:
            raise Interrupted

    try:
        sample(patched, scene.noise(), scene.positive, scene.negative, cfg=3.0, steps=8, callback=watch)
    except Interrupted:
        pass
    gc.collect()
    assert held and all(ref() is None for ref in held)
    assert engines and all(ref() is None for ref in engines), "a run's engine outlived the run"
    assert reachable_tensors(runtime) == [] and reachable_tensors(patched.model_options) == []
