//! Users.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserListRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

pub async fn users(db: &Db) -> Result<Vec<UserListRow>> {
    Ok(sqlx::query_as(
        "SELECT id, username, role, created_at, disabled_at FROM users WHERE removed_at IS NULL ORDER BY username",
    )
    .fetch_all(&db.pool)
    .await?)
}

pub async fn insert_user(db: &Db, username: &str, phc: &str, role: &str) -> Result<Option<i64>> {
    unique_or(
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(phc)
        .bind(role)
        .bind(now_ms())
        .fetch_one(&db.pool)
        .await,
    )
}

/// How disabling or enabling a user went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disabling {
    Done,
    NotFound,
    /// The user is the last active admin: nothing changed.
    LastAdmin,
}

/// Disables or enables a user. Never the last active admin (under the same lock as
/// role changes and removals on PostgreSQL, so two admins disabling each other at once
/// cannot leave none).
pub async fn set_disabled(db: &Db, id: i64, disabled: bool) -> Result<Disabling> {
    let mut tx = db.pool.begin().await?;
    if db.backend == crate::ssr::db::Backend::Postgres {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(726173001)) AS l")
            .execute(&mut *tx)
            .await?;
    }
    // A new epoch too: re-enabling an account must not bring its old cookies back.
    let r = sqlx::query(
        "UPDATE users SET disabled_at = $2, session_epoch = session_epoch + 1 WHERE id = $1 AND removed_at IS NULL \
         AND ($3 = 0 OR role <> 'admin' OR disabled_at IS NOT NULL OR EXISTS (SELECT 1 FROM users o \
         WHERE o.role = 'admin' AND o.disabled_at IS NULL AND o.id <> $1))",
    )
    .bind(id)
    .bind(disabled.then(now_ms))
    .bind(i64::from(disabled))
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 1 {
        tx.commit().await?;
        return Ok(Disabling::Done);
    }
    let live: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(if live.is_some() {
        Disabling::LastAdmin
    } else {
        Disabling::NotFound
    })
}

/// Stores a new password hash and ends the user's other sessions; returns the new
/// session epoch, for the caller's fresh cookie.
pub async fn set_password_hash(db: &Db, id: i64, phc: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1 WHERE id = $1 RETURNING session_epoch",
    )
    .bind(id)
    .bind(phc)
    .fetch_one(&db.pool)
    .await?)
}

/// How removing a user went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed; with how many of their waiting restore requests were cancelled and how
    /// many approvals they had given to waiting requests were withdrawn.
    Removed {
        requests: u64,
        approvals: u64,
    },
    NotFound,
    /// The user is the last active admin: nothing changed.
    LastAdmin,
}

/// Removes a user (see migration 0017): disabled, `phc` (of a random password nobody
/// knows: a login attempt costs what any other does) as the password hash,
/// sessions ended, tokens, grants and approver rights deleted, no longer listed; the
/// row stays so the history keeps its name. Never the last active admin (the same
/// lock as role changes on PostgreSQL).
///
/// Their waiting restore requests are cancelled (by `by`) and the approvals they gave
/// to waiting requests withdrawn, in the same transaction: a removed (perhaps
/// compromised) account must neither leave a destructive request for someone else to
/// start nor count as one of two approvers.
pub async fn remove_user(db: &Db, id: i64, phc: &str, by: i64) -> Result<Removal> {
    let mut tx = db.pool.begin().await?;
    if db.backend == crate::ssr::db::Backend::Postgres {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(726173001)) AS l")
            .execute(&mut *tx)
            .await?;
    }
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE users SET removed_at = $2, disabled_at = COALESCE(disabled_at, $2), \
         password_hash = $3, session_epoch = session_epoch + 1 \
         WHERE id = $1 AND removed_at IS NULL \
         AND (role <> 'admin' OR disabled_at IS NOT NULL OR EXISTS (SELECT 1 FROM users o \
         WHERE o.role = 'admin' AND o.disabled_at IS NULL AND o.id <> $1))",
    )
    .bind(id)
    .bind(now)
    .bind(phc)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        let live: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND removed_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        return Ok(if live.is_some() {
            Removal::LastAdmin
        } else {
            Removal::NotFound
        });
    }
    let requests = sqlx::query(
        "UPDATE restore_requests SET status = 'cancelled', decided_by = $2, decided_at = $3 \
         WHERE requested_by = $1 AND status = 'requested'",
    )
    .bind(id)
    .bind(by)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let approvals = sqlx::query(
        "DELETE FROM request_approvals WHERE user_id = $1 \
         AND request_id IN (SELECT id FROM restore_requests WHERE status = 'requested')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    for table in ["api_tokens", "source_grants", "source_approvers"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Removal::Removed {
        requests,
        approvals,
    })
}

/// How a role change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChanged {
    Changed,
    NotFound,
    /// The user is the last active admin and the new role is not admin: nothing changed.
    LastAdmin,
}

/// Gives a user a new role and ends their sessions (a new session epoch), so the new
/// role applies from their next request; their API tokens keep their own role, which
/// `session::from_api_token` accepts only while the user's role is at least as wide.
/// One statement: an account stops being admin only while another active admin remains.
/// SQLite runs one writer at a time; on PostgreSQL role changes take a transaction-scoped
/// advisory lock first, so two admins demoting each other at once cannot both see the
/// other still admin (READ COMMITTED would let them) and leave none.
pub async fn set_role(db: &Db, id: i64, role: &str) -> Result<RoleChanged> {
    let mut tx = db.pool.begin().await?;
    if db.backend == crate::ssr::db::Backend::Postgres {
        // Any constant: the key of "role changes" among this history's advisory locks.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(726173001)) AS l")
            .execute(&mut *tx)
            .await?;
    }
    let r = sqlx::query(
        "UPDATE users SET role = $2, session_epoch = session_epoch + 1 WHERE id = $1 AND removed_at IS NULL \
         AND ($2 = 'admin' OR role <> 'admin' OR EXISTS (SELECT 1 FROM users o \
         WHERE o.role = 'admin' AND o.disabled_at IS NULL AND o.id <> $1))",
    )
    .bind(id)
    .bind(role)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 1 {
        tx.commit().await?;
        return Ok(RoleChanged::Changed);
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(if exists.is_some() {
        RoleChanged::LastAdmin
    } else {
        RoleChanged::NotFound
    })
}
