//! Continuous capture inside `tablesafe serve`: for every enabled policy with
//! `capture_secs`, one worker at a time (a lease in the history database) runs the
//! engine's capture rounds (`engine::capture`), stores what each found in `captures`
//! (the end of the restorable range, the slot's lag, the last error) and, when the
//! repository has no snapshot the captured changes can replay on, queues a backup of
//! the policy. Each policy's capture runs in its own task, so a slow source delays
//! only itself.

use anyhow::{Context, Result, anyhow};
use app::ssr::db::now_ms;
use app::ssr::secrets::Kind;
use app::ssr::{AppState, store};
use engine::capture::sqlite::SqliteCapture;
use engine::capture::{CaptureOptions, Position};
use engine::selection::Selection;
use engine::source::SourceUrl;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RETRY_AFTER_ERROR_MS: i64 = 30_000;

/// A capture's lease: two of its intervals less the one-second tick that renews it
/// (at least 3 s), so that another worker takes over a dead one's capture within two
/// intervals. The holder renews every lease it holds at each tick, during rounds and
/// between them.
fn lease_ms(capture_secs: i64) -> i64 {
    (2 * capture_secs * 1000 - 1000).max(3_000)
}

/// What a worker remembers of each capture it runs: set up, and where it is.
#[derive(Default)]
struct Running {
    busy: bool,
    /// This worker holds the capture's lease (of this many ms, renewed at each tick).
    held: Option<i64>,
    /// When the lease was last taken or renewed.
    renewed_at: Option<std::time::Instant>,
    /// The round in progress, stopped if the lease is lost meanwhile.
    round: Option<tokio::task::AbortHandle>,
    setup_slot: Option<String>,
    position: Position,
    /// A SQLite capture between rounds (taken out while a round runs).
    sqlite: Option<SqliteCapture>,
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
    // The leases held are renewed first, for captures still on. One lost (another
    // worker took it), turned off, or not renewed for as long as it lasts (the history
    // database out of reach: another worker may hold it by now) ends this worker's part
    // in it at once, a round in progress included, so two workers never read one
    // capture's changes together.
    let policies = store::continuous_policies(&state.db).await?;
    let on: std::collections::HashSet<i64> = policies.iter().map(|p| p.id).collect();
    let held: Vec<(i64, i64)> = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|(&id, r)| r.held.map(|ms| (id, ms)))
        .filter(|(id, _)| on.contains(id))
        .collect();
    let renewed = store::renew_captures(&state.db, worker, &held).await;
    {
        let mut map = running.lock().unwrap_or_else(|e| e.into_inner());
        for (id, r) in map.iter_mut() {
            let Some(ms) = r.held else { continue };
            let kept = match &renewed {
                Ok(still) => still.contains(id),
                Err(_) => r
                    .renewed_at
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(ms as u64)),
            };
            if on.contains(id) && kept {
                if renewed.is_ok() {
                    r.renewed_at = Some(std::time::Instant::now());
                }
                continue;
            }
            tracing::info!(
                policy = id,
                "this worker no longer holds the capture's lease; its capture stops here"
            );
            if let Some(round) = r.round.take() {
                round.abort();
            }
            // Its replication stream or watching connection ends here.
            *r = Running::default();
        }
    }
    renewed?;
    for p in policies {
        let secs = p.capture_secs.unwrap_or(5).max(1);
        {
            let mut map = running.lock().unwrap_or_else(|e| e.into_inner());
            let r = map.entry(p.id).or_default();
            if r.busy {
                continue;
            }
            r.busy = true;
        }
        match store::lease_capture(&state.db, p.id, worker, lease_ms(secs)).await {
            Ok(true) => {
                if let Some(r) = running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&p.id)
                {
                    r.held = Some(lease_ms(secs));
                    r.renewed_at = Some(std::time::Instant::now());
                }
            }
            Ok(false) => {
                release(running, p.id);
                continue;
            }
            Err(e) => {
                release(running, p.id);
                return Err(e);
            }
        }
        let (state, worker, run_map, pid) =
            (state.clone(), worker.to_string(), running.clone(), p.id);
        let running = run_map.clone();
        let task = tokio::spawn(async move {
            let outcome = round(&state, &p, &running).await;
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
            if let Some(e) = &error {
                match store::capture_error(&state.db, p.id).await {
                    Ok(None) => app::ssr::notify::events::capture_failed(&state, &p, e).await,
                    Ok(Some(_)) => {} // said when it started failing
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "reading a capture's state")
                    }
                }
            }
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
        if let Some(r) = run_map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&pid)
            && r.busy
        {
            r.round = Some(task.abort_handle());
        }
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
        r.round = None;
        if r.held.is_none() {
            // Not (or no longer) this worker's: what it kept open ends.
            *r = Running::default();
        }
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
    let selection: Selection =
        serde_json::from_str(&p.selection).context("the policy's selection")?;
    app::ssr::check_not_protected(state, &SourceUrl::parse(&url)?)
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut repo = crate::runner::open_repo(state, &target).await?;
    if let SourceUrl::Sqlite(_) = SourceUrl::parse(&url)? {
        return sqlite_round(state, p, running, &mut repo, url, selection).await;
    }
    let mut opts = CaptureOptions::new(url, &capture_name(p.id));
    opts.selection = Selection {
        include: selection.include,
        exclude: selection.exclude,
        columns: Default::default(),
    };
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
        if !has_base {
            queue_base(state, p).await?;
        }
        if let Some(r) = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&p.id)
        {
            r.setup_slot = Some(setup.slot);
        }
    }
    // Taken out for the round (it holds the replication stream), put back after.
    let mut position = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&p.id)
        .map(|r| std::mem::take(&mut r.position))
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
        if result.is_err() {
            // Set up again next time (the slot may have been dropped); the stream, if
            // any, ends when `position` is dropped.
            r.setup_slot = None;
        } else {
            r.position = position;
        }
    }
    Ok(result?)
}

/// Queues a backup of the policy (unless one is already waiting): the snapshot a
/// PostgreSQL capture's changes replay on, and what a SQLite capture's rounds follow
/// in retention.
async fn queue_base(state: &AppState, p: &store::PolicyRow) -> Result<()> {
    if store::backup_pending(&state.db, p.id).await? {
        return Ok(());
    }
    let job = store::backup_job(
        &state.db,
        p,
        format!("Base snapshot for continuous capture: {}", p.name),
        None,
    )
    .await?;
    state.enqueue(job).await?;
    tracing::info!(policy = %p.name, "queued the base snapshot of a continuous capture");
    Ok(())
}

/// One round of a SQLite policy's capture (engine::capture::sqlite): a snapshot when
/// the database changed, else a moved head. The watching connection stays open
/// between rounds; after an error the next round starts afresh (a snapshot).
async fn sqlite_round(
    state: &AppState,
    p: &store::PolicyRow,
    running: &Arc<Mutex<HashMap<i64, Running>>>,
    repo: &mut engine::repo::Repository,
    url: engine::secret::Secret<String>,
    selection: Selection,
) -> Result<engine::capture::Round> {
    let kept = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&p.id)
        .and_then(|r| r.sqlite.take());
    let mut capture = match kept {
        Some(c) => c,
        None => {
            let display = SourceUrl::parse(&url)?.display();
            let has_base = repo
                .snapshots()
                .await?
                .iter()
                .any(|(_, s)| s.source.url == display && s.capture.is_none());
            if !has_base {
                queue_base(state, p).await?;
            }
            SqliteCapture::new(
                url,
                &capture_name(p.id),
                selection,
                [
                    ("policy".to_string(), p.name.clone()),
                    ("policy-id".to_string(), p.id.to_string()),
                ]
                .into(),
            )?
        }
    };
    let round = capture.round(repo, &engine::progress::NoProgress).await?;
    if let Some(r) = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&p.id)
    {
        r.sqlite = Some(capture);
    }
    Ok(engine::capture::Round {
        slot: round.name,
        segment: round.snapshot.map(String::from),
        transactions: 0,
        changes: 0,
        covers_until_ms: Some(round.covers_until_ms),
        lag_bytes: 0,
        drained: true,
    })
}

/// The capture name of a policy: its slot is `tablesafe_p<id>_<random>`.
pub fn capture_name(policy: i64) -> String {
    format!("p{policy}")
}
