"""`export_study` turns a stored trial into a .flexiq file the runtime serves; `serve_bench` contract."""

import json

import pytest

from flexiq_search.cli import main
from flexiq_search.errors import FlexiqError
from flexiq_search.runtime.bench import export_study, serve_bench
from flexiq_search.runtime.runtime import FlexiqRuntime
from flexiq_search.store import Repository


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, resnet20_checkpoint):
    folder = tmp_path_factory.mktemp("study")
    checkpoint = resnet20_checkpoint
    url = f"sqlite:///{folder / 'db.sqlite'}"
    assert main(["search", "--no-ray", "--model", "resnet20", "--dataset", "digits", "--checkpoint", str(checkpoint),
                 "--backends", "npu-sim", "--calibration", "64", "--eval-samples", "200", "--population", "4",
                 "--generations", "1", "--name", "s", "--db", url]) == 0
    return url


def test_a_stored_trial_exports_and_serves(study_db, tmp_path):
    repo = Repository.open(study_db)
    summary = export_study(repo, "s", str(tmp_path / "m.flexiq"), point=0)
    assert summary["trial"] == 0 and summary["levels"] == [0.25, 0.5, 0.75, 1.0]
    runtime = FlexiqRuntime.load(summary["path"])
    assert runtime.accuracy(0.5) == summary["accuracy"][0.5] and runtime.exported.manifest["provenance"]["study"] == "s"
    with pytest.raises(FlexiqError, match="no trial 7"):
        export_study(repo, "s", str(tmp_path / "x.flexiq"), trial=7)
    result = serve_bench(summary["path"], trace="steps", slo_ms=5.0, duration_s=4.0, backend="npu-sim")
    assert result["latency_source"]["provenance"] == "simulated"
    assert [run["policy"] for run in result["runs"]] == ["adaptive", "int8", "int4"]
    for run in result["runs"]:
        assert set(run) >= {"policy", "p50_ms", "p90_ms", "p99_ms", "throughput_rps", "slo_violation_rate",
                            "mean_accuracy", "switches"}
    assert result["switch_us"] > 0
    repo.close()


def test_export_and_serve_bench_commands(study_db, tmp_path, capsys):
    model = tmp_path / "cli.flexiq"
    assert main(["export", "--study", "s", "--out", str(model), "--db", study_db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == 0
    assert main(["serve-bench", "--model", str(model), "--slo-ms", "5", "--duration", "3", "--json",
                 "--plot", str(tmp_path / "t.html")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"slo_ms", "runs", "switch_us", "latency_source"}
    for run in result["runs"]:  # the steps trace has peaks: p50 split by load, by arrival time
        assert set(run) >= {"policy", "p50_ms", "p90_ms", "p99_ms", "throughput_rps", "slo_violation_rate",
                            "mean_accuracy", "switches", "peak_p50_ms", "offpeak_p50_ms", "peak_slo_violation_rate"}
        assert run["peak_p50_ms"] > 0 and run["offpeak_p50_ms"] > 0 and 0 < run["peak_requests"] < run["requests"]
    assert main(["serve-bench", "--model", str(model), "--slo-ms", "5", "--duration", "3", "--json",
                 "--trace", "poisson"]) == 0
    assert all(run["peak_p50_ms"] is None and run["offpeak_p50_ms"] is None
               for run in json.loads(capsys.readouterr().out)["runs"]), "a flat trace has no peak"
    assert result["latency_source"]["backend"] == "npu-sim" and (tmp_path / "t.html").is_file()
    assert main(["serve-bench", "--model", str(model), "--slo-ms", "5", "--duration", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "peak p50" in table[1] and [line.split()[0] for line in table[2:5]] == ["adaptive", "int8", "int4"]
    int8 = next(run for run in result["runs"] if run["policy"] == "int8")
    assert table[3].split()[2] == f"{int8['peak_p50_ms']:.3f}", "the table shows the JSON's peak p50"
    model.write_bytes(model.read_bytes()[:-100])
    assert main(["serve-bench", "--model", str(model), "--slo-ms", "5"]) == 2
    assert "truncated or altered" in capsys.readouterr().err
    assert main(["export", "--study", "s", "--point", "99", "--out", str(model), "--db", study_db]) == 2
    assert "outside the npu-sim front" in capsys.readouterr().err


def test_studies_commands_say_what_export_takes(study_db, tmp_path, capsys):
    """`studies pareto` lists each point once with its trial and the index `export --point` takes;
    `studies show` has one line per trial with the objectives Optuna ranked; `list` has a header."""
    assert main(["studies", "list", "--db", study_db]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "name", "status", "model", "dataset", "created"] and rows[0].split()[1] == "s"
    assert main(["studies", "pareto", "s", "--db", study_db, "--json"]) == 0
    points = json.loads(capsys.readouterr().out)
    keys = [(p["backend"], p["ratio"], p["method"], p["top1"], p["latency_us"]) for p in points]
    assert len(keys) == len(set(keys)), "no duplicate rows"
    assert [p["point"] for p in points] == list(range(len(points))) and all(p["trial"] == 0 for p in points)
    assert main(["studies", "pareto", "s", "--db", study_db]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:4] == ["point", "backend", "provenance", "trial"] and len(table) == 2 + len(points)
    last = points[-1]
    assert main(["export", "--study", "s", "--point", str(last["point"]), "--out", str(tmp_path / "p.flexiq"),
                 "--db", study_db, "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["trial"] == last["trial"] and exported["accuracy"][str(last["ratio"])] == last["top1"]
    assert main(["studies", "show", "s", "--db", study_db, "--json"]) == 0
    (trial,) = json.loads(capsys.readouterr().out)["trials"]
    levels = [p["top1"] for p in points]  # one trial: its front is its levels, every one of them
    assert trial["mean_top1"] == pytest.approx(sum(exported["accuracy"][r] for r in ("0.25", "0.5", "0.75", "1.0")) / 4)
    assert trial["mean_latency_us"]["npu-sim"] > 0 and len(levels) >= 1
    assert main(["studies", "show", "s", "--db", study_db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["trial", "status", "mean"] and lines[2].split()[0] == "0"
    assert f"{trial['mean_top1']:.2f}" in lines[2] and f"{trial['mean_latency_us']['npu-sim']:.1f}" in lines[2]


@pytest.mark.parametrize("action", ["list", "show s", "pareto s"])
def test_studies_output_is_safe_to_pipe(study_db, action):
    """`| head -0` closes the pipe before the first line: no traceback (it was a BrokenPipeError)."""
    import os
    import subprocess
    import sys

    command = f"{sys.executable} -m flexiq_search.cli studies {action} --db '{study_db}' | head -0"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.stdout == "" and result.stderr == ""
