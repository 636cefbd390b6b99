"""The `flexiq` command: train and evaluate for real, the JSON contract, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from flexiq_search.cli import main


@pytest.fixture(scope="module")
def checkpoint(resnet20_checkpoint):
    return resnet20_checkpoint


def run_cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_evaluate_json_contract(checkpoint):
    result = run_cli("evaluate", "--model", "resnet20", "--checkpoint", str(checkpoint), "--dataset", "digits",
                     "--ratios", "0,0.25,0.5,0.75,1", "--calibration", "128", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "resnet20" and report["dataset"] == "digits" and report["samples"] == 359
    for key in ("fp32", "int8"):
        assert isinstance(report[key]["top1"], float) and report[key]["top5"] is None
    assert [r["ratio"] for r in report["ratios"]] == [0, 0.25, 0.5, 0.75, 1]
    for entry in report["ratios"]:
        assert set(entry) >= {"ratio", "top1", "top5", "mac_share_4bit"}
        assert 0 <= entry["top1"] <= 100 and abs(entry["mac_share_4bit"] - entry["ratio"]) < 0.1
    assert report["ratios"][0]["top1"] == report["int8"]["top1"]
    assert report["ratios"][-1]["mac_share_4bit"] == 1.0
    assert report["fp32"]["top1"] > 60, "a trained model, not chance"


def test_human_table(checkpoint, capsys):
    assert main(["evaluate", "--model", "resnet20", "--checkpoint", str(checkpoint), "--dataset", "digits",
                 "--ratios", "0,0.5", "--samples", "100", "--calibration", "64"]) == 0
    out = capsys.readouterr().out
    assert "FP32" in out and "INT8" in out and "50% 4-bit" in out


@pytest.mark.parametrize("args, message", [
    (["--model", "nope", "--dataset", "digits"], "unknown model"),
    (["--model", "resnet20", "--dataset", "nope"], "unknown dataset"),
    (["--model", "resnet20", "--dataset", "digits", "--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
    (["--model", "resnet20", "--dataset", "digits", "--ratios", "0,1.5"], "outside [0, 1]"),
    (["--model", "resnet20", "--dataset", "digits", "--ratios", "0,abc"], "not a number"),
    (["--model", "resnet20", "--dataset", "digits"], "no offline pretrained"),
    (["--model", "resnet20", "--dataset", "digits", "--group-size", "0"], "at least 1"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = main(["evaluate", *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_corrupt_checkpoint_is_refused_by_the_real_command(tmp_path, checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:1000])
    result = run_cli("evaluate", "--model", "resnet20", "--checkpoint", str(corrupt), "--dataset", "digits")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot read checkpoint" in result.stderr


def test_checkpoint_of_another_model_is_refused(checkpoint, capsys):
    assert main(["evaluate", "--model", "resnet18", "--checkpoint", str(checkpoint), "--dataset", "digits"]) == 2
    assert "holds a resnet20 model" in capsys.readouterr().err


def test_demo_trains_searches_and_reuses(tmp_path):
    """The main job end to end on the small data set (a real local Ray); a second run reuses the
    checkpoint and the finished study."""
    env_home = {"FLEXIQ_HOME": str(tmp_path)}
    first = run_cli_env(env_home, "demo", "--dataset", "digits", "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert "Pareto front of demo-resnet20-digits-e1" in first.stdout and "generation" in first.stderr
    assert "npu-sim" in first.stdout and "cpu" in first.stdout
    assert (tmp_path / "flexiq.db").is_file()
    second = run_cli_env(env_home, "demo", "--dataset", "digits", "--epochs", "1")
    assert second.returncode == 0 and second.stderr.count("reusing") == 2
    table = first.stdout[first.stdout.index("Pareto front"):].splitlines()
    assert second.stdout.splitlines() == [line for line in table if not line.startswith("dashboard:")]


def run_cli_env(extra_env, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **extra_env)
    return subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_quant_flags_name_every_registered_observer_and_refuse_others():
    """--observer's help names the registry's observers (the parser does not import torch for them)."""
    from flexiq_search.quant.observers import OBSERVERS

    help_text = " ".join(run_cli("evaluate", "--help").stdout.split())
    assert all(name in help_text for name in OBSERVERS.names())
    result = run_cli("evaluate", "--model", "resnet20", "--dataset", "digits", "--observer", "kmeans")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"flexiq: error: unknown observer 'kmeans'; known: {', '.join(sorted(OBSERVERS))}"]
