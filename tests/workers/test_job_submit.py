"""`ray job submit` against a real Ray head node on 127.0.0.1 runs a search into the store."""

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
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


def test_a_submitted_job_searches_and_stores_its_front(head, tmp_path):
    from flexiq_search.cli import main

    checkpoint = tmp_path / "r20.pt"
    assert main(["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "4", "--out", str(checkpoint)]) == 0
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
