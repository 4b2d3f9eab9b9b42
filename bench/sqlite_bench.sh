#!/usr/bin/env bash
# S7: SQLite at file speed. tablesafe against the file-level anchors on a generated
# database of SIZE_MB (default 1024):
#   backup  / (sqlite3 .backup + zstd -3)      goal <= 1.5
#   restore / (copy of that .zst + zstd -d)    goal <= 2.0
# Two tables of different shapes: `bench` (integer key, integer, real, text, a 16-byte
# blob, a mostly-NULL text, one secondary index: ~75 % of the size) and the held-out
# `wide` (text primary key, four text columns of ~300 bytes, rowid table: ~25 %).
# Medians of RUNS (3) runs, ours and the anchor alternating, each backup into a new
# repository; peak RSS; the restored database must hash equal to the source
# (`sqlite3 .sha3sum`). Also prints SQLite's own floor for a restore (the rows inserted
# by `INSERT … SELECT` from an attached copy, indexes made after), and how long a
# concurrent writer's commit waits during our backup in rollback-journal and WAL mode.
#
#   bench/sqlite_bench.sh
#   SIZE_MB=256 RUNS=1 bench/sqlite_bench.sh
#   RECORD=1 bench/sqlite_bench.sh        # also writes bench/results/S7.json
source "$(dirname "$0")/common.sh"
SIZE_MB="${SIZE_MB:-1024}"
RUNS="${RUNS:-3}"
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
command -v sqlite3 >/dev/null || { echo "installing sqlite3" >&2; apt-get install -y -qq sqlite3 >/dev/null; }
command -v zstd >/dev/null || { echo "installing zstd" >&2; apt-get install -y -qq zstd >/dev/null; }
need_release_build
export TABLESAFE_PASSWORD="bench password"
SRC="$WORK/src.db"

# ~80 bytes a `bench` row, ~1.3 KB a `wide` row (page overhead included).
BENCH_ROWS=$((SIZE_MB * 1024 * 1024 * 3 / 4 / 80))
WIDE_ROWS=$((SIZE_MB * 1024 * 1024 / 4 / 1300))
echo "generating $BENCH_ROWS + $WIDE_ROWS rows (~$SIZE_MB MB)..." >&2
SCHEMA="CREATE TABLE bench (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, price REAL, name TEXT, tag BLOB, note TEXT);
CREATE TABLE wide (code TEXT PRIMARY KEY, a TEXT, b TEXT, c TEXT, d TEXT);"
INDEXES="CREATE INDEX bench_qty ON bench (qty);"
sqlite3 "$SRC" <<SQL
PRAGMA page_size = 4096;
$SCHEMA
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $BENCH_ROWS)
INSERT INTO bench SELECT i, (i * 7919) % 100000, ((i * 31) % 1000000) / 100.0,
  'customer ' || (i * 2654435761 % 4294967296), randomblob(16),
  CASE WHEN i % 10 = 0 THEN 'note ' || hex(randomblob(6)) END FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $WIDE_ROWS)
INSERT INTO wide SELECT printf('K%012d', i), printf('%.300c', 'a') || i,
  hex(randomblob(150)), 'street ' || i || ' ' || printf('%.280c', 'x'), hex(randomblob(140)) FROM n;
COMMIT;
$INDEXES
SQL
DB_BYTES=$(stat -c %s "$SRC")
SRC_HASH=$(sqlite3 "$SRC" .sha3sum)
echo "source: $((DB_BYTES / 1048576)) MB" >&2

secs() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -1; }
# run NAME CMD... : times CMD, records seconds and peak RSS (KiB).
declare -A T M
run() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  read -r T[$name] M[$name] < "$WORK/time"
}
settle() { sync; sleep 1; }

AB=(); OB=(); OBM=()
for i in $(seq "$RUNS"); do
  rm -f "$WORK/copy.db" "$WORK/copy.db.zst"; rm -rf "$WORK/repo"
  "$TS" init --repo "$WORK/repo" >/dev/null
  settle; run anchor_backup bash -c "sqlite3 '$SRC' \".backup '$WORK/copy.db'\" && zstd -3 -q -f '$WORK/copy.db' -o '$WORK/copy.db.zst'"
  AB+=("${T[anchor_backup]}")
  settle; run ts_backup "$TS" backup --source "sqlite://$SRC" --repo "$WORK/repo" --json
  OB+=("${T[ts_backup]}"); OBM+=("${M[ts_backup]}")
done
REPO_BYTES=$(du -sb "$WORK/repo" | cut -f1)
ZST_BYTES=$(stat -c %s "$WORK/copy.db.zst")

AR=(); OR=(); ORM=()
mkdir -p "$WORK/out"
for i in $(seq "$RUNS"); do
  rm -f "$WORK/out/"*
  settle; run anchor_restore bash -c "cp '$WORK/copy.db.zst' '$WORK/out/a.zst' && zstd -d -q -f '$WORK/out/a.zst' -o '$WORK/out/anchor.db'"
  AR+=("${T[anchor_restore]}")
  settle; run ts_restore "$TS" restore --repo "$WORK/repo" --snapshot latest --dest "sqlite://$WORK/out/ts.db"
  OR+=("${T[ts_restore]}"); ORM+=("${M[ts_restore]}")
done
OUR_HASH=$(sqlite3 "$WORK/out/ts.db" .sha3sum)
[ "$OUR_HASH" = "$SRC_HASH" ] && SAME=yes || SAME=NO

# SQLite's own floor for rebuilding the tables from rows: INSERT … SELECT inside one
# process, no decoding, no checksum, indexes after the rows (as our restore does).
rm -f "$WORK/floor.db"
settle; run floor sqlite3 "$WORK/floor.db" "$SCHEMA" "ATTACH '$WORK/copy.db' AS s" "BEGIN" \
  "INSERT INTO main.bench SELECT * FROM s.bench" "INSERT INTO main.wide SELECT * FROM s.wide" \
  "$INDEXES" "COMMIT"

# How long a writer's commit waits while our backup runs: a commit every 10 ms, the
# longest wait, in rollback-journal mode (the source as generated) and in WAL mode.
writer_wait() { # DB -> "longest wait (s) / commits during the backup / backup (s)"
  python3 - "$1" "$TS" "$WORK/wrepo-$RANDOM" <<'PY'
import sqlite3, subprocess, sys, threading, time
db, ts, repo = sys.argv[1:4]
subprocess.run([ts, "init", "--repo", repo], check=True, capture_output=True)
c = sqlite3.connect(db, timeout=60, isolation_level=None, check_same_thread=False)
c.execute("CREATE TABLE IF NOT EXISTS w (id INTEGER PRIMARY KEY, t REAL)")
stop, waits = False, []
def write():
    while not stop:
        t0 = time.time()
        c.execute("INSERT INTO w (t) VALUES (?)", (t0,))
        waits.append(time.time() - t0)
        time.sleep(0.01)
th = threading.Thread(target=write); th.start(); time.sleep(0.2)
n0, t0 = len(waits), time.time()
subprocess.run([ts, "backup", "--source", "sqlite://" + db, "--repo", repo], check=True, capture_output=True)
took, n = time.time() - t0, len(waits) - n0
stop = True; th.join()
print(f"{max(waits[n0:] or [0]):.3f} s longest commit wait, {n} commits during the backup of {took:.1f} s")
PY
}
cp "$SRC" "$WORK/journal.db"
WAIT_JOURNAL=$(writer_wait "$WORK/journal.db")
rm -f "$WORK/journal.db"
cp "$SRC" "$WORK/wal.db"; sqlite3 "$WORK/wal.db" "PRAGMA journal_mode=WAL" >/dev/null
WAIT_WAL=$(writer_wait "$WORK/wal.db")

T_AB=$(median "${AB[@]}"); T_OB=$(median "${OB[@]}"); T_AR=$(median "${AR[@]}"); T_OR=$(median "${OR[@]}")
RSS_B=$(( $(maxof "${OBM[@]}") / 1024 )); RSS_R=$(( $(maxof "${ORM[@]}") / 1024 ))
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
cat <<EOF

SQLite $((DB_BYTES / 1048576)) MB ($BENCH_ROWS rows in bench, $WIDE_ROWS in wide), $(nproc) cores, load: $(uptime | sed 's/.*load average: //')
  sqlite3 .backup + zstd -3     $(secs "$T_AB") s   median of ${AB[*]}  ($((ZST_BYTES / 1048576)) MB)
  tablesafe backup              $(secs "$T_OB") s   median of ${OB[*]}, peak RSS $RSS_B MB ($((REPO_BYTES / 1048576)) MB stored)
  copy + zstd -d                $(secs "$T_AR") s   median of ${AR[*]}
  tablesafe restore             $(secs "$T_OR") s   median of ${OR[*]}, peak RSS $RSS_R MB, equal to the source (sha3sum): $SAME
  SQLite's floor (INSERT…SELECT) $(secs "${T[floor]}") s
  backup  / anchor: $(ratio "$T_OB" "$T_AB")  (goal <= 1.5)
  restore / anchor: $(ratio "$T_OR" "$T_AR")  (goal <= 2.0); SQLite's floor alone / anchor: $(ratio "${T[floor]}" "$T_AR")
  writer during our backup, rollback journal: $WAIT_JOURNAL
  writer during our backup, WAL:              $WAIT_WAL
EOF
[ "$SAME" = yes ] || { echo "the restored database differs from the source" >&2; exit 1; }
if [ -n "${RECORD:-}" ]; then
  python3 "$ROOT/bench/record.py" S7 --workload "SQLite $((DB_BYTES / 1048576)) MB: integer-keyed mixed types + text-keyed wide rows" \
    --measure "backup / (sqlite3 .backup + zstd -3)" "$T_OB" "$T_AB" 1.5 \
    --measure "restore / (copy + zstd -d)" "$T_OR" "$T_AR" 2.0 \
    --extra "backup_peak_rss_mb=$RSS_B" --extra "restore_peak_rss_mb=$RSS_R" \
    --extra "sqlite_insert_select_floor_s=${T[floor]}" \
    --note "medians of $RUNS alternating runs; restore equal to the source by sqlite3 .sha3sum; writer during backup: rollback journal $WAIT_JOURNAL; WAL $WAIT_WAL; load $(uptime | sed 's/.*load average: //')${NOTE:+; $NOTE}"
fi
