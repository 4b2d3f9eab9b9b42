//! The console's tables in the history database (schema: migrations/*/0002_console.sql).
//! Plain functions over [`Db`]; authorization and auditing happen in the server
//! functions that call them.

use super::db::{Db, now_ms};
use anyhow::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub id: i64,
    pub name: String,
    pub engine: String,
    pub display_url: String,
    pub sealed_url: String,
    pub created_at: i64,
    /// Approvals a restore from or into this source needs: 0, 1 or 2 (two-person rule).
    pub approvals_required: i64,
    /// How long a restore request on this source waits for its approvals.
    pub request_ttl_minutes: i64,
}

const SOURCE_COLUMNS: &str = "id, name, engine, display_url, sealed_url, created_at, approvals_required, request_ttl_minutes";

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

fn unique_or(r: Result<i64, sqlx::Error>) -> Result<Option<i64>> {
    match r {
        Ok(id) => Ok(Some(id)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn set_grant(db: &Db, source_id: i64, user_id: i64, granted: bool) -> Result<()> {
    sqlx::query("DELETE FROM source_grants WHERE source_id = $1 AND user_id = $2")
        .bind(source_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?;
    if granted {
        sqlx::query("INSERT INTO source_grants (source_id, user_id) VALUES ($1, $2)")
            .bind(source_id)
            .bind(user_id)
            .execute(&db.pool)
            .await?;
    }
    Ok(())
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
pub async fn set_approver(db: &Db, source_id: i64, user_id: i64, on: bool) -> Result<()> {
    sqlx::query("DELETE FROM source_approvers WHERE source_id = $1 AND user_id = $2")
        .bind(source_id)
        .bind(user_id)
        .execute(&db.pool)
        .await?;
    if on {
        sqlx::query("INSERT INTO source_approvers (source_id, user_id) VALUES ($1, $2)")
            .bind(source_id)
            .bind(user_id)
            .execute(&db.pool)
            .await?;
    }
    Ok(())
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

const TARGET_COLUMNS: &str =
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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub id: i64,
    pub name: String,
    pub source_id: i64,
    pub target_id: i64,
    pub selection: String,
    pub schedule: String,
    pub timezone: String,
    pub enabled: i64,
    pub created_at: i64,
    pub next_run_at: Option<i64>,
    pub trigger_hash: Option<String>,
    /// JSON of `engine::retention::KeepRules`; empty: keep everything.
    pub retention: String,
    /// Minutes without a successful backup before it is late; None: from the schedule;
    /// 0: never.
    pub rpo_minutes: Option<i64>,
    /// When the current lateness was announced (until the next success).
    pub late_alerted_at: Option<i64>,
    /// Continuous capture every this many seconds (PostgreSQL); None: snapshots only.
    pub capture_secs: Option<i64>,
}

const POLICY_COLUMNS: &str = "id, name, source_id, target_id, selection, schedule, timezone, enabled, created_at, next_run_at, trigger_hash, retention, rpo_minutes, late_alerted_at, capture_secs";

/// How long policy `p` may go without a successful backup before it is late (RPO):
/// its own setting, else one and a half times its schedule's interval (at least 15
/// minutes); None when it is never late (set to 0, or no schedule and no setting).
pub fn late_after_ms(p: &PolicyRow, now: i64) -> Option<i64> {
    match p.rpo_minutes {
        Some(m) if m > 0 => Some(m * 60_000),
        Some(_) => None,
        None => {
            let s = super::schedule::parse(&p.schedule, &p.timezone).ok()??;
            let a = s.next_after(now)?;
            let b = s.next_after(a)?;
            Some(((b - a) * 3 / 2).max(15 * 60_000))
        }
    }
}

/// Enabled policies that can be late (a schedule or an RPO of their own).
pub async fn watched_policies(db: &Db) -> Result<Vec<PolicyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE enabled = 1 AND \
         (rpo_minutes > 0 OR (rpo_minutes IS NULL AND schedule <> ''))"
    ))
    .fetch_all(&db.pool)
    .await?)
}

/// Per policy id: when its last successful backup finished.
pub async fn last_successes(db: &Db) -> Result<std::collections::HashMap<i64, i64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT policy_id, MAX(finished_at) FROM jobs WHERE kind = 'backup' AND status = 'succeeded' \
         AND policy_id IS NOT NULL AND finished_at IS NOT NULL GROUP BY policy_id",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Records that the policy's lateness since `since` (its last success, or its creation)
/// is announced; false when it already was (by this or another worker).
pub async fn mark_late(db: &Db, policy: i64, since: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE policies SET late_alerted_at = $3 WHERE id = $1 AND (late_alerted_at IS NULL OR late_alerted_at < $2)",
    )
    .bind(policy)
    .bind(since)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_rpo(db: &Db, policy: i64, minutes: Option<i64>) -> Result<bool> {
    let r = sqlx::query("UPDATE policies SET rpo_minutes = $2 WHERE id = $1")
        .bind(policy)
        .bind(minutes)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_retention(db: &Db, policy: i64, retention: &str) -> Result<bool> {
    let r = sqlx::query("UPDATE policies SET retention = $2 WHERE id = $1")
        .bind(policy)
        .bind(retention)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Removes pruned snapshots from the history; returns how many rows went.
/// All or none: one transaction.
pub async fn forget_snapshots(db: &Db, target_id: i64, ids: &[String]) -> Result<u64> {
    let mut tx = db.pool.begin().await?;
    let mut n = 0;
    for id in ids {
        n += sqlx::query("DELETE FROM snapshots WHERE target_id = $1 AND snapshot_id = $2")
            .bind(target_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

/// What is stored of a trigger token.
pub fn trigger_hash(token: &str) -> String {
    engine::repo::crypto::hex(&blake3::derive_key(
        "tablesafe 2026-11 policy trigger token",
        token.as_bytes(),
    ))
}

pub async fn set_trigger_hash(db: &Db, policy: i64, hash: Option<&str>) -> Result<bool> {
    let r = sqlx::query("UPDATE policies SET trigger_hash = $2 WHERE id = $1")
        .bind(policy)
        .bind(hash)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether a backup of the policy is queued or running (through `ex`: the pool, or the
/// scheduler's transaction).
pub async fn policy_busy<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    policy: i64,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE policy_id = $1 AND kind = 'backup' AND status IN ('queued', 'running')",
    )
    .bind(policy)
    .fetch_one(ex)
    .await?;
    Ok(n > 0)
}

pub async fn policies(db: &Db) -> Result<Vec<PolicyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies ORDER BY name"
    ))
    .fetch_all(&db.pool)
    .await?)
}

pub async fn policy(db: &Db, id: i64) -> Result<Option<PolicyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_policy(
    db: &Db,
    name: &str,
    source_id: i64,
    target_id: i64,
    selection: &str,
    schedule: &str,
    timezone: &str,
    enabled: bool,
    next_run_at: Option<i64>,
    by: i64,
) -> Result<Option<i64>> {
    unique_or(
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO policies (name, source_id, target_id, selection, schedule, timezone, enabled, created_by, created_at, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(name)
        .bind(source_id)
        .bind(target_id)
        .bind(selection)
        .bind(schedule)
        .bind(timezone)
        .bind(i64::from(enabled))
        .bind(by)
        .bind(now_ms())
        .bind(next_run_at)
        .fetch_one(&db.pool)
        .await,
    )
}

/// Policies whose next run is due.
pub async fn due_policies(db: &Db, now: i64) -> Result<Vec<PolicyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE enabled = 1 AND next_run_at <= $1 ORDER BY next_run_at"
    ))
    .bind(now)
    .fetch_all(&db.pool)
    .await?)
}

/// Takes a due run of `policy` for this worker: moves its next run from `due` to `next`
/// and queues the backup, in one transaction. `false` when another worker took it
/// first, or when a backup of the policy is still queued or running (the run then
/// stays due and starts when that one ends: never two at once).
pub async fn take_scheduled_run(
    db: &Db,
    policy: &PolicyRow,
    due: i64,
    next: Option<i64>,
    job: NewJob,
) -> Result<bool> {
    let mut tx = db.pool.begin().await?;
    if policy_busy(&mut *tx, policy.id).await? {
        return Ok(false);
    }
    let moved =
        sqlx::query("UPDATE policies SET next_run_at = $3 WHERE id = $1 AND next_run_at = $2")
            .bind(policy.id)
            .bind(due)
            .bind(next)
            .execute(&mut *tx)
            .await?;
    if moved.rows_affected() != 1 {
        return Ok(false);
    }
    insert_job(&mut *tx, job).await?;
    tx.commit().await?;
    Ok(true)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub policy_id: Option<i64>,
    pub source_id: Option<i64>,
    pub target_id: Option<i64>,
    pub params: String,
    pub title: String,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub worker: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub cancel_requested: i64,
    pub rows_done: i64,
    pub bytes_done: i64,
    pub rows_total: Option<i64>,
    pub bytes_total: Option<i64>,
    pub current_table: Option<String>,
    pub error: Option<String>,
    pub result: Option<String>,
    pub snapshot_id: Option<String>,
    pub retry_of: Option<i64>,
}

pub const JOB_COLUMNS: &str = "id, kind, status, policy_id, source_id, target_id, params, title, created_by, created_at, started_at, finished_at, worker, heartbeat_at, cancel_requested, rows_done, bytes_done, rows_total, bytes_total, current_table, error, result, snapshot_id, retry_of";

/// What a new job is (its kind is its parameters').
pub struct NewJob {
    pub policy_id: Option<i64>,
    pub source_id: Option<i64>,
    pub target_id: Option<i64>,
    pub params: crate::api::jobs::JobParams,
    pub title: String,
    pub created_by: Option<i64>,
    pub rows_total: Option<i64>,
    pub bytes_total: Option<i64>,
    pub retry_of: Option<i64>,
}

pub async fn enqueue(db: &Db, j: NewJob) -> Result<i64> {
    insert_job(&db.pool, j).await
}

/// Queues `j` through `ex` (the pool, or a transaction that does more).
pub(crate) async fn insert_job<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    j: NewJob,
) -> Result<i64> {
    let params = serde_json::to_string(&j.params)?;
    Ok(sqlx::query_scalar(
        "INSERT INTO jobs (kind, status, policy_id, source_id, target_id, params, title, created_by, created_at, rows_total, bytes_total, retry_of) \
         VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(j.params.kind().as_str())
    .bind(j.policy_id)
    .bind(j.source_id)
    .bind(j.target_id)
    .bind(params)
    .bind(j.title)
    .bind(j.created_by)
    .bind(now_ms())
    .bind(j.rows_total)
    .bind(j.bytes_total)
    .bind(j.retry_of)
    .fetch_one(ex)
    .await?)
}

pub async fn job(db: &Db, id: i64) -> Result<Option<JobRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// A page of jobs, newest first: those with `id < before` (keyset paging stays fast
/// however long the history), optionally of one status / created by one user. Only the
/// filters given become conditions, so the planner can use the matching index.
pub async fn jobs_page(
    db: &Db,
    before: Option<i64>,
    status: Option<&str>,
    created_by: Option<i64>,
    limit: i64,
) -> Result<Vec<JobRow>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id < $1");
    let mut n = 1;
    if status.is_some() {
        n += 1;
        sql.push_str(&format!(" AND status = ${n}"));
    }
    if created_by.is_some() {
        n += 1;
        sql.push_str(&format!(" AND created_by = ${n}"));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
    let mut q = sqlx::query_as(&sql).bind(before.unwrap_or(i64::MAX));
    if let Some(s) = status {
        q = q.bind(s);
    }
    if let Some(u) = created_by {
        q = q.bind(u);
    }
    Ok(q.bind(limit).fetch_all(&db.pool).await?)
}

pub async fn job_logs(db: &Db, job_id: i64, after: i64) -> Result<Vec<(i64, i64, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, at, level, message FROM job_logs WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT 1000",
    )
    .bind(job_id)
    .bind(after)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn log(db: &Db, job_id: i64, level: &str, message: &str) -> Result<()> {
    sqlx::query("INSERT INTO job_logs (job_id, at, level, message) VALUES ($1, $2, $3, $4)")
        .bind(job_id)
        .bind(now_ms())
        .bind(level)
        .bind(message)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Asks a job to stop: a queued one is cancelled at once; a running one is flagged and
/// its worker stops at the next chunk. `false` if the job had already finished.
pub async fn request_cancel(db: &Db, id: i64) -> Result<bool> {
    let now = now_ms();
    let queued = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = $2, error = 'cancelled before it started' WHERE id = $1 AND status = 'queued'",
    )
    .bind(id)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if queued.rows_affected() == 1 {
        return Ok(true);
    }
    let running =
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(&db.pool)
            .await?;
    Ok(running.rows_affected() == 1)
}

/// Claims the oldest queued job for `worker`. Safe with several workers: the status
/// check in the UPDATE lets exactly one of them win a job.
pub async fn claim(db: &Db, worker: &str) -> Result<Option<JobRow>> {
    loop {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1")
                .fetch_optional(&db.pool)
                .await?;
        let Some(id) = next else { return Ok(None) };
        let now = now_ms();
        let won = sqlx::query(
            "UPDATE jobs SET status = 'running', worker = $2, started_at = $3, heartbeat_at = $3 WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(worker)
        .bind(now)
        .execute(&db.pool)
        .await?;
        if won.rows_affected() == 1 {
            return job(db, id).await;
        }
    }
}

/// Progress of a running job; returns whether cancellation was requested.
pub async fn heartbeat(
    db: &Db,
    id: i64,
    rows: i64,
    bytes: i64,
    table: Option<&str>,
) -> Result<bool> {
    let flag: i64 = sqlx::query_scalar(
        "UPDATE jobs SET rows_done = $2, bytes_done = $3, current_table = $4, heartbeat_at = $5 WHERE id = $1 RETURNING cancel_requested",
    )
    .bind(id)
    .bind(rows)
    .bind(bytes)
    .bind(table)
    .bind(now_ms())
    .fetch_one(&db.pool)
    .await?;
    Ok(flag != 0)
}

/// Records the end of a job that `worker` is running. Returns false, changing nothing,
/// when the job is no longer running on that worker (another worker failed it as
/// abandoned meanwhile): one outcome per job, never overwritten.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    db: &Db,
    id: i64,
    worker: &str,
    status: crate::api::jobs::JobStatus,
    error: Option<&str>,
    result: Option<&str>,
    snapshot_id: Option<&str>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET status = $2, error = $3, result = $4, snapshot_id = $5, finished_at = $6 \
         WHERE id = $1 AND status = 'running' AND worker = $7",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .bind(result)
    .bind(snapshot_id)
    .bind(now_ms())
    .bind(worker)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Jobs left `running` by a worker that is gone: this worker's previous life, or any
/// worker silent for `stale_ms`. They fail with a reason and can be retried. Returns
/// the ids of the jobs failed by this call (each job is failed by one caller only).
pub async fn fail_abandoned(db: &Db, worker: &str, stale_ms: i64) -> Result<Vec<i64>> {
    let now = now_ms();
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET status = 'failed', finished_at = $1, \
         error = 'the server stopped while this job was running; retry it' \
         WHERE status = 'running' AND (worker = $2 OR heartbeat_at < $3) RETURNING id",
    )
    .bind(now)
    .bind(worker)
    .bind(now - stale_ms)
    .fetch_all(&db.pool)
    .await?)
}

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
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO snapshots (target_id, snapshot_id, policy_id, source_id, job_id, time_ms, table_count, row_count, bytes, bytes_stored, duration_ms, details, copy_of) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
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
    .fetch_one(&db.pool)
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
    let (bt, bi) = before.unwrap_or((i64::MAX, i64::MAX));
    let mut sql = format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE (time_ms < $1 OR (time_ms = $1 AND id < $2))"
    );
    let mut binds = Vec::new();
    for (value, cond) in [
        (policy_id, "policy_id = "),
        (source_id, "source_id = "),
        (
            granted_to,
            "source_id IN (SELECT source_id FROM source_grants WHERE user_id = ",
        ),
    ] {
        if value != 0 {
            binds.push(value);
            let close = if cond.ends_with("= ") && cond.contains("SELECT") {
                ")"
            } else {
                ""
            };
            sql.push_str(&format!(" AND {cond}${}{close}", binds.len() + 2));
        }
    }
    sql.push_str(&format!(
        " ORDER BY time_ms DESC, id DESC LIMIT ${}",
        binds.len() + 3
    ));
    let mut q = sqlx::query_as(&sql).bind(bt).bind(bi);
    for b in binds {
        q = q.bind(b);
    }
    Ok(q.bind(limit).fetch_all(&db.pool).await?)
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
        "SELECT id, username, role, created_at, disabled_at FROM users ORDER BY username",
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

pub async fn set_disabled(db: &Db, id: i64, disabled: bool) -> Result<bool> {
    let r = sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
        .bind(id)
        .bind(disabled.then(now_ms))
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_password_hash(db: &Db, id: i64, phc: &str) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(phc)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Display names of everything lists refer to by id, in one query.
#[derive(Debug, Default)]
pub struct Names {
    pub sources: std::collections::HashMap<i64, String>,
    pub targets: std::collections::HashMap<i64, String>,
    pub policies: std::collections::HashMap<i64, String>,
    pub users: std::collections::HashMap<i64, String>,
}

pub async fn names(db: &Db) -> Result<Names> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT 's', id, name FROM sources UNION ALL SELECT 't', id, name FROM targets \
         UNION ALL SELECT 'p', id, name FROM policies UNION ALL SELECT 'u', id, username FROM users",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut n = Names::default();
    for (kind, id, name) in rows {
        let map = match kind.as_str() {
            "s" => &mut n.sources,
            "t" => &mut n.targets,
            "p" => &mut n.policies,
            _ => &mut n.users,
        };
        map.insert(id, name);
    }
    Ok(n)
}

/// What `/metrics` reads from the history (the same for every worker sharing it).
pub struct Gauges {
    /// Jobs per status, for the statuses that have any.
    pub jobs_by_status: Vec<(String, i64)>,
    /// Per policy name: when its last successful backup finished (unix ms).
    pub last_success: Vec<(String, i64)>,
    /// Per target name: the bytes its snapshots in the history added to its repository.
    pub stored_bytes: Vec<(String, i64)>,
    /// Notifications waiting or given up, per status.
    pub outbox_by_status: Vec<(String, i64)>,
}

pub async fn gauges(db: &Db) -> Result<Gauges> {
    Ok(Gauges {
        jobs_by_status: sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(&db.pool)
        .await?,
        last_success: sqlx::query_as(
            "SELECT p.name, MAX(j.finished_at) FROM jobs j JOIN policies p ON p.id = j.policy_id \
             WHERE j.kind = 'backup' AND j.status = 'succeeded' AND j.finished_at IS NOT NULL GROUP BY p.name",
        )
        .fetch_all(&db.pool)
        .await?,
        outbox_by_status: sqlx::query_as(
            "SELECT status, COUNT(*) FROM notify_outbox WHERE status IN ('pending', 'sending', 'failed') GROUP BY status",
        )
        .fetch_all(&db.pool)
        .await?,
        stored_bytes: sqlx::query_as(
            "SELECT t.name, CAST(COALESCE(SUM(s.bytes_stored), 0) AS BIGINT) FROM targets t \
             LEFT JOIN snapshots s ON s.target_id = t.id GROUP BY t.name",
        )
        .fetch_all(&db.pool)
        .await?,
    })
}

/// Whether the history database answers.
pub async fn ping(db: &Db) -> Result<()> {
    let _: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
        .fetch_one(&db.pool)
        .await?;
    Ok(())
}

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
        "SELECT {POLICY_COLUMNS} FROM policies WHERE enabled = 1 AND capture_secs IS NOT NULL ORDER BY id"
    ))
    .fetch_all(&db.pool)
    .await?)
}

/// Takes (or renews) the lease on a policy's capture when its next round is due; whether
/// this worker holds it now.
pub async fn lease_capture(db: &Db, policy: i64, worker: &str, lease_ms: i64) -> Result<bool> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO captures (policy_id, next_round_at) VALUES ($1, 0) ON CONFLICT (policy_id) DO NOTHING",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::jobs::JobStatus::{Failed, Succeeded};
    use engine::secret::Secret;

    fn job(title: &str) -> NewJob {
        NewJob {
            policy_id: None,
            source_id: None,
            target_id: None,
            params: crate::api::jobs::JobParams::Verify {
                target_id: 1,
                snapshot_id: "0".repeat(64),
            },
            title: title.into(),
            created_by: None,
            rows_total: None,
            bytes_total: None,
            retry_of: None,
        }
    }

    /// Two workers on one queue: each job is claimed once; a worker that went silent
    /// has its job failed by the other, and its late outcome does not overwrite that.
    async fn two_workers_share_one_queue(db: &Db) {
        let a = enqueue(db, job("first")).await.unwrap();
        let b = enqueue(db, job("second")).await.unwrap();
        let (one, two) = tokio::join!(claim(db, "worker-1"), claim(db, "worker-2"));
        let (one, two) = (one.unwrap().unwrap(), two.unwrap().unwrap());
        let mut ids = [one.id, two.id];
        ids.sort();
        assert_eq!(ids, [a, b], "each job claimed by exactly one worker");
        assert!(claim(db, "worker-1").await.unwrap().is_none());
        // worker-1 went silent ten minutes ago; worker-2 just reported progress.
        sqlx::query("UPDATE jobs SET heartbeat_at = $1 WHERE id = $2")
            .bind(now_ms() - 600_000)
            .bind(one.id)
            .execute(&db.pool)
            .await
            .unwrap();
        heartbeat(db, two.id, 0, 0, None).await.unwrap();
        let failed = fail_abandoned(db, "", 60_000).await.unwrap();
        assert_eq!(failed, vec![one.id]);
        // worker-1 comes back and finishes: refused, the failure stands.
        let recorded = finish(db, one.id, "worker-1", Succeeded, None, Some("{}"), None)
            .await
            .unwrap();
        assert!(!recorded);
        let row = super::job(db, one.id).await.unwrap().unwrap();
        assert_eq!(row.status, "failed");
        // worker-2 records its own job; a second finish changes nothing.
        assert!(
            finish(db, two.id, "worker-2", Succeeded, None, Some("{}"), None)
                .await
                .unwrap()
        );
        assert!(
            !finish(db, two.id, "worker-2", Failed, Some("late"), None, None)
                .await
                .unwrap()
        );
        assert_eq!(
            super::job(db, two.id).await.unwrap().unwrap().status,
            "succeeded"
        );
    }

    #[tokio::test]
    async fn two_workers_on_a_sqlite_history() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::db::sqlite_url(dir.path()).unwrap();
        let db = Db::open(&Secret::new(url)).await.unwrap();
        two_workers_share_one_queue(&db).await;
    }

    #[tokio::test]
    async fn two_workers_on_a_postgres_history() {
        sqlx::any::install_default_drivers();
        let pg = testkit::Postgres::start().unwrap();
        let url = pg.create_database("history").unwrap();
        let db = Db::open(&Secret::new(url)).await.unwrap();
        two_workers_share_one_queue(&db).await;
    }
}
