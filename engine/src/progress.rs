//! What a long operation reports and how it is stopped. The console's job runner and
//! the CLI's progress bars implement [`Progress`]; tests use [`NoProgress`].

use crate::{Error, Result};

pub trait Progress: Send + Sync {
    /// Whether [`Self::planned`] is wanted: finding the expected rows costs a query per
    /// table (on SQLite a count), which a consumer that shows no percentage (a capture
    /// round) should not pay.
    fn wants_planned(&self) -> bool {
        false
    }
    /// The rows the operation expects to go through (a backup: the source's statistics
    /// for the tables it takes), once it knows; reported before any row.
    fn planned(&self, _rows: u64) {}
    /// A table started: its name and, when known, its row count.
    fn table_started(&self, _table: &str, _rows: Option<u64>) {}
    /// More rows and bytes were processed.
    fn advanced(&self, _rows: u64, _bytes: u64) {}
    /// A table finished.
    fn table_finished(&self, _table: &str) {}
    /// Whether the operation should stop; checked between chunks.
    fn is_cancelled(&self) -> bool {
        false
    }
    /// `Err(Cancelled)` once cancellation was requested.
    fn check_abort(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Reports nothing and never cancels.
pub struct NoProgress;
impl Progress for NoProgress {}
