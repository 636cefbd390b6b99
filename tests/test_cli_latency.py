"""`flexiq latency` on the simulated NPU: the JSON contract, and what the numbers must obey."""

import json

import pytest

from flexiq_search.cli import main

RATIOS = [0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def checkpoint(resnet20_checkpoint):
    return resnet20_checkpoint


def test_latency_json_contract_on_a_trained_model(checkpoint, capsys):
    assert main(["latency", "--backend", "npu-sim", "--model", "resnet20", "--checkpoint", str(checkpoint),
                 "--dataset", "digits", "--calibration", "64", "--rows", "8", "--cols", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "npu-sim" and result["provenance"] == "simulated"
    assert result["hardware"]["rows"] == 8 and "SCALE-Sim" in result["hardware"]["simulator"]
    assert [r["ratio"] for r in result["ratios"]] == RATIOS
    for row in result["ratios"]:
        assert row["cycles"] == sum(layer["cycles"] for layer in row["layers"])
        assert row["latency_us"] == pytest.approx(row["cycles"] / result["hardware"]["clock_mhz"])
        assert {"name", "latency_us", "cycles"} <= set(row["layers"][0])
    speedups = [r["speedup_vs_int8"] for r in result["ratios"]]
    assert speedups[0] == 1.0 and speedups == sorted(speedups) and 1.0 < speedups[-1] <= 2.0
    assert 0 < result["switch_us"] < 1


def test_depthwise_model_with_random_weights(capsys):
    """Shapes only (no data): a MobileNetV2's grouped convs go through the per-group path."""
    assert main(["latency", "--model", "mobilenetv2_100", "--image-size", "64", "--ratios", "0,1",
                 "--dataflow", "ws", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    depthwise = [layer for layer in result["ratios"][1]["layers"] if "conv_dw" in layer["name"]]
    assert depthwise and result["ratios"][1]["speedup_vs_int8"] > 1.0


def test_unknown_backend_is_bad_input(capsys):
    assert main(["latency", "--backend", "tpu", "--model", "resnet20", "--image-size", "32"]) == 2
    assert "unknown latency backend" in capsys.readouterr().err


def test_cpu_backend_measures_the_integer_path(checkpoint, capsys):
    """Measured on this CPU: the contract, no cycles, per-layer times (22 conv/linear layers) inside the total."""
    assert main(["latency", "--backend", "cpu", "--model", "resnet20", "--checkpoint", str(checkpoint),
                 "--dataset", "digits", "--calibration", "32", "--batch", "4", "--rounds", "3",
                 "--ratios", "0.5,1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "cpu" and result["provenance"] == "measured"
    assert result["hardware"]["device"] == "cpu" and result["hardware"]["threads"] >= 1
    assert [r["ratio"] for r in result["ratios"]] == [0.5, 1.0]
    for row in result["ratios"]:
        assert row["cycles"] is None and row["latency_us"] > 0 and row["speedup_vs_int8"] > 0
        assert len(row["layers"]) == 22 and all(layer["cycles"] is None for layer in row["layers"])
        assert 0 < sum(layer["latency_us"] for layer in row["layers"]) < row["latency_us"] * 1.5
    assert result["switch_us"] > 0
