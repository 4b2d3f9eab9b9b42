//! The console's list calls stay index lookups however long the history grows
//! (issue 28, S8: 1 M jobs, 1 M snapshots, every list call within 50 ms). Timing is for
//! `bench/console_bench.py`; these tests pin what makes it fast where that is stable:
//! SQLite's query plans (no pass over `jobs` or `snapshots`, no sort of a whole
//! policy's snapshots), and the snapshot counts the targets page reads instead of
//! counting, on both history engines. They fail if a query or an index goes back to the
//! slow form.

use super::*;
use engine::secret::Secret;

async fn sqlite_history(dir: &std::path::Path) -> Db {
    sqlx::any::install_default_drivers();
    let url = super::super::db::sqlite_url(dir).unwrap();
    Db::open(&Secret::new(url)).await.unwrap()
}

/// SQLite's plan for `sql` (with `binds`), one line per step.
async fn plan(db: &Db, sql: &str, binds: &[i64]) -> String {
    let text = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&text);
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(&db.pool).await.unwrap();
    rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
}

async fn exec(db: &Db, sql: &str) {
    sqlx::query(sql).execute(&db.pool).await.unwrap();
}

/// A source, two targets, two policies, and jobs: policy 1 succeeded at 100 and 300
/// and then failed at 400; policy 2 never succeeded; source 1's last two backups
/// finished in the same millisecond (a success, then a later failure).
async fn fill(db: &Db) {
    exec(db, "INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('shop', 'sqlite', '/x.db', 'x', 1)").await;
    exec(db, "INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('ledger', 'sqlite', '/y.db', 'x', 1)").await;
    for t in ["disk", "offsite"] {
        exec(db, &format!("INSERT INTO targets (name, kind, location, sealed_password, created_at) VALUES ('{t}', 'local', '/r/{t}', 'x', 1)")).await;
    }
    for p in ["nightly", "hourly"] {
        exec(db, &format!("INSERT INTO policies (name, source_id, target_id, selection, created_at) VALUES ('{p}', 1, 1, '{{}}', 1)")).await;
    }
    for (policy, source, status, finished) in [
        (1, 1, "succeeded", 100),
        (1, 1, "succeeded", 300),
        (1, 1, "failed", 400),
        (2, 2, "failed", 200),
        (2, 2, "cancelled", 500),
        (1, 1, "succeeded", 600),
        (1, 1, "failed", 600),
    ] {
        exec(db, &format!(
            "INSERT INTO jobs (kind, status, policy_id, source_id, target_id, params, title, created_at, finished_at) \
             VALUES ('backup', '{status}', {policy}, {source}, 1, '{{}}', 'backup', {finished}, {finished})"
        )).await;
    }
}

#[tokio::test]
async fn policies_list_reads_each_policys_last_success_from_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_history(dir.path()).await;
    fill(&db).await;
    let plan = plan(&db, LAST_SUCCESSES, &[]).await;
    assert!(
        plan.contains("USING COVERING INDEX jobs_policy_last"),
        "{plan}"
    );
    assert!(!plan.contains("SCAN j"), "a pass over every job: {plan}");
    // The same answers as before: the newest success per policy, none for policy 2.
    let last = last_successes(&db).await.unwrap();
    assert_eq!(last, [(1, 600)].into_iter().collect());
}

#[tokio::test]
async fn the_dashboard_asks_about_every_source_in_one_indexed_query() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_history(dir.path()).await;
    fill(&db).await;
    let plan = plan(&db, SOURCE_HEALTH, &[0]).await;
    assert!(plan.contains("INDEX jobs_source_last"), "{plan}");
    assert!(plan.contains("INDEX jobs_source_failed"), "{plan}");
    assert!(!plan.contains("SCAN j"), "a pass over every job: {plan}");
    let health = source_health(&db, 150).await.unwrap();
    // Source 1: last success at 600; its latest finished backup (600, the later job)
    // failed; one failure after 150 besides it.
    let shop = &health[&1];
    assert_eq!(shop.last_success, Some(600));
    assert!(shop.last_backup_failed);
    assert_eq!(shop.failures, 2);
    // Source 2: never succeeded, its latest finished backup failed (cancelled ones do
    // not count).
    let ledger = &health[&2];
    assert_eq!(
        (ledger.last_success, ledger.last_backup_failed),
        (None, true)
    );
    assert_eq!(ledger.failures, 1);
}

#[tokio::test]
async fn snapshot_pages_are_read_in_index_order_however_deep() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_history(dir.path()).await;
    fill(&db).await;
    for (filter, index) in [
        ((0, 0), "snapshots_time"),
        ((1, 0), "snapshots_policy"),
        ((0, 1), "snapshots_source"),
    ] {
        let sql = snapshots_page_sql(Some((5_000, 77)), filter.0, filter.1, 0, 50);
        let binds: Vec<i64> = sql
            .binds
            .iter()
            .map(|b| match b {
                Bind::Int(i) => *i,
                Bind::Text(_) => unreachable!(),
            })
            .collect();
        let plan = plan(&db, &sql.text, &binds).await;
        assert!(
            plan.contains(&format!("USING INDEX {index} (")) && plan.contains("time_ms<"),
            "not a seek into {index}: {plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "a sort of every match: {plan}"
        );
    }
}

/// Snapshots added, forgotten (pruned) and removed with their target keep each
/// target's count right, through the statements the console runs.
async fn counts_follow_snapshots(db: &Db) {
    let src = insert_source(db, "shop", "sqlite", "/x.db", "sealed", 1)
        .await
        .unwrap()
        .unwrap();
    let disk = insert_target(db, "disk", "/r/disk", "sealed", "", 1)
        .await
        .unwrap()
        .unwrap();
    let offsite = insert_target(db, "offsite", "/r/offsite", "sealed", "", 1)
        .await
        .unwrap()
        .unwrap();
    let count = |id: i64| async move { target(db, id).await.unwrap().unwrap().snapshot_count };
    assert_eq!((count(disk).await, count(offsite).await), (0, 0));
    for (i, t) in [disk, disk, disk, offsite].into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO snapshots (target_id, snapshot_id, source_id, time_ms, table_count, row_count, bytes, bytes_stored, duration_ms, details) \
             VALUES ($1, $2, $3, $4, 1, 1, 1, 1, 1, '[]')",
        )
        .bind(t)
        .bind(format!("{i:064x}"))
        .bind(src)
        .bind(i as i64)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    assert_eq!((count(disk).await, count(offsite).await), (3, 1));
    // Marking snapshots verified changes no count.
    set_verified(db, disk, &format!("{:064x}", 0), true)
        .await
        .unwrap();
    let pruned = [format!("{:064x}", 0), format!("{:064x}", 1)];
    assert_eq!(forget_snapshots(db, disk, &pruned).await.unwrap(), 2);
    assert_eq!((count(disk).await, count(offsite).await), (1, 1));
    exec(
        db,
        &format!("DELETE FROM snapshots WHERE target_id = {offsite}"),
    )
    .await;
    assert_eq!((count(disk).await, count(offsite).await), (1, 0));
}

#[tokio::test]
async fn target_snapshot_counts_on_a_sqlite_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_history(dir.path()).await;
    counts_follow_snapshots(&db).await;
}

#[tokio::test]
async fn target_snapshot_counts_on_a_postgres_history() {
    sqlx::any::install_default_drivers();
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    let db = Db::open(&Secret::new(url)).await.unwrap();
    counts_follow_snapshots(&db).await;
}
