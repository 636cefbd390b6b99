"""The search store's tables: studies -> trials -> selections -> evaluations / latency measurements.

Modelled on Optuna's storage: small rows, JSON for open-ended parameters, a unique key on every
"natural" identity (a trial's number in its study, an evaluation's selection/ratio/dataset, ...) so a
resumed search re-records a point by upserting instead of duplicating it. Constraint names come from
one naming convention, so Alembic migrations name the same constraint the same way on every database.
Timestamps are timezone-aware UTC (SQLite keeps no zone; `UTCDateTime` puts it back on read).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, MetaData,
    String, Text, TypeDecorator, UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Every table (and Alembic's version table) is prefixed: Optuna's RDB storage shares the database and
# has its own `studies`, `trials` and `alembic_version`.
VERSION_TABLE = "flexiq_alembic_version"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STUDY_STATUSES = ("running", "finished", "failed")
TRIAL_STATUSES = ("running", "complete", "failed")
JOB_STATUSES = ("pending", "running", "succeeded", "failed")
# A scheduled slot is claimed (its row inserted), then submitted; it ends as its job ended, or as
# failed when the submission itself failed or the job died before recording an end.
SCHEDULE_RUN_STATUSES = ("claimed", "submitted", "succeeded", "failed")
PROVENANCES = ("measured", "simulated")  # a latency timed on hardware, or computed by a simulator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def one_of(column: str, choices: tuple[str, ...]) -> CheckConstraint:
    """A named CHECK that keeps a status column inside its vocabulary on every database."""
    allowed = ", ".join(f"'{choice}'" for choice in choices)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on both PostgreSQL (timestamptz) and SQLite (naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store timestamps must be timezone-aware")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    """One search: a model on a dataset, its versioned search config and the latency backends it ranks on."""

    __tablename__ = "flexiq_studies"
    __table_args__ = (one_of("status", STUDY_STATUSES),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    config_json: Mapped[str] = mapped_column(Text)  # {"_type", "_version", "_data"}
    backends: Mapped[list] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Trial(Base):
    """One candidate of the outer search; `number` is its position in the study (stable across resumes)."""

    __tablename__ = "flexiq_trials"
    __table_args__ = (UniqueConstraint("study_id", "number"), one_of("status", TRIAL_STATUSES))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("flexiq_studies.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    params_json: Mapped[str] = mapped_column(Text)
    optuna_trial_number: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SelectionRow(Base):
    """A trial's channel selection; `payload` is the zlib-compressed `Selection.to_json()`."""

    __tablename__ = "flexiq_selections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("flexiq_trials.id"), unique=True)
    method: Mapped[str] = mapped_column(String(100))
    levels: Mapped[list] = mapped_column(JSON)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Evaluation(Base):
    """Accuracy of a selection at one ratio level on one dataset."""

    __tablename__ = "flexiq_evaluations"
    __table_args__ = (UniqueConstraint("selection_id", "ratio", "dataset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    selection_id: Mapped[int] = mapped_column(ForeignKey("flexiq_selections.id"))
    ratio: Mapped[float] = mapped_column(Float)
    top1: Mapped[float] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    fitness: Mapped[float | None] = mapped_column(Float)
    dataset: Mapped[str] = mapped_column(String(200))
    samples: Mapped[int] = mapped_column(Integer)


class LatencyMeasurement(Base):
    """Latency of a selection at one ratio level on one backend, measured or simulated."""

    __tablename__ = "flexiq_latency_measurements"
    __table_args__ = (UniqueConstraint("selection_id", "backend", "ratio"), one_of("provenance", PROVENANCES))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    selection_id: Mapped[int] = mapped_column(ForeignKey("flexiq_selections.id"))
    backend: Mapped[str] = mapped_column(String(100))
    provenance: Mapped[str] = mapped_column(String(16))
    hardware_json: Mapped[str] = mapped_column(Text)
    ratio: Mapped[float] = mapped_column(Float)
    latency_us: Mapped[float] = mapped_column(Float)
    cycles: Mapped[int | None] = mapped_column(BigInteger)
    speedup_vs_int8: Mapped[float] = mapped_column(Float)
    layers_json: Mapped[str | None] = mapped_column(Text)  # [{"name", "latency_us", "cycles"}]; None before 0002


class ParetoPoint(Base):
    """A derived row: one point of a study's accuracy/latency front on one backend (recomputed, never edited)."""

    __tablename__ = "flexiq_pareto_points"
    __table_args__ = (Index(None, "study_id", "backend"), one_of("provenance", PROVENANCES))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("flexiq_studies.id"))
    backend: Mapped[str] = mapped_column(String(100))
    provenance: Mapped[str] = mapped_column(String(16))
    ratio: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(100))
    top1: Mapped[float] = mapped_column(Float)
    latency_us: Mapped[float] = mapped_column(Float)
    selection_id: Mapped[int] = mapped_column(ForeignKey("flexiq_selections.id"))


class Checkpoint(Base):
    """Opaque resumable search state of a trial, overwritten at each generation boundary."""

    __tablename__ = "flexiq_checkpoints"
    __table_args__ = (UniqueConstraint("trial_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("flexiq_trials.id"))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Job(Base):
    """A submitted search job; a stale `heartbeat` tells a crashed worker from a slow one."""

    __tablename__ = "flexiq_jobs"
    __table_args__ = (one_of("status", JOB_STATUSES),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(200), unique=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("flexiq_studies.id"))
    status: Mapped[str] = mapped_column(String(16))
    heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Schedule(Base):
    """A recurring search: a cron expression (read in `timezone`) and the versioned config each run starts from."""

    __tablename__ = "flexiq_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    config_json: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScheduleRun(Base):
    """One cron slot of a schedule, claimed by one scheduler: the unique (schedule, slot) key is what
    keeps two schedulers from starting the same slot twice."""

    __tablename__ = "flexiq_schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "slot"), one_of("status", SCHEDULE_RUN_STATUSES))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("flexiq_schedules.id", ondelete="CASCADE"))
    slot: Mapped[datetime] = mapped_column(UTCDateTime)  # the cron time this run stands for
    study_name: Mapped[str] = mapped_column(String(200))
    submission_id: Mapped[str] = mapped_column(String(200), unique=True)  # the job's id (flexiq_jobs, Ray)
    scheduler: Mapped[str] = mapped_column(String(200))  # host:pid of the claiming scheduler
    submitter: Mapped[str | None] = mapped_column(String(32))  # "local" or "ray"
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    claimed: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
