"""Alembic environment of the flexiq store, driven only from code (`engine.alembic_config`, no alembic.ini).

The caller hands over an open connection (inside its transaction), so migrating and using the store
share one engine and the caller's locking. SQLite alters tables by copying them (`render_as_batch`).

A new revision after a change to schema.py (review the generated file before committing it):

    from alembic import command
    from flexiq_search.store.engine import alembic_config, create_store_engine, migrate
    engine = create_store_engine("sqlite:////tmp/flexiq-revision.db")
    migrate(engine)
    with engine.begin() as connection:
        command.revision(alembic_config(connection), "what changed", autogenerate=True, rev_id="0002")
"""

from __future__ import annotations

from typing import Any

from alembic import context

from flexiq_search.store.schema import VERSION_TABLE, Base, UTCDateTime


def render_item(kind: str, item: Any, autogen_context: Any) -> str | bool:
    """Write UTCDateTime as its plain column type: a migration must not import application types."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the store's migrations through flexiq_search.store.engine.upgrade()")
# Our own version table: Optuna's RDB storage keeps its schema (and its `alembic_version`) in the same database.
context.configure(connection=connection, target_metadata=Base.metadata, render_item=render_item,
                  render_as_batch=connection.dialect.name == "sqlite", version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
