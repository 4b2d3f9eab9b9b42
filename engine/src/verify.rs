//! Verify: does every object a snapshot references exist (and, with `read_data`, read
//! back, decrypt, match its id, and add up to each table's checksum)?

use crate::model::ChunkId;
use crate::model::{RowDecoder, Snapshot, SnapshotId, StreamFormat};
use crate::progress::Progress;
use crate::repo::{Repository, short};
use crate::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only this snapshot (id, prefix or `latest`); all when `None`.
    pub snapshot: Option<String>,
    pub read_data: bool,
}

/// One damaged object and what it affects.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The chunk (short id) or object involved.
    pub object: String,
    pub message: String,
    pub snapshots: BTreeSet<String>,
    pub tables: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub tables: usize,
    pub chunks: usize,
    pub read_data: bool,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub async fn verify(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    // As in restore: a concurrent prune must not delete what is being checked.
    let lock = repo
        .lock(crate::repo::lock::LockKind::Shared, "verify")
        .await
        .ok();
    let result = verify_locked(repo, opts, progress).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

async fn verify_locked(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let snapshots: Vec<(SnapshotId, Snapshot)> = match &opts.snapshot {
        Some(s) => vec![repo.find_snapshot(s).await?],
        None => repo.snapshots().await?,
    };
    // chunk → (snapshots, tables) that use it
    let mut users: BTreeMap<ChunkId, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut tables = 0;
    for (id, snap) in &snapshots {
        for t in &snap.tables {
            tables += 1;
            for c in t.all_chunks() {
                let u = users.entry(*c).or_default();
                u.0.insert(id.short().to_string());
                u.1.insert(t.name.clone());
            }
        }
    }
    // Change segments (point-in-time restore) when the whole repository is checked.
    let segments = match &opts.snapshot {
        Some(_) => Vec::new(),
        None => repo.change_segments().await?,
    };
    for (id, seg) in &segments {
        for c in &seg.chunks {
            let u = users.entry(*c).or_default();
            u.0.insert(format!("changes {}", &id[..12]));
            u.1.insert(format!("captured changes of {}", seg.slot));
        }
    }
    let mut problems: BTreeMap<String, Problem> = BTreeMap::new();
    let mut report =
        |object: String, message: String, users: Option<&(BTreeSet<String>, BTreeSet<String>)>| {
            let p = problems.entry(object.clone()).or_insert_with(|| Problem {
                object,
                message,
                snapshots: BTreeSet::new(),
                tables: BTreeSet::new(),
            });
            if let Some((s, t)) = users {
                p.snapshots.extend(s.iter().cloned());
                p.tables.extend(t.iter().cloned());
            }
        };

    // Existence: every chunk is indexed and its pack holds its bytes.
    let mut packs: BTreeMap<[u8; 32], Vec<ChunkId>> = BTreeMap::new();
    for (chunk, u) in &users {
        progress.check_abort()?;
        match repo.location(&chunk.0) {
            None => report(
                format!("chunk {}", chunk.short()),
                "missing: in no index".into(),
                Some(u),
            ),
            Some(loc) => packs.entry(loc.pack).or_default().push(*chunk),
        }
    }
    for (pack, chunks) in &packs {
        let size = repo.pack_size(pack).await;
        let affected = merge(chunks.iter().filter_map(|c| users.get(c)));
        match size {
            Err(Error::Damaged(m)) => report(format!("pack {}", short(pack)), m, Some(&affected)),
            Err(e) => return Err(e),
            Ok(size) => {
                if opts.read_data
                    && let Err(e) = repo.check_pack(pack).await
                {
                    report(
                        format!("pack {}", short(pack)),
                        e.to_string(),
                        Some(&affected),
                    );
                }
                for c in chunks {
                    let loc = repo.location(&c.0).expect("located above");
                    if loc.offset + u64::from(loc.length) > size {
                        report(
                            format!("chunk {}", c.short()),
                            format!("pack {} is truncated", short(pack)),
                            users.get(c),
                        );
                    }
                }
            }
        }
    }

    // Read data: decrypt and check every chunk, and every table's checksum.
    if opts.read_data {
        for (chunk, u) in &users {
            progress.check_abort()?;
            let id = chunk.0;
            if repo.location(&id).is_none() {
                continue;
            }
            if let Err(e) = repo.read_chunk(&id).await {
                match e {
                    Error::Damaged(m) => report(format!("chunk {}", short(&id)), m, Some(u)),
                    other => return Err(other),
                }
            }
        }
        for (sid, snap) in &snapshots {
            for t in &snap.tables {
                if let Some(msg) = table_checksum_problem(repo, t).await? {
                    let u = (
                        BTreeSet::from([sid.short().to_string()]),
                        BTreeSet::from([t.name.clone()]),
                    );
                    report(
                        format!("table {} in snapshot {}", t.name, sid.short()),
                        msg,
                        Some(&u),
                    );
                }
            }
        }
    }
    if opts.read_data {
        for (id, seg) in &segments {
            progress.check_abort()?;
            match crate::capture::read_segment(repo, seg).await {
                Ok(_) => {}
                Err(Error::Damaged(m)) => {
                    let u = (
                        BTreeSet::from([format!("changes {}", &id[..12])]),
                        BTreeSet::from([format!("captured changes of {}", seg.slot)]),
                    );
                    report(format!("change segment {}", &id[..12]), m, Some(&u));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(VerifyReport {
        snapshots: snapshots.len(),
        tables,
        chunks: users.len(),
        read_data: opts.read_data,
        problems: problems.into_values().collect(),
    })
}

fn merge<'a>(
    it: impl Iterator<Item = &'a (BTreeSet<String>, BTreeSet<String>)>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut out = (BTreeSet::new(), BTreeSet::new());
    for (s, t) in it {
        out.0.extend(s.iter().cloned());
        out.1.extend(t.iter().cloned());
    }
    out
}

/// Recomputes a table's checksum and row count from its chunks; `Some(reason)` when
/// they do not match (or a chunk cannot be read).
async fn table_checksum_problem(
    repo: &Repository,
    t: &crate::model::TableEntry,
) -> Result<Option<String>> {
    // A format this version does not know must not be checked as another one.
    if let StreamFormat::Unknown(name) = &t.format {
        return Ok(Some(format!(
            "has a stream format this version of tablesafe does not know ({name:?})"
        )));
    }
    let mut check = match crate::checksum::StreamCheck::new(t) {
        Ok(c) => c,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let mut decoder = RowDecoder::new(t.stream_columns.len());
    let mut rows = 0u64;
    let mut stream = match crate::segment::table_stream(repo, t) {
        Ok(s) => s,
        Err(e) => return Ok(Some(e.to_string())),
    };
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(bytes) if t.format == StreamFormat::PgCopyText => {
                if let Err(e) = check.update(&bytes) {
                    return Ok(Some(e.to_string()));
                }
                rows += crate::source::postgres::count_lines(&bytes);
            }
            Ok(bytes) => {
                if let Err(e) = check.update(&bytes) {
                    return Ok(Some(e.to_string()));
                }
                decoder.push(&bytes);
                while let Some(_row) = match decoder.next_row() {
                    Ok(r) => r,
                    Err(e) => return Ok(Some(e.to_string())),
                } {
                    rows += 1;
                }
            }
            Err(Error::Damaged(m)) => {
                return Ok(Some(format!("cannot be read: {m}")));
            }
            Err(e) => return Err(e),
        }
    }
    let finished = match check.finish() {
        Ok(f) => f,
        Err(e) => return Ok(Some(e.to_string())),
    };
    if decoder.finish().is_err() || rows != t.rows || !finished.matches(t) {
        if let (Some(list), Some(sum)) = (&t.blocks, &finished.sum)
            && let Some(msg) = first_bad_block(repo, t, list, sum).await?
        {
            return Ok(Some(msg));
        }
        return Ok(Some(format!(
            "does not match its checksum ({rows} of {} rows)",
            t.rows
        )));
    }
    Ok(None)
}

/// The first block of `t` whose stored sum differs from the one computed from its rows
/// (`sum`), named by number, rows and last key; or the stored list itself when it does
/// not hash to the table's checksum.
async fn first_bad_block(
    repo: &Repository,
    t: &crate::model::TableEntry,
    list: &crate::model::BlockList,
    sum: &crate::checksum::TableSum,
) -> Result<Option<String>> {
    use crate::checksum::BlockSum;
    let mut stored = Vec::new();
    let mut chunks = crate::segment::layer_chunks(repo, list.chunks.clone(), t.name.clone());
    while let Some(c) = chunks.next().await {
        match c {
            Ok(c) => stored.extend_from_slice(&c),
            Err(Error::Damaged(m)) => {
                return Ok(Some(format!("its block list cannot be read: {m}")));
            }
            Err(e) => return Err(e),
        }
    }
    let root = blake3::Hasher::new_derive_key(crate::checksum::ROOT_CONTEXT)
        .update(&stored)
        .finalize();
    if !t.checksum.matches(&root) || stored.len() as u64 != list.bytes {
        return Ok(Some(
            "its block list does not match the table's checksum (the list is damaged)".into(),
        ));
    }
    let (mut a, mut b, mut n, mut row) = (0usize, 0usize, 0u64, 0u64);
    loop {
        let mine = BlockSum::decode(&sum.list[a..])?;
        let theirs = BlockSum::decode(&stored[b..])?;
        match (mine, theirs) {
            (None, None) => return Ok(None),
            (Some((m, ma)), Some((s, sa))) if m == s => {
                a += ma;
                b += sa;
                n += 1;
                row += s.rows;
            }
            (_, Some((s, _))) => {
                return Ok(Some(format!(
                    "block {} of {} (rows {}..{}, last key {}) does not match its checksum",
                    n + 1,
                    list.count,
                    row + 1,
                    row + s.rows,
                    describe_key(&s.last),
                )));
            }
            (Some(_), None) => {
                return Ok(Some(format!(
                    "has rows after its last block ({} blocks, {} rows)",
                    list.count, t.rows
                )));
            }
        }
    }
}

/// A block's last key for a message: its values, or the bytes when they are not a key.
fn describe_key(bytes: &[u8]) -> String {
    let mut at = 0;
    let mut parts = Vec::new();
    while at < bytes.len() {
        match crate::model::decode_value(&bytes[at..]) {
            Ok(Some((v, n))) => {
                parts.push(match v {
                    crate::model::Value::Integer(i) => i.to_string(),
                    crate::model::Value::Real(f) => f.to_string(),
                    crate::model::Value::Text(t) => format!("{:?}", String::from_utf8_lossy(&t)),
                    crate::model::Value::Blob(b) => format!("x'{}'", crate::repo::crypto::hex(&b)),
                    crate::model::Value::Null => "NULL".into(),
                });
                at += n;
            }
            _ => return format!("({} bytes)", bytes.len()),
        }
    }
    format!("({})", parts.join(", "))
}
