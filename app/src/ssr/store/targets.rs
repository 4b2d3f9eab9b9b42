//! Targets (where repositories live).

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub location: String,
    pub sealed_password: String,
    pub created_at: i64,
    /// Sealed JSON of the target's credentials; empty: from the server's environment.
    pub sealed_credentials: String,
    /// Since when it is paused (receives no backups or copies), if it is.
    pub paused_at: Option<i64>,
    /// Its snapshots in the history (kept by triggers: migration 0019).
    pub snapshot_count: i64,
}

pub(super) const TARGET_COLUMNS: &str = "id, name, kind, location, sealed_password, created_at, sealed_credentials, paused_at, snapshot_count";

pub async fn targets(db: &Db) -> Result<Vec<TargetRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {TARGET_COLUMNS} FROM targets ORDER BY name"
    ))
    .fetch_all(&db.pool)
    .await?)
}

pub async fn target(db: &Db, id: i64) -> Result<Option<TargetRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn insert_target(
    db: &Db,
    name: &str,
    location: &str,
    sealed_password: &str,
    sealed_credentials: &str,
    by: i64,
) -> Result<Option<i64>> {
    unique_or(
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO targets (name, kind, location, sealed_password, created_by, created_at, sealed_credentials) VALUES ($1, $6, $2, $3, $4, $5, $7) RETURNING id",
        )
        .bind(name)
        .bind(location)
        .bind(sealed_password)
        .bind(by)
        .bind(now_ms())
        .bind(if location.starts_with("s3://") {
            "s3"
        } else if location.starts_with("sftp://") {
            "sftp"
        } else {
            "local"
        })
        .bind(sealed_credentials)
        .fetch_one(&db.pool)
        .await,
    )
}

/// Renames a target and, with `sealed_credentials`, replaces its credentials.
/// `Ok(None)`: the name is taken; `Ok(Some(false))`: no such target.
pub async fn update_target(
    db: &Db,
    id: i64,
    name: &str,
    sealed_credentials: Option<&str>,
) -> Result<Option<bool>> {
    let r = match sealed_credentials {
        Some(creds) => {
            sqlx::query("UPDATE targets SET name = $2, sealed_credentials = $3 WHERE id = $1")
                .bind(id)
                .bind(name)
                .bind(creds)
                .execute(&db.pool)
                .await
        }
        None => {
            sqlx::query("UPDATE targets SET name = $2 WHERE id = $1")
                .bind(id)
                .bind(name)
                .execute(&db.pool)
                .await
        }
    };
    match r {
        Ok(r) => Ok(Some(r.rows_affected() == 1)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The policies that write into a target: as their own target or as a copy target,
/// with the source each backs up.
pub async fn policies_using_target(db: &Db, target_id: i64) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT name, source_id FROM policies WHERE target_id = $1 \
         UNION SELECT p.name, p.source_id FROM policy_copy_targets c JOIN policies p ON p.id = c.policy_id WHERE c.target_id = $1 \
         ORDER BY 1",
    )
    .bind(target_id)
    .fetch_all(&db.pool)
    .await?)
}

/// What still needs a target: jobs queued or running on it, and restore requests
/// waiting for approval on one of its snapshots.
pub async fn target_busy(db: &Db, target_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE target_id = $1 AND status IN ('queued', 'running')) \
              + (SELECT COUNT(*) FROM restore_requests r JOIN snapshots s ON s.id = r.snapshot \
                 WHERE s.target_id = $1 AND r.status = 'requested')",
    )
    .bind(target_id)
    .fetch_one(&db.pool)
    .await?)
}

/// Deletes a target row and the history's list of the snapshots in it (they cannot be
/// reached without the target; copies of them elsewhere stay, no longer linked to
/// them). The repository's files are not touched. Returns the snapshots unlisted, or
/// `None` if there is no such target.
pub async fn delete_target(db: &Db, target_id: i64) -> Result<Option<i64>> {
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "UPDATE snapshots SET copy_of = NULL WHERE copy_of IN (SELECT id FROM snapshots WHERE target_id = $1)",
    )
    .bind(target_id)
    .execute(&mut *tx)
    .await?;
    let unlisted = sqlx::query("DELETE FROM snapshots WHERE target_id = $1")
        .bind(target_id)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
    let r = sqlx::query("DELETE FROM targets WHERE id = $1")
        .bind(target_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() != 1 {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(unlisted))
}
