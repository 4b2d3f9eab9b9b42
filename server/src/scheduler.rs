//! The scheduler inside `tablesafe serve`: every few seconds it queues a backup for each
//! enabled policy whose next run is due, and moves that policy's next run to the first
//! slot after now. Consequences, all by construction:
//! - slots missed while no worker ran (a restart, an outage) run **once**, not once per
//!   missed slot;
//! - several workers on one history queue a slot once (the move is conditional on the
//!   old value, in the same transaction as the job);
//! - a policy whose previous backup is still queued or running is not queued again; its
//!   run stays due and starts when that one has finished.
//!
//! Restore drills with a schedule are queued the same way (`queue_drills`).
//!
//! It also watches each policy's recovery point: a policy with no successful backup for
//! longer than it may (`store::late_after_ms`) is announced as `backup.late`, once per
//! breach.

use app::ssr::{AppState, db::now_ms, notify, schedule, store};
use std::time::Duration;

pub const TICK: Duration = Duration::from_secs(5);

pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = tick(&state).await {
                tracing::error!(error = %format!("{e:#}"), "scheduler");
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

async fn tick(state: &AppState) -> anyhow::Result<()> {
    // Bursts of anonymous failures that have ended: one summary entry each.
    for event in state.bursts.due(state.bursts.quiet) {
        app::ssr::audit::append(&state.db, &event).await?;
    }
    let now = now_ms();
    for p in store::due_policies(&state.db, now).await? {
        let Some(due) = p.next_run_at else { continue };
        let next = match schedule::parse(&p.schedule, &p.timezone) {
            Ok(s) => s.and_then(|s| s.next_after(now)),
            Err((_, e)) => {
                tracing::error!(policy = %p.name, error = %e, "unreadable schedule; not scheduling it");
                None
            }
        };
        let job =
            store::backup_job(&state.db, &p, format!("Scheduled backup: {}", p.name), None).await?;
        if store::take_scheduled_run(&state.db, &p, due, next, job).await? {
            tracing::info!(policy = %p.name, "queued a scheduled backup");
            state.jobs_queued.notify_waiters();
        }
    }
    queue_drills(state, now).await?;
    announce_late(state, now).await
}

/// Queues each due restore drill (`app::ssr::drills`), the same way as backups: a slot
/// once, never two drills of a policy at once.
async fn queue_drills(state: &AppState, now: i64) -> anyhow::Result<()> {
    use app::ssr::drills;
    for d in drills::due_plans(&state.db, now).await? {
        let Some(due) = d.next_run_at else { continue };
        let Some(p) = store::policy(&state.db, d.policy_id).await? else {
            continue;
        };
        let next = match schedule::parse(&d.schedule, &d.timezone) {
            Ok(s) => s.and_then(|s| s.next_after(now)),
            Err((_, e)) => {
                tracing::error!(policy = %p.name, error = %e, "unreadable drill schedule; not scheduling it");
                None
            }
        };
        let job =
            app::api::drills::drill_job(&p, format!("Scheduled restore drill: {}", p.name), None)?;
        if drills::take_scheduled(&state.db, p.id, due, next, job).await? {
            tracing::info!(policy = %p.name, "queued a scheduled restore drill");
            state.jobs_queued.notify_waiters();
        }
    }
    Ok(())
}

/// Announces each policy that has gone longer than it may without a successful backup
/// (once per breach, whichever worker sees it first; a success ends the breach).
async fn announce_late(state: &AppState, now: i64) -> anyhow::Result<()> {
    let watched = store::watched_policies(&state.db).await?;
    if watched.is_empty() {
        return Ok(());
    }
    let successes = store::last_successes(&state.db).await?;
    for p in watched {
        let Some(limit) = store::late_after_ms(&p, now) else {
            continue;
        };
        let last = successes.get(&p.id).copied();
        let since = last.unwrap_or(p.created_at);
        if now - since > limit && store::mark_late(&state.db, p.id, since).await? {
            tracing::warn!(policy = %p.name, "backup late: no success within the expected interval");
            notify::events::backup_late(state, &p, last, limit).await;
        }
    }
    Ok(())
}
