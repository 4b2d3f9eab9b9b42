#!/usr/bin/env bash
# S9 (issue 28): a small SQLite source backed up hourly. Does a backup slow down as the
# repository fills up? One more `tablesafe backup` (a new process, as cron or the console
# runs it; one row changed before it) is timed in a repository holding 10 snapshots of
# the source and in one holding $SNAPSHOTS (default 10,000), locally and on S3 (moto on
# loopback), median of three, alternating the two repositories.
#
# The repositories are filled by real backups (engine/examples/repo_scale_gen.rs: the
# source changed before each, packs, index file and manifest written as by `tablesafe
# backup`, in one process so the key is unwrapped once), then uploaded object for object
# to the S3 bucket (what `aws s3 sync` of a repository directory does).
#
#   bench/repo_scale_bench.sh                       # 10,000 snapshots, the 3-table source
#   SNAPSHOTS=2000 SHAPE=wide bench/repo_scale_bench.sh   # another source (not tuned on)
#   TS=/tmp/tablesafe-copy GEN=/tmp/gen-copy bench/repo_scale_bench.sh
#   RECORD=1 ...                                    # write bench/results/S9.json
source "$(dirname "$0")/common.sh"
N="${SNAPSHOTS:-10000}"
SHAPE="${SHAPE:-small}"
need_release_build
# GEN=cli: fill the repositories with `tablesafe backup` itself, one process per
# snapshot (slower: the key is unwrapped every time).
if [ "${GEN:-}" = cli ]; then
  gen_cli() { for i in $(seq "$3"); do
      python3 -c "
import sqlite3
db = sqlite3.connect('$2'); t = db.execute(\"SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name\").fetchall()[$i % 3 % len(db.execute(\"SELECT name FROM sqlite_schema WHERE type='table'\").fetchall())][0]
db.execute(f'UPDATE \"{t}\" SET note = ? WHERE rowid = ?', ('gen $i', 1 + ($i * 7919) % 900)); db.commit()"
      "$TS" backup --repo "$1" --source "sqlite://$2" >/dev/null; done; }
  GEN=gen_cli
elif [ -z "${GEN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p engine --example repo_scale_gen)
  GEN="$ROOT/target/release/examples/repo_scale_gen"
fi
export TABLESAFE_PASSWORD="bench password"
export XDG_CACHE_HOME="$WORK/cache"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

make_source() { # make_source FILE
  python3 - "$1" "$SHAPE" <<'PY'
import sqlite3, sys, random
db = sqlite3.connect(sys.argv[1]); random.seed(7)
if sys.argv[2] == "small":
    # Three tables of 1,000 rows (an app's settings, users, orders): ~150 KB.
    for t, extra in [("settings", "value TEXT"), ("users", "email TEXT, created TEXT"),
                     ("orders", "user_id INTEGER, amount REAL, status TEXT")]:
        db.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, note TEXT, {extra})")
        cols = len(extra.split(","))
        db.executemany(f"INSERT INTO {t} VALUES (?, ?{', ?' * cols})",
            [(i, f"note {i}", *[random.choice(["a", "bb", str(random.random())]) for _ in range(cols)])
             for i in range(1, 1001)])
else:
    # One table of 5,000 wider rows under a text key (the layout it was not tuned on).
    db.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, note TEXT, body BLOB, score REAL)")
    db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)",
        [(f"doc-{i:06d}", f"n{i}", random.randbytes(600), random.random()) for i in range(5000)])
db.commit()
PY
}

# The moto S3 server.
S3PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
python3 -m moto.server -H 127.0.0.1 -p "$S3PORT" >"$WORK/moto.log" 2>&1 &
BG_PID=$!
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$S3PORT))" 2>/dev/null && break; sleep 0.2; done
ENDPOINT="http://127.0.0.1:$S3PORT"
python3 -c "import boto3; boto3.client('s3', endpoint_url='$ENDPOINT', region_name='us-east-1').create_bucket(Bucket='bench')"
s3loc() { echo "s3://bench/$1?endpoint=$ENDPOINT&region=us-east-1"; }

upload() { # upload LOCAL_REPO PREFIX
  python3 - "$1" "$2" "$ENDPOINT" <<'PY'
import boto3, os, sys
from concurrent.futures import ThreadPoolExecutor
root, prefix, endpoint = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if "/.tmp" not in d]
def put(p):
    with open(p, "rb") as f:
        s3.put_object(Bucket="bench", Key=prefix + "/" + os.path.relpath(p, root), Body=f.read())
with ThreadPoolExecutor(16) as ex:
    list(ex.map(put, files))
print(f"uploaded {len(files)} objects to {prefix}", file=sys.stderr)
PY
}

for n in 10 "$N"; do
  make_source "$WORK/src$n.db"
  "$TS" init --repo "$WORK/r$n" >/dev/null
  start=$(date +%s.%N)
  "$GEN" "$WORK/r$n" "$WORK/src$n.db" "$n"
  echo "generated $n snapshots in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s ($(find "$WORK/r$n" -type f | wc -l) objects, $(du -sh "$WORK/r$n" | cut -f1))" >&2
  upload "$WORK/r$n" "r$n"
done

change() { # change DB I
  python3 -c "
import sqlite3, sys
db = sqlite3.connect('$1'); t = db.execute(\"SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name\").fetchone()[0]
db.execute(f'UPDATE \"{t}\" SET note = ? WHERE rowid = ?', ('bench $2', 1 + $2 % 900)); db.commit()"
}
timed_backup() { # timed_backup REPO DB I → seconds
  change "$2" "$3"
  local s e
  s=$(date +%s.%N)
  "$TS" backup --repo "$1" --source "sqlite://$2" >/dev/null
  e=$(date +%s.%N)
  python3 -c "print(f'{$e - $s:.3f}')"
}

declare -A T
for where in local s3; do
  for i in 1 2 3; do
    for n in 10 "$N"; do
      if [ "$where" = local ]; then loc="$WORK/r$n"; else loc="$(s3loc "r$n")"; fi
      t=$(timed_backup "$loc" "$WORK/src$n.db" "$i")
      T[$where-$n]+="$t "
      echo "$where, $n snapshots: backup $t s" >&2
    done
  done
done
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }
L10=$(med "${T[local-10]}"); LN=$(med "${T[local-$N]}"); S10=$(med "${T[s3-10]}"); SN=$(med "${T[s3-$N]}")
echo "load: $(uptime)"
echo "local: ${L10} s with 10 snapshots, ${LN} s with $N: ratio $(python3 -c "print(round($LN/$L10, 3))")"
echo "S3:    ${S10} s with 10 snapshots, ${SN} s with $N: ratio $(python3 -c "print(round($SN/$S10, 3))")"
if [ -n "${RECORD:-}" ]; then
  python3 "$ROOT/bench/record.py" S9 \
    --workload "SQLite source ($SHAPE), one row changed per backup; repository with 10 vs $N snapshots" \
    --measure "backup with $N / with 10 snapshots, local" "$LN" "$L10" 1.2 \
    --measure "backup with $N / with 10 snapshots, S3 (moto)" "$SN" "$S10" 1.2 \
    --note "${NOTE:-tablesafe backup as a new process, median of 3 alternating; load: $(uptime | sed 's/.*load/load/')}"
fi
