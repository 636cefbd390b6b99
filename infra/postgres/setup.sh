#!/usr/bin/env bash
# Create the PostgreSQL role and database of a shared FlexiQ store on an existing server (run it
# as a user that may create roles, e.g. `sudo -u postgres infra/postgres/setup.sh`).
#   FLEXIQ_DB_USER (default flexiq), FLEXIQ_DB_NAME (default flexiq), FLEXIQ_DB_PASSWORD (required)
# The schema itself is created and migrated by flexiq on first use (Alembic; Optuna adds its tables).
# Prints the URL to use as --db / FLEXIQ_DB with the password masked: the password stays yours.
set -euo pipefail
DB_USER=${FLEXIQ_DB_USER:-flexiq}
DB_NAME=${FLEXIQ_DB_NAME:-flexiq}
HOST=${FLEXIQ_DB_HOST:-127.0.0.1}
: "${FLEXIQ_DB_PASSWORD:?set FLEXIQ_DB_PASSWORD (it is not printed)}"
psql -v ON_ERROR_STOP=1 -v user="$DB_USER" -v db="$DB_NAME" -v password="$FLEXIQ_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
echo "postgresql://$DB_USER:***@$HOST:5432/$DB_NAME"
