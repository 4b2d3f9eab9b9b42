#!/usr/bin/env bash
# Benchmark S3 (issue 28): a big PostgreSQL table against PostgreSQL's own tools.
#   backup  / pg_dump -Fc          goal <= 0.3
#   restore / pg_restore -j 2      goal <= 0.8   (each into a fresh database)
#   peak RSS of backup and restore goal <= 256 MB (GNU time)
#
#   bench/pg_large_bench.sh                  # 20,000,000 rows, ~3.6 GB table, ~40 min here
#   ROWS=200000 bench/pg_large_bench.sh      # a quick try (~30 s)
#   TS=/tmp/tablesafe-copy RESTORE_RUNS=1 RECORD=1 bench/pg_large_bench.sh
#
# The table is not pg_bench.sh's: a different column mix (a payments ledger: a bigint
# key, int, numeric(14,4), char(3), short and variable-width text, timestamp, date,
# smallint, real, a small bytea, nullable columns), ~180 bytes a row, generated with one
# INSERT … SELECT generate_series into a logged table on a PostgreSQL with fsync off.
# Restores run RESTORE_RUNS times each (default 3; alternating, each into a fresh
# database after a checkpoint) and the medians count; every restore database is dropped
# before the next, so the disk holds the source, the dump, the repository and one
# restore at a time (~12 GB at 20 M rows; checked against `df` first). The last
# tablesafe restore is compared with the source (row count and an order-independent
# sum of per-row hashes). With RECORD=1 the figures go to bench/results/S3.json
# (bench/record.py; RESULTS=dir for another place) for the guide's table and chart.
#
# Needs a release build (TS=path to use a copy; built here if missing) and GNU time.
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-20000000}"
RUNS="${RESTORE_RUNS:-3}"
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
if [ -z "${TS:-}" ]; then need_release_build; fi
[ -x "$TS" ] || { echo "TS=$TS is not an executable tablesafe binary" >&2; exit 2; }

# ~180 bytes a row in the table; source + index + dump + repository + one restore + WAL
# is about 3.4x the table. Stop early rather than fill the disk half way.
need_mb=$((ROWS * 180 * 34 / 10 / 1000000 + 500))
free_mb=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
if [ "$free_mb" -lt "$need_mb" ]; then
  echo "only $free_mb MB free under $WORK; $ROWS rows need about $need_mb MB: free some space or lower ROWS" >&2
  exit 1
fi
echo "$(date -u +%H:%M:%S) disk: $free_mb MB free, about $need_mb MB needed" >&2

start_postgres -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min \
  -c maintenance_work_mem=512MB -c synchronous_commit=off
psql "$URL/postgres" -c "CREATE DATABASE src"

echo "$(date -u +%H:%M:%S) generating $ROWS rows..." >&2
psql "$URL/src" <<SQL
CREATE TABLE ledger (
  id bigint PRIMARY KEY, account int NOT NULL, amount numeric(14,4) NOT NULL,
  currency char(3) NOT NULL, status text NOT NULL, memo text, booked timestamp NOT NULL,
  value_date date NOT NULL, channel smallint, fx_rate real, ref bytea, reversed_by bigint
);
INSERT INTO ledger
SELECT g, (g * 2654435761) % 1000003, ((g * 7907) % 200000000) / 10000.0 - 10000,
       (ARRAY['EUR','USD','GBP','CHF','JPY'])[1 + g % 5],
       (ARRAY['booked','pending','settled','reversed'])[1 + (g / 7) % 4],
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE left('invoice ' || md5(g::text) || ' ' || md5((g + 1)::text) || ' ' || md5((g + 2)::text)
                      || ' ' || md5((g + 3)::text), (30 + (g * 13) % 110)::int) END,
       '2021-01-01'::timestamp + (g * 3 || ' seconds')::interval,
       '2021-01-01'::date + (g / 40000)::int, (g % 9)::smallint,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 1 + (g % 1000) / 1000.0 END,
       decode(md5(g::text), 'hex'),
       CASE WHEN g % 97 = 0 THEN g + 1 END
FROM generate_series(1, $ROWS::bigint) g;
VACUUM ANALYZE ledger;
CHECKPOINT;
SQL
TABLE_BYTES=$(psql "$URL/src" -At -c "SELECT pg_table_size('ledger')")
echo "$(date -u +%H:%M:%S) table: $((TABLE_BYTES / 1000000)) MB" >&2

declare -A T M CPU
# run NAME CMD... : times CMD, keeps its seconds, peak RSS (KiB) and CPU seconds (user +
# system: near 2x the wall time on 2 cores means CPU-bound).
run() {
  local name="$1" u s; shift
  echo "$(date -u +%H:%M:%S) $name" >&2
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  read -r T[$name] M[$name] u s < "$WORK/time"
  CPU[$name]=$(python3 -c "print(f'{$u + $s:.1f}')")
  echo "    ${T[$name]} s, peak RSS $((M[$name] / 1024)) MB, CPU ${CPU[$name]} s" >&2
}
settle() { psql "$URL/postgres" -c CHECKPOINT; sync; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
fresh() { psql "$URL/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
drop() { psql "$URL/postgres" -c "DROP DATABASE IF EXISTS $1"; }

export TABLESAFE_PASSWORD="bench password" PGOPTIONS="-c client_min_messages=warning"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
settle
run pg_dump "$PGBIN/pg_dump" -Fc -f "$WORK/dump.fc" "$URL/src"
settle
run ts_backup "$TS" backup --source "$URL/src" --repo "$WORK/repo" --json
# The read floor: the server's fastest way out, one connection, nothing kept.
settle
run copy_out bash -c "psql '$URL/src' -c 'COPY ledger TO STDOUT (FORMAT binary)' > /dev/null"
DUMP=$(stat -c %s "$WORK/dump.fc")
REPO=$(du -sb "$WORK/repo" | cut -f1)

PG_RUNS=(); TS_RUNS=(); TS_RSS=0
for i in $(seq "$RUNS"); do
  drop ts_restore; fresh pg_restore; settle
  run pg_restore "$PGBIN/pg_restore" -j 2 -d "$URL/pg_restore" "$WORK/dump.fc"; PG_RUNS+=("${T[pg_restore]}")
  drop pg_restore; fresh ts_restore; settle
  run ts_restore "$TS" restore --repo "$WORK/repo" --snapshot latest --dest "$URL/ts_restore"; TS_RUNS+=("${T[ts_restore]}")
  [ "${M[ts_restore]}" -gt "$TS_RSS" ] && TS_RSS=${M[ts_restore]}
done
PG_RESTORE=$(median "${PG_RUNS[@]}"); TS_RESTORE=$(median "${TS_RUNS[@]}")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# The last tablesafe restore holds what the source holds (row order is not data).
echo "$(date -u +%H:%M:%S) comparing the restore with the source" >&2
fingerprint="SELECT count(*) || ' ' || sum(hashtextextended(t::text, 0)::numeric) FROM ledger t"
SRC_FP=$(psql "$URL/src" -At -c "$fingerprint")
TS_FP=$(psql "$URL/ts_restore" -At -c "$fingerprint")
if [ "$SRC_FP" = "$TS_FP" ]; then same=yes; else same=NO; fi

mb() { echo $(( $1 / 1000000 )); }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}')" "$1" "$2"; }
cat <<OUT

S3: $ROWS rows, table $(mb "$TABLE_BYTES") MB, $(nproc) cores, load $LOAD_BEFORE before / $LOAD_AFTER after
  pg_dump -Fc            ${T[pg_dump]} s   dump $(mb "$DUMP") MB, client CPU ${CPU[pg_dump]} s
  tablesafe backup       ${T[ts_backup]} s   repository $(mb "$REPO") MB, peak RSS $((M[ts_backup] / 1024)) MB, client CPU ${CPU[ts_backup]} s
  raw binary COPY        ${T[copy_out]} s   one connection to /dev/null (the read floor)
  pg_restore -j 2        $PG_RESTORE s   median of ${PG_RUNS[*]}
  tablesafe restore      $TS_RESTORE s   median of ${TS_RUNS[*]}, peak RSS $((TS_RSS / 1024)) MB, client CPU ${CPU[ts_restore]} s (last)
  restore identical to the source: $same ($TS_FP)

  backup / pg_dump -Fc        $(ratio "${T[ts_backup]}" "${T[pg_dump]}")   [<= 0.3]
  restore / pg_restore -j 2   $(ratio "$TS_RESTORE" "$PG_RESTORE")   [<= 0.8]
  peak RSS backup / restore   $((M[ts_backup] / 1024)) / $((TS_RSS / 1024)) MB   [<= 256]
OUT
[ "$same" = yes ] || { echo "the tablesafe restore differs from the source: $SRC_FP vs $TS_FP" >&2; exit 1; }

PEAK=$(( M[ts_backup] > TS_RSS ? M[ts_backup] : TS_RSS ))
if [ "${RECORD:-0}" = 1 ]; then
  python3 "$ROOT/bench/record.py" S3 ${RESULTS:+--out "$RESULTS"} \
    --workload "$(python3 -c "b = $TABLE_BYTES; print(f'PostgreSQL {$ROWS:,} rows, ' + (f'{b/1e9:.1f} GB' if b >= 1e9 else f'{b/1e6:.0f} MB') + ' ledger table (12 mixed columns)')")" \
    --measure "backup / pg_dump -Fc" "${T[ts_backup]}" "${T[pg_dump]}" 0.3 \
    --measure "restore / pg_restore -j 2" "$TS_RESTORE" "$PG_RESTORE" 0.8 \
    --measure "peak RSS, backup and restore (MB) / 256 MB" "$((PEAK / 1024))" 256 1.0 \
    --extra "backup_rss_mb=$((M[ts_backup] / 1024))" --extra "restore_rss_mb=$((TS_RSS / 1024))" \
    --extra "rows=$ROWS" --extra "table_mb=$(mb "$TABLE_BYTES")" --extra "dump_mb=$(mb "$DUMP")" \
    --extra "repository_mb=$(mb "$REPO")" --extra "restore_runs=$RUNS" \
    --extra "raw_copy_s=${T[copy_out]}" --extra "backup_cpu_s=${CPU[ts_backup]}" --extra "pg_dump_cpu_s=${CPU[pg_dump]}" \
    --extra "pg_restore_runs_s=${PG_RUNS[*]}" --extra "ts_restore_runs_s=${TS_RUNS[*]}" \
    --extra "load_before=$LOAD_BEFORE" --extra "load_after=$LOAD_AFTER" \
    --note "restores: median of $RUNS each, alternating, each into a fresh database; the tablesafe restore is identical to the source (count + per-row hash sum)"
fi
