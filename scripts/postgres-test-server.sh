#!/usr/bin/env bash
# A private PostgreSQL server for the test suite, apart from the system's own service.
#
#   scripts/postgres-test-server.sh         install PostgreSQL if missing, start the server if it is not
#                                           running, and print its SQLAlchemy URL as the last line
#   scripts/postgres-test-server.sh stop    stop the server (its files stay, so the next start is quick)
#
# Settings: PGTEST_DIR (default /tmp/energy-platform-pg: cluster in data/, log and socket beside it),
# PGTEST_PORT (default 55432). The server listens on 127.0.0.1 only, trusts every local connection and
# runs without fsync: it is for throwaway test data, never for anything worth keeping.
# Progress goes to stderr; stdout carries only the URL, e.g. for
#   export TEST_POSTGRES_URL="$(scripts/postgres-test-server.sh | tail -n 1)"
set -euo pipefail

PGTEST_DIR=${PGTEST_DIR:-/tmp/energy-platform-pg}
PGTEST_PORT=${PGTEST_PORT:-55432}
DATABASE=energy_test
ROLE=postgres
DATA_DIR="$PGTEST_DIR/data"
LOG_FILE="$PGTEST_DIR/server.log"
URL="postgresql+psycopg://$ROLE@127.0.0.1:$PGTEST_PORT/$DATABASE"

say() { echo "postgres-test-server: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

[[ "$PGTEST_PORT" =~ ^[0-9]+$ ]] || die "PGTEST_PORT must be a port number, got '$PGTEST_PORT'"
[[ "$PGTEST_DIR" = /* && "$PGTEST_DIR" != *"'"* ]] || die "PGTEST_DIR must be an absolute path without quotes"

# The newest server installed from Debian's packages; /usr/local/bin/pg_ctl and the like may be another version.
find_bin_dir() {
    local postgres
    postgres=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)
    if [[ -n "$postgres" && -x "$(dirname "$postgres")/initdb" && -x "$(dirname "$postgres")/pg_ctl" ]]; then
        dirname "$postgres"
    fi
}

install_postgres() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    say "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends postgresql >&2; then
        say "install failed; refreshing the package lists and trying again"
        "${sudo[@]}" apt-get update -q >&2
        "${sudo[@]}" apt-get install -y -q --no-install-recommends postgresql >&2
    fi
}

# PostgreSQL refuses to run as root, so root runs the server as the postgres user.
as_owner() {
    if [[ $(id -u) -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

is_running() {
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PGTEST_PORT" -t 2
}

stop_server() {
    if [[ -f "$DATA_DIR/postmaster.pid" ]] && (cd / && as_owner "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null); then
        (cd / && as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -m fast -w stop >&2)
        say "stopped the server in $DATA_DIR"
    else
        say "no server is running in $DATA_DIR"
    fi
}

init_cluster() {
    local version
    version=$(basename "$(dirname "$BIN")") # /usr/lib/postgresql/<major>/bin
    if [[ -f "$DATA_DIR/PG_VERSION" && "$(cat "$DATA_DIR/PG_VERSION")" == "$version" ]]; then
        return
    fi
    # A missing, half-made or other-version cluster: this directory holds test data only, so start over.
    mkdir -p "$PGTEST_DIR"
    rm -rf "$DATA_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the postgres user, which the package creates"
        chown postgres: "$PGTEST_DIR"
    fi
    if ! (cd / && as_owner "$BIN/initdb" -D "$DATA_DIR" -U "$ROLE" --auth=trust --encoding=UTF8 --locale=C \
        --no-sync >"$PGTEST_DIR/initdb.log" 2>&1); then
        cat "$PGTEST_DIR/initdb.log" >&2
        die "initdb failed in $DATA_DIR"
    fi
    # Loopback only, the socket beside the cluster (not the system's /var/run/postgresql), and no
    # durability: a crash loses only test data, and the suite runs several times faster.
    as_owner tee -a "$DATA_DIR/postgresql.conf" >/dev/null <<EOF

# Added by scripts/postgres-test-server.sh for a private test server.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGTEST_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

# A server killed a moment ago may not have gone yet, and its lock file would stop this one.
wait_for_old_server() {
    local pid tries=0
    pid=$(head -n 1 "$DATA_DIR/postmaster.pid" 2>/dev/null || true)
    while [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && ((tries++ < 20)); do
        sleep 0.5
    done
}

ensure_database() {
    local psql=("$BIN/psql" -h 127.0.0.1 -p "$PGTEST_PORT" -U "$ROLE" -w -X -q -v ON_ERROR_STOP=1)
    if [[ -z "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" ]]; then
        "${psql[@]}" -d postgres -c "CREATE DATABASE $DATABASE" >&2
        say "created database $DATABASE"
    fi
}

BIN=$(find_bin_dir)

if [[ "${1:-start}" == "stop" ]]; then
    if [[ -z "$BIN" ]]; then
        say "PostgreSQL is not installed, so no server is running"
    else
        stop_server
    fi
    exit 0
elif [[ "${1:-start}" != "start" ]]; then
    die "unknown command '$1'; use start (the default) or stop"
fi

began=$(now)
if [[ -z "$BIN" ]]; then
    install_postgres
    BIN=$(find_bin_dir)
    [[ -n "$BIN" ]] || die "PostgreSQL was installed but no /usr/lib/postgresql/*/bin/postgres was found"
fi
installed=$(now)

if is_running; then
    say "a server is already running on 127.0.0.1:$PGTEST_PORT"
    ensure_database
    echo "$URL"
    exit 0
fi

init_cluster
initialised=$(now)
wait_for_old_server
if ! (cd / && as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -o "-p $PGTEST_PORT" -w -t 60 start >&2); then
    tail -n 20 "$LOG_FILE" >&2 || true
    die "the server did not start; see $LOG_FILE"
fi
ensure_database
ready=$(now)
say "ready in $(elapsed "$began" "$ready")s (install $(elapsed "$began" "$installed")s," \
    "initdb $(elapsed "$installed" "$initialised")s, start $(elapsed "$initialised" "$ready")s)"
echo "$URL"
