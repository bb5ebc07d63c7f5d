"""Where the cache rests: bit-identical results on the device and in host memory, copies counted,
slice-wise working buffers, in-place updates, and the auto placement's budget.

Here the device and the host are both the CPU, so the host store's copies are CPU to CPU; what
shows that the offload path is taken is what it counts: every byte a forecast or an update moves,
each term read one slice at a time.
"""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from core import Placement, TaylorForecaster
from core import placement as placement_module
from core.placement import DeviceStore, HostStore, TransferMeter

POSITIONS = [0.0, 1.0, 2.5, 3.0, 3.0, 4.75, 6.0, 6.5]  # uneven gaps, one repeated (heun's corrector)


def trajectory(n: int, seed: int, dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(2, 37, 11, generator=generator)
    return [(base * (1 + 0.3 * i) + torch.randn(2, 37, 11, generator=generator)).to(dtype) for i in range(n)]


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of 100 values, so a 2 x 37 x 11 state (814 values) takes 9 of them, the last a partial one."""
    monkeypatch.setattr(placement_module, "SLICE_VALUES", 100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_host_and_device_forecasts_are_bit_identical(small_slices, order, dtype):
    meter = TransferMeter()
    on_device = TaylorForecaster(order)
    on_host = TaylorForecaster(order, lambda feature: HostStore(torch.device("cpu"), meter))
    for x, feature in zip(POSITIONS, trajectory(len(POSITIONS), order, dtype)):
        assert on_device.update(feature, x) == on_host.update(feature, x)
        for target in (x + 0.5, x + 2.0):
            for lower in {None, *range(on_device.current_order + 1)}:
                assert torch.equal(on_device.predict(target, lower), on_host.predict(target, lower))
        assert on_host.progress(feature) == on_device.progress(feature)
    assert isinstance(on_host.store, HostStore) and isinstance(on_device.store, DeviceStore)
    assert meter.to_device > 0 and meter.to_host > 0


def test_slices_change_no_bit_of_a_forecast(monkeypatch):
    """The same cache computed in one slice and in many: elementwise arithmetic does not care."""
    whole = TaylorForecaster(2)
    for x, feature in zip(POSITIONS, trajectory(len(POSITIONS), 7, torch.bfloat16)):
        whole.update(feature, x)
    monkeypatch.setattr(placement_module, "SLICE_VALUES", 64)
    sliced = TaylorForecaster(2)
    for x, feature in zip(POSITIONS, trajectory(len(POSITIONS), 7, torch.bfloat16)):
        sliced.update(feature, x)
    assert torch.equal(whole.predict(7.25), sliced.predict(7.25))


def test_a_forecast_moves_the_terms_it_uses_and_an_update_what_it_reads_and_writes(small_slices):
    meter = TransferMeter()
    forecaster = TaylorForecaster(2, lambda feature: HostStore(torch.device("cpu"), meter))
    states = trajectory(5, 1, torch.bfloat16)
    state_bytes = states[0].numel() * 2
    for n, (x, feature) in enumerate(zip((0.0, 1.0, 2.0, 3.0), states)):
        before = meter.to_device, meter.to_host
        forecaster.update(feature, x)
        read = min(n, 2)  # the divided differences read the newest terms, never the one dropping out
        assert (meter.to_device - before[0], meter.to_host - before[1]) == (read * state_bytes, (read + 1) * state_bytes)
    for lower, terms in ((None, 3), (1, 2), (0, 1)):
        before = meter.total
        forecaster.predict(4.0, lower)
        assert meter.total - before == terms * state_bytes


def test_updates_rewrite_the_cache_in_place(small_slices):
    """Once full, an update reuses the cache's own tensors (the oldest term's for the new value): the
    cache never holds a second set, on the device or in host memory."""
    for place in (None, lambda feature: HostStore(torch.device("cpu"), TransferMeter())):
        forecaster = TaylorForecaster(2, place)
        states = trajectory(6, 2, torch.float32)
        for x, feature in zip(range(3), states):
            forecaster.update(feature, float(x))
        storage = {t.data_ptr() for t in forecaster.tensors()}
        for x, feature in zip(range(3, 6), states[3:]):
            forecaster.update(feature, float(x))
            assert {t.data_ptr() for t in forecaster.tensors()} == storage


def test_the_device_holds_one_slice_of_working_buffers(small_slices):
    """Every read of an offloaded term is one slice, and at most two read slices are alive at once."""
    live, peak = [0], [0]

    class Watched(HostStore):
        def read(self, term, part, device):
            values = super().read(term, part, device)
            assert values.numel() <= placement_module.SLICE_VALUES
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            weakref.finalize(values, lambda: live.__setitem__(0, live[0] - 1))
            return values

    forecaster = TaylorForecaster(3, lambda feature: Watched(torch.device("cpu"), TransferMeter()))
    for x, feature in zip(POSITIONS, trajectory(len(POSITIONS), 3, torch.bfloat16)):
        forecaster.update(feature, x)
        forecaster.predict(x + 1.0)
    assert 1 <= peak[0] <= 2


def test_a_forecast_can_be_written_into_a_given_tensor(small_slices):
    forecaster = TaylorForecaster(1)
    states = trajectory(2, 4, torch.float32)
    forecaster.update(states[0], 0.0)
    forecaster.update(states[1], 1.0)
    batch = torch.empty(4, 37, 11)
    part = batch[2:]
    assert forecaster.predict(2.0, out=part) is part
    assert torch.equal(part, forecaster.predict(2.0))


def test_offloaded_terms_stay_in_host_memory_when_the_stream_moves():
    meter = TransferMeter()
    forecaster = TaylorForecaster(1, lambda feature: HostStore(torch.device("cpu"), meter))
    forecaster.update(torch.ones(3), 0.0)
    stored = forecaster.tensors()
    forecaster.to(torch.device("meta"))  # another device: only where forecasts go changes
    assert forecaster.device == torch.device("meta") and forecaster.tensors() == stored


def test_auto_keeps_streams_on_the_device_while_they_fit_the_budget():
    placement = Placement("auto", host=torch.device("cpu"), budget=100)
    assert not placement.store_for(60).offloaded
    assert placement.store_for(60).offloaded  # 120 > 100: host memory
    assert not placement.store_for(40).offloaded  # 100: still fits
    assert all(not Placement("auto").store_for(10**15).offloaded for _ in range(2))  # nothing measured: device
    assert not Placement("auto", host=None, budget=0).store_for(1).offloaded  # no offload device: device
    assert not Placement("gpu", host=torch.device("cpu"), budget=0).store_for(1).offloaded
    cpu = Placement("cpu").store_for(1)
    assert cpu.offloaded and cpu.host == torch.device("cpu")


@pytest.mark.parametrize(("choice", "on_host", "in_plan", "settled"), [
    ("gpu", False, (False, False), (None, None)),
    ("cpu", False, (True, True), (torch.device("cpu"), None)),
    ("auto", False, (False, True), (torch.device("cpu"), 123)),
    ("auto", True, (False, False), (None, None)),  # the model in system RAM: nothing to offload to
    ("cpu", True, (True, True), (torch.device("cpu"), None)),
])
def test_what_cache_device_means_before_and_after_comfyui_loads_the_model(choice, on_host, in_plan, settled):
    """One place decides: what ComfyUI's two estimates count as offloaded, and where the caches rest once
    the model is loaded; the free memory behind auto's budget is asked for only where it is used."""
    placement = Placement(choice)
    assert placement.offloaded_in_plan(on_host) == in_plan
    asked = []
    placement.settle(torch.device("cpu"), lambda: asked.append(True) or 123, on_host)
    assert (placement.host, placement.budget) == settled
    assert asked == ([True] if choice == "auto" and not on_host else [])
    for offload in (False, True):  # what a memory plan sizes: whatever the node's choice, nothing allocated
        store = Placement.sizing(offload).store_for(10**12)
        assert store.offloaded is offload and (not offload or store.host == torch.device("meta"))


def test_an_unknown_placement_is_a_clear_error():
    with pytest.raises(ValueError, match=r"cache_device must be one of \('auto', 'gpu', 'cpu'\)"):
        Placement("disk")


@pytest.mark.parametrize("offset", [False, True], ids=["plain", "residual"])
def test_a_forecast_measured_slice_by_slice_misses_by_what_the_whole_one_does(monkeypatch, offset):
    """``miss`` gives the sums per image a comparison of the whole forecast gives: bit for bit in one slice, to
    float32 rounding in many (slices that cut images apart, and slices that hold several), without a
    forecast-sized tensor."""
    states = trajectory(4, 5, torch.bfloat16)
    actual, anchor = states[3], (states[0] if offset else None)

    def measured(slice_values: int):
        monkeypatch.setattr(placement_module, "SLICE_VALUES", slice_values)
        forecaster = TaylorForecaster(2, lambda feature: HostStore(torch.device("cpu"), TransferMeter()))
        for x, feature in zip((0.0, 1.0, 2.5), states):
            forecaster.update(feature, x)
        whole = forecaster.predict(3.0, 1)
        if offset:
            whole.add_(anchor)
        expected = ((whole.float() - actual.float()).flatten(1).abs().sum(1), actual.float().flatten(1).abs().sum(1))
        return forecaster.miss(actual, 3.0, 1, anchor), expected

    (missed, size), (whole_missed, whole_size) = measured(10**6)
    assert missed.shape == (actual.shape[0],)
    torch.testing.assert_close(missed, whole_missed, rtol=1e-6, atol=0)
    torch.testing.assert_close(size, whole_size, rtol=1e-6, atol=0)
    per_image = actual[0].numel()
    for slice_values in (100, per_image // 2 + 1, 3 * per_image):
        (missed, size), (whole_missed, whole_size) = measured(slice_values)
        torch.testing.assert_close(missed, whole_missed, rtol=1e-6, atol=0)
        torch.testing.assert_close(size, whole_size, rtol=1e-6, atol=0)
    forecaster = TaylorForecaster(0)
    forecaster.update(actual, 0.0)
    with pytest.raises(ValueError, match="does not match"):
        forecaster.miss(actual[:1], 1.0)


# --- what crosses between host and device, and what the device holds --------------------------


class CopiesAcross(TorchDispatchMode):
    """Records every copy into or out of the given host terms: (direction, dtype on the host side,
    dtype on the device side, bytes). Host and device are both the CPU here, so a term's storage is
    what tells the host side apart."""

    def __init__(self, terms: list[torch.Tensor]) -> None:
        super().__init__()
        self.storages = {term.untyped_storage().data_ptr() for term in terms}
        self.gathered: list[torch.Tensor] = []  # kept alive, so no later tensor takes their addresses
        self.copies: list[tuple[str, torch.dtype, torch.dtype, int]] = []

    def _on_host(self, tensor: torch.Tensor) -> bool:
        return tensor.untyped_storage().data_ptr() in self.storages

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten.index_select.default and self._on_host(args[0]):
            self.storages.add(out.untyped_storage().data_ptr())  # rows gathered on the host, to cross next
            self.gathered.append(out)
        elif func is torch.ops.aten.copy_.default and self._on_host(args[0]):
            self.copies.append(("to host", args[0].dtype, args[1].dtype, args[0].numel() * args[0].element_size()))
        elif func is torch.ops.aten._to_copy.default and self._on_host(args[0]):
            self.copies.append(("to device", args[0].dtype, out.dtype, out.numel() * out.element_size()))
        return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_every_byte_crosses_in_the_terms_dtype_and_the_meter_counts_it(small_slices, dtype):
    """Float32 values written to half-precision host terms are converted on the device first: a copy
    across devices converts on the host side, so the float32 slice would cross the bus (twice the bytes
    of a bf16 one). Reads cross in the terms' dtype too, and the meter counts exactly what crossed:
    updates, a corrector's replacement, forecasts, a forecast at a sample of rows and block 0's trend."""
    meter = TransferMeter()
    forecaster = TaylorForecaster(2, lambda feature: HostStore(torch.device("cpu"), meter))
    states = trajectory(7, 8, dtype)
    for x, feature in zip((0.0, 1.0, 2.0), states):
        forecaster.update(feature, x)
    before = meter.to_device, meter.to_host
    with CopiesAcross(forecaster.tensors()) as watched:
        forecaster.update(states[3], 3.0)
        forecaster.update(states[4], 4.0)
        forecaster.update(states[5], 4.0)  # a corrector at the newest position
        forecaster.predict(5.0)
        forecaster.predict_rows(torch.tensor([0, 2, 5]), 5.0, order=1)
        forecaster.progress(states[6])
    assert {(host, device) for _, host, device, _ in watched.copies} == {(dtype, dtype)}
    moved = {direction: sum(size for d, *_, size in watched.copies if d == direction)
             for direction in ("to device", "to host")}
    assert moved == {"to device": meter.to_device - before[0], "to host": meter.to_host - before[1]}
    assert moved["to host"] > 0 and moved["to device"] > 0


def allocator_peak(operation) -> int:
    """The most bytes the CPU allocator held at once while ``operation`` ran, beyond what it held before."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        operation()
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


SCALARS = 256  # the reductions' 0-d results and a miss's two float32 sums, alive beside a slice's buffers


@pytest.mark.parametrize("offloaded", [True, False], ids=["host", "device"])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_the_device_working_set_is_what_working_bytes_accounts(monkeypatch, dtype, order, offloaded):
    """Every slice-wise operation of a cache, against the allocator: none holds more than ``working_bytes``,
    and at the node's default order (2) the largest holds all of it. Host and device are both the CPU here,
    so every buffer counts; the arithmetic converts explicitly, so a CUDA device allocates the same (no
    hidden float32 copies of a mixed-dtype operation, which the CPU makes and CUDA does not)."""
    monkeypatch.setattr(placement_module, "SLICE_VALUES", 4096)
    meter = TransferMeter()
    forecaster = TaylorForecaster(order, (lambda feature: HostStore(torch.device("cpu"), meter)) if offloaded else None)
    generator = torch.Generator().manual_seed(order)
    states = [torch.randn(2, 5000, generator=generator).to(dtype) for _ in range(order + 6)]
    for x, feature in enumerate(states[: order + 1]):
        forecaster.update(feature, float(x))
    x = float(order + 1)
    out = torch.empty(2, 5000, dtype=dtype)
    operations = {
        "update": lambda: forecaster.update(states[order + 1], x),
        "second update": lambda: forecaster.update(states[order + 2], x + 1),
        "corrector": lambda: forecaster.update(states[order + 3], x + 1),
        "forecast": lambda: forecaster.predict(x + 2, out=out),
        "miss": lambda: forecaster.miss(states[0], x + 2),
        "trend": lambda: forecaster.progress(states[order + 5]),
    }
    peaks = {name: allocator_peak(operation) for name, operation in operations.items()}
    bound = placement_module.working_bytes(dtype, 10_000, order)
    assert all(peak <= bound + SCALARS for peak in peaks.values()), (peaks, bound)
    if order == 2 and offloaded:
        assert max(peaks.values()) > bound - SCALARS, (peaks, bound)
    rows = torch.arange(0, 5000, 7)  # a sample of the tokens: the forecast a judged call measures
    peak = allocator_peak(lambda: forecaster.predict_rows(rows, x + 2))
    assert peak <= placement_module.row_bytes(dtype, 2 * len(rows), order) + SCALARS, peak


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_gates_judgement_holds_a_slice_not_a_forecast(monkeypatch, dtype):
    """Block 0's forecasts of every order are compared with its output slice by slice: at video sizes a
    whole float32 forecast of the gate's sample per stream and order came to about 0.4 GB (Wan 14B 720p
    with cfg) beside everything ``working_bytes`` counts."""
    from core import ConfidenceGated, ForecastEngine, Schedule, StepPoint

    monkeypatch.setattr(placement_module, "SLICE_VALUES", 4096)
    engine = ForecastEngine(ConfidenceGated(1e-12, Schedule(warmup_steps=0)), 2, 0)
    generator = torch.Generator().manual_seed(3)
    states = [torch.randn(2, 20_000, generator=generator).to(dtype) for _ in range(5)]

    def call(index: int):
        step = StepPoint(index, float(index), 1.0 - index / 10, 10)
        planned = engine.begin_call(step, ["cond", "uncond"], ("s",))
        return planned

    for index in range(3):  # three refreshes: block 0's cache at order 2
        planned = call(index)
        engine.first_block_output(planned, states[index])
        engine.last_block_output(planned, states[index][:, :10])
        engine.end_call(planned, 2, 2)
    planned = call(4)
    peak = allocator_peak(lambda: engine.first_block_output(planned, states[4]))
    assert planned.gate_error is not None  # judged, with orders 2, 1 and 0
    assert peak <= placement_module.working_bytes(dtype, 20_000, 2) + SCALARS, peak
