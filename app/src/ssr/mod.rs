//! Server-only code of the console: the history database, sessions, shared state.
//! Compiled only with the `ssr` feature; the wasm bundle never sees it.

pub mod audit;
pub mod ctx;
pub mod db;
pub mod keys;
pub mod password;
pub mod schedule;
pub mod secrets;
pub mod session;
pub mod store;
pub mod throttle;

use crate::error::AppError;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use std::sync::Arc;

/// Everything a request handler or server function needs, created once in `main` and
/// injected (axum state + Leptos context).
#[derive(Clone)]
pub struct AppState {
    pub db: db::Db,
    pub leptos_options: LeptosOptions,
    pub sessions: Arc<session::SessionKeys>,
    pub secrets: Arc<secrets::SecretBox>,
    pub throttle: Arc<throttle::Throttle>,
    /// Woken when a job is queued, so this worker's runner picks it up at once.
    pub jobs_queued: Arc<tokio::sync::Notify>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// Opens the repository of a console target. S3 keys come from the server's
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`); SFTP uses the key file
/// named in the location or the server user's SSH keys.
pub async fn open_target(
    _state: &AppState,
    target: &store::TargetRow,
    password: &engine::secret::Secret<String>,
) -> engine::Result<engine::repo::Repository> {
    engine::repo::Repository::open(&target.location, Some(password)).await
}

/// Logs an internal error with its details and returns the opaque [`AppError::Internal`]
/// that the browser sees.
pub fn internal(context: &str, err: impl std::fmt::Display) -> AppError {
    tracing::error!(error = %err, "{context}");
    AppError::Internal
}
