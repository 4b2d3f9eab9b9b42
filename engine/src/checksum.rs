//! Per-table checksums over key-ordered blocks (repository format 2).
//!
//! A keyed table's canonical stream is cut into *blocks* of consecutive rows. A block
//! ends after a row whose *boundary bytes* (the row's key as canonical values,
//! [`key_bytes`]) hash, by a fixed 64-bit function, to a value whose low
//! [`BLOCK_BITS`] bits are zero ([`ends_block`]): a block holds 2^`BLOCK_BITS` rows on
//! average, and where blocks end depends on the keys alone. So an insert or delete
//! moves only the boundaries next to it; a backup that knows which rows changed knows
//! which blocks changed from the keys alone, and rehashes only those (a PostgreSQL
//! changes-only delta, [`crate::backup`]). Keys chosen to avoid boundaries only make
//! blocks long (the work per changed row grows), never a checksum wrong.
//!
//! Each block is summed as a [`BlockSum`]: its rows, its bytes, the BLAKE3 of its rows'
//! bytes, a fingerprint of its keys ([`key_fingerprint`]) and the boundary bytes of its
//! last row. The *block list* is those sums in key order, each encoded as `rows ‖ bytes
//! ‖ keys u64 LE ‖ hash[16] ‖ key length ‖ key` (numbers without a width are LEB128;
//! the hash is the first 16 bytes of BLAKE3); it is stored as chunks like a stream ([`crate::model::BlockList`]), and the
//! table's checksum (`TableEntry::checksum`) is its *root*: the BLAKE3 of the encoded
//! list, derived under [`ROOT_CONTEXT`]. Checking a table ([`StreamCheck`]) recomputes
//! the list from the rows and compares the root, the row count and the length; verify
//! also compares block by block against the stored list, naming the first block that
//! differs.
//!
//! **Parts.** A table read as several key ranges at once is hashed as one
//! [`TableHasher::part`] per range, each fed its rows in key order, then joined in key
//! order with [`TableHasher::join`]: the block that spans the seam (the rows after the
//! left part's last boundary and those before the right part's first one) is hashed
//! there, from the left part's open hasher and the right part's held rows. A part holds
//! only the rows before its first boundary (2^`BLOCK_BITS` on average) and its encoded
//! block list; the result is the same as one hasher fed every row.

use crate::model::{Checksum, Value, encode_value};
use crate::{Error, Result};

/// A block holds 2^BLOCK_BITS rows on average. With 1 % of rows changed at random, about
/// 1 - 0.99^16 = 15 % of blocks change.
pub const BLOCK_BITS: u32 = 4;

/// The key-derivation context of a table's root checksum over its block list.
pub const ROOT_CONTEXT: &str = "tablesafe 2026-12 table block list root v1";

/// The boundary bytes of a keyed row: its key values in canonical encoding.
pub fn key_bytes(key: &[Value], out: &mut Vec<u8>) {
    out.clear();
    for v in key {
        encode_value(out, v);
    }
}

/// A fixed 64-bit hash (FNV-1a, then MurmurHash3's finalizer so low bits mix). Part of
/// the repository format: it must never change.
fn boundary_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether a block ends after a row with these boundary bytes.
pub fn ends_block(boundary: &[u8]) -> bool {
    ends(boundary_hash(boundary))
}

fn ends(hash: u64) -> bool {
    hash & ((1u64 << BLOCK_BITS) - 1) == 0
}

/// A block's keys fingerprint: the wrapping sum of its rows' boundary hashes, which a
/// changes-only delta compares to learn whether a block lost or gained keys without
/// reading the parent's rows (a collision would leave a deleted key in the delta's
/// merge, which the block's hash, computed from the rows read, then refuses).
pub fn key_fingerprint<'a>(boundaries: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    boundaries
        .into_iter()
        .fold(0u64, |acc, b| acc.wrapping_add(boundary_hash(b)))
}

/// [`ends_block`] and the row's share of [`key_fingerprint`] at once.
pub fn boundary_of(boundary: &[u8]) -> (bool, u64) {
    let h = boundary_hash(boundary);
    (ends(h), h)
}

/// One block's sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSum {
    pub rows: u64,
    pub bytes: u64,
    /// [`key_fingerprint`] of its rows.
    pub keys: u64,
    /// The first 16 bytes of the BLAKE3 of its rows' bytes.
    pub hash: [u8; 16],
    /// The boundary bytes of its last row.
    pub last: Vec<u8>,
}

impl BlockSum {
    /// Appends this block's record to an encoded block list.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.rows);
        put_varint(out, self.bytes);
        out.extend_from_slice(&self.keys.to_le_bytes());
        out.extend_from_slice(&self.hash);
        put_varint(out, self.last.len() as u64);
        out.extend_from_slice(&self.last);
    }

    /// The record at the front of `buf` and its length; `None` if incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<(BlockSum, usize)>> {
        let mut at = 0;
        let Some(rows) = get_varint(buf, &mut at)? else {
            return Ok(None);
        };
        let Some(bytes) = get_varint(buf, &mut at)? else {
            return Ok(None);
        };
        if buf.len() < at + 24 {
            return Ok(None);
        }
        let keys = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8"));
        let hash: [u8; 16] = buf[at + 8..at + 24].try_into().expect("16");
        at += 24;
        let Some(key_len) = get_varint(buf, &mut at)? else {
            return Ok(None);
        };
        if key_len > 1 << 24 {
            return Err(Error::damaged(
                "a block list record has an impossible key length",
            ));
        }
        let key_len = key_len as usize;
        if buf.len() < at + key_len {
            return Ok(None);
        }
        Ok(Some((
            BlockSum {
                rows,
                bytes,
                keys,
                hash,
                last: buf[at..at + key_len].to_vec(),
            },
            at + key_len,
        )))
    }
}

/// LEB128.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<Option<u64>> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(*at + i) else {
            return Ok(None);
        };
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *at += i + 1;
            return Ok(Some(v));
        }
    }
    Err(Error::damaged("a block list record has a malformed number"))
}

/// A table's (or a part's) checksum as computed.
#[derive(Debug, Clone)]
pub struct TableSum {
    pub rows: u64,
    pub bytes: u64,
    /// The root: what `TableEntry::checksum` records.
    pub root: Checksum,
    pub blocks: u64,
    /// The encoded block list (stored as chunks).
    pub list: Vec<u8>,
}

/// The rows of a part before its first boundary, held for the seam.
#[derive(Clone)]
struct Head {
    bytes: Vec<u8>,
    rows: u64,
    keys: u64,
    /// The boundary bytes of the row that ended the head, once one did.
    closed: Option<Vec<u8>>,
}

/// Hashes a keyed table's rows, in key order, into blocks (module docs).
#[derive(Clone)]
pub struct TableHasher {
    /// `Some` for a part: the rows before its first boundary.
    head: Option<Head>,
    open: blake3::Hasher,
    open_rows: u64,
    open_bytes: u64,
    open_keys: u64,
    /// The boundary bytes of the last row fed.
    last: Vec<u8>,
    /// Encoded block records not yet taken ([`TableHasher::take_list`]).
    list: Vec<u8>,
    /// The root over every record so far; `None` for a part (its records are fed to it
    /// when it is joined onto the table's start).
    root: Option<blake3::Hasher>,
    blocks: u64,
    rows: u64,
    bytes: u64,
}

impl Default for TableHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TableHasher {
    /// A hasher for a whole table, fed from its first row.
    pub fn new() -> Self {
        TableHasher {
            head: None,
            open: blake3::Hasher::new(),
            open_rows: 0,
            open_bytes: 0,
            open_keys: 0,
            last: Vec::new(),
            list: Vec::new(),
            root: Some(blake3::Hasher::new_derive_key(ROOT_CONTEXT)),
            blocks: 0,
            rows: 0,
            bytes: 0,
        }
    }

    /// A hasher for one key range of a table, fed that range's rows in key order and
    /// joined after the range before it with [`TableHasher::join`] (the first range may
    /// be a part too: finishing a part treats it as the table's start).
    pub fn part() -> Self {
        TableHasher {
            head: Some(Head {
                bytes: Vec::new(),
                rows: 0,
                keys: 0,
                closed: None,
            }),
            root: None,
            ..Self::new()
        }
    }

    /// Rows and bytes hashed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Blocks closed so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Whether the next row starts a block (no row is waiting in an open block).
    pub fn at_boundary(&self) -> bool {
        self.open_rows == 0 && self.head.as_ref().is_none_or(|h| h.closed.is_some())
    }

    /// The next row in key order, with its boundary bytes ([`key_bytes`]).
    pub fn row(&mut self, boundary: &[u8], row: &[u8]) {
        self.row_bytes(row);
        self.row_end(boundary);
    }

    /// The next bytes of the row being fed ([`TableHasher::row`] in pieces: its bytes,
    /// then [`TableHasher::row_end`]), so a long row is never held whole.
    pub fn row_bytes(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        if let Some(head) = &mut self.head
            && head.closed.is_none()
        {
            head.bytes.extend_from_slice(bytes);
            return;
        }
        self.open.update(bytes);
        self.open_bytes += bytes.len() as u64;
    }

    /// The row whose bytes were fed ended, with these boundary bytes.
    pub fn row_end(&mut self, boundary: &[u8]) {
        let (ends, hash) = boundary_of(boundary);
        self.rows += 1;
        self.last.clear();
        self.last.extend_from_slice(boundary);
        if let Some(head) = &mut self.head
            && head.closed.is_none()
        {
            head.rows += 1;
            head.keys = head.keys.wrapping_add(hash);
            if ends {
                head.closed = Some(boundary.to_vec());
            }
            return;
        }
        self.open_rows += 1;
        self.open_keys = self.open_keys.wrapping_add(hash);
        if ends {
            self.close();
        }
    }

    /// A whole block whose sum is known (unchanged since a parent), at a boundary:
    /// [`TableHasher::at_boundary`] must hold.
    pub fn block(&mut self, sum: &BlockSum) -> Result<()> {
        if !self.at_boundary() {
            return Err(Error::Other(
                "a known block was added in the middle of a block".into(),
            ));
        }
        self.rows += sum.rows;
        self.bytes += sum.bytes;
        self.last.clear();
        self.last.extend_from_slice(&sum.last);
        self.push(sum);
        Ok(())
    }

    fn push(&mut self, sum: &BlockSum) {
        let at = self.list.len();
        sum.encode(&mut self.list);
        if let Some(root) = &mut self.root {
            root.update(&self.list[at..]);
        }
        self.blocks += 1;
    }

    fn close(&mut self) {
        let hash = std::mem::replace(&mut self.open, blake3::Hasher::new()).finalize();
        let sum = BlockSum {
            rows: self.open_rows,
            bytes: self.open_bytes,
            keys: self.open_keys,
            hash: hash.as_bytes()[..16].try_into().expect("16"),
            last: self.last.clone(),
        };
        self.push(&sum);
        self.open_rows = 0;
        self.open_bytes = 0;
        self.open_keys = 0;
    }

    /// The encoded block records closed so far, taken out (to be stored as they come, so
    /// memory stays flat): the concatenation of every piece taken and the final
    /// [`TableSum::list`] is the table's block list. Only for a whole-table hasher; a
    /// part keeps its records until joined.
    pub fn take_list(&mut self) -> Vec<u8> {
        if self.root.is_none() {
            return Vec::new();
        }
        std::mem::take(&mut self.list)
    }

    /// `self` followed by `next`, the part for the key range right after it.
    pub fn join(mut self, next: TableHasher) -> TableHasher {
        let Some(head) = next.head else {
            // Not a part: only a fresh hasher could follow (nothing to join).
            debug_assert!(next.rows == 0);
            return self;
        };
        let had_boundary = head.closed.is_some();
        self.rows += next.rows;
        self.bytes += next.bytes;
        if next.rows > 0 {
            self.last = next.last.clone();
        }
        // The seam: `next`'s head continues `self`'s open block (or `self`'s own head).
        match &mut self.head {
            Some(mine) if mine.closed.is_none() => {
                mine.bytes.extend_from_slice(&head.bytes);
                mine.rows += head.rows;
                mine.keys = mine.keys.wrapping_add(head.keys);
                mine.closed = head.closed;
            }
            _ => {
                self.open.update(&head.bytes);
                self.open_rows += head.rows;
                self.open_bytes += head.bytes.len() as u64;
                self.open_keys = self.open_keys.wrapping_add(head.keys);
                if let Some(last) = head.closed {
                    let saved = std::mem::replace(&mut self.last, last);
                    self.close();
                    self.last = saved;
                }
            }
        }
        if had_boundary {
            // `next`'s own blocks and open block follow the seam.
            let at = self.list.len();
            self.list.extend_from_slice(&next.list);
            if let Some(root) = &mut self.root {
                root.update(&self.list[at..]);
            }
            self.blocks += next.blocks;
            self.open = next.open;
            self.open_rows = next.open_rows;
            self.open_bytes = next.open_bytes;
            self.open_keys = next.open_keys;
        }
        self
    }

    /// The table's sum: the last block closed, the root over the whole list.
    pub fn finish(self) -> TableSum {
        let mut t = if self.head.is_some() {
            TableHasher::new().join(self)
        } else {
            self
        };
        if t.open_rows > 0 {
            t.close();
        }
        let root = t.root.take().expect("a whole-table hasher").finalize();
        TableSum {
            rows: t.rows,
            bytes: t.bytes,
            root: Checksum::of(root),
            blocks: t.blocks,
            list: t.list,
        }
    }
}

/// The boundary bytes of a row read with `spec`: its key ([`key_bytes`]), or, for a row
/// whose key cannot be read, `0xff` and the row itself.
pub fn row_boundary(
    spec: &crate::segment::KeySpec,
    row: &[u8],
    key: &mut crate::segment::Key,
    out: &mut Vec<u8>,
) {
    if spec.key_into(row, key).is_ok() {
        key_bytes(key, out);
    } else {
        out.clear();
        out.push(0xff);
        out.extend_from_slice(row);
    }
}

/// The boundary bytes of a long row ([`crate::rowcut::Cut::LongRow`]): its key, or,
/// when its key cannot be read, `0xff` and the row's first [`crate::rowcut::LONG_ROW`]
/// bytes (a row held whole uses the whole row, [`row_boundary`]; keys of real rows are
/// always readable).
pub fn long_row_boundary(
    spec: &crate::segment::KeySpec,
    keys: Option<&[u8]>,
    head: &[u8],
    key: &mut crate::segment::Key,
    out: &mut Vec<u8>,
) {
    if let Some(keys) = keys
        && spec.key_into(keys, key).is_ok()
    {
        key_bytes(key, out);
    } else {
        out.clear();
        out.push(0xff);
        out.extend_from_slice(head);
    }
}

/// Checks a table's canonical stream, fed in pieces of any size, against its entry's
/// checksum: the BLAKE3 of the whole stream for an entry without a block list (format
/// 1, and unkeyed tables), the root over its blocks otherwise.
pub struct StreamCheck {
    how: How,
}

enum How {
    Stream(Box<blake3::Hasher>),
    Blocks {
        spec: crate::segment::KeySpec,
        hasher: Box<TableHasher>,
        rows: Box<crate::rowcut::RowCutter>,
        key: crate::segment::Key,
        boundary: Vec<u8>,
    },
}

impl StreamCheck {
    pub fn new(e: &crate::model::TableEntry) -> Result<Self> {
        let Some(list) = &e.blocks else {
            return Ok(StreamCheck {
                how: How::Stream(Box::new(blake3::Hasher::new())),
            });
        };
        if list.bits != BLOCK_BITS {
            return Err(Error::damaged(format!(
                "table {} has blocks of {} bits; this build knows {BLOCK_BITS}",
                e.name, list.bits
            )));
        }
        let spec = crate::segment::KeySpec::new(&e.format, &e.stream_columns, &e.schema)
            .ok_or_else(|| {
                Error::damaged(format!("table {} has a block list but no key", e.name))
            })?;
        Ok(Self::blocks(spec))
    }

    /// The check of a stream read with `spec` (the table's key, from
    /// [`crate::segment::KeySpec::new`]): blocks; without one, the whole stream's BLAKE3.
    pub fn for_key(spec: Option<crate::segment::KeySpec>) -> Self {
        match spec {
            Some(spec) => Self::blocks(spec),
            None => StreamCheck {
                how: How::Stream(Box::new(blake3::Hasher::new())),
            },
        }
    }

    /// The check of one key range of a table read in parts (`backup --jobs`): its rows
    /// go to a [`TableHasher::part`], taken out by [`StreamCheck::into_part`] and
    /// joined to the other parts in key order.
    pub fn for_part(spec: crate::segment::KeySpec) -> Self {
        let mut check = Self::blocks(spec);
        if let How::Blocks { hasher, .. } = &mut check.how {
            **hasher = TableHasher::part();
        }
        check
    }

    /// Whether this is the check of a part ([`StreamCheck::for_part`]).
    pub fn is_part(&self) -> bool {
        matches!(&self.how, How::Blocks { hasher, .. } if hasher.root.is_none())
    }

    /// The part's hasher: `Err` when its stream ends inside a row.
    pub fn into_part(self) -> Result<TableHasher> {
        match self.how {
            How::Blocks { hasher, rows, .. } if !rows.in_row() => Ok(*hasher),
            How::Blocks { .. } => Err(Error::damaged("a part's stream ends inside a row")),
            How::Stream(_) => Err(Error::Other("a whole-stream checksum has no parts".into())),
        }
    }

    fn blocks(spec: crate::segment::KeySpec) -> Self {
        StreamCheck {
            how: How::Blocks {
                rows: Box::new(crate::rowcut::RowCutter::new(spec.clone())),
                spec,
                hasher: Box::new(TableHasher::new()),
                key: Vec::new(),
                boundary: Vec::new(),
            },
        }
    }

    /// Whether this check computes blocks.
    pub fn is_blocks(&self) -> bool {
        matches!(self.how, How::Blocks { .. })
    }

    pub fn update(&mut self, piece: &[u8]) -> Result<()> {
        match &mut self.how {
            How::Stream(h) => {
                h.update(piece);
            }
            How::Blocks {
                spec,
                hasher,
                rows,
                key,
                boundary,
            } => {
                use crate::rowcut::Cut;
                let mut data = piece;
                while let Some(cut) = rows.next(&mut data)? {
                    match cut {
                        Cut::Row(row) => {
                            row_boundary(spec, row, key, boundary);
                            hasher.row(boundary, row);
                        }
                        Cut::Bytes(bytes) => hasher.row_bytes(bytes),
                        Cut::LongRow { keys, head } => {
                            long_row_boundary(spec, keys, head, key, boundary);
                            hasher.row_end(boundary);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream's sum: `Err` when the stream ends inside a row.
    pub fn finish(self) -> Result<Finished> {
        match self.how {
            How::Stream(h) => Ok(Finished {
                root: Checksum::of(h.finalize()),
                sum: None,
            }),
            How::Blocks { hasher, rows, .. } => {
                if rows.in_row() {
                    return Err(Error::damaged("the table's stream ends inside a row"));
                }
                let sum = hasher.finish();
                Ok(Finished {
                    root: sum.root,
                    sum: Some(sum),
                })
            }
        }
    }

    /// Whether the stream is the entry's (its checksum; with blocks, also its row count
    /// and length).
    pub fn matches(self, e: &crate::model::TableEntry) -> bool {
        match self.finish() {
            Ok(f) => f.matches(e),
            Err(_) => false,
        }
    }
}

/// What [`StreamCheck::finish`] computed.
pub struct Finished {
    pub root: Checksum,
    /// The blocks, for an entry with a block list.
    pub sum: Option<TableSum>,
}

impl Finished {
    pub fn matches(&self, e: &crate::model::TableEntry) -> bool {
        self.root == e.checksum
            && self
                .sum
                .as_ref()
                .is_none_or(|s| s.rows == e.rows && s.bytes == e.bytes)
    }
}

/// A stored block list read back record by record, its root checked at the end.
pub struct ListReader<'a> {
    chunks: futures::stream::BoxStream<'a, Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    root: blake3::Hasher,
    expected: Checksum,
    eof: bool,
}

impl<'a> ListReader<'a> {
    pub fn new(repo: &'a crate::repo::Repository, e: &crate::model::TableEntry) -> Option<Self> {
        use futures::StreamExt;
        let list = e.blocks.as_ref().filter(|l| l.bits == BLOCK_BITS)?;
        Some(ListReader {
            chunks: crate::segment::layer_chunks(repo, list.chunks.clone(), e.name.clone()).boxed(),
            buf: Vec::new(),
            pos: 0,
            root: blake3::Hasher::new_derive_key(ROOT_CONTEXT),
            expected: e.checksum,
            eof: false,
        })
    }

    /// The next block; after the last, `None` once the list matched the root.
    pub async fn next(&mut self) -> Result<Option<BlockSum>> {
        use futures::StreamExt;
        loop {
            if let Some((b, n)) = BlockSum::decode(&self.buf[self.pos..])? {
                self.root.update(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(Some(b));
            }
            if self.eof {
                if self.pos != self.buf.len() || !self.expected.matches(&self.root.finalize()) {
                    return Err(Error::damaged(
                        "a block list does not match its table's checksum",
                    ));
                }
                return Ok(None);
            }
            match self.chunks.next().await {
                Some(c) => {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    self.buf.extend_from_slice(&c?);
                }
                None => self.eof = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(keys: &[i64]) -> Vec<(Vec<u8>, Vec<u8>)> {
        keys.iter()
            .map(|&k| {
                let mut b = Vec::new();
                key_bytes(&[Value::Integer(k)], &mut b);
                (b, format!("{k}\trow {k}\n").into_bytes())
            })
            .collect()
    }

    fn whole(rows: &[(Vec<u8>, Vec<u8>)]) -> TableSum {
        let mut h = TableHasher::new();
        for (b, r) in rows {
            h.row(b, r);
        }
        h.finish()
    }

    proptest! {
        /// Any split into key-range parts, joined in order, gives the one-hasher result.
        #[test]
        fn parts_joined_equal_one_hasher(n in 0usize..400, cuts in proptest::collection::vec(0usize..400, 0..6)) {
            let keys: Vec<i64> = (0..n as i64).map(|k| k * 3).collect();
            let rows = rows(&keys);
            let expected = whole(&rows);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
            cuts.sort();
            let mut bounds = vec![0];
            bounds.extend(cuts);
            bounds.push(n);
            let mut joined: Option<TableHasher> = None;
            for w in bounds.windows(2) {
                let mut p = TableHasher::part();
                for (b, r) in &rows[w[0]..w[1]] {
                    p.row(b, r);
                }
                joined = Some(match joined {
                    None => p,
                    Some(j) => j.join(p),
                });
            }
            let got = joined.unwrap().finish();
            prop_assert_eq!(got.root, expected.root);
            prop_assert_eq!(got.list, expected.list);
            prop_assert_eq!((got.rows, got.bytes, got.blocks), (expected.rows, expected.bytes, expected.blocks));
        }

        /// An insert changes the blocks next to it only.
        #[test]
        fn an_insert_changes_one_block(n in 50usize..400, at in 0usize..400) {
            let keys: Vec<i64> = (0..n as i64).map(|k| k * 3).collect();
            let before = whole(&rows(&keys));
            let mut more = keys.clone();
            more.insert(at.min(n), (at.min(n) as i64) * 3 - 1);
            let after = whole(&rows(&more));
            let decode = |l: &[u8]| {
                let mut v = Vec::new();
                let mut at = 0;
                while let Some((b, n)) = BlockSum::decode(&l[at..]).unwrap() {
                    v.push(b);
                    at += n;
                }
                v
            };
            let (b, a) = (decode(&before.list), decode(&after.list));
            let differ = b.iter().filter(|x| !a.contains(x)).count();
            prop_assert!(differ <= 1, "{differ} blocks changed");
            prop_assert_eq!(a.iter().map(|x| x.rows).sum::<u64>(), n as u64 + 1);
        }
    }

    #[test]
    fn blocks_average_about_two_to_the_bits_rows() {
        let s = whole(&rows(&(0..100_000).collect::<Vec<_>>()));
        let avg = s.rows as f64 / s.blocks as f64;
        assert!((12.0..20.0).contains(&avg), "{avg}");
    }

    /// A table with rows of several megabytes checks the same whatever pieces its
    /// stream comes in, and the same as every row hashed whole: old repositories, whose
    /// checks held each row whole, still verify.
    #[test]
    fn long_rows_sum_the_same_in_any_pieces() {
        let spec = crate::rowcut::tests::copy_spec(&["id", "v"], "id");
        let mut stream = Vec::new();
        let mut whole_rows = Vec::new();
        for k in 0..40i64 {
            let len = if k % 7 == 3 {
                3 << 20
            } else {
                100 + k as usize
            };
            let mut row = format!("{k}\t").into_bytes();
            row.extend(std::iter::repeat_n(b'a' + (k % 26) as u8, len));
            row.push(b'\n');
            let mut b = Vec::new();
            key_bytes(&[Value::Integer(k)], &mut b);
            stream.extend_from_slice(&row);
            whole_rows.push((b, row));
        }
        let expected = whole(&whole_rows);
        for piece in [1000, 1 << 16, (1 << 20) + 1, stream.len()] {
            let mut check = StreamCheck::for_key(Some(spec.clone()));
            for p in stream.chunks(piece) {
                check.update(p).unwrap();
            }
            let f = check.finish().unwrap();
            assert_eq!(f.root, expected.root, "pieces of {piece}");
            let sum = f.sum.unwrap();
            assert_eq!((sum.rows, sum.bytes), (40, stream.len() as u64));
        }
        let mut cut_short = StreamCheck::for_key(Some(spec));
        cut_short.update(&stream[..stream.len() - 1]).unwrap();
        assert!(
            cut_short.finish().is_err(),
            "a stream ending inside a row is refused"
        );
    }
}
