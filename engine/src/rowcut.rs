//! Cutting a table's stream, fed in pieces of any size, into rows without holding a long
//! row whole.
//!
//! A row of at most [`LONG_ROW`] bytes is handed on whole ([`Cut::Row`]). A longer
//! COPY text row (a PostgreSQL value of many megabytes) is handed on in the pieces it
//! came in ([`Cut::Bytes`]), and only what reading its key needs is kept: its key fields,
//! as a line whose other fields are empty, and its first [`LONG_ROW`] bytes (the
//! checksum's stand-in for a key that cannot be read). Whether a row is long depends on
//! its length alone, never on where the pieces were cut, so a backup and a later check
//! that read the same stream in other pieces agree. Rows of the values stream (SQLite,
//! MySQL) are always held whole: their readers hold each value whole already.

use crate::Result;
use crate::segment::KeySpec;

/// Rows up to this long are held whole; longer COPY text rows pass through in pieces.
pub const LONG_ROW: usize = 1 << 20;

/// A long row's key fields are kept up to this length; longer ones (only in a damaged
/// stream: key columns are integers and uuids) make its key unreadable.
const MAX_KEY_FIELDS: usize = 64 << 10;

/// What [`RowCutter::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut<'a> {
    /// A whole row (at most [`LONG_ROW`] bytes, or any values-stream row).
    Row(&'a [u8]),
    /// The next bytes of a long row, in order.
    Bytes(&'a [u8]),
    /// The long row whose bytes came before ended.
    LongRow {
        /// A COPY text line holding the row's key fields at their places, the other
        /// fields empty: [`KeySpec::key_into`] reads the row's key from it. `None` when
        /// the fields were too long to keep (a damaged row).
        keys: Option<&'a [u8]>,
        /// The row's first [`LONG_ROW`] bytes.
        head: &'a [u8],
    },
}

/// A long row being passed on.
struct Long {
    head: Vec<u8>,
    keys: Vec<u8>,
    /// Its key fields were too long to keep.
    overflow: bool,
    /// The index of the field being read (past the last key field: no more to keep).
    field: usize,
    /// Its last bytes were handed on: [`Cut::LongRow`] is next.
    closing: bool,
    /// [`Cut::LongRow`] was handed on: dropped at the next call.
    ended: bool,
}

impl Long {
    fn new() -> Self {
        Long {
            head: Vec::new(),
            keys: Vec::new(),
            overflow: false,
            field: 0,
            closing: false,
            ended: false,
        }
    }

    /// Takes in the row's next bytes (ending with its newline if it ends here).
    fn take(&mut self, bytes: &[u8], spec: &KeySpec) {
        if self.head.len() < LONG_ROW {
            let n = (LONG_ROW - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
        }
        let last = spec.last_key_field();
        let mut b = bytes;
        while self.field <= last && !b.is_empty() {
            let (field, sep) = match memchr::memchr2(b'\t', b'\n', b) {
                Some(i) => (&b[..i], Some(b[i])),
                None => (b, None),
            };
            if spec.is_key_field(self.field) {
                if self.keys.len() + field.len() > MAX_KEY_FIELDS {
                    self.overflow = true;
                } else {
                    self.keys.extend_from_slice(field);
                }
            }
            match sep {
                Some(b'\t') => {
                    self.field += 1;
                    if self.field <= last {
                        self.keys.push(b'\t');
                    }
                    b = &b[field.len() + 1..];
                }
                // The row's end: no more fields.
                Some(_) => self.field = usize::MAX,
                None => break,
            }
        }
        if bytes.last() == Some(&b'\n') {
            self.closing = true;
        }
    }

    fn cut(&self) -> Cut<'_> {
        Cut::LongRow {
            keys: (!self.overflow).then_some(self.keys.as_slice()),
            head: &self.head,
        }
    }
}

/// Cuts a table's stream into rows (module docs). Feed each piece through
/// [`RowCutter::next`] until it returns `None`.
pub struct RowCutter {
    spec: KeySpec,
    lines: bool,
    /// The start of a short row that an earlier piece ended inside.
    carry: Vec<u8>,
    /// `carry` was handed on as a row (or as a long row's first bytes): cleared at the
    /// next call.
    carry_taken: bool,
    long: Option<Long>,
}

impl RowCutter {
    pub fn new(spec: KeySpec) -> Self {
        RowCutter {
            lines: spec.is_copy_text(),
            spec,
            carry: Vec::new(),
            carry_taken: false,
            long: None,
        }
    }

    /// The next row or part of one in `data` (what was used is cut off its front), or
    /// `None` when `data` holds no more (what is left of an unfinished row is kept).
    pub fn next<'s, 'd: 's>(&'s mut self, data: &mut &'d [u8]) -> Result<Option<Cut<'s>>> {
        if self.carry_taken {
            self.carry.clear();
            self.carry_taken = false;
        }
        if self.long.as_ref().is_some_and(|l| l.ended) {
            self.long = None;
        }
        let d: &'d [u8] = data;
        if self.long.as_ref().is_some_and(|l| l.closing) {
            let long = self.long.as_mut().expect("a long row");
            long.ended = true;
            return Ok(Some(long.cut()));
        }
        if let Some(long) = self.long.as_mut() {
            if d.is_empty() {
                return Ok(None);
            }
            let end = memchr::memchr(b'\n', d).map_or(d.len(), |i| i + 1);
            let (part, rest) = d.split_at(end);
            long.take(part, &self.spec);
            *data = rest;
            return Ok(Some(Cut::Bytes(part)));
        }
        if !self.carry.is_empty() {
            return self.complete_carry(data);
        }
        if d.is_empty() {
            return Ok(None);
        }
        match self.spec.row_len(d)? {
            Some(n) if n <= LONG_ROW || !self.lines => {
                *data = &d[n..];
                Ok(Some(Cut::Row(&d[..n])))
            }
            // A long row whole in this piece still passes as a long one.
            Some(n) => Ok(Some(self.start_long(d, n, data))),
            None if self.lines && d.len() > LONG_ROW => Ok(Some(self.start_long(d, d.len(), data))),
            None => {
                self.carry.extend_from_slice(d);
                *data = &[];
                Ok(None)
            }
        }
    }

    fn start_long<'s, 'd: 's>(&'s mut self, d: &'d [u8], n: usize, data: &mut &'d [u8]) -> Cut<'s> {
        let mut long = Long::new();
        long.take(&d[..n], &self.spec);
        self.long = Some(long);
        *data = &d[n..];
        Cut::Bytes(&d[..n])
    }

    /// Completes the carried row with as little of `data` as it needs.
    fn complete_carry<'s, 'd: 's>(&'s mut self, data: &mut &'d [u8]) -> Result<Option<Cut<'s>>> {
        let d: &'d [u8] = data;
        if self.lines {
            let end = memchr::memchr(b'\n', d).map(|i| i + 1);
            let upto = end.unwrap_or(d.len());
            if self.carry.len() + upto > LONG_ROW {
                // Too long to hold: the carry is the long row's first bytes.
                let mut long = Long::new();
                long.take(&self.carry, &self.spec);
                self.long = Some(long);
                self.carry_taken = true;
                return Ok(Some(Cut::Bytes(&self.carry)));
            }
            self.carry.extend_from_slice(&d[..upto]);
            *data = &d[upto..];
            if end.is_none() {
                return Ok(None);
            }
            self.carry_taken = true;
            return Ok(Some(Cut::Row(&self.carry)));
        }
        // Values: growing steps, so a row of many pieces is not rescanned per 4 KiB.
        let mut taken = 0;
        let mut step = 4096;
        while taken < d.len() {
            let end = (taken + step).min(d.len());
            self.carry.extend_from_slice(&d[taken..end]);
            taken = end;
            step *= 2;
            if let Some(n) = self.spec.row_len(&self.carry)? {
                // What the row did not need is the start of the next rows.
                *data = &d[taken - (self.carry.len() - n)..];
                self.carry.truncate(n);
                self.carry_taken = true;
                return Ok(Some(Cut::Row(&self.carry)));
            }
        }
        *data = &[];
        Ok(None)
    }

    /// Whether the stream so far ends inside a row.
    pub fn in_row(&self) -> bool {
        (!self.carry.is_empty() && !self.carry_taken)
            || self.long.as_ref().is_some_and(|l| !l.ended)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Identity, PgColumn, PgTable, StreamFormat, TableSchema, Value};

    /// The key spec of a COPY text stream of `columns`, keyed by the integer `key`.
    pub(crate) fn copy_spec(columns: &[&str], key: &str) -> KeySpec {
        let column = |name: &str| PgColumn {
            name: name.into(),
            type_sql: if name == key { "bigint" } else { "bytea" }.into(),
            not_null: name == key,
            default: None,
            identity: Identity::None,
            generated: None,
        };
        let schema = TableSchema {
            columns: Vec::new(),
            create_sql: String::new(),
            indexes: Vec::new(),
            references: Vec::new(),
            all_columns: true,
            postgres: Some(PgTable {
                schema: "public".into(),
                name: "t".into(),
                pk: vec![key.into()],
                columns: columns.iter().map(|c| column(c)).collect(),
                constraints: Vec::new(),
                indexes: Vec::new(),
                sequences: Vec::new(),
                needs: Vec::new(),
                collations: Vec::new(),
            }),
        };
        let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        KeySpec::new(&StreamFormat::PgCopyText, &names, &schema).expect("a keyed spec")
    }

    /// A row seen through the cutter: its bytes, its key, and whether it came as long.
    #[derive(Debug, PartialEq)]
    struct Seen {
        bytes: Vec<u8>,
        key: Vec<Value>,
        long: bool,
    }

    fn cut(spec: &KeySpec, stream: &[u8], piece: usize) -> (Vec<Seen>, bool) {
        let mut cutter = RowCutter::new(spec.clone());
        let mut seen = Vec::new();
        let mut bytes = Vec::new();
        for mut data in stream.chunks(piece.max(1)) {
            while let Some(c) = cutter.next(&mut data).unwrap() {
                match c {
                    Cut::Row(row) => seen.push(Seen {
                        bytes: row.to_vec(),
                        key: spec.key(row).unwrap(),
                        long: false,
                    }),
                    Cut::Bytes(b) => bytes.extend_from_slice(b),
                    Cut::LongRow { keys, head } => {
                        assert_eq!(
                            head,
                            &bytes[..LONG_ROW],
                            "a long row's head is its first bytes"
                        );
                        seen.push(Seen {
                            bytes: std::mem::take(&mut bytes),
                            key: spec.key(keys.expect("short key fields")).unwrap(),
                            long: true,
                        });
                    }
                }
            }
        }
        (seen, cutter.in_row())
    }

    /// Short rows and rows of several megabytes, with the key before and after the wide
    /// value: every row comes out with its bytes and key whatever the pieces, and a row
    /// is long exactly when it is longer than LONG_ROW.
    #[test]
    fn rows_come_out_whole_or_in_pieces_by_their_length_alone() {
        let wide = |n: usize, c: u8| vec![c; n];
        let mut rows: Vec<(Vec<u8>, i64)> = Vec::new();
        let mut row = |key: i64, value: Vec<u8>, key_first: bool| {
            let mut r = Vec::new();
            if key_first {
                r.extend_from_slice(format!("{key}\t").as_bytes());
                r.extend_from_slice(&value);
                r.extend_from_slice(b"\tx");
            } else {
                r.extend_from_slice(b"x\t");
                r.extend_from_slice(&value);
                r.extend_from_slice(format!("\t{key}").as_bytes());
            }
            r.push(b'\n');
            rows.push((r, key));
        };
        row(1, b"small".to_vec(), true);
        row(2, wide(3 * LONG_ROW, b'a'), true);
        row(3, wide(LONG_ROW - 5, b'b'), true); // exactly LONG_ROW bytes: held whole
        row(4, wide(LONG_ROW - 4, b'c'), true); // one byte more: long
        row(5, b"\\\\x00\\t".to_vec(), true);
        let key_first: Vec<u8> = rows.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(rows[2].0.len(), LONG_ROW);
        assert_eq!(rows[3].0.len(), LONG_ROW + 1);
        let spec = copy_spec(&["id", "v", "w"], "id");
        let expected: Vec<Seen> = rows
            .iter()
            .map(|(r, k)| Seen {
                bytes: r.clone(),
                key: vec![Value::Integer(*k)],
                long: r.len() > LONG_ROW,
            })
            .collect();
        for piece in [
            1 << 12,
            65_537,
            LONG_ROW - 1,
            LONG_ROW,
            5 * LONG_ROW,
            key_first.len(),
        ] {
            let (seen, in_row) = cut(&spec, &key_first, piece);
            assert!(!in_row, "pieces of {piece}");
            assert!(seen == expected, "pieces of {piece}");
        }
        // The key after the wide value.
        rows.clear();
        let mut row = |key: i64, value: Vec<u8>| {
            let mut r = b"x\t".to_vec();
            r.extend_from_slice(&value);
            r.extend_from_slice(format!("\t{key}\n").as_bytes());
            rows.push((r, key));
        };
        row(7, wide(2 * LONG_ROW, b'z'));
        row(8, b"y".to_vec());
        let key_last: Vec<u8> = rows.iter().flat_map(|(r, _)| r.clone()).collect();
        let spec = copy_spec(&["w", "v", "id"], "id");
        for piece in [3, 1 << 16, LONG_ROW + 3, key_last.len()] {
            let (seen, in_row) = cut(&spec, &key_last, piece);
            assert!(!in_row);
            let keys: Vec<(i64, bool)> = seen
                .iter()
                .map(|s| match s.key[0] {
                    Value::Integer(k) => (k, s.long),
                    _ => panic!("an integer key"),
                })
                .collect();
            assert_eq!(keys, [(7, true), (8, false)], "pieces of {piece}");
            assert_eq!(
                seen.iter()
                    .flat_map(|s| s.bytes.clone())
                    .collect::<Vec<_>>(),
                key_last
            );
        }
        // A stream cut inside a row, long or short, says so.
        assert!(cut(&spec, &key_last[..LONG_ROW + 10], 1 << 16).1);
        assert!(cut(&spec, &key_last[..key_last.len() - 1], 1 << 16).1);
    }
}
