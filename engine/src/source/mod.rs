//! Table stores: connection URLs and the engines behind them.

pub mod postgres;
pub mod sqlite;

use crate::secret::Secret;
use crate::{Error, Result};

/// A parsed source or destination URL.
#[derive(Debug, Clone)]
pub enum SourceUrl {
    /// `sqlite:///abs/path.db` or `sqlite://relative.db`.
    Sqlite(std::path::PathBuf),
    /// `postgres://…` (kept whole: it may hold a password).
    Postgres(Secret<String>),
}

impl SourceUrl {
    pub fn parse(url: &Secret<String>) -> Result<Self> {
        let raw = url.expose();
        if let Some(path) = raw.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or("");
            if path.is_empty() {
                return Err(Error::invalid(
                    "sqlite URL without a path: use sqlite:///abs/path.db or sqlite://relative.db",
                ));
            }
            return Ok(SourceUrl::Sqlite(path.into()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(SourceUrl::Postgres(url.clone()));
        }
        Err(Error::invalid(format!(
            "unsupported database URL {:?}: use sqlite:///path.db or postgres://user@host:port/db",
            crate::secret::redact_url(raw)
        )))
    }

    /// The URL for display and manifests: no password.
    pub fn display(&self) -> String {
        match self {
            SourceUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            SourceUrl::Postgres(url) => crate::secret::redact_url(url.expose()),
        }
    }
}
