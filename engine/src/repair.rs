//! Self-heal: rewrite a repository's damaged or missing chunks from another repository
//! that holds copies of the same snapshots ([`crate::copy`]), then check the result.
//!
//! Copies keep chunk boundaries and re-identify each chunk under the copy's key, so a
//! chunk of snapshot S is found in the copy at the same place of the copy of S (same
//! origin, same table, same position). A chunk taken from the copy is accepted only if
//! its identity under *this* repository's key is the damaged chunk's id: a copy that
//! does not correspond is never written in.
//!
//! Every chunk of a damaged pack is rewritten (those still readable from the pack
//! itself, the others from the copy) into new packs, and only then is the damaged pack
//! deleted (its index file first): afterwards no index names a damaged location. A
//! pack that cannot be read for another reason (a target that times out) stops the
//! repair before anything is deleted.

use crate::copy::origin_of;
use crate::model::ChunkId;
use crate::model::{Snapshot, SnapshotId};
use crate::progress::Progress;
use crate::repo::lock::LockKind;
use crate::repo::{Repository, delete_packs, short};
use crate::verify::{VerifyOptions, VerifyReport, verify};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Packs found damaged or missing (short ids).
    pub damaged_packs: Vec<String>,
    /// Chunks rewritten from the damaged packs themselves (still readable there).
    pub chunks_kept: usize,
    /// Chunks rewritten from the copy.
    pub chunks_from_copy: usize,
    /// Chunks neither readable nor in the copy (short ids): still lost.
    pub unrecoverable: Vec<String>,
    /// The verification (with data) run after the repair.
    pub verify: Option<VerifyReport>,
}

impl RepairReport {
    pub fn ok(&self) -> bool {
        self.unrecoverable.is_empty() && self.verify.as_ref().is_some_and(|v| v.ok())
    }
}

/// Every chunk id of a snapshot's tables, in manifest order, per table name.
fn chunk_lists(s: &Snapshot) -> HashMap<&str, Vec<&ChunkId>> {
    s.tables
        .iter()
        .map(|t| (t.name.as_str(), t.all_chunks().collect()))
        .collect()
}

/// This repository's chunk id → the copy's id of the same chunk, for every snapshot
/// both hold.
fn correspondences(
    mine: &[(SnapshotId, Snapshot)],
    theirs: &[(SnapshotId, Snapshot)],
) -> HashMap<[u8; 32], [u8; 32]> {
    let by_origin: HashMap<String, &Snapshot> =
        theirs.iter().map(|(_, s)| (origin_of(s), s)).collect();
    let mut map = HashMap::new();
    for (_, s) in mine {
        let Some(other) = by_origin.get(&origin_of(s)) else {
            continue;
        };
        let theirs = chunk_lists(other);
        for (table, chunks) in chunk_lists(s) {
            let Some(other_chunks) = theirs.get(table) else {
                continue;
            };
            if other_chunks.len() != chunks.len() {
                continue;
            }
            for (a, b) in chunks.iter().zip(other_chunks) {
                map.insert(a.0, b.0);
            }
        }
    }
    map
}

pub async fn repair(
    repo: &mut Repository,
    copy: &Repository,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let lock = repo.lock(LockKind::Shared, "repair").await?;
    let result = repair_locked(repo, copy, progress).await;
    lock.release().await;
    let mut report = result?;
    repo.load_index().await?;
    report.verify = Some(
        verify(
            repo,
            &VerifyOptions {
                snapshot: None,
                read_data: true,
            },
            progress,
        )
        .await?,
    );
    Ok(report)
}

async fn repair_locked(
    repo: &mut Repository,
    copy: &Repository,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    repo.load_index().await?;
    let mut report = RepairReport::default();
    let snapshots = repo.snapshots().await?;
    // Chunks the snapshots need that no index names (their pack and index are gone).
    let mut missing: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (_, s) in &snapshots {
        for t in &s.tables {
            for c in t.all_chunks() {
                if repo.location(&c.0).is_none() {
                    missing.insert(c.0);
                }
            }
        }
    }
    // Packs whose bytes do not match their name (or are gone), with their chunks.
    let index = repo.index_view();
    let mut by_pack: HashMap<[u8; 32], Vec<[u8; 32]>> = HashMap::new();
    for (id, loc) in index.iter() {
        by_pack.entry(loc.pack).or_default().push(*id);
    }
    let mut damaged: Vec<([u8; 32], Vec<[u8; 32]>)> = Vec::new();
    for (pack, chunks) in by_pack {
        progress.check_abort()?;
        match repo.check_pack(&pack).await {
            Ok(()) => {}
            Err(Error::Damaged(_)) => damaged.push((pack, chunks)),
            Err(e) => return Err(e),
        }
    }
    if damaged.is_empty() && missing.is_empty() {
        return Ok(report);
    }
    let map = correspondences(&snapshots, &copy.snapshots().await?);
    let mut recovered: Vec<([u8; 32], Vec<u8>)> = Vec::new();
    let from_copy = async |id: &[u8; 32]| -> Result<Option<Vec<u8>>> {
        let Some(theirs) = map.get(id) else {
            return Ok(None);
        };
        match copy.read_chunk(theirs).await {
            Ok(plain) if &repo.keys().chunk_id(&plain) == id => Ok(Some(plain)),
            Ok(_) | Err(Error::Damaged(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    for (pack, chunks) in &damaged {
        report.damaged_packs.push(short(pack));
        for id in chunks {
            progress.check_abort()?;
            match repo.read_chunk(id).await {
                Ok(plain) => {
                    report.chunks_kept += 1;
                    recovered.push((*id, plain));
                    continue;
                }
                Err(Error::Damaged(_)) => {}
                Err(e) => return Err(e),
            }
            match from_copy(id).await? {
                Some(plain) => {
                    report.chunks_from_copy += 1;
                    recovered.push((*id, plain));
                }
                None => report.unrecoverable.push(short(id)),
            }
        }
    }
    for id in &missing {
        match from_copy(id).await? {
            Some(plain) => {
                report.chunks_from_copy += 1;
                recovered.push((*id, plain));
            }
            None => report.unrecoverable.push(short(id)),
        }
    }
    // Write the recovered chunks into new packs, then drop the damaged packs.
    let mut writer = repo.pack_writer();
    let rt = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || -> Result<_> {
        for (id, plain) in &recovered {
            writer.add(*id, plain, &rt)?;
        }
        Ok(writer.finish(&rt)?.0)
    })
    .await
    .map_err(|e| Error::Other(format!("repair writer: {e}")))??;
    repo.absorb(written);
    let doomed: BTreeSet<[u8; 32]> = damaged.iter().map(|(p, _)| *p).collect();
    delete_packs(&repo.storage, &doomed).await;
    Ok(report)
}
