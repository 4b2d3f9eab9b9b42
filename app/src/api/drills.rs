#![allow(clippy::too_many_arguments)] // server functions take one argument per form field
//! Restore drills: each policy's plan (when, which snapshot, where the scratch copy
//! goes, SQL assertions), running one now, the evidence of past runs and, per policy,
//! the newest snapshot a drill proved restorable. The drill itself is
//! `engine::drill`, run by the job runner.

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// At most this many assertions per plan, each at most `MAX_ASSERTION` bytes.
pub const MAX_ASSERTIONS: usize = 20;
pub const MAX_ASSERTION: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillPlanView {
    pub policy_id: i64,
    /// Cron or shorthand (as policies take it); empty: on demand only.
    pub schedule: String,
    pub timezone: String,
    /// `latest` or `random`.
    pub pick: String,
    pub scratch_source_id: Option<i64>,
    pub assertions: Vec<String>,
    pub next_run: Option<i64>,
}

/// The evidence of one drill run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillView {
    pub id: i64,
    pub policy_id: Option<i64>,
    pub policy: String,
    pub job_id: Option<i64>,
    pub snapshot_id: String,
    pub snapshot_time: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub restore_ms: i64,
    pub tables: i64,
    pub rows: i64,
    pub passed: bool,
    /// One line per table and assertion: what was checked and how it came out.
    pub checks: Vec<(bool, String)>,
    pub error: Option<String>,
    pub cleaned_up: bool,
}

/// Per policy: the newest drill, and the newest snapshot a drill proved restorable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenView {
    pub policy_id: i64,
    pub policy: String,
    pub last_drill_at: i64,
    pub last_passed: bool,
    /// When the newest proven snapshot was taken, and when it was proven.
    pub proven_snapshot_time: Option<i64>,
    pub proven_at: Option<i64>,
}

#[cfg(feature = "ssr")]
pub fn drill_view(r: crate::ssr::drills::DrillRow) -> DrillView {
    let report: Option<engine::drill::DrillReport> = serde_json::from_str(&r.report).ok();
    let mut checks = Vec::new();
    let (mut error, mut cleaned_up, mut restore_ms) = (None, false, 0);
    if let Some(rep) = &report {
        for t in &rep.tables {
            checks.push((
                t.passed,
                format!(
                    "{}: {} of {} rows, checksum {}",
                    t.table,
                    t.rows_restored,
                    t.rows_expected,
                    if t.checksum_matches {
                        format!("matches ({})", t.compared)
                    } else {
                        "differs".to_string()
                    }
                ),
            ));
        }
        for a in &rep.assertions {
            checks.push((a.passed, format!("{} → {}", a.sql, a.detail)));
        }
        error = rep.error.clone();
        cleaned_up = rep.cleaned_up;
        restore_ms = rep.restore_ms as i64;
    }
    DrillView {
        id: r.id,
        policy_id: r.policy_id,
        policy: r.policy_name,
        job_id: r.job_id,
        snapshot_id: r.snapshot_id,
        snapshot_time: r.snapshot_time,
        started_at: r.started_at,
        duration_ms: r.duration_ms,
        restore_ms,
        tables: r.table_count,
        rows: r.row_count,
        passed: r.passed != 0,
        checks,
        error,
        cleaned_up,
    }
}

/// The job that runs a drill of policy `p`.
#[cfg(feature = "ssr")]
pub fn drill_job(
    p: &crate::ssr::store::PolicyRow,
    title: String,
    created_by: Option<i64>,
) -> anyhow::Result<crate::ssr::store::NewJob> {
    Ok(crate::ssr::store::NewJob {
        policy_id: Some(p.id),
        source_id: Some(p.source_id),
        target_id: Some(p.target_id),
        params: crate::api::jobs::JobParams::Drill { policy_id: p.id },
        title,
        created_by,
        rows_total: None,
        bytes_total: None,
        retry_of: None,
    })
}

/// Every policy's drill plan.
#[server(endpoint = "drills/plans")]
pub async fn list_drill_plans() -> Result<Vec<DrillPlanView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, drills};
    let c = ctx::authorize(Perm::SeeAll, "drill.list").await?;
    let rows = drills::plans(&c.state.db)
        .await
        .or_internal("loading drill plans")?;
    Ok(rows
        .into_iter()
        .map(|r| DrillPlanView {
            policy_id: r.policy_id,
            schedule: r.schedule,
            timezone: r.timezone,
            pick: r.pick,
            scratch_source_id: r.scratch_source_id,
            assertions: serde_json::from_str(&r.assertions).unwrap_or_default(),
            next_run: r.next_run_at,
        })
        .collect())
}

/// Creates or changes a policy's drill plan. `assertions`: one SQL query per line.
#[server(endpoint = "drills/save")]
pub async fn save_drill_plan(
    policy_id: i64,
    schedule: String,
    timezone: String,
    pick: String,
    scratch_source_id: String,
    assertions: String,
) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, db::now_ms, drills, schedule as sched, store};
    let c = ctx::authorize(Perm::Configure, "drill.plan").await?;
    let result = async {
        let db = &c.state.db;
        let (_, source) = policy_and_source(db, policy_id).await?;
        // A drill restores the data into a scratch server and runs SQL on it.
        crate::ssr::rules::require_admin_if_guarded(&c, source.id).await?;
        if !matches!(pick.as_str(), "latest" | "random") {
            return Err(AppError::Field(
                "pick".into(),
                "Drill the latest snapshot or a random one.".into(),
            ));
        }
        let timezone = if timezone.trim().is_empty() {
            "UTC".to_string()
        } else {
            timezone.trim().to_string()
        };
        sched::parse(&schedule, &timezone).map_err(|(f, m)| AppError::Field(f.into(), m))?;
        let scratch = if source.engine != tablesafe_types::Engine::Sqlite {
            let kind = if source.engine == tablesafe_types::Engine::Mysql {
                "MySQL"
            } else {
                "PostgreSQL"
            };
            let id = scratch_source_id.trim().parse::<i64>().ok().ok_or_else(|| {
                AppError::Field(
                    "scratch".into(),
                    format!("A {kind} drill needs a scratch server: pick a {kind} source where tablesafe may create and drop a database."),
                )
            })?;
            let s = store::source(db, id)
                .await
                .or_internal("loading a source")?
                .ok_or_else(|| AppError::Field("scratch".into(), "No such source.".into()))?;
            if s.engine != source.engine {
                return Err(AppError::Field(
                    "scratch".into(),
                    format!("The scratch server of a {kind} drill must be a {kind} source."),
                ));
            }
            // The scratch server is where the drill creates a database and runs SQL:
            // a guarded server is an admin's to pick.
            crate::ssr::rules::require_admin_if_guarded(&c, id).await?;
            Some(id)
        } else {
            None
        };
        let list: Vec<String> = assertions
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if list.len() > MAX_ASSERTIONS {
            return Err(AppError::Field(
                "assertions".into(),
                format!("At most {MAX_ASSERTIONS} assertions."),
            ));
        }
        if list.iter().any(|a| a.len() > MAX_ASSERTION) {
            return Err(AppError::Field(
                "assertions".into(),
                format!("An assertion may be at most {MAX_ASSERTION} characters."),
            ));
        }
        drills::save_plan(
            db,
            &drills::PlanRow {
                policy_id,
                next_run_at: drills::next_run(&schedule, &timezone),
                schedule: schedule.trim().to_string(),
                timezone,
                pick: pick.clone(),
                scratch_source_id: scratch,
                assertions: serde_json::to_string(&list)
                    .or_internal("encoding assertions")?,
                updated_at: now_ms(),
            },
        )
        .await
        .or_internal("saving a drill plan")?;
        Ok(())
    }
    .await;
    c.audited(
        "drill.plan",
        &format!(
            "policy #{policy_id}: {pick}, schedule {:?}",
            schedule.trim()
        ),
        result,
    )
    .await
}

/// Removes a policy's drill plan (past evidence stays).
#[server(endpoint = "drills/delete")]
pub async fn delete_drill_plan(policy_id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, drills};
    let c = ctx::authorize(Perm::Configure, "drill.plan").await?;
    let result = drills::delete_plan(&c.state.db, policy_id)
        .await
        .or_internal("removing a drill plan")
        .and_then(|found| {
            found
                .then_some(())
                .ok_or_else(|| AppError::NotFound("Drill plan".into()))
        });
    c.audited(
        "drill.plan",
        &format!("policy #{policy_id}: removed"),
        result,
    )
    .await
}

/// A policy and its source, or which of them is gone.
#[cfg(feature = "ssr")]
async fn policy_and_source(
    db: &crate::ssr::db::Db,
    policy_id: i64,
) -> Result<(crate::ssr::store::PolicyRow, crate::ssr::store::SourceRow), AppError> {
    use crate::ssr::store;
    let p = store::policy(db, policy_id)
        .await
        .or_internal("loading a policy")?
        .ok_or_else(|| AppError::NotFound("Policy".into()))?;
    let source = store::source(db, p.source_id)
        .await
        .or_internal("loading a source")?
        .ok_or_else(|| AppError::NotFound("Source".into()))?;
    Ok((p, source))
}

/// Queues a drill of the policy now; returns the job id.
#[server(endpoint = "drills/run")]
pub async fn run_drill(policy_id: i64) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, drills};
    let c = ctx::authorize(Perm::RunJobs, "drill.run").await?;
    let result = async {
        let db = &c.state.db;
        let (p, source) = policy_and_source(db, policy_id).await?;
        let plan = drills::plan(db, policy_id)
            .await
            .or_internal("loading a drill plan")?;
        if source.engine != tablesafe_types::Engine::Sqlite
            && plan.and_then(|p| p.scratch_source_id).is_none()
        {
            return Err(AppError::Invalid(
                "Set up the drill first: a PostgreSQL or MySQL drill needs a scratch server."
                    .into(),
            ));
        }
        if drills::busy(&db.pool, policy_id)
            .await
            .or_internal("checking jobs")?
        {
            return Err(AppError::Invalid(
                "A drill of this policy is already queued or running.".into(),
            ));
        }
        let new = drill_job(&p, format!("Restore drill: {}", p.name), Some(c.user.id))
            .or_internal("preparing a job")?;
        let job = c.state.enqueue(new).await.or_internal("queueing a job")?;
        Ok(job)
    }
    .await;
    c.audited("drill.run", &format!("policy #{policy_id}"), result)
        .await
}

/// Drill runs, newest first (of one policy, or all), with their evidence.
#[server(endpoint = "drills/list")]
pub async fn list_drills(policy_id: Option<i64>) -> Result<Vec<DrillView>, AppError> {
    use crate::api::PAGE;
    use crate::auth::Perm;
    use crate::ssr::{ctx, drills};
    let c = ctx::authorize(Perm::SeeAll, "drill.list").await?;
    let rows = drills::list(&c.state.db, policy_id, PAGE)
        .await
        .or_internal("listing drills")?;
    Ok(rows.into_iter().map(drill_view).collect())
}

/// Per policy with drills: the newest drill and the newest snapshot proven restorable.
#[server(endpoint = "drills/proven")]
pub async fn proven_restorable() -> Result<Vec<ProvenView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::SeeAll, "drill.list").await?;
    proven(&c.state.db).await
}

/// What `proven_restorable` returns (the dashboard shows it too).
#[cfg(feature = "ssr")]
pub async fn proven(db: &crate::ssr::db::Db) -> Result<Vec<ProvenView>, AppError> {
    let rows = crate::ssr::drills::latest_per_policy(db)
        .await
        .or_internal("listing drills")?;
    Ok(rows
        .into_iter()
        .filter_map(|(last, passed)| {
            Some(ProvenView {
                policy_id: last.policy_id?,
                policy: last.policy_name.clone(),
                last_drill_at: last.started_at,
                last_passed: last.passed != 0,
                proven_snapshot_time: passed.as_ref().map(|p| p.snapshot_time),
                proven_at: passed.as_ref().map(|p| p.started_at),
            })
        })
        .collect())
}
