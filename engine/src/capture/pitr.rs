//! Where a captured PostgreSQL source can be restored to, and which snapshot and
//! segments a point-in-time restore replays.

use super::shared::{Range, rfc3339};
use super::sqlite;
use crate::model::ChangeSegment;
use crate::repo::Repository;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// The base of a point-in-time restore: a snapshot and the segments to replay on it.
#[derive(Debug, Clone)]
pub struct PitrBase {
    pub snapshot_id: crate::model::SnapshotId,
    pub snapshot: crate::model::Snapshot,
    pub slot: String,
    pub segments: Vec<ChangeSegment>,
    pub at_ms: i64,
}

/// The contiguous run of segments that starts at or before `lsn` (None when there is a
/// gap after it, or no segment reaches back to it).
fn contiguous_from(segs: &[(String, ChangeSegment)], lsn: u64) -> Option<Vec<ChangeSegment>> {
    let first = segs
        .iter()
        .position(|(_, s)| s.start_lsn <= lsn && s.end_lsn >= lsn)?;
    let mut out = vec![segs[first].1.clone()];
    for (_, s) in &segs[first + 1..] {
        let last = out.last().expect("one");
        if s.start_lsn > last.end_lsn {
            break; // a gap: nothing after it is reachable
        }
        // A later position, or (an idle round: no new WAL) a later covered time.
        if s.end_lsn > last.end_lsn || s.covers_until_ms > last.covers_until_ms {
            out.push(s.clone());
        }
    }
    Some(out)
}

/// The restorable ranges of every captured source in the repository (PostgreSQL
/// slots and SQLite captures, [`sqlite`]).
pub async fn ranges(repo: &Repository) -> Result<Vec<Range>> {
    let snapshots = repo.snapshots().await?;
    let all = repo.change_segments().await?;
    let mut slots: BTreeMap<String, Vec<(String, ChangeSegment)>> = BTreeMap::new();
    for (id, s) in all {
        slots.entry(s.slot.clone()).or_default().push((id, s));
    }
    let mut out = Vec::new();
    for (slot, mut segs) in slots {
        segs.sort_by_key(|(_, s)| (s.start_lsn, s.end_lsn, s.covers_until_ms));
        let mut best: Option<Range> = None;
        for (_, snap) in &snapshots {
            let Some(p) = &snap.pg_point else { continue };
            if !p.slots.contains(&slot) {
                continue;
            }
            if let Some(chain) = contiguous_from(&segs, p.wal_lsn) {
                let to = chain
                    .last()
                    .map(|s| s.covers_until_ms)
                    .unwrap_or(snap.time_ms);
                let r = Range {
                    source: snap.source.url.clone(),
                    slot: slot.clone(),
                    from_ms: snap.time_ms,
                    to_ms: to.max(snap.time_ms),
                };
                best = match best {
                    Some(b) if b.to_ms >= r.to_ms && b.from_ms <= r.from_ms => Some(b),
                    Some(b) if b.to_ms == r.to_ms => Some(Range {
                        from_ms: b.from_ms.min(r.from_ms),
                        ..b
                    }),
                    _ => Some(r),
                };
            }
        }
        out.extend(best);
    }
    out.extend(sqlite::ranges_of(&snapshots, &sqlite::heads(repo).await?));
    Ok(out)
}

/// Whether `table` was in the capture's publication from the first of `segments` on,
/// without a gap: listed in the first, and once no longer listed (dropped: it has no
/// changes after that) never listed again (removed and added back would have missed
/// changes in between).
pub fn captured_throughout(segments: &[ChangeSegment], table: &str) -> bool {
    let mut listed = segments.iter().map(|s| s.tables.iter().any(|t| t == table));
    match listed.next() {
        Some(true) => {}
        Some(false) => return false,
        None => return true,
    }
    let mut gone = false;
    for l in listed {
        if l && gone {
            return false;
        }
        gone |= !l;
    }
    true
}

/// Chooses the snapshot and the segments for restoring `source_url` to `at_ms`.
pub async fn pitr_base(repo: &Repository, source_url: &str, at_ms: i64) -> Result<PitrBase> {
    let snapshots = repo.snapshots().await?;
    let all = repo.change_segments().await?;
    let mut candidates: Vec<&(crate::model::SnapshotId, crate::model::Snapshot)> = snapshots
        .iter()
        .filter(|(_, s)| s.source.url == source_url && s.pg_point.is_some() && s.time_ms <= at_ms)
        .collect();
    candidates.sort_by_key(|(_, s)| std::cmp::Reverse(s.time_ms));
    if candidates.is_empty() {
        let earliest = snapshots
            .iter()
            .filter(|(_, s)| s.source.url == source_url)
            .map(|(_, s)| s.time_ms)
            .min();
        return Err(Error::invalid(match earliest {
            Some(t) => format!(
                "no snapshot of {source_url} before {}: the earliest is from {}",
                rfc3339(at_ms),
                rfc3339(t)
            ),
            None => format!("no snapshot of {source_url} in this repository"),
        }));
    }
    let mut latest_cover: Option<i64> = None;
    for (id, snap) in candidates {
        let p = snap.pg_point.as_ref().expect("filtered");
        for slot in &p.slots {
            let mut segs: Vec<(String, ChangeSegment)> = all
                .iter()
                .filter(|(_, s)| &s.slot == slot)
                .cloned()
                .collect();
            segs.sort_by_key(|(_, s)| (s.start_lsn, s.end_lsn, s.covers_until_ms));
            let Some(chain) = contiguous_from(&segs, p.wal_lsn) else {
                continue;
            };
            let to = chain.last().map(|s| s.covers_until_ms).unwrap_or(0);
            latest_cover = Some(latest_cover.map_or(to, |l| l.max(to)));
            if to >= at_ms {
                // The segments up to the first that covers `at_ms`, and after it those
                // holding a commit stamped at or before it (a commit is stamped before
                // its WAL is flushed, so it can reach a later segment).
                let mut used = Vec::new();
                let mut covered = false;
                for s in chain {
                    if covered && s.first_commit_ms.is_some_and(|f| f > at_ms) {
                        break;
                    }
                    covered |= s.covers_until_ms >= at_ms;
                    if !covered || s.first_commit_ms.is_some_and(|f| f <= at_ms) {
                        used.push(s);
                    }
                }
                return Ok(PitrBase {
                    snapshot_id: id.clone(),
                    snapshot: snap.clone(),
                    slot: slot.clone(),
                    segments: used,
                    at_ms,
                });
            }
        }
    }
    Err(Error::invalid(match latest_cover {
        Some(t) => format!(
            "{source_url} can be restored up to {} (the last captured change); {} is later",
            rfc3339(t),
            rfc3339(at_ms)
        ),
        None => format!(
            "no captured changes of {source_url} follow a snapshot before {}: point-in-time restore needs `tablesafe capture` running from before that snapshot",
            rfc3339(at_ms)
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Checksum, Engine, SnapshotSource};

    fn seg(tables: &[&str]) -> ChangeSegment {
        ChangeSegment {
            format: 1,
            source: SnapshotSource {
                engine: Engine::Postgres,
                url: "postgres://h/db".into(),
            },
            slot: "s".into(),
            start_lsn: 0,
            end_lsn: 0,
            covers_until_ms: 0,
            first_commit_ms: None,
            last_commit_ms: None,
            transactions: 0,
            changes: 0,
            bytes: 0,
            checksum: Checksum([0; 32]),
            chunks: Vec::new(),
            time_ms: 0,
            tables: tables.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_table_counts_as_captured_only_without_a_gap() {
        let (a, ab) = (seg(&["a"]), seg(&["a", "b"]));
        assert!(captured_throughout(&[ab.clone(), ab.clone()], "b"));
        assert!(
            captured_throughout(&[ab.clone(), a.clone(), a.clone()], "b"),
            "dropped later"
        );
        assert!(
            !captured_throughout(&[a.clone(), ab.clone()], "b"),
            "added later"
        );
        assert!(
            !captured_throughout(&[ab.clone(), a.clone(), ab.clone()], "b"),
            "removed, added back"
        );
    }

    #[test]
    fn idle_rounds_extend_the_range_and_a_gap_ends_it() {
        let at = |start, end, covers| {
            let mut s = seg(&["a"]);
            s.start_lsn = start;
            s.end_lsn = end;
            s.covers_until_ms = covers;
            (format!("{start}-{end}-{covers}"), s)
        };
        // Data, then two idle rounds with no new WAL that still move the covered time.
        let segs = vec![
            at(0, 10, 100),
            at(10, 20, 200),
            at(20, 20, 300),
            at(20, 20, 400),
        ];
        let chain = contiguous_from(&segs, 5).unwrap();
        assert_eq!(chain.last().unwrap().covers_until_ms, 400);
        // A gap: nothing after it counts.
        let gap = vec![at(0, 10, 100), at(15, 20, 200)];
        assert_eq!(contiguous_from(&gap, 5).unwrap().len(), 1);
        assert!(contiguous_from(&gap, 12).is_none());
    }
}
