"""`flexiq search` / `flexiq studies`: a real study into SQLite, the JSON contracts, a driver killed
with SIGKILL and resumed, and bad input that writes nothing."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from flexiq_search.cli import main

SEARCH = ["search", "--no-ray", "--model", "resnet20", "--dataset", "digits", "--backends", "npu-sim",
          "--calibration", "64", "--eval-samples", "300", "--population", "4"]


@pytest.fixture(scope="module")
def checkpoint(resnet20_checkpoint):
    return str(resnet20_checkpoint)


def flexiq(*args, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, **kwargs)


def rows(db_path, table):
    with sqlite3.connect(db_path) as connection:
        return connection.execute(f"SELECT * FROM {table}").fetchall()


def test_a_study_with_two_optuna_trials_stores_its_front(checkpoint, tmp_path, capsys):
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    config = tmp_path / "space.yaml"
    config.write_text("group_size: 8\nactivation_shift: static\ncalibration_data: digits\n"
                      "search_space:\n  group_size: [4, 8]\n"
                      "  activation_shift: [static, dynamic]\n")
    assert main([*SEARCH, "--config", str(config), "--checkpoint", checkpoint, "--generations", "2", "--trials", "2",
                 "--name", "two", "--db", url]) == 0
    out = capsys.readouterr()
    assert "Pareto front of two" in out.out and "ETA" in out.err
    assert main(["studies", "list", "--db", url, "--json"]) == 0
    studies = json.loads(capsys.readouterr().out)
    assert [{k: s[k] for k in ("name", "status", "model", "dataset")} for s in studies] == [
        {"name": "two", "status": "finished", "model": "resnet20", "dataset": "digits"}]
    assert set(studies[0]) == {"id", "name", "status", "model", "dataset", "created"}
    assert main(["studies", "pareto", str(studies[0]["id"]), "--db", url, "--json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(set(p) == {"backend", "provenance", "ratio", "method", "top1", "latency_us", "trial", "point"}
                         for p in front)
    assert {p["backend"] for p in front} == {"npu-sim"} and {p["provenance"] for p in front} == {"simulated"}
    latencies = [p["latency_us"] for p in front]
    top1 = [p["top1"] for p in front]
    assert latencies == sorted(latencies) and top1 == sorted(top1), "a front: slower points are more accurate"
    assert len(rows(db, "flexiq_trials")) == 2 and len(rows(db, "flexiq_evaluations")) == 2 * 5
    params = [json.loads(row[0]) for row in sqlite3.connect(db).execute(
        "SELECT params_json FROM flexiq_trials ORDER BY number")]
    assert params[0] == {"group_size": 8, "activation_shift": "static"}, "trial 0 runs the config's own values"
    assert set(params[1]) == {"group_size", "activation_shift"}
    (job,) = sqlite3.connect(db).execute("SELECT submission_id, status, heartbeat FROM flexiq_jobs").fetchall()
    assert job[0].startswith("local-") and job[1] == "succeeded" and job[2]
    (stored,) = [json.loads(row[0]) for row in sqlite3.connect(db).execute("SELECT config_json FROM flexiq_studies")]
    assert stored["_data"]["calibration_data"] == "digits", "the study records where it calibrated"


def test_a_killed_driver_resumes_without_losing_or_duplicating_rows(checkpoint, tmp_path):
    db = tmp_path / "killed.db"
    args = [*SEARCH, "--checkpoint", checkpoint, "--generations", "12", "--name", "k", "--db", f"sqlite:///{db}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    driver = subprocess.Popen([sys.executable, "-m", "flexiq_search.cli", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until a generation has been checkpointed
        if db.exists() and _has_checkpoint(db):
            break
        time.sleep(0.2)
    else:
        driver.kill()
        pytest.fail("no checkpoint within 300 s")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert rows(db, "flexiq_evaluations") == [], "killed before its result"
    again = flexiq(*args)
    assert again.returncode != 0 and "already exists" in again.stderr, "a second run must not silently restart"
    resumed = flexiq(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming trial 0" in resumed.stderr
    assert len(rows(db, "flexiq_trials")) == 1 and len(rows(db, "flexiq_selections")) == 1
    assert len(rows(db, "flexiq_evaluations")) == 5 and len(rows(db, "flexiq_latency_measurements")) == 5
    jobs = sqlite3.connect(db).execute("SELECT status FROM flexiq_jobs ORDER BY id").fetchall()
    assert jobs == [("running",), ("succeeded",)], "the killed driver's job keeps its last heartbeat"

    fresh_db = tmp_path / "fresh.db"
    fresh = flexiq(*[a if a != f"sqlite:///{db}" else f"sqlite:///{fresh_db}" for a in args])
    assert fresh.returncode == 0, fresh.stderr
    assert _selection_layers(db) == _selection_layers(fresh_db), "resumed = uninterrupted, candidate for candidate"


def _has_checkpoint(db) -> bool:
    try:
        return bool(rows(db, "flexiq_checkpoints"))
    except sqlite3.OperationalError:  # tables not created yet
        return False


def _selection_layers(db) -> dict:
    import zlib

    (payload,) = [row[0] for row in sqlite3.connect(db).execute("SELECT payload FROM flexiq_selections")]
    selection = json.loads(zlib.decompress(payload))
    return selection["layers"]


@pytest.mark.parametrize("setup, message", [
    ("model: [unclosed", "not valid YAML"),
    ("model: resnet20\ndataset: digits\nbogus: 1\n", "unknown key(s) bogus"),
    ("model: resnet9000\ndataset: digits\n", "unknown model"),
    ("model: resnet20\ndataset: digits\npopulation: 0\n", "population must be a positive integer"),
    ("model: resnet20\ndataset: digits\nbackends: [tpu]\n", "unknown latency backend"),
    ("model: resnet20\ndataset: digits\ncalibration_data: mnist-ish\n", "unknown dataset"),
    ("model: resnet20\ndataset: digits\ncalibration_share: 1.5\n", "calibration_share must be in (0, 1)"),
    ("model: resnet20\ndataset: digits\n", "no offline pretrained weights for 'resnet20'"),
    ("model: resnet20\ndataset: digits\ncheckpoint: /nonexistent/r20.pt\n", "checkpoint /nonexistent/r20.pt does not"),
    ("model: resnet34\ndataset: digits\n", "no weights for timm model 'resnet34' in the local cache"),
    ("model: resnet34\ndataset: digits\nweights: /nonexistent/r34.safetensors\n", "weights /nonexistent/r34"),
    ("model: nosuchpackage.nets:build\ndataset: digits\n", "cannot import nosuchpackage.nets"),
])
def test_bad_configs_fail_in_one_line_and_write_nothing(setup, message, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(setup)
    db = tmp_path / "bad.db"
    result = flexiq("search", "--no-ray", "--config", str(config), "--db", f"sqlite:///{db}")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not db.exists() or rows(db, "flexiq_studies") == []


def test_an_unreachable_database_fails_without_showing_its_password(tmp_path, checkpoint):
    result = flexiq("search", "--no-ray", "--model", "resnet20", "--dataset", "digits", "--checkpoint", checkpoint,
                    "--db", "postgresql://flexiq:hunter2@127.0.0.1:1/nowhere")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr and "***" in result.stderr
