"""The scheduler with an injected clock, on SQLite and a real PostgreSQL server: each slot runs once,
missed slots collapse into one run, two schedulers never start the same slot, failures are kept."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from flexiq_search.scheduler import UNSUBMITTED_GRACE, Scheduler, Submitter
from flexiq_search.store import Repository
from flexiq_search.store.engine import create_store_engine

from .conftest import backdate_schedule


class RecordingSubmitter(Submitter):
    """Stands in for where searches run (the real ones are covered by the process tests): it keeps
    what it was given, can refuse, and reports the ends it is told about."""

    name = "recording"

    def __init__(self, refuse: bool = False) -> None:
        self.submitted: list[dict] = []
        self.refuse = refuse
        self.ends: dict[str, str] = {}

    def submit(self, run: dict, db_url: str) -> None:
        if self.refuse:
            raise ConnectionError("job server unreachable\nsecond line")
        self.submitted.append(run)

    def ended(self, submission_id: str) -> str | None:
        return self.ends.get(submission_id)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


START = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def nightly(repo, db_url):
    repo.add_schedule("nightly", "0 2 * * *", {"model": "resnet20", "dataset": "digits"})
    backdate_schedule(db_url, "nightly", START)
    return repo


def test_each_slot_runs_once_and_missed_slots_collapse_into_one(nightly, db_url):
    clock, submitter = Clock(START), RecordingSubmitter()
    scheduler = Scheduler(nightly, db_url, submitter, clock=clock, log=lambda _: None)
    assert scheduler.tick() == []  # 20 Nov 02:00 predates the schedule
    clock.now = datetime(2026, 11, 21, 1, 59, tzinfo=timezone.utc)
    assert scheduler.tick() == []
    clock.now = datetime(2026, 11, 21, 2, 0, 5, tzinfo=timezone.utc)
    [run] = scheduler.tick()
    assert run["slot"] == "2026-11-21T02:00:00+00:00" and run["study_name"] == "nightly-20261121T0200Z"
    assert scheduler.tick() == [] and scheduler.tick() == []  # same slot: never again
    clock.now = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)  # down for three nights
    [caught_up] = scheduler.tick()
    assert caught_up["slot"] == "2026-11-24T02:00:00+00:00"
    assert scheduler.tick() == []
    runs = nightly.schedule_runs("nightly")
    assert [r["slot"] for r in runs] == ["2026-11-24T02:00:00+00:00", "2026-11-21T02:00:00+00:00"]
    assert {r["status"] for r in runs} == {"submitted"} and {r["submitter"] for r in runs} == {"recording"}
    assert [r["submission_id"] for r in reversed(runs)] == [s["submission_id"] for s in submitter.submitted]
    assert nightly.list_schedules()[0]["last_run"]["slot"] == "2026-11-24T02:00:00+00:00"


def test_two_schedulers_racing_for_a_slot_start_it_once(nightly, db_url):
    """Two schedulers, each with its own connection, tick at the same instant, many slots in a row."""
    clock = Clock(START)
    submitters = [RecordingSubmitter(), RecordingSubmitter()]
    repos = [Repository.open(db_url), Repository.open(db_url)]
    schedulers = [Scheduler(r, db_url, s, clock=clock, log=lambda _: None, identity=f"s{i}")
                  for i, (r, s) in enumerate(zip(repos, submitters))]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def race(scheduler: Scheduler) -> None:
        try:
            barrier.wait()
            scheduler.tick()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        for day in range(21, 29):
            clock.now = datetime(2026, 11, day, 2, 0, tzinfo=timezone.utc)
            threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        for r in repos:
            r.close()
    assert errors == []
    submitted = [run["submission_id"] for s in submitters for run in s.submitted]
    assert len(submitted) == 8 == len(set(submitted)), "every night started exactly once"
    runs = nightly.schedule_runs("nightly")
    assert len(runs) == 8 and sorted(r["submission_id"] for r in runs) == sorted(submitted)
    assert {r["scheduler"] for r in runs} <= {"s0", "s1"}


def test_a_failed_submission_is_recorded_and_not_retried(nightly, db_url):
    clock = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc))
    scheduler = Scheduler(nightly, db_url, RecordingSubmitter(refuse=True), clock=clock, log=lambda _: None)
    assert scheduler.tick() == []
    [run] = nightly.schedule_runs()
    assert run["status"] == "failed" and run["finished"] is not None
    assert run["message"] == "submission failed: ConnectionError: job server unreachable"
    scheduler.submitter.refuse = False
    assert scheduler.tick() == [] and len(nightly.schedule_runs()) == 1  # the slot was had; next night runs


def test_runs_whose_job_vanished_or_was_never_submitted_are_settled(nightly, db_url):
    clock, submitter = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)), RecordingSubmitter()
    scheduler = Scheduler(nightly, db_url, submitter, clock=clock, log=lambda _: None)
    [run] = scheduler.tick()
    scheduler.reconcile()
    assert nightly.schedule_runs()[0]["status"] == "submitted"  # still running, as far as anyone knows
    submitter.ends[run["submission_id"]] = "search process exited with code -9"
    scheduler.reconcile()
    [settled] = nightly.schedule_runs()
    assert settled["status"] == "failed" and "exited with code -9" in settled["message"]

    # a scheduler that died between claiming and submitting: the claim is settled after the grace time
    schedule_id = nightly.list_schedules()[0]["id"]
    slot = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)
    orphan = nightly.claim_schedule_slot(schedule_id, slot, "nightly-x", "sub-x", "dead:1")
    clock.now = datetime.now(timezone.utc) + UNSUBMITTED_GRACE / 2
    scheduler.reconcile()
    assert nightly.schedule_run(orphan)["status"] == "claimed"
    clock.now = datetime.now(timezone.utc) + UNSUBMITTED_GRACE + timedelta(seconds=1)
    scheduler.reconcile()
    assert nightly.schedule_run(orphan)["status"] == "failed"
    assert nightly.schedule_run(orphan)["message"] == "claimed by dead:1, never submitted"


def test_a_run_takes_its_jobs_end(nightly, db_url):
    clock, submitter = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)), RecordingSubmitter()
    scheduler = Scheduler(nightly, db_url, submitter, clock=clock, log=lambda _: None)
    [run] = scheduler.tick()
    job_id = nightly.start_job(run["submission_id"])  # what the search does under the run's id
    assert nightly.schedule_runs()[0]["job_status"] == "running"
    nightly.finish_job(job_id, "succeeded")
    scheduler.reconcile()
    assert nightly.schedule_runs()[0]["status"] == "succeeded"


def test_removing_a_schedule_removes_its_runs_and_stops_claims(nightly, db_url):
    clock = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc))
    scheduler = Scheduler(nightly, db_url, RecordingSubmitter(), clock=clock, log=lambda _: None)
    scheduler.tick()
    schedule_id = nightly.list_schedules()[0]["id"]
    nightly.remove_schedule("nightly")
    assert nightly.list_schedules() == [] and nightly.schedule_runs() == []
    assert nightly.claim_schedule_slot(schedule_id, clock.now, "s", "sub", "me") is None
    with pytest.raises(Exception, match="no schedule named 'nightly'"):
        nightly.remove_schedule("nightly")


def test_serve_ticks_until_stopped(nightly, db_url):
    """The long-running loop: ticks, sleeps no longer than the poll, stops when told."""
    clock, submitter = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)), RecordingSubmitter()
    scheduler = Scheduler(nightly, db_url, submitter, clock=clock, log=lambda _: None)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.serve, args=(stop,), kwargs={"poll_seconds": 0.5})
    thread.start()
    try:
        for _ in range(100):
            if submitter.submitted:
                break
            stop.wait(0.05)
        clock.now = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # the next night arrives
        for _ in range(100):
            if len(submitter.submitted) == 2:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert [run["slot"] for run in submitter.submitted] == ["2026-11-21T02:00:00+00:00", "2026-11-22T02:00:00+00:00"]


def test_a_hand_edited_bad_row_does_not_stop_the_other_schedules(nightly, db_url):
    nightly.add_schedule("broken", "0 2 * * *", {"model": "resnet20", "dataset": "digits"})
    backdate_schedule(db_url, "broken", START)
    engine = create_store_engine(db_url)
    with engine.begin() as connection:  # what no flexiq command writes (add validates the cron)
        connection.execute(text("UPDATE flexiq_schedules SET cron = '0 25 * * *' WHERE name = 'broken'"))
    engine.dispose()
    logged: list[str] = []
    clock, submitter = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)), RecordingSubmitter()
    scheduler = Scheduler(nightly, db_url, submitter, clock=clock, log=logged.append)
    assert [run["schedule"] for run in scheduler.tick()] == ["nightly"]
    assert any(line.startswith("schedule 'broken' skipped:") for line in logged)
    assert scheduler.seconds_to_next_slot() == 24 * 3600


def test_a_running_scheduler_rides_out_a_database_outage(postgres_url, postgres_server):
    """PostgreSQL refuses the store's connections for a while (its backends killed); the scheduler
    logs each failed pass, keeps going, and runs the slot that came due during the outage."""
    from sqlalchemy import create_engine, make_url

    with Repository.open(postgres_url) as repo:
        repo.add_schedule("nightly", "0 2 * * *", {"model": "resnet20", "dataset": "digits"})
    backdate_schedule(postgres_url, "nightly", START)
    database = make_url(postgres_url).database
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    logged: list[str] = []
    clock, submitter = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)), RecordingSubmitter()
    repo = Repository.open(postgres_url)
    scheduler = Scheduler(repo, postgres_url, submitter, clock=clock, log=logged.append)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.serve, args=(stop,), kwargs={"poll_seconds": 0.2})

    def wait_for(condition, seconds: float = 20.0) -> bool:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        return condition()

    thread.start()
    try:
        assert wait_for(lambda: len(submitter.submitted) == 1)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": database})
        clock.now = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # a slot comes due during the outage
        assert wait_for(lambda: sum("scheduler pass failed" in line for line in logged) >= 3)
        assert thread.is_alive() and len(submitter.submitted) == 1
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        assert wait_for(lambda: len(submitter.submitted) == 2), logged[-3:]
    finally:
        stop.set()
        thread.join(timeout=10)
        repo.close()
        admin.dispose()
    assert [run["slot"] for run in submitter.submitted] == ["2026-11-21T02:00:00+00:00", "2026-11-22T02:00:00+00:00"]
    password = make_url(postgres_url).password
    assert all(password not in line for line in logged), "the failures are logged without the password"


def test_a_newer_flexiqs_config_skips_its_schedule_only(nightly, db_url):
    nightly.add_schedule("future", "0 2 * * *", {"model": "resnet20", "dataset": "digits"})
    backdate_schedule(db_url, "future", START)
    engine = create_store_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE flexiq_schedules SET config_json = :config WHERE name = 'future'"),
                           {"config": '{"_type": "SearchConfig", "_version": 99, "_data": {}}'})
    engine.dispose()
    listed = {s["name"]: s for s in nightly.list_schedules()}
    assert listed["future"]["config"] is None and "version 99" in listed["future"]["config_error"]
    assert listed["nightly"]["config_error"] is None
    logged: list[str] = []
    scheduler = Scheduler(nightly, db_url, RecordingSubmitter(), log=logged.append,
                          clock=Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)))
    assert [run["schedule"] for run in scheduler.tick()] == ["nightly"]
    assert any(line.startswith("schedule 'future' skipped:") and "version 99" in line for line in logged)


def test_a_paused_schedule_runs_nothing_and_resumes_with_its_newest_missed_slot(nightly, db_url):
    clock, submitter = Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)), RecordingSubmitter()
    scheduler = Scheduler(nightly, db_url, submitter, clock=clock, log=lambda _: None)
    nightly.set_schedule_enabled("nightly", False)
    assert scheduler.tick() == [] and nightly.list_schedules()[0]["enabled"] is False
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    assert scheduler.tick() == []
    nightly.set_schedule_enabled("nightly", True)
    assert [run["slot"] for run in scheduler.tick()] == ["2026-11-23T02:00:00+00:00"]
    with pytest.raises(Exception, match="no schedule named 'other'"):
        nightly.set_schedule_enabled("other", True)


def test_the_last_run_carries_its_jobs_status(nightly, db_url):
    scheduler = Scheduler(nightly, db_url, RecordingSubmitter(), log=lambda _: None,
                          clock=Clock(datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)))
    [run] = scheduler.tick()
    nightly.start_job(run["submission_id"])
    last = nightly.list_schedules()[0]["last_run"]
    assert (last["submission_id"], last["status"], last["job_status"]) == (run["submission_id"], "submitted", "running")
