"""`flexiq select`, `evaluate --selection` and `finetune`: JSON contracts, a real round trip, errors."""

import json

import pytest

from flexiq_search.cli import main
from tests.test_cli import run_cli

MODEL = ["--model", "resnet20", "--dataset", "digits"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "r20-digits.pt"
    assert main(["train", *MODEL, "--epochs", "4", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def evolved(checkpoint, tmp_path_factory):
    """A real evolutionary selection through the real command (a subprocess), and its JSON report."""
    out = tmp_path_factory.mktemp("sel") / "evolution.json"
    result = run_cli("select", *MODEL, "--checkpoint", str(checkpoint), "--method", "evolution", "--seed", "5",
                     "--population", "6", "--generations", "2", "--calibration", "96", "--group-size", "4",
                     "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


def test_select_json_contract(evolved):
    path, report = evolved
    assert report["method"] == "evolution" and report["seed"] == 5
    assert isinstance(report["seconds"], float) and report["evaluations"] > 0
    assert [level["ratio"] for level in report["levels"]] == [0.25, 0.5, 0.75, 1.0]
    fitness = [level["fitness"] for level in report["levels"]]
    # Levels are nested, but KL need not grow with every step (errors can cancel, and each winner is
    # chosen on the validation images, not the ones scored here); all-4-bit is the farthest.
    assert 0 < fitness[0] < fitness[-1] and max(fitness) == fitness[-1], "more 4-bit, further from INT8"
    assert report["levels"][-1]["mac_share_4bit"] == 1.0
    stored = json.loads(path.read_text())
    assert stored["format"] == "flexiq-selection" and stored["group_size"] == 4
    assert stored["provenance"]["calibration"] == 96 and stored["provenance"]["seed"] == 5
    assert all(layer["act_shift"] is not None for layer in stored["layers"].values())


def test_evaluate_with_selection_keeps_the_contract(checkpoint, evolved, capsys):
    path, report = evolved
    assert main(["evaluate", *MODEL, "--checkpoint", str(checkpoint), "--selection", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "evolution" and result["quant_config"]["_data"]["group_size"] == 4
    assert result["calibration"] == 96, "the selection's calibration size is reused"
    shares = {r["ratio"]: r["mac_share_4bit"] for r in result["ratios"]}
    assert shares == {r: level["mac_share_4bit"] for r, level in
                      [(0, {"mac_share_4bit": 0.0})] + [(lv["ratio"], lv) for lv in report["levels"]]}


@pytest.mark.parametrize("method", ["range", "greedy-error", "random", "uniform-int4", "hawq"])
def test_every_baseline_runs_from_the_command_line(method, checkpoint, tmp_path, capsys):
    out = tmp_path / f"{method}.json"
    assert main(["select", *MODEL, "--checkpoint", str(checkpoint), "--method", method, "--calibration", "64",
                 "--ratios", "0.5,1", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == method and len(report["levels"]) == 2


def test_finetune_writes_a_checkpoint_that_evaluate_reads(checkpoint, evolved, tmp_path, capsys):
    path, _ = evolved
    tuned = tmp_path / "tuned.pt"
    assert main(["finetune", *MODEL, "--checkpoint", str(checkpoint), "--selection", str(path), "--epochs", "1",
                 "--train-samples", "256", "--batch-size", "64", "--lr", "3e-4", "--out", str(tuned), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_samples"] == 256 and summary["levels"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert main(["evaluate", *MODEL, "--checkpoint", str(tuned), "--ratios", "0,0.5,1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "evolution" and report["quant_config"]["_data"]["group_size"] == 4
    assert report["fp32"]["top1"] > 60 and report["ratios"][-1]["mac_share_4bit"] == 1.0


@pytest.mark.parametrize("extra, message", [
    (["--method", "nope"], "unknown selection method"),
    (["--method", "hawq", "--budget", "per-layer"], "global budget"),
    (["--ratios", "0"], "at least one level"),
    (["--method", "evolution", "--population", "1"], "population"),
])
def test_select_bad_input(extra, message, checkpoint, tmp_path, capsys):
    args = ["select", *MODEL, "--checkpoint", str(checkpoint), "--calibration", "32", "--out", str(tmp_path / "s.json")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "s.json").exists()


def test_evaluate_refuses_bad_selections(checkpoint, evolved, tmp_path, capsys):
    path, _ = evolved
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    cases = [
        (["--selection", str(garbage)], "not JSON"),
        (["--selection", str(tmp_path / "missing.json")], "cannot read selection"),
        (["--selection", str(path), "--ratios", "0,0.3"], "not a level of the selection"),
    ]
    for extra, message in cases:
        assert main(["evaluate", *MODEL, "--checkpoint", str(checkpoint), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
