"""`ray job submit` against a real Ray head node on 127.0.0.1 runs a search into the store, and so
does the scheduler's Ray submitter (Ray's job submission client)."""

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))
DASHBOARD = "http://127.0.0.1:28265"  # ports outside Ray's worker range (10002-19999)


@pytest.fixture(scope="module")
def head():
    """A head node (`ray start --head --block`), stopped by signalling the process we started."""
    # Token authentication, with a token of this test's own, shared by the head and the job client.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", HF_HUB_OFFLINE="1", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16))
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths have a length limit
    process = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=26379", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", "--dashboard-port=28265", '--resources={"npu_sim": 1}',
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", DASHBOARD], env=env, capture_output=True)
        if probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(process.pid, signal.SIGTERM)
        pytest.fail("the Ray head did not come up within 120 s")
    yield env
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def checkpoint(resnet20_checkpoint):
    return resnet20_checkpoint


def test_a_submitted_job_searches_and_stores_its_front(head, tmp_path, checkpoint):
    db = tmp_path / "job.db"
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", DASHBOARD, "--", sys.executable, "-m", "workers.search_job",
         "--model", "resnet20", "--checkpoint", str(checkpoint), "--dataset", "digits", "--backends", "npu-sim",
         "--calibration", "64", "--eval-samples", "200", "--population", "4", "--generations", "2",
         "--workers", "1", "--db", f"sqlite:///{db}"],
        env=head, capture_output=True, text=True, timeout=600)
    assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]
    assert "Pareto front of resnet20-digits-seed0" in submit.stdout
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT status FROM flexiq_studies").fetchall() == [("finished",)]
        (job,) = connection.execute("SELECT submission_id, status FROM flexiq_jobs").fetchall()
        assert job[0].startswith("ray-") and job[1] == "succeeded"
        assert connection.execute("SELECT COUNT(*) FROM flexiq_pareto_points").fetchone()[0] >= 1


def test_the_scheduler_submits_a_due_slot_as_a_ray_job(head, tmp_path, checkpoint):
    from flexiq_search.store import Repository
    from tests.scheduler.conftest import backdate_schedule

    url = f"sqlite:///{tmp_path / 'scheduled.db'}"
    config = tmp_path / "yearly.yaml"
    config.write_text(f"model: resnet20\ndataset: digits\ncheckpoint: {checkpoint}\nbackends: [npu-sim]\n"
                      "ratios: [0.5, 1.0]\npopulation: 4\ngenerations: 1\ncalibration: 64\neval_samples: 200\n")
    env = dict(head, FLEXIQ_HOME=str(tmp_path / "home"))
    flexiq = [sys.executable, "-m", "flexiq_search.cli"]
    added = subprocess.run([*flexiq, "schedule", "add", "yearly", "--cron", "0 0 1 1 *", "--config", str(config),
                            "--db", url], env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    backdate_schedule(url, "yearly", datetime.now(timezone.utc) - timedelta(days=800))  # two New Years missed
    scheduler = [*flexiq, "scheduler", "--once", "--address", DASHBOARD, "--job-python", sys.executable,
                 "--db", url]
    first = subprocess.run(scheduler, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "submitted (ray)" in first.stderr, first.stderr[-2000:]
    with Repository.open(url) as repo:
        [run] = repo.schedule_runs()
    ray_job = [RAY, "job", "status", "--address", DASHBOARD, run["submission_id"]]  # the run's id is Ray's
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        status = subprocess.run(ray_job, env=env, capture_output=True, text=True, timeout=60)
        if any(word in (status.stdout + status.stderr).lower() for word in ("succeeded", "failed", "stopped")):
            break
        time.sleep(3)
    logs = subprocess.run([RAY, "job", "logs", "--address", DASHBOARD, run["submission_id"]], env=env,
                          capture_output=True, text=True, timeout=60).stdout
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs[-3000:]
    with Repository.open(url) as repo:
        run = repo.schedule_run(run["id"])  # the job marked its run when its search ended
        assert (run["status"], run["job_status"], run["submitter"]) == ("succeeded", "succeeded", "ray"), run
        assert run["slot"] == f"{datetime.now(timezone.utc).year}-01-01T00:00:00+00:00"
        assert [s["status"] for s in repo.list_studies()] == ["finished"]
    second = subprocess.run(scheduler, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "submitted" not in second.stderr, "the slot never starts twice"
    with Repository.open(url) as repo:
        assert len(repo.schedule_runs()) == 1
