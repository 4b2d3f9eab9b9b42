//! Row-level incremental segments.
//!
//! A table's stream is in primary-key order. When that order is a *key order* this module
//! can reproduce (checked row by row, never assumed), a later backup stores only a
//! `delta`: the rows that are new or changed (`upsert`) and the keys that are gone
//! (`delete`), in key order, against the layers of the previous snapshot. Reading a table
//! merges its layers: for each key the newest layer wins, and a delete hides the key.
//!
//! Key order, per stream format:
//! - `values` (SQLite): the primary-key values compared as SQLite's BINARY collation
//!   does (NULL < numbers < TEXT < BLOB, numbers by value, TEXT and BLOB by bytes).
//! - `pg-copy-text` (PostgreSQL): integer key columns (`smallint`, `integer`, `bigint`)
//!   by value and `uuid` by its text; tables keyed by other types are always stored
//!   `full` (their order is a collation's, which this crate does not reproduce).
//!
//! A stream that turns out not to be strictly increasing under this order (a NOCASE
//! key, a legacy SQLite key with NULLs) is stored `full` and not marked keyed.
//!
//! Delta record: `1` + a row in the table's format (upsert), `2` + the key as
//! canonical values (delete), or `3` + a flags byte + up to two keys as canonical
//! values (range delete, format 2): every key `k` with `lo < k <= hi` of the layers
//! below is gone (flag bit 0: `lo` present, else unbounded; bit 1: `hi` present). A
//! range delete comes before the records of keys in its range (a changes-only delta
//! replaces a block whose keys changed this way, [`crate::checksum`]).

use crate::model::ChunkId;
use crate::model::{
    Layer, SegmentKind, StreamFormat, TableEntry, TableSchema, Value, decode_value, encode_value,
    value_len,
};
use crate::repo::Repository;
use crate::{Error, Result};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::cmp::Ordering;

const UPSERT: u8 = 1;
const DELETE: u8 = 2;
const RANGE: u8 = 3;

/// At most this many layers (one full and the deltas on it) before a backup writes a
/// new full segment, so restore reads a bounded chain.
pub const MAX_LAYERS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A canonical value (the `values` format).
    Value,
    /// A COPY text field holding an integer.
    Int,
    /// A COPY text field compared by its bytes.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Values { columns: usize },
    CopyText,
}

/// How to find rows and their keys in one table's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    format: Format,
    /// Key columns' names, and their positions in the stream with how to compare them.
    pub names: Vec<String>,
    positions: Vec<usize>,
    kinds: Vec<Kind>,
}

/// One row's key.
pub type Key = Vec<Value>;

impl KeySpec {
    /// The key of a table's stream, or `None` when this crate cannot order it.
    pub fn new(
        format: &StreamFormat,
        stream_columns: &[String],
        schema: &TableSchema,
    ) -> Option<Self> {
        let (format, key): (Format, Vec<(String, Kind)>) = match format {
            StreamFormat::Values => {
                let key = crate::model::key_columns(&schema.columns)
                    .into_iter()
                    .map(|c| (c, Kind::Value))
                    .collect();
                (
                    Format::Values {
                        columns: stream_columns.len(),
                    },
                    key,
                )
            }
            StreamFormat::PgCopyText => {
                let def = schema.postgres.as_ref()?;
                let mut key = Vec::new();
                for name in &def.pk {
                    let col = def.columns.iter().find(|c| &c.name == name)?;
                    let kind = match col.type_sql.as_str() {
                        "smallint" | "integer" | "bigint" => Kind::Int,
                        "uuid" => Kind::Text,
                        _ => return None,
                    };
                    key.push((name.clone(), kind));
                }
                (Format::CopyText, key)
            }
            StreamFormat::Unknown(_) => return None,
        };
        if key.is_empty() {
            return None;
        }
        let positions = key
            .iter()
            .map(|(n, _)| stream_columns.iter().position(|c| c == n))
            .collect::<Option<Vec<_>>>()?;
        Some(KeySpec {
            format,
            names: key.iter().map(|(n, _)| n.clone()).collect(),
            positions,
            kinds: key.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// The key spec recorded for a snapshot's table, if it was keyed.
    pub fn of_entry(e: &TableEntry) -> Option<Self> {
        let spec = Self::new(&e.format, &e.stream_columns, &e.schema)?;
        (spec.names == e.key).then_some(spec)
    }

    /// Whether rows are COPY text lines.
    pub fn is_copy_text(&self) -> bool {
        matches!(self.format, Format::CopyText)
    }

    /// Whether the stream's field at `index` is a key column.
    pub fn is_key_field(&self, index: usize) -> bool {
        self.positions.contains(&index)
    }

    /// The index of the last key field in a row.
    pub fn last_key_field(&self) -> usize {
        self.positions.iter().copied().max().unwrap_or(0)
    }

    /// The length of the row at the front of `buf`, or `None` if it is incomplete.
    pub fn row_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        match self.format {
            Format::CopyText => Ok(memchr::memchr(b'\n', buf).map(|i| i + 1)),
            Format::Values { columns } => {
                let mut at = 0;
                for _ in 0..columns {
                    match value_len(&buf[at..])? {
                        Some(n) => at += n,
                        None => return Ok(None),
                    }
                }
                Ok(Some(at))
            }
        }
    }

    /// The key of one complete row.
    pub fn key(&self, row: &[u8]) -> Result<Key> {
        let mut key = Vec::with_capacity(self.positions.len());
        self.key_into(row, &mut key)?;
        Ok(key)
    }

    /// The key of one complete row, into `key` (reused: no allocation for integer keys).
    pub fn key_into(&self, row: &[u8], key: &mut Key) -> Result<()> {
        key.clear();
        key.resize(self.positions.len(), Value::Null);
        let mut found = 0;
        let last = self.positions.iter().copied().max().unwrap_or(0);
        match self.format {
            Format::CopyText => {
                let line = row.strip_suffix(b"\n").unwrap_or(row);
                for (i, field) in line.split(|&b| b == b'\t').enumerate().take(last + 1) {
                    if let Some(k) = self.positions.iter().position(|&p| p == i) {
                        key[k] =
                            match self.kinds[k] {
                                Kind::Int => Value::Integer(parse_int(field).ok_or_else(|| {
                                    Error::damaged("a key field is not an integer")
                                })?),
                                _ => Value::Text(field.to_vec()),
                            };
                        found += 1;
                    }
                }
            }
            Format::Values { .. } => {
                let mut at = 0;
                for i in 0..=last {
                    let rest = &row[at..];
                    let n = if let Some(k) = self.positions.iter().position(|&p| p == i) {
                        let (v, n) = decode_value(rest)?
                            .ok_or_else(|| Error::damaged("row ends inside a value"))?;
                        key[k] = v;
                        found += 1;
                        n
                    } else {
                        value_len(rest)?.ok_or_else(|| Error::damaged("row ends inside a value"))?
                    };
                    at += n;
                }
            }
        }
        if found != self.positions.len() {
            return Err(Error::damaged("a row lacks a key column"));
        }
        Ok(())
    }

    /// Parses the record at the front of `buf`: a row of a full segment, or an upsert or
    /// delete of a delta. `None` if incomplete.
    fn record(&self, buf: &[u8], delta: bool) -> Result<Option<(Record, usize)>> {
        if !delta {
            return Ok(match self.row_len(buf)? {
                None => None,
                Some(n) => Some((
                    Record::row(self.key(&buf[..n])?, Some(buf[..n].to_vec())),
                    n,
                )),
            });
        }
        let Some(&op) = buf.first() else {
            return Ok(None);
        };
        let body = &buf[1..];
        match op {
            RANGE => {
                let Some(&flags) = body.first() else {
                    return Ok(None);
                };
                let mut at = 2;
                let mut bound = |present: bool| -> Result<Option<Option<Key>>> {
                    if !present {
                        return Ok(Some(None));
                    }
                    let mut key = Vec::with_capacity(self.positions.len());
                    for _ in 0..self.positions.len() {
                        match decode_value(&buf[at..])? {
                            None => return Ok(None),
                            Some((v, n)) => {
                                key.push(v);
                                at += n;
                            }
                        }
                    }
                    Ok(Some(Some(key)))
                };
                let Some(lo) = bound(flags & 1 != 0)? else {
                    return Ok(None);
                };
                let Some(hi) = bound(flags & 2 != 0)? else {
                    return Ok(None);
                };
                Ok(Some((Record::Range(lo, hi), at)))
            }
            UPSERT => Ok(match self.row_len(body)? {
                None => None,
                Some(n) => Some((
                    Record::row(self.key(&body[..n])?, Some(body[..n].to_vec())),
                    n + 1,
                )),
            }),
            DELETE => {
                let mut key = Vec::with_capacity(self.positions.len());
                let mut at = 1;
                for _ in 0..self.positions.len() {
                    match decode_value(&buf[at..])? {
                        None => return Ok(None),
                        Some((v, n)) => {
                            key.push(v);
                            at += n;
                        }
                    }
                }
                Ok(Some((Record::row(key, None), at)))
            }
            other => Err(Error::damaged(format!("unknown delta record {other}"))),
        }
    }
}

/// An integer as COPY text prints it (optional minus, ASCII digits).
fn parse_int(field: &[u8]) -> Option<i64> {
    let (neg, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // Accumulate negatively so that i64::MIN parses.
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg { Some(v) } else { v.checked_neg() }
}

/// SQLite's BINARY order of values, which is also the order of PostgreSQL integer keys
/// (as `Integer`) and uuid keys (as `Text`).
pub fn cmp_value(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 1,
            Value::Text(_) => 2,
            Value::Blob(_) => 3,
        }
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Integer(i), Value::Real(f)) => cmp_int_real(*i, *f),
        (Value::Real(f), Value::Integer(i)) => cmp_int_real(*i, *f).reverse(),
        (Value::Text(x), Value::Text(y)) | (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Exact comparison of an integer with a real (no rounding through f64).
fn cmp_int_real(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Greater;
    }
    if f >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let floor = f.floor();
    match i.cmp(&(floor as i64)) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    }
}

pub fn cmp_key(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match cmp_value(x, y) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Appends a delta upsert of `row`.
pub fn push_upsert(out: &mut Vec<u8>, row: &[u8]) {
    out.push(UPSERT);
    out.extend_from_slice(row);
}

/// Appends a delta delete of `key`.
pub fn push_delete(out: &mut Vec<u8>, key: &[Value]) {
    out.push(DELETE);
    for v in key {
        encode_value(out, v);
    }
}

struct Row {
    key: Key,
    /// `None`: deleted.
    row: Option<Vec<u8>>,
}

enum Record {
    Row(Row),
    /// Keys above the first bound (unbounded if `None`) up to the second are deleted.
    Range(Option<Key>, Option<Key>),
}

impl Record {
    fn row(key: Key, row: Option<Vec<u8>>) -> Record {
        Record::Row(Row { key, row })
    }
}

/// Appends a delta range delete of the keys `k` with `lo < k <= hi` (`None`: unbounded).
pub fn push_range_delete(out: &mut Vec<u8>, lo: Option<&[Value]>, hi: Option<&[Value]>) {
    out.push(RANGE);
    out.push(u8::from(lo.is_some()) | (u8::from(hi.is_some()) << 1));
    for v in lo.into_iter().chain(hi).flatten() {
        encode_value(out, v);
    }
}

/// Whether `key` is in the range `(lo, hi]`.
fn in_range(key: &[Value], lo: &Option<Key>, hi: &Option<Key>) -> bool {
    lo.as_ref()
        .is_none_or(|l| cmp_key(l, key) == Ordering::Less)
        && hi
            .as_ref()
            .is_none_or(|h| cmp_key(key, h) != Ordering::Greater)
}

/// A layer's chunks in order, read a few ahead (storage reads and decryption overlap the
/// consumer's work).
pub fn layer_chunks(
    repo: &Repository,
    chunks: Vec<ChunkId>,
    table: String,
) -> impl futures::Stream<Item = Result<Vec<u8>>> + Send + '_ {
    futures::stream::iter(chunks)
        .map(move |id| {
            let table = table.clone();
            async move {
                repo.read_chunk(&id.0).await.map_err(|err| match err {
                    Error::Damaged(m) => Error::damaged(format!("{m} (table {table})")),
                    other => other,
                })
            }
        })
        .buffered(4)
}

/// Reads one layer record by record.
struct Cursor<'a> {
    chunks: BoxStream<'a, Result<Vec<u8>>>,
    delta: bool,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    head: Option<Row>,
    /// Range deletes read so far whose upper bound the merge may not have passed yet.
    ranges: std::collections::VecDeque<(Option<Key>, Option<Key>)>,
}

impl Cursor<'_> {
    async fn advance(&mut self, spec: &KeySpec) -> Result<()> {
        let previous = self.head.take();
        loop {
            if let Some((rec, used)) = spec.record(&self.buf[self.pos..], self.delta)? {
                self.pos += used;
                let rec = match rec {
                    Record::Row(r) => r,
                    Record::Range(lo, hi) => {
                        if let (Some(p), Some(l)) = (&previous, &lo)
                            && cmp_key(&p.key, l) == Ordering::Greater
                        {
                            return Err(Error::damaged("a segment is out of key order"));
                        }
                        self.ranges.push_back((lo, hi));
                        continue;
                    }
                };
                if let Some(p) = &previous
                    && cmp_key(&p.key, &rec.key) != Ordering::Less
                {
                    return Err(Error::damaged("a segment is out of key order"));
                }
                self.head = Some(rec);
                return Ok(());
            }
            if self.eof {
                if self.pos != self.buf.len() {
                    return Err(Error::damaged("a segment ends inside a row"));
                }
                return Ok(());
            }
            match self.chunks.next().await {
                Some(chunk) => {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    self.buf.extend_from_slice(&chunk?);
                }
                None => self.eof = true,
            }
        }
    }
}

/// The rows of a table merged from its layers, in key order.
pub struct Merged<'a> {
    spec: KeySpec,
    cursors: Vec<Cursor<'a>>,
    started: bool,
}

impl<'a> Merged<'a> {
    pub fn new(repo: &'a Repository, table: &str, layers: Vec<Layer>, spec: KeySpec) -> Self {
        let cursors = layers
            .into_iter()
            .map(|l| Cursor {
                chunks: layer_chunks(repo, l.chunks, table.to_string()).boxed(),
                delta: l.segment == SegmentKind::Delta,
                buf: Vec::new(),
                pos: 0,
                eof: false,
                head: None,
                ranges: Default::default(),
            })
            .collect();
        Merged {
            spec,
            cursors,
            started: false,
        }
    }

    /// The next live row and its key.
    pub async fn next(&mut self) -> Result<Option<(Key, Vec<u8>)>> {
        if !self.started {
            for c in &mut self.cursors {
                c.advance(&self.spec).await?;
            }
            self.started = true;
        }
        loop {
            let mut min: Option<&Key> = None;
            for c in &self.cursors {
                if let Some(h) = &c.head
                    && min.is_none_or(|m| cmp_key(&h.key, m) == Ordering::Less)
                {
                    min = Some(&h.key);
                }
            }
            let Some(min) = min.cloned() else {
                return Ok(None);
            };
            let mut newest = None;
            for c in &mut self.cursors {
                // A range delete of a newer layer hides what the older ones hold.
                while c.ranges.front().is_some_and(|(_, hi)| {
                    hi.as_ref()
                        .is_some_and(|h| cmp_key(h, &min) == Ordering::Less)
                }) {
                    c.ranges.pop_front();
                }
                if newest.is_some() && c.ranges.iter().any(|(lo, hi)| in_range(&min, lo, hi)) {
                    newest = Some(Row {
                        key: min.clone(),
                        row: None,
                    });
                }
                if c.head
                    .as_ref()
                    .is_some_and(|h| cmp_key(&h.key, &min) == Ordering::Equal)
                {
                    newest = c.head.take();
                    c.head = newest.as_ref().map(|r| Row {
                        key: r.key.clone(),
                        row: None,
                    });
                    c.advance(&self.spec).await?;
                }
            }
            if let Some(Row {
                key,
                row: Some(row),
            }) = newest
            {
                return Ok(Some((key, row)));
            }
        }
    }
}

/// Pieces of a merged stream handed on at a time.
const PIECE: usize = 1 << 20;

/// The canonical stream of a table in pieces: its chunks for a `full` entry, the merge of
/// its layers for a `delta`.
pub fn table_stream<'a>(
    repo: &'a Repository,
    e: &TableEntry,
) -> Result<BoxStream<'a, Result<Vec<u8>>>> {
    if e.base.is_empty() {
        return Ok(layer_chunks(repo, e.chunks.clone(), e.name.clone()).boxed());
    }
    let spec = KeySpec::of_entry(e)
        .ok_or_else(|| Error::damaged(format!("table {} has delta layers but no key", e.name)))?;
    let merged = Merged::new(repo, &e.name, e.layers(), spec);
    Ok(futures::stream::unfold(Some(merged), |state| async move {
        let mut merged = state?;
        let mut piece = Vec::with_capacity(PIECE + 65536);
        while piece.len() < PIECE {
            match merged.next().await {
                Ok(Some((_, row))) => piece.extend_from_slice(&row),
                Ok(None) if piece.is_empty() => return None,
                Ok(None) => break,
                Err(e) => return Some((Err(e), None)),
            }
        }
        Some((Ok(piece), Some(merged)))
    })
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn integers_parse_as_copy_prints_them(i in any::<i64>()) {
            prop_assert_eq!(parse_int(i.to_string().as_bytes()), Some(i));
        }

        /// Mixed integers and reals order as numbers, exactly.
        #[test]
        fn integers_and_reals_compare_by_value(i in any::<i64>(), f in any::<f64>().prop_filter("a number", |f| !f.is_nan())) {
            let exact = (i as i128 as f64 == f && f.fract() == 0.0 && f.abs() < 9.2e18)
                .then(|| i.cmp(&(f as i64)));
            let got = cmp_value(&Value::Integer(i), &Value::Real(f));
            if let Some(e) = exact {
                prop_assert_eq!(got, e);
            }
            prop_assert_eq!(got, cmp_value(&Value::Real(f), &Value::Integer(i)).reverse());
            if (f - i as f64).abs() > 4096.0 {
                prop_assert_eq!(got, (i as f64).partial_cmp(&f).unwrap());
            }
        }
    }

    #[test]
    fn malformed_integers_are_refused() {
        for bad in ["", "-", "1.5", "12a", "99999999999999999999", "\\N"] {
            assert_eq!(parse_int(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
    }

    #[test]
    fn an_integer_next_to_a_real_between_it_and_the_next() {
        assert_eq!(cmp_int_real(2, 2.5), Ordering::Less);
        assert_eq!(cmp_int_real(3, 2.5), Ordering::Greater);
        assert_eq!(cmp_int_real(-3, -2.5), Ordering::Less);
        assert_eq!(cmp_int_real(i64::MAX, 2f64.powi(63)), Ordering::Less);
    }
}
