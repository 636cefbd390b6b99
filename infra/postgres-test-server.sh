#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests; prints its SQLAlchemy URL on stdout.
#
# Uses the installed server binaries (Debian: apt-get install postgresql), installs nothing. Creates
# a cluster in $FLEXIQ_PG_DIR (default /tmp/flexiq-pg) listening only on 127.0.0.1:$FLEXIQ_PG_PORT
# (default 55432, no Unix socket), with a user `flexiq` (allowed to create the per-test databases)
# whose random password is kept inside the data directory, and a database `flexiq_test`; starts it
# if it is not running. Safe to run again: an existing cluster is reused. As root, the server runs
# as the `postgres` user (initdb refuses root).
#
#   postgres-test-server.sh          start (if needed) and print the URL
#   postgres-test-server.sh status   exit 0 when the server is running, 1 when not
#   postgres-test-server.sh stop     stop it (the cluster stays for the next start)
set -euo pipefail
ACTION=${1:-start}
case "$ACTION" in start|status|stop) ;; *) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;; esac

DATA_DIR=${FLEXIQ_PG_DIR:-/tmp/flexiq-pg}
PORT=${FLEXIQ_PG_PORT:-55432}
DB_USER=flexiq
DB_NAME=flexiq_test
PASSWORD_FILE=$DATA_DIR/flexiq-password

fail() { echo "postgres-test-server: $*" >&2; exit 1; }

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_ctl" ] \
    || fail "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"

if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || fail "running as root but there is no 'postgres' user to run the server"
    as_server_owner() { runuser -u postgres -- "$@"; }
else
    as_server_owner() { "$@"; }
fi

running() { [ -s "$DATA_DIR/PG_VERSION" ] && as_server_owner "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; }
if [ "$ACTION" = status ]; then
    if running; then exit 0; else exit 1; fi
fi
if [ "$ACTION" = stop ]; then
    if running; then
        as_server_owner "$BIN/pg_ctl" -D "$DATA_DIR" -w -t 60 -m fast stop >/dev/null || fail "the server did not stop"
    fi
    exit 0
fi

if [ ! -s "$DATA_DIR/PG_VERSION" ]; then
    mkdir -p "$DATA_DIR"
    chmod 700 "$DATA_DIR"
    password_tmp=$(mktemp)
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$password_tmp"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$DATA_DIR" "$password_tmp"
    if ! output=$(as_server_owner "$BIN/initdb" -D "$DATA_DIR" -U "$DB_USER" --pwfile="$password_tmp" \
            --auth=scram-sha-256 -E UTF8 --no-locale 2>&1); then
        rm -f "$password_tmp"
        echo "$output" >&2
        fail "initdb failed in $DATA_DIR"
    fi
    mv "$password_tmp" "$PASSWORD_FILE"
    cat >>"$DATA_DIR/postgresql.conf" <<EOF
# flexiq test server: local TCP only
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
fsync = off
EOF
fi

PASSWORD=$(cat "$PASSWORD_FILE")
if ! running; then
    as_server_owner "$BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 start >/dev/null \
        || fail "the server did not start, see $DATA_DIR/server.log"
fi

query() { PGPASSWORD=$PASSWORD "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -qtAX -c "$1"; }
if [ "$(query "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    query "CREATE DATABASE $DB_NAME" >/dev/null || fail "cannot create database $DB_NAME"
fi
echo "postgresql+psycopg://$DB_USER:$PASSWORD@127.0.0.1:$PORT/$DB_NAME"
