//! A SQLite backup does not hold the application's writers for the whole read (issue
//! 28): it copies the file with SQLite's online backup API at file speed and reads the
//! copy, so in rollback-journal mode a writer waits at most for that copy, and in WAL
//! mode not at all. The snapshot is still one instant of both tables. A restore's bulk
//! writes keep SQLite's checks: foreign keys hold at its commit, or nothing changes.

use crate::support::*;
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A backup of a ~24 MB database while a writer commits a pair of rows (one in each
/// table) every few milliseconds; returns (longest commit wait, commits during the
/// backup, backup duration) after checking the restore shows one instant.
async fn back_up_under_a_writer(journal_mode: &str) -> (Duration, u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app.db");
    exec(
        &src,
        &format!(
            "PRAGMA journal_mode = {journal_mode};
             CREATE TABLE a (id INTEGER PRIMARY KEY, pad BLOB);
             CREATE TABLE b (id INTEGER PRIMARY KEY, pad BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO a SELECT i, randomblob(2000) FROM n;
             INSERT INTO b SELECT id, randomblob(2000) FROM a;"
        ),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, src) = (stop.clone(), commits.clone(), src.clone());
        tokio::spawn(async move {
            // As an application would: wait for a lock rather than fail.
            let mut c = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&src)
                .busy_timeout(Duration::from_secs(60))
                .connect()
                .await
                .unwrap();
            let (mut next, mut longest) = (1_000_000i64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut tx = c.begin().await.unwrap();
                for table in ["a", "b"] {
                    sqlx::query(&format!("INSERT INTO {table} VALUES (?, randomblob(100))"))
                        .bind(next)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
                longest = longest.max(t.elapsed());
                next += 1;
                commits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            longest
        })
    };
    while commits.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, mut repo) = new_repo(dir.path()).await;
    let (before, t) = (commits.load(Ordering::Relaxed), Instant::now());
    let s = backup_all(&mut repo, &src).await;
    let (took, during) = (t.elapsed(), commits.load(Ordering::Relaxed) - before);
    stop.store(true, Ordering::Relaxed);
    let longest = writer.await.unwrap();

    let dest = dir.path().join("dest.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    let mut c = sqlite(&dest).await;
    let a: Vec<i64> = sqlx::query_scalar("SELECT id FROM a ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let b: Vec<i64> = sqlx::query_scalar("SELECT id FROM b ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert!(
        a == b,
        "a and b read at different instants: {} and {} rows",
        a.len(),
        b.len()
    );
    assert_eq!(a.len() as u64, s.snapshot.tables[0].rows);
    eprintln!(
        "{journal_mode}: longest commit wait {longest:?}, {during} commits during a backup of {took:?}"
    );
    (longest, during, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_journal_writer_waits_for_the_copy_not_for_the_whole_backup() {
    let (longest, during, took) = back_up_under_a_writer("DELETE").await;
    // Reading every row inside one read transaction (as before) kept the writer out for
    // the whole backup: no commit during it, and one wait as long as the backup.
    assert!(
        during >= 3,
        "the writer committed {during} times during a backup of {took:?}: it was held back"
    );
    assert!(
        longest < took / 2,
        "a commit waited {longest:?} during a backup of {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_writer_does_not_wait_for_a_backup() {
    let (longest, during, took) = back_up_under_a_writer("WAL").await;
    assert!(during >= 3, "{during} commits during a backup of {took:?}");
    assert!(
        longest < took / 2,
        "a commit waited {longest:?} during a backup of {took:?}"
    );
}

#[tokio::test]
async fn a_restore_that_breaks_a_foreign_key_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let schema = "CREATE TABLE customers (id INTEGER PRIMARY KEY);
                  CREATE TABLE orders (id INTEGER PRIMARY KEY, cid INTEGER REFERENCES customers (id));";
    let (src, dest) = (dir.path().join("src.db"), dir.path().join("dest.db"));
    exec(
        &src,
        &format!("{schema} INSERT INTO customers VALUES (1); INSERT INTO orders VALUES (10, 1);"),
    )
    .await;
    exec(
        &dest,
        &format!("{schema} INSERT INTO orders VALUES (5, NULL);"),
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;

    // Orders alone, appended: its customer is not in the destination.
    let mut o = restore_opts(&dest);
    o.selection.include = vec!["orders".into()];
    o.mode = engine::restore::Mode::Append;
    let err = restore(&repo, &o).await.unwrap_err();
    assert!(
        err.to_string().contains("FOREIGN KEY constraint failed"),
        "{err}"
    );
    let mut c = sqlite(&dest).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(ids, [5], "the failed restore changed nothing");
}
