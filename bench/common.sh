# Shared by the benchmarks: `source "$(dirname "$0")/common.sh"`, then
#   need_release_build     the release `tablesafe` as $TS (built here if missing)
#   start_postgres [-c …]  a PostgreSQL (wal_level=logical, fsync off) of its own on a
#                          temp dir and a free loopback port, as $URL (postgres user)
#   start_mariadb [--opt …] a MariaDB (binary log off, flush at commit off) of its own on
#                          a temp dir and a free loopback port, as $MYURL (user bench, no
#                          password, from 127.0.0.1 only) and $MYPORT; `my …` runs the client
#   bench_table_sql ROWS   the SQL of pg_bench.sh's table `bench` (mixed types, bigint
#                          key) with ROWS rows, shared by the PostgreSQL benchmarks
#   BG_PID=…               a process started in the background, killed on exit
# $WORK is a temp dir; everything started and $WORK go when the script exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
WORK="$(mktemp -d /tmp/tablesafe-bench-XXXXXX)"
BG_PID=""
PG_STARTED=""
MY_PID=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
bench_cleanup() {
  [ -n "$BG_PID" ] && kill "$BG_PID" 2>/dev/null || true
  [ -n "$PG_STARTED" ] && { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true; }
  [ -n "$MY_PID" ] && { kill "$MY_PID" 2>/dev/null; wait "$MY_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

need_release_build() {
  if [ -n "${TS:-}" ]; then return 0; fi # TS=/path/to/tablesafe: a copy set aside
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

start_mariadb() {
  local root=() tmp="$WORK/my/tmp"
  [ "$(id -u)" = 0 ] && root=(--user=root)
  mkdir -p "$tmp"
  # Each server its own TMPDIR: with a shared /tmp, two bootstraps at once collide.
  TMPDIR="$tmp" mariadb-install-db --no-defaults --auth-root-authentication-method=normal \
    --skip-test-db --datadir="$WORK/my/data" "${root[@]}" >"$WORK/my-install.log" 2>&1 \
    || { cat "$WORK/my-install.log" >&2; return 1; }
  MYPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  TMPDIR="$tmp" mariadbd --no-defaults --datadir="$WORK/my/data" --socket="$WORK/my/sock" \
    --port="$MYPORT" --bind-address=127.0.0.1 --skip-log-bin --skip-name-resolve \
    --innodb-flush-log-at-trx-commit=0 --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_general_ci "${root[@]}" "$@" >"$WORK/my.log" 2>&1 &
  MY_PID=$!
  for _ in $(seq 300); do
    mariadb --no-defaults --socket="$WORK/my/sock" -uroot -e \
      "CREATE USER IF NOT EXISTS 'bench'@'127.0.0.1'; GRANT ALL ON *.* TO 'bench'@'127.0.0.1'" \
      2>/dev/null && break
    kill -0 "$MY_PID" 2>/dev/null || { cat "$WORK/my.log" >&2; return 1; }
    sleep 0.2
  done
  MYURL="mysql://bench@127.0.0.1:$MYPORT"
}
# my [mariadb args…]: the mariadb client as bench over TCP.
my() { mariadb --no-defaults -h127.0.0.1 -P"$MYPORT" -ubench "$@"; }

# bench_table_sql ROWS: CREATE and fill pg_bench.sh's table `bench`.
bench_table_sql() {
  local ROWS="$1"
  cat <<SQL
CREATE TABLE bench (
  id bigint PRIMARY KEY, qty int, price numeric(12,2), score float8, name text,
  created timestamptz, active bool, ref uuid, attrs jsonb
);
INSERT INTO bench
SELECT g, (g::bigint * 7919) % 100000, ((g::bigint * 31) % 1000000) / 100.0, sqrt(g) * 1.5, 'customer ' || md5(g::text),
       '2020-01-01'::timestamptz + (g || ' seconds')::interval, g % 3 = 0,
       md5(g::text || 'u')::uuid, jsonb_build_object('tier', g % 5, 'tag', substr(md5(g::text), 1, 8))
FROM generate_series(1, $ROWS) g;
SQL
}
