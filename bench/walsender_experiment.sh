#!/usr/bin/env bash
# How much CPU reading PostgreSQL's logical decoding costs the source, by way of
# reading it, with PostgreSQL's own clients (no tablesafe): a stream kept open
# (pg_recvlogical), a short stream per 5-second round, and consuming through
# pg_logical_slot_get_binary_changes per round — each against the same workload alone.
# Issue 12's CPU goal; README "Point-in-time restore".
#
#   bench/walsender_experiment.sh              # 10,000 single-row transactions (pgbench)
#   LOAD=batch bench/walsender_experiment.sh   # 60 UPDATEs of 167 rows
source "$(dirname "$0")/common.sh"
start_postgres -c shared_buffers=256MB
psql -X -q "$URL/postgres" -c "CREATE DATABASE src"
psql -X -q "$URL/src" -c "CREATE TABLE bench (id bigint PRIMARY KEY, qty int, attrs jsonb); INSERT INTO bench SELECT g, 0, '{}' FROM generate_series(1, 200000) g; CREATE PUBLICATION p FOR TABLE bench;"
psql -X -q "$URL/src" -c "SELECT pg_create_logical_replication_slot('s', 'pgoutput')" >/dev/null
printf '\\set id random(1, 200000)\nUPDATE bench SET qty = qty + 1, attrs = attrs || %s WHERE id = :id;\n' "'{\"seen\": true}'" > "$WORK/row.sql"
pg_cpu() { python3 - "$WORK/pg/postmaster.pid" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK"); root = int(open(sys.argv[1]).readline()); total = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit(): continue
    try: st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError: continue
    if int(pid) == root: total += sum(int(x) for x in st[11:15])
    elif int(st[1]) == root: total += int(st[11]) + int(st[12])
print(total / tick)
PY
}
if [ "${LOAD:-rows}" = rows ]; then
load() { $PGBIN/pgbench -n -c 2 -j 2 -t 5000 -R 333 -f "$WORK/row.sql" "$URL/src" >/dev/null 2>&1; }
else
load() { for i in $(seq 0 59); do psql -X -q "$URL/src" -c "UPDATE bench SET qty = qty + 1, attrs = attrs || '{\"seen\": true}' WHERE id > $((i*167)) AND id <= $((i*167+167))"; sleep 0.5; done; }
fi
catchup() { $PGBIN/pg_recvlogical -d "$URL/src" --slot s --start -o proto_version=1 -o publication_names=p --endpos="$(psql -X -At "$URL/src" -c 'SELECT pg_current_wal_flush_lsn()')" -f /dev/null; }
catchup
a=$(pg_cpu); load; b=$(pg_cpu); catchup
echo "workload alone: $(python3 -c "print(round($b-$a,2))") s"
# continuous stream
a=$(pg_cpu)
$PGBIN/pg_recvlogical -d "$URL/src" --slot s --start -o proto_version=1 -o publication_names=p -f /dev/null & RL=$!
load; sleep 2; kill $RL; wait $RL 2>/dev/null || true; sleep 1
b=$(pg_cpu); echo "workload + one open stream: $(python3 -c "print(round($b-$a,2))") s"
catchup
# a short stream every 5 s
a=$(pg_cpu)
( while true; do sleep 5; catchup; done ) & LOOP=$!
load; sleep 6; kill $LOOP; wait $LOOP 2>/dev/null || true; catchup
b=$(pg_cpu); echo "workload + a stream per 5 s round: $(python3 -c "print(round($b-$a,2))") s"
# SQL peek per round, for comparison
a=$(pg_cpu)
( while true; do sleep 5; psql -X -q -At "$URL/src" -c "SELECT count(*) FROM pg_logical_slot_get_binary_changes('s', pg_current_wal_flush_lsn(), NULL, 'proto_version', '1', 'publication_names', 'p')" >/dev/null; done ) & LOOP=$!
load; sleep 6; kill $LOOP; wait $LOOP 2>/dev/null || true
b=$(pg_cpu); echo "workload + SQL get_changes per 5 s round: $(python3 -c "print(round($b-$a,2))") s"
