//! Inside `tablesafe serve`: every few minutes, the audit log's signed head is written
//! outside the history database (see `app::ssr::anchor`), so that deleting the newest
//! entries or rewriting the chain in the database is found by `tablesafe audit verify`
//! and the console's check. A chain that no longer matches a head already written is
//! reported loudly and never covered by a new head.

use app::ssr::{AppState, anchor};
use std::time::Duration;

pub fn spawn(state: AppState, every_secs: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match anchor::write(&state.db, &state.secrets, &state.audit_head).await {
                Ok(_) => {}
                Err(e) => {
                    metrics::counter!("tablesafe_audit_anchor_failures_total").increment(1);
                    tracing::error!(error = %format!("{e:#}"), "audit log head");
                }
            }
            tokio::time::sleep(Duration::from_secs(every_secs)).await;
        }
    })
}
