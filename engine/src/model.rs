//! Values, the canonical row stream, table schemas and snapshot manifests.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A snapshot's id: the BLAKE3 hash of its sealed manifest, 64 hex digits (the object
/// `snapshots/<id>`). Reads as the string it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(String);

impl SnapshotId {
    pub(crate) fn new(id: String) -> SnapshotId {
        SnapshotId(id)
    }

    /// The first 12 hex digits, as messages and lists show it.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SnapshotId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<String> for SnapshotId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

/// A 32-byte digest stored in manifests as 64 hex digits: `short()` for messages,
/// `Display` as hex, and a manifest holding anything else there does not load (it
/// cannot be a damaged copy: manifests are authenticated).
macro_rules! hex_digest {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The first 12 hex digits, for messages.
            pub fn short(&self) -> String {
                crate::repo::short(&self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&crate::repo::crypto::hex(&self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                crate::repo::parse_id(&s)
                    .map($name)
                    .ok_or_else(|| serde::de::Error::custom(format!(concat!("{:?} is not a ", $what), s)))
            }
        }
    };
}

hex_digest!(
    /// A chunk's id: the keyed BLAKE3 hash of its plain bytes under the repository's key.
    ChunkId,
    "chunk id"
);

hex_digest!(
    /// The BLAKE3 hash of a whole stream (a table's canonical stream, a change segment).
    Checksum,
    "checksum"
);

impl Checksum {
    pub fn of(hash: blake3::Hash) -> Checksum {
        Checksum(*hash.as_bytes())
    }

    /// Whether `hash` (a finished hasher) is this checksum.
    pub fn matches(&self, hash: &blake3::Hash) -> bool {
        // blake3::Hash compares in constant time; the bytes are not secret anyway.
        *hash == blake3::Hash::from_bytes(self.0)
    }
}

/// One cell, as the source stored it. SQLite's five storage classes map one to one;
/// MySQL values are read into them losslessly; PostgreSQL tables are streamed as COPY
/// text instead ([`StreamFormat::PgCopyText`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    /// Compared by bits, so -0.0 and NaN payloads survive.
    Real(f64),
    /// SQLite TEXT; raw bytes because SQLite does not enforce UTF-8.
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

const TAG_NULL: u8 = 0;
const TAG_INTEGER: u8 = 1;
const TAG_REAL: u8 = 2;
const TAG_TEXT: u8 = 3;
const TAG_BLOB: u8 = 4;

/// Appends `value` to a canonical stream: a tag byte, then for INTEGER/REAL 8 bytes
/// little-endian, for TEXT/BLOB a LEB128 length and the bytes. A row is its values in
/// column order; the column count comes from the schema.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Integer(i) => {
            out.push(TAG_INTEGER);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Real(f) => {
            out.push(TAG_REAL);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Text(b) | Value::Blob(b) => {
            out.push(if matches!(value, Value::Text(_)) {
                TAG_TEXT
            } else {
                TAG_BLOB
            });
            write_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

/// LEB128: 7 bits a byte, low first, the high bit set on all but the last.
pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Where the value at the front of `buf` lies: its tag, where its payload starts and
/// where the value ends. `Ok(None)` means `buf` ends inside the value (more bytes
/// needed); an unknown tag is damage.
fn value_extent(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let (start, len) = match tag {
        TAG_NULL => (1, 0),
        TAG_INTEGER | TAG_REAL => (1, 8),
        TAG_TEXT | TAG_BLOB => {
            let mut len: u64 = 0;
            let mut shift = 0;
            let mut i = 1;
            loop {
                let Some(&byte) = buf.get(i) else {
                    return Ok(None);
                };
                if shift > 63 {
                    return Err(Error::damaged("value length overflows"));
                }
                len |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                i += 1;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            (
                i,
                usize::try_from(len).map_err(|_| Error::damaged("value length overflows"))?,
            )
        }
        other => return Err(Error::damaged(format!("unknown value tag {other}"))),
    };
    let end = start
        .checked_add(len)
        .ok_or_else(|| Error::damaged("value length overflows"))?;
    Ok((end <= buf.len()).then_some((tag, start, end)))
}

/// The length of the value at the front of `buf`, without decoding it.
pub fn value_len(buf: &[u8]) -> Result<Option<usize>> {
    Ok(value_extent(buf)?.map(|(_, _, end)| end))
}

/// Decodes one value from the front of `buf`. `Ok(None)` means `buf` ends inside the
/// value (more bytes needed); an unknown tag is damage.
pub fn decode_value(buf: &[u8]) -> Result<Option<(Value, usize)>> {
    let Some((tag, start, end)) = value_extent(buf)? else {
        return Ok(None);
    };
    let payload = &buf[start..end];
    let fixed = || -> [u8; 8] { payload.try_into().expect("8 bytes by the extent") };
    let value = match tag {
        TAG_NULL => Value::Null,
        TAG_INTEGER => Value::Integer(i64::from_le_bytes(fixed())),
        TAG_REAL => Value::Real(f64::from_bits(u64::from_le_bytes(fixed()))),
        TAG_TEXT => Value::Text(payload.to_vec()),
        _ => Value::Blob(payload.to_vec()),
    };
    Ok(Some((value, end)))
}

/// Splits a canonical stream back into rows of `columns` values, across chunk
/// boundaries: feed bytes with [`RowDecoder::push`], take complete rows with
/// [`RowDecoder::next_row`].
pub struct RowDecoder {
    columns: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl RowDecoder {
    pub fn new(columns: usize) -> Self {
        Self {
            columns,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_row(&mut self) -> Result<Option<Vec<Value>>> {
        let mut row = Vec::with_capacity(self.columns);
        let mut at = self.pos;
        for _ in 0..self.columns {
            match decode_value(&self.buf[at..])? {
                Some((v, used)) => {
                    row.push(v);
                    at += used;
                }
                None => return Ok(None),
            }
        }
        if self.columns == 0 {
            return Ok(None);
        }
        self.pos = at;
        Ok(Some(row))
    }

    /// Call at the end of the stream: leftover bytes mean the stream was cut short.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(Error::damaged(format!(
                "{} bytes after the last complete row",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}

pub use tablesafe_types::Engine;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The declared type exactly as the source has it (SQLite: may be empty).
    pub decl_type: String,
    pub not_null: bool,
    /// The default expression, as SQL text.
    pub default: Option<String>,
    /// 1-based position in the primary key, 0 if not part of it.
    pub pk: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub columns: Vec<Column>,
    /// The statement that creates the table, as the source has it (SQLite:
    /// `sqlite_master.sql`), or generated when only some columns were selected.
    pub create_sql: String,
    /// CREATE INDEX statements (not the automatic ones of PRIMARY KEY / UNIQUE).
    pub indexes: Vec<Index>,
    /// Tables this one references by foreign key (for restore order).
    pub references: Vec<String>,
    /// Whether all columns of the source table were kept.
    pub all_columns: bool,
    /// PostgreSQL only: the table's definition in parts, so that restore can rename
    /// it and order constraints after the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgTable>,
}

impl TableSchema {
    /// Narrows a SQLite or MySQL schema to a backup of only `columns`: their definitions,
    /// a table definition of just them by `create` (types, NOT NULL, the key), marked
    /// partial. Returns the indexes it had (they may need the other columns).
    pub fn keep_only(
        &mut self,
        table: &str,
        columns: &[String],
        create: fn(&str, &[Column]) -> String,
    ) -> Vec<Index> {
        self.columns.retain(|c| columns.contains(&c.name));
        self.create_sql = create(table, &self.columns);
        self.all_columns = false;
        std::mem::take(&mut self.indexes)
    }

    /// The primary-key columns in key order.
    pub fn primary_key(&self) -> Vec<String> {
        match &self.postgres {
            Some(def) => def.pk.clone(),
            None => key_columns(&self.columns),
        }
    }
}

/// The primary-key columns of SQLite or MySQL columns, in key order (a column's `pk` is
/// its position in the key).
pub fn key_columns(columns: &[Column]) -> Vec<String> {
    let mut pk: Vec<_> = columns.iter().filter(|c| c.pk > 0).collect();
    pk.sort_by_key(|c| c.pk);
    pk.into_iter().map(|c| c.name.clone()).collect()
}

/// A PostgreSQL table as parts of DDL (all SQL text as the server printed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgTable {
    pub schema: String,
    pub name: String,
    /// Primary-key columns in key order.
    #[serde(default)]
    pub pk: Vec<String>,
    /// Column definitions: name, type, NOT NULL, default, identity, generated.
    pub columns: Vec<PgColumn>,
    /// Constraints with their definitions from pg_get_constraintdef.
    pub constraints: Vec<PgConstraint>,
    /// (name, definition from pg_get_indexdef) of indexes that back no constraint.
    pub indexes: Vec<(String, String)>,
    /// Sequences owned by columns: (regclass text, column, last_value, is_called).
    pub sequences: Vec<(String, String, i64, bool)>,
    /// The snapshot's schema objects its columns, defaults, checks and indexes use
    /// ([`SchemaObject::key`]s: domains, functions, collations, extensions…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Column collations other than the type's default: (column, collation as SQL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collations: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgColumn {
    pub name: String,
    pub type_sql: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub identity: Identity,
    /// Stored generation expression, if generated.
    pub generated: Option<String>,
}

/// Whether a PostgreSQL column is an identity column (`pg_attribute.attidentity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    #[default]
    #[serde(rename = "")]
    None,
    /// `GENERATED ALWAYS AS IDENTITY`: values may only be written with
    /// `OVERRIDING SYSTEM VALUE`.
    #[serde(rename = "a")]
    Always,
    /// `GENERATED BY DEFAULT AS IDENTITY`.
    #[serde(rename = "d")]
    ByDefault,
}

impl Identity {
    /// From `attidentity` as the catalog has it (`""`, `"a"` or `"d"`).
    pub fn from_catalog(code: &str) -> Result<Self> {
        match code.trim_matches(char::from(0)) {
            "" => Ok(Identity::None),
            "a" => Ok(Identity::Always),
            "d" => Ok(Identity::ByDefault),
            other => Err(Error::Other(format!("unknown attidentity {other:?}"))),
        }
    }
}

/// One table constraint (`pg_constraint`); stored as `[name, kind, definition]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "(String, ConstraintKind, String)",
    into = "(String, ConstraintKind, String)"
)]
pub struct PgConstraint {
    pub name: String,
    pub kind: ConstraintKind,
    /// As `pg_get_constraintdef` prints it.
    pub definition: String,
}

impl From<(String, ConstraintKind, String)> for PgConstraint {
    fn from((name, kind, definition): (String, ConstraintKind, String)) -> Self {
        PgConstraint {
            name,
            kind,
            definition,
        }
    }
}

impl From<PgConstraint> for (String, ConstraintKind, String) {
    fn from(c: PgConstraint) -> Self {
        (c.name, c.kind, c.definition)
    }
}

/// `pg_constraint.contype`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintKind {
    #[serde(rename = "p")]
    PrimaryKey,
    #[serde(rename = "u")]
    Unique,
    #[serde(rename = "c")]
    Check,
    #[serde(rename = "f")]
    ForeignKey,
    #[serde(rename = "x")]
    Exclusion,
    /// A kind newer servers add (their definition is still replayed as written).
    #[serde(untagged)]
    Other(String),
}

impl ConstraintKind {
    pub fn from_catalog(code: &str) -> Self {
        match code {
            "p" => ConstraintKind::PrimaryKey,
            "u" => ConstraintKind::Unique,
            "c" => ConstraintKind::Check,
            "f" => ConstraintKind::ForeignKey,
            "x" => ConstraintKind::Exclusion,
            other => ConstraintKind::Other(other.to_string()),
        }
    }
}

/// A PostgreSQL enum type a snapshot carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgEnum {
    pub schema: String,
    pub name: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub name: String,
    pub sql: String,
}

/// One table in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub schema: TableSchema,
    /// What [`TableEntry::chunks`] hold: every row, or the rows that changed since the
    /// snapshot whose layers are in [`TableEntry::base`].
    pub segment: SegmentKind,
    /// How the stream encodes rows.
    #[serde(default = "values_format")]
    pub format: StreamFormat,
    /// The columns whose values the stream holds, in stream order (generated columns
    /// and columns left out by `--columns` are not in it).
    pub stream_columns: Vec<String>,
    pub rows: u64,
    /// Length of the canonical stream.
    pub bytes: u64,
    /// BLAKE3 of the canonical stream.
    pub checksum: Checksum,
    /// Chunk ids of this snapshot's own segment in stream order.
    pub chunks: Vec<ChunkId>,
    /// Length of this snapshot's own segment stream (equal to `bytes` for `full`).
    #[serde(default)]
    pub segment_bytes: u64,
    /// The layers a `delta` applies to, oldest (always `full`) first; empty for `full`.
    /// Copied into every snapshot, so a snapshot is self-contained: restore and prune
    /// need no other manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base: Vec<Layer>,
    /// The columns the stream is strictly ordered by (see `segment` module), or empty
    /// when it is not: only a keyed table can get `delta` segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Format 2: the table's checksum is the root over this list of key-ordered block
    /// sums ([`crate::checksum`]), not the BLAKE3 of the whole stream. Absent in format
    /// 1 manifests and for unkeyed tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockList>,
}

/// Where a table's block list is stored ([`crate::checksum`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockList {
    /// Rows per block are 2^`bits` on average.
    pub bits: u32,
    /// Blocks in the list.
    pub count: u64,
    /// Length of the encoded list.
    pub bytes: u64,
    /// The encoded list's chunks, in order.
    pub chunks: Vec<ChunkId>,
}

impl TableEntry {
    /// Every layer needed to read the table, oldest first, this snapshot's own last.
    pub fn layers(&self) -> Vec<Layer> {
        let mut layers = self.base.clone();
        layers.push(Layer {
            segment: self.segment,
            chunks: self.chunks.clone(),
            bytes: self.segment_bytes,
        });
        layers
    }

    /// Every chunk the table needs, in all its layers.
    pub fn all_chunks(&self) -> impl Iterator<Item = &ChunkId> {
        self.base
            .iter()
            .flat_map(|l| l.chunks.iter())
            .chain(self.chunks.iter())
            .chain(self.blocks.iter().flat_map(|b| b.chunks.iter()))
    }
}

/// One segment of a table's stream: `full` rows, or a `delta` of upserted rows and
/// deleted keys in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub segment: SegmentKind,
    pub chunks: Vec<ChunkId>,
    pub bytes: u64,
}

/// What a segment of a table's stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    /// Every row.
    Full,
    /// Rows upserted and keys deleted since the layers below it, in key order.
    Delta,
}

tablesafe_types::words! {
    /// How a table's stream encodes rows. A manifest naming a format this build does not
    /// know keeps its name: verify reports it and restore, browse and export refuse it,
    /// rather than decoding it as another format.
    pub enum StreamFormat {
        /// Tagged values (SQLite and MySQL/MariaDB).
        Values = "values",
        /// PostgreSQL's COPY text format, one line per row, lossless for every type.
        PgCopyText = "pg-copy-text",
        _ => Unknown,
    }
}

impl StreamFormat {
    /// Fails for a table whose stream this build cannot read.
    pub fn check_known(&self, table: &str) -> Result<()> {
        match self {
            StreamFormat::Unknown(name) => Err(unknown_format(table, name)),
            _ => Ok(()),
        }
    }
}

/// The error for a table stored in stream format `name`, which this build cannot read.
pub fn unknown_format(table: &str, name: &str) -> Error {
    Error::invalid(format!(
        "table {table} has a stream format this version of tablesafe does not know ({name:?}): read it with the version that wrote it"
    ))
}

fn values_format() -> StreamFormat {
    StreamFormat::Values
}

/// An object of the source that this snapshot does not carry, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub kind: ObjectKind,
    pub name: String,
    pub reason: String,
}

tablesafe_types::words! {
    /// What kind of object a [`Skipped`] is, stored as these words. A manifest naming a
    /// kind this build has no word for (a newer version's) keeps it as written.
    pub enum ObjectKind {
        View = "view",
        MaterializedView = "materialized view",
        SystemView = "system view",
        VirtualTable = "virtual table",
        PartitionedTable = "partitioned table",
        ForeignTable = "foreign table",
        /// MariaDB's `WITH SYSTEM VERSIONING` tables.
        SystemVersionedTable = "system versioned table",
        TemporaryTable = "temporary table",
        Sequence = "sequence",
        Trigger = "trigger",
        Function = "function",
        Index = "index",
        /// A table's defaults, indexes and foreign keys (only some of its columns were
        /// backed up).
        Definition = "definition",
        Extension = "extension",
        Schema = "schema",
        Domain = "domain",
        /// A composite or range type.
        Type = "type",
        Collation = "collation",
        Procedure = "procedure",
        Aggregate = "aggregate",
        Rule = "rule",
        /// A table's row-level security switches (`ENABLE`/`FORCE`).
        RowSecurity = "row security",
        Policy = "policy",
        Comment = "comment",
        Grant = "grant",
        /// A partition attached to its partitioned table.
        Partition = "partition",
        EventTrigger = "event trigger",
        /// MySQL's scheduled events.
        Event = "event",
        /// A database setting (SQLite's `user_version`, `application_id`).
        Setting = "setting",
        _ => Unknown,
    }
}

impl ObjectKind {
    /// The kind of a MySQL `information_schema.TABLES.TABLE_TYPE`.
    pub fn of_mysql_table_type(table_type: &str) -> ObjectKind {
        match table_type {
            "VIEW" => ObjectKind::View,
            "SYSTEM VIEW" => ObjectKind::SystemView,
            "SEQUENCE" => ObjectKind::Sequence,
            "SYSTEM VERSIONED" => ObjectKind::SystemVersionedTable,
            "TEMPORARY" | "LOCAL TEMPORARY" => ObjectKind::TemporaryTable,
            other => ObjectKind::Unknown(other.to_lowercase()),
        }
    }
}

/// A schema object a snapshot carries besides its tables (views, functions, triggers,
/// types, policies, grants…): a restore makes it by running its statements, in the
/// snapshot's order, which puts what an object needs before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaObject {
    pub kind: ObjectKind,
    /// As the engine identifies it: `public.posint`, `public.touch()`,
    /// `trigger touch on public.notes`.
    pub name: String,
    pub phase: Phase,
    pub sql: Vec<String>,
    /// Undoes `sql` (for objects made before the restore's transaction, which staged
    /// loads need committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<String>,
    /// The snapshot's tables it uses: it is restored with them, and reported when some
    /// of them are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Other objects it needs ([`SchemaObject::key`]s), earlier in the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// An extension's version when the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl SchemaObject {
    /// An object made by `sql`, needing nothing yet.
    pub fn new(kind: ObjectKind, name: impl Into<String>, phase: Phase, sql: Vec<String>) -> Self {
        SchemaObject {
            kind,
            name: name.into(),
            phase,
            sql,
            drop: None,
            tables: Vec::new(),
            needs: Vec::new(),
            version: None,
        }
    }

    /// Names the object among a snapshot's objects (kind and name).
    pub fn key(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.name)
    }
}

tablesafe_types::words! {
    /// When a restore makes a [`SchemaObject`].
    pub enum Phase {
        /// Before the tables: what their columns, defaults and checks use (extensions,
        /// types, functions, sequences, partitioned parents).
        Before = "before",
        /// After the rows are loaded, so triggers do not fire on them and views,
        /// policies and grants find their tables.
        After = "after",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSource {
    pub engine: Engine,
    /// The source URL with any password removed.
    pub url: String,
}

/// The manifest of a snapshot, stored encrypted at `snapshots/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    /// Unix milliseconds when the source's read transaction began.
    pub time_ms: i64,
    pub source: SnapshotSource,
    pub selection: crate::selection::Selection,
    pub tags: BTreeMap<String, String>,
    pub tables: Vec<TableEntry>,
    /// PostgreSQL enum types used by the tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enums: Vec<PgEnum>,
    pub skipped: Vec<Skipped>,
    /// Schema objects besides the tables, in the order a restore makes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<SchemaObject>,
    /// Bytes newly stored in the repository by this backup (after dedup, compression,
    /// encryption).
    pub bytes_stored: u64,
    pub duration_ms: u64,
    /// PostgreSQL: where this snapshot sits in the source's change history, so that
    /// captured changes can be replayed on it (point-in-time restore, [`crate::capture`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_point: Option<PgPoint>,
    /// SQLite continuous capture: this snapshot is one round of a capture
    /// ([`crate::capture::sqlite`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureRound>,
}

/// A SQLite capture round's place in its capture: the rounds of one capture are
/// numbered without gaps, so a missing one (forgotten by hand) shows as a break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRound {
    /// The capture's name (`tablesafe capture --name`, `p<policy id>` in the console).
    pub name: String,
    pub seq: u64,
    /// The previous round's state was seen unchanged (no commit at all on the
    /// database) up to this instant (unix ms): restoring to any instant up to it gives
    /// exactly the state of that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_unchanged_until_ms: Option<i64>,
}

/// The newest round of a SQLite capture (`captures/<name>`, overwritten by each
/// round): how long the state of its last snapshot is known to have stayed unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHead {
    pub format: u32,
    pub source: SnapshotSource,
    pub name: String,
    /// The round whose snapshot holds the current state.
    pub seq: u64,
    pub snapshot_id: SnapshotId,
    /// No commit happened on the database from that snapshot up to this instant.
    pub unchanged_until_ms: i64,
}

/// A PostgreSQL snapshot's position: the transactions it sees and the capture slots
/// that existed before it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgPoint {
    /// `txid_current_snapshot()` of the backup's transaction (`xmin:xmax:xip,…`): a
    /// captured transaction is already in the snapshot exactly when it is visible here.
    pub xid_snapshot: XidSnapshot,
    /// `pg_current_wal_lsn()` read before the backup's transaction began: every
    /// transaction the snapshot does not see commits after it.
    pub wal_lsn: u64,
    /// tablesafe capture slots that existed before the transaction began: their change
    /// segments hold every transaction this snapshot does not see.
    pub slots: Vec<String>,
    /// The server's history: `pg_control_system()`'s system identifier and the WAL
    /// timeline. A later backup reads only the rows changed since this snapshot (by their
    /// `xmin`) when both are unchanged, i.e. the server's transaction ids continued from
    /// here; a server restored from an older base backup or promoted gets a new timeline.
    /// Written as decimal text (it is a 64-bit number; JSON readers lose such numbers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "decimal_text"
    )]
    pub system_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

/// An optional `u64` stored as decimal text; text that is not one does not load.
mod decimal_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `txid_current_snapshot()` as text: `xmin:xmax:xip,…` (64-bit txids with epoch).
/// Stored in manifests as that text; one that does not read does not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSnapshot {
    text: String,
    xmin: u64,
    xmax: u64,
    xip: std::collections::BTreeSet<u64>,
}

impl XidSnapshot {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::damaged(format!("a snapshot's transaction list {s:?} is unreadable"));
        let mut parts = s.trim().splitn(3, ':');
        let xmin = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let xmax = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let xip = parts
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        Ok(XidSnapshot {
            text: s.to_string(),
            xmin,
            xmax,
            xip,
        })
    }

    /// The server's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every transaction below this one had ended when the snapshot was taken.
    pub fn xmin(&self) -> u64 {
        self.xmin
    }

    /// The first transaction that had not started when the snapshot was taken.
    pub fn xmax(&self) -> u64 {
        self.xmax
    }

    /// Whether the transaction with 32-bit id `xid` (as `pgoutput` names it) is
    /// committed in this snapshot, i.e. its changes are already in the snapshot's data.
    pub fn sees(&self, xid: u32) -> bool {
        // Widen with the epoch of xmax: transaction ids within 2^31 of each other.
        let epoch = self.xmax >> 32;
        let mut full = (epoch << 32) | u64::from(xid);
        if full > self.xmax.saturating_add(1 << 31) && full >= 1 << 32 {
            full -= 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

impl Serialize for XidSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for XidSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        XidSnapshot::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Captured changes of a PostgreSQL source (`changes/<id>`): every transaction that
/// committed between two positions of a logical replication slot, in commit order
/// ([`crate::capture`] documents the stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSegment {
    pub format: u32,
    pub source: SnapshotSource,
    pub slot: String,
    /// The slot's position before this segment; transactions ending after it are here.
    pub start_lsn: u64,
    /// The slot's position after this segment (it was advanced to it once the segment
    /// was stored).
    pub end_lsn: u64,
    /// Every transaction that committed up to this time (source clock, unix ms) is in
    /// this segment or an earlier one of the slot.
    pub covers_until_ms: i64,
    pub first_commit_ms: Option<i64>,
    pub last_commit_ms: Option<i64>,
    pub transactions: u64,
    pub changes: u64,
    /// Length and BLAKE3 of the change stream.
    pub bytes: u64,
    pub checksum: Checksum,
    pub chunks: Vec<ChunkId>,
    /// When it was written (unix ms).
    pub time_ms: i64,
    /// The tables the capture published (`schema.table`): only these can be replayed.
    pub tables: Vec<String>,
}

impl Snapshot {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
    pub fn total_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<u64>().prop_map(|b| Value::Real(f64::from_bits(b))),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Blob),
        ]
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        /// Any rows, encoded and fed back in pieces of any size, decode to themselves.
        #[test]
        fn rows_round_trip_through_any_split(
            rows in proptest::collection::vec(proptest::collection::vec(value(), 3), 0..40),
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut stream = Vec::new();
            for row in &rows { for v in row { encode_value(&mut stream, v); } }
            let mut dec = RowDecoder::new(3);
            let mut out = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - at);
                dec.push(&stream[at..at + n]);
                at += n;
                i += 1;
                while let Some(r) = dec.next_row().unwrap() { out.push(r); }
            }
            dec.finish().unwrap();
            prop_assert_eq!(out.len(), rows.len());
            for (a, b) in rows.iter().zip(&out) {
                for (x, y) in a.iter().zip(b) { prop_assert!(same(x, y), "{:?} != {:?}", x, y); }
            }
        }

        /// A truncated stream is never mistaken for a complete one.
        #[test]
        fn truncation_is_detected(row in proptest::collection::vec(value(), 2), cut in 1usize..10) {
            let mut stream = Vec::new();
            for v in &row { encode_value(&mut stream, v); }
            let cut = cut.min(stream.len() - 1); // leave at least one byte
            let mut dec = RowDecoder::new(2);
            dec.push(&stream[..stream.len() - cut]);
            prop_assert!(dec.next_row().unwrap().is_none());
            prop_assert!(dec.finish().is_err());
        }
    }

    #[test]
    fn unknown_tag_is_damage() {
        assert!(matches!(decode_value(&[9]), Err(Error::Damaged(_))));
    }

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    /// The typed manifest fields read and write the strings format 1 has always stored,
    /// and a name this build does not know survives a read and a write.
    #[test]
    fn manifest_fields_keep_their_stored_words() {
        assert_eq!(json(&SegmentKind::Delta), r#""delta""#);
        assert_eq!(json(&StreamFormat::PgCopyText), r#""pg-copy-text""#);
        assert_eq!(json(&StreamFormat::Values), r#""values""#);
        assert_eq!(json(&Identity::None), r#""""#);
        assert_eq!(json(&Identity::ByDefault), r#""d""#);
        let c = PgConstraint {
            name: "orders_pkey".into(),
            kind: ConstraintKind::PrimaryKey,
            definition: "PRIMARY KEY (id)".into(),
        };
        assert_eq!(json(&c), r#"["orders_pkey","p","PRIMARY KEY (id)"]"#);
        let read: PgConstraint = serde_json::from_str(r#"["n1","n","NOT NULL v"]"#).unwrap();
        assert_eq!(read.kind, ConstraintKind::Other("n".into()));
        assert_eq!(json(&read), r#"["n1","n","NOT NULL v"]"#);
        let f: StreamFormat = serde_json::from_str(r#""values-v2""#).unwrap();
        assert_eq!(f, StreamFormat::Unknown("values-v2".into()));
        assert_eq!(json(&f), r#""values-v2""#);
        assert!(f.check_known("t").is_err());
        assert!(StreamFormat::PgCopyText.check_known("t").is_ok());
        assert!(serde_json::from_str::<SegmentKind>(r#""partial""#).is_err());
        assert!(serde_json::from_str::<Identity>(r#""x""#).is_err());
        // Chunk ids: 64 hex digits, as before; anything else does not load.
        let hex64 = "0f".repeat(32);
        let id: ChunkId = serde_json::from_str(&format!("\"{hex64}\"")).unwrap();
        assert_eq!(id, ChunkId([0x0f; 32]));
        assert_eq!(json(&id), format!("\"{hex64}\""));
        assert_eq!(id.short(), "0f".repeat(6));
        for bad in [&hex64[..62], "zz", ""] {
            assert!(serde_json::from_str::<ChunkId>(&format!("\"{bad}\"")).is_err());
            assert!(serde_json::from_str::<Checksum>(&format!("\"{bad}\"")).is_err());
        }
        // Stream checksums: the same hex as before, and they match the hash they were
        // made from and nothing else.
        let hash = blake3::hash(b"rows");
        let sum: Checksum = serde_json::from_str(&format!("\"{}\"", hash.to_hex())).unwrap();
        assert_eq!(json(&sum), format!("\"{}\"", hash.to_hex()));
        assert!(sum.matches(&hash));
        assert!(!sum.matches(&blake3::hash(b"rowz")));
        assert_eq!(sum, Checksum::of(hash));
        // A PostgreSQL snapshot's transactions: written back as the server's text; text
        // that does not read does not load.
        let xids: XidSnapshot = serde_json::from_str(r#""100:105:103,101""#).unwrap();
        assert_eq!(json(&xids), r#""100:105:103,101""#);
        assert!(xids.sees(102) && !xids.sees(101) && !xids.sees(105));
        for bad in ["100", "a:b:", "100:105:x"] {
            assert!(serde_json::from_str::<XidSnapshot>(&format!("\"{bad}\"")).is_err());
        }
        // The server's system identifier: a 64-bit number, written as text as before.
        let point = format!(
            r#"{{"xid_snapshot":"1:1:","wal_lsn":5,"slots":[],"system_id":"{}","timeline":1}}"#,
            u64::MAX
        );
        let read: PgPoint = serde_json::from_str(&point).unwrap();
        assert_eq!(read.system_id, Some(u64::MAX));
        assert_eq!(json(&read), point);
        assert!(serde_json::from_str::<PgPoint>(&point.replace("\"1844", "\"x1844")).is_err());
    }
}
