//! SQLite continuous capture (engine::capture::sqlite) under a concurrent writer: a
//! restore to an instant gives a state that existed (money is conserved and the log
//! matches it), no older than the stated recovery point (one interval plus one
//! round), exactly the database of that instant while it was seen unchanged; prune
//! keeps the range without a gap.

use crate::support::*;
use engine::capture::sqlite::SqliteCapture;
use engine::progress::NoProgress;
use engine::prune::prune;
use engine::selection::Selection;
use sqlx::{Connection, Executor, Row};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNTS: usize = 5;
const START: i64 = 200;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Transaction `k` moves `amount(k)` from one account to another and logs `k`.
fn moves(k: i64) -> (usize, usize, i64) {
    let from = (k as usize) % ACCOUNTS;
    let to = (k as usize * 3 + 1) % ACCOUNTS;
    (from, to, k % 7 + 1)
}

/// The balances after transactions 1..=k.
fn expected(k: i64) -> Vec<i64> {
    let mut b = vec![START; ACCOUNTS];
    for i in 1..=k {
        let (from, to, amount) = moves(i);
        b[from] -= amount;
        b[to] += amount;
    }
    b
}

/// (k, ms before BEGIN, ms after COMMIT returned)
type Commits = Arc<Mutex<Vec<(i64, i64, i64)>>>;

fn writer(db: &Path, stop: Arc<AtomicBool>, commits: Commits) -> tokio::task::JoinHandle<()> {
    let db = db.to_path_buf();
    tokio::spawn(async move {
        let mut c = sqlite(&db).await;
        let mut k = 0;
        while !stop.load(Ordering::Relaxed) {
            k += 1;
            let (from, to, amount) = moves(k);
            let before = now_ms();
            let mut tx = c.begin().await.unwrap();
            for (id, delta) in [(from, -amount), (to, amount)] {
                sqlx::query("UPDATE accounts SET balance = balance + ? WHERE id = ?")
                    .bind(delta)
                    .bind(id as i64)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            sqlx::query("INSERT INTO log (k, note) VALUES (?, ?)")
                .bind(k)
                .bind(format!("move {amount} from {from} to {to}"))
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            commits.lock().unwrap().push((k, before, now_ms()));
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

async fn balances_and_log(db: &Path) -> (Vec<i64>, Vec<i64>) {
    let mut c = sqlite(db).await;
    let b: Vec<i64> = c
        .fetch_all("SELECT balance FROM accounts ORDER BY id")
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let log: Vec<i64> = c
        .fetch_all("SELECT k FROM log ORDER BY k")
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (b, log)
}

#[tokio::test]
async fn restore_to_an_instant_gives_a_state_of_that_time_within_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let mut script = String::from(
        "PRAGMA journal_mode=WAL; \
         CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL); \
         CREATE TABLE log (k INTEGER PRIMARY KEY, note TEXT NOT NULL);",
    );
    for id in 0..ACCOUNTS {
        script.push_str(&format!("INSERT INTO accounts VALUES ({id}, {START});"));
    }
    exec(&db, &script).await;
    let (location, mut repo) = new_repo(dir.path()).await;
    // A regular snapshot before the capture, and its retention anchor later.
    let before_capture = backup_all(&mut repo, &db).await;

    let interval = Duration::from_millis(300);
    let mut capture =
        SqliteCapture::new(url(&db), "bank", Selection::default(), Default::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let commits: Commits = Arc::default();
    let w = writer(&db, stop.clone(), commits.clone());
    let started = Instant::now();
    let mut longest_round = Duration::ZERO;
    let mut snapshots = 0;
    let mut mid_regular = None;
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let r = capture.round(&mut repo, &NoProgress).await.unwrap();
        longest_round = longest_round.max(t.elapsed());
        snapshots += r.snapshot.is_some() as u32;
        if mid_regular.is_none() && started.elapsed() > Duration::from_secs(1) {
            // A scheduled backup in the middle of the capture.
            mid_regular = Some(backup_all(&mut repo, &db).await);
        }
        tokio::time::sleep(interval).await;
    }
    let at = now_ms() - 1000;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let final_k = commits.lock().unwrap().last().unwrap().0;
    assert!(
        final_k > 50,
        "the writer committed only {final_k} transactions"
    );
    assert!(snapshots >= 5, "only {snapshots} rounds saw changes");

    // The mistake: the log is dropped. Rounds go on, then nothing changes.
    exec(&db, "DROP TABLE log;").await;
    let mut last_check = 0;
    for _ in 0..4 {
        let r = capture.round(&mut repo, &NoProgress).await.unwrap();
        last_check = r.covers_until_ms;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ranges = engine::capture::ranges(&repo).await.unwrap();
    let range = ranges.iter().find(|r| r.slot == "bank").expect("a range");
    assert!(
        range.from_ms <= at && range.to_ms >= last_check,
        "{range:?}"
    );

    // Restore one second before the end of the workload.
    let out = dir.path().join("at.db");
    let mut opts = restore_opts(&out);
    opts.at_ms = Some(at);
    let plan = engine::restore::plan(&repo, &opts).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let as_of = plan.as_of_ms.unwrap();
    let (balances, log) = balances_and_log(&out).await;
    let k = log.last().copied().unwrap_or(0);
    assert_eq!(log, (1..=k).collect::<Vec<_>>(), "the log has holes");
    assert_eq!(balances, expected(k), "a state that never existed");
    let rpo = interval + longest_round + Duration::from_millis(100);
    assert!(
        at - as_of <= rpo.as_millis() as i64,
        "restored the state of {} ms before the instant; the recovery point is {rpo:?}",
        at - as_of
    );
    let commits = commits.lock().unwrap().clone();
    // Every commit done well before the state's instant is in it, none begun after.
    let done_before = commits
        .iter()
        .filter(|(_, _, after)| *after + 50 < as_of)
        .map(|c| c.0)
        .max()
        .unwrap_or(0);
    assert!(
        k >= done_before,
        "commit {done_before} ended before {as_of} but is missing (restored up to {k})"
    );
    let began = commits.iter().find(|c| c.0 == k).map(|c| c.1).unwrap_or(0);
    assert!(began <= as_of, "commit {k} began after the state's instant");
    println!(
        "sqlite capture: restored {} ms before the instant (interval {interval:?}, longest round {longest_round:?}), {k} of {final_k} commits",
        at - as_of
    );

    // Restoring to an instant after the drop, while nothing changed: exact.
    let out2 = dir.path().join("after.db");
    let mut opts = restore_opts(&out2);
    opts.at_ms = Some(last_check);
    let plan = engine::restore::plan(&repo, &opts).await.unwrap();
    assert!(plan.unchanged_until_ms.unwrap() >= last_check);
    assert_eq!(
        plan.tables
            .iter()
            .map(|t| t.source_table.as_str())
            .collect::<Vec<_>>(),
        vec!["accounts"],
        "the log was dropped by then"
    );
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let mut c = sqlite(&out2).await;
    let b: Vec<i64> = c
        .fetch_all("SELECT balance FROM accounts ORDER BY id")
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(b, expected(final_k));

    // Beyond the last check: refused, naming how far it reaches.
    let mut opts = restore_opts(&dir.path().join("later.db"));
    opts.at_ms = Some(last_check + 60_000);
    let err = engine::restore::plan(&repo, &opts).await.unwrap_err();
    assert!(err.to_string().contains("reach up to"), "{err}");

    // Prune keeping one regular snapshot: rounds before it go, the range keeps no gap
    // and the instant (after it) restores the same state as before.
    let mid = mid_regular.unwrap();
    let mut repo = open_repo(&location).await;
    let report = prune(&mut repo, &keep_last(1)).await.unwrap();
    assert!(report.forgotten.contains(&before_capture.id.to_string()));
    let left = repo.snapshots().await.unwrap();
    assert!(left.iter().any(|(id, _)| id == &mid.id));
    assert!(
        left.iter()
            .filter(|(_, s)| s.capture.is_some())
            .all(|(_, s)| s.time_ms >= mid.snapshot.time_ms),
        "rounds older than the kept snapshot stay"
    );
    let ranges = engine::capture::ranges(&repo).await.unwrap();
    let after = ranges.iter().find(|r| r.slot == "bank").expect("a range");
    assert!(after.from_ms >= mid.snapshot.time_ms && after.to_ms == range.to_ms);
    if at >= after.from_ms {
        let out3 = dir.path().join("at-again.db");
        let mut opts = restore_opts(&out3);
        opts.at_ms = Some(at);
        restore(&repo, &opts).await.unwrap();
        assert_eq!(balances_and_log(&out3).await, (balances, log));
    }
}

/// A database replaced by another file under the same path (a restore by copying, a
/// deploy) is not taken for unchanged: the next round snapshots the new file.
#[tokio::test]
async fn a_replaced_database_file_is_captured_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    exec(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'old');",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    let mut capture =
        SqliteCapture::new(url(&db), "app", Selection::default(), Default::default()).unwrap();
    assert!(
        capture
            .round(&mut repo, &NoProgress)
            .await
            .unwrap()
            .snapshot
            .is_some()
    );
    assert!(
        capture
            .round(&mut repo, &NoProgress)
            .await
            .unwrap()
            .snapshot
            .is_none()
    );
    let other = dir.path().join("other.db");
    exec(
        &other,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'new');",
    )
    .await;
    std::fs::rename(&other, &db).unwrap();
    let r = capture.round(&mut repo, &NoProgress).await.unwrap();
    assert!(r.snapshot.is_some(), "the new file looked unchanged");
    let out = dir.path().join("out.db");
    let mut opts = restore_opts(&out);
    opts.at_ms = Some(r.covers_until_ms);
    restore(&repo, &opts).await.unwrap();
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut sqlite(&out).await)
        .await
        .unwrap();
    assert_eq!(v, "new");
}

/// A restore to an instant of `orders` alone into a new file: its foreign key to
/// `customers` (not restored, not in the file) is left out with a note, as for a
/// snapshot, instead of failing the restore.
#[tokio::test]
async fn a_table_restored_to_an_instant_without_its_parent_loses_that_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    exec(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id) NOT NULL);
         INSERT INTO customers VALUES (1); INSERT INTO orders VALUES (10, 1), (11, 1);",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    let mut capture =
        SqliteCapture::new(url(&db), "shop", Selection::default(), Default::default()).unwrap();
    let r = capture.round(&mut repo, &NoProgress).await.unwrap();
    let out = dir.path().join("orders.db");
    let mut opts = restore_opts(&out);
    opts.at_ms = Some(r.covers_until_ms);
    opts.selection.include = vec!["orders".into()];
    let done = restore(&repo, &opts).await.unwrap();
    assert_eq!(done[0].rows, 2);
    assert_eq!(
        done[0].notes,
        ["foreign key to customers not restored: customers does not exist in the destination"]
    );
    let fks: i64 = sqlx::query_scalar("SELECT count(*) FROM pragma_foreign_key_list('orders')")
        .fetch_one(&mut sqlite(&out).await)
        .await
        .unwrap();
    assert_eq!(fks, 0);
}
