#!/usr/bin/env bash
# Peak memory of a backup and a restore against the width of the widest row: a
# PostgreSQL table of three bytea values of $MB MB each (default 25, issue 28), and the
# same with values of 1 MB as the baseline. Prints peak RSS of each.
#
#   bench/wide_rows_mem.sh
#   MB=100 bench/wide_rows_mem.sh
source "$(dirname "$0")/common.sh"
MB="${MB:-25}"
need_release_build
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
start_postgres
export TABLESAFE_PASSWORD="bench password"
for size in 1 "$MB"; do
  psql "$URL/postgres" -c "DROP DATABASE IF EXISTS w$size" -c "CREATE DATABASE w$size" -c "DROP DATABASE IF EXISTS back$size" -c "CREATE DATABASE back$size" >/dev/null
  psql "$URL/w$size" -c "CREATE TABLE wide (id int PRIMARY KEY, v bytea)" \
    -c "INSERT INTO wide SELECT g, (SELECT string_agg(decode(md5(g::text || i::text), 'hex'), '') FROM generate_series(1, $size * 65536) i) FROM generate_series(1, 3) g" >/dev/null
  /usr/bin/time -f "%M" -o "$WORK/b" "$TS" backup --source "$URL/w$size" --repo "$WORK/repo$size" >/dev/null
  /usr/bin/time -f "%M" -o "$WORK/r" "$TS" restore --repo "$WORK/repo$size" --snapshot latest --dest "$URL/back$size" >/dev/null
  same=$(psql "$URL/w$size" -Atc "SELECT md5(string_agg(md5(v), ',' ORDER BY id)) FROM wide")
  back=$(psql "$URL/back$size" -Atc "SELECT md5(string_agg(md5(v), ',' ORDER BY id)) FROM wide")
  printf '3 values of %3d MB: backup peak RSS %4d MB, restore peak RSS %4d MB, restored identical: %s\n' \
    "$size" $(( $(cat "$WORK/b") / 1024 )) $(( $(cat "$WORK/r") / 1024 )) "$([ "$same" = "$back" ] && echo yes || echo NO)"
done
