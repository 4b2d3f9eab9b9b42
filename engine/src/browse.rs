//! Browse a table inside a snapshot without restoring it: one page of rows, optionally
//! filtered ([`crate::filter`]) or looked up by key. Rows are read from the repository
//! in stream order (key order for tables with a primary key) only as far as the page
//! needs, so the first pages of a big table come back quickly; this is not a
//! verification (the table's checksum is checked only when the read reaches its end).

use crate::export::TableRows;
use crate::filter::{RowFilter, display};
use crate::repo::Repository;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// At most this many rows on one page.
pub const MAX_PAGE: usize = 500;

/// Longer values are cut to this many characters for display (ending in `…`).
pub const MAX_CELL_CHARS: usize = 300;

#[derive(Debug, Clone)]
pub struct BrowseQuery {
    /// `latest`, an id or a unique prefix.
    pub snapshot: String,
    /// The table; empty: the snapshot's first.
    pub table: String,
    pub filter: RowFilter,
    /// Key values to look up, one per key column in key order (empty: no lookup).
    pub key: Vec<String>,
    /// Matching rows to skip.
    pub offset: u64,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrowsePage {
    pub snapshot: crate::model::SnapshotId,
    pub snapshot_time_ms: i64,
    pub table: String,
    /// Every table of the snapshot, for choosing another.
    pub tables: Vec<String>,
    pub columns: Vec<String>,
    /// Primary-key columns (empty: the table has none).
    pub key: Vec<String>,
    /// Rows of the page; `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
    pub offset: u64,
    /// More matching rows follow this page.
    pub more: bool,
    /// Rows in the table.
    pub table_rows: u64,
    /// Rows read to make this page.
    pub scanned: u64,
}

/// One page of a table in a snapshot.
pub async fn browse(repo: &Repository, q: &BrowseQuery) -> Result<BrowsePage> {
    let (id, snapshot) = repo.find_snapshot(&q.snapshot).await?;
    let e = snapshot
        .tables
        .iter()
        .find(|t| t.name == q.table || q.table.is_empty())
        .ok_or_else(|| {
            Error::invalid(format!(
                "snapshot {} has no table {:?} (it has {})",
                id.short(),
                q.table,
                snapshot
                    .tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let key = e.schema.primary_key();
    let mut filter = q.filter.clone();
    if !q.key.is_empty() {
        if key.is_empty() {
            return Err(Error::invalid(format!(
                "table {} has no primary key to look up; filter on a column instead",
                e.name
            )));
        }
        if q.key.len() != key.len() {
            return Err(Error::invalid(format!(
                "the key of {} is ({}): give {} value(s)",
                e.name,
                key.join(", "),
                key.len()
            )));
        }
        for (column, value) in key.iter().zip(&q.key) {
            filter.conditions.push(crate::filter::Condition {
                column: column.clone(),
                op: crate::filter::Op::Eq,
                value: value.clone(),
            });
        }
    }
    let bound = filter.bind(e, snapshot.source.engine)?;
    let limit = q.limit.clamp(1, MAX_PAGE);
    let mut reader = TableRows::open(repo, e)?;
    let mut rows = Vec::new();
    let mut matched = 0u64;
    let mut scanned = 0u64;
    let mut more = false;
    'read: while let Some((batch, _)) = reader.next_batch().await? {
        for row in batch {
            scanned += 1;
            if !bound.matches(&row) {
                continue;
            }
            matched += 1;
            if matched <= q.offset {
                continue;
            }
            if rows.len() == limit {
                more = true;
                break 'read;
            }
            rows.push(row.iter().map(|v| display(v).map(cut)).collect());
            if bound.finds_one() {
                break 'read;
            }
        }
    }
    Ok(BrowsePage {
        snapshot: id,
        snapshot_time_ms: snapshot.time_ms,
        table: e.name.clone(),
        tables: snapshot.tables.iter().map(|t| t.name.clone()).collect(),
        columns: e.stream_columns.clone(),
        key,
        rows,
        offset: q.offset,
        more,
        table_rows: e.rows,
        scanned,
    })
}

fn cut(s: String) -> String {
    match s.char_indices().nth(MAX_CELL_CHARS) {
        None => s,
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}
