//! Continuous capture inside `tablesafe serve`: for every enabled policy with
//! `capture_secs`, one worker at a time (a lease in the history database) runs the
//! engine's capture rounds (`engine::capture`), stores what each found in `captures`
//! (the end of the restorable range, the slot's lag, the last error) and, when the
//! repository has no snapshot the captured changes can replay on, queues a backup of
//! the policy. Each policy's capture runs in its own task, so a slow source delays
//! only itself.

use anyhow::{Context, Result, anyhow};
use app::api::jobs::{SelectionJson, backup_job};
use app::ssr::db::now_ms;
use app::ssr::secrets::Kind;
use app::ssr::{AppState, store};
use engine::capture::{CaptureOptions, Position};
use engine::selection::Selection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LEASE_MS: i64 = 60_000;
const RETRY_AFTER_ERROR_MS: i64 = 30_000;

/// What a worker remembers of each capture it runs: set up, and where it is.
#[derive(Default)]
struct Running {
    busy: bool,
    setup_slot: Option<String>,
    position: Position,
}

pub fn spawn(state: AppState, worker: String) -> tokio::task::JoinHandle<()> {
    let running: Arc<Mutex<HashMap<i64, Running>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            if let Err(e) = tick(&state, &worker, &running).await {
                tracing::error!(error = %format!("{e:#}"), "capture scheduler");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn tick(
    state: &AppState,
    worker: &str,
    running: &Arc<Mutex<HashMap<i64, Running>>>,
) -> Result<()> {
    for p in store::continuous_policies(&state.db).await? {
        {
            let mut map = running.lock().unwrap_or_else(|e| e.into_inner());
            let r = map.entry(p.id).or_default();
            if r.busy {
                continue;
            }
            r.busy = true;
        }
        match store::lease_capture(&state.db, p.id, worker, LEASE_MS).await {
            Ok(true) => {}
            Ok(false) => {
                release(running, p.id);
                continue;
            }
            Err(e) => {
                release(running, p.id);
                return Err(e);
            }
        }
        let (state, worker, running) = (state.clone(), worker.to_string(), running.clone());
        tokio::spawn(async move {
            let outcome = round(&state, &p, &running).await;
            let secs = p.capture_secs.unwrap_or(5).max(1);
            let (slot, covers, lag, error, next) = match &outcome {
                Ok(r) => (
                    Some(r.slot.clone()),
                    r.covers_until_ms,
                    Some(r.lag_bytes as i64),
                    None,
                    now_ms() + secs * 1000,
                ),
                Err(e) => {
                    tracing::warn!(policy = %p.name, error = %format!("{e:#}"), "capture round failed");
                    (
                        None,
                        None,
                        None,
                        Some(format!("{e:#}")),
                        now_ms() + RETRY_AFTER_ERROR_MS,
                    )
                }
            };
            if let Err(e) = store::capture_done(
                &state.db,
                p.id,
                &worker,
                slot.as_deref(),
                covers,
                lag,
                error.as_deref(),
                next,
            )
            .await
            {
                tracing::error!(error = %format!("{e:#}"), "recording a capture round");
            }
            release(&running, p.id);
        });
    }
    Ok(())
}

fn release(running: &Arc<Mutex<HashMap<i64, Running>>>, policy: i64) {
    if let Some(r) = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&policy)
    {
        r.busy = false;
    }
}

/// One round for policy `p`: set up (once per worker), make sure a base snapshot
/// exists or is coming, store the changes since the last round.
async fn round(
    state: &AppState,
    p: &store::PolicyRow,
    running: &Arc<Mutex<HashMap<i64, Running>>>,
) -> Result<engine::capture::Round> {
    let source = store::source(&state.db, p.source_id)
        .await?
        .ok_or_else(|| anyhow!("the policy's source no longer exists"))?;
    let target = store::target(&state.db, p.target_id)
        .await?
        .ok_or_else(|| anyhow!("the policy's target no longer exists"))?;
    let url = state.secrets.open(Kind::SourceUrl, &source.sealed_url)?;
    let selection: SelectionJson =
        serde_json::from_str(&p.selection).context("the policy's selection")?;
    let mut opts = CaptureOptions::new(url, &capture_name(p.id));
    opts.selection = Selection {
        include: selection.include,
        exclude: selection.exclude,
        columns: Default::default(),
    };
    let mut repo = crate::runner::open_repo(state, &target).await?;
    let known = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&p.id)
        .and_then(|r| r.setup_slot.clone());
    if known.is_none() {
        let setup = engine::capture::setup(&opts).await?;
        let has_base = repo.snapshots().await?.iter().any(|(_, s)| {
            s.pg_point
                .as_ref()
                .is_some_and(|pt| pt.slots.contains(&setup.slot))
        });
        if !has_base && !store::backup_pending(&state.db, p.id).await? {
            let job = backup_job(
                &state.db,
                p,
                format!("Base snapshot for continuous capture: {}", p.name),
                None,
            )
            .await?;
            store::enqueue(&state.db, job).await?;
            state.jobs_queued.notify_waiters();
            tracing::info!(policy = %p.name, "queued the base snapshot of a continuous capture");
        }
        if let Some(r) = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&p.id)
        {
            r.setup_slot = Some(setup.slot);
        }
    }
    let mut position = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&p.id)
        .map(|r| r.position.clone())
        .unwrap_or_default();
    let result = engine::capture::capture_round(
        &mut repo,
        &opts,
        &mut position,
        &engine::progress::NoProgress,
    )
    .await;
    if let Some(r) = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&p.id)
    {
        r.position = position;
        if result.is_err() {
            // Set up again next time (the slot may have been dropped).
            r.setup_slot = None;
            r.position = Position::default();
        }
    }
    Ok(result?)
}

/// The capture name of a policy: its slot is `tablesafe_p<id>_<random>`.
pub fn capture_name(policy: i64) -> String {
    format!("p{policy}")
}
