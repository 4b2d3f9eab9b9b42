//! Restore requests and their approvals in the history database
//! (migrations/*/0009_restore_requests.sql). Who may do what is decided by the server
//! functions in `api/requests.rs`; these functions only make each change atomic,
//! so that two approvers clicking at once start one job, and an approval counts only
//! for the version of the request its approver saw.

use super::db::{Db, now_ms};
use super::store::{NewJob, insert_job};
use anyhow::Result;

/// A request as the pages need it. `state` is derived: a stored `requested` past its
/// expiry is `expired`; an approved one takes its job's state (`approved` while queued,
/// then `running`, `done` or `failed`), so it is right whichever worker ran the job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestRow {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub state: crate::model::RequestState,
    pub source_id: Option<i64>,
    pub dest_source_id: i64,
    pub snapshot: i64,
    pub params: String,
    pub version_hash: String,
    pub reason: String,
    pub title: String,
    pub approvals_required: i64,
    /// Approvals of the current version.
    pub approvals: i64,
    pub requested_by: i64,
    pub requester: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub decided_by: Option<i64>,
    pub decider: Option<String>,
    pub decided_at: Option<i64>,
    pub reject_reason: Option<String>,
    pub job_id: Option<i64>,
    pub job_result: Option<String>,
    pub job_error: Option<String>,
}

/// The request columns with the derived state; `$1` is now (unix ms).
const SELECT: &str = "SELECT * FROM (SELECT r.id, \
    CASE WHEN r.status = 'requested' AND r.expires_at < $1 THEN 'expired' \
         WHEN r.job_id IS NULL THEN r.status \
         WHEN j.status = 'queued' THEN 'approved' \
         WHEN j.status = 'running' THEN 'running' \
         WHEN j.status = 'succeeded' THEN 'done' \
         ELSE 'failed' END AS state, \
    r.source_id, r.dest_source_id, r.snapshot, r.params, r.version_hash, r.reason, r.title, \
    r.approvals_required, \
    (SELECT COUNT(*) FROM request_approvals a WHERE a.request_id = r.id AND a.version_hash = r.version_hash) AS approvals, \
    r.requested_by, u.username AS requester, r.created_at, r.updated_at, r.expires_at, \
    r.decided_by, d.username AS decider, r.decided_at, r.reject_reason, r.job_id, \
    j.result AS job_result, j.error AS job_error, r.status AS stored_status \
    FROM restore_requests r \
    LEFT JOIN users u ON u.id = r.requested_by \
    LEFT JOIN users d ON d.id = r.decided_by \
    LEFT JOIN jobs j ON j.id = r.job_id) q";

/// A version of a request: what an approval is bound to.
pub fn version_hash(params: &str, reason: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"tablesafe restore request v1\0");
    h.update(&(params.len() as u64).to_le_bytes());
    h.update(params.as_bytes());
    h.update(reason.as_bytes());
    h.finalize().to_hex().to_string()
}

pub struct NewRequest<'a> {
    pub source_id: Option<i64>,
    pub dest_source_id: i64,
    pub snapshot: i64,
    pub params: &'a str,
    pub reason: &'a str,
    pub title: &'a str,
    pub approvals_required: i64,
    pub requested_by: i64,
    pub ttl_minutes: i64,
}

pub async fn insert(db: &Db, r: NewRequest<'_>) -> Result<i64> {
    let now = now_ms();
    Ok(sqlx::query_scalar(
        "INSERT INTO restore_requests (status, source_id, dest_source_id, snapshot, params, version_hash, reason, title, \
         approvals_required, requested_by, created_at, updated_at, expires_at) \
         VALUES ('requested', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) RETURNING id",
    )
    .bind(r.source_id)
    .bind(r.dest_source_id)
    .bind(r.snapshot)
    .bind(r.params)
    .bind(version_hash(r.params, r.reason))
    .bind(r.reason)
    .bind(r.title)
    .bind(r.approvals_required)
    .bind(r.requested_by)
    .bind(now)
    .bind(now + r.ttl_minutes * 60_000)
    .fetch_one(&db.pool)
    .await?)
}

pub async fn get(db: &Db, id: i64) -> Result<Option<RequestRow>> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE id = $2"))
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&db.pool)
        .await?)
}

/// The request a job runs, if any.
pub async fn of_job(db: &Db, job_id: i64) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM restore_requests WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Who sees which requests in a list.
pub enum Visible {
    All,
    /// Those this user filed, and those on sources they may approve.
    For(i64),
}

/// A page of requests, newest first, with `id < before`, optionally in one state and/or
/// filed by one user.
pub async fn page(
    db: &Db,
    visible: Visible,
    before: Option<i64>,
    state: Option<&str>,
    requested_by: Option<i64>,
    limit: i64,
) -> Result<Vec<RequestRow>> {
    let mut sql = format!("{SELECT} WHERE id < $2");
    let mut n = 2;
    let mut arg = |sql: &mut String, cond: &str| {
        n += 1;
        sql.push_str(&cond.replace("$?", &format!("${n}")));
    };
    if let Some(state) = state {
        arg(&mut sql, " AND state = $?");
        // Only a stored 'requested' reads as waiting or expired: said as a condition
        // on the stored column, the index on it finds them (the derived state alone
        // made every list of waiting requests, and the badge on every page, read the
        // requests newest first until enough waited).
        if state == "requested" || state == "expired" {
            sql.push_str(" AND stored_status = 'requested'");
        }
    }
    if requested_by.is_some() {
        arg(&mut sql, " AND requested_by = $?");
    }
    if matches!(visible, Visible::For(_)) {
        arg(
            &mut sql,
            " AND (requested_by = $? OR source_id IN (SELECT source_id FROM source_approvers WHERE user_id = $?) \
              OR dest_source_id IN (SELECT source_id FROM source_approvers WHERE user_id = $?))",
        );
    }
    n += 1;
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${n}"));
    let mut q = sqlx::query_as(&sql)
        .bind(now_ms())
        .bind(before.unwrap_or(i64::MAX));
    if let Some(s) = state {
        q = q.bind(s);
    }
    if let Some(u) = requested_by {
        q = q.bind(u);
    }
    if let Visible::For(u) = visible {
        q = q.bind(u);
    }
    Ok(q.bind(limit).fetch_all(&db.pool).await?)
}

/// The users whose approvals count for the current version, oldest first.
pub async fn approvers(db: &Db, id: i64) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT u.username, a.at FROM request_approvals a JOIN users u ON u.id = a.user_id \
         JOIN restore_requests r ON r.id = a.request_id \
         WHERE a.request_id = $1 AND a.version_hash = r.version_hash ORDER BY a.at, u.username",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?)
}

/// [`approvers`] of the requests with ids in `ids`, in one query (a page of requests
/// asked them one request at a time: 50 to 200 queries per list call), by request id.
pub async fn approvers_of(
    db: &Db,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<String>>> {
    let mut out: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(out);
    };
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT a.request_id, u.username FROM request_approvals a JOIN users u ON u.id = a.user_id \
         JOIN restore_requests r ON r.id = a.request_id \
         WHERE a.request_id BETWEEN $1 AND $2 AND a.version_hash = r.version_hash \
         ORDER BY a.request_id, a.at, u.username",
    )
    .bind(lo)
    .bind(hi)
    .fetch_all(&db.pool)
    .await?;
    for (id, user) in rows {
        if ids.contains(&id) {
            out.entry(id).or_default().push(user);
        }
    }
    Ok(out)
}

/// Records `user`'s approval of version `hash`. `false` if the request is no longer
/// waiting in that version (changed, decided, expired) or the user approved it already.
pub async fn approve(db: &Db, id: i64, user: i64, hash: &str) -> Result<bool> {
    // One statement, so that two approvers at once need no read-then-write transaction
    // (which SQLite would refuse to upgrade).
    let r = sqlx::query(
        "INSERT INTO request_approvals (request_id, user_id, version_hash, at) \
         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM restore_requests \
           WHERE id = $1 AND status = 'requested' AND version_hash = $3 AND expires_at >= $4)",
    )
    .bind(id)
    .bind(user)
    .bind(hash)
    .bind(now_ms())
    .execute(&db.pool)
    .await;
    match r {
        Ok(r) => Ok(r.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Marks version `hash` approved and queues its job in one transaction; `None` if the
/// request is not waiting in that version any more (another approver started it, or it
/// changed): then no job is queued.
pub async fn start(
    db: &Db,
    id: i64,
    hash: &str,
    decided_by: i64,
    job: NewJob,
) -> Result<Option<i64>> {
    let mut tx = db.pool.begin().await?;
    let job_id = insert_job(&mut *tx, job).await?;
    let moved = sqlx::query(
        "UPDATE restore_requests SET status = 'approved', job_id = $3, decided_by = $4, decided_at = $5 \
         WHERE id = $1 AND status = 'requested' AND version_hash = $2",
    )
    .bind(id)
    .bind(hash)
    .bind(job_id)
    .bind(decided_by)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(job_id))
}

/// Rejects a waiting request; `false` if it was not waiting.
pub async fn reject(db: &Db, id: i64, by: i64, reason: &str) -> Result<bool> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE restore_requests SET status = 'rejected', decided_by = $2, decided_at = $3, reject_reason = $4 \
         WHERE id = $1 AND status = 'requested' AND expires_at >= $3",
    )
    .bind(id)
    .bind(by)
    .bind(now)
    .bind(reason)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The requester withdraws a waiting request; `false` if it was not waiting.
pub async fn cancel(db: &Db, id: i64, by: i64) -> Result<bool> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE restore_requests SET status = 'cancelled', decided_by = $2, decided_at = $3 \
         WHERE id = $1 AND status = 'requested' AND requested_by = $2",
    )
    .bind(id)
    .bind(by)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub struct Change<'a> {
    pub params: &'a str,
    pub reason: &'a str,
    pub title: &'a str,
    pub source_id: Option<i64>,
    pub dest_source_id: i64,
    pub snapshot: i64,
    pub approvals_required: i64,
    pub ttl_minutes: i64,
}

/// Changes a waiting (or expired) request: a new version, so every approval given so far
/// stops counting and it waits again for a full set. `false` if it was decided already.
pub async fn change(db: &Db, id: i64, by: i64, c: Change<'_>) -> Result<bool> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let r = sqlx::query(
        "UPDATE restore_requests SET params = $3, version_hash = $4, reason = $5, title = $6, source_id = $7, \
         dest_source_id = $8, snapshot = $9, approvals_required = $10, updated_at = $11, expires_at = $12 \
         WHERE id = $1 AND status = 'requested' AND requested_by = $2",
    )
    .bind(id)
    .bind(by)
    .bind(c.params)
    .bind(version_hash(c.params, c.reason))
    .bind(c.reason)
    .bind(c.title)
    .bind(c.source_id)
    .bind(c.dest_source_id)
    .bind(c.snapshot)
    .bind(c.approvals_required)
    .bind(now)
    .bind(now + c.ttl_minutes * 60_000)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM request_approvals WHERE request_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}
