//! The job queue: enqueue, claim, heartbeat, finish, logs.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub kind: crate::model::JobKind,
    #[sqlx(try_from = "String")]
    pub status: crate::model::JobStatus,
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
    pub params: crate::model::JobParams,
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
    let mut sql = Sql::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE"));
    sql.push_bind(" id < ", Bind::Int(before.unwrap_or(i64::MAX)), "");
    if let Some(s) = status {
        sql.push_bind(" AND status = ", Bind::Text(s.into()), "");
    }
    if let Some(u) = created_by {
        sql.push_bind(" AND created_by = ", Bind::Int(u), "");
    }
    sql.push(" ORDER BY id DESC")
        .push_bind(" LIMIT ", Bind::Int(limit), "");
    sql.fetch_all(db).await
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

/// What a heartbeat learnt about its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Still running on this worker.
    Owned,
    /// Still running on this worker, and a user asked it to stop.
    CancelRequested,
    /// No longer running on this worker: another worker failed it as abandoned (this
    /// one was silent too long), or it was reassigned. The worker must stop and record
    /// nothing; the job's outcome is no longer its to write.
    Lost,
}

/// Progress of a job `worker` is running, and whether it still is: the update only
/// touches a job that is `running` on `worker`, like [`finish`].
pub async fn heartbeat(
    db: &Db,
    id: i64,
    worker: &str,
    rows: i64,
    bytes: i64,
    table: Option<&str>,
) -> Result<Beat> {
    let flag: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET rows_done = $2, bytes_done = $3, current_table = $4, heartbeat_at = $5 \
         WHERE id = $1 AND status = 'running' AND worker = $6 RETURNING cancel_requested",
    )
    .bind(id)
    .bind(rows)
    .bind(bytes)
    .bind(table)
    .bind(now_ms())
    .bind(worker)
    .fetch_optional(&db.pool)
    .await?;
    Ok(match flag {
        None => Beat::Lost,
        Some(0) => Beat::Owned,
        Some(_) => Beat::CancelRequested,
    })
}

/// The rows a running job expects to go through (what its progress counts against),
/// once the engine knows them from the source's statistics.
pub async fn set_rows_total(db: &Db, id: i64, worker: &str, rows: i64) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET rows_total = $2 WHERE id = $1 AND status = 'running' AND worker = $3",
    )
    .bind(id)
    .bind(rows)
    .bind(worker)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Records the end of a job that `worker` is running. Returns false, changing nothing,
/// when the job is no longer running on that worker (another worker failed it as
/// abandoned meanwhile): one outcome per job, never overwritten.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    db: &Db,
    id: i64,
    worker: &str,
    status: crate::model::JobStatus,
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

/// The job that backs up `p` (with the last snapshot's size as the progress estimate).
pub async fn backup_job(
    db: &Db,
    p: &PolicyRow,
    title: String,
    created_by: Option<i64>,
) -> Result<NewJob> {
    let last = last_snapshot_of_policy(db, p.id).await?;
    Ok(NewJob {
        policy_id: Some(p.id),
        source_id: Some(p.source_id),
        target_id: Some(p.target_id),
        params: crate::model::JobParams::Backup { policy_id: p.id },
        title,
        created_by,
        rows_total: last.as_ref().map(|s| s.row_count),
        bytes_total: last.as_ref().map(|s| s.bytes),
        retry_of: None,
    })
}
