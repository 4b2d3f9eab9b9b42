//! Backup history: snapshots, copies, verification.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRow {
    pub id: i64,
    pub target_id: i64,
    pub snapshot_id: String,
    pub policy_id: Option<i64>,
    pub source_id: Option<i64>,
    pub job_id: Option<i64>,
    pub time_ms: i64,
    pub table_count: i64,
    pub row_count: i64,
    pub bytes: i64,
    pub bytes_stored: i64,
    pub duration_ms: i64,
    pub details: String,
    pub verified_at: Option<i64>,
    pub verify_ok: Option<i64>,
    /// The history row of the snapshot this one is a copy of.
    pub copy_of: Option<i64>,
}

pub const SNAPSHOT_COLUMNS: &str = "id, target_id, snapshot_id, policy_id, source_id, job_id, time_ms, table_count, row_count, bytes, bytes_stored, duration_ms, details, verified_at, verify_ok, copy_of";

/// The targets a policy's snapshots are copied to, besides its own.
pub async fn copy_targets(db: &Db, policy: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT target_id FROM policy_copy_targets WHERE policy_id = $1 ORDER BY target_id",
    )
    .bind(policy)
    .fetch_all(&db.pool)
    .await?)
}

/// Every (policy, copy target) pair.
pub async fn all_copy_targets(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(
        sqlx::query_as("SELECT policy_id, target_id FROM policy_copy_targets")
            .fetch_all(&db.pool)
            .await?,
    )
}

pub async fn set_copy_targets(db: &Db, policy: i64, targets: &[i64]) -> Result<()> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM policy_copy_targets WHERE policy_id = $1")
        .bind(policy)
        .execute(&mut *tx)
        .await?;
    for t in targets {
        sqlx::query("INSERT INTO policy_copy_targets (policy_id, target_id) VALUES ($1, $2)")
            .bind(policy)
            .bind(t)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// (copied row, target) of the copies of history rows with ids in `lo..=hi`.
pub async fn copies_between(db: &Db, lo: i64, hi: i64) -> Result<Vec<(i64, i64)>> {
    Ok(
        sqlx::query_as("SELECT copy_of, target_id FROM snapshots WHERE copy_of BETWEEN $1 AND $2")
            .bind(lo)
            .bind(hi)
            .fetch_all(&db.pool)
            .await?,
    )
}

/// The history row of a snapshot in a target.
pub async fn snapshot_row_id(db: &Db, target_id: i64, snapshot_id: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM snapshots WHERE target_id = $1 AND snapshot_id = $2")
            .bind(target_id)
            .bind(snapshot_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Records a snapshot. With `running_on`, only while job `job_id` is still running on
/// that worker (one statement: a job another worker failed as abandoned meanwhile
/// records nothing); `None` then means it was not.
#[allow(clippy::too_many_arguments)]
pub async fn insert_snapshot(
    db: &Db,
    target_id: i64,
    snapshot_id: &str,
    policy_id: Option<i64>,
    source_id: Option<i64>,
    job_id: Option<i64>,
    s: &engine::model::Snapshot,
    details: &str,
    copy_of: Option<i64>,
    running_on: Option<&str>,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO snapshots (target_id, snapshot_id, policy_id, source_id, job_id, time_ms, table_count, row_count, bytes, bytes_stored, duration_ms, details, copy_of) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
         WHERE $14 = '' OR EXISTS (SELECT 1 FROM jobs WHERE id = $5 AND status = 'running' AND worker = $14) RETURNING id",
    )
    .bind(target_id)
    .bind(snapshot_id)
    .bind(policy_id)
    .bind(source_id)
    .bind(job_id)
    .bind(s.time_ms)
    .bind(s.tables.len() as i64)
    .bind(s.total_rows() as i64)
    .bind(s.total_bytes() as i64)
    .bind(s.bytes_stored as i64)
    .bind(s.duration_ms as i64)
    .bind(details)
    .bind(copy_of)
    .bind(running_on.unwrap_or_default())
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn snapshot(db: &Db, id: i64) -> Result<Option<SnapshotRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// Newest first, keyset-paged by (time, id); filters are 0 for "any" and only the
/// ones given become conditions (so the planner picks the matching index).
pub async fn snapshots_page(
    db: &Db,
    before: Option<(i64, i64)>,
    policy_id: i64,
    source_id: i64,
    granted_to: i64,
    limit: i64,
) -> Result<Vec<SnapshotRow>> {
    snapshots_page_sql(before, policy_id, source_id, granted_to, limit)
        .fetch_all(db)
        .await
}

/// [`snapshots_page`]'s query.
pub(super) fn snapshots_page_sql(
    before: Option<(i64, i64)>,
    policy_id: i64,
    source_id: i64,
    granted_to: i64,
    limit: i64,
) -> Sql {
    let (bt, bi) = before.unwrap_or((i64::MAX, i64::MAX));
    let mut sql = Sql::new(format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE"));
    // `time_ms <= t AND (time_ms < t OR id < i)`, not `time_ms < t OR (time_ms = t AND
    // id < i)`: the same rows, but a range the index can seek to (with the OR first,
    // a page deep in the history read every newer snapshot: 3 s at 1 M).
    sql.push_bind(" time_ms <= ", Bind::Int(bt), "")
        .push_bind(" AND (time_ms < ", Bind::Int(bt), "")
        .push_bind(" OR id < ", Bind::Int(bi), ")");
    if policy_id != 0 {
        sql.push_bind(" AND policy_id = ", Bind::Int(policy_id), "");
    }
    if source_id != 0 {
        sql.push_bind(" AND source_id = ", Bind::Int(source_id), "");
    }
    if granted_to != 0 {
        sql.push_bind(
            " AND source_id IN (SELECT source_id FROM source_grants WHERE user_id = ",
            Bind::Int(granted_to),
            ")",
        );
    }
    sql.push(" ORDER BY time_ms DESC, id DESC")
        .push_bind(" LIMIT ", Bind::Int(limit), "");
    sql
}

pub async fn set_verified(db: &Db, target_id: i64, snapshot_id: &str, ok: bool) -> Result<()> {
    sqlx::query("UPDATE snapshots SET verified_at = $3, verify_ok = $4 WHERE target_id = $1 AND snapshot_id = $2")
        .bind(target_id)
        .bind(snapshot_id)
        .bind(now_ms())
        .bind(i64::from(ok))
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn snapshot_count(db: &Db, target_id: i64) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE target_id = $1")
            .bind(target_id)
            .fetch_one(&db.pool)
            .await?,
    )
}

/// The last snapshot a policy made, for progress estimates.
pub async fn last_snapshot_of_policy(db: &Db, policy_id: i64) -> Result<Option<SnapshotRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE policy_id = $1 ORDER BY time_ms DESC, id DESC LIMIT 1"
    ))
    .bind(policy_id)
    .fetch_optional(&db.pool)
    .await?)
}
