//! Copy snapshots from one repository to another (a second target of a policy, or
//! `tablesafe copy`). The repositories have their own keys, so chunk ids differ: each
//! chunk is read, checked, re-identified with the destination's key, deduplicated
//! against what the destination holds, and stored; the manifest is rewritten with the
//! destination's ids. Writes follow the backup order (packs, indexes, then the
//! manifest), under a shared lock, so an interrupted copy leaves only garbage prune
//! collects, and running it again finishes the job.
//!
//! A snapshot's *origin* (the `origin` tag of a copy, else the hash of its own
//! manifest) identifies it across repositories: a snapshot whose origin the destination
//! already holds is not copied again.

use crate::model::{ChunkId, Snapshot, SnapshotId};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::crypto::hex;
use crate::repo::lock::LockKind;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// The tag a copy carries: the origin of the snapshot it copies.
pub const ORIGIN_TAG: &str = "origin";

pub fn origin_of(s: &Snapshot) -> String {
    match s.tags.get(ORIGIN_TAG) {
        Some(o) => o.clone(),
        None => {
            let plain = serde_json::to_vec(s).unwrap_or_default();
            hex(blake3::hash(&plain).as_bytes())
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    pub source_id: crate::model::SnapshotId,
    pub dest_id: crate::model::SnapshotId,
    pub bytes_stored: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<Copied>,
    /// Source snapshots the destination already had (by origin).
    pub already_there: Vec<SnapshotId>,
}

/// Copies the given source snapshots (all when `None`) that the destination lacks.
pub async fn copy(
    src: &Repository,
    dst: &mut Repository,
    only: Option<&[String]>,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let src_lock = src.lock(LockKind::Shared, "copy").await.ok();
    let dst_lock = dst.lock(LockKind::Shared, "copy").await?;
    let result = match dst.load_index().await {
        Ok(()) => copy_locked(src, dst, only, progress).await,
        Err(e) => Err(e),
    };
    dst_lock.release().await;
    if let Some(l) = src_lock {
        l.release().await;
    }
    result
}

async fn copy_locked(
    src: &Repository,
    dst: &mut Repository,
    only: Option<&[String]>,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let have: BTreeSet<String> = dst
        .snapshots()
        .await?
        .iter()
        .map(|(_, s)| origin_of(s))
        .collect();
    let wanted: Vec<(SnapshotId, Snapshot)> = match only {
        Some(ids) => {
            let mut v = Vec::new();
            for id in ids {
                v.push(src.find_snapshot(id).await?);
            }
            v
        }
        None => src.snapshots().await?,
    };
    let mut report = CopyReport::default();
    // Source chunk id → destination chunk id, across snapshots (they share most).
    let mut mapped: HashMap<[u8; 32], [u8; 32]> = HashMap::new();
    for (id, snap) in wanted {
        let origin = origin_of(&snap);
        if have.contains(&origin) {
            report.already_there.push(id);
            continue;
        }
        progress.table_started(&format!("snapshot {}", id.short()), None);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<([u8; 32], Vec<u8>)>(8);
        let mut writer = dst.pack_writer();
        let rt = tokio::runtime::Handle::current();
        let worker = tokio::task::spawn_blocking(move || {
            while let Some((id, plain)) = rx.blocking_recv() {
                if let Err(e) = writer.add(id, &plain, &rt) {
                    writer.discard(&rt);
                    return Err(e);
                }
            }
            writer.finish(&rt)
        });
        let dedup = dst.dedup_view();
        let mut sent: BTreeSet<[u8; 32]> = BTreeSet::new();
        let read = async {
            let mut out = snap.clone();
            out.tags.insert(ORIGIN_TAG.into(), origin.clone());
            for t in &mut out.tables {
                let lists = t
                    .base
                    .iter_mut()
                    .map(|l| &mut l.chunks)
                    .chain(std::iter::once(&mut t.chunks))
                    // Format 2: the table's block list.
                    .chain(t.blocks.iter_mut().map(|b| &mut b.chunks));
                for list in lists {
                    for c in list.iter_mut() {
                        progress.check_abort()?;
                        let sid = c.0;
                        let did = match mapped.get(&sid) {
                            Some(d) => *d,
                            None => {
                                let plain = src.read_chunk(&sid).await?;
                                let did = dst.keys().chunk_id(&plain);
                                if !dedup.contains_key(&did) && sent.insert(did) {
                                    progress.advanced(0, plain.len() as u64);
                                    tx.send((did, plain))
                                        .await
                                        .map_err(|_| Error::Other("copy worker stopped".into()))?;
                                }
                                mapped.insert(sid, did);
                                did
                            }
                        };
                        *c = ChunkId(did);
                    }
                }
            }
            Ok::<Snapshot, Error>(out)
        }
        .await;
        drop(tx);
        let joined = worker
            .await
            .map_err(|e| Error::Other(format!("copy worker: {e}")))?;
        let (mut out, written, stored) = match (read, joined) {
            (Ok(out), Ok((written, stored))) => (out, written, stored),
            (Err(e), Ok((written, _))) => {
                let packs: Vec<[u8; 32]> = written.iter().map(|(_, l)| l.pack).collect();
                dst.discard_packs(&packs).await;
                return Err(e);
            }
            // The worker's error explains the read's (a closed channel).
            (_, Err(w)) => return Err(w),
        };
        out.bytes_stored = stored;
        let packs: Vec<[u8; 32]> = written.iter().map(|(_, l)| l.pack).collect();
        dst.absorb(written);
        let dest_id = match dst.save_snapshot(&out).await {
            Ok(id) => id,
            Err(e) => {
                dst.discard_packs(&packs).await;
                return Err(e);
            }
        };
        progress.table_finished(&format!("snapshot {}", id.short()));
        report.copied.push(Copied {
            source_id: id,
            dest_id,
            bytes_stored: stored,
        });
    }
    Ok(report)
}
