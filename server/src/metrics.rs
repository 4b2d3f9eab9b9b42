//! Observability: `GET /metrics` in the Prometheus text format (rendered by
//! `metrics-exporter-prometheus`), `GET /healthz` (the process answers) and
//! `GET /readyz` (the history database answers too).
//!
//! Counters and histograms (`tablesafe_jobs_total`, `tablesafe_job_duration_seconds`,
//! bytes read and stored, login failures) count what *this* process did since it
//! started, as Prometheus expects of each scraped instance. Gauges that describe the
//! shared state (queue depth, last successful backup per policy, bytes stored per
//! target) are read from the history database at each scrape, so every worker reports
//! the same values.
//!
//! `/metrics` is closed by default (policy and target names are in its output): it
//! answers requests with `Authorization: Bearer <TABLESAFE_METRICS_TOKEN>` when that
//! variable is set, everyone when `serve --metrics-public` opened it, and otherwise
//! says how to open it (404; 401 for a missing or wrong token).

use app::api::jobs::JobStatus;
use app::api::notify::DeliveryStatus;
use app::ssr::{AppState, store};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::secret::Secret;
use http::{HeaderMap, StatusCode, header};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn install() -> anyhow::Result<()> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.1,
            0.5,
            1.0,
            5.0,
            15.0,
            60.0,
            300.0,
            900.0,
            3600.0,
            4.0 * 3600.0,
        ])?
        .install_recorder()?;
    let _ = HANDLE.set(handle);
    metrics::describe_counter!(
        "tablesafe_jobs_total",
        "Jobs this process finished, by kind and outcome."
    );
    metrics::describe_histogram!(
        "tablesafe_job_duration_seconds",
        metrics::Unit::Seconds,
        "How long the jobs this process ran took, by kind."
    );
    metrics::describe_counter!(
        "tablesafe_backup_bytes_read_total",
        metrics::Unit::Bytes,
        "Bytes of table data read from sources by this process's backups."
    );
    metrics::describe_counter!(
        "tablesafe_backup_bytes_stored_total",
        metrics::Unit::Bytes,
        "Bytes newly stored in repositories (after dedup, compression, encryption) by this process's backups."
    );
    metrics::describe_counter!(
        "tablesafe_login_failures_total",
        "Failed or throttled console logins seen by this process."
    );
    metrics::describe_gauge!(
        "tablesafe_jobs",
        "Jobs in the shared queue that are queued or running, by status."
    );
    metrics::describe_gauge!(
        "tablesafe_last_backup_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "When each policy's last successful backup finished (unix time)."
    );
    metrics::describe_gauge!(
        "tablesafe_target_stored_bytes",
        metrics::Unit::Bytes,
        "Bytes the snapshots in the history added to each target's repository, summed."
    );
    metrics::describe_counter!(
        "tablesafe_notifications_total",
        "Notification delivery attempts by this process, by event and outcome (delivered / error)."
    );
    metrics::describe_gauge!(
        "tablesafe_notifications",
        "Notifications in the shared outbox that wait (pending, sending) or were given up (failed), by status."
    );
    Ok(())
}

/// Records a notification delivery attempt.
pub fn notification(event: &str, delivered: bool) {
    let outcome = if delivered { "delivered" } else { "error" };
    metrics::counter!("tablesafe_notifications_total", "event" => event.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Records a finished job.
pub fn job_finished(kind: &str, outcome: &str, seconds: f64) {
    metrics::counter!("tablesafe_jobs_total", "kind" => kind.to_string(), "outcome" => outcome.to_string())
        .increment(1);
    metrics::histogram!("tablesafe_job_duration_seconds", "kind" => kind.to_string())
        .record(seconds);
}

/// Records what a backup read and stored.
pub fn backup_bytes(read: u64, stored: u64) {
    metrics::counter!("tablesafe_backup_bytes_read_total").increment(read);
    metrics::counter!("tablesafe_backup_bytes_stored_total").increment(stored);
}

/// Who may read `/metrics`, fixed at start.
pub struct Access {
    /// `TABLESAFE_METRICS_TOKEN` (empty counts as unset).
    token: Option<Secret<String>>,
    /// `--metrics-public`: anyone.
    public: bool,
}

impl Access {
    pub fn from_env(public: bool) -> Access {
        Access {
            token: crate::cli::env_secret("TABLESAFE_METRICS_TOKEN"),
            public,
        }
    }

    /// None when `headers` may read the metrics, else the refusal.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        if self.public {
            return None;
        }
        let Some(expected) = &self.token else {
            return Some(
                (
                    StatusCode::NOT_FOUND,
                    "/metrics is closed. Set TABLESAFE_METRICS_TOKEN and send it as \
                     `Authorization: Bearer <token>`, or start `tablesafe serve --metrics-public`.\n",
                )
                    .into_response(),
            );
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        // Compare digests in constant time: the time taken says nothing about how much
        // of the token matched, nor about its length.
        let (given, expected) = (
            blake3::hash(given.as_bytes()),
            blake3::hash(expected.expose().as_bytes()),
        );
        if subtle::ConstantTimeEq::ct_eq(&given.as_bytes()[..], &expected.as_bytes()[..]).into() {
            return None;
        }
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs `Authorization: Bearer <TABLESAFE_METRICS_TOKEN>`.\n",
            )
                .into_response(),
        )
    }
}

/// Sets gauge `name` for each of `statuses` from `counts` (0 for those not in it).
fn status_gauges(name: &'static str, statuses: &[&'static str], counts: &[(String, i64)]) {
    for &status in statuses {
        let n = counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!(name, "status" => status).set(n as f64);
    }
}

pub async fn metrics_handler(
    State(state): State<AppState>,
    access: Arc<Access>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = access.refusal(&headers) {
        return refusal;
    }
    let Some(handle) = HANDLE.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are not enabled\n").into_response();
    };
    match store::gauges(&state.db).await {
        Ok(g) => {
            status_gauges(
                "tablesafe_jobs",
                &[JobStatus::Queued.as_str(), JobStatus::Running.as_str()],
                &g.jobs_by_status,
            );
            for (policy, ms) in g.last_success {
                metrics::gauge!("tablesafe_last_backup_success_timestamp_seconds", "policy" => policy)
                    .set(ms as f64 / 1000.0);
            }
            status_gauges(
                "tablesafe_notifications",
                &[
                    DeliveryStatus::Pending.as_str(),
                    DeliveryStatus::Sending.as_str(),
                    DeliveryStatus::Failed.as_str(),
                ],
                &g.outbox_by_status,
            );
            for (target, bytes) in g.stored_bytes {
                metrics::gauge!("tablesafe_target_stored_bytes", "target" => target)
                    .set(bytes as f64);
            }
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics: reading the history database")
        }
    }
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// 200 while the history database answers, else 503 (for load balancers and
/// orchestrators: do not send work to a worker that cannot record it).
pub async fn readyz(State(state): State<AppState>) -> Response {
    // A database that does not answer at all (its server gone mid-failover) is as
    // unready as one that refuses: answered within a probe's usual timeout.
    let answered = tokio::time::timeout(std::time::Duration::from_secs(3), store::ping(&state.db))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 3 s")));
    match answered {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "readiness: the history database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the history database does not answer\n",
            )
                .into_response()
        }
    }
}
