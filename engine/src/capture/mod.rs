//! Continuous change capture from PostgreSQL, for point-in-time restore.
//!
//! **What PostgreSQL ships, and why this way.** Changes come from a logical
//! replication slot with the `pgoutput` plugin (built into PostgreSQL 10+) and a
//! publication of the captured tables, read over the streaming replication protocol
//! (`START_REPLICATION … LOGICAL`, [`stream`], through the `pgwire-replication` crate:
//! sqlx does not speak that protocol). An earlier version peeked through SQL with
//! `pg_logical_slot_peek_binary_changes`; every round then decoded the slot's WAL again
//! from its restart point and advancing the slot decoded it once more (+40 % CPU on the
//! source in the benchmark), where the walsender decodes each record once. The
//! position confirmed to the server is only ever one whose changes are stored in the
//! repository, so a crash of tablesafe or of the target at any moment loses nothing
//! (the server sends again what follows the confirmed position, and transactions a
//! stored segment already holds are dropped, so nothing is applied twice). `pgoutput`'s
//! binary messages are a documented protocol (Begin, Relation, Insert, Update, Delete,
//! Truncate, Commit), unlike `test_decoding`'s text, which is meant for tests.
//!
//! **Segments.** Each round that found transactions writes one *change segment*: the
//! stream below, chunked, compressed and encrypted like table data, and a manifest
//! `changes/<id>` ([`ChangeSegment`]) with the slot positions it covers. A segment's
//! `covers_until_ms` says that every transaction that committed up to then is in it or
//! an earlier segment of the slot: that is the end of the restorable range.
//!
//! **Replay on a snapshot.** A PostgreSQL snapshot records `txid_current_snapshot()` of
//! its transaction and the capture slots that existed before it began
//! ([`crate::model::PgPoint`]). Restoring to time T takes the latest such snapshot
//! before T, then applies, in commit order, every captured transaction that the
//! snapshot does not see (by its xid) and that committed at or before T. That is exact:
//! no transaction is applied twice or missed, whatever was running while the backup
//! read. Values travel as PostgreSQL's text output (what COPY writes too), so every
//! type round-trips; a value `pgoutput` marks unchanged (a TOASTed column an UPDATE did
//! not touch) is left as it is.
//!
//! **Limits.** Only tables with a primary key are captured (an UPDATE or DELETE needs a
//! key to find its row; a table without one and without a replica identity would even
//! make the source refuse UPDATEs once published). DDL is not captured: a table whose
//! columns changed after the snapshot cannot be replayed and is reported. Sequences
//! are not captured: after a point-in-time restore their value is the larger of the
//! snapshot's and the column's maximum.
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

use crate::model::{ChangeSegment, Checksum, ChunkId, Engine, SnapshotSource};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::crypto::hex;
use crate::repo::lock::LockKind;
use crate::secret::Secret;
use crate::selection::{Selection, SelectionExt};
use crate::source::postgres::{PgDb, copy_into_temp, qualified, quote, split_name};
use crate::source::{SourceDb, SourceUrl};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub mod sqlite;
mod stream;

pub const SEGMENT_FORMAT: u32 = 1;

/// How long one [`capture_round`] keeps storing segments while catching up.
const MAX_ROUND: std::time::Duration = std::time::Duration::from_secs(5);

/// `16/B374D848` → its 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A value as `pgoutput` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cell {
    Null,
    /// A TOASTed value the change did not touch: keep what the row has.
    Unchanged,
    /// The value's text form.
    Text(Vec<u8>),
}

/// A table as the change stream names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// `schema.table`, as snapshots name tables.
    pub name: String,
    /// (column, part of the replica identity / primary key).
    pub columns: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        rel: Arc<Relation>,
        new: Vec<Cell>,
    },
    Update {
        rel: Arc<Relation>,
        /// The old key (or whole old row) when the key changed or the identity is FULL.
        old: Option<Vec<Cell>>,
        new: Vec<Cell>,
    },
    Delete {
        rel: Arc<Relation>,
        old: Vec<Cell>,
    },
    Truncate {
        rel: Arc<Relation>,
    },
}

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub xid: u32,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    pub commit_ms: i64,
    pub ops: Vec<Op>,
}

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

/// Reads a byte buffer front to back; `short` makes the error of a read past its end.
struct Bytes<'a> {
    buf: &'a [u8],
    at: usize,
    short: fn() -> Error,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(self.short)?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }
}

/// A `pgoutput` message (big-endian numbers, C strings).
struct Reader<'a>(Bytes<'a>);

/// A reader of one format is a [`Bytes`] with that format's reads added.
macro_rules! reads_bytes {
    ($t:ident) => {
        impl<'a> std::ops::Deref for $t<'a> {
            type Target = Bytes<'a>;
            fn deref(&self) -> &Bytes<'a> {
                &self.0
            }
        }
        impl<'a> std::ops::DerefMut for $t<'a> {
            fn deref_mut(&mut self) -> &mut Bytes<'a> {
                &mut self.0
            }
        }
    };
}
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

// ---- the stored stream ----

use crate::model::write_varint as put_len;

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

// ---- visibility ----

pub use crate::model::XidSnapshot;

// ---- capture ----

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub source: Secret<String>,
    /// The capture's name (`[a-z0-9_]`, at most 40 characters): its slot is
    /// `tablesafe_<name>_<random>`, its publication `tablesafe_<name>`.
    pub name: String,
    pub selection: Selection,
    /// Changes read per round at most (a round may end later, at its transaction's end).
    pub max_changes: i64,
    /// WAL the slot may hold back on the source before the capture gives up and drops
    /// it, rather than fill the source's disk.
    pub max_lag_bytes: u64,
    /// Without changes, a segment is still written this often, to move the end of the
    /// restorable range.
    pub idle_segment_ms: i64,
}

impl CaptureOptions {
    pub fn new(source: Secret<String>, name: &str) -> Self {
        CaptureOptions {
            source,
            name: name.to_string(),
            selection: Selection::default(),
            max_changes: 200_000,
            max_lag_bytes: 1 << 30,
            idle_segment_ms: 5_000,
        }
    }
}

/// What [`setup`] found or made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Setup {
    pub slot: String,
    pub created: bool,
    pub publication: String,
    pub tables: Vec<String>,
    /// Selected tables that cannot be captured, and why.
    pub not_captured: Vec<(String, String)>,
}

/// What one round of [`capture_once`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    pub slot: String,
    /// The segment written, if any.
    pub segment: Option<String>,
    pub transactions: u64,
    pub changes: u64,
    /// Every commit up to this time (unix ms) is stored.
    pub covers_until_ms: Option<i64>,
    /// WAL the slot holds back on the source, in bytes.
    pub lag_bytes: u64,
    /// Everything committed when the round began is stored (false: a backlog remains
    /// for the next round).
    pub drained: bool,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 40
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::invalid(format!(
            "capture name {name:?}: use 1 to 40 characters a-z, 0-9 and _"
        )));
    }
    Ok(())
}

fn connect_url(source: &Secret<String>) -> Result<(Secret<String>, String)> {
    match SourceUrl::parse(source)? {
        SourceUrl::Postgres(url) => {
            let display = SourceUrl::Postgres(url.clone()).display();
            Ok((url, display))
        }
        SourceUrl::Mysql(_) => Err(Error::invalid(
            "continuous capture of MySQL is not available yet: schedule frequent backups (they are incremental)",
        )),
        SourceUrl::Sqlite(_) => Err(Error::invalid(
            "continuous capture reads PostgreSQL's logical replication; SQLite sources get frequent incremental backups instead",
        )),
    }
}

async fn find_slot(db: &mut PgDb, name: &str) -> Result<Option<(String, u64, u64)>> {
    let row: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT slot_name::text, confirmed_flush_lsn::text, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name LIKE $1 AND database = current_database() \
         ORDER BY slot_name LIMIT 1",
    )
    .bind(format!("tablesafe\\_{name}\\_%"))
    .fetch_optional(&mut db.conn)
    .await
    .map_err(|e| Error::Database {
        context: "looking up the capture slot".into(),
        source: e,
    })?;
    Ok(row.map(|(slot, confirmed, lag)| {
        (
            slot,
            confirmed.as_deref().and_then(parse_lsn).unwrap_or(0),
            lag.unwrap_or(0).max(0) as u64,
        )
    }))
}

/// Makes sure the publication lists the selected keyed tables and the slot exists.
/// Needs a role with REPLICATION (or superuser) and ownership of the tables, and
/// `wal_level = logical` on the source.
pub async fn setup(opts: &CaptureOptions) -> Result<Setup> {
    check_name(&opts.name)?;
    let (url, display) = connect_url(&opts.source)?;
    let mut db = PgDb::connect(&url, display).await?;
    let level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: "reading wal_level".into(),
            source: e,
        })?;
    if level != "logical" {
        return Err(Error::invalid(format!(
            "the source has wal_level = {level}; continuous capture needs wal_level = logical (set it in postgresql.conf and restart PostgreSQL)"
        )));
    }
    let catalog = db.discover().await?;
    let chosen = opts
        .selection
        .apply(catalog.tables.iter().map(|t| t.name.as_str()))?;
    let mut tables = Vec::new();
    let mut not_captured = Vec::new();
    for t in catalog.tables.iter().filter(|t| chosen.contains(&t.name)) {
        if t.pk.is_empty() {
            not_captured.push((
                t.name.clone(),
                "no primary key: changes cannot be matched to rows".to_string(),
            ));
        } else {
            tables.push(t.name.clone());
        }
    }
    if tables.is_empty() {
        return Err(Error::invalid(
            "no selected table has a primary key: nothing can be captured",
        ));
    }
    let publication = format!("tablesafe_{}", opts.name);
    let list = tables
        .iter()
        .map(|t| {
            let (s, n) = split_name(t);
            qualified(&s, &n)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(&publication)
            .fetch_one(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: "looking up the publication".into(),
                source: e,
            })?;
    let sql = if exists {
        format!("ALTER PUBLICATION {} SET TABLE {list}", quote(&publication))
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {list}",
            quote(&publication)
        )
    };
    db.exec(&sql).await?;
    let (slot, created) = match find_slot(&mut db, &opts.name).await? {
        Some((slot, _, _)) => (slot, false),
        None => {
            let mut rnd = [0u8; 4];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
            let slot = format!("tablesafe_{}_{}", opts.name, hex(&rnd));
            // Waits for transactions running now to end: every later commit is decoded.
            sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
                .bind(&slot)
                .execute(&mut db.conn)
                .await
                .map_err(|e| Error::Database {
                    context: "creating the capture slot (the role needs REPLICATION)".into(),
                    source: e,
                })?;
            (slot, true)
        }
    };
    Ok(Setup {
        slot,
        created,
        publication,
        tables,
        not_captured,
    })
}

/// Drops the capture's slot and publication (the source keeps no WAL for it any more).
pub async fn teardown(source: &Secret<String>, name: &str) -> Result<bool> {
    check_name(name)?;
    let (url, display) = connect_url(source)?;
    let mut db = PgDb::connect(&url, display).await?;
    let slot = find_slot(&mut db, name).await?;
    if let Some((slot, _, _)) = &slot {
        free_slot(&mut db, slot).await?;
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: "dropping the capture slot".into(),
                source: e,
            })?;
    }
    db.exec(&format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote(&format!("tablesafe_{name}"))
    ))
    .await?;
    Ok(slot.is_some())
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

/// What a long-running capture keeps between rounds: where the last stored segment of
/// the slot ended (slot, end position, covered until), so it need not list every
/// segment, and the open replication stream.
#[derive(Default)]
pub struct Position {
    last: Option<(String, u64, i64)>,
    stream: Option<stream::ChangeStream>,
    sql: Option<PgDb>,
}

impl Position {
    /// Ends the replication stream, if one is open (the slot is then free).
    pub async fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            s.shutdown().await;
        }
        self.sql = None;
    }
}

/// One round: stores the transactions committed since the last round as a segment,
/// then advances the slot past them.
pub async fn capture_once(
    repo: &mut Repository,
    opts: &CaptureOptions,
    progress: &dyn Progress,
) -> Result<Round> {
    let mut pos = Position::default();
    let result = until_drained(repo, opts, &mut pos, progress).await;
    pos.close().await;
    result
}

/// Rounds until one has stored everything committed when it began (a capture that
/// was down catches up), for at most ten minutes.
pub async fn until_drained(
    repo: &mut Repository,
    opts: &CaptureOptions,
    pos: &mut Position,
    progress: &dyn Progress,
) -> Result<Round> {
    let started = std::time::Instant::now();
    loop {
        let round = capture_round(repo, opts, pos, progress).await?;
        if round.drained || started.elapsed() > std::time::Duration::from_secs(600) {
            return Ok(round);
        }
    }
}

/// [`capture_once`] for a capture that runs round after round: `pos` carries the last
/// segment's end from one round to the next (empty: read from the repository).
pub async fn capture_round(
    repo: &mut Repository,
    opts: &CaptureOptions,
    pos: &mut Position,
    progress: &dyn Progress,
) -> Result<Round> {
    let _lock = repo.lock(LockKind::Shared, "capture").await?;
    check_name(&opts.name)?;
    let (url, display) = connect_url(&opts.source)?;
    // The SQL connection stays open between rounds too (a new backend each round cost
    // the source more CPU than decoding the changes); after an error it is reopened.
    let mut db = match pos.sql.take() {
        Some(db) => db,
        None => PgDb::connect(&url, display.clone()).await?,
    };
    let Some((slot, confirmed, lag)) = find_slot(&mut db, &opts.name).await? else {
        return Err(Error::invalid(format!(
            "no capture slot for {:?} on {display}: it was never set up or was dropped",
            opts.name
        )));
    };
    if lag > opts.max_lag_bytes {
        pos.close().await;
        free_slot(&mut db, &slot).await?;
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&slot)
            .execute(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: "dropping a capture slot that fell behind".into(),
                source: e,
            })?;
        return Err(Error::Other(format!(
            "capture {:?} fell behind: its slot held {} MB of WAL on the source (limit {} MB), so it was dropped before it could fill the source's disk. Point-in-time restore stays possible up to the last stored change; take a new backup and start the capture again.",
            opts.name,
            lag >> 20,
            opts.max_lag_bytes >> 20
        )));
    }
    let (prev_end, prev_covers) = match &pos.last {
        Some((s, end, covers)) if *s == slot => (Some(*end), Some(*covers)),
        _ => {
            let previous = segments(repo, &slot).await?;
            (
                previous.last().map(|(_, s)| s.end_lsn),
                previous.last().map(|(_, s)| s.covers_until_ms),
            )
        }
    };
    let publication = format!("tablesafe_{}", opts.name);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
    )
    .bind(&publication)
    .fetch_all(&mut db.conn)
    .await
    .map_err(|e| Error::Database {
        context: "reading the publication".into(),
        source: e,
    })?;
    let mut prev_end = prev_end;
    let mut prev_covers = prev_covers;
    let mut confirmed = confirmed;
    // A segment stored by a round that stopped before advancing the slot (tablesafe was
    // killed): the slot may forget what it holds now.
    if let Some(end) = prev_end
        && end > confirmed
    {
        match pos.stream.as_mut() {
            Some(stream) => stream.confirm(end),
            None => {
                free_slot(&mut db, &slot).await?;
                advance(&mut db, &slot, end).await?;
            }
        }
        confirmed = end;
    }
    if pos
        .stream
        .as_ref()
        .is_some_and(|_| pos.last.as_ref().is_none_or(|l| l.0 != slot))
    {
        pos.close().await; // a stream of another (dropped) slot
    }
    if pos.stream.is_none() {
        pos.stream = Some(
            stream::ChangeStream::start(
                &url,
                &slot,
                &format!("tablesafe_{}", opts.name),
                confirmed,
                std::time::Duration::from_secs(15),
            )
            .await?,
        );
    }
    let started = std::time::Instant::now();
    let mut round = Round {
        slot: slot.clone(),
        segment: None,
        transactions: 0,
        changes: 0,
        covers_until_ms: prev_covers,
        lag_bytes: lag,
        drained: false,
    };
    // Segments of at most `max_changes` each, until the slot is drained: a capture that
    // fell behind catches up in one call.
    loop {
        // Read before peeking: the peek decodes flushed WAL, so every transaction whose
        // commit is flushed before this position is in it (with synchronous_commit = off
        // a commit can be written but not yet flushed: the write position would skip
        // it). One source clock reading for the covered range.
        let (now_lsn, now_ms): (String, i64) = sqlx::query_as(
            "SELECT pg_current_wal_flush_lsn()::text, (extract(epoch from clock_timestamp()) * 1000)::bigint",
        )
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: "reading the WAL position".into(),
            source: e,
        })?;
        let now_lsn = parse_lsn(&now_lsn).unwrap_or(0);
        let stream = pos.stream.as_mut().expect("started above");
        let wait = MAX_ROUND
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_millis(500));
        let received = stream
            .receive_until(now_lsn, opts.max_changes as usize, wait)
            .await;
        let drained = match received {
            Ok(d) => d,
            Err(e) => {
                pos.close().await;
                return Err(e);
            }
        };
        progress.check_abort()?;
        // Transactions a stored segment already holds (stored, then the slot not advanced
        // because tablesafe stopped) are dropped: nothing is applied twice.
        let txns: Vec<Txn> = stream
            .take_done()
            .into_iter()
            .filter(|t| prev_end.is_none_or(|p| t.end_lsn > p))
            .collect();
        let start = prev_end.unwrap_or(confirmed);
        let last_end = txns.last().map(|t| t.end_lsn);
        let end = if drained {
            last_end.unwrap_or(0).max(now_lsn).max(start)
        } else {
            last_end.unwrap_or(start).max(start)
        };
        // Commits are stamped before their WAL is written, so one stamped earlier can
        // come later in the stream: a second's margin either way. Short of the flush
        // position, only what the received commits prove (never more than before).
        let covers = if drained {
            now_ms - 1000
        } else {
            txns.iter()
                .map(|t| t.commit_ms)
                .max()
                .map_or(i64::MIN, |c| c - 1000)
        }
        .max(prev_covers.unwrap_or(i64::MIN));
        let changes: u64 = txns.iter().map(|t| t.ops.len() as u64).sum();
        let idle_due = drained && prev_covers.is_none_or(|c| covers - c >= opts.idle_segment_ms);
        let mut written = None;
        if !txns.is_empty() || idle_due {
            let stream = encode(&txns);
            let bytes = stream.len() as u64;
            let checksum = Checksum::of(blake3::hash(&stream));
            let chunks = store_stream(repo, stream).await?;
            let segment = ChangeSegment {
                format: SEGMENT_FORMAT,
                source: SnapshotSource {
                    engine: Engine::Postgres,
                    url: SourceUrl::Postgres(url.clone()).display(),
                },
                slot: slot.clone(),
                start_lsn: start,
                end_lsn: end,
                covers_until_ms: covers,
                first_commit_ms: txns.iter().map(|t| t.commit_ms).min(),
                last_commit_ms: txns.iter().map(|t| t.commit_ms).max(),
                transactions: txns.len() as u64,
                changes,
                bytes,
                checksum,
                chunks,
                time_ms: crate::repo::now_ms(),
                tables: tables.clone(),
            };
            written = Some(repo.save_change_segment(&segment).await?);
        }
        // Only now, with the segment stored, may the source forget these changes.
        if written.is_some()
            && end > confirmed
            && let Some(stream) = pos.stream.as_mut()
        {
            stream.confirm(end);
        }
        let stored = written.is_some();
        if stored {
            prev_end = Some(end);
            prev_covers = Some(covers);
            pos.last = Some((slot.clone(), end, covers));
            round.covers_until_ms = Some(covers);
            round.segment = written;
            if end > confirmed {
                confirmed = end;
            }
        }
        round.transactions += txns.len() as u64;
        round.changes += changes;
        // A call that catches up returns now and then (the caller checks for a stop).
        round.drained = drained;
        if drained || !stored || started.elapsed() > MAX_ROUND {
            pos.sql = Some(db);
            return Ok(round);
        }
    }
}

/// Ends a walsender still holding the slot (a capture killed a moment ago, or one
/// running elsewhere that is being stopped), so the slot can be advanced or dropped.
async fn free_slot(db: &mut PgDb, slot: &str) -> Result<()> {
    for _ in 0..50 {
        let active: Option<Option<i32>> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(&mut db.conn)
                .await
                .map_err(|e| Error::Database {
                    context: "looking up the capture slot".into(),
                    source: e,
                })?;
        let Some(Some(pid)) = active else {
            return Ok(());
        };
        let _ = sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut db.conn)
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(Error::Other(format!(
        "the capture slot {slot} stays in use by another connection"
    )))
}

async fn advance(db: &mut PgDb, slot: &str, lsn: u64) -> Result<()> {
    sqlx::query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)")
        .bind(slot)
        .bind(format_lsn(lsn))
        .execute(&mut db.conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::Database {
            context: "advancing the capture slot".into(),
            source: e,
        })
}

/// Chunks, compresses, encrypts and stores a stream; returns its chunk ids. (The same
/// steps as a backup's worker, for one small stream at once.)
async fn store_stream(repo: &mut Repository, stream: Vec<u8>) -> Result<Vec<ChunkId>> {
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

/// Where a PostgreSQL source can be restored to: from its first snapshot that a
/// capture covers to the end of that capture's contiguous segments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub source: String,
    pub slot: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

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

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

// ---- replay ----

/// A table a replay writes to: where its rows went and which columns it has.
#[derive(Debug, Clone)]
pub struct ReplayTarget {
    /// The destination relation, quoted.
    pub rel: String,
    pub columns: Vec<String>,
}

/// What a replay applied.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Replayed {
    pub transactions: u64,
    pub changes: u64,
    /// The commit time of the last transaction applied.
    pub last_commit_ms: Option<i64>,
}

fn literal(cell: &Cell) -> Result<String> {
    Ok(match cell {
        Cell::Null => "NULL".into(),
        Cell::Text(b) => {
            let s = std::str::from_utf8(b)
                .map_err(|_| Error::Other("a captured value is not UTF-8".into()))?;
            format!("'{}'", s.replace('\'', "''"))
        }
        Cell::Unchanged => unreachable!("unchanged values are skipped"),
    })
}

fn where_key(rel: &Relation, key_cells: &[Cell], target: &ReplayTarget) -> Result<String> {
    let mut parts = Vec::new();
    for ((col, is_key), cell) in rel.columns.iter().zip(key_cells) {
        if !is_key {
            continue;
        }
        if !target.columns.contains(col) {
            return Err(Error::invalid(format!(
                "point-in-time restore of {} needs its key column {col}",
                rel.name
            )));
        }
        match cell {
            Cell::Null | Cell::Unchanged => {
                return Err(Error::Other(format!(
                    "a captured change of {} has no key value",
                    rel.name
                )));
            }
            c => parts.push(format!("{} = {}", quote(col), literal(c)?)),
        }
    }
    if parts.is_empty() {
        return Err(Error::invalid(format!(
            "{} has no key in the captured changes",
            rel.name
        )));
    }
    Ok(parts.join(" AND "))
}

/// The SQL for one change, or None when it touches no restored column.
fn statement(op: &Op, targets: &HashMap<String, ReplayTarget>) -> Result<Option<String>> {
    let rel = match op {
        Op::Insert { rel, .. }
        | Op::Update { rel, .. }
        | Op::Delete { rel, .. }
        | Op::Truncate { rel } => rel,
    };
    let Some(t) = targets.get(&rel.name) else {
        return Ok(None);
    };
    Ok(Some(match op {
        Op::Insert { new, .. } => {
            let mut cols = Vec::new();
            let mut vals = Vec::new();
            for ((col, _), cell) in rel.columns.iter().zip(new) {
                if t.columns.contains(col) && *cell != Cell::Unchanged {
                    cols.push(quote(col));
                    vals.push(literal(cell)?);
                }
            }
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                t.rel,
                cols.join(", "),
                vals.join(", ")
            )
        }
        Op::Update { old, new, .. } => {
            let mut sets = Vec::new();
            for ((col, _), cell) in rel.columns.iter().zip(new) {
                if t.columns.contains(col) && *cell != Cell::Unchanged {
                    sets.push(format!("{} = {}", quote(col), literal(cell)?));
                }
            }
            let key = where_key(rel, old.as_deref().unwrap_or(new), t)?;
            if sets.is_empty() {
                return Ok(None);
            }
            format!("UPDATE {} SET {} WHERE {key}", t.rel, sets.join(", "))
        }
        Op::Delete { old, .. } => {
            format!("DELETE FROM {} WHERE {}", t.rel, where_key(rel, old, t)?)
        }
        Op::Truncate { .. } => format!("DELETE FROM {}", t.rel),
    }))
}

async fn run_batch(conn: &mut sqlx::PgConnection, sql: String) -> Result<()> {
    if sql.is_empty() {
        return Ok(());
    }
    // A query without arguments goes as one simple-protocol message: many statements,
    // one round trip.
    sqlx::Executor::execute(&mut *conn, sql.as_str())
        .await
        .map(|_| ())
        .map_err(|e| Error::Database {
            context: "replaying captured changes".into(),
            source: e,
        })
}

/// Applies the captured transactions of `base` on the restored tables, on `conn`
/// (inside the restore's transaction): those the snapshot does not see, committed at or
/// before `base.at_ms`, in commit order, in batches of statements.
pub async fn replay(
    repo: &Repository,
    base: &PitrBase,
    targets: &HashMap<String, ReplayTarget>,
    conn: &mut sqlx::PgConnection,
    progress: &dyn Progress,
) -> Result<Replayed> {
    let point = base
        .snapshot
        .pg_point
        .as_ref()
        .ok_or_else(|| Error::Other("the snapshot has no change position".into()))?;
    let seen = &point.xid_snapshot;
    for name in targets.keys() {
        if !captured_throughout(&base.segments, name) {
            return Err(Error::invalid(format!(
                "{name} was not captured (tables without a primary key are not); restore it from a snapshot instead"
            )));
        }
    }
    // The net effect per row, applied set-wise (two COPYs per table) instead of one
    // statement per change: the state at T is the snapshot with every changed key's
    // final version in place. Statements remain the fallback when a table's columns
    // changed within the window.
    let mut done = Replayed::default();
    let mut net: HashMap<String, NetTable> = HashMap::new();
    let mut consistent = true;
    'segments: for seg in &base.segments {
        progress.check_abort()?;
        for txn in read_segment(repo, seg).await? {
            if txn.end_lsn <= point.wal_lsn || seen.sees(txn.xid) || txn.commit_ms > base.at_ms {
                continue;
            }
            let mut any = false;
            for op in &txn.ops {
                let rel = op.rel();
                if !targets.contains_key(&rel.name) {
                    continue;
                }
                let table = net.entry(rel.name.clone()).or_insert_with(|| NetTable {
                    columns: rel.columns.clone(),
                    ..Default::default()
                });
                if table.columns != rel.columns {
                    consistent = false;
                    break 'segments;
                }
                table.apply(op)?;
                done.changes += 1;
                any = true;
            }
            if any {
                done.transactions += 1;
                done.last_commit_ms = Some(txn.commit_ms);
            }
        }
    }
    if consistent {
        for (name, table) in &net {
            table.write(&targets[name], conn).await?;
        }
        return Ok(done);
    }
    replay_statements(repo, base, targets, conn, progress, seen, point.wal_lsn).await
}

/// The changes of one table folded into each row's final version.
#[derive(Default)]
struct NetTable {
    columns: Vec<(String, bool)>,
    /// Emptied at some point: the snapshot's rows are all gone.
    truncated: bool,
    /// Key cells → the row's last version (None: deleted). A version may hold
    /// `Unchanged` cells when the row's earlier version is the snapshot's.
    rows: HashMap<Vec<Cell>, Option<Vec<Cell>>>,
}

impl NetTable {
    fn key(&self, name: &str, cells: &[Cell]) -> Result<Vec<Cell>> {
        let key: Vec<Cell> = self
            .columns
            .iter()
            .zip(cells)
            .filter(|((_, is_key), _)| *is_key)
            .map(|(_, c)| c.clone())
            .collect();
        if key.is_empty() || key.iter().any(|c| !matches!(c, Cell::Text(_))) {
            return Err(Error::Other(format!(
                "a captured change of {name} has no key value"
            )));
        }
        Ok(key)
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        let name = &op.rel().name;
        match op {
            Op::Insert { new, .. } => {
                let k = self.key(name, new)?;
                self.rows.insert(k, Some(new.clone()));
            }
            Op::Update { old, new, .. } => {
                let k_new = self.key(name, new)?;
                let k_old = match old {
                    Some(o) => self.key(name, o)?,
                    None => k_new.clone(),
                };
                let merged = match self.rows.get(&k_old) {
                    Some(Some(prev)) => new
                        .iter()
                        .zip(prev)
                        .map(|(n, p)| {
                            if *n == Cell::Unchanged {
                                p.clone()
                            } else {
                                n.clone()
                            }
                        })
                        .collect(),
                    _ => new.clone(),
                };
                if k_old != k_new {
                    self.rows.insert(k_old, None);
                }
                self.rows.insert(k_new, Some(merged));
            }
            Op::Delete { old, .. } => {
                let k = self.key(name, old)?;
                self.rows.insert(k, None);
            }
            Op::Truncate { .. } => {
                self.truncated = true;
                self.rows.clear();
            }
        }
        Ok(())
    }

    /// Deletes every changed key, inserts the final versions (COPY into temporary
    /// tables, then one statement each), and updates in place the rows whose final
    /// version kept a value from the snapshot.
    async fn write(&self, t: &ReplayTarget, conn: &mut sqlx::PgConnection) -> Result<()> {
        let key_cols: Vec<&String> = self
            .columns
            .iter()
            .filter(|(_, k)| *k)
            .map(|(c, _)| c)
            .collect();
        for c in &key_cols {
            if !t.columns.contains(c) {
                return Err(Error::invalid(format!(
                    "point-in-time restore of {} needs its key column {c}",
                    t.rel
                )));
            }
        }
        // The restored columns the stream has, in the stream's order.
        let cols: Vec<(usize, &String)> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, (c, _))| t.columns.contains(c))
            .map(|(i, (c, _))| (i, c))
            .collect();
        let quoted = |cs: &[&String]| cs.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let all_cols: Vec<&String> = cols.iter().map(|(_, c)| *c).collect();
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        let mut partial = String::new();
        // For the rows updated in place: this table under its destination name.
        let in_place = HashMap::from([(t.rel.clone(), t.clone())]);
        let rel = Arc::new(Relation {
            oid: 0,
            name: t.rel.clone(),
            columns: self.columns.clone(),
        });
        for (k, row) in &self.rows {
            match row {
                Some(r) if r.contains(&Cell::Unchanged) => {
                    if let Some(sql) = statement(
                        &Op::Update {
                            rel: rel.clone(),
                            old: None,
                            new: r.clone(),
                        },
                        &in_place,
                    )? {
                        partial.push_str(&sql);
                        partial.push_str(";\n");
                    }
                }
                Some(r) => {
                    copy_line(&mut keys, k.iter());
                    copy_line(&mut rows, cols.iter().map(|(i, _)| &r[*i]));
                }
                None => copy_line(&mut keys, k.iter()),
            }
        }
        if self.truncated {
            run_batch(conn, format!("DELETE FROM {}", t.rel)).await?;
        }
        if !keys.is_empty() && !self.truncated {
            copy_into_temp(
                conn,
                "tablesafe_replay_keys",
                &quoted(&key_cols),
                &t.rel,
                &keys,
            )
            .await?;
            let on: Vec<String> = key_cols
                .iter()
                .map(|c| format!("t.{q} = k.{q}", q = quote(c)))
                .collect();
            run_batch(
                conn,
                format!(
                    "DELETE FROM {} t USING tablesafe_replay_keys k WHERE {}; DROP TABLE tablesafe_replay_keys",
                    t.rel,
                    on.join(" AND ")
                ),
            )
            .await?;
        }
        if !rows.is_empty() {
            copy_into_temp(
                conn,
                "tablesafe_replay_rows",
                &quoted(&all_cols),
                &t.rel,
                &rows,
            )
            .await?;
            run_batch(
                conn,
                format!(
                    "INSERT INTO {rel} ({c}) SELECT {c} FROM tablesafe_replay_rows; DROP TABLE tablesafe_replay_rows",
                    rel = t.rel,
                    c = quoted(&all_cols)
                ),
            )
            .await?;
        }
        run_batch(conn, partial).await
    }
}

/// One line of COPY's text format.
fn copy_line<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = &'a Cell>) {
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match c {
            Cell::Null | Cell::Unchanged => out.extend_from_slice(b"\\N"),
            Cell::Text(b) => {
                for &byte in b {
                    match byte {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        _ => out.push(byte),
                    }
                }
            }
        }
    }
    out.push(b'\n');
}

impl Op {
    fn rel(&self) -> &Arc<Relation> {
        match self {
            Op::Insert { rel, .. }
            | Op::Update { rel, .. }
            | Op::Delete { rel, .. }
            | Op::Truncate { rel } => rel,
        }
    }
}

/// The statement-per-change replay, for windows in which a table's columns changed.
async fn replay_statements(
    repo: &Repository,
    base: &PitrBase,
    targets: &HashMap<String, ReplayTarget>,
    conn: &mut sqlx::PgConnection,
    progress: &dyn Progress,
    seen: &XidSnapshot,
    wal_lsn: u64,
) -> Result<Replayed> {
    let mut done = Replayed::default();
    let mut batch = String::new();
    let mut in_batch = 0;
    for seg in &base.segments {
        progress.check_abort()?;
        for txn in read_segment(repo, seg).await? {
            if txn.end_lsn <= wal_lsn || seen.sees(txn.xid) || txn.commit_ms > base.at_ms {
                continue;
            }
            let mut any = false;
            for op in &txn.ops {
                if let Some(sql) = statement(op, targets)? {
                    batch.push_str(&sql);
                    batch.push_str(";\n");
                    in_batch += 1;
                    done.changes += 1;
                    any = true;
                }
            }
            if any {
                done.transactions += 1;
                done.last_commit_ms = Some(txn.commit_ms);
            }
            if in_batch >= 500 {
                run_batch(conn, std::mem::take(&mut batch)).await?;
                in_batch = 0;
            }
        }
    }
    run_batch(conn, std::mem::take(&mut batch)).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel() -> Arc<Relation> {
        Arc::new(Relation {
            oid: 7,
            name: "public.t".into(),
            columns: vec![("id".into(), true), ("v".into(), false)],
        })
    }

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

    #[test]
    fn lsns_parse_and_print() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
    }

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

    #[test]
    fn visibility_follows_the_snapshot() {
        let s = XidSnapshot::parse("100:105:101,103").unwrap();
        assert!(s.sees(99));
        assert!(s.sees(100));
        assert!(!s.sees(101));
        assert!(s.sees(102));
        assert!(!s.sees(103));
        assert!(!s.sees(105));
        assert!(!s.sees(200));
        // With an epoch: 32-bit ids are widened by the snapshot's.
        let e =
            XidSnapshot::parse(&format!("{}:{}:", (1u64 << 32) + 10, (1u64 << 32) + 20)).unwrap();
        assert!(e.sees(5));
        assert!(!e.sees(25));
    }

    #[test]
    fn statements_quote_values_and_keep_unchanged_columns() {
        let r = rel();
        let mut targets = HashMap::new();
        targets.insert(
            "public.t".to_string(),
            ReplayTarget {
                rel: "\"public\".\"t2\"".into(),
                columns: vec!["id".into(), "v".into()],
            },
        );
        let ins = Op::Insert {
            rel: r.clone(),
            new: vec![Cell::Text(b"1".to_vec()), Cell::Text(b"O'Brien".to_vec())],
        };
        assert_eq!(
            statement(&ins, &targets).unwrap().unwrap(),
            "INSERT INTO \"public\".\"t2\" (\"id\", \"v\") VALUES ('1', 'O''Brien')"
        );
        let upd = Op::Update {
            rel: r.clone(),
            old: None,
            new: vec![Cell::Text(b"1".to_vec()), Cell::Unchanged],
        };
        assert_eq!(
            statement(&upd, &targets).unwrap().unwrap(),
            "UPDATE \"public\".\"t2\" SET \"id\" = '1' WHERE \"id\" = '1'",
            "an unchanged TOASTed value is left alone"
        );
        let upd = Op::Update {
            rel: r.clone(),
            old: Some(vec![Cell::Text(b"1".to_vec()), Cell::Null]),
            new: vec![Cell::Text(b"9".to_vec()), Cell::Null],
        };
        assert_eq!(
            statement(&upd, &targets).unwrap().unwrap(),
            "UPDATE \"public\".\"t2\" SET \"id\" = '9', \"v\" = NULL WHERE \"id\" = '1'"
        );
        let other = Op::Truncate {
            rel: Arc::new(Relation {
                oid: 8,
                name: "public.x".into(),
                columns: vec![],
            }),
        };
        assert_eq!(statement(&other, &targets).unwrap(), None, "not restored");
    }
}
