//! Prune: forget the snapshots a retention policy does not keep, then delete the packs
//! no snapshot references, safely while other processes back up to, copy into, restore
//! from or verify the same repository. The protocol is in the crate docs
//! ("Concurrency"); in short: mark, wait until everyone who could have missed the mark
//! is gone, re-check, sweep.

use crate::model::{ChangeSegment, Snapshot, SnapshotId};
use crate::repo::lock::{self, LockKind};
use crate::repo::{GcRecord, Repository, crypto::hex, delete_packs, now_ms, pack_path, parse_id};
use crate::retention::{self, Decision, KeepRules};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub rules: KeepRules,
    /// Civil periods (days, weeks…) are counted in this zone.
    pub tz: chrono_tz::Tz,
    /// Only snapshots carrying all these tags are subject to the rules (a console
    /// policy prunes its own snapshots); the others are kept. Garbage collection is
    /// always repository-wide.
    pub only_tags: BTreeMap<String, String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Every snapshot the rules applied to, newest first, kept or not and why.
    pub decisions: Vec<Decision>,
    /// Snapshots removed (or, in a dry run, that would be).
    pub forgotten: Vec<String>,
    /// Packs deleted now, and their bytes.
    pub packs_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced packs left for the next prune because other processes were using
    /// the repository (they may still reference them), and their bytes.
    pub packs_deferred: usize,
    pub bytes_deferred: u64,
    /// Who the deferral waits for ("backup on host pid 123").
    pub waiting_for: Vec<String>,
    /// In a dry run: bytes the unreferenced packs would free (an upper bound when other
    /// processes are writing).
    pub bytes_unreferenced: u64,
    pub stale_locks_removed: usize,
    /// Change segments (point-in-time restore) no kept snapshot can use any more.
    pub change_segments_removed: u64,
}

/// The retention verdicts, without changing anything (the console's preview).
pub async fn decide(
    repo: &Repository,
    rules: &KeepRules,
    tz: chrono_tz::Tz,
    only_tags: &BTreeMap<String, String>,
) -> Result<Vec<Decision>> {
    let snapshots = repo.snapshots().await?;
    Ok(decide_on(&snapshots, rules, tz, only_tags))
}

fn decide_on(
    snapshots: &[(SnapshotId, Snapshot)],
    rules: &KeepRules,
    tz: chrono_tz::Tz,
    only_tags: &BTreeMap<String, String>,
) -> Vec<Decision> {
    let subject = |s: &Snapshot| only_tags.iter().all(|(k, v)| s.tags.get(k) == Some(v));
    let regular: Vec<(String, i64, String)> = snapshots
        .iter()
        .filter(|(_, s)| s.capture.is_none() && subject(s))
        .map(|(id, s)| (id.to_string(), s.time_ms, retention::group_of(s)))
        .collect();
    let mut out = retention::decide(&regular, rules, tz);
    // SQLite capture rounds follow the regular snapshots of their source (module docs
    // of capture::sqlite): kept from the oldest one kept on, so a restorable range only
    // loses its start.
    let forgotten: HashSet<&str> = out
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.as_str())
        .collect();
    let mut oldest_kept: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, s) in snapshots {
        if s.capture.is_none() && !forgotten.contains(id.as_str()) {
            let t = oldest_kept
                .entry(s.source.url.as_str())
                .or_insert(s.time_ms);
            *t = (*t).min(s.time_ms);
        }
    }
    for (id, s) in snapshots.iter().rev() {
        let Some(c) = &s.capture else { continue };
        if !subject(s) {
            continue;
        }
        let (keep, reason) = match oldest_kept.get(s.source.url.as_str()) {
            None => (
                true,
                format!("capture {} #{}: no regular snapshot", c.name, c.seq),
            ),
            Some(&t) if s.time_ms >= t => (
                true,
                format!("capture {} #{}: after a kept snapshot", c.name, c.seq),
            ),
            Some(_) => (false, String::new()),
        };
        out.push(Decision {
            id: id.to_string(),
            time_ms: s.time_ms,
            group: format!("{} (capture {})", s.source.url, c.name),
            keep,
            reasons: if keep { vec![reason] } else { Vec::new() },
        });
    }
    out
}

/// The live locks of other processes, and the stale ones (paths).
struct LockView {
    live: BTreeMap<String, lock::LockInfo>,
    stale: Vec<String>,
    /// Lock objects that could not be read: somebody may be using the repository.
    unreadable: bool,
}

async fn view_locks(repo: &Repository, me: &str) -> Result<LockView> {
    let now = now_ms();
    let mut v = LockView {
        live: BTreeMap::new(),
        stale: Vec::new(),
        unreadable: false,
    };
    for (path, info) in lock::list(&repo.storage).await? {
        match info {
            Some(info) if info.owner == me => {}
            Some(info) if info.is_stale(now) => v.stale.push(path),
            Some(info) => {
                v.live.insert(info.owner.clone(), info);
            }
            None => v.unreadable = true,
        }
    }
    Ok(v)
}

fn describe(info: &lock::LockInfo) -> String {
    format!("{} on {} (pid {})", info.operation, info.host, info.pid)
}

/// Every pack in the repository with the chunks its index file lists (none for a pack
/// without one: left by a backup that failed, or being written right now).
async fn pack_contents(repo: &Repository) -> Result<BTreeMap<[u8; 32], Vec<[u8; 32]>>> {
    let mut packs = BTreeMap::new();
    for path in repo.storage.list("data").await? {
        if let Some(id) = path.rsplit('/').next().and_then(parse_id) {
            packs.insert(id, Vec::new());
        }
    }
    for path in repo.storage.list("index").await? {
        if let Some((pack, chunks)) = repo.read_index_file(&path).await? {
            packs.insert(pack, chunks.into_iter().map(|(id, _, _)| id).collect());
        }
    }
    Ok(packs)
}

/// Chunk ids the snapshots reference, base layers included.
/// The snapshots that stay when `forgotten` go.
fn kept<'a>(snapshots: &'a [(SnapshotId, Snapshot)], forgotten: &[String]) -> Vec<&'a Snapshot> {
    let forgotten: HashSet<&str> = forgotten.iter().map(|s| s.as_str()).collect();
    snapshots
        .iter()
        .filter(|(id, _)| !forgotten.contains(id.as_str()))
        .map(|(_, s)| s)
        .collect()
}

fn chunks_of<'a>(snapshots: impl Iterator<Item = &'a Snapshot>) -> HashSet<[u8; 32]> {
    snapshots
        .flat_map(|s| s.tables.iter())
        .flat_map(|t| t.all_chunks())
        .map(|c| c.0)
        .collect()
}

/// Chunk ids every snapshot and change segment (as listed *now*) references.
async fn referenced_chunks(repo: &Repository) -> Result<HashSet<[u8; 32]>> {
    let mut used = chunks_of(repo.snapshots().await?.iter().map(|(_, s)| s));
    used.extend(segment_chunks(
        repo.change_segments().await?.iter().map(|(_, s)| s),
    ));
    Ok(used)
}

fn segment_chunks<'a>(segs: impl Iterator<Item = &'a ChangeSegment>) -> HashSet<[u8; 32]> {
    segs.flat_map(|s| s.chunks.iter()).map(|c| c.0).collect()
}

/// Change segments no kept snapshot needs: a segment is replayed only on snapshots of
/// its slot whose position it ends after, so one that ends at or before the oldest such
/// snapshot's position is dead. The newest segment of each slot stays (a running
/// capture continues from it), so the ranges reported as restorable keep no gap.
pub fn obsolete_segments(kept: &[&Snapshot], segments: &[(String, ChangeSegment)]) -> Vec<String> {
    let mut newest: std::collections::HashMap<&str, u64> = Default::default();
    for (_, s) in segments {
        let e = newest.entry(s.slot.as_str()).or_insert(0);
        *e = (*e).max(s.end_lsn);
    }
    segments
        .iter()
        .filter(|(_, s)| {
            let oldest_base = kept
                .iter()
                .filter_map(|k| k.pg_point.as_ref())
                .filter(|p| p.slots.contains(&s.slot))
                .map(|p| p.wal_lsn)
                .min();
            let dead = match oldest_base {
                Some(lsn) => s.end_lsn <= lsn,
                None => true,
            };
            dead && newest.get(s.slot.as_str()) != Some(&s.end_lsn)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// The packs that are not needed: every referenced chunk keeps one pack that holds it.
/// Where two packs hold the same chunk (backups racing, or a backup that re-stored a
/// chunk because its old pack was marked), a pack outside `avoid` is preferred, then
/// the one that covers more.
fn unneeded(
    packs: &BTreeMap<[u8; 32], Vec<[u8; 32]>>,
    used: &HashSet<[u8; 32]>,
    avoid: &BTreeSet<[u8; 32]>,
) -> BTreeSet<[u8; 32]> {
    let mut order: Vec<(&[u8; 32], usize)> = packs
        .iter()
        .map(|(p, chunks)| (p, chunks.iter().filter(|c| used.contains(*c)).count()))
        .collect();
    order.sort_by_key(|(p, n)| (avoid.contains(*p), std::cmp::Reverse(*n), **p));
    let mut covered: HashSet<[u8; 32]> = HashSet::new();
    let mut out = BTreeSet::new();
    for (pack, _) in order {
        let mut needed = false;
        for c in &packs[pack] {
            if used.contains(c) && covered.insert(*c) {
                needed = true;
            }
        }
        if !needed {
            out.insert(*pack);
        }
    }
    out
}

/// The sweep: re-reads the snapshots and indexes (after the caller made sure nobody who
/// could have missed the mark is still running), then deletes the marked packs that
/// are still not needed. Index file first, then the pack.
async fn sweep(repo: &Repository, marked: &BTreeSet<[u8; 32]>) -> Result<(usize, u64)> {
    let packs = pack_contents(repo).await?;
    let used = referenced_chunks(repo).await?;
    let doomed: BTreeSet<[u8; 32]> = unneeded(&packs, &used, marked)
        .intersection(marked)
        .copied()
        .collect();
    let mut bytes = 0;
    for pack in &doomed {
        bytes += repo.storage.size(&pack_path(pack)).await.unwrap_or(0);
    }
    delete_packs(&repo.storage, &doomed).await;
    Ok((doomed.len(), bytes))
}

/// Packs not needed by the snapshots listed now (a superset is harmless: the sweep
/// re-checks). Snapshots are listed after the packs, so a backup that finishes in
/// between has its packs counted as needed.
async fn unreferenced(repo: &Repository, avoid: &BTreeSet<[u8; 32]>) -> Result<BTreeSet<[u8; 32]>> {
    let packs = pack_contents(repo).await?;
    let used = referenced_chunks(repo).await?;
    Ok(unneeded(&packs, &used, avoid))
}

async fn put_record(repo: &Repository, record: &GcRecord) -> Result<String> {
    let path = format!("gc/{}", hex(&rand::random::<[u8; 12]>()));
    let bytes = serde_json::to_vec(record).map_err(|e| Error::Other(e.to_string()))?;
    repo.storage.put(&path, bytes).await?;
    Ok(path)
}

pub async fn prune(repo: &mut Repository, opts: &PruneOptions) -> Result<PruneReport> {
    if opts.rules.is_empty() {
        return Err(Error::invalid(
            "no retention rule given: pruning would delete every snapshot (give --keep-last, --keep-daily, … or a floor)",
        ));
    }
    let me = repo.lock(LockKind::Prune, "prune").await?;
    let result = prune_locked(repo, opts, me.owner()).await;
    me.release().await;
    result
}

async fn prune_locked(repo: &mut Repository, opts: &PruneOptions, me: &str) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let locks = view_locks(repo, me).await?;
    if let Some(other) = locks.live.values().find(|l| l.kind == LockKind::Prune) {
        return Err(Error::Busy(format!(
            "another prune is running on {} ({}); try again when it ends",
            repo.storage.display,
            describe(other)
        )));
    }
    let snapshots = repo.snapshots().await?;
    report.decisions = decide_on(&snapshots, &opts.rules, opts.tz, &opts.only_tags);
    report.forgotten = report
        .decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    if opts.dry_run {
        let kept = kept(&snapshots, &report.forgotten);
        let mut used = chunks_of(kept.iter().copied());
        let segments = repo.change_segments().await?;
        let dead: HashSet<String> = obsolete_segments(&kept, &segments).into_iter().collect();
        report.change_segments_removed = dead.len() as u64;
        used.extend(segment_chunks(
            segments
                .iter()
                .filter(|(id, _)| !dead.contains(id))
                .map(|(_, s)| s),
        ));
        let packs = pack_contents(repo).await?;
        for pack in unneeded(&packs, &used, &BTreeSet::new()) {
            report.bytes_unreferenced += repo.storage.size(&pack_path(&pack)).await.unwrap_or(0);
        }
        return Ok(report);
    }
    for path in &locks.stale {
        repo.storage.delete(path).await?;
        report.stale_locks_removed += 1;
    }

    // 1. Earlier marks whose owners are all gone: sweep them now, before this prune
    //    forgets anything (a snapshot made since the mark may have revived a pack).
    let records = repo.gc_records().await?;
    let mut still_waiting: BTreeSet<String> = BTreeSet::new();
    let mut ripe = !locks.unreadable;
    for (_, r) in &records {
        match &r.owners {
            Some(owners) => {
                for o in owners {
                    if locks.live.contains_key(o) {
                        still_waiting.insert(o.clone());
                        ripe = false;
                    }
                }
            }
            // Unknown owners: anyone live now may be one.
            None if !locks.live.is_empty() => {
                still_waiting.extend(locks.live.keys().cloned());
                ripe = false;
            }
            None => {}
        }
    }
    let old_marks: BTreeSet<[u8; 32]> = records
        .iter()
        .flat_map(|(_, r)| r.packs.iter().filter_map(|p| parse_id(p)))
        .collect();
    if ripe && !records.is_empty() {
        let (n, bytes) = sweep(repo, &old_marks).await?;
        report.packs_deleted += n;
        report.bytes_freed += bytes;
    }

    // 2. Forget the snapshots, then the change segments only they could use.
    for id in &report.forgotten {
        repo.storage.delete(&format!("snapshots/{id}")).await?;
    }
    let kept = kept(&snapshots, &report.forgotten);
    for id in obsolete_segments(&kept, &repo.change_segments().await?) {
        repo.storage.delete(&format!("changes/{id}")).await?;
        report.change_segments_removed += 1;
    }

    // 3. Mark what is unreferenced now, then look who might not have seen the mark.
    let marked = unreferenced(repo, &old_marks).await?;
    let mut record = GcRecord {
        time_ms: now_ms(),
        packs: marked.iter().map(|p| hex(p)).collect(),
        owners: None,
    };
    let first = if marked.is_empty() {
        None
    } else {
        Some(put_record(repo, &record).await?)
    };
    let after = view_locks(repo, me).await?;
    let mut owners: BTreeSet<String> = still_waiting;
    owners.extend(after.live.keys().cloned());
    if !marked.is_empty() {
        if owners.is_empty() && !after.unreadable {
            // 4a. Nobody could have missed the mark: sweep now.
            let (n, bytes) = sweep(repo, &marked).await?;
            report.packs_deleted += n;
            report.bytes_freed += bytes;
        } else {
            // 4b. Leave the mark, with whom it waits for, to the next prune.
            record.owners = Some(owners.iter().cloned().collect());
            put_record(repo, &record).await?;
            report.packs_deferred = marked.len();
            for p in &marked {
                report.bytes_deferred += repo.storage.size(&pack_path(p)).await.unwrap_or(0);
            }
            report.waiting_for = owners
                .iter()
                .map(|o| {
                    after
                        .live
                        .get(o)
                        .or_else(|| locks.live.get(o))
                        .map(describe)
                        .unwrap_or_else(|| format!("lock {o}"))
                })
                .collect();
        }
    }
    // The new mark (if any) replaces the older ones: it holds every pack still
    // unreferenced and waits for their owners too.
    for (path, _) in &records {
        repo.storage.delete(path).await?;
    }
    if let Some(first) = first {
        repo.storage.delete(&first).await?;
    }
    repo.load_index().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Engine, PgPoint, SnapshotSource};
    use crate::selection::Selection;

    fn snap(wal_lsn: u64, slots: &[&str]) -> Snapshot {
        Snapshot {
            format: 1,
            time_ms: 0,
            source: SnapshotSource {
                engine: Engine::Postgres,
                url: "postgres://h/db".into(),
            },
            selection: Selection::default(),
            tags: Default::default(),
            tables: Vec::new(),
            enums: Vec::new(),
            skipped: Vec::new(),
            objects: Vec::new(),
            bytes_stored: 0,
            duration_ms: 0,
            pg_point: Some(PgPoint {
                system_id: None,
                timeline: None,
                xid_snapshot: crate::model::XidSnapshot::parse("1:1:").unwrap(),
                wal_lsn,
                slots: slots.iter().map(|s| s.to_string()).collect(),
            }),
            capture: None,
        }
    }

    fn seg(slot: &str, start: u64, end: u64) -> ChangeSegment {
        ChangeSegment {
            format: 1,
            source: SnapshotSource {
                engine: Engine::Postgres,
                url: "postgres://h/db".into(),
            },
            slot: slot.into(),
            start_lsn: start,
            end_lsn: end,
            covers_until_ms: 0,
            first_commit_ms: None,
            last_commit_ms: None,
            transactions: 0,
            changes: 0,
            bytes: 0,
            checksum: crate::model::Checksum([0; 32]),
            chunks: Vec::new(),
            time_ms: 0,
            tables: Vec::new(),
        }
    }

    #[test]
    fn segments_go_only_when_no_kept_snapshot_can_replay_them() {
        let segs: Vec<(String, ChangeSegment)> = [(0, 10), (10, 20), (20, 30), (30, 40)]
            .iter()
            .enumerate()
            .map(|(i, (a, b))| (format!("s{i}"), seg("slot", *a, *b)))
            .collect();
        // The oldest kept snapshot of the slot sits at 25: segments ending at or before it
        // are dead; the one holding 25 and everything after stays.
        let kept = [snap(25, &["slot"]), snap(35, &["slot"])];
        let refs: Vec<&Snapshot> = kept.iter().collect();
        assert_eq!(obsolete_segments(&refs, &segs), vec!["s0", "s1"]);
        // No kept snapshot of the slot: all but the newest (a running capture goes on
        // from it).
        let other = [snap(25, &["another"])];
        let refs: Vec<&Snapshot> = other.iter().collect();
        assert_eq!(obsolete_segments(&refs, &segs), vec!["s0", "s1", "s2"]);
    }
}
