"""The store's database fixtures (SQLite and a real PostgreSQL server) for the scheduler tests, and
a way to backdate a schedule (add_schedule stamps the real time; a scheduler never runs a slot
older than its schedule)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import text

from flexiq_search.store.engine import create_store_engine
from tests.store.conftest import db_url, postgres_server, postgres_url, repo  # noqa: F401


def backdate_schedule(db_url: str, name: str, moment: datetime) -> None:
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as connection:
            stored = moment if engine.dialect.name == "postgresql" else \
                moment.astimezone(timezone.utc).replace(tzinfo=None)  # SQLite keeps naive UTC
            connection.execute(text("UPDATE flexiq_schedules SET created = :moment WHERE name = :name"),
                               {"moment": stored, "name": name})
    finally:
        engine.dispose()
