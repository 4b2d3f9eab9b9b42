#!/usr/bin/env bash
# Benchmark S2: an incremental backup after 1 % of rows were updated (scattered
# uniformly), against the full backup of the same table, on two tables:
#   bench  pg_bench.sh's table (bigint key, mixed types, ~180-byte rows)
#   held   a table not tuned on: uuid key, text of 20-2,000 bytes, int[], timestamps
# and on the bench table after a clustered change of the same size (`clustered`: the
# newest 0.5 % of rows updated and as many appended, as an application's recent orders).
# Each round starts a fresh repository: full backup (timed), UPDATE of 1 % of rows
# (a different 1 % each round), incremental backup (timed). Medians of ROUNDS (3)
# rounds, full and incremental alternating within each round; the incremental must
# have read only the changed rows (`changes_only` in its JSON) and its restore must
# equal the source (checked on the last round).
#
#   bench/incr_bench.sh                 # 2,000,000 rows each
#   ROWS=200000 bench/incr_bench.sh
#   TS_OLD=/path/to/older/tablesafe bench/incr_bench.sh   # also times that binary's incremental
#                                   (in a repository of its own, against the same full time)
#   RECORD=1 bench/incr_bench.sh        # writes bench/results/S2.json
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-2000000}"
ROUNDS="${ROUNDS:-3}"
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
need_release_build
start_postgres -c shared_buffers=512MB -c max_wal_size=4GB
psql "$URL/postgres" -c "CREATE DATABASE src"

echo "generating $ROWS rows in each of two tables..." >&2
{ bench_table_sql "$ROWS"; cat <<SQL
CREATE TABLE held (
  k uuid PRIMARY KEY, n int NOT NULL, title text, body text, marks int[], seen timestamp
);
INSERT INTO held
SELECT md5(g::text || 'held')::uuid, g, 'title ' || g,
       repeat(md5(g::text), 1 + ((g::bigint * 7919) % 60)::int), ARRAY[g % 7, g % 11, g % 13],
       '2021-06-01'::timestamp + (g % 100000) * interval '1 minute'
FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE;
SQL
} | psql "$URL/src"

export TABLESAFE_PASSWORD="bench password"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# timed NAME CMD...: seconds in T, peak RSS (KiB) in M.
timed() {
  /usr/bin/time -f "%e %M" -o "$WORK/time" "${@:2}" >"$WORK/$1.out" 2>"$WORK/$1.err" \
    || { cat "$WORK/$1.err" >&2; exit 1; }
  read -r T M < "$WORK/time"
}
sorted() { "$PGBIN/pg_dump" --data-only -t "$2" "$1" | grep -v '^\\\(un\)\?restrict' | sort; }

declare -A FULL INCR OLD RSS SAME NEW FULLB
# Cases: the two tables with 1 % of rows updated scattered over the table (one row in
# every hundred), and the bench table with a clustered change of the same size (the
# newest 0.5 % of rows updated, 0.5 % appended: an application's recent orders).
for case in bench held clustered; do
  table=${case/clustered/bench}
  col=$([ "$table" = bench ] && echo id || echo n)
  F=(); I=(); O=()
  for round in $(seq "$ROUNDS"); do
    repo="$WORK/repo-$table-$round"
    timed full "$TS" backup --source "$URL/src" --repo "$repo" --include "public.$table" --json
    F+=("$T")
    # The older binary writes format 1: a repository of its own, full then incremental.
    [ -n "${TS_OLD:-}" ] && "$TS_OLD" backup --source "$URL/src" --repo "$repo-old" --include "public.$table" --json >/dev/null
    if [ "$case" = clustered ]; then
      top=$(psql "$URL/src" -Atc "SELECT max(id) FROM bench")
      psql "$URL/src" -c "UPDATE bench SET qty = qty + 1 WHERE id > $top - $ROWS / 200" \
        -c "INSERT INTO bench SELECT g, 1, 1.5, 2.5, 'new ' || g, now(), true, md5(g::text)::uuid, '{}' FROM generate_series($top + 1, $top + $ROWS / 200) g"
    else
      psql "$URL/src" -c "UPDATE $table SET $( [ "$table" = bench ] && echo 'qty = qty + 1' || echo "title = title || '+'" ) WHERE $col % 100 = $((round + 6))"
    fi
    if [ -n "${TS_OLD:-}" ]; then
      timed old "$TS_OLD" backup --source "$URL/src" --repo "$repo-old" --include "public.$table" --json
      O+=("$T"); rm -rf "$repo-old"
    fi
    timed incr "$TS" backup --source "$URL/src" --repo "$repo" --include "public.$table" --json
    I+=("$T"); RSS[$case]=$M
    grep -q "\"public.$table\"" <(python3 -c "import json; print(json.dumps(json.loads(open('$WORK/incr.out').read().strip().splitlines()[-1])['changed_rows_only_tables']))") \
      || { echo "the incremental of $table did not read changed rows only:" >&2; cat "$WORK/incr.out" >&2; exit 1; }
    NEW[$case]=$(python3 -c "import json; print(json.loads(open('$WORK/incr.out').read().strip().splitlines()[-1])['bytes_stored'])")
    FULLB[$case]=$(python3 -c "import json; print(json.loads(open('$WORK/full.out').read().strip().splitlines()[-1])['bytes_stored'])")
    if [ "$round" = "$ROUNDS" ]; then
      psql "$URL/postgres" -c "DROP DATABASE IF EXISTS back_$table" -c "CREATE DATABASE back_$table"
      "$TS" restore --repo "$repo" --snapshot latest --dest "$URL/back_$table" >/dev/null 2>"$WORK/restore.err" \
        || { cat "$WORK/restore.err" >&2; exit 1; }
      SAME[$case]=$(diff <(sorted "$URL/src" "$table") <(sorted "$URL/back_$table" "$table") >/dev/null && echo yes || echo NO)
    fi
    rm -rf "$repo"
  done
  FULL[$case]=$(median "${F[@]}"); INCR[$case]=$(median "${I[@]}")
  [ -n "${TS_OLD:-}" ] && OLD[$case]=$(median "${O[@]}")
  echo "$case: full ${F[*]}  incremental ${I[*]}  ${O[*]:+older binary ${O[*]}}" >&2
done

ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}')" "$1" "$2"; }
echo
echo "S2: incremental after 1 % of rows changed / full backup, medians of $ROUNDS, $(nproc) cores, load: $(uptime | sed 's/.*load average: //')"
for table in bench held clustered; do
  printf '  %-6s full %6.2f s  incremental %6.2f s  ratio %s [<= 0.2]%s  restore = source: %s  peak RSS %d MB  stored %s of the full\n' \
    "$table" "${FULL[$table]}" "${INCR[$table]}" "$(ratio "${INCR[$table]}" "${FULL[$table]}")" \
    "${OLD[$table]:+  (older binary $(ratio "${OLD[$table]}" "${FULL[$table]}"))}" "${SAME[$table]}" $((RSS[$table] / 1024)) \
    "$(ratio "${NEW[$table]}" "${FULLB[$table]}")"
done
if [ -n "${RECORD:-}" ]; then
  python3 "$ROOT/bench/record.py" S2 --workload "PostgreSQL $ROWS rows, 1 % of rows changed, changes-only incremental; bench table (bigint key) and a held-out table (uuid key, 20-2,000-byte text) with 1 % updated scattered; bench table with 1 % clustered (newest 0.5 % updated, 0.5 % appended)" \
    --measure "incremental / full backup (bench table)" "${INCR[bench]}" "${FULL[bench]}" 0.2 \
    --measure "incremental / full backup (held-out table)" "${INCR[held]}" "${FULL[held]}" 0.2 \
    --measure "incremental / full backup (bench table, clustered change: newest 0.5 % updated, 0.5 % appended)" "${INCR[clustered]}" "${FULL[clustered]}" 0.2 \
    --note "medians of $ROUNDS; load $(uptime | sed 's/.*load average: //')"
fi
