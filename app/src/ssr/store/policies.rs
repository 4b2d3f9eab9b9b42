//! Policies: schedules, retention, late alerts, triggers.

use super::*;

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

pub(super) const POLICY_COLUMNS: &str = "id, name, source_id, target_id, selection, schedule, timezone, enabled, created_at, next_run_at, trigger_hash, retention, rpo_minutes, late_alerted_at, capture_secs";

/// How long policy `p` may go without a successful backup before it is late (RPO):
/// its own setting, else one and a half times its schedule's interval (at least 15
/// minutes); None when it is never late (set to 0, or no schedule and no setting).
pub fn late_after_ms(p: &PolicyRow, now: i64) -> Option<i64> {
    match p.rpo_minutes {
        Some(m) if m > 0 => Some(m * 60_000),
        Some(_) => None,
        None => {
            let s = crate::ssr::schedule::parse(&p.schedule, &p.timezone).ok()??;
            let a = s.next_after(now)?;
            let b = s.next_after(a)?;
            Some(((b - a) * 3 / 2).max(15 * 60_000))
        }
    }
}

/// A policy whose source or target is not paused (SQL condition on `policies`).
pub(super) const NOT_HELD: &str = "source_id NOT IN (SELECT id FROM sources WHERE paused_at IS NOT NULL) \
     AND target_id NOT IN (SELECT id FROM targets WHERE paused_at IS NOT NULL)";

/// Why policy `p` may not back up now (its source or target is paused), in words that
/// say what to do; None when it may.
pub async fn policy_hold(db: &Db, p: &PolicyRow) -> Result<Option<String>> {
    if let Some(s) = super::source(db, p.source_id).await?
        && s.paused_at.is_some()
    {
        return Ok(Some(format!(
            "Source {} is paused: resume it on Sources to back it up.",
            s.name
        )));
    }
    if let Some(t) = super::target(db, p.target_id).await?
        && t.paused_at.is_some()
    {
        return Ok(Some(format!(
            "Target {} is paused: resume it on Targets to back up into it.",
            t.name
        )));
    }
    Ok(None)
}

/// The ids of the paused sources and of the paused targets.
pub async fn paused(
    db: &Db,
) -> Result<(
    std::collections::HashSet<i64>,
    std::collections::HashSet<i64>,
)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT 's', id FROM sources WHERE paused_at IS NOT NULL \
         UNION ALL SELECT 't', id FROM targets WHERE paused_at IS NOT NULL",
    )
    .fetch_all(&db.pool)
    .await?;
    let pick = |kind: &str| rows.iter().filter(|r| r.0 == kind).map(|r| r.1).collect();
    Ok((pick("s"), pick("t")))
}

/// Pauses or resumes a source (`table` "sources") or a target ("targets"); false when
/// there is no such row.
pub async fn set_paused(db: &Db, table: Paused, id: i64, paused: bool) -> Result<bool> {
    let r = sqlx::query(&format!(
        "UPDATE {} SET paused_at = $2 WHERE id = $1",
        table.table()
    ))
    .bind(id)
    .bind(paused.then(now_ms))
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// What [`set_paused`] pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    Source,
    Target,
}

impl Paused {
    fn table(self) -> &'static str {
        match self {
            Paused::Source => "sources",
            Paused::Target => "targets",
        }
    }
}

/// Enabled policies that can be late (a schedule or an RPO of their own).
pub async fn watched_policies(db: &Db) -> Result<Vec<PolicyRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE enabled = 1 AND {NOT_HELD} AND \
         (rpo_minutes > 0 OR (rpo_minutes IS NULL AND schedule <> ''))"
    ))
    .fetch_all(&db.pool)
    .await?)
}

/// Per policy: when its last successful backup finished (NULL: never). One descent of
/// the index `jobs_policy_last` (migration 0019) per policy, however long the history:
/// a `GROUP BY` over the jobs read every successful backup ever made (1.8 s at 100 k
/// jobs under load), and the policies page, `/api/v1/policies` and the late alerts
/// ask this on every call.
pub const LAST_SUCCESSES: &str = "SELECT p.id, (SELECT MAX(j.finished_at) FROM jobs j \
     WHERE j.policy_id = p.id AND j.kind = 'backup' AND j.status = 'succeeded') FROM policies p";

/// Per policy id: when its last successful backup finished (policies without one are
/// absent).
pub async fn last_successes(db: &Db) -> Result<std::collections::HashMap<i64, i64>> {
    let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(LAST_SUCCESSES).fetch_all(&db.pool).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, last)| Some((id, last?)))
        .collect())
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
    policy_has_active(ex, policy, crate::model::JobKind::Backup).await
}

/// Whether a job of `kind` for the policy is queued or running.
pub async fn policy_has_active<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    policy: i64,
    kind: crate::model::JobKind,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE policy_id = $1 AND kind = $2 AND status IN ('queued', 'running')",
    )
    .bind(policy)
    .bind(kind.as_str())
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
        "SELECT {POLICY_COLUMNS} FROM policies WHERE enabled = 1 AND {NOT_HELD} AND next_run_at <= $1 ORDER BY next_run_at"
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
    take_due(
        db,
        policy.id,
        crate::model::JobKind::Backup,
        "UPDATE policies SET next_run_at = $3 WHERE id = $1 AND next_run_at = $2",
        (due, next),
        job,
    )
    .await
}

/// In one transaction: unless a job of `kind` for the policy is queued or running,
/// `move_run` (`$1` policy id, `$2` due, `$3` next) moves a due run on, and when it did,
/// `job` is queued. `false` when another worker took the run first or a job is busy.
pub(crate) async fn take_due(
    db: &Db,
    policy_id: i64,
    kind: crate::model::JobKind,
    move_run: &str,
    (due, next): (i64, Option<i64>),
    job: NewJob,
) -> Result<bool> {
    let mut tx = db.pool.begin().await?;
    if policy_has_active(&mut *tx, policy_id, kind).await? {
        return Ok(false);
    }
    let moved = sqlx::query(move_run)
        .bind(policy_id)
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

/// Changes what a policy backs up and when (the create form's fields). `None` when the
/// name is taken by another policy, `Some(false)` when the policy does not exist.
pub async fn update_policy(
    db: &Db,
    id: i64,
    name: &str,
    selection: &str,
    schedule: &str,
    timezone: &str,
    next_run_at: Option<i64>,
) -> Result<Option<bool>> {
    // A disabled policy keeps no next run: it gets one when it is enabled again.
    let r = sqlx::query(
        "UPDATE policies SET name = $2, selection = $3, schedule = $4, timezone = $5, \
         next_run_at = CASE WHEN enabled = 1 THEN $6 ELSE NULL END WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(selection)
    .bind(schedule)
    .bind(timezone)
    .bind(next_run_at)
    .execute(&db.pool)
    .await;
    match r {
        Ok(r) => Ok(Some(r.rows_affected() == 1)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Pauses (no scheduled run: the scheduler picks only enabled policies with a next run)
/// or resumes a policy; a resumed policy's next run is `next_run_at`, counted from now,
/// so slots passed while it was paused do not run. False when it does not exist.
pub async fn set_policy_enabled(
    db: &Db,
    id: i64,
    enabled: bool,
    next_run_at: Option<i64>,
) -> Result<bool> {
    let r = sqlx::query("UPDATE policies SET enabled = $2, next_run_at = $3 WHERE id = $1")
        .bind(id)
        .bind(i64::from(enabled))
        .bind(next_run_at.filter(|_| enabled))
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// What goes with a policy when it is deleted, and what stays.
#[derive(Debug, Clone, Default)]
pub struct PolicyDependents {
    /// Snapshots in the history made by it (they stay, as a removed policy's).
    pub snapshots: i64,
    /// Its jobs that are queued or running (a policy cannot go while one is).
    pub active_jobs: i64,
    /// Whether it has a restore drill plan (which goes with it).
    pub drill_plan: bool,
}

pub async fn policy_dependents(db: &Db, id: i64) -> Result<PolicyDependents> {
    let snapshots: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE policy_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    let active_jobs = active_jobs(&db.pool, id).await?;
    let drill: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM drill_plans WHERE policy_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    Ok(PolicyDependents {
        snapshots,
        active_jobs,
        drill_plan: drill > 0,
    })
}

/// Jobs of any kind for the policy that are queued or running.
async fn active_jobs<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    policy: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE policy_id = $1 AND status IN ('queued', 'running')",
    )
    .bind(policy)
    .fetch_one(ex)
    .await?)
}

/// How a deletion went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDeleted {
    Deleted,
    NotFound,
    /// A job of the policy is queued or running: nothing was deleted.
    Busy,
}

/// Deletes a policy with what belongs to it alone (its copy targets, drill plan and
/// capture state; its schedule and trigger are columns of its row), in one
/// transaction, unless one of its jobs is queued or running. Its snapshots, jobs and
/// drill reports stay in the history with their `policy_id`, which then names no
/// policy: pages show them as a removed policy's.
pub async fn delete_policy(db: &Db, id: i64) -> Result<PolicyDeleted> {
    let mut tx = db.pool.begin().await?;
    if active_jobs(&mut *tx, id).await? > 0 {
        return Ok(PolicyDeleted::Busy);
    }
    for table in ["policy_copy_targets", "drill_plans", "captures"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE policy_id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let r = sqlx::query("DELETE FROM policies WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() != 1 {
        return Ok(PolicyDeleted::NotFound);
    }
    tx.commit().await?;
    Ok(PolicyDeleted::Deleted)
}
