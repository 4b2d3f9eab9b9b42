#!/usr/bin/env bash
# Benchmark S4: per-table overhead. Many small tables in schemas per tenant (10 tables
# a schema: serial and identity keys, a composite key, unique and secondary indexes,
# foreign keys inside the schema and one to another schema, text, numeric, dates,
# arrays, jsonb), backed up and restored by tablesafe and by pg_dump -Fc / pg_restore.
#
#   bench/tables_bench.sh                                # 2,000 tables of 1,000 rows
#   TABLES=500 ROWS=10000 WIDTH=200 bench/tables_bench.sh  # held-out: fewer, wider tables
#   TS_BIN=/tmp/ts bench/tables_bench.sh                 # time this binary
#
# Each side runs RUNS times (3), alternating, backups into a fresh repository / file,
# restores into a fresh database after a checkpoint; medians count. Prints the ratios
# and checks that tablesafe's restore holds the same rows and schema objects as the
# source. Set RECORD=1 to write bench/results/S4.json.
source "$(dirname "$0")/common.sh"
TABLES="${TABLES:-2000}"
ROWS="${ROWS:-1000}"
WIDTH="${WIDTH:-0}"
RUNS="${RUNS:-3}"
JOBS="${JOBS:-}"
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
if [ -n "${TS_BIN:-}" ]; then TS="$TS_BIN"; else need_release_build; fi
start_postgres -c shared_buffers=256MB -c max_wal_size=4GB -c max_locks_per_transaction=1024 ${PGOPTS:-}
psql "$URL/postgres" -c "CREATE DATABASE src"
SCHEMAS=$(( (TABLES + 9) / 10 ))

echo "generating $SCHEMAS schemas x 10 tables of $ROWS rows (pad $WIDTH)..." >&2
start=$(date +%s)
psql "$URL/src" <<SQL
CREATE FUNCTION pad(g bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
  \$\$ SELECT substr(repeat(md5(g::text), ($WIDTH / 32) + 1), 1, $WIDTH) \$\$;
DO \$\$
DECLARE s text; r int := $ROWS;
BEGIN
  FOR i IN 1..$SCHEMAS LOOP
    s := format('tenant_%s', lpad(i::text, 4, '0'));
    EXECUTE format('CREATE SCHEMA %I', s);
    EXECUTE format('SET search_path = %I, public', s);
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created timestamptz NOT NULL DEFAULT now(), pad text);
    CREATE TABLE products (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text NOT NULL UNIQUE, price numeric(10,2) CHECK (price >= 0), tags text[]);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, placed date, total numeric(12,2), status text, pad text);
    CREATE INDEX ON orders (customer_id);
    CREATE TABLE order_items (order_id bigint REFERENCES orders, line int, product_id int REFERENCES products, qty int, PRIMARY KEY (order_id, line));
    CREATE TABLE invoices (id bigint PRIMARY KEY, order_id bigint REFERENCES orders, issued timestamptz, amount float8, paid bool);
    CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, kind smallint, payload jsonb, pad text);
    CREATE INDEX ON events (at);
    CREATE TABLE settings (key text PRIMARY KEY, value text, updated timestamptz);
    CREATE TABLE audit (id bigserial PRIMARY KEY, who int, what text, at timestamptz);
    CREATE TABLE tickets (id int PRIMARY KEY, customer_id int REFERENCES customers, subject text, body text, opened date);
    CREATE TABLE plans_used (id int PRIMARY KEY, plan_customer int REFERENCES tenant_0001.customers, since date);
    INSERT INTO customers (name, email, created, pad) SELECT 'customer ' || g, 'c' || g || '@example.com', '2024-01-01'::timestamptz + g * interval '1 hour', pad(g) FROM generate_series(1, r) g;
    INSERT INTO products (sku, price, tags) SELECT 'sku-' || g, (g % 1000) / 10.0, ARRAY['t' || g % 7, 'u' || g % 3] FROM generate_series(1, r) g;
    INSERT INTO orders (customer_id, placed, total, status, pad) SELECT (g % r) + 1, '2024-01-01'::date + g % 365, g * 1.25, (ARRAY['new','paid','shipped'])[g % 3 + 1], pad(g) FROM generate_series(1, r) g;
    INSERT INTO order_items SELECT (g % r) + 1, g / r, (g * 7 % r) + 1, g % 5 + 1 FROM generate_series(0, r - 1) g;
    INSERT INTO invoices SELECT g, g, '2024-02-01'::timestamptz + g * interval '1 minute', g / 3.0, g % 2 = 0 FROM generate_series(1, r) g;
    INSERT INTO events SELECT g, '2024-03-01'::timestamptz + g * interval '1 second', g % 10, jsonb_build_object('n', g, 'tag', md5(g::text)), pad(g) FROM generate_series(1, r) g;
    INSERT INTO settings SELECT 'key ' || g, md5(g::text), now() FROM generate_series(1, r) g;
    INSERT INTO audit (who, what, at) SELECT g % 50, 'did thing ' || g, '2024-04-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, r) g;
    INSERT INTO tickets SELECT g, (g % r) + 1, 'subject ' || g, repeat('body ', g % 20) || pad(g), '2024-05-01'::date + g % 100 FROM generate_series(1, r) g;
    INSERT INTO plans_used SELECT g, (g % r) + 1, '2024-06-01'::date + g % 30 FROM generate_series(1, r) g;
    RESET search_path;
  END LOOP;
END
\$\$;
VACUUM ANALYZE;
SQL
NTABLES=$(psql "$URL/src" -At -c "SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'tenant_%'")
DBSIZE=$(psql "$URL/src" -At -c "SELECT pg_database_size('src')")
echo "generated $NTABLES tables in $(( $(date +%s) - start )) s" >&2

declare -A T M
run() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  read -r T[$name] M[$name] < "$WORK/time"
}
settle() { psql "$URL/postgres" -c CHECKPOINT; sync; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

export TABLESAFE_PASSWORD="bench password"
JOBS_ARG=(); [ -n "$JOBS" ] && JOBS_ARG=(--jobs "$JOBS")
DUMP_RUNS=(); BACKUP_RUNS=(); PGR_RUNS=(); TSR_RUNS=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/dump.fc" "$WORK/repo"
  settle; run pg_dump "$PGBIN/pg_dump" -Fc -f "$WORK/dump.fc" "$URL/src"; DUMP_RUNS+=("${T[pg_dump]}")
  settle; run ts_backup "$TS" backup --source "$URL/src" --repo "$WORK/repo" --json; BACKUP_RUNS+=("${T[ts_backup]}")
  for db in dump_restore ts_restore; do psql "$URL/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"; done
  settle; run pg_restore "$PGBIN/pg_restore" -d "$URL/dump_restore" "$WORK/dump.fc"; PGR_RUNS+=("${T[pg_restore]}")
  settle; run ts_restore "$TS" restore --repo "$WORK/repo" --snapshot latest --dest "$URL/ts_restore" "${JOBS_ARG[@]}"; TSR_RUNS+=("${T[ts_restore]}")
  echo "run $i: pg_dump ${T[pg_dump]} s, backup ${T[ts_backup]} s, pg_restore ${T[pg_restore]} s, restore ${T[ts_restore]} s" >&2
done
B=$(median "${BACKUP_RUNS[@]}"); D=$(median "${DUMP_RUNS[@]}")
R=$(median "${TSR_RUNS[@]}"); P=$(median "${PGR_RUNS[@]}")

# The restore holds what the source holds: every table's rows (as sorted COPY text),
# and the same constraints, indexes and sequence positions.
rows_of() {
  psql "$1" -At -c "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname LIKE 'tenant_%' ORDER BY 1" > "$WORK/tables"
  [ -s "$WORK/tables" ] || return 1
  while read -r t; do echo "== $t"; psql "$1" -At -c "COPY (SELECT * FROM $t ORDER BY 1, 2) TO STDOUT"; done < "$WORK/tables" | md5sum
}
objects_of() {
  psql "$1" -At > "$WORK/objects" <<'SQL'
SELECT 'con ' || conrelid::regclass || ' ' || contype::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace::regnamespace::text LIKE 'tenant_%'
UNION ALL SELECT 'idx ' || indexrelid::regclass || ' ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid::regclass::text LIKE 'tenant_%'
UNION ALL SELECT 'seq ' || schemaname || '.' || sequencename || ' ' || coalesce(last_value, 0) FROM pg_sequences WHERE schemaname LIKE 'tenant_%'
ORDER BY 1
SQL
  [ -s "$WORK/objects" ] && md5sum < "$WORK/objects"
}
a=$(rows_of "$URL/src") && b=$(rows_of "$URL/ts_restore") || exit 1
same_rows=$([ "$a" = "$b" ] && echo yes || echo NO)
a=$(objects_of "$URL/src") && b=$(objects_of "$URL/ts_restore") || exit 1
same_objects=$([ "$a" = "$b" ] && echo yes || echo NO)

cat <<OUT

tablesafe S4: $NTABLES tables of $ROWS rows (pad $WIDTH), database $((DBSIZE / 1000000)) MB, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)
  pg_dump -Fc          $D s   (runs ${DUMP_RUNS[*]})
  tablesafe backup     $B s   (runs ${BACKUP_RUNS[*]}), peak RSS $((M[ts_backup] / 1024)) MB
  pg_restore           $P s   (runs ${PGR_RUNS[*]})
  tablesafe restore    $R s   (runs ${TSR_RUNS[*]}), peak RSS $((M[ts_restore] / 1024)) MB
  restore identical to the source: rows $same_rows, constraints/indexes/sequences $same_objects

ratios (goal in brackets)
  backup / pg_dump -Fc     $(ratio "$B" "$D")   [<= 0.5]
  restore / pg_restore     $(ratio "$R" "$P")   [<= 0.5]
OUT
[ "$same_rows" = yes ] && [ "$same_objects" = yes ] || { echo "the restore differs from the source" >&2; exit 1; }
if [ -n "${RECORD:-}" ]; then
  python3 "$ROOT/bench/record.py" S4 \
    --workload "PostgreSQL, $NTABLES tables of $ROWS rows in $SCHEMAS schemas (keys, indexes, FKs, sequences)" \
    --measure "backup / pg_dump -Fc" "$B" "$D" 0.5 \
    --measure "restore / pg_restore" "$R" "$P" 0.5 \
    --extra "peak_rss_mb=$((M[ts_backup] / 1024))" ${NOTE:+--note "$NOTE"}
fi
