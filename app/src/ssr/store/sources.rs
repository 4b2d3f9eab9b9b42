//! Sources, their grants and approvers.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub engine: tablesafe_types::Engine,
    pub display_url: String,
    pub sealed_url: String,
    pub created_at: i64,
    /// Approvals a restore from or into this source needs: 0, 1 or 2 (two-person rule).
    pub approvals_required: i64,
    /// How long a restore request on this source waits for its approvals.
    pub request_ttl_minutes: i64,
    /// Since when it is paused (not backed up), if it is.
    pub paused_at: Option<i64>,
}

pub(super) const SOURCE_COLUMNS: &str = "id, name, engine, display_url, sealed_url, created_at, approvals_required, request_ttl_minutes, paused_at";

pub async fn sources(db: &Db, only_granted_to: Option<i64>) -> Result<Vec<SourceRow>> {
    Ok(match only_granted_to {
        None => {
            sqlx::query_as(&format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY name"))
                .fetch_all(&db.pool)
                .await?
        }
        Some(user) => {
            sqlx::query_as(&format!(
                "SELECT {SOURCE_COLUMNS} FROM sources WHERE id IN (SELECT source_id FROM source_grants WHERE user_id = $1 \
                 UNION SELECT source_id FROM source_approvers WHERE user_id = $1) ORDER BY name"
            ))
            .bind(user)
            .fetch_all(&db.pool)
            .await?
        }
    })
}

pub async fn source(db: &Db, id: i64) -> Result<Option<SourceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {SOURCE_COLUMNS} FROM sources WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// Whether a user who does not see everything may see a source: it was granted to them,
/// or they may approve restore requests on it.
pub async fn is_granted(db: &Db, source_id: i64, user_id: i64) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM source_grants WHERE source_id = $1 AND user_id = $2) \
              + (SELECT COUNT(*) FROM source_approvers WHERE source_id = $1 AND user_id = $2)",
    )
    .bind(source_id)
    .bind(user_id)
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}

/// `Ok(None)`: the name is taken.
pub async fn insert_source(
    db: &Db,
    name: &str,
    engine: &str,
    display_url: &str,
    sealed_url: &str,
    by: i64,
) -> Result<Option<i64>> {
    let r = sqlx::query_scalar::<_, i64>(
        "INSERT INTO sources (name, engine, display_url, sealed_url, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(name)
    .bind(engine)
    .bind(display_url)
    .bind(sealed_url)
    .bind(by)
    .bind(now_ms())
    .fetch_one(&db.pool)
    .await;
    unique_or(r)
}

/// `false` when there is no such user (or they were removed): nothing is given then.
pub async fn set_grant(db: &Db, source_id: i64, user_id: i64, granted: bool) -> Result<bool> {
    sqlx::query("DELETE FROM source_grants WHERE source_id = $1 AND user_id = $2")
        .bind(source_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?;
    if granted {
        let r = sqlx::query(
            "INSERT INTO source_grants (source_id, user_id) \
             SELECT $1, id FROM users WHERE id = $2 AND removed_at IS NULL",
        )
        .bind(source_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?;
        return Ok(r.rows_affected() == 1);
    }
    Ok(true)
}

/// Sets a source's approval rule; `false` if there is no such source.
pub async fn set_approval_rule(
    db: &Db,
    source_id: i64,
    approvals_required: i64,
    request_ttl_minutes: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE sources SET approvals_required = $2, request_ttl_minutes = $3 WHERE id = $1",
    )
    .bind(source_id)
    .bind(approvals_required)
    .bind(request_ttl_minutes)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Lets `user_id` approve restore requests on `source_id` (or no longer).
/// `false` when there is no such user (or they were removed): nothing is given then.
pub async fn set_approver(db: &Db, source_id: i64, user_id: i64, on: bool) -> Result<bool> {
    sqlx::query("DELETE FROM source_approvers WHERE source_id = $1 AND user_id = $2")
        .bind(source_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?;
    if on {
        let r = sqlx::query(
            "INSERT INTO source_approvers (source_id, user_id) \
             SELECT $1, id FROM users WHERE id = $2 AND removed_at IS NULL",
        )
        .bind(source_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?;
        return Ok(r.rows_affected() == 1);
    }
    Ok(true)
}

pub async fn is_approver(db: &Db, source_id: i64, user_id: i64) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM source_approvers WHERE source_id = $1 AND user_id = $2",
    )
    .bind(source_id)
    .bind(user_id)
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}

pub async fn approvers(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(
        sqlx::query_as("SELECT source_id, user_id FROM source_approvers")
            .fetch_all(&db.pool)
            .await?,
    )
}

pub async fn grants(db: &Db) -> Result<Vec<(i64, i64)>> {
    Ok(
        sqlx::query_as("SELECT source_id, user_id FROM source_grants")
            .fetch_all(&db.pool)
            .await?,
    )
}

/// Changes a source's name and connection. `Ok(None)`: the name is taken; `Ok(Some(false))`:
/// no such source.
pub async fn update_source(
    db: &Db,
    id: i64,
    name: &str,
    engine: &str,
    display_url: &str,
    sealed_url: &str,
) -> Result<Option<bool>> {
    let r = sqlx::query(
        "UPDATE sources SET name = $2, engine = $3, display_url = $4, sealed_url = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(engine)
    .bind(display_url)
    .bind(sealed_url)
    .execute(&db.pool)
    .await;
    match r {
        Ok(r) => Ok(Some(r.rows_affected() == 1)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names of the policies that back up a source.
pub async fn policies_of_source(db: &Db, source_id: i64) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM policies WHERE source_id = $1 ORDER BY name")
            .bind(source_id)
            .fetch_all(&db.pool)
            .await?,
    )
}

/// Restore requests still waiting for approval that read from or write into a source.
pub async fn open_requests_on_source(db: &Db, source_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM restore_requests WHERE status = 'requested' AND (source_id = $1 OR dest_source_id = $1)",
    )
    .bind(source_id)
    .fetch_one(&db.pool)
    .await?)
}

/// Deletes a source with its grants and approvers (explicitly: SQLite enforces the
/// cascades only with `foreign_keys` on); drills that used it as their scratch server
/// lose it. Its snapshots stay in the history. `false`: no such source.
pub async fn delete_source(db: &Db, source_id: i64) -> Result<bool> {
    let mut tx = db.pool.begin().await?;
    for sql in [
        "DELETE FROM source_grants WHERE source_id = $1",
        "DELETE FROM source_approvers WHERE source_id = $1",
        "UPDATE drill_plans SET scratch_source_id = NULL WHERE scratch_source_id = $1",
    ] {
        sqlx::query(sql).bind(source_id).execute(&mut *tx).await?;
    }
    let r = sqlx::query("DELETE FROM sources WHERE id = $1")
        .bind(source_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}
