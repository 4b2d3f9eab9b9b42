//! The notifier inside `tablesafe serve`: delivers the outbox (`app::ssr::notify`).
//!
//! Every second it looks for channels with a delivery due and, for each channel not
//! already being served by this worker, starts a task that sends that channel's due
//! deliveries oldest first, one at a time. Channels never wait for each other: a channel
//! that is down or slow (each attempt is bounded by `SEND_TIMEOUT`) holds up only its
//! own task. After a failure the channel rests until its failed delivery is due again
//! (exponential backoff), so a dead receiver is not hammered with the rest of its queue.
//! Several workers may share one history: claims are leases, so each delivery is sent by
//! one worker at a time and retried by another if its worker dies.

use app::ssr::AppState;
use app::ssr::db::now_ms;
use app::ssr::notify::{self as nt, ChannelConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TICK: Duration = Duration::from_secs(1);

/// Per channel: serving now, or resting until (unix ms) after a failure.
#[derive(Default)]
struct Channels(Mutex<HashMap<i64, Option<i64>>>);

impl Channels {
    /// Marks `id` busy if it is neither busy nor resting.
    fn take(&self, id: i64, now: i64) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&id) {
            Some(None) => false,
            Some(Some(until)) if *until > now => false,
            _ => {
                map.insert(id, None);
                true
            }
        }
    }
    fn release(&self, id: i64, rest_until: Option<i64>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match rest_until {
            Some(t) => map.insert(id, Some(t)),
            None => map.remove(&id),
        };
    }
}

pub fn spawn(state: AppState, worker: String, base_backoff_ms: i64) -> tokio::task::JoinHandle<()> {
    let channels = Arc::new(Channels::default());
    tokio::spawn(async move {
        loop {
            match nt::due_channels(&state.db).await {
                Ok(due) => {
                    let now = now_ms();
                    for id in due {
                        if channels.take(id, now) {
                            let (state, worker, channels) =
                                (state.clone(), worker.clone(), channels.clone());
                            tokio::spawn(async move {
                                let rest =
                                    serve_channel(&state, id, &worker, base_backoff_ms).await;
                                channels.release(id, rest);
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "notifier: looking for deliveries")
                }
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

/// Sends the channel's due deliveries until none is left or one fails; returns how long
/// the channel should rest.
async fn serve_channel(
    state: &AppState,
    channel: i64,
    worker: &str,
    base_backoff_ms: i64,
) -> Option<i64> {
    let config = match nt::channel(&state.db, channel).await {
        Ok(Some(row)) => ChannelConfig::open(&state.secrets, &row.sealed_config),
        Ok(None) => return None,
        Err(e) => Err(e),
    };
    loop {
        let claimed = match nt::claim_next(&state.db, channel, worker).await {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), channel, "notifier: claiming a delivery");
                return Some(now_ms() + 5_000);
            }
        };
        let outcome = match &config {
            Ok(config) => nt::deliver(config, claimed.id, &claimed.payload, &state.outbound).await,
            Err(e) => Err(anyhow::anyhow!(
                "the channel's settings cannot be read: {e:#}"
            )),
        };
        crate::metrics::notification(&claimed.event, outcome.is_ok());
        match nt::settle(&state.db, &claimed, worker, &outcome, base_backoff_ms).await {
            Ok(next) => {
                if let Err(e) = &outcome {
                    tracing::warn!(
                        channel, delivery = claimed.id, attempt = claimed.attempts,
                        error = %format!("{e:#}"), "notification not delivered"
                    );
                    return Some(next.unwrap_or_else(now_ms));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), channel, "notifier: recording a delivery");
                return Some(now_ms() + 5_000);
            }
        }
    }
}
