//! Restore drills in the history database: each policy's drill plan, and the evidence of
//! every drill run (`engine::drill`). The scheduler queues due drills like backups: the
//! next run moves conditionally in the same transaction as the job, so several workers
//! queue a slot once, and a policy never has two drills queued or running.

use super::db::{Db, now_ms};
use super::store::NewJob;
use anyhow::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub policy_id: i64,
    pub schedule: String,
    pub timezone: String,
    /// `latest` or `random`.
    pub pick: String,
    pub scratch_source_id: Option<i64>,
    /// JSON array of SQL strings.
    pub assertions: String,
    pub next_run_at: Option<i64>,
    pub updated_at: i64,
}

const PLAN_COLUMNS: &str =
    "policy_id, schedule, timezone, pick, scratch_source_id, assertions, next_run_at, updated_at";

pub async fn plan(db: &Db, policy_id: i64) -> Result<Option<PlanRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM drill_plans WHERE policy_id = $1"
    ))
    .bind(policy_id)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn plans(db: &Db) -> Result<Vec<PlanRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM drill_plans ORDER BY policy_id"
    ))
    .fetch_all(&db.pool)
    .await?)
}

/// Creates or replaces a policy's drill plan.
pub async fn save_plan(db: &Db, p: &PlanRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO drill_plans (policy_id, schedule, timezone, pick, scratch_source_id, assertions, next_run_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (policy_id) DO UPDATE SET schedule = excluded.schedule, timezone = excluded.timezone, \
         pick = excluded.pick, scratch_source_id = excluded.scratch_source_id, assertions = excluded.assertions, \
         next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
    )
    .bind(p.policy_id)
    .bind(&p.schedule)
    .bind(&p.timezone)
    .bind(&p.pick)
    .bind(p.scratch_source_id)
    .bind(&p.assertions)
    .bind(p.next_run_at)
    .bind(p.updated_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn delete_plan(db: &Db, policy_id: i64) -> Result<bool> {
    let r = sqlx::query("DELETE FROM drill_plans WHERE policy_id = $1")
        .bind(policy_id)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Plans of enabled policies whose next drill is due.
pub async fn due_plans(db: &Db, now: i64) -> Result<Vec<PlanRow>> {
    Ok(sqlx::query_as(
        "SELECT d.policy_id, d.schedule, d.timezone, d.pick, d.scratch_source_id, d.assertions, d.next_run_at, d.updated_at \
         FROM drill_plans d JOIN policies p ON p.id = d.policy_id \
         WHERE p.enabled = 1 AND d.next_run_at <= $1 ORDER BY d.next_run_at",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?)
}

/// Whether a drill of the policy is queued or running.
pub async fn busy<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    policy: i64,
) -> Result<bool> {
    super::store::policy_has_active(ex, policy, crate::model::JobKind::Drill).await
}

/// Takes a due drill for this worker: moves the plan's next run from `due` to `next` and
/// queues `job`, in one transaction. `false` when another worker took it first or a
/// drill of the policy is still queued or running (it then stays due).
pub async fn take_scheduled(
    db: &Db,
    policy_id: i64,
    due: i64,
    next: Option<i64>,
    job: NewJob,
) -> Result<bool> {
    super::store::take_due(
        db,
        policy_id,
        crate::model::JobKind::Drill,
        "UPDATE drill_plans SET next_run_at = $3 WHERE policy_id = $1 AND next_run_at = $2",
        (due, next),
        job,
    )
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DrillRow {
    pub id: i64,
    pub policy_id: Option<i64>,
    pub policy_name: String,
    pub job_id: Option<i64>,
    pub target_id: Option<i64>,
    pub snapshot_id: String,
    pub snapshot_time: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub table_count: i64,
    pub row_count: i64,
    pub passed: i64,
    pub report: String,
}

const DRILL_COLUMNS: &str = "id, policy_id, policy_name, job_id, target_id, snapshot_id, snapshot_time, started_at, duration_ms, table_count, row_count, passed, report";

/// Stores the evidence of a drill run; returns its id.
pub async fn record(
    db: &Db,
    policy: (i64, &str),
    job_id: Option<i64>,
    target_id: i64,
    report: &engine::drill::DrillReport,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO drills (policy_id, policy_name, job_id, target_id, snapshot_id, snapshot_time, started_at, duration_ms, table_count, row_count, passed, report) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(policy.0)
    .bind(policy.1)
    .bind(job_id)
    .bind(target_id)
    .bind(report.snapshot.as_str())
    .bind(report.snapshot_time_ms)
    .bind(report.started_ms)
    .bind(report.duration_ms as i64)
    .bind(report.tables.len() as i64)
    .bind(report.rows as i64)
    .bind(i64::from(report.passed))
    .bind(serde_json::to_string(report)?)
    .fetch_one(&db.pool)
    .await?)
}

/// Drill runs, newest first: of one policy, or of all.
pub async fn list(db: &Db, policy_id: Option<i64>, limit: i64) -> Result<Vec<DrillRow>> {
    Ok(match policy_id {
        Some(p) => {
            sqlx::query_as(&format!(
                "SELECT {DRILL_COLUMNS} FROM drills WHERE policy_id = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(p)
            .bind(limit)
            .fetch_all(&db.pool)
            .await?
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT {DRILL_COLUMNS} FROM drills ORDER BY id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(&db.pool)
            .await?
        }
    })
}

/// Per policy: its newest drill run, and its newest passed one (the last proven
/// restorable snapshot).
pub async fn latest_per_policy(db: &Db) -> Result<Vec<(DrillRow, Option<DrillRow>)>> {
    // The policies with drills, one index descent each (`drills_policy`: a skip scan,
    // as neither engine has one built in), then per policy its newest drill and its
    // newest passed one (`drills_passed`), each one more descent: a GROUP BY read
    // every drill ever run, on every dashboard view.
    const POLICIES: &str = "WITH RECURSIVE p(id) AS (\
         SELECT MIN(policy_id) FROM drills \
         UNION ALL SELECT (SELECT MIN(d.policy_id) FROM drills d WHERE d.policy_id > p.id) FROM p WHERE p.id IS NOT NULL)";
    let last: Vec<DrillRow> = sqlx::query_as(&format!(
        "{POLICIES} SELECT {DRILL_COLUMNS} FROM drills WHERE id IN \
         (SELECT (SELECT MAX(d.id) FROM drills d WHERE d.policy_id = p.id) FROM p WHERE p.id IS NOT NULL) ORDER BY policy_name"
    ))
    .fetch_all(&db.pool)
    .await?;
    let passed: Vec<DrillRow> = sqlx::query_as(&format!(
        "{POLICIES} SELECT {DRILL_COLUMNS} FROM drills WHERE id IN \
         (SELECT (SELECT MAX(d.id) FROM drills d WHERE d.policy_id = p.id AND d.passed = 1) FROM p WHERE p.id IS NOT NULL)"
    ))
    .fetch_all(&db.pool)
    .await?;
    Ok(last
        .into_iter()
        .map(|l| {
            let p = passed.iter().find(|p| p.policy_id == l.policy_id).cloned();
            (l, p)
        })
        .collect())
}

/// The plan's next run after now from its schedule (None: on demand only, or an
/// unreadable schedule, which saving refuses).
pub fn next_run(schedule: &str, timezone: &str) -> Option<i64> {
    super::schedule::parse(schedule, timezone)
        .ok()
        .flatten()
        .and_then(|s| s.next_after(now_ms()))
}

/// The snapshots a drill of the policy may prove: those it made in its own target
/// (not copies), oldest first.
pub async fn policy_snapshots(
    db: &Db,
    policy_id: i64,
    target_id: i64,
) -> Result<Vec<super::store::SnapshotRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {} FROM snapshots WHERE policy_id = $1 AND target_id = $2 ORDER BY time_ms, id",
        super::store::SNAPSHOT_COLUMNS
    ))
    .bind(policy_id)
    .bind(target_id)
    .fetch_all(&db.pool)
    .await?)
}
