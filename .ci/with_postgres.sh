#!/usr/bin/env bash
# Run a command with a throw-away PostgreSQL server for the search tests:
#   .ci/with_postgres.sh make test
# Installs PostgreSQL (Debian's package) when no server binaries are found, initialises a data
# directory in a temp dir, starts the server on a free loopback port with password auth, exports
# COMPRESSOR_TEST_PG_URL for the command, and stops the server and removes the temp dir when the
# command ends, however it ends.
set -euo pipefail

find_bindir() {
    local dir
    for dir in "$(dirname "$(readlink -f "$(command -v pg_ctl 2>/dev/null || echo /nonexistent)")")" \
               $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/pg_ctl" && -x "$dir/initdb" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if ! BINDIR=$(find_bindir); then
    echo "with_postgres: no PostgreSQL server binaries; installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    BINDIR=$(find_bindir) || { echo "with_postgres: postgresql installed but pg_ctl not found" >&2; exit 1; }
fi

# PostgreSQL refuses to run as root: run the server as an unprivileged user, from a directory
# it can read (initdb fails where it cannot read the current directory, e.g. under /root).
as_owner=(env -C /)
if [[ $(id -u) -eq 0 ]]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
        --shell /usr/sbin/nologin postgres
    as_owner=(runuser -u postgres -- env -C /)
fi

PGTMP=$(mktemp -d "${TMPDIR:-/tmp}/compressor-pg.XXXXXX")
chmod 755 "$PGTMP"
PGDATA="$PGTMP/data"
PASSWORD="compressor-$RANDOM$RANDOM"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[[ $(id -u) -eq 0 ]] && chown postgres: "$PGTMP"

stop() {
    "${as_owner[@]}" "$BINDIR/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PGTMP"
}
trap stop EXIT

printf '%s\n' "$PASSWORD" > "$PGTMP/pw"
[[ $(id -u) -eq 0 ]] && chown postgres: "$PGTMP/pw"
"${as_owner[@]}" "$BINDIR/initdb" -D "$PGDATA" -U compressor --pwfile="$PGTMP/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$PGTMP/initdb.log" 2>&1 \
    || { cat "$PGTMP/initdb.log" >&2; exit 1; }
rm -f "$PGTMP/pw"
if ! "${as_owner[@]}" "$BINDIR/pg_ctl" -D "$PGDATA" -l "$PGTMP/server.log" -w -t 60 \
        -o "-p $PORT -k $PGTMP -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null; then
    cat "$PGTMP/server.log" >&2
    exit 1
fi
echo "with_postgres: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2

export COMPRESSOR_TEST_PG_URL="postgresql+psycopg://compressor:$PASSWORD@127.0.0.1:$PORT/postgres"
"$@"
