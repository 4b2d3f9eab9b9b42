//! Decoding `pgoutput`, PostgreSQL's logical replication output plugin (protocol
//! version 1), into committed transactions.

use super::bytes::{Bytes, reads_bytes};
use super::change::{Cell, Op, Relation, Txn};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) → unix milliseconds.
fn pg_time_ms(us: i64) -> i64 {
    us.div_euclid(1000) + 946_684_800_000
}

/// Reads `pgoutput` (protocol version 1) messages into transactions.
#[derive(Default)]
pub struct PgOutputDecoder {
    relations: HashMap<u32, Arc<Relation>>,
    current: Option<Txn>,
    done: Vec<Txn>,
}

/// A `pgoutput` message (big-endian numbers, C strings).
struct Reader<'a>(Bytes<'a>);
reads_bytes!(Reader);

impl<'a> Reader<'a> {
    fn new(msg: &'a [u8]) -> Reader<'a> {
        Reader(Bytes {
            buf: msg,
            at: 0,
            short: || Error::Other("a pgoutput message ends early".into()),
        })
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn cstr(&mut self) -> Result<String> {
        let rest = &self.buf[self.at..];
        let n = memchr::memchr(0, rest)
            .ok_or_else(|| Error::Other("a pgoutput string has no end".into()))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Cell>> {
        let n = self.i16()?.max(0) as usize;
        let mut cells = Vec::with_capacity(n);
        for _ in 0..n {
            cells.push(match self.u8()? {
                b'n' => Cell::Null,
                b'u' => Cell::Unchanged,
                b't' | b'b' => {
                    let len = self.i32()?.max(0) as usize;
                    Cell::Text(self.take(len)?.to_vec())
                }
                other => {
                    return Err(Error::Other(format!(
                        "unknown pgoutput column kind {:?}",
                        other as char
                    )));
                }
            });
        }
        Ok(cells)
    }
}

impl PgOutputDecoder {
    fn relation(&self, oid: i32) -> Result<Arc<Relation>> {
        self.relations.get(&(oid as u32)).cloned().ok_or_else(|| {
            Error::Other(format!(
                "pgoutput named relation {oid} before describing it"
            ))
        })
    }

    fn op(&mut self, op: Op) -> Result<()> {
        self.current
            .as_mut()
            .ok_or_else(|| Error::Other("a pgoutput change outside a transaction".into()))?
            .ops
            .push(op);
        Ok(())
    }

    /// Feeds one message.
    pub fn feed(&mut self, msg: &[u8]) -> Result<()> {
        let mut r = Reader::new(msg);
        match r.u8()? {
            b'B' => {
                let _final_lsn = r.i64()?;
                let ts = r.i64()?;
                let xid = r.i32()? as u32;
                self.current = Some(Txn {
                    xid,
                    commit_lsn: 0,
                    end_lsn: 0,
                    commit_ms: pg_time_ms(ts),
                    ops: Vec::new(),
                });
            }
            b'C' => {
                let _flags = r.u8()?;
                let commit_lsn = r.i64()? as u64;
                let end_lsn = r.i64()? as u64;
                let ts = r.i64()?;
                let mut txn = self
                    .current
                    .take()
                    .ok_or_else(|| Error::Other("a pgoutput commit without a begin".into()))?;
                txn.commit_lsn = commit_lsn;
                txn.end_lsn = end_lsn;
                txn.commit_ms = pg_time_ms(ts);
                self.done.push(txn);
            }
            b'R' => {
                let oid = r.i32()? as u32;
                let ns = r.cstr()?;
                let name = r.cstr()?;
                let _identity = r.u8()?;
                let n = r.i16()?.max(0) as usize;
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let flags = r.u8()?;
                    let col = r.cstr()?;
                    let _type = r.i32()?;
                    let _mod = r.i32()?;
                    columns.push((col, flags & 1 == 1));
                }
                self.relations.insert(
                    oid,
                    Arc::new(Relation {
                        oid,
                        name: format!("{ns}.{name}"),
                        columns,
                    }),
                );
            }
            b'I' => {
                let rel = self.relation(r.i32()?)?;
                let _n = r.u8()?;
                let new = r.tuple()?;
                self.op(Op::Insert { rel, new })?;
            }
            b'U' => {
                let rel = self.relation(r.i32()?)?;
                let mut kind = r.u8()?;
                let mut old = None;
                if kind == b'K' || kind == b'O' {
                    old = Some(r.tuple()?);
                    kind = r.u8()?;
                }
                if kind != b'N' {
                    return Err(Error::Other("a pgoutput update without a new row".into()));
                }
                let new = r.tuple()?;
                self.op(Op::Update { rel, old, new })?;
            }
            b'D' => {
                let rel = self.relation(r.i32()?)?;
                let _k = r.u8()?;
                let old = r.tuple()?;
                self.op(Op::Delete { rel, old })?;
            }
            b'T' => {
                let n = r.i32()?.max(0) as usize;
                let _options = r.u8()?;
                for _ in 0..n {
                    let rel = self.relation(r.i32()?)?;
                    self.op(Op::Truncate { rel })?;
                }
            }
            // Origin, Type and logical messages carry nothing a restore needs.
            b'O' | b'Y' | b'M' => {}
            other => {
                return Err(Error::Other(format!(
                    "unknown pgoutput message {:?}",
                    other as char
                )));
            }
        }
        Ok(())
    }

    /// Operations in the transactions completed and not yet taken.
    pub fn done_ops(&self) -> usize {
        self.done.iter().map(|t| t.ops.len()).sum()
    }

    /// The transactions completed so far.
    pub fn take_done(&mut self) -> Vec<Txn> {
        std::mem::take(&mut self.done)
    }
}
