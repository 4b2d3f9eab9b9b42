//! Change segments: the stream of transactions a capture round stores, chunked,
//! compressed and encrypted like table data, under a manifest `changes/<id>`
//! ([`ChangeSegment`]).
//!
//! ## The stream
//!
//! Records, each starting with a tag byte; integers little-endian, lengths LEB128:
//!
//! ```text
//! 'R' oid:u32 name:str ncols:len [name:str key:u8]…     a relation (before first use)
//! 'X' xid:u32 commit_lsn:u64 end_lsn:u64 commit_ms:i64 nops:len op…
//! op: 'I' oid tuple | 'U' oid has_old:u8 [tuple] tuple | 'D' oid tuple | 'T' oid
//! tuple: ncols:len cell…   cell: 0 NULL | 1 unchanged | 2 len bytes (text form)
//! ```

use super::bytes::{Bytes, reads_bytes};
use super::change::{Cell, Op, Relation, Txn, format_lsn};
use crate::model::{ChangeSegment, ChunkId, write_varint as put_len};
use crate::repo::Repository;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

pub const SEGMENT_FORMAT: u32 = 1;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_tuple(out: &mut Vec<u8>, cells: &[Cell]) {
    put_len(out, cells.len() as u64);
    for c in cells {
        match c {
            Cell::Null => out.push(0),
            Cell::Unchanged => out.push(1),
            Cell::Text(b) => {
                out.push(2);
                put_bytes(out, b);
            }
        }
    }
}

/// Encodes transactions as one segment's stream (relations described before first use).
pub fn encode(txns: &[Txn]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut described: HashMap<u32, Arc<Relation>> = HashMap::new();
    for t in txns {
        for op in &t.ops {
            let rel = match op {
                Op::Insert { rel, .. }
                | Op::Update { rel, .. }
                | Op::Delete { rel, .. }
                | Op::Truncate { rel } => rel,
            };
            if described.get(&rel.oid) != Some(rel) {
                out.push(b'R');
                out.extend_from_slice(&rel.oid.to_le_bytes());
                put_bytes(&mut out, rel.name.as_bytes());
                put_len(&mut out, rel.columns.len() as u64);
                for (c, key) in &rel.columns {
                    put_bytes(&mut out, c.as_bytes());
                    out.push(*key as u8);
                }
                described.insert(rel.oid, rel.clone());
            }
        }
        out.push(b'X');
        out.extend_from_slice(&t.xid.to_le_bytes());
        out.extend_from_slice(&t.commit_lsn.to_le_bytes());
        out.extend_from_slice(&t.end_lsn.to_le_bytes());
        out.extend_from_slice(&t.commit_ms.to_le_bytes());
        put_len(&mut out, t.ops.len() as u64);
        for op in &t.ops {
            match op {
                Op::Insert { rel, new } => {
                    out.push(b'I');
                    out.extend_from_slice(&rel.oid.to_le_bytes());
                    put_tuple(&mut out, new);
                }
                Op::Update { rel, old, new } => {
                    out.push(b'U');
                    out.extend_from_slice(&rel.oid.to_le_bytes());
                    out.push(old.is_some() as u8);
                    if let Some(old) = old {
                        put_tuple(&mut out, old);
                    }
                    put_tuple(&mut out, new);
                }
                Op::Delete { rel, old } => {
                    out.push(b'D');
                    out.extend_from_slice(&rel.oid.to_le_bytes());
                    put_tuple(&mut out, old);
                }
                Op::Truncate { rel } => {
                    out.push(b'T');
                    out.extend_from_slice(&rel.oid.to_le_bytes());
                }
            }
        }
    }
    out
}

/// A change segment's stream (little-endian numbers, varint lengths).
struct Cursor<'a>(Bytes<'a>);
reads_bytes!(Cursor);

impl<'a> Cursor<'a> {
    fn new(stream: &'a [u8]) -> Cursor<'a> {
        Cursor(Bytes {
            buf: stream,
            at: 0,
            short: || Cursor::damaged("it ends early"),
        })
    }
    fn damaged(what: &str) -> Error {
        Error::damaged(format!("a change segment is damaged: {what}"))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len(&mut self) -> Result<usize> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift > 63 {
                return Err(Self::damaged("a length overflows"));
            }
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        usize::try_from(v).map_err(|_| Self::damaged("a length overflows"))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    fn tuple(&mut self) -> Result<Vec<Cell>> {
        let n = self.len()?;
        let mut cells = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            cells.push(match self.u8()? {
                0 => Cell::Null,
                1 => Cell::Unchanged,
                2 => Cell::Text(self.bytes()?.to_vec()),
                _ => return Err(Self::damaged("unknown cell kind")),
            });
        }
        Ok(cells)
    }
}

/// Decodes a segment's stream.
pub fn decode(stream: &[u8]) -> Result<Vec<Txn>> {
    let mut c = Cursor::new(stream);
    let mut rels: HashMap<u32, Arc<Relation>> = HashMap::new();
    let mut out = Vec::new();
    let rel = |rels: &HashMap<u32, Arc<Relation>>, oid: u32| {
        rels.get(&oid)
            .cloned()
            .ok_or_else(|| Cursor::damaged("an unknown relation"))
    };
    while c.at < stream.len() {
        match c.u8()? {
            b'R' => {
                let oid = c.u32()?;
                let name = String::from_utf8_lossy(c.bytes()?).into_owned();
                let n = c.len()?;
                let mut columns = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    let col = String::from_utf8_lossy(c.bytes()?).into_owned();
                    columns.push((col, c.u8()? == 1));
                }
                rels.insert(oid, Arc::new(Relation { oid, name, columns }));
            }
            b'X' => {
                let xid = c.u32()?;
                let commit_lsn = c.u64()?;
                let end_lsn = c.u64()?;
                let commit_ms = c.u64()? as i64;
                let n = c.len()?;
                let mut ops = Vec::with_capacity(n.min(65536));
                for _ in 0..n {
                    let kind = c.u8()?;
                    let r = rel(&rels, c.u32()?)?;
                    ops.push(match kind {
                        b'I' => Op::Insert {
                            rel: r,
                            new: c.tuple()?,
                        },
                        b'U' => {
                            let old = if c.u8()? == 1 { Some(c.tuple()?) } else { None };
                            Op::Update {
                                rel: r,
                                old,
                                new: c.tuple()?,
                            }
                        }
                        b'D' => Op::Delete {
                            rel: r,
                            old: c.tuple()?,
                        },
                        b'T' => Op::Truncate { rel: r },
                        _ => return Err(Cursor::damaged("unknown change kind")),
                    });
                }
                out.push(Txn {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_ms,
                    ops,
                });
            }
            _ => return Err(Cursor::damaged("unknown record")),
        }
    }
    Ok(out)
}

/// The change segments of `slot`, ordered by position.
pub async fn segments(repo: &Repository, slot: &str) -> Result<Vec<(String, ChangeSegment)>> {
    let mut out: Vec<(String, ChangeSegment)> = repo
        .change_segments()
        .await?
        .into_iter()
        .filter(|(_, s)| s.slot == slot)
        .collect();
    out.sort_by_key(|(_, s)| (s.start_lsn, s.end_lsn, s.covers_until_ms));
    Ok(out)
}

/// Chunks, compresses, encrypts and stores a stream; returns its chunk ids. (The same
/// steps as a backup's worker, for one small stream at once.)
pub(super) async fn store_stream(repo: &mut Repository, stream: Vec<u8>) -> Result<Vec<ChunkId>> {
    let params = repo.config.chunker;
    let index = repo.dedup_view();
    let mut writer = repo.pack_writer();
    let rt = tokio::runtime::Handle::current();
    let (ids, written) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut chunker = crate::chunker::Chunker::new(params);
        let mut pieces = chunker.push(&stream);
        pieces.extend(chunker.finish());
        let mut ids = Vec::new();
        let mut result = Ok(());
        for piece in pieces {
            let id = writer.keys().chunk_id(&piece);
            if !index.contains_key(&id)
                && !writer.is_pending(&id)
                && let Err(e) = writer.add(id, &piece, &rt)
            {
                result = Err(e);
                break;
            }
            ids.push(ChunkId(id));
        }
        if let Err(e) = result {
            writer.discard(&rt);
            return Err(e);
        }
        let (written, _) = writer.finish(&rt)?;
        Ok((ids, written))
    })
    .await
    .map_err(|e| Error::Other(format!("capture worker: {e}")))??;
    repo.absorb(written);
    Ok(ids)
}

/// Reads a segment's transactions back, checking its checksum.
pub async fn read_segment(repo: &Repository, seg: &ChangeSegment) -> Result<Vec<Txn>> {
    let mut stream = Vec::with_capacity(seg.bytes as usize);
    for id in &seg.chunks {
        stream.extend_from_slice(&repo.read_chunk(&id.0).await?);
    }
    if stream.len() as u64 != seg.bytes || !seg.checksum.matches(&blake3::hash(&stream)) {
        return Err(Error::damaged(format!(
            "change segment of slot {} ({}..{}) does not match its checksum",
            seg.slot,
            format_lsn(seg.start_lsn),
            format_lsn(seg.end_lsn)
        )));
    }
    decode(&stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::change::tests::rel;

    #[test]
    fn the_stream_round_trips() {
        let r = rel();
        let txns = vec![
            Txn {
                xid: 5,
                commit_lsn: 10,
                end_lsn: 11,
                commit_ms: 1_700_000_000_000,
                ops: vec![
                    Op::Insert {
                        rel: r.clone(),
                        new: vec![Cell::Text(b"1".to_vec()), Cell::Text(b"it's".to_vec())],
                    },
                    Op::Update {
                        rel: r.clone(),
                        old: Some(vec![Cell::Text(b"1".to_vec()), Cell::Null]),
                        new: vec![Cell::Text(b"2".to_vec()), Cell::Unchanged],
                    },
                ],
            },
            Txn {
                xid: 6,
                commit_lsn: 20,
                end_lsn: 21,
                commit_ms: 1_700_000_000_500,
                ops: vec![
                    Op::Delete {
                        rel: r.clone(),
                        old: vec![Cell::Text(b"2".to_vec()), Cell::Null],
                    },
                    Op::Truncate { rel: r },
                ],
            },
        ];
        let bytes = encode(&txns);
        assert_eq!(decode(&bytes).unwrap(), txns);
        assert!(
            decode(&bytes[..bytes.len() - 1]).is_err(),
            "a cut stream is damage"
        );
    }
}
