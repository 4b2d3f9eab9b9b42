//! PostgreSQL round trips against a real server started by the test (testkit). Restored
//! data is compared with `pg_dump --data-only` of source and destination: PostgreSQL's
//! own tool, not tablesafe's code.

use crate::support::*;
use engine::backup::{BackupOptions, backup};
use engine::model::{ObjectKind, SegmentKind};
use engine::progress::NoProgress;
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use engine::selection::Selection;
use std::process::Command;

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s "complicated"');
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept".customers (
    id serial PRIMARY KEY,
    "Name" text NOT NULL UNIQUE,
    "select" varchar(20) DEFAULT 'x',
    "ünï code" char(3),
    mood mood
);
CREATE TABLE "Sales Dept"."order ""lines""" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer int NOT NULL REFERENCES "Sales Dept".customers (id),
    qty int2 CHECK (qty > 0),
    total numeric(30, 10),
    doubled int8 GENERATED ALWAYS AS (qty * 2) STORED
);
CREATE INDEX order_lines_by_customer ON "Sales Dept"."order ""lines""" (customer, total DESC);
CREATE TABLE public.edges (
    k int PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, num numeric, f4 float4, f8 float8, b bool,
    t text, vc varchar, c char(5), by bytea,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, j json, jb jsonb, arr int[], tarr text[], m mood
);
CREATE TABLE public.nokey (a int, b text);
CREATE VIEW public.v AS SELECT 1 AS one;
CREATE SEQUENCE public.standalone;
"#;

const DATA: &str = r#"
INSERT INTO "Sales Dept".customers ("Name", "select", "ünï code", mood) VALUES
  ('Ann', 'a', 'xyz', 'happy'), ('Bob "the" builder', NULL, NULL, 'it''s "complicated"'), (E'tab\there\nnewline\\back', 'c', 'é', NULL);
INSERT INTO "Sales Dept"."order ""lines""" (customer, qty, total) VALUES (1, 3, 12345678901234567890.0123456789), (2, 1, -0.5), (3, 7, NULL);
INSERT INTO public.edges VALUES
 (1, 32767, 2147483647, 9223372036854775807, 123456789012345678901234567890.123456789012345678901234567890,
  3.4028235e38, 1.7976931348623157e308, true, 'ünïcödé ✓ 漢字', 'v', 'abc', '\x00ff00'::bytea,
  '4713-01-01 BC', '23:59:59.999999', '12:00:00+05:30', '294276-12-31 23:59:59.999999', 'infinity', '178000000 years',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{ "spaced" :  [1, 2,   3] }', '{"b": 1, "a": [true, null]}',
  '{1,NULL,3}', '{"a b","","NULL",NULL}', 'ok'),
 (2, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', '-Infinity', false, '', '', '', ''::bytea,
  'infinity', '00:00', '00:00+00', '-infinity', '-infinity', '-1 day -00:00:01',
  '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}', 'sad'),
 (3, 0, 0, 0, '-0.000000000000000000001', '-0', '-0', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, 'Infinity', 4.9e-324, NULL, repeat('x', 100000), NULL, NULL, decode(repeat('00ff', 50000), 'hex'),
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO public.nokey VALUES (1, 'dup'), (1, 'dup'), (NULL, NULL);
"#;

/// [`pg_rows`] without the line about a sequence no column owns (reported as skipped,
/// not carried).
fn pg_dump_data(url: &str) -> String {
    pg_rows(url)
        .lines()
        .filter(|l| !l.contains("'public.standalone'"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pg_opts(url: &str, dest: &str) -> (BackupOptions, RestoreOptions) {
    (
        BackupOptions {
            source: Secret::new(url.into()),
            selection: Selection::default(),
            tags: Default::default(),
        },
        RestoreOptions {
            snapshot: "latest".into(),
            dest: Secret::new(dest.into()),
            selection: Selection::default(),
            rename: Default::default(),
            mode: Mode::Create,
            jobs: 1,
            parallel_min_bytes: u64::MAX,
            at_ms: None,
            filter: Default::default(),
            objects: Default::default(),
        },
    )
}

#[tokio::test]
async fn postgres_types_schemas_constraints_and_sequences_round_trip() {
    round_trip(false).await;
}

/// The same through the parallel path: every table loads over three connections into
/// a staging table that the restore's transaction renames into place.
#[tokio::test]
async fn postgres_round_trip_through_parallel_staged_loads() {
    round_trip(true).await;
}

async fn round_trip(parallel: bool) {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("src").unwrap();
    let dst = pg.create_database("dst").unwrap();
    psql(&src, SCHEMA);
    psql(&src, DATA);
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let (b, mut r) = pg_opts(&src, &dst);
    if parallel {
        r.jobs = 3;
        r.parallel_min_bytes = 0;
    }
    let s = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let names: Vec<&str> = s.snapshot.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "Sales Dept.customers",
            "Sales Dept.order \"lines\"",
            "public.edges",
            "public.nokey"
        ]
    );
    // The view and the standalone sequence are carried now; nothing is skipped.
    assert!(
        s.snapshot
            .objects
            .iter()
            .any(|k| k.kind == ObjectKind::View && k.name == "public.v")
    );
    assert!(s.snapshot.skipped.is_empty(), "{:?}", s.snapshot.skipped);

    let plan = engine::restore::plan(&repo, &r).await.unwrap();
    assert!(
        plan.tables
            .iter()
            .all(|t| t.loaders == if parallel { 3 } else { 1 })
    );
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    same_dump(&pg_dump_data(&src), &pg_dump_data(&dst));
    assert_eq!(
        psql(
            &dst,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'tablesafe_stage%'"
        )
        .trim(),
        "0"
    );

    // The restored tables keep working: constraints, enum, identity and serial values.
    assert!(psql(&dst, "SELECT count(*) FROM pg_constraint WHERE conrelid = '\"Sales Dept\".\"order \"\"lines\"\"\"'::regclass").trim().parse::<i32>().unwrap() >= 3);
    let next = psql(
        &dst,
        "INSERT INTO \"Sales Dept\".customers (\"Name\") VALUES ('new') RETURNING id",
    );
    assert_eq!(next.trim(), "4", "serial continues after the restored rows");
    let next = psql(
        &dst,
        "INSERT INTO \"Sales Dept\".\"order \"\"lines\"\"\" (customer, qty) VALUES (4, 2) RETURNING id, doubled",
    );
    assert_eq!(
        next.trim(),
        "4|4",
        "identity continues; generated column computed"
    );
    let bad = Command::new("psql")
        .args([
            &dst,
            "-XAtq",
            "-c",
            "INSERT INTO \"Sales Dept\".\"order \"\"lines\"\"\" (customer, qty) VALUES (999, 1)",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "the foreign key is enforced");
    assert_eq!(psql(&dst, "SELECT indexdef LIKE '%(customer, total DESC)%' FROM pg_indexes WHERE indexname = 'order_lines_by_customer'").trim(), "t");
    assert_eq!(
        psql(
            &dst,
            "SELECT json_typeof(j), j::text FROM public.edges WHERE k = 1"
        )
        .trim(),
        "object|{ \"spaced\" :  [1, 2,   3] }",
        "json whitespace kept"
    );
}

#[tokio::test]
async fn postgres_restore_under_a_new_name_next_to_the_original() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("app").unwrap();
    psql(&src, SCHEMA);
    psql(&src, DATA);
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let (b, mut r) = pg_opts(&src, &src);
    backup(&mut repo, &b, &NoProgress).await.unwrap();
    r.selection.include = vec!["Sales Dept.*".into()];
    r.rename.insert(
        "Sales Dept.customers".into(),
        "Sales Dept.customers_restored".into(),
    );
    r.rename.insert(
        "Sales Dept.order \"lines\"".into(),
        "public.lines_restored".into(),
    );
    let plan = engine::restore::plan(&repo, &r).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let a = psql(&src, "SELECT * FROM \"Sales Dept\".customers ORDER BY id");
    let b = psql(
        &src,
        "SELECT * FROM \"Sales Dept\".customers_restored ORDER BY id",
    );
    assert_eq!(a, b);
    assert_eq!(
        psql(&src, "SELECT count(*) FROM public.lines_restored").trim(),
        "3"
    );
    let next = psql(
        &src,
        "INSERT INTO \"Sales Dept\".customers_restored (\"Name\") VALUES ('z') RETURNING id",
    );
    assert_eq!(next.trim(), "4");

    // Some columns only: the primary key comes along, the rest stays behind.
    let (_, mut cols) = pg_opts(&src, &src);
    cols.selection.include = vec!["Sales Dept.customers".into()];
    cols.selection
        .columns
        .insert("Sales Dept.customers".into(), vec!["mood".into()]);
    cols.rename
        .insert("Sales Dept.customers".into(), "public.moods".into());
    let plan = engine::restore::plan(&repo, &cols).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        psql(&src, "SELECT id, mood FROM public.moods ORDER BY id"),
        psql(
            &src,
            "SELECT id, mood FROM \"Sales Dept\".customers ORDER BY id"
        )
    );
    assert_eq!(psql(&src, "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'moods'").trim(), "id,mood");

    // create mode refuses to touch the originals.
    let (_, mut again) = pg_opts(&src, &src);
    again.selection.include = vec!["public.edges".into()];
    let err = engine::restore::plan(&repo, &again).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

/// Equal dumps, or a short report of the first differing line (dumps can be megabytes).
fn same_dump(a: &str, b: &str) {
    if a == b {
        return;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la
        .iter()
        .zip(&lb)
        .position(|(x, y)| x != y)
        .unwrap_or(la.len().min(lb.len()));
    let cut = |s: Option<&&str>| {
        s.map(|s| s.chars().take(300).collect::<String>())
            .unwrap_or_default()
    };
    panic!(
        "pg_dump --data-only differs at line {i}:\n source: {}\n restored: {}",
        cut(la.get(i)),
        cut(lb.get(i))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_come_from_one_snapshot_while_a_writer_runs() {
    use sqlx::Connection;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("live").unwrap();
    let dst = pg.create_database("copy").unwrap();
    psql(&src, "CREATE TABLE a (id int8 PRIMARY KEY, pad text); CREATE TABLE b (id int8 PRIMARY KEY, pad text);
                INSERT INTO a SELECT g, repeat(md5(g::text), 60) FROM generate_series(1, 20000) g;
                INSERT INTO b SELECT id, pad FROM a;");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes, url) = (stop.clone(), writes.clone(), src.clone());
        tokio::spawn(async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut id = 1_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = c.begin().await.unwrap();
                sqlx::query("INSERT INTO a VALUES ($1, 'x')")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO b VALUES ($1, 'x')")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                id += 1;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while writes.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let before = writes.load(Ordering::Relaxed);
    let (b, r) = pg_opts(&src, &dst);
    backup(&mut repo, &b, &NoProgress).await.unwrap();
    let during = writes.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        during > 0,
        "the writer must commit during the backup for this test to mean anything"
    );
    let plan = engine::restore::plan(&repo, &r).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let diff = psql(
        &dst,
        "SELECT count(*) FROM a FULL JOIN b USING (id) WHERE a.id IS NULL OR b.id IS NULL",
    );
    assert_eq!(
        diff.trim(),
        "0",
        "tables a and b were read at different instants"
    );
}

#[tokio::test]
async fn postgres_incremental_backups_store_changed_rows_and_restore_each_snapshot() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("inc").unwrap();
    psql(
        &src,
        "CREATE TABLE big (id bigserial PRIMARY KEY, note text, n numeric, at timestamptz);
         INSERT INTO big (note, n, at) SELECT md5(i::text) || repeat('x', 100), i / 7.0,
             '2020-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 40000) i;
         CREATE TABLE pairs (a int, b smallint, v text, PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT i % 50, (i / 50)::smallint, 'p' || i FROM generate_series(-2000, 2000) i;
         CREATE TABLE ids (id uuid PRIMARY KEY, v int);
         INSERT INTO ids SELECT md5(i::text)::uuid, i FROM generate_series(1, 3000) i;
         CREATE TABLE words (w text PRIMARY KEY, v int);
         INSERT INTO words VALUES ('b', 1), ('A', 2), ('a', 3);",
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let (b, _) = pg_opts(&src, "");
    let first = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let dump1 = pg_dump_data(&src);
    psql(
        &src,
        "UPDATE big SET note = 'changed', n = -n WHERE id % 100 = 42;
         DELETE FROM big WHERE id % 300 = 1;
         INSERT INTO big (note) SELECT 'new ' || i FROM generate_series(1, 50) i;
         UPDATE pairs SET v = 'q' WHERE a = 3;
         DELETE FROM pairs WHERE b = -40;
         UPDATE ids SET v = -v WHERE v % 10 = 0;
         UPDATE words SET v = 9 WHERE w = 'A';",
    );
    let second = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let dump2 = pg_dump_data(&src);
    let segment = |name: &str| {
        second
            .snapshot
            .tables
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .segment
    };
    assert_eq!(segment("public.big"), SegmentKind::Delta);
    assert_eq!(segment("public.pairs"), SegmentKind::Delta);
    assert_eq!(segment("public.ids"), SegmentKind::Delta);
    // Text keys sort by a collation: stored full, never guessed.
    assert_eq!(segment("public.words"), SegmentKind::Full);
    // Only the changed rows were read from the server for the keyed tables.
    let mut read = second.changes_only.clone();
    read.sort();
    assert_eq!(read, ["public.big", "public.ids", "public.pairs"]);
    assert!(
        second.snapshot.bytes_stored * 10 < first.snapshot.bytes_stored,
        "{} after {}",
        second.snapshot.bytes_stored,
        first.snapshot.bytes_stored
    );

    restores_match(
        &pg,
        &repo,
        &src,
        [(&first.id, &dump1, "r1"), (&second.id, &dump2, "r2")],
    )
    .await;
}

/// Restores each snapshot into a new database named as given and compares its data
/// with the source's `pg_dump --data-only` taken right after that backup.
async fn restores_match<const N: usize>(
    pg: &testkit::Postgres,
    repo: &engine::repo::Repository,
    src: &str,
    cases: [(&engine::model::SnapshotId, &String, &str); N],
) {
    for (snap, dump, db) in cases {
        let dest = pg.create_database(db).unwrap();
        let (_, mut r) = pg_opts(src, &dest);
        r.snapshot = snap.to_string();
        let plan = engine::restore::plan(repo, &r).await.unwrap();
        engine::restore::execute(repo, &plan, &NoProgress)
            .await
            .unwrap();
        same_dump(dump, &pg_dump_data(&dest));
    }
}

/// Damaged data found during a parallel staged load leaves the destination as it was:
/// no staging table, and no schema or enum type the restore had to create.
#[tokio::test]
async fn a_damaged_parallel_restore_leaves_nothing_behind() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("src").unwrap();
    let dst = pg.create_database("dst").unwrap();
    psql(&src, SCHEMA);
    psql(&src, DATA);
    psql(
        &src,
        "INSERT INTO public.edges (k, j) SELECT g, json_build_object('n', g, 'pad', repeat(md5(g::text), 20)) FROM generate_series(100, 20000) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let (loc, mut repo) = new_repo(dir.path()).await;
    let (b, mut r) = pg_opts(&src, &dst);
    let s = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let edges = s
        .snapshot
        .tables
        .iter()
        .find(|t| t.name == "public.edges")
        .unwrap();
    assert!(edges.chunks.len() > 2);
    // Damage the last chunk of the big table: most rows load before it is found.
    let last = edges.chunks.last().unwrap().0;
    let at = repo.location(&last).unwrap();
    let pack = std::path::Path::new(&loc)
        .join("data")
        .join(&engine::repo::crypto::hex(&at.pack)[..2])
        .join(engine::repo::crypto::hex(&at.pack));
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[at.offset as usize + at.length as usize / 2] ^= 1;
    std::fs::write(&pack, bytes).unwrap();

    let before = psql(
        &dst,
        "SELECT count(*) FROM pg_class WHERE relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
    );
    r.jobs = 2;
    r.parallel_min_bytes = 0;
    let repo = open_repo(&loc).await;
    let plan = engine::restore::plan(&repo, &r).await.unwrap();
    let err = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, engine::Error::Damaged(_)), "{err}");
    assert_eq!(
        psql(
            &dst,
            "SELECT count(*) FROM pg_class WHERE relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        ),
        before
    );
    assert_eq!(
        psql(
            &dst,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'Sales Dept'"
        )
        .trim(),
        "0"
    );
    assert_eq!(
        psql(&dst, "SELECT count(*) FROM pg_type WHERE typname = 'mood'").trim(),
        "0"
    );
}

/// An incremental backup reads only rows whose `xmin` is at or after the parent
/// snapshot's oldest running transaction (its xmin, not its xmax: a transaction
/// running while the parent was taken may have an older id than the parent's newest
/// commits). The cases where a row's transaction id could
/// mislead that test restore exactly what each backup saw: a transaction that was open
/// (with its changes) while the parent was taken and committed after it, changes made
/// in subtransactions (savepoints, one rolled back), a key deleted and inserted again,
/// a row updated to the same values, rows frozen by VACUUM FREEZE, a truncated and
/// refilled table. A parent from another server history (its system identifier
/// changed) is never trusted: every row is read again, and the result is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_by_xmin_miss_nothing() {
    use sqlx::Connection;
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("xmin").unwrap();
    psql(
        &src,
        "CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL, note text);
         INSERT INTO acct SELECT i, 100, 'n' || i FROM generate_series(1, 5000) i;
         CREATE TABLE refill (id bigint PRIMARY KEY, v text);
         INSERT INTO refill SELECT i, 'r' || i FROM generate_series(1, 300) i;",
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let (b, _) = pg_opts(&src, "");
    // A transaction holding changes while the first backup is taken.
    let mut conn = sqlx::PgConnection::connect(&src).await.unwrap();
    let mut open = conn.begin().await.unwrap();
    for sql in [
        "UPDATE acct SET bal = bal - 7, note = 'open' WHERE id BETWEEN 10 AND 20",
        "INSERT INTO acct VALUES (9001, 7, 'from the open transaction')",
    ] {
        sqlx::query(sql).execute(&mut *open).await.unwrap();
    }
    // A later transaction commits, so the snapshot lists the open one as running
    // (xmin < xmax): rows written by it are older than the snapshot's newest commits.
    psql(
        &src,
        "UPDATE acct SET note = 'committed later' WHERE id = 1",
    );
    let first = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let dump1 = pg_dump_data(&src);
    let seen = first
        .snapshot
        .pg_point
        .as_ref()
        .unwrap()
        .xid_snapshot
        .as_str();
    assert!(
        !seen.ends_with(':'),
        "the transaction must be running: {seen}"
    );
    open.commit().await.unwrap();
    psql(
        &src,
        "BEGIN;
         SAVEPOINT a; UPDATE acct SET bal = 1 WHERE id = 100; RELEASE a;
         SAVEPOINT b; UPDATE acct SET bal = 2 WHERE id = 200; ROLLBACK TO b;
         SAVEPOINT c; DELETE FROM acct WHERE id = 300; INSERT INTO acct VALUES (300, 3, 'again'); RELEASE c;
         COMMIT;
         UPDATE acct SET bal = bal WHERE id BETWEEN 400 AND 410;
         DELETE FROM acct WHERE id % 997 = 0;
         TRUNCATE refill; INSERT INTO refill SELECT i, 'new ' || i FROM generate_series(150, 450) i;",
    );
    psql(&src, "VACUUM FREEZE acct");
    let second = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let dump2 = pg_dump_data(&src);
    let mut read = second.changes_only.clone();
    read.sort();
    assert_eq!(read, ["public.acct", "public.refill"]);
    assert!(
        second
            .snapshot
            .tables
            .iter()
            .all(|t| t.segment == SegmentKind::Delta)
    );
    psql(&src, "UPDATE acct SET bal = bal + 1 WHERE id = 4000");
    // The next parent claims another server history: its xmins are not trusted.
    let (_, mut parent) = repo.find_snapshot(&second.id).await.unwrap();
    parent.pg_point.as_mut().unwrap().system_id = Some(1);
    parent.time_ms += 1;
    repo.save_snapshot(&parent).await.unwrap();
    let third = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let dump3 = pg_dump_data(&src);
    assert!(third.changes_only.is_empty(), "{:?}", third.changes_only);
    assert!(
        third
            .snapshot
            .tables
            .iter()
            .all(|t| t.segment == SegmentKind::Delta)
    );
    restores_match(
        &pg,
        &repo,
        &src,
        [
            (&first.id, &dump1, "x1"),
            (&second.id, &dump2, "x2"),
            (&third.id, &dump3, "x3"),
        ],
    )
    .await;
}

/// A change that touches few of a table's blocks (a run of updated rows, rows deleted
/// in one place, rows appended) is backed up from the parent's block list alone: the
/// parent's rows are not read back from the repository. A change scattered over the
/// whole table (one row in every hundred) reads the parent's rows instead, which costs
/// less than reading every block it touches again from the server. Each way, every
/// snapshot restores to what the source held.
#[tokio::test]
async fn clustered_changes_use_the_block_list_and_scattered_ones_the_parent_rows() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("blocks").unwrap();
    psql(
        &src,
        "CREATE TABLE ledger (id bigint PRIMARY KEY, body text);
         INSERT INTO ledger SELECT i, repeat(md5(i::text), 30) FROM generate_series(1, 20000) i;
         CREATE TABLE docs (id uuid PRIMARY KEY, v int, note text);
         INSERT INTO docs SELECT md5(i::text)::uuid, i, repeat('d', 200) FROM generate_series(1, 20000) i;",
    );
    let dir = tempfile::tempdir().unwrap();
    // Small chunks, so that reading the parent's rows is many calls.
    let mut init = engine::repo::InitOptions::encrypted(password());
    init.kdf = engine::repo::crypto::KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    init.chunker = engine::chunker::ChunkerParams {
        min: 8 * 1024,
        avg: 32 * 1024,
        max: 128 * 1024,
    };
    let location = dir.path().join("repo").to_str().unwrap().to_string();
    let mut repo = engine::repo::Repository::init(&location, init)
        .await
        .unwrap();
    let (b, _) = pg_opts(&src, "");
    let first = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let dump1 = pg_dump_data(&src);
    let parent_chunks: u64 = first
        .snapshot
        .tables
        .iter()
        .map(|t| t.chunks.len() as u64)
        .sum();
    assert!(parent_chunks >= 200, "{parent_chunks} chunks");
    // What a backup costs in calls to the repository when nothing changed (manifests,
    // index, hints, block lists, the new snapshot).
    let before = repo.storage.requests();
    backup(&mut repo, &b, &NoProgress).await.unwrap();
    let idle_calls = repo.storage.requests() - before;

    // Clustered: about 15 of ledger's 1,250 blocks, and a few of docs'.
    psql(
        &src,
        "UPDATE ledger SET body = 'changed ' || id WHERE id BETWEEN 5000 AND 5100;
         DELETE FROM ledger WHERE id BETWEEN 7000 AND 7010 OR id = 9000;
         INSERT INTO ledger SELECT i, 'appended' FROM generate_series(20001, 20100) i;
         UPDATE docs SET v = -v WHERE v BETWEEN 300 AND 304;
         DELETE FROM docs WHERE v = 600;",
    );
    let before = repo.storage.requests();
    let second = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let clustered_calls = repo.storage.requests() - before;
    let dump2 = pg_dump_data(&src);
    let mut read = second.changes_only.clone();
    read.sort();
    assert_eq!(read, ["public.docs", "public.ledger"]);
    assert!(
        clustered_calls < idle_calls + parent_chunks / 10,
        "{clustered_calls} calls to the repository (a backup with no change: {idle_calls}) for a parent of {parent_chunks} chunks"
    );

    // Scattered: one ledger row in every hundred.
    psql(&src, "UPDATE ledger SET body = 'again' WHERE id % 100 = 7");
    let parent_chunks: u64 = second
        .snapshot
        .tables
        .iter()
        .find(|t| t.name == "public.ledger")
        .map(|t| t.base.iter().map(|l| l.chunks.len() as u64).sum::<u64>() + t.chunks.len() as u64)
        .unwrap();
    let before = repo.storage.requests();
    let third = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let scattered_calls = repo.storage.requests() - before;
    let dump3 = pg_dump_data(&src);
    assert!(
        third.changes_only.iter().any(|t| t == "public.ledger"),
        "{:?}",
        third.changes_only
    );
    assert!(
        scattered_calls >= parent_chunks,
        "{scattered_calls} calls to the repository for ledger's {parent_chunks} chunks"
    );

    restores_match(
        &pg,
        &repo,
        &src,
        [
            (&first.id, &dump1, "b1"),
            (&second.id, &dump2, "b2"),
            (&third.id, &dump3, "b3"),
        ],
    )
    .await;
}

/// Rows longer than many chunks (3.2 MB of text and 320 kB of bytes each; the stream
/// is read in chunk-sized pieces of about 256 KiB) restore whole, beside a small row:
/// the restore keeps an unfinished row across every piece that carries it.
#[tokio::test]
async fn rows_wider_than_many_chunks_restore_whole() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("widesrc").unwrap();
    let dst = pg.create_database("widedst").unwrap();
    psql(
        &src,
        "CREATE TABLE wide (id int PRIMARY KEY, v text, b bytea);
         INSERT INTO wide SELECT g, repeat(md5(g::text), 100000),
             decode(repeat(md5(g::text), 20000), 'hex') FROM generate_series(1, 3) g;
         INSERT INTO wide VALUES (4, 'small', NULL);",
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let (b, r) = pg_opts(&src, &dst);
    let s = backup(&mut repo, &b, &NoProgress).await.unwrap();
    assert!(s.snapshot.tables[0].chunks.len() >= 10);
    let plan = engine::restore::plan(&repo, &r).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let sum = "SELECT count(*) || ' ' || md5(string_agg(id || ':' || md5(coalesce(v, '-')) || md5(coalesce(b, '\\x00'::bytea)), ',' ORDER BY id)) FROM wide";
    assert_eq!(psql(&dst, sum), psql(&src, sum));
    assert!(psql(&dst, sum).starts_with("4 "));
}

/// Rows of several megabytes (longer than the engine holds whole), with the key before
/// and after the wide value: backed up with two readers, changed, backed up again,
/// verified, and restored over three connections, identical each time.
#[tokio::test]
async fn rows_of_megabytes_pass_through_in_pieces() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("longsrc").unwrap();
    let dst = pg.create_database("longdst").unwrap();
    psql(
        &src,
        "CREATE TABLE key_first (id int PRIMARY KEY, v text, b bytea);
         INSERT INTO key_first SELECT g, repeat(md5(g::text), 60000 * g),
             decode(repeat(md5(g::text), 30000), 'hex') FROM generate_series(1, 4) g;
         INSERT INTO key_first SELECT g, 'small ' || g, NULL FROM generate_series(5, 400) g;
         CREATE TABLE key_last (note text, b bytea, id int PRIMARY KEY);
         INSERT INTO key_last SELECT 'n' || g, decode(repeat(md5(g::text), 70000 * g), 'hex'), g
             FROM generate_series(1, 3) g;",
    );
    let sum = |url: &str| {
        psql(
            url,
            "SELECT (SELECT count(*) || ' ' || md5(string_agg(id || ':' || md5(coalesce(v, '-')) || md5(coalesce(b, '\\x00'::bytea)), ',' ORDER BY id)) FROM key_first)
              || ' ' || (SELECT count(*) || ' ' || md5(string_agg(id || ':' || note || md5(b), ',' ORDER BY id)) FROM key_last)",
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (location, mut repo) = new_repo(dir.path()).await;
    let (b, mut r) = pg_opts(&src, &dst);
    let par = engine::backup::Parallel {
        jobs: 2,
        split_min_bytes: 0,
    };
    let first = engine::backup::backup_parallel(&mut repo, &b, par, &NoProgress)
        .await
        .unwrap();
    let before = sum(&src);
    psql(
        &src,
        "UPDATE key_first SET v = repeat('changed', 500000) WHERE id = 2;
         DELETE FROM key_first WHERE id = 3;
         INSERT INTO key_last VALUES ('late', decode(repeat('ab', 2500000), 'hex'), 10);
         UPDATE key_last SET note = 'edited' WHERE id = 1;",
    );
    let second = engine::backup::backup_parallel(&mut repo, &b, par, &NoProgress)
        .await
        .unwrap();
    assert!(
        second.snapshot.tables.iter().all(|t| !t.base.is_empty()),
        "the second backup stores deltas"
    );
    verify_ok(&location).await;
    // Each snapshot over three connections: the first from its full segments (a long
    // row goes to one connection in pieces), the second merged from its deltas.
    r.jobs = 3;
    r.parallel_min_bytes = 0;
    for (snapshot, expected, rows) in [
        (first.id.to_string(), before, 403),
        (second.id.to_string(), sum(&src), 403),
    ] {
        psql(&dst, "DROP TABLE IF EXISTS key_first, key_last");
        r.snapshot = snapshot;
        let plan = engine::restore::plan(&repo, &r).await.unwrap();
        let restored = engine::restore::execute(&repo, &plan, &NoProgress)
            .await
            .unwrap();
        assert_eq!(restored.iter().map(|t| t.rows).sum::<u64>(), rows);
        assert_eq!(sum(&dst), expected);
    }
    assert!(sum(&dst).starts_with("399 "));
}
