//! A backup taken while writers run restores to a state that existed at one instant.

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_come_from_one_transaction_while_a_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("live.db");
    // Every write transaction adds one row to each of two tables, so in any consistent
    // state both hold the same ids. Large rows make the backup take a while.
    exec(
        &src,
        "PRAGMA journal_mode = WAL;
                CREATE TABLE a (id INTEGER PRIMARY KEY, pad BLOB);
                CREATE TABLE b (id INTEGER PRIMARY KEY, pad BLOB);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                INSERT INTO a SELECT i, randomblob(2000) FROM n;
                INSERT INTO b SELECT id, randomblob(2000) FROM a;",
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, writes, src) = (stop.clone(), writes.clone(), src.clone());
        tokio::spawn(async move {
            let mut c = sqlite(&src).await;
            let mut next = 1_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                if write_pair(&mut c, next).await.is_ok() {
                    next += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // Let the writer get going, then back up while it keeps writing.
    while writes.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (_, mut repo) = new_repo(dir.path()).await;
    let before = writes.load(Ordering::Relaxed);
    let s = backup_all(&mut repo, &src).await;
    let during = writes.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        during > 0,
        "the writer must have committed during the backup for this test to mean anything"
    );

    let dest = dir.path().join("dest.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    let mut c = sqlite(&dest).await;
    let ids = |t: &'static str| {
        sqlx::query_scalar::<_, i64>(if t == "a" {
            "SELECT id FROM a ORDER BY id"
        } else {
            "SELECT id FROM b ORDER BY id"
        })
    };
    let a = ids("a").fetch_all(&mut c).await.unwrap();
    let b = ids("b").fetch_all(&mut c).await.unwrap();
    assert!(
        a == b,
        "tables a and b were read at different instants: {} rows in a, {} in b",
        a.len(),
        b.len()
    );
    assert_eq!(a.len() as u64, s.snapshot.tables[0].rows);
}

async fn write_pair(c: &mut sqlx::SqliteConnection, id: i64) -> sqlx::Result<()> {
    use sqlx::Connection;
    let mut tx = c.begin().await?;
    sqlx::query("INSERT INTO a VALUES (?, randomblob(2000))")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO b VALUES (?, randomblob(2000))")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Two backups writing into one repository at the same time (the crate docs say they
/// only add objects): both snapshots are complete and verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backups_can_write_to_one_repository_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.db"), dir.path().join("two.db"));
    for (db, seed) in [(&one, 1), (&two, 2)] {
        exec(db, &format!("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                 INSERT INTO t SELECT i, CASE WHEN i % 2 = 0 THEN zeroblob(300) ELSE randomblob(300 + {seed}) END FROM n;")).await;
    }
    let (loc, _) = new_repo(dir.path()).await;
    let (mut a, mut b) = (open_repo(&loc).await, open_repo(&loc).await);
    let (sa, sb) = tokio::join!(backup_all(&mut a, &one), backup_all(&mut b, &two));
    let repo = open_repo(&loc).await;
    assert_eq!(repo.snapshots().await.unwrap().len(), 2);
    let report = engine::verify::verify(
        &repo,
        &engine::verify::VerifyOptions {
            snapshot: None,
            read_data: true,
        },
        &engine::progress::NoProgress,
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    for (summary, db) in [(sa, &one), (sb, &two)] {
        let dest = dir.path().join(format!("r{}.db", &summary.id[..8]));
        let mut o = restore_opts(&dest);
        o.snapshot = summary.id.clone();
        restore(&repo, &o).await.unwrap();
        assert_eq!(dump(db, &[]), dump(&dest, &[]));
    }
}
