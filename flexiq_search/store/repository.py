"""`Repository`: the only way other code (search driver, CLI, dashboard) reads and writes the store.

Every method is one transaction, committed whole or rolled back whole, and returns plain dicts, so
callers never hold sessions or ORM objects across processes. Everything a resumed search writes
again (trials, selections, evaluations, latencies, checkpoints, jobs) is an upsert on the row's
natural key (INSERT ... ON CONFLICT, in both SQLite and PostgreSQL): re-recording a point after a
crash, or two workers racing on it, leaves exactly one row.

Configs (of studies and schedules) are stored as versioned `{"_type", "_version", "_data"}` JSON.
An envelope of a type registered in `flexiq_search.config` is stored as given (and validated); a
plain dict is wrapped as `{"_type": "search-config", "_version": 1, "_data": config}`. Reading gives
back what was stored (the envelope, or the plain dict) and refuses a `_type` this code does not know.

`Repository.open(url, read_only=True)` is for readers that must never change the database (the
dashboard): it neither creates nor migrates, the database itself refuses writes, and the read
methods at the end of the class give whole studies in one transaction each.
"""

from __future__ import annotations

import fcntl
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import groupby
from typing import Any, Protocol, Sequence

from sqlalchemy import Engine, Table, and_, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..config import CONFIG_TYPES, config_from_dict
from ..errors import FlexiqError
from .engine import (MIGRATION_LOCK_ID, WRITE, check_schema, create_store_engine, default_db_url, failure_reason,
                     migrate, redact_url)
from .schema import (
    SCHEDULE_RUN_STATUSES, STUDY_STATUSES, Checkpoint, Evaluation, Job, LatencyMeasurement, ParetoPoint, Schedule,
    ScheduleRun, SelectionRow, Study, Trial, utcnow,
)

SEARCH_CONFIG_TYPE = "search-config"  # the envelope given to plain config dicts
SEARCH_CONFIG_VERSION = 1
FINISHED_TRIAL_STATUSES = ("complete", "failed")
FINISHED_JOB_STATUSES = ("succeeded", "failed")
INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # both offer ON CONFLICT
# The checkpoint key of the evolution's state: the search writes it, progress queries decode it.
EVOLUTION_CHECKPOINT = "evolution"


class StorableSelection(Protocol):
    """What the store needs of a selection (`flexiq_search.selection.Selection` has it)."""

    method: str
    levels: Sequence[float]

    def to_json(self) -> str: ...


def config_envelope(config: dict) -> dict:
    """The versioned form of `config` to store; unknown or unloadable envelopes are refused."""
    if isinstance(config, dict) and {"_type", "_version", "_data"} <= config.keys():
        check_config(config)
        return config
    return {"_type": SEARCH_CONFIG_TYPE, "_version": SEARCH_CONFIG_VERSION, "_data": config}


def check_config(envelope: dict) -> None:
    type_name, version = envelope.get("_type"), envelope.get("_version")
    if type_name == SEARCH_CONFIG_TYPE:
        if version != SEARCH_CONFIG_VERSION:
            raise FlexiqError(f"{SEARCH_CONFIG_TYPE} version {version} cannot be loaded by this code "
                              f"(expects {SEARCH_CONFIG_VERSION})")
        return
    if type_name not in CONFIG_TYPES:
        known = ", ".join(sorted([SEARCH_CONFIG_TYPE, *CONFIG_TYPES]))
        raise FlexiqError(f"stored config has unknown type {type_name!r}; known: {known}")
    try:
        config_from_dict(envelope)
    except (ValueError, TypeError) as exc:
        raise FlexiqError(f"stored config cannot be loaded: {exc}") from None


def config_from_json(text: str) -> dict:
    envelope = json.loads(text)
    if not isinstance(envelope, dict):
        raise FlexiqError("stored config is not a versioned config")
    check_config(envelope)
    return envelope["_data"] if envelope["_type"] == SEARCH_CONFIG_TYPE else envelope


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats: none has top1 >= and latency_us <= with one of them strict.

    Sweep by latency: a point survives if it has its latency group's best top1 and beats the best
    top1 of every strictly faster point. Equal points do not dominate each other, so ties all stay.
    """
    front, best_faster = [], float("-inf")
    ordered = sorted(points, key=lambda p: p["latency_us"])
    for _, group in groupby(ordered, key=lambda p: p["latency_us"]):
        group = list(group)
        best_here = max(p["top1"] for p in group)
        if best_here > best_faster:
            front.extend(p for p in group if p["top1"] == best_here)
            best_faster = best_here
    return front


def params_label(params: dict) -> str:
    """A trial's drawn values as `key=value, ...` (empty when it drew nothing): the search log, `flexiq
    studies show` and the dashboard say them the same way."""
    return ", ".join(f"{key}={value}" for key, value in sorted(params.items()))


def level_means(evaluations: list[dict], latencies: list[dict], backend: str) -> tuple[float | None, float | None]:
    """A trial's two objectives: mean top-1 and mean latency over its 4-bit levels (ratio > 0) on
    `backend`. Optuna ranks trials on these; `flexiq studies show` and the dashboard print them."""
    top1 = [row["top1"] for row in evaluations if row["ratio"] > 0]
    latency = [row["latency_us"] for row in latencies if row["backend"] == backend and row["ratio"] > 0]
    return (sum(top1) / len(top1) if top1 else None, sum(latency) / len(latency) if latency else None)


class Repository:
    """The search store. Open with `Repository.open(url)`; each method is one transaction."""

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self._engine = engine
        self.read_only = read_only
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(**WRITE), expire_on_commit=False)
        self._insert = INSERTS[engine.dialect.name]

    @classmethod
    def open(cls, url: str | None = None, *, read_only: bool = False) -> "Repository":
        """Open (creating or migrating to the newest schema) the store at `url` or `default_db_url()`.

        `read_only`: open an existing store as it is; an empty database, an older schema or an
        unreachable server is a one-line `FlexiqError` (`StoreEmpty`, `StoreOutdated` for the first two).
        """
        engine = create_store_engine(url or default_db_url(), read_only=read_only)
        try:
            check_schema(engine) if read_only else migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, read_only=read_only)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return redact_url(self._engine.url)

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Hold the database-wide schema lock while another library creates its tables in this
        database (Optuna's RDB storage): two drivers starting on a fresh database would otherwise
        race on CREATE TYPE / CREATE TABLE. PostgreSQL: the migrations' advisory lock; SQLite: an
        exclusive lock on a file beside the database."""
        if self._engine.dialect.name == "postgresql":
            with self._engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                    connection.commit()
            return
        database = self._engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        if write and self.read_only:
            raise FlexiqError(f"database {self.url} is open read-only")
        try:
            with (self._write if write else self._read).begin() as session:
                yield session
        except OperationalError as exc:
            raise FlexiqError(f"database {self.url} failed: {failure_reason(exc, self._engine.url)}") from None

    def _upsert(self, session: Session, table: Table, values: dict, key: tuple[str, ...], *, replace: bool) -> int:
        """Insert a row, or on a clash of its unique `key` replace its values (or keep it); its id."""
        insert = self._insert(table).values(**values)
        if replace:
            statement = insert.on_conflict_do_update(
                index_elements=list(key), set_={name: insert.excluded[name] for name in values if name not in key})
        else:
            statement = insert.on_conflict_do_nothing(index_elements=list(key))
        row_id = session.execute(statement.returning(table.c.id)).scalar()
        if row_id is None:  # kept the existing row
            row_id = session.execute(select(table.c.id).filter_by(**{k: values[k] for k in key})).scalar_one()
        return row_id

    @staticmethod
    def _update_one(session: Session, model: type, row_id: int, what: str, **values: Any) -> None:
        if session.execute(update(model).where(model.id == row_id).values(**values)).rowcount != 1:
            raise FlexiqError(f"no {what} with id {row_id}")

    # studies

    def create_study(self, name: str, model: str, dataset: str, config: dict, backends: list[str]) -> int:
        config_json = json.dumps(config_envelope(config), sort_keys=True)
        with self._transaction(write=True) as session:
            if session.scalar(select(Study.id).where(Study.name == name)) is not None:
                raise FlexiqError(f"a study named {name!r} already exists")
            study = Study(name=name, model=model, dataset=dataset, status="running", config_json=config_json,
                          backends=list(backends))
            session.add(study)
            session.flush()
            return study.id

    def get_study(self, id_or_name: int | str) -> dict | None:
        """The study with this id (int) or name (str), with its config; None if there is none."""
        column = Study.id if isinstance(id_or_name, int) else Study.name
        with self._transaction(write=False) as session:
            study = session.scalars(select(Study).where(column == id_or_name)).one_or_none()
            if study is None:
                return None
            return {"id": study.id, "name": study.name, "model": study.model, "dataset": study.dataset,
                    "status": study.status, "config": config_from_json(study.config_json),
                    "backends": list(study.backends), "created": iso(study.created), "updated": iso(study.updated)}

    def list_studies(self) -> list[dict]:
        with self._transaction(write=False) as session:
            return [{"id": s.id, "name": s.name, "status": s.status, "model": s.model, "dataset": s.dataset,
                     "created": iso(s.created)} for s in session.scalars(select(Study).order_by(Study.id))]

    def set_study_status(self, study_id: int, status: str) -> None:
        check_choice(status, STUDY_STATUSES, "study status")
        with self._transaction(write=True) as session:
            self._update_one(session, Study, study_id, "study", status=status, updated=utcnow())

    # trials

    def create_trial(self, study_id: int, number: int, params: dict, optuna_trial_number: int | None = None) -> int:
        """The trial `number` of the study, created if new: a resumed search gets the same row back."""
        values = {"study_id": study_id, "number": number, "status": "running",
                  "params_json": json.dumps(params, sort_keys=True), "optuna_trial_number": optuna_trial_number}
        with self._transaction(write=True) as session:
            return self._upsert(session, Trial.__table__, values, ("study_id", "number"), replace=False)

    def finish_trial(self, trial_id: int, status: str) -> None:
        check_choice(status, FINISHED_TRIAL_STATUSES, "finished trial status")
        with self._transaction(write=True) as session:
            self._update_one(session, Trial, trial_id, "trial", status=status, finished=utcnow())

    def list_trials(self, study_id: int) -> list[dict]:
        with self._transaction(write=False) as session:
            trials = session.scalars(select(Trial).where(Trial.study_id == study_id).order_by(Trial.number))
            return [{"id": t.id, "number": t.number, "status": t.status, "params": json.loads(t.params_json),
                     "optuna_trial_number": t.optuna_trial_number, "created": iso(t.created),
                     "finished": iso(t.finished)} for t in trials]

    def trial_summaries(self, study_id: int) -> list[dict]:
        """Every trial with its drawn params, status and, per latency backend, `level_means` (on the
        study's dataset): what `flexiq studies show` prints."""
        study = self.get_study(study_id)
        results = self.study_results(study_id)
        summaries = []
        for trial in self.list_trials(study_id):
            evaluations = [r for r in results["evaluations"]
                           if r["trial"] == trial["number"] and r["dataset"] == results["dataset"]]
            latencies = [r for r in results["latencies"] if r["trial"] == trial["number"]]
            means = {backend: level_means(evaluations, latencies, backend) for backend in study["backends"]}
            summaries.append({"number": trial["number"], "status": trial["status"], "params": trial["params"],
                              "mean_top1": level_means(evaluations, [], "")[0],
                              "mean_latency_us": {backend: mean[1] for backend, mean in means.items()}})
        return summaries

    # selections and their results

    def _save_selection(self, session: Session, trial_id: int, selection: StorableSelection) -> int:
        values = {"trial_id": trial_id, "method": selection.method, "levels": [float(r) for r in selection.levels],
                  "payload": zlib.compress(selection.to_json().encode())}
        return self._upsert(session, SelectionRow.__table__, values, ("trial_id",), replace=True)

    def _add_evaluation(self, session: Session, selection_id: int, *, ratio: float, top1: float,
                        top5: float | None = None, fitness: float | None = None, dataset: str, samples: int) -> int:
        values = {"selection_id": selection_id, "ratio": ratio, "top1": top1, "top5": top5, "fitness": fitness,
                  "dataset": dataset, "samples": samples}
        return self._upsert(session, Evaluation.__table__, values, ("selection_id", "ratio", "dataset"), replace=True)

    def _add_latency(self, session: Session, selection_id: int, *, backend: str, provenance: str, hardware: dict,
                     ratio: float, latency_us: float, cycles: int | None = None, speedup_vs_int8: float,
                     layers: list[dict] | None = None) -> int:
        values = {"selection_id": selection_id, "backend": backend, "provenance": provenance,
                  "hardware_json": json.dumps(hardware, sort_keys=True), "ratio": ratio, "latency_us": latency_us,
                  "cycles": cycles, "speedup_vs_int8": speedup_vs_int8,
                  "layers_json": json.dumps(layers) if layers is not None else None}
        return self._upsert(session, LatencyMeasurement.__table__, values, ("selection_id", "backend", "ratio"),
                            replace=True)

    def save_selection(self, trial_id: int, selection: StorableSelection) -> int:
        """Store the trial's selection (zlib-compressed JSON), replacing an earlier one of the same trial."""
        with self._transaction(write=True) as session:
            return self._save_selection(session, trial_id, selection)

    def load_selection(self, selection_id: int) -> str:
        """The selection's JSON text, for `Selection.from_json`."""
        return self._selection_json(SelectionRow.id == selection_id, f"no selection with id {selection_id}")

    def _selection_json(self, condition, missing: str) -> str:
        """The JSON text of the one selection matching `condition` (decompressed), or `missing` as an error."""
        with self._transaction(write=False) as session:
            payload = session.scalar(select(SelectionRow.payload).where(condition))
        if payload is None:
            raise FlexiqError(missing)
        return zlib.decompress(payload).decode()

    def add_evaluation(self, selection_id: int, ratio: float, top1: float, top5: float | None,
                       fitness: float | None, dataset: str, samples: int) -> int:
        """Record (or re-record: one row per selection, ratio and dataset) an accuracy."""
        with self._transaction(write=True) as session:
            return self._add_evaluation(session, selection_id, ratio=ratio, top1=top1, top5=top5, fitness=fitness,
                                        dataset=dataset, samples=samples)

    def add_latency(self, selection_id: int, backend: str, provenance: str, hardware: dict, ratio: float,
                    latency_us: float, cycles: int | None, speedup_vs_int8: float,
                    layers: list[dict] | None = None) -> int:
        """Record (or re-record: one row per selection, backend and ratio) a latency; `layers` is the
        backend's per-layer breakdown, [{"name", "latency_us", "cycles"}]."""
        with self._transaction(write=True) as session:
            return self._add_latency(session, selection_id, backend=backend, provenance=provenance,
                                     hardware=hardware, ratio=ratio, latency_us=latency_us, cycles=cycles,
                                     speedup_vs_int8=speedup_vs_int8, layers=layers)

    def add_result(self, trial_id: int, selection: StorableSelection, evaluations: list[dict],
                   latencies: list[dict]) -> int:
        """A selection with all its evaluations and latencies, stored all together or not at all.

        `evaluations` take `add_evaluation`'s keyword arguments (top5, fitness optional), `latencies`
        `add_latency`'s (cycles, layers optional). Returns the selection id.
        """
        with self._transaction(write=True) as session:
            selection_id = self._save_selection(session, trial_id, selection)
            for evaluation in evaluations:
                self._add_evaluation(session, selection_id, **evaluation)
            for latency in latencies:
                self._add_latency(session, selection_id, **latency)
            return selection_id

    # Pareto fronts

    def update_pareto(self, study_id: int) -> None:
        """Recompute the study's Pareto points on every latency backend from its results.

        A candidate is a (selection, ratio) with a latency on the backend and a top-1 on the study's
        dataset. The study row is locked first, so concurrent recomputations do not interleave.
        """
        with self._transaction(write=True) as session:
            dataset = session.scalar(select(Study.dataset).where(Study.id == study_id).with_for_update())
            if dataset is None:
                raise FlexiqError(f"no study with id {study_id}")
            candidates = session.execute(
                select(LatencyMeasurement.backend, LatencyMeasurement.provenance, LatencyMeasurement.ratio,
                       LatencyMeasurement.latency_us, Evaluation.top1, SelectionRow.method,
                       SelectionRow.id.label("selection_id"))
                .join(SelectionRow, SelectionRow.id == LatencyMeasurement.selection_id)
                .join(Trial, Trial.id == SelectionRow.trial_id)
                .join(Evaluation, (Evaluation.selection_id == SelectionRow.id)
                      & (Evaluation.ratio == LatencyMeasurement.ratio) & (Evaluation.dataset == dataset))
                .where(Trial.study_id == study_id)
                .order_by(LatencyMeasurement.backend)
            ).mappings().all()
            session.execute(delete(ParetoPoint).where(ParetoPoint.study_id == study_id))
            for _, points in groupby(candidates, key=lambda c: c["backend"]):
                session.add_all(ParetoPoint(study_id=study_id, **point) for point in pareto_front(list(points)))

    def pareto(self, study_id: int) -> list[dict]:
        """The study's stored Pareto points, by backend in the study's order (its first backend, the one
        `flexiq export --point` reads, first), then fastest first. Each carries its trial's number and
        `point`, its index on its backend's front: what `flexiq export --point` takes.
        Points equal in all but their trial (two trials that drew the same values) are listed once,
        under the first trial."""
        with self._transaction(write=False) as session:
            rows = session.execute(
                select(ParetoPoint, Trial.number)
                .join(SelectionRow, SelectionRow.id == ParetoPoint.selection_id)
                .join(Trial, Trial.id == SelectionRow.trial_id)
                .where(ParetoPoint.study_id == study_id)
                .order_by(ParetoPoint.backend, ParetoPoint.latency_us, ParetoPoint.top1.desc(), ParetoPoint.ratio,
                          ParetoPoint.method, Trial.number)).all()
            order = {backend: i for i, backend in
                     enumerate(session.scalar(select(Study.backends).where(Study.id == study_id)) or [])}
        rows = sorted(rows, key=lambda row: order.get(row[0].backend, len(order)))  # stable: fastest first stays
        points, seen, per_backend = [], set(), Counter()
        for p, trial in rows:
            key = (p.backend, p.ratio, p.method, p.top1, p.latency_us)
            if key in seen:
                continue
            seen.add(key)
            points.append({"backend": p.backend, "provenance": p.provenance, "ratio": p.ratio, "method": p.method,
                           "top1": p.top1, "latency_us": p.latency_us, "trial": trial,
                           "point": per_backend[p.backend]})
            per_backend[p.backend] += 1
        return points

    # checkpoints

    def save_checkpoint(self, trial_id: int, key: str, payload: bytes) -> None:
        values = {"trial_id": trial_id, "key": key, "payload": bytes(payload), "updated": utcnow()}
        with self._transaction(write=True) as session:
            self._upsert(session, Checkpoint.__table__, values, ("trial_id", "key"), replace=True)

    def load_checkpoint(self, trial_id: int, key: str) -> bytes | None:
        with self._transaction(write=False) as session:
            payload = session.scalar(select(Checkpoint.payload).where(Checkpoint.trial_id == trial_id,
                                                                       Checkpoint.key == key))
        return bytes(payload) if payload is not None else None

    # jobs

    def start_job(self, submission_id: str, study_id: int | None = None) -> int:
        """The running job of this submission, created if new (a resubmitted job gets its row back)."""
        values = {"submission_id": submission_id, "study_id": study_id, "status": "running"}
        with self._transaction(write=True) as session:
            return self._upsert(session, Job.__table__, values, ("submission_id",), replace=False)

    def heartbeat(self, job_id: int) -> None:
        with self._transaction(write=True) as session:
            self._update_one(session, Job, job_id, "job", heartbeat=utcnow())

    def finish_job(self, job_id: int, status: str) -> None:
        check_choice(status, FINISHED_JOB_STATUSES, "finished job status")
        with self._transaction(write=True) as session:
            self._update_one(session, Job, job_id, "job", status=status, finished=utcnow())

    def list_jobs(self) -> list[dict]:
        with self._transaction(write=False) as session:
            return [{"id": j.id, "submission_id": j.submission_id, "study_id": j.study_id, "status": j.status,
                     "heartbeat": iso(j.heartbeat), "created": iso(j.created), "finished": iso(j.finished)}
                    for j in session.scalars(select(Job).order_by(Job.id))]

    # schedules

    def add_schedule(self, name: str, cron: str, config: dict, timezone: str = "UTC") -> int:
        config_json = json.dumps(config_envelope(config), sort_keys=True)
        with self._transaction(write=True) as session:
            if session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
                raise FlexiqError(f"a schedule named {name!r} already exists")
            schedule = Schedule(name=name, cron=cron, timezone=timezone, config_json=config_json)
            session.add(schedule)
            session.flush()
            return schedule.id

    def list_schedules(self, enabled_only: bool = False) -> list[dict]:
        """Every schedule with its config and its newest run (or None). A config this code cannot
        load (a newer flexiq's) gives `config` None and the reason in `config_error`, so one such row
        does not hide the others."""
        with self._transaction(write=False) as session:
            query = select(Schedule).order_by(Schedule.id)
            if enabled_only:
                query = query.where(Schedule.enabled.is_(True))
            schedules = session.scalars(query).all()
            newest = select(ScheduleRun.schedule_id, func.max(ScheduleRun.slot).label("slot")) \
                .group_by(ScheduleRun.schedule_id).subquery()
            last = {run.schedule_id: self._run_dict(run, job_status) for run, job_status in session.execute(
                self._runs_with_job_status().join(
                    newest, and_(newest.c.schedule_id == ScheduleRun.schedule_id, newest.c.slot == ScheduleRun.slot)))}
        listed = []
        for s in schedules:
            try:
                config, config_error = config_from_json(s.config_json), None
            except (FlexiqError, ValueError) as exc:
                config, config_error = None, str(exc)
            listed.append({"id": s.id, "name": s.name, "cron": s.cron, "timezone": s.timezone, "config": config,
                           "config_error": config_error, "enabled": s.enabled, "created": iso(s.created),
                           "last_run": last.get(s.id)})
        return listed

    def set_schedule_enabled(self, name: str, enabled: bool) -> None:
        """Pause or resume a schedule. Resumed, it is like a scheduler back from downtime: the newest
        slot it missed while paused runs once, right away."""
        with self._transaction(write=True) as session:
            if session.execute(update(Schedule).where(Schedule.name == name).values(enabled=enabled)).rowcount != 1:
                raise FlexiqError(f"no schedule named {name!r}")

    def remove_schedule(self, name: str) -> int:
        """Delete a schedule and its run records (the studies its runs made stay); its former id."""
        with self._transaction(write=True) as session:
            schedule_id = session.scalar(select(Schedule.id).where(Schedule.name == name))
            if schedule_id is None:
                raise FlexiqError(f"no schedule named {name!r}")
            session.execute(delete(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id))
            session.execute(delete(Schedule).where(Schedule.id == schedule_id))
            return schedule_id

    def claim_schedule_slot(self, schedule_id: int, slot: datetime, study_name: str, submission_id: str,
                            scheduler: str) -> int | None:
        """Insert the run of this (schedule, slot); its id, or None when another scheduler already
        claimed it (the unique key decides, inside the database, even between concurrent claims)."""
        values = {"schedule_id": schedule_id, "slot": slot, "study_name": study_name,
                  "submission_id": submission_id, "scheduler": scheduler, "status": "claimed", "claimed": utcnow()}
        table = ScheduleRun.__table__
        with self._transaction(write=True) as session:
            if session.scalar(select(Schedule.id).where(Schedule.id == schedule_id)) is None:
                return None  # removed since the scheduler listed it
            statement = self._insert(table).values(**values).on_conflict_do_nothing(
                index_elements=["schedule_id", "slot"]).returning(table.c.id)
            return session.execute(statement).scalar()

    def update_schedule_run(self, run_id: int, status: str, submitter: str | None = None,
                            message: str | None = None) -> None:
        check_choice(status, SCHEDULE_RUN_STATUSES, "schedule run status")
        values: dict[str, Any] = {"status": status}
        if submitter is not None:
            values["submitter"] = submitter
        if message is not None:
            values["message"] = message
        if status in FINISHED_JOB_STATUSES:
            values["finished"] = utcnow()
        with self._transaction(write=True) as session:
            self._update_one(session, ScheduleRun, run_id, "schedule run", **values)

    def schedule_runs(self, schedule: str | None = None, statuses: Sequence[str] | None = None,
                      limit: int | None = None) -> list[dict]:
        """Runs, newest slot first, each with its job's status (None before the job recorded itself)."""
        with self._transaction(write=False) as session:
            query = self._runs_with_job_status().order_by(ScheduleRun.slot.desc(), ScheduleRun.id.desc())
            if schedule is not None:
                query = query.join(Schedule, Schedule.id == ScheduleRun.schedule_id).where(Schedule.name == schedule)
            if statuses is not None:
                query = query.where(ScheduleRun.status.in_(list(statuses)))
            if limit is not None:
                query = query.limit(limit)
            return [self._run_dict(run, job_status) for run, job_status in session.execute(query)]

    def schedule_run(self, run_id: int) -> dict:
        """A run with the search config of its schedule (what `flexiq search --schedule-run` starts from)."""
        with self._transaction(write=False) as session:
            found = session.execute(self._runs_with_job_status(Schedule.config_json)
                                    .join(Schedule, Schedule.id == ScheduleRun.schedule_id)
                                    .where(ScheduleRun.id == run_id)).first()
            if found is None:
                raise FlexiqError(f"no schedule run with id {run_id}")
            run, job_status, config_json = found
            return {**self._run_dict(run, job_status), "config": config_from_json(config_json)}

    @staticmethod
    def _runs_with_job_status(*columns):
        """Runs with the status their job recorded under the run's submission id (None before it did)."""
        return select(ScheduleRun, Job.status, *columns).outerjoin(Job, Job.submission_id == ScheduleRun.submission_id)

    @staticmethod
    def _run_dict(run: ScheduleRun, job_status: str | None) -> dict:
        return {"id": run.id, "schedule_id": run.schedule_id, "slot": iso(run.slot), "study_name": run.study_name,
                "submission_id": run.submission_id, "scheduler": run.scheduler, "submitter": run.submitter,
                "status": run.status, "message": run.message, "claimed": iso(run.claimed),
                "finished": iso(run.finished), "job_status": job_status}

    # whole studies, for readers (the dashboard)

    def study_summaries(self) -> list[dict]:
        """Every study with its trial count, its jobs' last heartbeat and its best top-1 at each ratio
        (on the study's own dataset), for a table of studies."""
        with self._transaction(write=False) as session:
            studies = session.scalars(select(Study).order_by(Study.id)).all()
            trials = dict(session.execute(select(Trial.study_id, func.count()).group_by(Trial.study_id)).all())
            heartbeats = dict(session.execute(
                select(Job.study_id, func.max(Job.heartbeat)).group_by(Job.study_id)).all())
            best = session.execute(
                select(Trial.study_id, Evaluation.ratio, func.max(Evaluation.top1))
                .join(SelectionRow, SelectionRow.trial_id == Trial.id)
                .join(Evaluation, Evaluation.selection_id == SelectionRow.id)
                .join(Study, and_(Study.id == Trial.study_id, Study.dataset == Evaluation.dataset))
                .group_by(Trial.study_id, Evaluation.ratio)).all()
        best_top1: dict[int, dict[float, float]] = {}
        for study_id, ratio, top1 in best:
            best_top1.setdefault(study_id, {})[ratio] = top1
        return [{"id": s.id, "name": s.name, "status": s.status, "model": s.model, "dataset": s.dataset,
                 "backends": list(s.backends), "created": iso(s.created), "updated": iso(s.updated),
                 "trials": trials.get(s.id, 0), "heartbeat": iso(heartbeats.get(s.id)),
                 "best_top1": dict(sorted(best_top1.get(s.id, {}).items()))} for s in studies]

    def study_results(self, study_id: int) -> dict:
        """Every stored result of the study: `evaluations` (one per selection, ratio and dataset) and
        `latencies` (one per selection, backend and ratio, with the top-1 on the study's dataset at
        that ratio, or None), each with its trial's number and params and its selection's method."""
        with self._transaction(write=False) as session:
            dataset = session.scalar(select(Study.dataset).where(Study.id == study_id))
            if dataset is None:
                raise FlexiqError(f"no study with id {study_id}")
            results = (select(Trial.id.label("trial_id"), Trial.number.label("trial"), Trial.params_json,
                              SelectionRow.id.label("selection_id"), SelectionRow.method)
                       .join(SelectionRow, SelectionRow.trial_id == Trial.id)
                       .where(Trial.study_id == study_id))
            evaluations = session.execute(
                results.add_columns(Evaluation.ratio, Evaluation.top1, Evaluation.top5, Evaluation.fitness,
                                    Evaluation.dataset, Evaluation.samples)
                .join(Evaluation, Evaluation.selection_id == SelectionRow.id)
                .order_by(Trial.number, Evaluation.dataset, Evaluation.ratio)).mappings().all()
            latencies = session.execute(
                results.add_columns(LatencyMeasurement.backend, LatencyMeasurement.provenance,
                                    LatencyMeasurement.hardware_json, LatencyMeasurement.ratio,
                                    LatencyMeasurement.latency_us, LatencyMeasurement.cycles,
                                    LatencyMeasurement.speedup_vs_int8, LatencyMeasurement.layers_json, Evaluation.top1)
                .join(LatencyMeasurement, LatencyMeasurement.selection_id == SelectionRow.id)
                .outerjoin(Evaluation, and_(Evaluation.selection_id == SelectionRow.id,
                                            Evaluation.ratio == LatencyMeasurement.ratio,
                                            Evaluation.dataset == dataset))
                .order_by(Trial.number, LatencyMeasurement.backend, LatencyMeasurement.ratio)).mappings().all()

        def decoded(row, **json_columns: str) -> dict:
            plain = {key: value for key, value in row.items() if key not in json_columns.values()}
            plain.update({key: json.loads(row[column]) if row[column] is not None else None
                          for key, column in json_columns.items()})
            return plain

        return {"dataset": dataset,
                "evaluations": [decoded(row, params="params_json") for row in evaluations],
                "latencies": [decoded(row, params="params_json", hardware="hardware_json", layers="layers_json")
                              for row in latencies]}

    def trial_progress(self, study_id: int) -> list[dict]:
        """The study's running trials, each with its latest evolution checkpoint decoded (where the
        search is: level, generation, best fitness, candidates scored) and when it was saved; the
        checkpoint keys are None until the first generation is done."""
        with self._transaction(write=False) as session:
            rows = session.execute(
                select(Trial.id, Trial.number, Trial.params_json, Checkpoint.payload, Checkpoint.updated)
                .outerjoin(Checkpoint, and_(Checkpoint.trial_id == Trial.id, Checkpoint.key == EVOLUTION_CHECKPOINT))
                .where(Trial.study_id == study_id, Trial.status == "running")
                .order_by(Trial.number)).all()
        progress = []
        for trial_id, number, params_json, payload, updated in rows:
            state = json.loads(zlib.decompress(payload)) if payload is not None else None
            progress.append({"trial_id": trial_id, "number": number, "params": json.loads(params_json),
                             "updated": iso(updated), **evolution_progress(state)})
        return progress

    def selection_for_trial(self, trial_id: int) -> str:
        """The trial's selection as JSON text (what `flexiq select --out` writes)."""
        return self._selection_json(SelectionRow.trial_id == trial_id, f"trial {trial_id} has no stored selection")

    def study_config(self, study_id: int) -> dict:
        """The study's config as stored (see the module docstring)."""
        with self._transaction(write=False) as session:
            config_json = session.scalar(select(Study.config_json).where(Study.id == study_id))
        if config_json is None:
            raise FlexiqError(f"no study with id {study_id}")
        return config_from_json(config_json)


def evolution_progress(state: dict | None) -> dict:
    """Where an evolutionary search is, from its checkpointed state (`selection.evolution`): the
    level being searched, its generation, the generations run over all levels, the best fitness
    so far (lower is better) and the candidates scored. All None without a state."""
    if state is None:
        return dict.fromkeys(("levels", "levels_done", "level_ratio", "generation", "generations_done",
                              "best_fitness", "scored"))
    done, level = state["done"], state["level_state"] or {}
    upcoming = state["levels"][len(done)] if len(done) < len(state["levels"]) else None
    best = level.get("best", done[-1]["fitness"] if done else None)
    return {"levels": state["levels"], "levels_done": len(done), "level_ratio": level.get("ratio", upcoming),
            "generation": level.get("generation", 0),
            "generations_done": sum(d["generations"] for d in done) + level.get("generation", 0),
            "best_fitness": best, "scored": state["scored"]}
