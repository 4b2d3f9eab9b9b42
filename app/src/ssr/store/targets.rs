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
}

pub(super) const TARGET_COLUMNS: &str =
    "id, name, kind, location, sealed_password, created_at, sealed_credentials";

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
