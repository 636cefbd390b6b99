"""Opening the store: URL defaults, engines tuned per database, migrations, and redacted errors.

SQLite (the embedded default) runs in WAL mode so readers (the dashboard) never block the writer,
and every write transaction starts with BEGIN IMMEDIATE: there is one writer at a time, and a second
process waits (busy timeout) instead of failing half-way through when its read lock cannot be
upgraded. PostgreSQL is reached through psycopg 3. Database URLs can carry passwords, so a URL is
only ever shown redacted, and connection failures become one-line `FlexiqError`s naming that URL.

Readers that must never change the database (the dashboard) open it read-only: SQLite through a
`mode=ro` URI, PostgreSQL with read-only transactions by default; they do not migrate, so
`check_schema` tells an empty database or an older schema apart with a clear message instead.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ..home import data_home
from ..errors import FlexiqError
from .schema import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a second writer waits for the first one
POSTGRES_CONNECT_TIMEOUT_S = 10
WRITE = {"flexiq_write": True}  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)
MIGRATION_LOCK_ID = 0x666C6578  # PostgreSQL advisory lock: one process migrates at a time


class StoreEmpty(FlexiqError):
    """The database holds no flexiq store (nothing has been searched into it yet)."""


class StoreOutdated(FlexiqError):
    """The database's schema is an older revision; a read-only reader must not migrate it."""


def default_db_url() -> str:
    """$FLEXIQ_DB, else a SQLite file in the data folder ($FLEXIQ_HOME or ~/.local/share/flexiq)."""
    return os.environ.get("FLEXIQ_DB") or f"sqlite:///{data_home() / 'flexiq.db'}"


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ***; also for URLs SQLAlchemy cannot parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def parse_url(url: str) -> URL:
    """A SQLite or psycopg 3 PostgreSQL URL (`postgresql://` and `postgres://` get the psycopg driver)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise FlexiqError(f"malformed database URL {redact_url(url)} (expected sqlite:///PATH or "
                          "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise FlexiqError(f"unsupported database {redact_url(parsed)}: use sqlite:/// or postgresql://")
    return parsed


def optuna_storage_url(url: str) -> str:
    """The same database for Optuna's RDB storage (with the driver we install; never log it)."""
    return parse_url(url).render_as_string(hide_password=False)


def failure_reason(exc: BaseException, url: URL) -> str:
    """One line from a driver error (libpq's span several), never containing the password."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    reason = " ".join(message.splitlines()[0].rsplit("failed: ", 1)[-1].split()) if message else type(exc).__name__
    return reason.replace(url.password, "***") if url.password else reason


def create_store_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for `url`; `read_only`: the database refuses every write of this engine's sessions."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "postgresql":
            connect_args = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
            if read_only:
                connect_args["options"] = "-c default_transaction_read_only=on"
            return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        if read_only:
            return create_sqlite_reader(parsed)
        engine = create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise FlexiqError(f"unsupported database driver in {redact_url(parsed)}: {exc}") from None
    if parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FlexiqError(f"cannot open database {redact_url(parsed)}: {exc.strerror}") from None
    event.listen(engine, "connect", configure_sqlite_connection)
    event.listen(engine, "begin", begin_sqlite_transaction)
    return engine


def create_sqlite_reader(parsed: URL) -> Engine:
    """A SQLite engine whose connections are opened with `mode=ro` (the file is never created or written).

    The URL stays the user's (for messages); connections come from `creator`, as a URI of the file.
    """
    if not parsed.database or parsed.database == ":memory:":
        raise FlexiqError(f"cannot open {redact_url(parsed)} read-only: it names no database file")
    path = Path(parsed.database).resolve()
    if not path.is_file():
        raise StoreEmpty(f"database {redact_url(parsed)} does not exist (no flexiq store yet)")
    uri = f"{path.as_uri()}?mode=ro"

    def connect() -> sqlite3.Connection:
        # Streamlit and the pool hand connections between threads; each is used by one at a time.
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = create_engine(parsed, creator=connect, pool_pre_ping=True)
    event.listen(engine, "connect", configure_sqlite_reader)
    event.listen(engine, "begin", begin_sqlite_transaction)
    return engine


def configure_sqlite_reader(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, issues BEGIN (below): the module's implicit BEGIN is deferred.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def configure_sqlite_connection(dbapi_connection: Any, record: Any) -> None:
    configure_sqlite_reader(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def begin_sqlite_transaction(connection: Connection) -> None:
    writing = connection.get_execution_options().get("flexiq_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def alembic_config(connection: Connection) -> Config:
    """Alembic configured in code (no alembic.ini): the packaged migrations, run on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """`alembic upgrade head` in one transaction; concurrent callers wait for each other."""
    try:
        with engine.execution_options(**WRITE).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            command.upgrade(alembic_config(connection), "head")
    except DBAPIError as exc:
        raise FlexiqError(f"cannot open database {redact_url(engine.url)}: {failure_reason(exc, engine.url)}") from None
    except CommandError as exc:  # e.g. a schema revision from a newer flexiq
        raise FlexiqError(f"cannot migrate database {redact_url(engine.url)}: {exc}") from None


def check_schema(engine: Engine) -> None:
    """Refuse, with one clear line, a database that is unreachable, empty, or not at the newest schema."""
    shown = redact_url(engine.url)
    try:
        with engine.connect() as connection:
            if VERSION_TABLE not in inspect(connection).get_table_names():
                raise StoreEmpty(f"database {shown} is empty (no flexiq store)")
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            current = context.get_current_revision()
    except DBAPIError as exc:
        raise FlexiqError(f"cannot open database {shown}: {failure_reason(exc, engine.url)}") from None
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    head = scripts.get_current_head()
    if current is None:
        raise StoreEmpty(f"database {shown} is empty (no flexiq store)")
    if current == head:
        return
    if current in {script.revision for script in scripts.walk_revisions()}:
        raise StoreOutdated(f"database {shown} has an older schema (revision {current}); run any flexiq search "
                            "(or flexiq_search.store.engine.upgrade) to migrate")
    raise FlexiqError(f"database {shown} has schema revision {current!r}, unknown to this flexiq "
                      f"(newest known: {head}); it was written by a newer flexiq")


def upgrade(url: str | None = None) -> None:
    """Bring the database at `url` (default: `default_db_url()`) to the newest schema."""
    engine = create_store_engine(url or default_db_url())
    try:
        migrate(engine)
    finally:
        engine.dispose()
