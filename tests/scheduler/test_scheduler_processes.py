"""`flexiq schedule` and `flexiq scheduler` as real processes: bad input is one line and no row, two
scheduler processes start a slot once (SQLite and PostgreSQL), and a long-running scheduler catches
up on missed slots with one run and stops cleanly on SIGTERM. The runs are real (small) searches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import make_url

from flexiq_search.store import Repository

from .conftest import backdate_schedule

CONFIG = """model: resnet20
dataset: digits
checkpoint: {checkpoint}
backends: [npu-sim]
ratios: [0.5, 1.0]
population: 4
generations: 1
calibration: 64
eval_samples: 200
"""


@pytest.fixture(scope="module")
def checkpoint(resnet20_checkpoint):
    return resnet20_checkpoint


@pytest.fixture
def config(tmp_path, checkpoint):
    path = tmp_path / "nightly.yaml"
    path.write_text(CONFIG.format(checkpoint=checkpoint))
    return path


def environment(tmp_path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", FLEXIQ_HOME=str(tmp_path / "home"))


def flexiq(tmp_path, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                          env=environment(tmp_path), timeout=600, **kwargs)


def scheduler_process(tmp_path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flexiq_search.cli", "scheduler", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(tmp_path))


def test_schedule_commands_and_their_bad_input(tmp_path, config, checkpoint):
    url = f"sqlite:///{tmp_path / 'schedules.db'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet999\ndataset: digits\n")
    for args, message in [
        (["--cron", "0 2 * *", "--config", str(config)], "cron expression '0 2 * *' is not valid"),
        (["--cron", "0 2 * * *", "--config", str(config), "--timezone", "Nowhere/City"], "unknown time zone"),
        (["--cron", "0 2 * * *", "--config", str(tmp_path / "missing.yaml")], "cannot read search config"),
        (["--cron", "0 2 * * *", "--config", str(bad)], "unknown model 'resnet999'"),
        (["--config", str(config)], "needs --cron and --config"),
    ]:
        run = flexiq(tmp_path, "schedule", "add", *args, "--db", url)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
    listed = flexiq(tmp_path, "schedule", "list", "--db", url, "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], "a refused schedule writes nothing"

    relative = tmp_path / "cfg" / "relative.yaml"  # a checkpoint path relative to where `add` runs
    relative.parent.mkdir()
    relative.write_text(CONFIG.format(checkpoint=os.path.relpath(checkpoint, tmp_path)))
    added = flexiq(tmp_path, "schedule", "add", "--cron", "30 1 * * 1-5", "--timezone", "Europe/Berlin",
                   "--config", str(relative), "--db", url, cwd=tmp_path)
    assert added.returncode == 0 and "schedule 'relative' (id 1)" in added.stdout, added.stderr
    again = flexiq(tmp_path, "schedule", "add", "relative", "--cron", "0 2 * * *", "--config", str(config),
                   "--db", url)
    assert again.returncode == 2 and "already exists" in again.stderr
    [schedule] = json.loads(flexiq(tmp_path, "schedule", "list", "--db", url, "--json").stdout)
    assert (schedule["name"], schedule["cron"], schedule["timezone"]) == ("relative", "30 1 * * 1-5", "Europe/Berlin")
    assert schedule["config"]["_data"]["checkpoint"] == str(checkpoint)
    local = datetime.fromisoformat(schedule["next_run"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert local > datetime.now(timezone.utc) and local.weekday() < 5 and (local.hour, local.minute) == (1, 30)
    assert flexiq(tmp_path, "schedule", "disable", "relative", "--db", url).returncode == 0
    [paused] = json.loads(flexiq(tmp_path, "schedule", "list", "--db", url, "--json").stdout)
    assert paused["enabled"] is False and paused["next_run"] is None
    assert "disabled" in flexiq(tmp_path, "schedule", "list", "--db", url).stdout
    assert flexiq(tmp_path, "schedule", "enable", "relative", "--db", url).returncode == 0
    assert flexiq(tmp_path, "schedule", "enable", "other", "--db", url).returncode == 2
    assert flexiq(tmp_path, "schedule", "remove", "other", "--db", url).returncode == 2
    assert flexiq(tmp_path, "schedule", "remove", "relative", "--db", url).returncode == 0
    assert json.loads(flexiq(tmp_path, "schedule", "list", "--db", url, "--json").stdout) == []


@pytest.mark.slow
def test_two_scheduler_processes_start_a_slot_once(db_url, tmp_path, config):
    assert flexiq(tmp_path, "schedule", "add", "nightly", "--cron", "0 2 * * *", "--config", str(config),
                  "--db", db_url).returncode == 0
    tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
    now = f"{tomorrow.isoformat()}T02:00:30Z"
    schedulers = [scheduler_process(tmp_path, "--once", "--no-ray", "--now", now, "--db", db_url) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in schedulers]
    assert [process.returncode for process in schedulers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum("submitted (local)" in err for _, err in outputs) == 1, "exactly one scheduler won the slot"
    with Repository.open(db_url) as repo:
        [run] = repo.schedule_runs()
        stamp = tomorrow.strftime("%Y%m%d")
        assert (run["slot"], run["status"], run["job_status"]) == \
            (f"{tomorrow.isoformat()}T02:00:00+00:00", "succeeded", "succeeded")
        assert [(s["name"], s["status"]) for s in repo.list_studies()] == [(f"nightly-{stamp}T0200Z", "finished")]
        assert repo.pareto(repo.list_studies()[0]["id"]), "the scheduled search stored its front"
    log = (tmp_path / "home" / "schedule-logs" / f"{run['submission_id']}.log").read_text()
    assert "Pareto front of nightly-" in log
    password = make_url(db_url).password
    assert not password or all(password not in text for text in [log, *(err for _, err in outputs)])


@pytest.mark.slow
def test_a_running_scheduler_catches_up_once_and_stops_on_sigterm(tmp_path, config):
    url = f"sqlite:///{tmp_path / 'service.db'}"
    assert flexiq(tmp_path, "schedule", "add", "yearly", "--cron", "0 0 1 1 *", "--config", str(config),
                  "--db", url).returncode == 0
    # added three years ago, the scheduler down since: three New Year slots were missed
    backdate_schedule(url, "yearly", datetime.now(timezone.utc) - timedelta(days=3 * 366))
    process = scheduler_process(tmp_path, "--no-ray", "--poll", "1", "--db", url)
    try:
        deadline = time.monotonic() + 300
        with Repository.open(url) as repo:
            while time.monotonic() < deadline and process.poll() is None:
                runs = repo.schedule_runs()
                if runs and runs[0]["status"] in ("succeeded", "failed"):
                    break
                time.sleep(1)
            time.sleep(3)  # three more polls: nothing else may start
            runs = repo.schedule_runs()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "scheduler stopped" in err, err[-2000:]
    this_year = datetime.now(timezone.utc).year
    assert [(r["slot"], r["status"]) for r in runs] == [(f"{this_year}-01-01T00:00:00+00:00", "succeeded")]
    assert err.count("submitted (local)") == 1 and "late" in err
