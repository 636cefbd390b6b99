"""Scheduled (nightly) searches: cron schedules in the store, and the scheduler that starts their runs.

A schedule is a 5-field cron expression read in an IANA time zone, and a stored `SearchConfig`.
`Scheduler.tick()` looks at the clock it was given (tests inject one) and, for each enabled
schedule, takes the latest cron slot at or before now that is not older than the schedule itself:

- the slot is claimed by inserting its run row; the store's unique (schedule, slot) key lets exactly
  one of several schedulers win, so a slot never starts twice;
- only the latest slot is ever due, so after downtime the missed slots collapse into one run (the
  newest), the way a cron daemon with "catch up once" or Airflow's `catchup=False` behaves;
- the winner hands the run to a `Submitter` (a local child process, or Ray's job submission client
  in `workers.submit`), which runs `flexiq search --schedule-run ID`: the search reads its config
  and study name from the run, records itself in the jobs table under the run's submission id, and
  marks the run succeeded or failed when it ends.

`reconcile()` settles runs whose job died without saying so (the submitter saw it exit) and runs a
crashed scheduler claimed but never submitted.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import FlexiqError
from .home import data_home

SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
UNSUBMITTED_GRACE = timedelta(minutes=10)  # a claim older than this, never submitted: its scheduler died


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def check_schedule(name: str, cron: str, zone: str) -> None:
    """One clear line for a name, cron expression or time zone the scheduler could not use."""
    from croniter import croniter

    if not SCHEDULE_NAME.fullmatch(name):
        raise FlexiqError(f"schedule name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise FlexiqError(f"cron expression {cron!r} is not valid: five fields, minute hour day month weekday")
    _zone(zone)


def _zone(zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise FlexiqError(f"unknown time zone {zone!r} (an IANA name such as UTC or Europe/Berlin)") from None


def latest_slot(cron: str, zone: str, now: datetime) -> datetime:
    """The newest cron time at or before `now`, in UTC (slots are whole minutes)."""
    from croniter import croniter

    minute = now.astimezone(_zone(zone)).replace(second=0, microsecond=0)
    return croniter(cron, minute + timedelta(minutes=1)).get_prev(datetime).astimezone(timezone.utc)


def next_slot(cron: str, zone: str, now: datetime) -> datetime:
    """The first cron time after `now`, in UTC."""
    from croniter import croniter

    return croniter(cron, now.astimezone(_zone(zone))).get_next(datetime).astimezone(timezone.utc)


def next_run(schedule: dict, now: datetime) -> tuple[datetime | None, str | None]:
    """When a listed schedule runs next (None when disabled or unusable), and why the scheduler skips
    it (a config this flexiq cannot load, a cron or zone edited by hand into nonsense) or None."""
    if schedule["config_error"]:
        return None, schedule["config_error"]
    try:
        slot = next_slot(schedule["cron"], schedule["timezone"], now)
    except (FlexiqError, ValueError) as exc:
        return None, str(exc)
    return (slot if schedule["enabled"] else None), None


def due_slot(schedule: dict, now: datetime) -> datetime | None:
    """The slot a scheduler should run now: the latest one, unless it predates the schedule."""
    slot = latest_slot(schedule["cron"], schedule["timezone"], now)
    return slot if slot >= datetime.fromisoformat(schedule["created"]) else None


class Submitter(ABC):
    """Where a claimed run's search runs. `submit` raises on failure; `ended` says how a submission
    ended (a line for the run's record), or None while it runs or when this submitter cannot tell."""

    name: str

    @abstractmethod
    def submit(self, run: dict, db_url: str) -> None: ...

    @abstractmethod
    def ended(self, submission_id: str) -> str | None: ...

    def wait(self) -> None:
        """Block until every submission this process still owns has ended (for `--once`)."""


class LocalSubmitter(Submitter):
    """Each run is a child process of the scheduler (`flexiq search --schedule-run ID`), in a session
    of its own so a restarted scheduler does not take running searches down with it. The database URL
    reaches the child in its environment, never on a command line `ps` would show."""

    name = "local"

    def __init__(self, no_ray: bool = False, log_dir: Path | None = None) -> None:
        self.no_ray = no_ray
        self.log_dir = log_dir or data_home() / "schedule-logs"
        self.children: dict[str, subprocess.Popen] = {}

    def log_path(self, submission_id: str) -> Path:
        return self.log_dir / f"{submission_id}.log"

    def submit(self, run: dict, db_url: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "flexiq_search.cli", "search", "--schedule-run", str(run["id"])]
        if self.no_ray:
            command.append("--no-ray")
        with open(self.log_path(run["submission_id"]), "ab") as log:
            self.children[run["submission_id"]] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, FLEXIQ_DB=db_url), start_new_session=True)

    def ended(self, submission_id: str) -> str | None:
        child = self.children.get(submission_id)
        if child is None or child.poll() is None:
            return None
        del self.children[submission_id]
        return f"search process exited with code {child.returncode}; log: {self.log_path(submission_id)}"

    def wait(self) -> None:
        for child in list(self.children.values()):
            child.wait()


class Scheduler:
    """Claims and submits due slots of the stored schedules; see the module docstring."""

    def __init__(self, repo, db_url: str, submitter: Submitter, clock: Callable[[], datetime] = utcnow,
                 log: Callable[[str], None] = print, identity: str | None = None) -> None:
        self.repo, self.db_url, self.submitter = repo, db_url, submitter
        self.clock, self.log = clock, log
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"

    def tick(self) -> list[dict]:
        """One pass: settle ended runs, then claim and submit every due slot; the runs started here."""
        self.reconcile()
        now = self.clock()
        started = []
        for schedule in self.repo.list_schedules(enabled_only=True):
            problem = next_run(schedule, now)[1]
            if problem is not None:  # one unusable row: the other schedules still run
                self.log(f"schedule {schedule['name']!r} skipped: {problem}")
                continue
            slot = due_slot(schedule, now)
            if slot is None:
                continue
            stamp = slot.strftime("%Y%m%dT%H%MZ")
            study_name = f"{schedule['name']}-{stamp}"
            submission_id = f"flexiq-{schedule['name']}-{stamp}-{uuid.uuid4().hex[:8]}"
            run_id = self.repo.claim_schedule_slot(schedule["id"], slot, study_name, submission_id, self.identity)
            if run_id is None:
                continue  # this slot already has its run (here or in another scheduler)
            late = (now - slot).total_seconds()  # after downtime: the newest missed slot, once
            run = {"id": run_id, "schedule": schedule["name"], "slot": slot.isoformat(), "study_name": study_name,
                   "submission_id": submission_id}
            try:
                self.submitter.submit(run, self.db_url)
            except Exception as exc:  # the slot stays claimed: a failed submission is not retried
                message = f"submission failed: {type(exc).__name__}: {exc}".splitlines()[0]
                self.repo.update_schedule_run(run_id, "failed", submitter=self.submitter.name, message=message)
                self.log(f"schedule {schedule['name']!r}: slot {slot.isoformat()} {message}")
                continue
            self.repo.update_schedule_run(run_id, "submitted", submitter=self.submitter.name)
            self.log(f"schedule {schedule['name']!r}: slot {slot.isoformat()} submitted ({self.submitter.name}) "
                     f"as {submission_id}, study {study_name!r}"
                     + (f", {timedelta(seconds=round(late))} late" if late >= 60 else ""))
            started.append(run)
        return started

    def reconcile(self) -> None:
        now = self.clock()
        for run in self.repo.schedule_runs(statuses=("claimed", "submitted")):
            if run["job_status"] in ("succeeded", "failed"):
                self.repo.update_schedule_run(run["id"], run["job_status"])
                continue
            if run["status"] == "claimed":
                if now - datetime.fromisoformat(run["claimed"]) > UNSUBMITTED_GRACE:
                    self.repo.update_schedule_run(run["id"], "failed",
                                                  message=f"claimed by {run['scheduler']}, never submitted")
                continue
            message = self.submitter.ended(run["submission_id"])
            if message is not None:
                ended = self.repo.schedule_run(run["id"])["job_status"]  # it may have ended since the query
                if ended in ("succeeded", "failed"):
                    self.repo.update_schedule_run(run["id"], ended)
                else:
                    self.repo.update_schedule_run(run["id"], "failed",
                                                  message=f"the search ended without recording its end: {message}")
                    self.log(f"run {run['submission_id']}: failed ({message})")

    def seconds_to_next_slot(self) -> float | None:
        now = self.clock()
        upcoming = [slot for schedule in self.repo.list_schedules(enabled_only=True)
                    if (slot := next_run(schedule, now)[0]) is not None]
        return min((slot - now).total_seconds() for slot in upcoming) if upcoming else None

    def serve(self, stop: threading.Event, poll_seconds: float = 30.0) -> None:
        """Tick until `stop` is set: at each slot, and every `poll_seconds` to see new schedules."""
        while not stop.is_set():
            try:
                self.tick()
                until = self.seconds_to_next_slot()
            except FlexiqError as exc:  # the database away for a while: keep trying at every poll
                self.log(f"scheduler pass failed, retrying in {poll_seconds:g} s: {exc}")
                until = None
            stop.wait(max(0.05, min(poll_seconds, until + 0.5 if until is not None else poll_seconds)))
