# Shared by the benchmarks: `source "$(dirname "$0")/common.sh"`, then
#   need_release_build     the release `tablesafe` as $TS (built here if missing)
#   start_postgres [-c …]  a PostgreSQL (wal_level=logical, fsync off) of its own on a
#                          temp dir and a free loopback port, as $URL (postgres user)
#   BG_PID=…               a process started in the background, killed on exit
# $WORK is a temp dir; everything started and $WORK go when the script exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
WORK="$(mktemp -d /tmp/tablesafe-bench-XXXXXX)"
BG_PID=""
PG_STARTED=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
bench_cleanup() {
  [ -n "$BG_PID" ] && kill "$BG_PID" 2>/dev/null || true
  [ -n "$PG_STARTED" ] && { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true; }
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

need_release_build() {
  [ -x "$ROOT/target/release/tablesafe" ] || (cd "$ROOT" && cargo build --release -p server)
  TS="$ROOT/target/release/tablesafe"
}

start_postgres() {
  [ "$(id -u)" = 0 ] && chown postgres "$WORK"
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
  PG_STARTED=1
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$WORK -c fsync=off -c wal_level=logical $*" start >/dev/null
  URL="postgres://postgres@127.0.0.1:$PORT"
}
