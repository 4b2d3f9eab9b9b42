//! What both kinds of capture share: the capture name rule, a restorable range, and
//! how its instants are printed.

use crate::{Error, Result};

pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 40
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::invalid(format!(
            "capture name {name:?}: use 1 to 40 characters a-z, 0-9 and _"
        )));
    }
    Ok(())
}

/// Where a PostgreSQL source can be restored to: from its first snapshot that a
/// capture covers to the end of that capture's contiguous segments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub source: String,
    pub slot: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
