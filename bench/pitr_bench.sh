#!/usr/bin/env bash
# Benchmark of continuous capture and point-in-time restore (issue 12) on a generated
# table, against the goals: recovery point (age of the newest restorable instant)
# under 10 s at a 1 % change rate, capture adding under 10 % CPU to the source, and a
# point-in-time restore at most 1.2x a snapshot restore of the same data.
#
#   bench/pitr_bench.sh                 # 2,000,000 rows, 1 % of them changed over 60 s
#   ROWS=500000 SECONDS_OF_LOAD=30 bench/pitr_bench.sh
#   WORKLOAD=rows bench/pitr_bench.sh   # the same changes, one row per transaction
#
# The default workload changes rows in batches (an UPDATE of ~167 rows twice a second),
# which costs the server little per row; WORKLOAD=rows runs the same number of changes
# as single-row transactions at a steady rate (pgbench, 2 clients), as OLTP applications
# write them. Capture's cost is per changed row, so its share depends on which.
#
# Starts its own PostgreSQL (wal_level=logical) on a temp dir and a free loopback port
# and removes everything when done. Needs a release build (built here if missing).
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-2000000}"
LOAD="${SECONDS_OF_LOAD:-60}"
need_release_build
start_postgres -c shared_buffers=512MB -c max_wal_size=4GB
for db in src snap_restore pitr_restore; do psql "$URL/postgres" -c "CREATE DATABASE $db"; done
echo "generating $ROWS rows..." >&2
psql "$URL/src" <<SQL
CREATE TABLE bench (id bigint PRIMARY KEY, qty int, price numeric(12,2), name text, created timestamptz, attrs jsonb);
INSERT INTO bench SELECT g, g % 1000, g / 100.0, 'customer ' || md5(g::text), '2020-01-01'::timestamptz + (g || ' s')::interval,
  jsonb_build_object('tier', g % 5) FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE bench;
SQL
export TABLESAFE_PASSWORD="bench password"

# CPU seconds (user + system) of every PostgreSQL process so far, ended ones included.
pg_cpu() {
  python3 - "$WORK/pg/postmaster.pid" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
root = int(open(sys.argv[1]).readline())
total = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    ppid = int(stat[1])
    if int(pid) == root:
        # The postmaster, and (cutime, cstime) every backend it has reaped: psql's
        # short sessions and the capture's connections end before they are sampled.
        total += sum(int(x) for x in stat[11:15])
    elif ppid == root:
        total += int(stat[11]) + int(stat[12])
print(total / tick)
PY
}
# CPU seconds of the capture's own backends on the source (its walsender and its SQL
# session, found by the ports the capture process connects from): a direct reading,
# unlike the difference of two workload runs, which varies by tens of percent.
capture_cpu() {
  local ports pid total=0
  ports=$(ss -Htnp 2>/dev/null | grep "pid=$BG_PID," | awk '{n = split($4, a, ":"); print a[n]}')
  for port in $ports; do
    pid=$(psql "$URL/postgres" -At -c "SELECT pid FROM pg_stat_activity WHERE client_port = $port")
    [ -n "$pid" ] && total=$(python3 -c "import os; s=open('/proc/$pid/stat').read().rsplit(')',1)[1].split(); print($total + (int(s[11]) + int(s[12])) / os.sysconf('SC_CLK_TCK'))")
  done
  echo "$total"
}
# The workload: 1 % of the rows updated, in batches spread evenly over LOAD seconds.
WORKLOAD="${WORKLOAD:-batches}"
workload() {
  if [ "$WORKLOAD" = rows ]; then
    local lo=$(($1 + 1)) hi=$(($1 + ROWS / 2))
    printf '\\set id random(%d, %d)\nUPDATE bench SET qty = qty + 1, attrs = attrs || %s WHERE id = :id;\n' \
      "$lo" "$hi" "'{\"seen\": true}'" > "$WORK/row.sql"
    "$PGBIN/pgbench" -n -c 2 -j 2 -t $((ROWS / 100 / 2)) -R $((ROWS / 100 / LOAD)) -f "$WORK/row.sql" "$URL/src" > "$WORK/pgbench.log"
    return
  fi
  local batches=$((LOAD * 2)) per=$((ROWS / 100 / (LOAD * 2))) i=0 start=$1
  while [ $i -lt $batches ]; do
    local lo=$((start + i * per))
    psql "$URL/src" -c "UPDATE bench SET qty = qty + 1, attrs = attrs || '{\"seen\": true}' WHERE id > $lo AND id <= $lo + $per"
    sleep 0.5
    i=$((i + 1))
  done
}

echo "baseline: the workload without capture..." >&2
c0=$(pg_cpu); workload 0; c1=$(pg_cpu)

echo "the workload with capture (base snapshot first)..." >&2
"$TS" capture --repo "$WORK/repo" --source "$URL/src" --name bench --json > "$WORK/capture.log" 2>"$WORK/capture.err" &
BG_PID=$!
until grep -q '"round"' "$WORK/capture.log" 2>/dev/null; do sleep 0.5; done
# Sample the age of the newest restorable instant twice a second during the load.
python3 - "$WORK/capture.log" "$WORK/rpo.txt" "$LOAD" <<'PY' &
import json, sys, time
log, out, load = sys.argv[1], sys.argv[2], float(sys.argv[3])
ages = []
end = time.time() + load + 5
while time.time() < end:
    covers = 0
    for line in open(log):
        try:
            r = json.loads(line).get("round")
        except ValueError:
            continue
        if r and r.get("covers_until_ms"):
            covers = max(covers, r["covers_until_ms"])
    if covers:
        ages.append(time.time() - covers / 1000)
    time.sleep(0.5)
open(out, "w").write(f"{max(ages):.1f} {sorted(ages)[len(ages) // 2]:.1f}\n")
PY
SAMPLER=$!
c2=$(pg_cpu); k0=$(capture_cpu); workload $((ROWS / 2)); c3=$(pg_cpu); k1=$(capture_cpu)
wait $SAMPLER
AT=$(psql "$URL/src" -At -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
# Wait for a round that covers the instant (how long that takes is the lag at the end).
AT_MS=$(python3 -c "import datetime,sys; print(int(datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp()*1000))" "$AT")
w0=$(date +%s.%N)
python3 - "$WORK/capture.log" "$AT_MS" <<'PY'
import json, sys, time
log, at = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 300
while time.time() < deadline:
    for line in open(log):
        try:
            r = json.loads(line).get("round")
        except ValueError:
            continue
        if r and (r.get("covers_until_ms") or 0) >= at:
            sys.exit(0)
    time.sleep(0.2)
sys.exit("the capture did not reach the instant within 300 s")
PY
w1=$(date +%s.%N)
echo "capture covered the end of the load $(python3 -c "print(f'{$w1 - $w0:.1f}')") s after it" >&2
if [ -n "${BREAKDOWN:-}" ]; then
  # The live PostgreSQL processes by CPU seconds (the capture's walsender among them).
  for p in $(pgrep -P "$(head -1 "$WORK/pg/postmaster.pid")"); do
    echo "$(awk '{print ($14 + $15) / 100}' /proc/$p/stat) $(tr '\0' ' ' < /proc/$p/cmdline)"
  done | sort -rn | head -8 >&2
fi
kill "$BG_PID"; wait "$BG_PID" 2>/dev/null || true; BG_PID=""
SEGMENTS=$(find "$WORK/repo/changes" -type f | wc -l)

echo "restores: a snapshot of the final data, and the base plus the changes..." >&2
"$TS" backup --source "$URL/src" --repo "$WORK/repo" --json > /dev/null
# Each restore RESTORE_RUNS times (3), alternating, into a fresh database; the medians
# are compared (one pair of runs varied by a third between identical runs).
RUNS="${RESTORE_RUNS:-3}"
SNAP_TIMES=""; PITR_TIMES=""
timed_restore() { # database, restore arguments...
  local db=$1 t0 t1; shift
  psql "$URL/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" -c CHECKPOINT
  t0=$(date +%s.%N); "$TS" restore --repo "$WORK/repo" "$@" --dest "$URL/$db" --json > /dev/null; t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
for run in $(seq "$RUNS"); do
  SNAP_TIMES="$SNAP_TIMES $(timed_restore snap_restore --snapshot latest)"
  if [ -n "${BREAKDOWN:-}" ] && [ "$run" = 1 ]; then
    # Statements of the point-in-time restore that took 20 ms or more, longest first.
    psql "$URL/postgres" -c "ALTER SYSTEM SET log_min_duration_statement = 20" -c "SELECT pg_reload_conf()" >/dev/null
    LOG_FROM=$(wc -c < "$WORK/pg.log")
  fi
  PITR_TIMES="$PITR_TIMES $(timed_restore pitr_restore --at "$AT")"
  if [ -n "${BREAKDOWN:-}" ] && [ "$run" = 1 ]; then
    psql "$URL/postgres" -c "ALTER SYSTEM RESET log_min_duration_statement" -c "SELECT pg_reload_conf()" >/dev/null
    tail -c +"$((LOG_FROM + 1))" "$WORK/pg.log" | grep -o 'duration: [0-9.]* ms .*' \
      | sort -t' ' -k2 -rn | head -12 | cut -c1-200 >&2
  fi
done
same=$(diff <(psql "$URL/snap_restore" -At -c "SELECT md5(string_agg(b::text, ',' ORDER BY id)) FROM bench b") \
            <(psql "$URL/pitr_restore" -At -c "SELECT md5(string_agg(b::text, ',' ORDER BY id)) FROM bench b") >/dev/null && echo identical || echo DIFFERENT)

read -r RPO_MAX RPO_MED < "$WORK/rpo.txt"
python3 - "$ROWS" "$LOAD" "$c0" "$c1" "$c2" "$c3" "$SNAP_TIMES" "$PITR_TIMES" "$RPO_MAX" "$RPO_MED" "$SEGMENTS" "$same" "$k0" "$k1" "$WORKLOAD" <<'PY'
import sys
rows, load, c0, c1, c2, c3, snaps, pitrs, rmax, rmed, segs, same, k0, k1, workload = sys.argv[1:]
base, cap = float(c1) - float(c0), float(c3) - float(c2)
snaps, pitrs = [float(x) for x in snaps.split()], [float(x) for x in pitrs.split()]
median = lambda xs: sorted(xs)[len(xs) // 2]
snap, pitr = median(snaps), median(pitrs)
print(f"rows {int(rows):,}; 1 % updated over {load} s ({'one row per transaction' if workload == 'rows' else 'in batches of ~167 rows'}); {segs} change segments stored")
print(f"recovery point (age of the newest restorable instant): max {rmax} s, median {rmed} s   goal < 10 s")
own = float(k1) - float(k0)
print(f"source CPU: {base:.2f} s without capture, {cap:.2f} s with: +{(cap - base) / base * 100:.1f} % (two runs' difference)")
print(f"capture's own backends on the source: {own:.2f} s CPU during the load = {own / base * 100:.1f} % of the workload's   goal < 10 %")
print(f"restore (median of {len(snaps)}): snapshot {snap:.2f} s, point in time {pitr:.2f} s: {pitr / snap:.2f}x   goal <= 1.2x; restored data {same}")
print(f"  every run: snapshot {' '.join(f'{x:.2f}' for x in snaps)}; point in time {' '.join(f'{x:.2f}' for x in pitrs)}")
PY
