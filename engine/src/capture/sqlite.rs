//! Continuous capture of a SQLite database: frequent row-level incremental snapshots.
//!
//! **Why not WAL frames.** Litestream copies WAL frames as they are written, but what
//! it restores is a page image of the whole file; every restore option here (tables,
//! columns, renames, another database, replacing) works on rows of a snapshot, and
//! holding a read transaction open to stop the application's checkpoints (what
//! Litestream does) changes how the application's database behaves. So a SQLite
//! capture is a loop of *rounds* instead:
//!
//! - a connection held open asks `PRAGMA data_version` each round: it changes exactly
//!   when another connection committed (any table) since the round before;
//! - unchanged: the capture's head (`captures/<name>`, [`CaptureHead`]) records that
//!   the newest round's state still held at this instant — nothing else is written;
//! - changed (or the first round of a process): an incremental snapshot of the
//!   selection ([`crate::backup`], deltas against the previous round, deduplicated),
//!   numbered `seq + 1` and carrying the instant up to which the previous state was
//!   seen unchanged ([`CaptureRound`]).
//!
//! **What a restore to T gives.** The newest state captured at or before T — a round's
//! snapshot or a regular snapshot of the same source, whichever is newer. It is exactly
//! the database as of T when T is within the time that state was seen unchanged;
//! otherwise commits between the last unchanged check and the next round (at most one
//! interval plus one backup's duration) are not in it: that is the recovery point.
//! The state restored always existed: every round is one read transaction.
//!
//! **Retention.** Rounds are not counted by keep rules: they follow the regular
//! snapshots of their source (kept while they are newer than its oldest kept regular
//! snapshot, or all of them when the source has none), so a range only ever shrinks
//! from its start ([`crate::prune`]).

use super::shared::{Range, check_name, rfc3339};
use crate::model::{CaptureHead, CaptureRound, Engine, Snapshot, SnapshotId, SnapshotSource};
use crate::progress::Progress;
use crate::repo::{Repository, now_ms};
use crate::secret::Secret;
use crate::selection::Selection;
use crate::source::SourceUrl;
use crate::source::sqlite::SqliteDb;
use crate::{Error, Result};
use std::collections::BTreeMap;

pub const HEAD_FORMAT: u32 = 1;

/// A SQLite capture between rounds: the watching connection and the last round's
/// position. Rounds of one capture must not run concurrently.
pub struct SqliteCapture {
    source: Secret<String>,
    name: String,
    selection: Selection,
    tags: BTreeMap<String, String>,
    /// The watching connection and the file (device, inode) it has open: a database
    /// replaced by another file under the same path must not look unchanged.
    watch: Option<(SqliteDb, (u64, u64))>,
    /// `data_version` read before the newest round's snapshot began.
    version: Option<i64>,
    /// The newest round (seq, snapshot id) this process knows of.
    newest: Option<(u64, SnapshotId)>,
}

/// What one round did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SqliteRound {
    pub name: String,
    pub seq: u64,
    /// The snapshot taken, when the database had changed.
    pub snapshot: Option<SnapshotId>,
    pub rows: u64,
    /// The state of round `seq` holds up to this instant (unix ms): the end of the
    /// restorable range.
    pub covers_until_ms: i64,
}

impl SqliteCapture {
    pub fn new(
        source: Secret<String>,
        name: &str,
        selection: Selection,
        tags: BTreeMap<String, String>,
    ) -> Result<Self> {
        check_name(name)?;
        match SourceUrl::parse(&source)? {
            SourceUrl::Sqlite(_) => {}
            SourceUrl::Mysql(_) => {
                return Err(Error::invalid(
                    "continuous capture of MySQL is not available yet: schedule frequent backups (they are incremental)",
                ));
            }
            SourceUrl::Postgres(_) => {
                return Err(Error::invalid(
                    "a SQLite capture needs a sqlite:// source; PostgreSQL sources use logical replication (capture::setup)",
                ));
            }
        }
        Ok(SqliteCapture {
            source,
            name: name.to_string(),
            selection,
            tags,
            watch: None,
            version: None,
            newest: None,
        })
    }

    /// One round: a snapshot if anything was committed since the last one, otherwise a
    /// moved head.
    pub async fn round(
        &mut self,
        repo: &mut Repository,
        progress: &dyn Progress,
    ) -> Result<SqliteRound> {
        let url = SourceUrl::parse(&self.source)?;
        let SourceUrl::Sqlite(path) = &url else {
            unreachable!("checked in new")
        };
        let file = file_id(path)?;
        if self.watch.as_ref().is_some_and(|(_, f)| *f != file) {
            self.watch = None;
        }
        if self.watch.is_none() {
            self.watch = Some((SqliteDb::open_read(path).await?, file));
            self.version = None;
        }
        // Taken before the version is read: nothing was committed between the newest
        // snapshot and this instant when the version is unchanged.
        let checked_ms = now_ms();
        let version = match data_version(&mut self.watch.as_mut().expect("opened").0).await {
            Ok(v) => v,
            Err(e) => {
                self.watch = None;
                return Err(e);
            }
        };
        let head = load_head(repo, &self.name).await?;
        if let Some(h) = &head
            && h.source.url != url.display()
        {
            return Err(Error::invalid(format!(
                "capture name {:?} is already used in this repository for {}; choose another --name",
                self.name, h.source.url
            )));
        }
        if self.newest.is_none() {
            self.newest = newest_round(repo, &self.name).await?;
        }
        let unchanged = self.version == Some(version)
            && self.newest.as_ref().is_some_and(|(seq, id)| {
                head.as_ref()
                    .is_some_and(|h| h.seq == *seq && &h.snapshot_id == id)
            });
        if unchanged {
            let mut h = head.expect("checked");
            h.unchanged_until_ms = h.unchanged_until_ms.max(checked_ms);
            save_head(repo, &h).await?;
            return Ok(SqliteRound {
                name: self.name.clone(),
                seq: h.seq,
                snapshot: None,
                rows: 0,
                covers_until_ms: h.unchanged_until_ms,
            });
        }
        // The previous state held until its last unchanged check, if this process or
        // an earlier one made it and it is the round before this one.
        let (seq, previous_unchanged_until_ms) = match (&self.newest, &head) {
            (Some((seq, id)), Some(h)) if h.seq == *seq && &h.snapshot_id == id => {
                (seq + 1, Some(h.unchanged_until_ms))
            }
            (Some((seq, _)), _) => (seq + 1, None),
            (None, _) => (0, None),
        };
        let mut tags = self.tags.clone();
        tags.insert("capture".into(), self.name.clone());
        let opts = crate::backup::BackupOptions {
            source: self.source.clone(),
            selection: self.selection.clone(),
            tags,
        };
        let round = CaptureRound {
            name: self.name.clone(),
            seq,
            previous_unchanged_until_ms,
        };
        let summary = crate::backup::backup_as(repo, &opts, Some(round), progress).await?;
        self.version = Some(version);
        self.newest = Some((seq, summary.id.clone()));
        let h = CaptureHead {
            format: HEAD_FORMAT,
            source: SnapshotSource {
                engine: Engine::Sqlite,
                url: url.display(),
            },
            name: self.name.clone(),
            seq,
            snapshot_id: summary.id.clone(),
            unchanged_until_ms: summary.snapshot.time_ms,
        };
        save_head(repo, &h).await?;
        Ok(SqliteRound {
            name: self.name.clone(),
            seq,
            rows: summary.snapshot.total_rows(),
            snapshot: Some(summary.id),
            covers_until_ms: summary.snapshot.time_ms,
        })
    }
}

/// The file a path names now (device, inode).
fn file_id(path: &std::path::Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok((m.dev(), m.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
            "SQLite database {} does not exist",
            path.display()
        ))),
        Err(e) => Err(Error::Other(format!("{}: {e}", path.display()))),
    }
}

async fn data_version(db: &mut SqliteDb) -> Result<i64> {
    sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: "reading PRAGMA data_version".into(),
            source: e,
        })
}

fn head_path(name: &str) -> String {
    format!("captures/{name}")
}

pub async fn load_head(repo: &Repository, name: &str) -> Result<Option<CaptureHead>> {
    // A missing object reads as Damaged("missing"): no head yet.
    let sealed = match repo.storage.get(&head_path(name)).await {
        Ok(s) => s,
        Err(Error::Damaged(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let plain = repo.keys().open(&sealed, &format!("capture head {name}"))?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| Error::damaged(format!("capture head {name}: {e}")))
}

async fn save_head(repo: &Repository, head: &CaptureHead) -> Result<()> {
    let plain = serde_json::to_vec(head).map_err(|e| Error::Other(e.to_string()))?;
    let sealed = repo.keys().seal(&plain)?;
    repo.storage.put(&head_path(&head.name), sealed).await
}

/// Every capture head in the repository.
pub async fn heads(repo: &Repository) -> Result<Vec<CaptureHead>> {
    let mut out = Vec::new();
    for path in repo.storage.list("captures").await? {
        let name = path.rsplit('/').next().unwrap_or(&path);
        if let Some(h) = load_head(repo, name).await? {
            out.push(h);
        }
    }
    Ok(out)
}

async fn newest_round(repo: &Repository, name: &str) -> Result<Option<(u64, SnapshotId)>> {
    Ok(repo
        .snapshots()
        .await?
        .into_iter()
        .filter_map(|(id, s)| {
            s.capture
                .as_ref()
                .filter(|c| c.name == name)
                .map(|c| (c.seq, id.clone()))
        })
        .max())
}

/// The rounds of one capture that end its chain: the newest run without a missing
/// number, oldest first.
fn chain<'a>(
    snapshots: &'a [(SnapshotId, Snapshot)],
    name: &str,
) -> Vec<&'a (SnapshotId, Snapshot)> {
    let mut rounds: Vec<&(SnapshotId, Snapshot)> = snapshots
        .iter()
        .filter(|(_, s)| s.capture.as_ref().is_some_and(|c| c.name == name))
        .collect();
    rounds.sort_by_key(|(_, s)| s.capture.as_ref().map(|c| c.seq));
    let mut start = rounds.len();
    while start > 0 {
        let seq = |i: usize| rounds[i].1.capture.as_ref().map(|c| c.seq).unwrap_or(0);
        if start < rounds.len() && seq(start - 1) + 1 != seq(start) {
            break;
        }
        start -= 1;
    }
    rounds.split_off(start)
}

/// The end of a chain: the head's unchanged time when it speaks of the chain's newest
/// round, else that round's own time.
fn chain_end(chain: &[&(SnapshotId, Snapshot)], head: Option<&CaptureHead>) -> Option<i64> {
    let (id, last) = chain.last()?;
    let seq = last.capture.as_ref().map(|c| c.seq);
    Some(match head {
        Some(h) if Some(h.seq) == seq && &h.snapshot_id == id => {
            h.unchanged_until_ms.max(last.time_ms)
        }
        _ => last.time_ms,
    })
}

/// The restorable range of every SQLite capture in the repository.
pub fn ranges_of(snapshots: &[(SnapshotId, Snapshot)], heads: &[CaptureHead]) -> Vec<Range> {
    let mut names: Vec<&str> = snapshots
        .iter()
        .filter_map(|(_, s)| s.capture.as_ref().map(|c| c.name.as_str()))
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let chain = chain(snapshots, name);
        let Some((_, first)) = chain.first() else {
            continue;
        };
        let head = heads.iter().find(|h| h.name == name);
        let Some(to) = chain_end(&chain, head) else {
            continue;
        };
        out.push(Range {
            source: first.source.url.clone(),
            slot: name.to_string(),
            from_ms: first.time_ms,
            to_ms: to,
        });
    }
    out
}

/// The snapshot a restore of `source_url` to `at_ms` starts from, and until when its
/// state is known to have held.
#[derive(Debug, Clone)]
pub struct SqliteBase {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
    pub at_ms: i64,
    /// The state restored is the database as of this instant (the snapshot's time).
    pub as_of_ms: i64,
    /// Nothing was committed between `as_of_ms` and this instant: when it is at or
    /// after `at_ms`, the restore is exactly the database as of `at_ms`.
    pub unchanged_until_ms: i64,
}

impl SqliteBase {
    pub fn exact(&self) -> bool {
        self.unchanged_until_ms >= self.at_ms
    }
}

/// Chooses the state of `source_url` to restore for `at_ms`: the newest round of a
/// capture whose range holds `at_ms`, or a regular snapshot of the source newer than
/// that round and still before `at_ms`.
pub async fn base(repo: &Repository, source_url: &str, at_ms: i64) -> Result<SqliteBase> {
    let snapshots = repo.snapshots().await?;
    let heads = heads(repo).await?;
    let mut best: Option<SqliteBase> = None;
    let mut latest_end: Option<i64> = None;
    let mut names: Vec<&str> = snapshots
        .iter()
        .filter(|(_, s)| s.source.url == source_url)
        .filter_map(|(_, s)| s.capture.as_ref().map(|c| c.name.as_str()))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let chain = chain(&snapshots, name);
        let head = heads.iter().find(|h| h.name == name);
        let Some(end) = chain_end(&chain, head) else {
            continue;
        };
        latest_end = Some(latest_end.map_or(end, |l| l.max(end)));
        if chain.first().is_none_or(|(_, s)| s.time_ms > at_ms) || end < at_ms {
            continue;
        }
        let i = chain
            .iter()
            .rposition(|(_, s)| s.time_ms <= at_ms)
            .expect("the first round is not later");
        let (id, snap) = chain[i];
        let unchanged_until_ms = match chain.get(i + 1) {
            Some((_, next)) => next
                .capture
                .as_ref()
                .and_then(|c| c.previous_unchanged_until_ms)
                .unwrap_or(snap.time_ms),
            None => end,
        };
        if best.as_ref().is_none_or(|b| b.as_of_ms < snap.time_ms) {
            best = Some(SqliteBase {
                snapshot_id: id.clone(),
                snapshot: snap.clone(),
                at_ms,
                as_of_ms: snap.time_ms,
                unchanged_until_ms: unchanged_until_ms.max(snap.time_ms),
            });
        }
    }
    let Some(mut best) = best else {
        return Err(Error::invalid(match latest_end {
            Some(t) => format!(
                "no capture of {source_url} covers {}: captured states reach up to {}",
                rfc3339(at_ms),
                rfc3339(t)
            ),
            None => format!(
                "no capture of {source_url} in this repository: restoring to a point in time needs `tablesafe capture` running then (or restore a snapshot)"
            ),
        }));
    };
    // A regular snapshot taken between that round and `at_ms` is a newer state.
    if let Some((id, snap)) = snapshots
        .iter()
        .filter(|(_, s)| {
            s.source.url == source_url
                && s.capture.is_none()
                && s.time_ms > best.as_of_ms
                && s.time_ms <= at_ms
        })
        .max_by_key(|(_, s)| s.time_ms)
    {
        best = SqliteBase {
            snapshot_id: id.clone(),
            snapshot: snap.clone(),
            at_ms,
            as_of_ms: snap.time_ms,
            unchanged_until_ms: snap.time_ms,
        };
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::Selection;

    fn round(
        name: &str,
        seq: u64,
        time_ms: i64,
        prev_until: Option<i64>,
    ) -> (SnapshotId, Snapshot) {
        (
            SnapshotId::new(format!("{name}-{seq}")),
            Snapshot {
                format: 1,
                time_ms,
                source: SnapshotSource {
                    engine: Engine::Sqlite,
                    url: "sqlite:///db".into(),
                },
                selection: Selection::default(),
                tags: Default::default(),
                tables: Vec::new(),
                enums: Vec::new(),
                skipped: Vec::new(),
                objects: Vec::new(),
                bytes_stored: 0,
                duration_ms: 0,
                pg_point: None,
                capture: Some(CaptureRound {
                    name: name.into(),
                    seq,
                    previous_unchanged_until_ms: prev_until,
                }),
            },
        )
    }

    fn head(name: &str, seq: u64, until: i64) -> CaptureHead {
        CaptureHead {
            format: 1,
            source: SnapshotSource {
                engine: Engine::Sqlite,
                url: "sqlite:///db".into(),
            },
            name: name.into(),
            seq,
            snapshot_id: SnapshotId::new(format!("{name}-{seq}")),
            unchanged_until_ms: until,
        }
    }

    #[test]
    fn a_range_runs_from_the_oldest_round_without_a_gap_to_the_heads_unchanged_time() {
        let snaps = vec![
            round("c", 0, 100, None),
            round("c", 1, 200, Some(150)),
            round("c", 2, 300, Some(290)),
        ];
        let r = ranges_of(&snaps, &[head("c", 2, 400)]);
        assert_eq!((r[0].from_ms, r[0].to_ms), (100, 400));
        // A head that speaks of another round does not extend the range.
        let r = ranges_of(&snaps, &[head("c", 1, 900)]);
        assert_eq!(r[0].to_ms, 300);
        // Round 1 forgotten by hand: only what follows the gap is restorable.
        let gap = vec![snaps[0].clone(), snaps[2].clone()];
        let r = ranges_of(&gap, &[head("c", 2, 400)]);
        assert_eq!((r[0].from_ms, r[0].to_ms), (300, 400));
    }
}
