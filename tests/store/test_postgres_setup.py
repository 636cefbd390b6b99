"""infra/postgres/setup.sh creates a role and database that a flexiq store then opens (real server)."""

import os
import subprocess
import uuid
from pathlib import Path

from sqlalchemy import create_engine

from flexiq_search.store import Repository

SETUP = Path(__file__).resolve().parents[2] / "infra" / "postgres" / "setup.sh"


def test_setup_script_creates_a_usable_store_and_does_not_print_the_password(postgres_server):
    suffix = uuid.uuid4().hex[:8]
    user, database, password = f"flexiq_u{suffix}", f"flexiq_d{suffix}", f"pw-{uuid.uuid4().hex}"
    env = dict(os.environ, PGHOST=postgres_server.host, PGPORT=str(postgres_server.port),
               PGUSER=postgres_server.username, PGPASSWORD=postgres_server.password,
               PGDATABASE=postgres_server.database, FLEXIQ_DB_USER=user, FLEXIQ_DB_NAME=database,
               FLEXIQ_DB_PASSWORD=password)
    try:
        for _ in range(2):  # idempotent
            result = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert password not in result.stdout + result.stderr and "***" in result.stdout
        url = postgres_server.set(username=user, password=password, database=database)
        with Repository.open(url.render_as_string(hide_password=False)) as repo:
            assert repo.list_studies() == []
    finally:
        admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{user}"')
        admin.dispose()
