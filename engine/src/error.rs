//! Errors of the engine. Messages name the object involved; [`Error::is_retryable`] says
//! whether trying again can help.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("wrong password for repository {repo}")]
    WrongPassword { repo: String },
    #[error("no repository at {0} (create one with `tablesafe init`)")]
    NoRepository(String),
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),
    /// Nothing was read or changed; a newer format needs a newer tablesafe.
    #[error("{}", unsupported_format(repo, *found, *supported))]
    UnsupportedFormat {
        repo: String,
        found: u32,
        supported: u32,
    },
    #[error("damaged repository: {0}")]
    Damaged(String),
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    /// (The cause is not a `#[source]`: its text is already in the message, and error
    /// chains would print it again.)
    #[error("storage: {context}: {}", describe(cause))]
    Storage {
        context: String,
        cause: opendal::Error,
    },
    #[error("database: {context}: {source}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cancelled")]
    Cancelled,
    /// Another process holds what this operation needs (another prune).
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Other(String),
}

fn unsupported_format(repo: &str, found: u32, supported: u32) -> String {
    if found > supported {
        format!(
            "repository {repo} was written by a newer tablesafe (format {found}); \
             this build reads format {supported}: upgrade tablesafe"
        )
    } else {
        format!(
            "repository {repo} has format {found}, which no tablesafe release wrote; \
             this build reads format {supported}: the repository's config file is damaged"
        )
    }
}

/// The innermost cause of a storage error ("No space left on device (os error 28)"),
/// which says more to a user than OpenDAL's layered context.
fn describe(e: &opendal::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage { cause, .. } => cause.is_temporary(),
            Error::Database { source, .. } => {
                matches!(source, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
            }
            _ => false,
        }
    }

    pub fn damaged(what: impl fmt::Display) -> Self {
        Error::Damaged(what.to_string())
    }

    /// A local file operation failed ("writing out.csv: No space left on device").
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        Error::Other(format!("{context}: {err}"))
    }

    pub fn invalid(what: impl fmt::Display) -> Self {
        Error::InvalidInput(what.to_string())
    }
}

/// Attaches context to storage and database errors.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, opendal::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|cause| Error::Storage {
            context: what(),
            cause,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Database {
            context: what(),
            source,
        })
    }
}
