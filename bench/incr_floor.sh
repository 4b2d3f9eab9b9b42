#!/usr/bin/env bash
# What bounds S2 (an incremental after 1 % of rows were updated, scattered): the parts
# of a changes-only backup timed on their own, against the full backup, on
# incr_bench.sh's bench table. Medians of three.
#
#   fixed      `tablesafe snapshots` on the repository: process start, key unwrap,
#              manifests (what every backup pays before reading a row)
#   changed    the server's scan for rows written since the parent (by xmin), all
#              columns, to /dev/null: what finding the change costs at the least
#   keys       the server's scan of every key in key order: how deletes are found
#              (a deleted row leaves no xmin behind)
#   incr       the changes-only backup itself
#   full       the full backup
#
#   bench/incr_floor.sh              # 2,000,000 rows
#   ROWS=500000 bench/incr_floor.sh
#   PERF=1 bench/incr_floor.sh       # also `perf record` one incremental, top symbols
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-2000000}"
need_release_build
start_postgres -c shared_buffers=512MB -c max_wal_size=4GB
psql "$URL/postgres" -c "CREATE DATABASE src"
echo "generating $ROWS rows..." >&2
{ bench_table_sql "$ROWS"; echo "VACUUM ANALYZE;"; } | psql "$URL/src"
export TABLESAFE_PASSWORD="bench password"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); python3 -c "print(round($t1 - $t0, 3))"; }
declare -a FULL INCR FIXED CHANGED KEYS
for round in 1 2 3; do
  repo="$WORK/repo-$round"
  FULL+=("$(secs "$TS" backup --source "$URL/src" --repo "$repo" --include public.bench --json)")
  since=$(psql "$URL/src" -Atc "SELECT txid_current() & 4294967295")
  psql "$URL/src" -c "UPDATE bench SET qty = qty + 1 WHERE id % 100 = $((round + 6))"
  FIXED+=("$(secs "$TS" snapshots --repo "$repo")")
  CHANGED+=("$(secs psql "$URL/src" -c "COPY (SELECT * FROM bench WHERE age(xmin) <= age('$since'::xid)) TO STDOUT")")
  KEYS+=("$(secs psql "$URL/src" -c "COPY (SELECT id, age(xmin) <= age('$since'::xid) FROM bench ORDER BY id) TO STDOUT")")
  if [ "${PERF:-}" = 1 ] && [ "$round" = 3 ]; then
    perf record -g -o "$WORK/perf.data" -- "$TS" backup --source "$URL/src" --repo "$repo" --include public.bench --json >/dev/null 2>&1
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
      | grep -E '^ +[0-9]' | sed -n '1,20p' | cut -c1-90 | sed 's/ *$//' >&2 || true
    psql "$URL/src" -c "UPDATE bench SET qty = qty + 1 WHERE id % 100 = 5"
  fi
  INCR+=("$(secs "$TS" backup --source "$URL/src" --repo "$repo" --include public.bench --json)")
  rm -rf "$repo"
done
full=$(median "${FULL[@]}")
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}')" "$1" "$full"; }
echo
echo "S2 floor, $ROWS rows, 1 % scattered, medians of 3, $(nproc) cores, load $(uptime | sed 's/.*load average: //')"
for part in FIXED CHANGED KEYS INCR; do
  declare -n arr=$part
  m=$(median "${arr[@]}")
  printf '  %-8s %6.2f s  %s of the full backup (%6.2f s)\n' "${part,,}" "$m" "$(ratio "$m")" "$full"
done
