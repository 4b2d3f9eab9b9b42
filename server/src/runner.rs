//! The job runner inside `tablesafe serve`: claims queued jobs from the history
//! database (several workers may share it; a claim is one conditional UPDATE), runs them
//! through the engine, reports progress and a heartbeat twice a second, and stops a job
//! whose cancellation was requested at the engine's next check. A heartbeat that finds
//! the job no longer running on this worker (another worker failed it as abandoned after
//! this one went silent, or it was reassigned) stops it the same way, and then nothing of
//! it is recorded: no snapshot, retention, verification or drill result, no outcome.

use anyhow::{Context, Result, anyhow, bail};
use app::api::history::{self, glob_literal};
use app::api::jobs::{JobParams, JobStatus};
use app::ssr::notify::events;
use app::ssr::secrets::Kind;
use app::ssr::{AppState, store};
use engine::progress::Progress;
use engine::repo::Repository;
use engine::selection::Selection;
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A running job whose worker has been silent this long is failed by other workers.
const STALE_MS: i64 = 60_000;

/// Starts the runner. `worker` names this worker; jobs it left running in a previous
/// life are failed at once (with a reason, and can be retried).
///
/// `slots` jobs run at once (`serve --jobs`): as many claim loops, all under this
/// worker's name; the jobs it left running in a previous life are failed once, before
/// any loop starts.
pub fn spawn(state: AppState, worker: String, slots: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match store::fail_abandoned(&state.db, &worker, STALE_MS).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                tracing::warn!(
                    jobs = ids.len(),
                    "marked jobs interrupted by a restart as failed"
                );
                announce_abandoned(&state, &ids).await;
            }
            Err(e) => tracing::error!(error = %e, "could not check for interrupted jobs"),
        }
        // Its own task: a worker whose every slot runs a long job still takes over the
        // jobs of a worker that died.
        tokio::spawn(sweep_loop(state.clone()));
        let loops: Vec<_> = (0..slots.max(1))
            .map(|_| tokio::spawn(claim_loop(state.clone(), worker.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
    })
}

/// How often a worker looks for jobs abandoned by a silent one: a job is failed at
/// most STALE_MS + SWEEP after its worker died.
const SWEEP: Duration = Duration::from_secs(10);

/// Fails the jobs of workers silent for [`STALE_MS`], every [`SWEEP`], until the
/// process ends (each job is failed by one worker: the UPDATE claims it).
async fn sweep_loop(state: AppState) {
    loop {
        tokio::time::sleep(SWEEP).await;
        match store::fail_abandoned(&state.db, "", STALE_MS).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                tracing::warn!(jobs = ?ids, "failed jobs whose worker fell silent");
                announce_abandoned(&state, &ids).await;
            }
            Err(e) => tracing::error!(error = %e, "sweeping abandoned jobs"),
        }
    }
}

/// Claims and runs jobs one after the other, until the process ends.
async fn claim_loop(state: AppState, worker: String) {
    loop {
        match store::claim(&state.db, &worker).await {
            Ok(Some(job)) => run(&state, job).await,
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), state.jobs_queued.notified())
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "claiming a job");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Jobs failed because their worker went away are events like any other failure. A
/// backup that no one started by hand (a scheduled slot, a trigger, a capture's base
/// snapshot) is queued again, once: no one is there to press *Retry*, and its slot
/// would otherwise be lost until the next one. A re-run abandoned in turn is not run a
/// third time.
async fn announce_abandoned(state: &AppState, ids: &[i64]) {
    for id in ids {
        if let Ok(Some(job)) = store::job(&state.db, *id).await {
            events::job_finished(
                state,
                &job,
                JobStatus::Failed,
                job.error.as_deref(),
                None,
                false,
            )
            .await;
            if let Err(e) = rerun_unattended(state, &job).await {
                tracing::error!(error = %format!("{e:#}"), job = id, "queueing an abandoned backup again");
            }
        }
    }
}

/// [`announce_abandoned`]'s re-run of an unattended backup.
async fn rerun_unattended(state: &AppState, job: &store::JobRow) -> Result<()> {
    let Some(policy_id) = job.policy_id else {
        return Ok(());
    };
    if job.kind != app::api::jobs::JobKind::Backup
        || job.created_by.is_some()
        || job.retry_of.is_some()
    {
        return Ok(());
    }
    let Some(policy) = store::policy(&state.db, policy_id).await? else {
        return Ok(());
    };
    // Another backup of the policy already queued or running does the slot's work, as
    // does the scheduler when a slot is due (after a restart: missed slots run once); a
    // paused source or target runs nothing.
    if policy.enabled == 0
        || policy
            .next_run_at
            .is_some_and(|t| t <= app::ssr::db::now_ms())
        || store::policy_busy(&state.db.pool, policy_id).await?
        || store::policy_hold(&state.db, &policy).await?.is_some()
    {
        return Ok(());
    }
    let again = state
        .enqueue(store::NewJob {
            policy_id: job.policy_id,
            source_id: job.source_id,
            target_id: job.target_id,
            params: serde_json::from_str(&job.params).context("reading a job's parameters")?,
            title: job.title.clone(),
            created_by: None,
            rows_total: job.rows_total,
            bytes_total: job.bytes_total,
            retry_of: Some(job.id),
        })
        .await?;
    let _ = store::log(
        &state.db,
        job.id,
        "info",
        &format!("queued again as job {again}: no one started it by hand, so its worker's end does not lose its run"),
    )
    .await;
    tracing::info!(job = job.id, again, "queued an abandoned backup again");
    Ok(())
}

/// A verify that found damage (rather than failing to run): its own event.
#[derive(Debug)]
struct Damage(String);

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damage found: {}", self.0)
    }
}

impl std::error::Error for Damage {}

/// What the engine reports, shared with the heartbeat task.
struct JobProgress {
    job: i64,
    /// The worker that claimed the job: heartbeats count only while it still owns it.
    worker: String,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// The rows the engine expects (0: not known yet), and whether that reached the
    /// history.
    expected: AtomicU64,
    expected_written: AtomicBool,
    table: Mutex<Option<String>>,
    cancelled: AtomicBool,
    /// A heartbeat found the job no longer running on this worker.
    lost: AtomicBool,
    logs: Mutex<Vec<String>>,
}

impl Progress for JobProgress {
    fn wants_planned(&self) -> bool {
        true
    }
    fn planned(&self, rows: u64) {
        self.expected.store(rows, Ordering::Relaxed);
    }
    fn table_started(&self, table: &str, rows: Option<u64>) {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = Some(table.to_string());
        let msg = match rows {
            Some(r) => format!("table {table}: started ({r} rows)"),
            None => format!("table {table}: started"),
        };
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }
    fn advanced(&self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn table_finished(&self, table: &str) {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("table {table}: done"));
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.lost.load(Ordering::Relaxed)
    }
}

impl JobProgress {
    fn new(job: &store::JobRow) -> Self {
        JobProgress {
            job: job.id,
            worker: job.worker.clone().unwrap_or_default(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            expected_written: AtomicBool::new(false),
            table: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            logs: Mutex::new(Vec::new()),
        }
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Writes progress and pending log lines; learns whether to cancel, and whether
    /// the job is still this worker's.
    async fn flush(&self, state: &AppState) {
        let job = self.job;
        let logs = std::mem::take(&mut *self.logs.lock().unwrap_or_else(|p| p.into_inner()));
        for line in logs {
            let _ = store::log(&state.db, job, "info", &line).await;
        }
        let expected = self.expected.load(Ordering::Relaxed);
        if expected > 0 && !self.expected_written.load(Ordering::Relaxed) {
            match store::set_rows_total(&state.db, job, &self.worker, expected as i64).await {
                Ok(()) => self.expected_written.store(true, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, job, "recording a job's expected rows"),
            }
        }
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match store::heartbeat(
            &state.db,
            job,
            &self.worker,
            self.rows.load(Ordering::Relaxed) as i64,
            self.bytes.load(Ordering::Relaxed) as i64,
            table.as_deref(),
        )
        .await
        {
            Ok(store::Beat::Owned) => {}
            Ok(store::Beat::CancelRequested) => self.cancelled.store(true, Ordering::Relaxed),
            Ok(store::Beat::Lost) => {
                if !self.lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        job,
                        worker = %self.worker,
                        "the job is no longer running on this worker; stopping it"
                    );
                }
            }
            // The database is unreachable: carry on; if this lasts, another worker
            // fails the job as abandoned and the next heartbeat learns it.
            Err(e) => tracing::warn!(error = %e, job, "job heartbeat"),
        }
    }

    /// Fails unless the job is still this worker's, checked now: called before a job
    /// records anything in the history, so that a job taken over between two
    /// heartbeats does not write results another worker's outcome contradicts.
    async fn still_owned(&self, state: &AppState) -> Result<()> {
        self.flush(state).await;
        if self.is_lost() {
            return Err(engine::Error::Cancelled.into());
        }
        Ok(())
    }
}

/// The result JSON and the snapshot a finished job made.
type Outcome = (serde_json::Value, Option<String>);

async fn run(state: &AppState, job: store::JobRow) {
    let id = job.id;
    tracing::info!(job = id, kind = %job.kind, "job started");
    let _ = store::log(&state.db, id, "info", &format!("started: {}", job.title)).await;
    let progress = std::sync::Arc::new(JobProgress::new(&job));
    let ticker = {
        let (state, progress) = (state.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                progress.flush(&state).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let outcome = execute(state, &job, progress.as_ref()).await;
    ticker.abort();
    progress.flush(state).await;
    if progress.is_lost() {
        // Whatever the engine returned, the job's outcome belongs to whoever took it
        // (a failure as abandoned, already announced): record and announce nothing.
        let what = if outcome.is_ok() {
            "what it had finished is not recorded"
        } else {
            "its work was stopped, and nothing of it recorded"
        };
        tracing::warn!(job = id, "job stopped: no longer this worker's");
        let _ = store::log(
            &state.db,
            id,
            "warn",
            &format!(
                "worker {} stopped this job: it is no longer running there (failed as abandoned or taken over by another worker meanwhile); {what}",
                progress.worker
            ),
        )
        .await;
        return;
    }
    let damage = matches!(&outcome, Err(e) if e.downcast_ref::<Damage>().is_some());
    let (status, error, result, snapshot) = match outcome {
        Ok((result, snapshot)) => (
            JobStatus::Succeeded,
            None,
            Some(result.to_string()),
            snapshot,
        ),
        Err(e) => {
            let cancelled = matches!(
                e.downcast_ref::<engine::Error>(),
                Some(engine::Error::Cancelled)
            );
            if cancelled {
                (
                    JobStatus::Cancelled,
                    Some("cancelled by a user".to_string()),
                    None,
                    None,
                )
            } else {
                (JobStatus::Failed, Some(format!("{e:#}")), None, None)
            }
        }
    };
    let level = if status == JobStatus::Succeeded {
        "info"
    } else {
        "error"
    };
    let line = match &error {
        Some(e) => format!("{status}: {e}"),
        None => status.to_string(),
    };
    let _ = store::log(&state.db, id, level, &line).await;
    let worker = job.worker.as_deref().unwrap_or_default();
    // A history database that went away (a PostgreSQL restart or failover) is waited
    // for: the job must not be left `running`. A retry whose first attempt was applied
    // before the connection broke finds the job already ended as this worker ended it.
    let finished = app::ssr::db::through_outage("the end of the job", |retry| {
        let (error, result, snapshot) = (error.as_deref(), result.as_deref(), snapshot.as_deref());
        async move {
            let done =
                store::finish(&state.db, id, worker, status, error, result, snapshot).await?;
            if done || !retry {
                return Ok(done);
            }
            Ok(store::job(&state.db, id).await?.is_some_and(|j| {
                j.status == status
                    && j.worker.as_deref() == Some(worker)
                    && j.error.as_deref() == error
            }))
        }
    })
    .await;
    match finished {
        Ok(true) => {}
        Ok(false) => {
            // Another worker gave up on this one (no heartbeat) and failed the job;
            // that outcome, already announced, stands.
            tracing::warn!(
                job = id,
                status = status.as_str(),
                "the job was ended by another worker meanwhile; this outcome is not recorded"
            );
            let _ = store::log(
                &state.db,
                id,
                "warn",
                &format!("this worker finished the job ({status}) after it had been failed as abandoned; the failure stands"),
            )
            .await;
            return;
        }
        Err(e) => {
            // Not recorded: the job stays `running` until a sweep fails it as abandoned
            // (and announces that); announcing this outcome too would say two things.
            tracing::error!(error = %e, job = id, "could not record the end of a job");
            return;
        }
    }
    crate::metrics::job_finished(
        job.kind.as_str(),
        status.as_str(),
        started.elapsed().as_secs_f64(),
    );
    events::job_finished(
        state,
        &job,
        status,
        error.as_deref(),
        result.as_deref(),
        damage,
    )
    .await;
    tracing::info!(job = id, status = status.as_str(), "job finished");
}

async fn execute(state: &AppState, job: &store::JobRow, progress: &JobProgress) -> Result<Outcome> {
    let params: JobParams =
        serde_json::from_str(&job.params).context("the job's parameters are damaged")?;
    match params {
        JobParams::Backup { policy_id } => backup(state, job, policy_id, progress).await,
        JobParams::Prune { policy_id } => {
            let policy = store::policy(&state.db, policy_id)
                .await?
                .ok_or_else(|| anyhow!("the policy no longer exists"))?;
            let report = apply_retention(state, job, &policy, None, progress).await?;
            Ok((json!(report), None))
        }
        JobParams::Verify {
            target_id,
            snapshot_id,
        } => verify(state, target_id, &snapshot_id, progress).await,
        JobParams::Drill { policy_id } => drill(state, job, policy_id, progress).await,
        JobParams::Restore {
            snapshot,
            dest_source_id,
            tables,
            columns,
            rename,
            mode,
            safety_backup,
            at_ms,
            conditions,
        } => {
            let (target, snap) = snapshot_and_target(state, snapshot).await?;
            let mut repo = open_repo(state, &target).await?;
            let dest = store::source(&state.db, dest_source_id)
                .await?
                .ok_or_else(|| anyhow!("the destination source no longer exists"))?;
            let dest_url = state.secrets.open(Kind::SourceUrl, &dest.sealed_url)?;
            // Checked again at run time: the job may have waited for approvals while
            // the server's settings or the file changed.
            // (The job log is read by operators and requesters: no details.)
            app::ssr::check_destination(
                state,
                &engine::source::SourceUrl::parse(&dest_url)?,
                false,
            )
            .map_err(|e| anyhow!(e))?;
            let opts = engine::restore::RestoreOptions {
                snapshot: snap.snapshot_id.clone(),
                dest: dest_url,
                selection: Selection {
                    include: tables.iter().map(|t| glob_literal(t)).collect(),
                    exclude: Vec::new(),
                    columns,
                },
                rename,
                mode: mode.parse()?,
                jobs: engine::restore::default_jobs(),
                parallel_min_bytes: engine::restore::DEFAULT_PARALLEL_MIN_BYTES,
                at_ms,
                filter: engine::filter::RowFilter::parse(&conditions)?,
                objects: Default::default(),
            };
            let plan = engine::restore::plan(&repo, &opts).await?;
            // Tables whose rows the restore drops or changes get the safety backup.
            let replaced: Vec<String> = plan
                .tables
                .iter()
                .filter(|t| {
                    matches!(t.action, engine::restore::Action::Replace)
                        || t.action.merge().is_some()
                })
                .map(|t| t.dest_table.clone())
                .collect();
            let mut safety_snapshot = None;
            if safety_backup && !replaced.is_empty() {
                // What is about to be dropped goes into the same repository first; if that
                // fails, nothing is restored.
                let backup_opts = engine::backup::BackupOptions {
                    source: opts.dest.clone(),
                    selection: Selection {
                        include: replaced.iter().map(|t| glob_literal(t)).collect(),
                        exclude: Vec::new(),
                        columns: Default::default(),
                    },
                    tags: [
                        (
                            "reason".to_string(),
                            "safety backup before a restore".to_string(),
                        ),
                        ("job".to_string(), job.id.to_string()),
                    ]
                    .into(),
                };
                let summary = engine::backup::backup(&mut repo, &backup_opts, progress)
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "the safety backup of {} failed, so nothing was restored: {e}",
                            replaced.join(", ")
                        )
                    })?;
                progress.still_owned(state).await?;
                record_snapshot(state, &target, None, dest.id, job, &summary, None).await?;
                safety_snapshot = Some(summary.id.clone());
                let _ = store::log(
                    &state.db,
                    job.id,
                    "info",
                    &format!(
                        "safety backup of {}: snapshot {}",
                        replaced.join(", "),
                        summary.id.short()
                    ),
                )
                .await;
            }
            for t in &plan.tables {
                let _ = store::log(
                    &state.db,
                    job.id,
                    "info",
                    &format!(
                        "{:?} {} from {}: {} rows",
                        t.action, t.dest_table, t.source_table, t.rows
                    ),
                )
                .await;
            }
            progress.still_owned(state).await?;
            let done = engine::restore::execute(&repo, &plan, progress).await?;
            for note in done.iter().flat_map(|t| &t.notes) {
                let _ = store::log(&state.db, job.id, "warn", note).await;
            }
            Ok((
                json!({ "snapshot": snap.snapshot_id, "dest": dest.name, "tables": done,
                        "safety_snapshot": safety_snapshot }),
                None,
            ))
        }
    }
}

/// A restore drill of the policy (`engine::drill`): the snapshot its plan picks, into
/// a scratch database, checked; the evidence is stored whatever the outcome, and a
/// drill that did not pass fails the job (so `job.failed` notifications see it).
async fn drill(
    state: &AppState,
    job: &store::JobRow,
    policy_id: i64,
    progress: &JobProgress,
) -> Result<Outcome> {
    use app::ssr::drills;
    let db = &state.db;
    let policy = store::policy(db, policy_id)
        .await?
        .ok_or_else(|| anyhow!("the policy no longer exists"))?;
    let source = store::source(db, policy.source_id)
        .await?
        .ok_or_else(|| anyhow!("the policy's source no longer exists"))?;
    let plan = drills::plan(db, policy_id).await?;
    let pick = plan.as_ref().map_or("latest", |p| p.pick.as_str());
    let snaps = drills::policy_snapshots(db, policy_id, policy.target_id).await?;
    let snap = match pick {
        "random" if !snaps.is_empty() => &snaps[rand::random::<u64>() as usize % snaps.len()],
        _ => snaps.last().ok_or_else(|| {
            anyhow!("the policy has no snapshot to drill yet: run a backup first")
        })?,
    };
    let scratch = if source.engine != engine::model::Engine::Sqlite {
        let id = plan
            .as_ref()
            .and_then(|p| p.scratch_source_id)
            .ok_or_else(|| {
                anyhow!(
                    "a PostgreSQL or MySQL drill needs a scratch server: set one in the policy's drill plan"
                )
            })?;
        let scratch = store::source(db, id)
            .await?
            .ok_or_else(|| anyhow!("the drill's scratch source no longer exists"))?;
        engine::drill::Scratch::parse(&state.secrets.open(Kind::SourceUrl, &scratch.sealed_url)?)
    } else {
        // The drill makes its own private directory in there (engine::drill::Scratch).
        engine::drill::Scratch::Dir(std::env::temp_dir())
    };
    let assertions: Vec<String> = plan
        .as_ref()
        .and_then(|p| serde_json::from_str(&p.assertions).ok())
        .unwrap_or_default();
    let target = store::target(db, policy.target_id)
        .await?
        .ok_or_else(|| anyhow!("the policy's target no longer exists"))?;
    let repo = open_repo(state, &target).await?;
    let _ = store::log(
        db,
        job.id,
        "info",
        &format!(
            "drilling the {pick} snapshot {} of {}",
            &snap.snapshot_id[..12],
            policy.name
        ),
    )
    .await;
    let opts = engine::drill::DrillOptions {
        snapshot: snap.snapshot_id.clone(),
        scratch,
        assertions,
        jobs: engine::restore::default_jobs(),
    };
    let report = engine::drill::drill(&repo, &opts, progress).await?;
    progress.still_owned(state).await?;
    drills::record(
        db,
        (policy.id, &policy.name),
        Some(job.id),
        target.id,
        &report,
    )
    .await?;
    for line in crate::engine_cmd::drill_text(&report).lines() {
        let level = if line.contains("FAIL") || line.starts_with("error") {
            "error"
        } else {
            "info"
        };
        let _ = store::log(db, job.id, level, line).await;
    }
    let _ = app::ssr::audit::append(
        db,
        &app::ssr::audit::Event {
            user_id: None,
            username: "tablesafe".into(),
            address: String::new(),
            action: "drill".into(),
            target: format!(
                "policy {}: snapshot {}",
                policy.name,
                report.snapshot.short()
            ),
            outcome: if report.passed {
                history::Outcome::Ok
            } else {
                history::Outcome::Failed
            },
            detail: format!(
                "{} tables, {} rows restored in {} ms{}",
                report.tables.len(),
                report.rows,
                report.restore_ms,
                report
                    .error
                    .as_ref()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            ),
        },
    )
    .await;
    if !report.passed {
        bail!(
            "the drill failed: snapshot {} did not prove restorable{}",
            report.snapshot.short(),
            report
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok((json!(report), None))
}

async fn snapshot_and_target(
    state: &AppState,
    snapshot: i64,
) -> Result<(store::TargetRow, store::SnapshotRow)> {
    let snap = store::snapshot(&state.db, snapshot)
        .await?
        .ok_or_else(|| anyhow!("the snapshot is no longer in the history"))?;
    let target = store::target(&state.db, snap.target_id)
        .await?
        .ok_or_else(|| anyhow!("the snapshot's target no longer exists"))?;
    Ok((target, snap))
}

pub(crate) async fn open_repo(state: &AppState, target: &store::TargetRow) -> Result<Repository> {
    let password = state
        .secrets
        .open(Kind::RepositoryPassword, &target.sealed_password)?;
    app::ssr::open_target(state, target, &password).await
}

async fn backup(
    state: &AppState,
    job: &store::JobRow,
    policy_id: i64,
    progress: &JobProgress,
) -> Result<Outcome> {
    // Read through an outage of the history database too (a job claimed just before
    // a failover waits for it rather than failing).
    let (policy, source, target, hold) =
        app::ssr::db::through_outage("reading the job's policy", |_| async {
            let policy = store::policy(&state.db, policy_id)
                .await?
                .ok_or_else(|| anyhow!("the policy no longer exists"))?;
            let source = store::source(&state.db, policy.source_id)
                .await?
                .ok_or_else(|| anyhow!("the policy's source no longer exists"))?;
            let target = store::target(&state.db, policy.target_id)
                .await?
                .ok_or_else(|| anyhow!("the policy's target no longer exists"))?;
            let hold = store::policy_hold(&state.db, &policy).await?;
            Ok((policy, source, target, hold))
        })
        .await?;
    // Queued before its source or target was paused (or retried since): not run.
    if let Some(why) = hold {
        return Err(anyhow!(why));
    }
    let url = state.secrets.open(Kind::SourceUrl, &source.sealed_url)?;
    // Checked at every run, not only when the source was added: --sqlite-dirs may have
    // changed since, or a path been swapped for a link.
    app::ssr::check_not_protected(state, &engine::source::SourceUrl::parse(&url)?)
        .map_err(|e| anyhow!(e))?;
    let selection: Selection = serde_json::from_str(&policy.selection)?;
    // Without the index: the backup loads what it needs under its lock (a few reads
    // through the source's hint, however many snapshots the target holds).
    let password = state
        .secrets
        .open(Kind::RepositoryPassword, &target.sealed_password)?;
    let storage = app::ssr::target_storage(&state.secrets, &target)?;
    let mut repo = Repository::open_in_lazy(storage, Some(&password)).await?;
    let opts = engine::backup::BackupOptions {
        source: url,
        selection,
        tags: [
            ("policy".to_string(), policy.name.clone()),
            ("policy-id".to_string(), policy.id.to_string()),
            ("job".to_string(), job.id.to_string()),
        ]
        .into(),
    };
    let summary = engine::backup::backup(&mut repo, &opts, progress).await?;
    // An empty source is not a successful backup of it (the engine keeps empty
    // snapshots for capture rounds; a scheduled backup must not count as one).
    if summary.snapshot.tables.is_empty() {
        bail!("the source has no tables: nothing was backed up");
    }
    crate::metrics::backup_bytes(
        summary.snapshot.tables.iter().map(|t| t.bytes).sum(),
        summary.snapshot.bytes_stored,
    );
    let s = &summary.snapshot;
    progress.still_owned(state).await?;
    record_snapshot(
        state,
        &target,
        Some(policy.id),
        source.id,
        job,
        &summary,
        None,
    )
    .await?;
    let _ = store::log(
        &state.db,
        job.id,
        "info",
        &format!(
            "snapshot {}: {} tables, {} rows, {} bytes read, {} bytes stored",
            summary.id.short(),
            s.tables.len(),
            s.total_rows(),
            s.total_bytes(),
            s.bytes_stored
        ),
    )
    .await;
    // Copies to the policy's other targets: each that is reachable gets every snapshot
    // of the policy it lacks (so a target that was down catches up now). A target that
    // fails fails only its copy: the backup itself succeeded.
    let mut copies = Vec::new();
    let copy_targets = app::ssr::db::through_outage("reading the policy's copy targets", |_| {
        store::copy_targets(&state.db, policy.id)
    })
    .await?;
    for copy_target in copy_targets {
        let row = store::target(&state.db, copy_target).await?;
        let name = row
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("#{copy_target}"));
        if row.is_some_and(|t| t.paused_at.is_some()) {
            let _ = store::log(
                &state.db,
                job.id,
                "info",
                &format!("copy to {name}: skipped, the target is paused (the first run after it is resumed catches up)"),
            )
            .await;
            copies.push(json!({"target": name, "ok": false, "error": "target paused"}));
            continue;
        }
        let outcome = copy_to(state, job, &policy, &repo, &target, copy_target, progress).await;
        match outcome {
            Ok(n) => {
                let _ = store::log(
                    &state.db,
                    job.id,
                    "info",
                    &format!("copy to {name}: {n} snapshots copied, complete"),
                )
                .await;
                copies.push(json!({"target": name, "ok": true, "copied": n}));
            }
            Err(e) => {
                let _ = store::log(
                    &state.db,
                    job.id,
                    "warn",
                    &format!("copy to {name} failed (the next run catches up): {e:#}"),
                )
                .await;
                copies.push(json!({"target": name, "ok": false, "error": format!("{e:#}")}));
            }
        }
    }
    // Retention after each successful backup. A failed prune does not fail the backup:
    // the snapshot is safe, and the next run prunes again.
    let mut pruned = serde_json::Value::Null;
    if !app::api::jobs::parse_retention(&policy.retention).is_empty() {
        match apply_retention(state, job, &policy, Some(&mut repo), progress).await {
            Ok(r) => pruned = r,
            Err(e) => {
                let _ = store::log(
                    &state.db,
                    job.id,
                    "warn",
                    &format!("retention was not applied: {e:#}"),
                )
                .await;
            }
        }
    }
    Ok((
        json!({
            "snapshot": summary.id, "tables": s.tables.len(), "rows": s.total_rows(),
            "bytes": s.total_bytes(), "bytes_stored": s.bytes_stored, "skipped": s.skipped,
            "retention": pruned, "copies": copies,
        }),
        Some(summary.id.to_string()),
    ))
}

/// Copies every snapshot of the policy that `to` lacks from the policy's target, and
/// records each copy in the history; returns how many were copied.
async fn copy_to(
    state: &AppState,
    job: &store::JobRow,
    policy: &store::PolicyRow,
    src: &Repository,
    from: &store::TargetRow,
    to: i64,
    progress: &JobProgress,
) -> Result<usize> {
    let dest = store::target(&state.db, to)
        .await?
        .ok_or_else(|| anyhow!("the copy target no longer exists"))?;
    let mut dst = open_repo(state, &dest).await?;
    let policy_id = policy.id.to_string();
    let ids: Vec<String> = src
        .snapshots()
        .await?
        .into_iter()
        .filter(|(_, s)| s.tags.get("policy-id") == Some(&policy_id))
        .map(|(id, _)| id.into())
        .collect();
    let report = engine::copy::copy(src, &mut dst, Some(&ids), progress).await?;
    for c in &report.copied {
        progress.still_owned(state).await?;
        let snapshot = dst.load_snapshot_by_id(&c.dest_id).await?;
        let origin = store::snapshot_row_id(&state.db, from.id, &c.source_id).await?;
        let summary = engine::backup::BackupSummary {
            id: c.dest_id.clone(),
            snapshot,
            changes_only: Vec::new(),
        };
        record_snapshot(
            state,
            &dest,
            Some(policy.id),
            policy.source_id,
            job,
            &summary,
            origin,
        )
        .await?;
    }
    Ok(report.copied.len())
}

/// Prunes the policy's snapshots in one target and removes them from the history.
async fn prune_target(
    state: &AppState,
    job: &store::JobRow,
    policy: &store::PolicyRow,
    target: &store::TargetRow,
    rules: &app::api::jobs::Retention,
    repo: &mut Repository,
    progress: &JobProgress,
) -> Result<engine::prune::PruneReport> {
    // A prune deletes data: not for a job that is no longer this worker's.
    progress.still_owned(state).await?;
    let tz: chrono_tz::Tz = policy.timezone.parse().unwrap_or(chrono_tz::UTC);
    let report = engine::prune::prune(
        repo,
        &engine::prune::PruneOptions {
            rules: *rules,
            tz,
            only_tags: [("policy-id".to_string(), policy.id.to_string())].into(),
            dry_run: false,
        },
    )
    .await?;
    store::forget_snapshots(&state.db, target.id, &report.forgotten).await?;
    let mut line = format!(
        "retention ({}) in {}: kept {}, removed {} snapshots, freed {} bytes",
        rules.describe(),
        target.name,
        report.decisions.len() - report.forgotten.len(),
        report.forgotten.len(),
        report.bytes_freed
    );
    if report.packs_deferred > 0 {
        line.push_str(&format!(
            "; {} bytes left for the next prune (in use by {})",
            report.bytes_deferred,
            report.waiting_for.join(", ")
        ));
    }
    let _ = store::log(&state.db, job.id, "info", &line).await;
    Ok(report)
}

/// Prunes the policy's snapshots by its retention rules (exactly what the console's
/// preview shows), removes them from the history, and logs what happened. `primary`:
/// the policy target's repository, if the caller has it open.
async fn apply_retention(
    state: &AppState,
    job: &store::JobRow,
    policy: &store::PolicyRow,
    primary: Option<&mut Repository>,
    progress: &JobProgress,
) -> Result<serde_json::Value> {
    let rules = app::api::jobs::parse_retention(&policy.retention);
    if rules.is_empty() {
        bail!("the policy has no retention rules");
    }
    let target = store::target(&state.db, policy.target_id)
        .await?
        .ok_or_else(|| anyhow!("the policy's target no longer exists"))?;
    // A paused target is under maintenance: nothing writes to it, prune included.
    if target.paused_at.is_some() {
        bail!(
            "target {} is paused: resume it on Targets to apply retention there",
            target.name
        );
    }
    let report = match primary {
        Some(repo) => prune_target(state, job, policy, &target, &rules, repo, progress).await?,
        None => {
            let mut repo = open_repo(state, &target).await?;
            prune_target(state, job, policy, &target, &rules, &mut repo, progress).await?
        }
    };
    // The copies get the same rules (each copy is pruned in its own repository).
    for t in store::copy_targets(&state.db, policy.id).await? {
        let Some(t) = store::target(&state.db, t).await? else {
            continue;
        };
        if t.paused_at.is_some() {
            let _ = store::log(
                &state.db,
                job.id,
                "info",
                &format!(
                    "retention on the copy in {}: skipped, the target is paused",
                    t.name
                ),
            )
            .await;
            continue;
        }
        let pruned = match open_repo(state, &t).await {
            Ok(mut repo) => prune_target(state, job, policy, &t, &rules, &mut repo, progress).await,
            Err(e) => Err(e),
        };
        if let Err(e) = pruned {
            let _ = store::log(
                &state.db,
                job.id,
                "warn",
                &format!("retention on the copy in {} was not applied: {e:#}", t.name),
            )
            .await;
        }
    }
    Ok(json!({
        "kept": report.decisions.iter().filter(|d| d.keep).map(|d| &d.id).collect::<Vec<_>>(),
        "removed": report.forgotten,
        "bytes_freed": report.bytes_freed,
        "bytes_deferred": report.bytes_deferred,
    }))
}

/// Adds a snapshot a job made to the history the console lists.
async fn record_snapshot(
    state: &AppState,
    target: &store::TargetRow,
    policy: Option<i64>,
    source: i64,
    job: &store::JobRow,
    summary: &engine::backup::BackupSummary,
    copy_of: Option<i64>,
) -> Result<()> {
    let worker = job.worker.as_deref().unwrap_or_default();
    let job = job.id;
    let details: Vec<_> = summary
        .snapshot
        .tables
        .iter()
        .map(|t| json!({"name": t.name, "rows": t.rows, "bytes": t.bytes, "segment": t.segment, "segment_bytes": t.segment_bytes}))
        .collect();
    let details = serde_json::to_string(&details)?;
    // Waited for through an outage of the history database; a retry whose first
    // attempt was applied before the connection broke finds the snapshot recorded.
    app::ssr::db::through_outage("the new snapshot", |retry| {
        let details = &details;
        async move {
            if retry
                && store::snapshot_row_id(&state.db, target.id, &summary.id)
                    .await?
                    .is_some()
            {
                return Ok(());
            }
            let recorded = store::insert_snapshot(
                &state.db,
                target.id,
                &summary.id,
                policy,
                Some(source),
                Some(job),
                &summary.snapshot,
                details,
                copy_of,
                Some(worker),
            )
            .await?;
            match recorded {
                Some(_) => Ok(()),
                // Failed as abandoned by another worker while this one could not reach
                // the history database: that outcome stands, and this snapshot is not
                // recorded (it stays in the repository, unlisted).
                None => Err(engine::Error::Cancelled.into()),
            }
        }
    })
    .await
}

/// Repairs a damaged repository from the copy targets of the policies that back up
/// into it (engine::repair), one after another until one makes it whole; each attempt
/// goes to the job's log and the audit log. True when the repository checks clean.
async fn self_heal(
    state: &AppState,
    target: &store::TargetRow,
    repo: &mut Repository,
    progress: &JobProgress,
) -> Result<bool> {
    let mut copies: Vec<i64> = Vec::new();
    for (policy_id, copy_target) in store::all_copy_targets(&state.db).await? {
        let backs_up_here = store::policy(&state.db, policy_id)
            .await?
            .is_some_and(|p| p.target_id == target.id);
        if backs_up_here && !copies.contains(&copy_target) {
            copies.push(copy_target);
        }
    }
    let log = |msg: String| {
        progress
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg)
    };
    if copies.is_empty() {
        log("damage found; no copy target to repair from".into());
        return Ok(false);
    }
    for copy_id in copies {
        let Some(copy_target) = store::target(&state.db, copy_id).await? else {
            continue;
        };
        let outcome = async {
            let copy = open_repo(state, &copy_target).await?;
            Ok::<_, anyhow::Error>(engine::repair::repair(repo, &copy, progress).await?)
        }
        .await;
        let (ok, detail) = match &outcome {
            Ok(r) => (
                r.ok(),
                format!(
                    "damaged packs {}; {} chunk(s) rewritten from the copy, {} kept; unrecoverable: {}",
                    r.damaged_packs.join(", "),
                    r.chunks_from_copy,
                    r.chunks_kept,
                    if r.unrecoverable.is_empty() {
                        "none".to_string()
                    } else {
                        r.unrecoverable.join(", ")
                    }
                ),
            ),
            Err(e) => (false, format!("{e:#}")),
        };
        log(format!(
            "self-heal from copy target {}: {}",
            copy_target.name,
            if ok { "repaired" } else { "not repaired" }
        ));
        log(detail.clone());
        let _ = app::ssr::audit::append(
            &state.db,
            &app::ssr::audit::Event {
                user_id: None,
                username: "tablesafe".into(),
                address: String::new(),
                action: "repository.repair".into(),
                target: format!("target {} from {}", target.name, copy_target.name),
                outcome: if ok {
                    history::Outcome::Ok
                } else {
                    history::Outcome::Failed
                },
                detail,
            },
        )
        .await;
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn verify(
    state: &AppState,
    target_id: i64,
    snapshot_id: &str,
    progress: &JobProgress,
) -> Result<Outcome> {
    let target = store::target(&state.db, target_id)
        .await?
        .ok_or_else(|| anyhow!("the target no longer exists"))?;
    let mut repo = open_repo(state, &target).await?;
    let opts = engine::verify::VerifyOptions {
        snapshot: Some(snapshot_id.to_string()),
        read_data: true,
    };
    let mut report = engine::verify::verify(&repo, &opts, progress).await?;
    progress.still_owned(state).await?;
    if !report.ok() && self_heal(state, &target, &mut repo, progress).await? {
        // Healed: the snapshot is checked again, and that check is the job's result.
        report = engine::verify::verify(&repo, &opts, progress).await?;
    }
    progress.still_owned(state).await?;
    store::set_verified(&state.db, target_id, snapshot_id, report.ok()).await?;
    if !report.ok() {
        let what: Vec<String> = report
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message))
            .collect();
        return Err(Damage(what.join("; ")).into());
    }
    Ok((
        serde_json::to_value(&report)?,
        Some(snapshot_id.to_string()),
    ))
}
