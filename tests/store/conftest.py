"""Store fixtures: every store test runs on SQLite and on a real PostgreSQL server.

PostgreSQL comes from $FLEXIQ_TEST_POSTGRES_URL, else from infra/postgres-test-server.sh (a throwaway
cluster on 127.0.0.1). Without a server the PostgreSQL cases skip, unless FLEXIQ_REQUIRE_POSTGRES=1
(CI), which makes them fail. Each PostgreSQL test gets a database of its own, dropped afterwards
(the URL's user needs CREATEDB; the script's user has it). URLs carry passwords: never print them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine

from flexiq_search.store import Repository
from flexiq_search.store.engine import parse_url

SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "postgres-test-server.sh"


def start_test_server() -> tuple[str | None, str]:
    """The URL printed by the server script, or None and why there is none."""
    try:
        run = subprocess.run(["bash", str(SERVER_SCRIPT)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None, f"{SERVER_SCRIPT.name} timed out"
    if run.returncode != 0:
        return None, (run.stderr.strip().splitlines() or [f"{SERVER_SCRIPT.name} failed"])[-1]
    return run.stdout.strip(), ""


@pytest.fixture(scope="session")
def postgres_server() -> URL:
    url, problem = os.environ.get("FLEXIQ_TEST_POSTGRES_URL") or None, ""
    if url is None:
        url, problem = start_test_server()
    if url is None:
        message = f"no PostgreSQL server for the store tests: {problem}"
        if os.environ.get("FLEXIQ_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return parse_url(url)


@pytest.fixture
def postgres_url(postgres_server: URL):
    """A fresh, empty database on the test server (its URL, password included, as a string)."""
    name = f"flexiq_t_{uuid.uuid4().hex[:12]}"
    maintenance = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield postgres_server.set(database=name).render_as_string(hide_password=False)
        with maintenance.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        maintenance.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flexiq.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def repo(db_url: str):
    with Repository.open(db_url) as repository:
        yield repository


def stamp_future_revision(db_url: str) -> None:
    """A store migrated to head, then marked with a revision no flexiq knows (a newer release's)."""
    from sqlalchemy import text

    from flexiq_search.store import Repository
    from flexiq_search.store.engine import create_store_engine

    Repository.open(db_url).close()
    engine = create_store_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE flexiq_alembic_version SET version_num = '9999'"))
    engine.dispose()
