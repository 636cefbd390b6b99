"""Export file, integer runtime and its ratio switch, controllers and the serving simulation."""

import pytest
import torch

from flexiq_search.errors import FlexiqError
from flexiq_search.quant.convert import convert_model, set_ratio
from flexiq_search.runtime.controller import create_controller
from flexiq_search.runtime.export import export_model, load_export
from flexiq_search.runtime.runtime import FlexiqRuntime
from flexiq_search.runtime.serving import arrivals, rate_function, serve
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


def test_threshold_controller_jumps_to_the_level_that_carries_the_load():
    """With learned per-request costs, an overload goes straight to the lowest sufficient level."""
    controller = create_controller("threshold", levels=[0.0, 0.25, 0.5, 1.0], slo_ms=10.0, hold=0)
    for ratio, cost in ((0.0, 2.0), (0.25, 1.8), (0.5, 1.6), (1.0, 1.2)):
        controller.observe(ratio, 4, 4 * cost)
    assert controller.decide(0.0, 40, 9.0, arrival_rps=540) == 0.5, "0.25 would run at 97%, 0.5 at 86%"
    assert controller.decide(0.5, 40, 9.0, arrival_rps=2000) == 1.0, "nothing suffices: the top level"
