//! Continuous capture leases and state.

use super::*;

/// The state of a continuous policy's capture (migrations/*/0012).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CaptureRow {
    pub policy_id: i64,
    pub worker: Option<String>,
    pub slot: Option<String>,
    pub covers_until_ms: Option<i64>,
    pub lag_bytes: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: Option<i64>,
}

pub async fn captures(db: &Db) -> Result<Vec<CaptureRow>> {
    Ok(sqlx::query_as(
        "SELECT policy_id, worker, slot, covers_until_ms, lag_bytes, last_error, updated_at FROM captures",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Turns continuous capture on (every `secs`) or off (None) for a policy.
pub async fn set_capture(db: &Db, policy: i64, secs: Option<i64>) -> Result<bool> {
    let mut tx = db.pool.begin().await?;
    let r = sqlx::query("UPDATE policies SET capture_secs = $2 WHERE id = $1")
        .bind(policy)
        .bind(secs)
        .execute(&mut *tx)
        .await?;
    if secs.is_none() {
        sqlx::query("DELETE FROM captures WHERE policy_id = $1")
            .bind(policy)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Enabled policies with continuous capture.
pub async fn continuous_policies(db: &Db) -> Result<Vec<PolicyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE enabled = 1 AND {NOT_HELD} AND capture_secs IS NOT NULL ORDER BY id"
    ))
    .fetch_all(&db.pool)
    .await?)
}

/// Takes (or renews) the lease on a policy's capture when its next round is due; whether
/// this worker holds it now.
pub async fn lease_capture(db: &Db, policy: i64, worker: &str, lease_ms: i64) -> Result<bool> {
    let now = now_ms();
    sqlx::query(
        // Not for a capture turned off meanwhile (its row was deleted with it).
        "INSERT INTO captures (policy_id, next_round_at) SELECT $1, 0 \
         WHERE EXISTS (SELECT 1 FROM policies WHERE id = $1 AND capture_secs IS NOT NULL) \
         ON CONFLICT (policy_id) DO NOTHING",
    )
    .bind(policy)
    .execute(&db.pool)
    .await?;
    let r = sqlx::query(
        "UPDATE captures SET worker = $2, lease_until = $3 WHERE policy_id = $1 AND next_round_at <= $4 \
         AND (lease_until IS NULL OR lease_until < $4 OR worker = $2)",
    )
    .bind(policy)
    .bind(worker)
    .bind(now + lease_ms)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Extends every capture lease `worker` holds to `lease_ms` (each policy's own, by its
/// interval) from now, while it still holds them; returns the policies whose lease it
/// held.
pub async fn renew_captures(db: &Db, worker: &str, leases: &[(i64, i64)]) -> Result<Vec<i64>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let (ids, until): (Vec<i64>, Vec<i64>) = leases.iter().map(|&(p, ms)| (p, now + ms)).unzip();
    let mut held = Vec::with_capacity(ids.len());
    for (id, until) in ids.iter().zip(&until) {
        let r = sqlx::query(
            "UPDATE captures SET lease_until = $3 WHERE policy_id = $1 AND worker = $2 AND lease_until >= $4",
        )
        .bind(id)
        .bind(worker)
        .bind(until)
        .bind(now)
        .execute(&db.pool)
        .await?;
        if r.rows_affected() == 1 {
            held.push(*id);
        }
    }
    Ok(held)
}

/// The last error recorded for a policy's capture (None: its last round worked or
/// none ran yet).
pub async fn capture_error(db: &Db, policy: i64) -> Result<Option<String>> {
    Ok(sqlx::query_scalar::<_, Option<String>>(
        "SELECT last_error FROM captures WHERE policy_id = $1",
    )
    .bind(policy)
    .fetch_optional(&db.pool)
    .await?
    .flatten())
}

/// Records a capture round's outcome and when the next is due.
#[allow(clippy::too_many_arguments)]
pub async fn capture_done(
    db: &Db,
    policy: i64,
    worker: &str,
    slot: Option<&str>,
    covers_until_ms: Option<i64>,
    lag_bytes: Option<i64>,
    error: Option<&str>,
    next_round_at: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE captures SET slot = COALESCE($3, slot), covers_until_ms = COALESCE($4, covers_until_ms), \
         lag_bytes = COALESCE($5, lag_bytes), last_error = $6, next_round_at = $7, updated_at = $8 \
         WHERE policy_id = $1 AND worker = $2",
    )
    .bind(policy)
    .bind(worker)
    .bind(slot)
    .bind(covers_until_ms)
    .bind(lag_bytes)
    .bind(error)
    .bind(next_round_at)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Whether a backup of the policy is queued or running.
pub async fn backup_pending(db: &Db, policy: i64) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE policy_id = $1 AND kind = 'backup' AND status IN ('queued', 'running')",
    )
    .bind(policy)
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}
