#!/usr/bin/env bash
# PostgreSQL for the test suite: make sure the server binaries are there, and that a
# non-root user exists to run a throwaway cluster (PostgreSQL refuses to run as root).
#
# The clusters themselves are started and removed by the tests
# (tests/pgcluster.py): one per pytest session, in a temporary directory, on
# 127.0.0.1 and a free port. Under CI=1 the PostgreSQL tests fail instead of
# skipping when the binaries are missing.
#
#   .ci/postgres.sh install   install the server from the distribution's packages
#                             (apt-get) if initdb/pg_ctl are missing (the default)
#   .ci/postgres.sh env       print SECURESESSION_PG_BIN=... and SECURESESSION_PG_USER=...
#   .ci/postgres.sh smoke     install, then start a throwaway cluster, query it, remove it
set -euo pipefail

find_bindir() {
    if [[ -n "${SECURESESSION_PG_BIN:-}" && -x "${SECURESESSION_PG_BIN}/initdb" ]]; then
        echo "${SECURESESSION_PG_BIN}"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    # Debian and Ubuntu keep the server binaries off $PATH; RHEL under /usr/pgsql-N.
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        echo "postgres.sh: need root (or passwordless sudo) to run: $*" >&2
        return 1
    fi
}

install_server() {
    if bindir="$(find_bindir)"; then
        echo "postgres.sh: PostgreSQL server binaries found in $bindir" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: initdb/pg_ctl not found and no apt-get here; install the" \
            "PostgreSQL server with your package manager or set SECURESESSION_PG_BIN" >&2
        return 1
    fi
    echo "postgres.sh: installing PostgreSQL from the distribution's packages" >&2
    # The tests bring their own clusters: do not let the package create and start one.
    as_root mkdir -p /etc/postgresql-common
    if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confold postgresql >/dev/null
    bindir="$(find_bindir)" || {
        echo "postgres.sh: installed, but initdb/pg_ctl are still not found" >&2
        return 1
    }
    echo "postgres.sh: PostgreSQL server binaries installed in $bindir" >&2
}

server_user() {
    # Who runs the cluster: ourselves unless we are root, then a non-root user.
    if [[ "$(id -u)" -ne 0 ]]; then
        id -un
        return 0
    fi
    local name
    for name in "${SECURESESSION_PG_USER:-}" postgres nobody; do
        if [[ -n "$name" ]] && id -u "$name" >/dev/null 2>&1; then
            echo "$name"
            return 0
        fi
    done
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    echo postgres
}

smoke() {
    # Globals, not locals: the EXIT trap runs after this function has returned.
    SMOKE_BIN="$(find_bindir)"
    SMOKE_USER="$(server_user)"
    SMOKE_DIR="$(mktemp -d /tmp/securesession-pg-smoke.XXXXXX)"
    trap smoke_cleanup EXIT
    local bindir="$SMOKE_BIN" user="$SMOKE_USER" dir="$SMOKE_DIR" port
    if [[ "$(id -u)" -eq 0 ]]; then
        chown "$user" "$dir"
    fi
    chmod 700 "$dir"
    run_as "$user" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync \
        --encoding=UTF8 --locale=C >/dev/null
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = ''\n" "$port" \
        >>"$dir/data/postgresql.auto.conf"
    run_as "$user" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
    "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "SELECT version()"
    echo "postgres.sh: throwaway cluster ran as $user on 127.0.0.1:$port" >&2
}

smoke_cleanup() {
    run_as "$SMOKE_USER" "$SMOKE_BIN/pg_ctl" -D "$SMOKE_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$SMOKE_DIR"
}

run_as() {
    local user="$1"
    shift
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

case "${1:-install}" in
    install)
        install_server
        server_user >/dev/null
        ;;
    env)
        echo "SECURESESSION_PG_BIN=$(find_bindir)"
        echo "SECURESESSION_PG_USER=$(server_user)"
        ;;
    smoke)
        install_server
        smoke
        ;;
    *)
        echo "usage: $0 [install|env|smoke]" >&2
        exit 2
        ;;
esac
