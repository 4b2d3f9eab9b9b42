//! What a backup reads: the selected tables and columns, how each is streamed, and the
//! parent snapshot each keyed table's delta is stored against.

use crate::Result;
use crate::model::{Snapshot, StreamFormat, TableEntry, TableSchema};
use crate::repo::Repository;
use crate::secret::Secret;
use crate::segment::{self, KeySpec};
use crate::selection::{Selection, SelectionExt};
use crate::source::SourceUrl;

const SMALL_DELTAS: u64 = 4 << 20;

/// A table about to be read.
pub(super) struct Plan {
    pub(super) name: String,
    pub(super) schema: TableSchema,
    pub(super) columns: Vec<String>,
    pub(super) format: StreamFormat,
    pub(super) sql: String,
    /// How to order the stream's rows, if this crate can.
    pub(super) key: Option<KeySpec>,
    /// The previous snapshot's entry for this table, when this backup may store a delta
    /// against it.
    pub(super) parent: Option<TableEntry>,
    /// PostgreSQL: the parent snapshot's oldest running transaction, when only rows
    /// written by it or later need to be read ([`changes_only`]).
    pub(super) changed_since: Option<u64>,
}

impl Plan {
    /// A table read whole, keyed when this crate can order its stream (no parent yet).
    pub(super) fn new(
        name: String,
        schema: TableSchema,
        columns: Vec<String>,
        format: StreamFormat,
        sql: String,
    ) -> Plan {
        let key = KeySpec::new(&format, &columns, &schema);
        Plan {
            name,
            schema,
            columns,
            format,
            sql,
            key,
            parent: None,
            changed_since: None,
        }
    }
}

/// A selected table and its `--columns` list, if any.
pub(super) type Selected<'a, T> = (&'a T, Option<&'a Vec<String>>);

/// The tables a selection takes, in catalog order, each with its `--columns` list.
pub(super) fn selected<'a, T>(
    tables: &'a [T],
    name: impl Fn(&T) -> &String,
    selection: &'a Selection,
) -> Result<Vec<Selected<'a, T>>> {
    let chosen = selection.apply(tables.iter().map(|t| name(t).as_str()))?;
    Ok(tables
        .iter()
        .filter(|t| chosen.contains(name(t)))
        .map(|t| (t, selection.columns.get(name(t))))
        .collect())
}

pub(super) use crate::selection::chosen_columns;

/// Under the backup's lock: prune's marks, the source's latest snapshot and the index
/// entries the backup needs ([`Repository::prepare_backup`]).
pub(super) async fn prepare(repo: &mut Repository, source: &Secret<String>) -> Result<()> {
    let url = SourceUrl::parse(source)?;
    repo.prepare_backup(&url.display()).await
}

/// For each table, the latest earlier snapshot of the same source that holds it keyed
/// the same way: the parent its delta will be stored against. A table gets a full
/// segment instead when it has no such parent, its chain is [`segment::MAX_LAYERS`]
/// long, or its deltas already add up to half its full segment (and more than
/// [`SMALL_DELTAS`]: for small tables a chain costs little).
/// Returns that latest snapshot.
pub(super) async fn choose_parents(
    repo: &Repository,
    url: &SourceUrl,
    plans: &mut [Plan],
) -> Result<Option<Snapshot>> {
    if plans.iter().all(|p| p.key.is_none()) {
        return Ok(None);
    }
    let source = url.display();
    // Found under the backup's lock by `Repository::prepare_backup` (through the
    // source's hint when it holds: no listing of every snapshot).
    let latest = match repo.prepared_latest(&source) {
        Some(latest) => latest.map(|(_, s)| s.clone()),
        None => repo
            .snapshots()
            .await?
            .into_iter()
            .filter(|(_, s)| s.source.url == source)
            .max_by_key(|(_, s)| s.time_ms)
            .map(|(_, s)| s),
    };
    let Some(latest) = latest else {
        return Ok(None);
    };
    for plan in plans {
        let Some(key) = &plan.key else { continue };
        let Some(parent) = latest.tables.iter().find(|t| t.name == plan.name) else {
            continue;
        };
        let layers = parent.layers();
        let full = layers[0].bytes;
        let deltas: u64 = layers[1..].iter().map(|l| l.bytes).sum();
        if parent.format == plan.format
            && parent.stream_columns == plan.columns
            && KeySpec::of_entry(parent).as_ref() == Some(key)
            && layers.len() < segment::MAX_LAYERS
            && deltas <= (full / 2).max(SMALL_DELTAS)
        {
            plan.parent = Some(parent.clone());
        }
    }
    Ok(Some(latest))
}

/// PostgreSQL: the transaction id from which rows may have changed since `parent` was
/// taken (its snapshot's xmin: every transaction before it had ended and is in the
/// parent), when a backup at `now` can trust row `xmin`s for that: the same server
/// history (system identifier and timeline: not restored from an older base backup, not
/// promoted), transaction ids that only moved forward and stay within 2^31 of it (so the
/// 32-bit `xmin` comparison cannot wrap), and the same enum types (a renamed label
/// changes the text of rows that did not change).
pub(super) fn changed_since(
    parent: &Snapshot,
    now: &crate::model::PgPoint,
    enums: &[crate::model::PgEnum],
) -> Option<u64> {
    let then = parent.pg_point.as_ref()?;
    if then.system_id.is_none()
        || then.system_id != now.system_id
        || then.timeline.is_none()
        || then.timeline != now.timeline
        || parent.enums != enums
    {
        return None;
    }
    let (old, new) = (&then.xid_snapshot, &now.xid_snapshot);
    let span = new.xmax().checked_sub(old.xmin())?;
    (new.xmax() >= old.xmax() && span < (1 << 31) - (1 << 24)).then_some(old.xmin())
}
