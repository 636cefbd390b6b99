"""Export file, integer runtime and its ratio switch, controllers and the serving simulation."""

import statistics

import pytest
import torch

from flexiq_search.errors import FlexiqError
from flexiq_search.quant.convert import convert_model, set_ratio
from flexiq_search.runtime.controller import create_controller
from flexiq_search.runtime.export import export_model, load_export
from flexiq_search.runtime.runtime import FlexiqRuntime
from flexiq_search.runtime.serving import arrivals, peak_classifier, rate_function, serve
from flexiq_search.selection import apply_selection, create_strategy

LEVELS = [0.25, 0.5, 1.0]


@pytest.fixture(scope="module")
def exported(trained_resnet20, digits_batches, tmp_path_factory):
    from flexiq_search.config import QuantConfig

    qmodel = convert_model(trained_resnet20, digits_batches)
    selection = create_strategy("range").select(qmodel, LEVELS)
    apply_selection(qmodel, selection)
    path = tmp_path_factory.mktemp("export") / "r20.flexiq"
    export_model(path, qmodel, model_name="resnet20", model_kwargs={"num_classes": 10, "in_chans": 1},
                 input_shape=[1, 1, 8, 8], quant=QuantConfig(), selection=selection,
                 accuracy={0.0: 95.0, 0.25: 94.5, 0.5: 94.0, 1.0: 90.0}, provenance={"test": True})
    return path, qmodel


def test_the_runtime_reproduces_the_converted_model_at_every_level(exported, digits_batches):
    path, qmodel = exported
    runtime = FlexiqRuntime.load(path)
    images = digits_batches[0][:16]
    assert runtime.levels == [0.0] + LEVELS and runtime.accuracy(0.5) == 94.0
    with torch.no_grad():
        for ratio in runtime.levels:
            set_ratio(qmodel, ratio)
            runtime.set_ratio(ratio)
            assert torch.equal(runtime(images), qmodel(images)), ratio
    set_ratio(qmodel, 0)
    with pytest.raises(FlexiqError, match="not a level"):
        runtime.set_ratio(0.75)
    assert runtime.switch_microseconds(repeats=200) < 1000  # the benchmark measures it; here: no packing


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "truncated or altered"),
    (lambda data: data[:-10] + bytes(10), "truncated or altered"),
    (lambda data: b"PK" + data[2:], "not a flexiq export"),
])
def test_damaged_exports_are_refused(exported, tmp_path, damage, message):
    path, _ = exported
    broken = tmp_path / "broken.flexiq"
    broken.write_bytes(damage(path.read_bytes()))
    with pytest.raises(FlexiqError, match=message):
        load_export(broken)


def test_threshold_controller_has_hysteresis():
    controller = create_controller("threshold", levels=[0.0, 0.5, 1.0], slo_ms=10.0, calm=3)
    assert controller.decide(0.0, 0, 9.0) == 0.5, "over 80% of the SLO: one level up"
    assert controller.decide(0.5, 0, 6.0) == 0.5, "between the marks: hold"
    assert [controller.decide(0.5, 0, 3.0) for _ in range(3)] == [0.5, 0.5, 0.0], "down only after a calm streak"
    assert controller.decide(1.0, 50, 1.0) == 1.0, "already at the top"
    with pytest.raises(FlexiqError, match="unknown controller"):
        create_controller("pid", levels=[0.0], slo_ms=1.0)


def test_adaptive_serving_keeps_the_slo_at_the_peak_where_int8_does_not():
    """Latencies of a simulated accelerator (1.7x faster at 100% 4-bit); load swinging low -> 3x."""
    latency_ms = {0.0: 2.0, 0.25: 1.8, 0.5: 1.6, 1.0: 1.18}
    accuracy = {0.0: 92.0, 0.25: 91.8, 0.5: 91.5, 1.0: 88.0}
    levels = sorted(latency_ms)
    times = arrivals(rate_function("steps", 200.0, 40.0), 40.0, 100000, seed=0)  # peak 600 rps > INT8's 500
    service = lambda ratio, batch: latency_ms[ratio] * batch  # noqa: E731
    runs = {
        "int8": serve(times, create_controller("static", levels=levels, slo_ms=50, ratio=0.0), service, 8, "int8"),
        "int4": serve(times, create_controller("static", levels=levels, slo_ms=50, ratio=1.0), service, 8, "int4"),
        "adaptive": serve(times, create_controller("threshold", levels=levels, slo_ms=50), service, 8, "adaptive"),
    }
    summary = {name: run.summary(50, accuracy.__getitem__) for name, run in runs.items()}
    assert summary["int8"]["p50_ms"] > 50 and summary["adaptive"]["p50_ms"] < 50
    assert summary["adaptive"]["mean_accuracy"] > summary["int4"]["mean_accuracy"]
    assert 0 < summary["adaptive"]["switches"] < 200, "switches with the load, does not flap"
    assert summary["int8"]["switches"] == 0 and len(runs["adaptive"].latencies_ms) == len(times)


def test_peak_p50_shows_int8_late_at_the_peaks_only_and_adaptive_within_the_slo():
    """Steps trace (200 <-> 600 rps, 10 s quarters) on an accelerator where INT8 carries 500 rps: INT8
    is overloaded only in the 3x quarters. The split is by ARRIVAL time, checked against a hand split."""
    latency_ms = {0.0: 2.0, 0.25: 1.8, 0.5: 1.6, 1.0: 1.18}
    levels = sorted(latency_ms)
    rate = rate_function("steps", 200.0, 40.0)
    times = arrivals(rate, 40.0, 100000, seed=0)
    service = lambda ratio, batch: latency_ms[ratio] * batch  # noqa: E731
    peak = peak_classifier(rate, 40.0)
    assert [peak(t) for t in (5.0, 15.0, 25.0, 35.0)] == [False, True, False, True]
    int8 = serve(times, create_controller("static", levels=levels, slo_ms=50, ratio=0.0), service, 8, "int8")
    adaptive = serve(times, create_controller("threshold", levels=levels, slo_ms=50), service, 8, "adaptive")
    summary = {run.policy: run.summary(50, lambda r: 90.0, peak) for run in (int8, adaptive)}
    assert summary["int8"]["peak_p50_ms"] > 50 > summary["int8"]["offpeak_p50_ms"], "late at the peaks only"
    assert summary["int8"]["peak_slo_violation_rate"] > 0.5
    assert summary["adaptive"]["peak_p50_ms"] <= 50 and summary["adaptive"]["peak_slo_violation_rate"] < 0.05
    in_peak_quarter = [int(t // 10) % 2 == 1 for t in int8.arrivals_s]
    assert summary["int8"]["peak_requests"] == sum(in_peak_quarter) and 0.7 < sum(in_peak_quarter) / len(times) < 0.8
    peak_latencies = [latency for latency, flag in zip(int8.latencies_ms, in_peak_quarter) if flag]
    offpeak_latencies = [latency for latency, flag in zip(int8.latencies_ms, in_peak_quarter) if not flag]
    assert summary["int8"]["peak_p50_ms"] == statistics.median_low(peak_latencies)
    assert summary["int8"]["offpeak_p50_ms"] == statistics.median_low(offpeak_latencies)
    by_completion = [latency for latency, arrived in zip(int8.latencies_ms, int8.arrivals_s)
                     if int((arrived + latency / 1000) // 10) % 2 == 1]
    assert statistics.median_low(by_completion) != summary["int8"]["peak_p50_ms"], "the test tells the two apart"
    for key in ("p50_ms", "p90_ms", "p99_ms", "slo_violation_rate", "switches", "requests"):
        assert summary["int8"][key] == int8.summary(50, lambda r: 90.0)[key], "the overall keys do not change"


def test_a_flat_trace_has_no_peak_and_a_file_trace_splits_at_its_mid_rate(tmp_path):
    flat = rate_function("poisson", 300.0, 10.0)
    assert peak_classifier(flat, 10.0) is None
    times = arrivals(flat, 10.0, 100000, seed=1)
    run = serve(times, create_controller("static", levels=[0.0], slo_ms=5, ratio=0.0), lambda r, b: 1.0 * b, 8, "int8")
    summary = run.summary(5, lambda r: 90.0, peak_classifier(flat, 10.0))
    assert {key: summary[key] for key in ("peak_p50_ms", "offpeak_p50_ms", "peak_slo_violation_rate",
                                          "peak_requests")} == dict.fromkeys(
        ("peak_p50_ms", "offpeak_p50_ms", "peak_slo_violation_rate", "peak_requests"))
    assert summary["p50_ms"] is not None
    trace = tmp_path / "trace.csv"
    trace.write_text("# time_s,rate_rps\n0,100\n1,200\n2,400\n3,100\n")
    stepped = rate_function(f"file:{trace}", 0.0, 4.0)
    peak = peak_classifier(stepped, 4.0)
    assert [peak(t) for t in (0.5, 1.5, 2.5, 3.5)] == [False, False, True, False], "mid rate 250 rps"


def test_threshold_controller_jumps_to_the_level_that_carries_the_load():
    """With learned per-request costs, an overload goes straight to the lowest sufficient level."""
    controller = create_controller("threshold", levels=[0.0, 0.25, 0.5, 1.0], slo_ms=10.0, hold=0)
    for ratio, cost in ((0.0, 2.0), (0.25, 1.8), (0.5, 1.6), (1.0, 1.2)):
        controller.observe(ratio, 4, 4 * cost)
    assert controller.decide(0.0, 40, 9.0, arrival_rps=540) == 0.5, "0.25 would run at 97%, 0.5 at 86%"
    assert controller.decide(0.5, 40, 9.0, arrival_rps=2000) == 1.0, "nothing suffices: the top level"
