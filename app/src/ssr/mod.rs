//! Server-only code of the console: the history database, sessions, shared state.
//! Compiled only with the `ssr` feature; the wasm bundle never sees it.

pub mod anchor;
pub mod audit;
pub mod client;
pub mod ctx;
pub mod db;
pub mod drills;
pub mod key_guard;
pub mod keys;
pub mod notify;
pub mod outbound;
pub mod password;
pub mod protected;
pub mod requests;
pub mod rules;
pub mod schedule;
pub mod secrets;
pub mod session;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod words;

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
    /// Anonymous failures, written to the audit log one entry per burst.
    pub bursts: Arc<throttle::Bursts>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`--trusted-proxies`).
    pub trusted_proxies: Arc<Vec<client::Cidr>>,
    /// Where the server may connect (`--outbound-allow`, `--outbound-deny`).
    pub outbound: Arc<outbound::Outbound>,
    /// Woken when a job is queued, so this worker's runner picks it up at once.
    pub jobs_queued: Arc<tokio::sync::Notify>,
    /// The console's address as users reach it (`--public-url`), for links in
    /// notifications; None: links are paths.
    pub public_url: Option<String>,
    /// The console's own files, which no SQLite source or destination may point into.
    pub protected: Arc<protected::Protected>,
    /// The file beside the server key holding the audit log's newest signed head.
    pub audit_head: Arc<std::path::PathBuf>,
}

/// Refuses a SQLite source or destination inside the console's own files, or outside
/// the directories an admin confined SQLite databases to (`--sqlite-dirs`), with what
/// to do instead.
pub fn check_not_protected(
    state: &AppState,
    url: &engine::source::SourceUrl,
) -> Result<(), String> {
    if let engine::source::SourceUrl::Sqlite(path) = url {
        if state.protected.contains(path).is_some() {
            return Err(format!(
                "{} is inside tablesafe's own data (its history database and keys): choose a database file elsewhere",
                path.display()
            ));
        }
        if state.protected.outside_allowed(path) {
            let dirs: Vec<String> = state
                .protected
                .allowed()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            return Err(format!(
                "{} is outside the directories SQLite databases may be in on this server ({}): choose a file there, or ask an admin to add its directory to --sqlite-dirs",
                path.display(),
                dirs.join(", ")
            ));
        }
    }
    Ok(())
}

/// [`check_not_protected`] for a restore destination, and a SQLite destination must be
/// an existing SQLite database file (an empty file counts: it is an empty database):
/// the console never creates files on the server. `explain`: say which of missing /
/// not a database it is — for admins only; anyone else learns just that it cannot be
/// used, or a restore preview would tell them which files exist on the server.
pub fn check_destination(
    state: &AppState,
    url: &engine::source::SourceUrl,
    explain: bool,
) -> Result<(), String> {
    check_not_protected(state, url)?;
    let engine::source::SourceUrl::Sqlite(path) = url else {
        return Ok(());
    };
    let problem = match std::fs::metadata(path) {
        Err(_) => Some("does not exist"),
        Ok(m) if !m.is_file() => Some("is not a file"),
        Ok(m) if m.len() == 0 => None,
        Ok(_) => {
            let mut header = [0u8; 16];
            let read = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
            (read.is_err() || &header != b"SQLite format 3\0").then_some("is not a SQLite database")
        }
    };
    match problem {
        None => Ok(()),
        Some(why) if explain => Err(format!(
            "{} {why}: a restore from the console does not create database files on the server. Create it (an empty file will do: `touch {}`), or restore with the command line",
            path.display(),
            path.display()
        )),
        Some(_) => Err(format!(
            "{} cannot be restored into: it is not an existing SQLite database file on the server, and a restore from the console does not create files. Ask an admin",
            path.display()
        )),
    }
}

impl AppState {
    /// Queues a job and wakes the workers waiting for one; returns its id.
    pub async fn enqueue(&self, job: store::NewJob) -> anyhow::Result<i64> {
        let id = store::enqueue(&self.db, job).await?;
        self.jobs_queued.notify_waiters();
        Ok(id)
    }

    /// A link to a console page for a notification.
    pub fn link(&self, path: &str) -> Option<String> {
        Some(match &self.public_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path.to_string(),
        })
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// A target's credentials as stored (sealed JSON), for the engine.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct StoredCredentials {
    #[serde(default)]
    pub s3_access_key_id: String,
    #[serde(default)]
    pub s3_secret_access_key: String,
    #[serde(default)]
    pub ssh_private_key: String,
    /// What the target lacks may come from the server's own identity (its AWS
    /// configuration and environment, its SSH keys, a key file named in the location).
    /// Only an admin turns this on; targets from before it existed (nothing sealed)
    /// keep it.
    #[serde(default)]
    pub server_identity: bool,
}

impl StoredCredentials {
    pub fn is_empty(&self) -> bool {
        self.s3_access_key_id.is_empty()
            && self.s3_secret_access_key.is_empty()
            && self.ssh_private_key.is_empty()
    }

    /// The engine's credentials: these where given, else — only with
    /// [`StoredCredentials::server_identity`] — the server's environment.
    pub fn for_engine(&self) -> engine::repo::storage::Credentials {
        let some = |v: &str| (!v.is_empty()).then(|| engine::secret::Secret::new(v.to_string()));
        if !self.server_identity {
            return engine::repo::storage::Credentials {
                s3_access_key_id: some(&self.s3_access_key_id),
                s3_secret_access_key: some(&self.s3_secret_access_key),
                ssh_private_key: some(&self.ssh_private_key),
                only_these: true,
            };
        }
        let env = engine::repo::storage::Credentials::from_env();
        if self.s3_access_key_id.is_empty() {
            engine::repo::storage::Credentials {
                ssh_private_key: some(&self.ssh_private_key),
                ..env
            }
        } else {
            engine::repo::storage::Credentials {
                s3_access_key_id: some(&self.s3_access_key_id),
                s3_secret_access_key: some(&self.s3_secret_access_key),
                ssh_private_key: some(&self.ssh_private_key),
                only_these: false,
            }
        }
    }
}

/// The storage of a console target, with its stored credentials (S3 keys, SSH key) and,
/// where an admin allowed it, the server's own identity (`AWS_ACCESS_KEY_ID`, …, SSH
/// keys) for what was not stored.
pub fn target_storage(
    secrets: &secrets::SecretBox,
    target: &store::TargetRow,
) -> anyhow::Result<engine::repo::Storage> {
    let creds = if target.sealed_credentials.is_empty() {
        // A target from before this setting existed: it used the server's identity.
        StoredCredentials {
            server_identity: true,
            ..Default::default()
        }
    } else {
        let json = secrets.open(secrets::Kind::TargetCredentials, &target.sealed_credentials)?;
        serde_json::from_str(json.expose())?
    };
    Ok(engine::repo::Storage::open_with(
        &target.location,
        &creds.for_engine(),
    )?)
}

/// Opens the repository of a console target.
pub async fn open_target(
    state: &AppState,
    target: &store::TargetRow,
    password: &engine::secret::Secret<String>,
) -> anyhow::Result<engine::repo::Repository> {
    let storage = target_storage(&state.secrets, target)?;
    Ok(engine::repo::Repository::open_in(storage, Some(password)).await?)
}

/// Logs an internal error with its details and returns the opaque [`AppError::Internal`]
/// that the browser sees.
pub fn internal(context: &str, err: impl std::fmt::Display) -> AppError {
    // `{:#}` prints an anyhow error's whole chain of causes on one line.
    tracing::error!(error = %format!("{err:#}"), "{context}");
    AppError::Internal
}

/// `.or_internal("what was being done")?`: an unexpected error becomes the opaque
/// [`AppError::Internal`], logged with its cause ([`internal`]).
pub trait OrInternal<T> {
    fn or_internal(self, context: &str) -> Result<T, AppError>;
}

impl<T, E: std::fmt::Display> OrInternal<T> for Result<T, E> {
    fn or_internal(self, context: &str) -> Result<T, AppError> {
        self.map_err(|e| internal(context, e))
    }
}
