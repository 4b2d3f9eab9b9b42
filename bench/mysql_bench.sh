#!/usr/bin/env bash
# Benchmark S5/S6: tablesafe against MariaDB's own tools on a generated table of mixed
# types (bigint key, int, decimal, double, varchar, text, datetime, bool, binary uuid,
# json), then on a held-out table of another shape (varchar key, wide text rows).
#
#   backup  vs  mysqldump --single-transaction > file   and   mydumper -t 2
#   restore vs  mysql < that file                       and   myloader -t 2
#
# Each measure is the median of RUNS runs (3), alternating the tools; every restore goes
# into a fresh empty database, and each restored table is compared with the source.
#
#   bench/mysql_bench.sh                     # 2,000,000 rows + 100,000 wide rows
#   ROWS=200000 HELD_ROWS=20000 bench/mysql_bench.sh
#   TS=/tmp/ts bench/mysql_bench.sh          # a copy of the release binary set aside
#   RECORD=1 bench/mysql_bench.sh            # also writes bench/results/S5.json, S6.json
#
# Starts its own MariaDB on a temp dir and a free loopback port and removes everything
# when done. Needs MariaDB, mydumper (scripts/lib.sh ensure_mydumper) and GNU time.
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-2000000}"
HELD_ROWS="${HELD_ROWS:-100000}"
RUNS="${RUNS:-3}"
for tool in mariadbd mydumper /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: source scripts/lib.sh; ensure_mydumper; apt-get install time" >&2; exit 1; }
done
need_release_build
start_mariadb --innodb-buffer-pool-size=2G --innodb-log-file-size=1G --max-allowed-packet=256M

echo "generating $ROWS rows of mixed types and $HELD_ROWS wide rows..." >&2
my -e "CREATE DATABASE src; CREATE DATABASE held"
my src <<SQL
CREATE TABLE bench (
  id bigint PRIMARY KEY, qty int NOT NULL, price decimal(12,2), score double,
  name varchar(64) NOT NULL, note text, created datetime(3), active tinyint(1),
  ref binary(16), attrs json
) ENGINE=InnoDB;
INSERT INTO bench
SELECT seq, (seq * 7919) % 100000, ((seq * 31) % 1000000) / 100.0, sqrt(seq) * 1.5,
       concat('customer ', md5(seq)),
       IF(seq % 7 = 0, NULL, concat('note ', sha1(seq), ' ', repeat('x', seq % 40))),
       '2020-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL (seq % 1000) * 1000 MICROSECOND,
       seq % 3 = 0, unhex(md5(concat(seq, 'u'))),
       json_object('tier', seq % 5, 'tag', substr(md5(seq), 1, 8))
FROM seq_1_to_$ROWS;
ANALYZE TABLE bench;
SQL
# Held out (not tuned on): a varchar key in random order, ~1.2 kB of text per row.
my held <<SQL
CREATE TABLE docs (
  slug varchar(100) PRIMARY KEY, title varchar(200) NOT NULL, body mediumtext,
  updated timestamp NULL, views int unsigned, KEY (updated)
) ENGINE=InnoDB;
INSERT INTO docs
SELECT concat(sha1(seq), '-', seq), concat('Title ', seq, ' ', md5(seq * 3)),
       concat_ws(' ', sha2(seq, 512), sha2(seq + 1, 512), sha2(seq + 2, 512), sha2(seq + 3, 512),
                 sha2(seq + 4, 512), sha2(seq + 5, 512), sha2(seq + 6, 512), sha2(seq + 7, 512),
                 sha2(seq + 8, 512)),
       IF(seq % 11 = 0, NULL, FROM_UNIXTIME(1600000000 + seq)), seq % 100000
FROM seq_1_to_$HELD_ROWS;
ANALYZE TABLE docs;
SQL

secs() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}x' if b else 'n/a')" "$1" "$2"; }
# CPU seconds the MariaDB server has used so far (user + system).
TICKS=$(getconf CLK_TCK)
server_cpu() { awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' "/proc/$MY_PID/stat"; }
# run NAME CMD... : times CMD into T[NAME] (seconds) and M[NAME] (peak RSS, KiB); the
# CPU seconds it took in C[NAME] ("client X s + server Y s").
declare -A T M C
run() {
  local name="$1" s0 s1 u s; shift
  s0=$(server_cpu)
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  s1=$(server_cpu)
  read -r T[$name] M[$name] u s < "$WORK/time"
  C[$name]=$(python3 -c "import sys; u,s,a,b=map(float,sys.argv[1:]); print(f'client {u+s:.2f} s + server {b-a:.2f} s')" "$u" "$s" "$s0" "$s1")
}
fresh() { my -e "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1"; }
# Rows of a table as mysqldump writes them in key order: the identity check.
rows_of() { mysqldump --no-defaults -h127.0.0.1 -P"$MYPORT" -ubench --no-create-info --skip-extended-insert --order-by-primary --hex-blob --skip-comments --skip-dump-date "$1" "$2" | grep '^INSERT' | md5sum | cut -d' ' -f1; }
# Let the server write out what the last load left dirty before timing the next.
settle() { my -e "SET GLOBAL innodb_max_dirty_pages_pct=0"; sleep 2; my -e "SET GLOBAL innodb_max_dirty_pages_pct=90"; sync; }

export TABLESAFE_PASSWORD="bench password"
# bench_db DB TABLE: every measure on one database; results in R[...].
declare -A R
bench_db() {
  local db="$1" table="$2" i
  local B_DUMP=() B_MYD=() B_TS=() R_DUMP=() R_MYL=() R_TS=() RSS_B=0 RSS_R=0
  for i in $(seq "$RUNS"); do
    rm -rf "$WORK/mydumper" "$WORK/repo"
    settle; run dump mysqldump --no-defaults -h127.0.0.1 -P"$MYPORT" -ubench --single-transaction --result-file="$WORK/dump.sql" "$db"; B_DUMP+=("${T[dump]}")
    settle; run mydumper mydumper -h 127.0.0.1 -P "$MYPORT" -u bench -t 2 -B "$db" -o "$WORK/mydumper"; B_MYD+=("${T[mydumper]}")
    settle; run ts_backup "$TS" backup --source "$MYURL/$db" --repo "$WORK/repo" --json; B_TS+=("${T[ts_backup]}")
    RSS_B=$(( M[ts_backup] > RSS_B ? M[ts_backup] : RSS_B ))
  done
  for i in $(seq "$RUNS"); do
    fresh r_dump; settle; run load bash -c "mariadb --no-defaults -h127.0.0.1 -P$MYPORT -ubench r_dump < '$WORK/dump.sql'"; R_DUMP+=("${T[load]}")
    fresh r_myl; settle; run myloader myloader -h 127.0.0.1 -P "$MYPORT" -u bench -t 2 -d "$WORK/mydumper" -B r_myl; R_MYL+=("${T[myloader]}")
    fresh r_ts; settle; run ts_restore "$TS" restore --repo "$WORK/repo" --snapshot latest --dest "$MYURL/r_ts"; R_TS+=("${T[ts_restore]}")
    RSS_R=$(( M[ts_restore] > RSS_R ? M[ts_restore] : RSS_R ))
  done
  local src ts dump myl
  src=$(rows_of "$db" "$table"); ts=$(rows_of r_ts "$table"); dump=$(rows_of r_dump "$table"); myl=$(rows_of r_myl "$table")
  R[$db.same]=$([ "$src" = "$ts" ] && [ "$src" = "$dump" ] && [ "$src" = "$myl" ] && echo yes || echo NO)
  R[$db.b_dump]=$(median "${B_DUMP[@]}"); R[$db.b_myd]=$(median "${B_MYD[@]}"); R[$db.b_ts]=$(median "${B_TS[@]}")
  R[$db.r_dump]=$(median "${R_DUMP[@]}"); R[$db.r_myl]=$(median "${R_MYL[@]}"); R[$db.r_ts]=$(median "${R_TS[@]}")
  R[$db.runs]="backup mysqldump ${B_DUMP[*]} | mydumper ${B_MYD[*]} | tablesafe ${B_TS[*]}; restore mysql ${R_DUMP[*]} | myloader ${R_MYL[*]} | tablesafe ${R_TS[*]}"
  R[$db.rss_b]=$((RSS_B / 1024)); R[$db.rss_r]=$((RSS_R / 1024))
  R[$db.cpu]="backup: mysqldump ${C[dump]}, mydumper ${C[mydumper]}, tablesafe ${C[ts_backup]}; restore: mysql ${C[load]}, myloader ${C[myloader]}, tablesafe ${C[ts_restore]}"
  R[$db.mb]=$(my -N -e "SELECT round((data_length + index_length) / 1e6) FROM information_schema.TABLES WHERE table_schema = '$db' AND table_name = '$table'")
}

report() {
  local db="$1" what="$2"
  cat <<OUT

$what: table $(printf %s "${R[$db.mb]}") MB in InnoDB, $(nproc) cores, restored rows identical to the source: ${R[$db.same]}
  mysqldump --single-transaction  $(secs "${R[$db.b_dump]}") s
  mydumper -t 2                   $(secs "${R[$db.b_myd]}") s
  tablesafe backup                $(secs "${R[$db.b_ts]}") s   peak RSS ${R[$db.rss_b]} MB
  mysql < dump                    $(secs "${R[$db.r_dump]}") s
  myloader -t 2                   $(secs "${R[$db.r_myl]}") s
  tablesafe restore               $(secs "${R[$db.r_ts]}") s   peak RSS ${R[$db.rss_r]} MB
  runs: ${R[$db.runs]}
  CPU (last run): ${R[$db.cpu]}
  backup / mysqldump   $(ratio "${R[$db.b_ts]}" "${R[$db.b_dump]}")  [S5 <= 0.5x]    backup / mydumper   $(ratio "${R[$db.b_ts]}" "${R[$db.b_myd]}")  [<= 1.0x]
  restore / mysql      $(ratio "${R[$db.r_ts]}" "${R[$db.r_dump]}")  [S6 <= 0.5x]    restore / myloader  $(ratio "${R[$db.r_ts]}" "${R[$db.r_myl]}")  [<= 1.0x]
OUT
}

bench_db src bench
report src "MariaDB $ROWS rows of mixed types"
bench_db held docs
report held "held out: $HELD_ROWS wide rows with a varchar key"
echo "load: $(uptime)"

if [ -n "${RECORD:-}" ]; then
  note="median of $RUNS alternating runs; held-out table ($HELD_ROWS rows of ~1.2 kB, varchar key): backup $(ratio "${R[held.b_ts]}" "${R[held.b_dump]}") of mysqldump, $(ratio "${R[held.b_ts]}" "${R[held.b_myd]}") of mydumper; restore $(ratio "${R[held.r_ts]}" "${R[held.r_dump]}") of mysql, $(ratio "${R[held.r_ts]}" "${R[held.r_myl]}") of myloader; CPU of the last run, $(nproc) cores shared by client and server: ${R[src.cpu]}; load $(uptime | sed 's/.*load average: //')"
  python3 "$ROOT/bench/record.py" S5 --workload "MariaDB $ROWS rows, mixed types (bench/mysql_bench.sh)" \
    --measure "backup / mysqldump --single-transaction" "${R[src.b_ts]}" "${R[src.b_dump]}" 0.5 \
    --measure "backup / mydumper -t 2" "${R[src.b_ts]}" "${R[src.b_myd]}" 1.0 \
    --extra "peak_rss_mb=${R[src.rss_b]}" --note "$note"
  python3 "$ROOT/bench/record.py" S6 --workload "MariaDB $ROWS rows, mixed types (bench/mysql_bench.sh)" \
    --measure "restore / mysql < dump" "${R[src.r_ts]}" "${R[src.r_dump]}" 0.5 \
    --measure "restore / myloader -t 2" "${R[src.r_ts]}" "${R[src.r_myl]}" 1.0 \
    --extra "peak_rss_mb=${R[src.rss_r]}" --note "$note"
fi
