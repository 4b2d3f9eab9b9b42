//! Point-in-time restore of PostgreSQL from captured changes, against a real server
//! with `wal_level = logical`: a workload commits transfers, inserts, deletes, updates
//! of one row twice in a transaction, transactions spanning tables, a large transaction,
//! a truncate and TOASTed values while the capture runs every few hundred milliseconds;
//! at known instants the workload pauses and the exact state is copied; a table is
//! dropped one second after the last instant. Restoring `at` each instant must give
//! exactly the copy — never a state that did not exist.

use crate::support::new_repo;
use engine::backup::{BackupOptions, backup};
use engine::capture::{self, CaptureOptions};
use engine::progress::NoProgress;
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use engine::selection::Selection;
use sqlx::{Connection, Executor, PgConnection, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE orders (id bigserial PRIMARY KEY, account int NOT NULL REFERENCES accounts(id),
    amount numeric(12,2) NOT NULL, payload text, tags text[], at timestamptz NOT NULL DEFAULT now());
CREATE TABLE scratch (k text PRIMARY KEY, v jsonb);
CREATE TABLE nokey (a int, b text);
INSERT INTO accounts SELECT g, 1000, 'acct ' || g FROM generate_series(1, 50) g;
INSERT INTO orders (account, amount, payload, tags) SELECT 1 + g % 50, g * 1.25, repeat('x', g), ARRAY['a', 'b''c'] FROM generate_series(1, 300) g;
ALTER TABLE orders ALTER payload SET STORAGE EXTERNAL;
INSERT INTO orders (account, amount, payload, tags) VALUES (1, 1, repeat('y', 5000), NULL);
INSERT INTO scratch VALUES ('one', '{\"n\": 1}');
INSERT INTO nokey VALUES (1, 'x');
";

/// Every row of the captured tables, in key order, as JSON text.
async fn state(c: &mut PgConnection) -> Vec<String> {
    let mut out = Vec::new();
    for (table, key) in [("accounts", "id"), ("orders", "id"), ("scratch", "k")] {
        let rows = sqlx::query(&format!(
            "SELECT '{table} ' || row_to_json(t)::text FROM {table} t ORDER BY {key}"
        ))
        .fetch_all(&mut *c)
        .await
        .unwrap();
        out.extend(rows.iter().map(|r| r.get::<String, _>(0)));
    }
    out
}

async fn now_ms(c: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
        .fetch_one(c)
        .await
        .unwrap()
}

/// One step of the workload; `n` varies what it does.
async fn step(c: &mut PgConnection, n: u64) {
    let a = 1 + (n * 7) % 50;
    let b = 1 + (n * 13) % 50;
    let sql = match n % 9 {
        // A transfer: two rows of one table, one transaction (the sum never changes).
        0..=2 => format!(
            "BEGIN; UPDATE accounts SET balance = balance - 5 WHERE id = {a}; \
             UPDATE accounts SET balance = balance + 5 WHERE id = {b}; COMMIT;"
        ),
        // An order and its account together (spans tables); an update that leaves
        // order 301's out-of-line payload untouched (pgoutput sends it as unchanged).
        3 => format!(
            "BEGIN; INSERT INTO orders (account, amount, payload, tags) VALUES ({a}, {n}.5, 'it''s order {n}', ARRAY['q\"x', NULL]); \
             UPDATE accounts SET note = E'ordered\\t{n}\\nback\\\\slash' WHERE id = {a}; \
             UPDATE orders SET amount = amount + 0.01 WHERE id = 301; COMMIT;"
        ),
        // The same row updated twice in one transaction, then a delete.
        4 => format!(
            "BEGIN; UPDATE accounts SET note = 'first' WHERE id = {a}; UPDATE accounts SET note = 'second ' || {n} WHERE id = {a}; \
             DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE account = {b} AND id <> 301); COMMIT;"
        ),
        // A TOASTed value, and an update that leaves it untouched.
        5 => format!(
            "BEGIN; UPDATE orders SET payload = repeat(md5('{n}'), 3000) WHERE id = (SELECT max(id) FROM orders); \
             UPDATE orders SET amount = amount + 1 WHERE id = (SELECT max(id) FROM orders); COMMIT;"
        ),
        6 => format!(
            "INSERT INTO scratch VALUES ('k{n}', '{{\"n\": {n}}}') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        ),
        // A key that changes.
        7 => format!(
            "UPDATE scratch SET k = k || '-moved' WHERE k = 'k{}'",
            n - 1
        ),
        _ => "INSERT INTO nokey VALUES (2, 'not captured')".to_string(),
    };
    c.execute(sqlx::raw_sql(&sql)).await.unwrap();
}

#[tokio::test]
async fn restore_at_an_instant_gives_exactly_the_rows_committed_then() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("shop").unwrap();
    let mut c = PgConnection::connect(&src).await.unwrap();
    c.execute(sqlx::raw_sql(SCHEMA)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (location, mut repo) = new_repo(dir.path()).await;

    let mut opts = CaptureOptions::new(Secret::new(src.clone()), "shop");
    opts.max_changes = 500; // several rounds per burst
    let setup = capture::setup(&opts).await.unwrap();
    assert_eq!(
        setup.tables,
        vec!["public.accounts", "public.orders", "public.scratch"]
    );
    assert_eq!(setup.not_captured.len(), 1, "{:?}", setup.not_captured);
    // Writes running while the base snapshot reads: the snapshot sees some of them.
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let writer = {
        let (src, paused, stop, dropped) =
            (src.clone(), paused.clone(), stop.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut c = PgConnection::connect(&src).await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                // Once scratch is gone, its steps become transfers (the load goes on).
                let what = if dropped.load(Ordering::Relaxed) && matches!(n % 9, 6 | 7) {
                    n - n % 9
                } else {
                    n
                };
                step(&mut c, what).await;
                n += 1;
            }
            n
        })
    };
    let b = BackupOptions {
        source: Secret::new(src.clone()),
        selection: Selection::default(),
        tags: Default::default(),
    };
    let base = backup(&mut repo, &b, &NoProgress).await.unwrap();
    let point = base
        .snapshot
        .pg_point
        .clone()
        .expect("a PostgreSQL snapshot has its position");
    assert!(point.slots.contains(&setup.slot), "{point:?}");
    let capturing = {
        let (location, opts, stop) = (location.clone(), opts.clone(), stop.clone());
        tokio::spawn(async move {
            let mut repo = crate::support::open_repo(&location).await;
            let mut rounds = 0;
            // One replication stream across rounds, as `tablesafe capture` keeps it.
            let mut pos = capture::Position::default();
            while !stop.load(Ordering::Relaxed) {
                capture::capture_round(&mut repo, &opts, &mut pos, &NoProgress)
                    .await
                    .unwrap();
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            pos.close().await;
            (rounds, repo)
        })
    };

    // Instants: the workload pauses, the state is copied, the time noted.
    let mut instants = Vec::new();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if i == 1 {
            // A large transaction just before this instant.
            c.execute(sqlx::raw_sql(
                "INSERT INTO orders (account, amount, payload) SELECT 1 + g % 50, g, 'bulk ' || g FROM generate_series(1, 5000) g",
            ))
            .await
            .unwrap();
        }
        if i == 2 {
            c.execute("TRUNCATE scratch").await.unwrap();
            c.execute("INSERT INTO scratch VALUES ('after truncate', 'null')")
                .await
                .unwrap();
        }
        paused.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let at = now_ms(&mut c).await;
        instants.push((at, state(&mut c).await));
        tokio::time::sleep(Duration::from_millis(20)).await;
        if i < 2 {
            paused.store(false, Ordering::Relaxed);
        }
    }
    // One second after the last instant, with nothing committed since, a table goes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    dropped.store(true, Ordering::Relaxed);
    c.execute("DROP TABLE scratch").await.unwrap();
    paused.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let steps = writer.await.unwrap();
    let (rounds, _) = capturing.await.unwrap();
    assert!(steps > 50 && rounds >= 2, "{steps} steps, {rounds} rounds");
    // The last round after the writes stopped; then the repository as a new process
    // sees it (the capture ran on its own handle).
    capture::capture_once(&mut repo, &opts, &NoProgress)
        .await
        .unwrap();
    let repo = crate::support::open_repo(&location).await;
    let ranges = capture::ranges(&repo).await.unwrap();
    let segments = capture::segments(&repo, &setup.slot).await.unwrap();
    assert!(segments.len() > 5, "{} segments", segments.len());
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!(ranges[0].from_ms, base.snapshot.time_ms);
    assert!(ranges[0].to_ms >= instants[2].0 + 1000, "{ranges:?}");

    for (i, (at, expected)) in instants.iter().enumerate() {
        let dest = pg.create_database(&format!("at{i}")).unwrap();
        let r = RestoreOptions {
            snapshot: "latest".into(),
            dest: Secret::new(dest.clone()),
            selection: Selection {
                include: vec![
                    "public.accounts".into(),
                    "public.orders".into(),
                    "public.scratch".into(),
                ],
                ..Default::default()
            },
            rename: Default::default(),
            mode: Mode::Create,
            jobs: 1,
            parallel_min_bytes: u64::MAX,
            at_ms: Some(if i == 2 { at + 999 } else { *at }),
            filter: Default::default(),
            objects: Default::default(),
        };
        let plan = engine::restore::plan(&repo, &r).await.unwrap();
        assert_eq!(plan.snapshot, base.id, "the only snapshot is the base");
        engine::restore::execute(&repo, &plan, &NoProgress)
            .await
            .unwrap();
        let mut d = PgConnection::connect(&dest).await.unwrap();
        let got = state(&mut d).await;
        assert_eq!(got.len(), expected.len(), "instant {i}: row counts");
        assert!(
            got == *expected,
            "instant {i}: restored rows differ from the copy taken then"
        );
        // Sequences continue after the restored rows.
        sqlx::query("INSERT INTO orders (account, amount) VALUES (1, 1)")
            .execute(&mut d)
            .await
            .unwrap();
    }

    // A table without a key was not captured: asked for at an instant, it is refused.
    let dest = pg.create_database("nokey").unwrap();
    let r = RestoreOptions {
        snapshot: "latest".into(),
        dest: Secret::new(dest),
        selection: Selection::default(),
        rename: Default::default(),
        mode: Mode::Create,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: Some(instants[0].0),
        filter: Default::default(),
        objects: Default::default(),
    };
    let err = engine::restore::plan(&repo, &r)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("public.nokey was not captured"), "{err}");
    // Before the first snapshot, or after the last captured change: a clear no.
    let mut early = r.clone();
    early.selection.include = vec!["public.accounts".into()];
    early.at_ms = Some(base.snapshot.time_ms - 60_000);
    let err = engine::restore::plan(&repo, &early)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no snapshot of"), "{err}");
    early.at_ms = Some(ranges[0].to_ms + 3_600_000);
    let err = engine::restore::plan(&repo, &early)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("can be restored up to"), "{err}");

    // Verify reads the captured changes back; a damaged one is named, and a restore
    // that needs it fails instead of restoring something else.
    let vopts = engine::verify::VerifyOptions {
        snapshot: None,
        read_data: true,
    };
    let report = engine::verify::verify(&repo, &vopts, &NoProgress)
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let (_, first) = &segments[1];
    let chunk = first.chunks[0].0;
    let loc = repo.location(&chunk).unwrap();
    let pack = std::path::Path::new(&location).join(engine::repo::pack_path(&loc.pack));
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.offset as usize + loc.length as usize / 2] ^= 0x55;
    std::fs::write(&pack, bytes).unwrap();
    let report = engine::verify::verify(&repo, &vopts, &NoProgress)
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.tables.iter().any(|t| t.contains("captured changes of"))),
        "{:?}",
        report.problems
    );
    let dest = pg.create_database("damaged").unwrap();
    let r = RestoreOptions {
        snapshot: "latest".into(),
        dest: Secret::new(dest.clone()),
        selection: Selection {
            include: vec!["public.accounts".into()],
            ..Default::default()
        },
        rename: Default::default(),
        mode: Mode::Create,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: Some(instants[2].0),
        filter: Default::default(),
        objects: Default::default(),
    };
    let plan = engine::restore::plan(&repo, &r).await.unwrap();
    assert!(
        engine::restore::execute(&repo, &plan, &NoProgress)
            .await
            .is_err()
    );
    let mut d = PgConnection::connect(&dest).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut d)
            .await
            .unwrap();
    assert_eq!(tables, 0, "a failed restore leaves nothing behind");

    capture::teardown(&Secret::new(src.clone()), "shop")
        .await
        .unwrap();
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(slots, 0, "the slot is gone: the source keeps no WAL for it");
}

/// A slot that holds more WAL than allowed is dropped, with an error that says so,
/// rather than fill the source's disk; what was stored stays restorable.
#[tokio::test]
async fn a_capture_that_falls_behind_drops_its_slot() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("busy").unwrap();
    let mut c = PgConnection::connect(&src).await.unwrap();
    c.execute(sqlx::raw_sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');",
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let mut opts = CaptureOptions::new(Secret::new(src.clone()), "busy");
    opts.max_lag_bytes = 4 << 20;
    capture::setup(&opts).await.unwrap();
    let mut pos = capture::Position::default();
    capture::capture_round(&mut repo, &opts, &mut pos, &NoProgress)
        .await
        .unwrap();
    // The capture stops running while the source writes 16 MB of WAL.
    pos.close().await;
    c.execute(sqlx::raw_sql(
        "INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(2, 60000) g;",
    ))
    .await
    .unwrap();
    let err = capture::capture_round(&mut repo, &opts, &mut pos, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fell behind") && err.contains("dropped"),
        "{err}"
    );
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(slots, 0, "the slot is gone");
}

/// Prune with captured changes: the segments only a forgotten snapshot needed go, the
/// range then starts at the oldest kept snapshot and has no gap (an instant after it
/// restores exactly), and an instant before it is refused rather than guessed.
#[tokio::test]
async fn prune_keeps_the_range_after_the_oldest_kept_snapshot_without_a_gap() {
    use engine::prune::prune;
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("shop").unwrap();
    let mut c = PgConnection::connect(&src).await.unwrap();
    c.execute(sqlx::raw_sql(SCHEMA)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (location, mut repo) = new_repo(dir.path()).await;
    let opts = CaptureOptions::new(Secret::new(src.clone()), "shop");
    let slot = capture::setup(&opts).await.unwrap().slot;
    let b = BackupOptions {
        source: Secret::new(src.clone()),
        selection: Selection::default(),
        tags: Default::default(),
    };
    let mut pos = capture::Position::default();
    let mut n = 0;
    let mut work = async |c: &mut PgConnection, repo: &mut engine::repo::Repository, k: u64| {
        for _ in 0..k {
            step(c, n).await;
            n += 1;
        }
        capture::capture_round(repo, &opts, &mut pos, &NoProgress)
            .await
            .unwrap();
    };
    let first = backup(&mut repo, &b, &NoProgress).await.unwrap();
    work(&mut c, &mut repo, 60).await;
    let between = now_ms(&mut c).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    work(&mut c, &mut repo, 60).await;
    let second = backup(&mut repo, &b, &NoProgress).await.unwrap();
    work(&mut c, &mut repo, 60).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let at = now_ms(&mut c).await;
    let expected = state(&mut c).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    work(&mut c, &mut repo, 30).await;
    pos.close().await;
    let before = capture::segments(&repo, &slot).await.unwrap().len();

    let mut repo = crate::support::open_repo(&location).await;
    let report = prune(&mut repo, &crate::support::keep_last(1))
        .await
        .unwrap();
    assert_eq!(report.forgotten, vec![first.id.to_string()]);
    assert!(report.change_segments_removed > 0, "{report:?}");
    let ranges = capture::ranges(&repo).await.unwrap();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!(ranges[0].from_ms, second.snapshot.time_ms, "{ranges:?}");
    assert!(ranges[0].to_ms > at, "{ranges:?}");
    let after = capture::segments(&repo, &slot).await.unwrap().len();
    assert_eq!(before - after, report.change_segments_removed as usize);

    let restore_at = |at_ms: i64, dest: String| RestoreOptions {
        snapshot: "latest".into(),
        dest: Secret::new(dest),
        selection: Selection {
            include: vec![
                "public.accounts".into(),
                "public.orders".into(),
                "public.scratch".into(),
            ],
            ..Default::default()
        },
        rename: Default::default(),
        mode: Mode::Create,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: Some(at_ms),
        filter: Default::default(),
        objects: Default::default(),
    };
    let dest = pg.create_database("after").unwrap();
    crate::support::restore(&repo, &restore_at(at, dest.clone()))
        .await
        .unwrap();
    let got = state(&mut PgConnection::connect(&dest).await.unwrap()).await;
    assert!(got == expected, "restored rows differ after prune");
    let err = engine::restore::plan(
        &repo,
        &restore_at(between, pg.create_database("gone").unwrap()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no snapshot of"), "{err}");
}
