#!/usr/bin/env bash
# Benchmark: tablesafe against the anchors (pg_dump -Fc, raw binary COPY, pg_restore) on
# a generated table of mixed types. Prints times, sizes, peak memory and ratios.
#
#   bench/pg_bench.sh            # 2,000,000 rows (~340 MB of table data)
#   ROWS=500000 bench/pg_bench.sh
#   TS=/tmp/ts-copy RECORD=1 bench/pg_bench.sh   # a binary set aside; writes bench/results/S1.json
#
# Starts its own PostgreSQL on a temp dir and a free loopback port (as the postgres user
# when run as root) and removes everything when done. Needs a release build of the
# binary (built here if missing) and GNU time (installed from apt if missing).
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-2000000}"
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
need_release_build
start_postgres -c shared_buffers=512MB -c max_wal_size=4GB
for db in src dump_restore ts_restore ts_restore3; do psql "$URL/postgres" -c "CREATE DATABASE $db"; done

echo "generating $ROWS rows of mixed types..." >&2
{ bench_table_sql "$ROWS"; echo "VACUUM ANALYZE bench;"; } | psql "$URL/src"
TABLE_BYTES=$(psql "$URL/src" -At -c "SELECT pg_table_size('bench')")

# S1: full backup / raw single-connection binary COPY, with --jobs 1 and --jobs 2, on the
# bench table and on a held-out table of another shape (text key, wider rows), in its own
# database. Each run backs up into a new repository (made by `init` beforehand, not
# timed) and takes the median of S1_RUNS (3), alternating COPY, --jobs 1, --jobs 2. The
# server's CPU seconds (its backends, reaped by the postmaster: cutime + cstime) and the
# client's (user + sys) show what bounds the ratio on a machine of few cores.
HELD_ROWS="${HELD_ROWS:-$((ROWS / 5))}"
psql "$URL/postgres" -c "CREATE DATABASE held"
echo "generating $HELD_ROWS rows of a held-out table (text key, wide rows)..." >&2
psql "$URL/held" <<SQL
CREATE TABLE held (
  code text PRIMARY KEY, body text, amounts numeric[], seen timestamptz, flags int, blob bytea
);
INSERT INTO held
SELECT 'k-' || md5(g::text), repeat(md5((g * 3)::text), 8), ARRAY[g % 1000, g / 7.0, sqrt(g)]::numeric[],
       '2021-06-01'::timestamptz + (g || ' minutes')::interval, g % 17, decode(repeat(md5(g::text), 4), 'hex')
FROM generate_series(1, $HELD_ROWS) g;
VACUUM ANALYZE held;
SQL
export TABLESAFE_PASSWORD="bench password"
PM_PID=$(head -1 "$WORK/pg/postmaster.pid")
TICKS=$(getconf CLK_TCK)
pm_cpu() { awk -v t="$TICKS" '{printf "%.2f", ($16 + $17) / t}' "/proc/$PM_PID/stat"; }
declare -A S1 S1CPU
# s1_time KEY CMD...: wall seconds, client CPU and server CPU of one run, appended.
s1_time() {
  local key="$1"; shift
  psql "$URL/postgres" -c CHECKPOINT; sync
  local before; before=$(pm_cpu)
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/s1time" "$@" >/dev/null 2>"$WORK/s1.err" || { cat "$WORK/s1.err" >&2; exit 1; }
  sleep 0.3; local after; after=$(pm_cpu)
  read -r wall user sys rss < "$WORK/s1time"
  S1[$key]+="$wall "
  S1CPU[$key]="client $(python3 -c "print(f'{$user + $sys:.2f}')") s, server $(python3 -c "print(f'{$after - $before:.2f}')") s, peak RSS $((rss / 1024)) MB"
}
for i in $(seq "${S1_RUNS:-3}"); do
  for db in src held; do
    table=bench; [ $db = held ] && table=held
    s1_time "$db.copy" psql "$URL/$db" -c "COPY $table TO STDOUT (FORMAT binary)"
    for jobs in 1 2; do
      rm -rf "$WORK/s1repo" "$WORK/s1cache"; XDG_CACHE_HOME="$WORK/s1cache" "$TS" init --repo "$WORK/s1repo" >/dev/null
      XDG_CACHE_HOME="$WORK/s1cache" s1_time "$db.j$jobs" "$TS" backup --jobs $jobs --source "$URL/$db" --repo "$WORK/s1repo" --json
    done
  done
done
rm -rf "$WORK/s1repo" "$WORK/s1cache"
for key in "${!S1[@]}"; do read -ra runs <<<"${S1[$key]}"; S1[$key.med]=$(printf '%s\n' "${runs[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'); done

secs() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
# run NAME CMD... : times CMD, records seconds and peak RSS (KiB).
declare -A T M
run() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  read -r T[$name] M[$name] < "$WORK/time"
}

export TABLESAFE_PASSWORD="bench password"
run pg_dump "$PGBIN/pg_dump" -Fc -t bench -f "$WORK/dump.fc" "$URL/src"
run copy_out bash -c "psql '$URL/src' -c 'COPY bench TO STDOUT (FORMAT binary)' > /dev/null"
run ts_backup "$TS" backup --source "$URL/src" --repo "$WORK/repo" --json
# Restores write hundreds of MB and this kind of machine is noisy: each side restores
# RESTORE_RUNS times (alternating, into a fresh database, after a checkpoint) and the
# median counts. The last restore of each is kept for the identity check below.
settle() { psql "$URL/postgres" -c CHECKPOINT; sync; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
PG_RUNS=(); TS_RUNS=()
for i in $(seq "${RESTORE_RUNS:-3}"); do
  for db in dump_restore ts_restore; do psql "$URL/postgres" -c "DROP DATABASE $db" -c "CREATE DATABASE $db"; done
  settle; run pg_restore "$PGBIN/pg_restore" -d "$URL/dump_restore" "$WORK/dump.fc"; PG_RUNS+=("${T[pg_restore]}")
  settle; run ts_restore "$TS" restore --repo "$WORK/repo" --snapshot latest --dest "$URL/ts_restore"; TS_RUNS+=("${T[ts_restore]}")
done
T[pg_restore]=$(median "${PG_RUNS[@]}"); T[ts_restore]=$(median "${TS_RUNS[@]}")
REPO1=$(du -sb "$WORK/repo" | cut -f1)
DUMP=$(stat -c %s "$WORK/dump.fc")

# 1 % of rows changed in one contiguous key range (recent orders, a batch job)...
psql "$URL/src" -c "UPDATE bench SET qty = qty + 1 WHERE id > $ROWS - $ROWS / 100"
run ts_backup2 "$TS" backup --source "$URL/src" --repo "$WORK/repo" --json
REPO2=$(du -sb "$WORK/repo" | cut -f1)
# ...and 1 % scattered uniformly over the table.
psql "$URL/src" -c "UPDATE bench SET qty = qty + 1 WHERE id % 100 = 7"
run ts_backup3 "$TS" backup --source "$URL/src" --repo "$WORK/repo" --json
REPO3=$(du -sb "$WORK/repo" | cut -f1)
# Restoring the latest snapshot merges its full segment with both deltas.
settle; run ts_restore3 "$TS" restore --repo "$WORK/repo" --snapshot latest --dest "$URL/ts_restore3"

# Row order is physical, not data: compare sorted dumps.
sorted_dump() { "$PGBIN/pg_dump" --data-only -t bench "$1" | grep -v '^\\\(un\)\?restrict' | sort; }
# Independent check that the tablesafe restore is identical to the source snapshot.
same=$(diff <(sorted_dump "$URL/dump_restore") <(sorted_dump "$URL/ts_restore") >/dev/null && echo yes || echo NO)

# ...and the incremental snapshot is identical to the source now (row order aside).
same3=$(diff <(sorted_dump "$URL/src") <(sorted_dump "$URL/ts_restore3") >/dev/null && echo yes || echo NO)

ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}x' if b else 'n/a')" "$1" "$2"; }
mb() { python3 -c "import sys; print(f'{int(sys.argv[1])/1e6:.1f} MB')" "$1"; }
cat <<OUT

tablesafe benchmark: $ROWS rows, table $(mb "$TABLE_BYTES") on disk, $(nproc) cores
  pg_dump -Fc                 $(secs ${T[pg_dump]}) s   $(mb "$DUMP")
  COPY TO (binary) /dev/null  $(secs ${T[copy_out]}) s   (the read limit)
  tablesafe backup            $(secs ${T[ts_backup]}) s   $(mb "$REPO1") in the repository, peak RSS $((M[ts_backup] / 1024)) MB
  pg_restore                  $(secs ${T[pg_restore]}) s   median of ${PG_RUNS[*]}
  tablesafe restore           $(secs ${T[ts_restore]}) s   median of ${TS_RUNS[*]}, peak RSS $((M[ts_restore] / 1024)) MB, identical to pg_restore's data: $same
  backup after 1% contiguous  $(secs ${T[ts_backup2]}) s   new bytes $(mb $((REPO2 - REPO1))) = $(ratio $((REPO2 - REPO1)) "$REPO1") of the first
  backup after 1% scattered   $(secs ${T[ts_backup3]}) s   new bytes $(mb $((REPO3 - REPO2))) = $(ratio $((REPO3 - REPO2)) "$REPO1") of the first
  restore of that snapshot    $(secs ${T[ts_restore3]}) s   (full + 2 deltas merged), identical to the source: $same3

ratios (goal in brackets)
  backup / pg_dump            $(ratio ${T[ts_backup]} ${T[pg_dump]})   [<= 0.5x]
  backup / raw COPY           $(ratio ${T[ts_backup]} ${T[copy_out]})   [<= 1.8x]
  restore / pg_restore        $(ratio ${T[ts_restore]} ${T[pg_restore]})   [<= 0.9x]
  repository / dump size      $(ratio "$REPO1" "$DUMP")   [<= 0.95x]
  new bytes after 1% change   $(ratio $((REPO2 - REPO1)) "$REPO1") contiguous, $(ratio $((REPO3 - REPO2)) "$REPO1") scattered   [<= 0.05x]
  incremental / full backup   $(ratio ${T[ts_backup2]} ${T[ts_backup]}) contiguous, $(ratio ${T[ts_backup3]} ${T[ts_backup]}) scattered   [<= 0.6x]
  peak RSS backup / restore   $((M[ts_backup] / 1024)) MB / $((M[ts_restore] / 1024)) MB   [<= 256 MB]

S1: full backup / raw binary COPY (median of ${S1_RUNS:-3}, alternating; load $(cut -d' ' -f1-3 /proc/loadavg))
  bench ($ROWS rows)          COPY $(secs ${S1[src.copy.med]}) s; --jobs 1 $(secs ${S1[src.j1.med]}) s = $(ratio ${S1[src.j1.med]} ${S1[src.copy.med]}); --jobs 2 $(secs ${S1[src.j2.med]}) s = $(ratio ${S1[src.j2.med]} ${S1[src.copy.med]})   [<= 1.2x with --jobs 2]
  held-out ($HELD_ROWS rows, text key) COPY $(secs ${S1[held.copy.med]}) s; --jobs 1 $(secs ${S1[held.j1.med]}) s = $(ratio ${S1[held.j1.med]} ${S1[held.copy.med]}); --jobs 2 $(secs ${S1[held.j2.med]}) s = $(ratio ${S1[held.j2.med]} ${S1[held.copy.med]})
  CPU, last run: COPY ${S1CPU[src.copy]}; --jobs 1 ${S1CPU[src.j1]}; --jobs 2 ${S1CPU[src.j2]}
  CPU, held-out: COPY ${S1CPU[held.copy]}; --jobs 1 ${S1CPU[held.j1]}; --jobs 2 ${S1CPU[held.j2]}
OUT
if [ "${RECORD:-0}" = 1 ]; then
  python3 "$ROOT/bench/record.py" S1 ${RESULTS:+--out "$RESULTS"} \
    --workload "PostgreSQL $ROWS rows, mixed types (bench/pg_bench.sh)" \
    --measure "full backup --jobs 2 / raw binary COPY" "${S1[src.j2.med]}" "${S1[src.copy.med]}" 1.2 \
    --measure "full backup --jobs 1 / raw binary COPY" "${S1[src.j1.med]}" "${S1[src.copy.med]}" 1.2 \
    --measure "held-out (text key, wide rows) --jobs 2 / raw binary COPY" "${S1[held.j2.med]}" "${S1[held.copy.med]}" 1.2 \
    --extra "cpu_copy=${S1CPU[src.copy]}" --extra "cpu_jobs1=${S1CPU[src.j1]}" --extra "cpu_jobs2=${S1CPU[src.j2]}" \
    --note "median of ${S1_RUNS:-3} alternating runs, each into a new repository; held-out table $HELD_ROWS rows; load $(cut -d' ' -f1-3 /proc/loadavg)"
fi
