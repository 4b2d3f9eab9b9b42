#!/usr/bin/env bash
# Recovery point of SQLite continuous capture (issue 12): a writer updates random rows
# of a generated table (1 % of them over the run, in small transactions) while
# `tablesafe capture --interval-secs N` runs; each round's output says up to when the
# database is restorable, and the recovery point at any moment is how old the newest
# restorable instant is. Also prints how long a round with changes takes (an
# incremental snapshot of the whole selection) and one without (a head update).
#
#   bench/sqlite_capture_bench.sh                    # 1,000,000 rows, 60 s, every 5 s
#   ROWS=200000 SECONDS_OF_LOAD=30 INTERVAL=2 bench/sqlite_capture_bench.sh
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-1000000}"
LOAD="${SECONDS_OF_LOAD:-60}"
INTERVAL="${INTERVAL:-5}"
need_release_build
export TABLESAFE_PASSWORD="bench password"
echo "generating $ROWS rows..." >&2
python3 - "$WORK/src.db" "$ROWS" <<'PY'
import sqlite3, sys, hashlib
db = sqlite3.connect(sys.argv[1]); n = int(sys.argv[2])
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE bench (id INTEGER PRIMARY KEY, qty INTEGER, price REAL, name TEXT, created TEXT)")
db.executemany("INSERT INTO bench VALUES (?,?,?,?,?)",
  ((i, i % 1000, i / 100.0, "customer " + hashlib.md5(str(i).encode()).hexdigest(), "2020-01-01") for i in range(1, n + 1)))
db.commit()
PY
"$TS" init --repo "$WORK/repo" >/dev/null
"$TS" capture --repo "$WORK/repo" --source "sqlite://$WORK/src.db" --name bench \
  --interval-secs "$INTERVAL" --json > "$WORK/rounds.jsonl" 2>/dev/null &
BG_PID=$!
# The first round is a full snapshot: start the load once it is stored.
while ! grep -q '"round"' "$WORK/rounds.jsonl" 2>/dev/null; do sleep 0.2; done
python3 - "$WORK/src.db" "$ROWS" "$LOAD" "$WORK/rounds.jsonl" "$INTERVAL" <<'PY'
import sqlite3, sys, time, random, json, threading
path, rows, load, rounds_path, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
db = sqlite3.connect(path, isolation_level=None)
changes = rows // 100
per_txn = max(1, changes // int(load * 10))
seen = []  # (wall ms when the round's line appeared, covers_until_ms, took a snapshot)
stop = False
def follow():
    with open(rounds_path) as f:
        f.seek(0, 2)
        while not stop:
            line = f.readline()
            if not line:
                time.sleep(0.02); continue
            r = json.loads(line)["round"]
            seen.append((time.time() * 1000, r["covers_until_ms"], r["snapshot"] is not None))
t = threading.Thread(target=follow); t.start()
start = time.time(); done = 0
while time.time() - start < load:
    db.execute("BEGIN")
    for _ in range(per_txn):
        db.execute("UPDATE bench SET qty = qty + 1 WHERE id = ?", (random.randint(1, rows),))
    db.execute("COMMIT"); done += per_txn
    time.sleep(0.1)
end = time.time() * 1000
time.sleep(interval * 2 + 5)
stop = True; t.join()
# The recovery point just before each round lands: now minus the previous round's end.
gaps = [b[0] - a[1] for a, b in zip(seen, seen[1:]) if b[0] <= end + interval * 1000]
busy = [b[0] - a[0] for a, b in zip(seen, seen[1:]) if b[2]]
gaps.sort()
print(f"rows {rows}, {done} row updates in {load:.0f} s, interval {interval} s, {len(seen)} rounds ({sum(1 for s in seen if s[2])} with a snapshot)")
if gaps:
    print(f"recovery point: max {max(gaps)/1000:.1f} s, median {gaps[len(gaps)//2]/1000:.1f} s (goal: interval + one round)")
if busy:
    print(f"time between rounds that took a snapshot: median {sorted(busy)[len(busy)//2]/1000:.1f} s")
PY
kill "$BG_PID"; wait "$BG_PID" 2>/dev/null || true; BG_PID=""
"$TS" snapshots --repo "$WORK/repo" | tail -3
