//! Per-user API tokens (migrations/*/0010_api_tokens.sql): `Authorization: Bearer tsk_…`
//! on the server functions and the REST routes. A token acts as its user with the role
//! it was created with (the user's own or a narrower one); a disabled user's tokens stop
//! working at once, like their sessions. Only a keyed BLAKE3 hash is stored.

use super::db::{Db, now_ms};
use crate::auth::Role;
use anyhow::Result;
use engine::secret::Secret;

pub const PREFIX: &str = "tsk_";

pub fn hash(token: &str) -> String {
    engine::repo::crypto::hex(&blake3::derive_key(
        "tablesafe 2026-12 API token",
        token.as_bytes(),
    ))
}

/// A new random token (about 230 bits).
pub fn generate() -> Secret<String> {
    let (a, b) = (super::password::generate(), super::password::generate());
    Secret::new(format!("{PREFIX}{}{}", a.expose(), b.expose()))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at";

pub async fn insert(
    db: &Db,
    user_id: i64,
    name: &str,
    role: Role,
    token_hash: &str,
    expires_at: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, name, token_hash, role, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(token_hash)
    .bind(role.as_str())
    .bind(now_ms())
    .bind(expires_at)
    .fetch_one(&db.pool)
    .await?)
}

pub async fn of_user(db: &Db, user_id: i64) -> Result<Vec<TokenRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY id DESC"
    ))
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?)
}

/// Revokes one of `user_id`'s tokens; `false` if they have no such live token.
/// Revokes every token of `user_id` (sign out everywhere, a password reset: a token
/// minted with a stolen session must not outlive it). Returns how many.
pub async fn revoke_all(db: &Db, user_id: i64) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected())
}

pub async fn revoke(db: &Db, id: i64, user_id: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(user_id)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The live token with this value, if any (unrevoked, unexpired); notes its use (at
/// most once a minute, to spare the database a write per request).
pub async fn lookup(db: &Db, token: &str) -> Result<Option<TokenRow>> {
    let now = now_ms();
    let row: Option<TokenRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
    ))
    .bind(hash(token))
    .bind(now)
    .fetch_optional(&db.pool)
    .await?;
    if let Some(r) = &row
        && r.last_used_at.is_none_or(|t| now - t > 60_000)
    {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(r.id)
            .bind(now)
            .execute(&db.pool)
            .await?;
    }
    Ok(row)
}
