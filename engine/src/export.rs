//! Restore to a file: a snapshot's tables as CSV, JSON lines, SQL statements or a new
//! SQLite database, read straight from the repository (no database in between).
//!
//! Every table is checked against its manifest checksum while it is read; a file is
//! written under a temporary name and renamed into place only when every table checked
//! out, so a damaged repository never leaves a plausible-looking partial file. A
//! streamed export ([`stream`], the console's download) ends with an error instead of
//! its last bytes, which the receiver sees as a failed download.
//!
//! Values keep their meaning in every format:
//! - **CSV** (RFC 4180, a header row): NULL is an empty unquoted field, an empty string
//!   is `""`. PostgreSQL values are their text form (what `COPY … (FORMAT csv)` writes,
//!   so `COPY … FROM … (FORMAT csv, HEADER)` loads the file back); SQLite BLOBs are
//!   `\x` and hex, like PostgreSQL's `bytea`.
//! - **JSON lines**: one object per row, keys in column order. Integers, floats and
//!   numerics are numbers (NaN and infinities, which JSON lacks, are strings), booleans
//!   are booleans, `json`/`jsonb` values are embedded as JSON, everything else is a
//!   string (BLOB/`bytea`: `\x` and hex).
//! - **SQL**: a script that recreates the tables (types, keys, constraints, indexes,
//!   sequence positions) and inserts the rows in one transaction, for the snapshot's own
//!   engine (`psql -f` or `sqlite3 db < file`).
//! - **SQLite**: a new database file. A SQLite snapshot is restored into it as is; a
//!   PostgreSQL table gets SQLite types (integers as INTEGER, floats as REAL, `bytea` as
//!   BLOB, booleans as 0/1, everything else, numerics included, as TEXT so no digit is
//!   lost) and its primary key.

use crate::dialect::{self, Dialect, Kind, TableSql};
use crate::filter::{BoundFilter, RowFilter};
use crate::model::{Engine, RowDecoder, Snapshot, StreamFormat, TableEntry, Value, unknown_format};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::secret::Secret;
use crate::selection::{Selection, SelectionExt};
use crate::source::sqlite::{self as lite, SqliteDb};
use crate::{Error, Result};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Jsonl,
    Sql,
    Sqlite,
}

impl FileFormat {
    pub const ALL: [FileFormat; 4] = [
        FileFormat::Csv,
        FileFormat::Jsonl,
        FileFormat::Sql,
        FileFormat::Sqlite,
    ];

    /// `csv`, `jsonl` (or `json`, `ndjson`), `sql`, `sqlite` (or `db`, `sqlite3`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(FileFormat::Csv),
            "jsonl" | "json" | "ndjson" => Ok(FileFormat::Jsonl),
            "sql" => Ok(FileFormat::Sql),
            "sqlite" | "sqlite3" | "db" => Ok(FileFormat::Sqlite),
            other => Err(Error::invalid(format!(
                "unknown file format {other:?}: use csv, jsonl, sql or sqlite"
            ))),
        }
    }

    /// The format a file name's extension names.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        FileFormat::parse(ext).map_err(|_| {
            Error::invalid(format!(
                "cannot tell the format of {} from its extension: name it .csv, .jsonl, .sql or .sqlite, or give --format",
                path.display()
            ))
        })
    }

    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Sql => "sql",
            FileFormat::Sqlite => "sqlite",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv; charset=utf-8",
            FileFormat::Jsonl => "application/x-ndjson",
            FileFormat::Sql => "application/sql; charset=utf-8",
            FileFormat::Sqlite => "application/vnd.sqlite3",
        }
    }

    /// CSV and JSON lines hold one table; SQL and SQLite files hold several.
    pub fn one_table(self) -> bool {
        matches!(self, FileFormat::Csv | FileFormat::Jsonl)
    }
}

/// One table of an export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportTable {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    #[serde(skip)]
    entry: TableEntry,
    #[serde(skip)]
    filter: BoundFilter,
}

/// What an export will read.
#[derive(Debug, Clone, Serialize)]
pub struct ExportPlan {
    pub snapshot: crate::model::SnapshotId,
    pub snapshot_time_ms: i64,
    pub source: String,
    pub format: FileFormat,
    pub tables: Vec<ExportTable>,
    /// Only rows that pass (all rows when empty).
    pub filter: RowFilter,
    #[serde(skip)]
    engine: Engine,
    #[serde(skip)]
    manifest: Box<Snapshot>,
    /// Rows written per table, as the export runs.
    #[serde(skip)]
    written: Arc<Vec<AtomicU64>>,
}

impl ExportPlan {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// A file name for a download: `<table or source>-<snapshot>.<ext>`.
    pub fn file_name(&self) -> String {
        let stem = match self.tables.as_slice() {
            [one] => one.table.clone(),
            _ => "snapshot".to_string(),
        };
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{stem}-{}.{}",
            self.snapshot.short(),
            self.format.extension()
        )
    }
}

/// Works out what an export of `snapshot` (`latest`, an id or a prefix) will hold. CSV
/// and JSON lines need the selection to name exactly one table. With a filter, only the
/// rows that pass are written; every table must have the columns it names.
pub async fn plan(
    repo: &Repository,
    snapshot: &str,
    selection: &Selection,
    filter: &RowFilter,
    format: FileFormat,
) -> Result<ExportPlan> {
    let (id, manifest) = repo.find_snapshot(snapshot).await?;
    let names = selection.apply(manifest.tables.iter().map(|t| t.name.as_str()))?;
    let mut tables = Vec::new();
    for entry in manifest.tables.iter().filter(|t| names.contains(&t.name)) {
        let columns = crate::selection::chosen_columns(
            &entry.name,
            &entry.stream_columns,
            &[],
            selection.columns.get(&entry.name),
        )?;
        tables.push(ExportTable {
            table: entry.name.clone(),
            columns,
            rows: entry.rows,
            bytes: entry.bytes,
            filter: filter.bind(entry, manifest.source.engine)?,
            entry: entry.clone(),
        });
    }
    if tables.is_empty() {
        return Err(Error::invalid(format!(
            "snapshot {} has no table to export",
            id.short()
        )));
    }
    if format.one_table() && tables.len() > 1 {
        let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
        return Err(Error::invalid(format!(
            "a {} file holds one table; choose one with --include (snapshot {} has {})",
            format.extension().to_uppercase(),
            id.short(),
            names.join(", ")
        )));
    }
    crate::restore::order_by_references(&mut tables, |t| &t.entry);
    Ok(ExportPlan {
        snapshot: id,
        snapshot_time_ms: manifest.time_ms,
        source: manifest.source.url.clone(),
        format,
        written: Arc::new(tables.iter().map(|_| AtomicU64::new(0)).collect()),
        tables,
        filter: filter.clone(),
        engine: manifest.source.engine,
        manifest: Box::new(manifest),
    })
}

/// Rows decoded from a table's stream, checked against the manifest at the end.
pub struct TableRows<'a> {
    name: String,
    stream: BoxStream<'a, Result<Vec<u8>>>,
    decoder: Decoder,
    hasher: crate::checksum::StreamCheck,
    rows: u64,
    expected_rows: u64,
    checksum: crate::model::Checksum,
    done: bool,
}

enum Decoder {
    /// SQLite's tagged values.
    Values(RowDecoder),
    /// PostgreSQL COPY text: the bytes after the last complete line.
    Copy(Vec<u8>),
}

impl<'a> TableRows<'a> {
    pub fn open(repo: &'a Repository, e: &TableEntry) -> Result<Self> {
        let decoder = match &e.format {
            StreamFormat::Values => Decoder::Values(RowDecoder::new(e.stream_columns.len())),
            StreamFormat::PgCopyText => Decoder::Copy(Vec::new()),
            StreamFormat::Unknown(name) => return Err(unknown_format(&e.name, name)),
        };
        Ok(TableRows {
            name: e.name.clone(),
            stream: crate::segment::table_stream(repo, e)?,
            decoder,
            hasher: crate::checksum::StreamCheck::new(e)?,
            rows: 0,
            expected_rows: e.rows,
            checksum: e.checksum,
            done: false,
        })
    }

    /// The next rows (every value in stream-column order; PostgreSQL values as their
    /// text form), and the stream bytes they came from; `None` after the last, once
    /// the table matched its checksum.
    pub async fn next_batch(&mut self) -> Result<Option<(Vec<Vec<Value>>, u64)>> {
        if self.done {
            return Ok(None);
        }
        let Some(piece) = self.stream.next().await else {
            self.done = true;
            let rest = match &self.decoder {
                Decoder::Values(d) => d.finish().is_err(),
                Decoder::Copy(carry) => !carry.is_empty(),
            };
            let check = std::mem::replace(
                &mut self.hasher,
                crate::checksum::StreamCheck::for_key(None),
            );
            if rest
                || self.rows != self.expected_rows
                || !check.finish().is_ok_and(|f| f.root == self.checksum)
            {
                return Err(Error::damaged(format!(
                    "table {} does not match its checksum ({} of {} rows read)",
                    self.name, self.rows, self.expected_rows
                )));
            }
            return Ok(None);
        };
        let piece = piece?;
        self.hasher.update(&piece)?;
        let mut rows = Vec::new();
        match &mut self.decoder {
            Decoder::Values(d) => {
                d.push(&piece);
                while let Some(row) = d.next_row()? {
                    rows.push(row);
                }
            }
            Decoder::Copy(carry) => {
                carry.extend_from_slice(&piece);
                let end = memchr::memrchr(b'\n', carry).map(|i| i + 1).unwrap_or(0);
                if end > 0 {
                    // Every line is a row, an empty one included (one empty text value).
                    for line in carry[..end - 1].split(|&b| b == b'\n') {
                        rows.push(copy_fields(line));
                    }
                    carry.drain(..end);
                }
            }
        }
        self.rows += rows.len() as u64;
        Ok(Some((rows, piece.len() as u64)))
    }
}

/// Splits one COPY text line into values: `\N` is NULL, escapes are undone.
pub fn copy_fields(line: &[u8]) -> Vec<Value> {
    line.split(|&b| b == b'\t')
        .map(|f| {
            if f == b"\\N" {
                Value::Null
            } else {
                Value::Text(copy_unescape(f))
            }
        })
        .collect()
}

/// Undoes COPY text escapes (`\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\v`, octal and
/// `\xHH`).
pub fn copy_unescape(f: &[u8]) -> Vec<u8> {
    if !f.contains(&b'\\') {
        return f.to_vec();
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let b = f[i];
        if b != b'\\' || i + 1 == f.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = f[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + u32::from(f[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < f.len() && f[i].is_ascii_hexdigit() => {
                let mut v = hex_digit(f[i]);
                i += 1;
                if i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + hex_digit(f[i]);
                    i += 1;
                }
                out.push(v);
            }
            other => out.push(other),
        }
    }
    out
}

fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Writes one table's rows in a format.
struct Encoder {
    format: FileFormat,
    dialect: &'static dyn Dialect,
    table: String,
    columns: Vec<String>,
    kinds: Vec<Kind>,
    /// Positions of the exported columns in the stream.
    keep: Vec<usize>,
    /// SQL: `INSERT INTO t (cols) VALUES` and how many rows the open statement has.
    insert: String,
    open_rows: usize,
}

/// Rows per SQL `INSERT` statement.
const SQL_BATCH: usize = 200;

impl Encoder {
    fn new(plan: &ExportPlan, t: &ExportTable) -> Encoder {
        let e = &t.entry;
        let keep: Vec<usize> = t
            .columns
            .iter()
            .filter_map(|c| e.stream_columns.iter().position(|s| s == c))
            .collect();
        let dialect = dialect::of(plan.engine);
        let kinds = t
            .columns
            .iter()
            .map(|c| dialect.column_kind(e, c))
            .collect();
        let insert = format!(
            "INSERT INTO {} ({}) VALUES",
            dialect.relation(&t.table),
            t.columns
                .iter()
                .map(|c| dialect.quote(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Encoder {
            format: plan.format,
            dialect,
            table: t.table.clone(),
            columns: t.columns.clone(),
            kinds,
            keep,
            insert,
            open_rows: 0,
        }
    }

    fn header(&self, out: &mut Vec<u8>) {
        if self.format == FileFormat::Csv {
            for (i, c) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                csv_field(out, c.as_bytes(), true);
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    fn row(&mut self, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        match self.format {
            FileFormat::Csv => {
                for (n, &i) in self.keep.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    csv_value(out, &row[i]);
                }
                out.extend_from_slice(b"\r\n");
            }
            FileFormat::Jsonl => {
                out.push(b'{');
                for (n, (&i, kind)) in self.keep.iter().zip(&self.kinds).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    json_string(out, self.columns[n].as_bytes()).expect("column names are UTF-8");
                    out.push(b':');
                    json_value(out, &row[i], *kind).map_err(|why| {
                        Error::invalid(format!(
                            "table {} column {}: {why}",
                            self.table, self.columns[n]
                        ))
                    })?;
                }
                out.extend_from_slice(b"}\n");
            }
            FileFormat::Sql => {
                if self.open_rows == 0 {
                    out.extend_from_slice(self.insert.as_bytes());
                    out.extend_from_slice(b"\n  (");
                } else {
                    out.extend_from_slice(b",\n  (");
                }
                for (n, &i) in self.keep.iter().enumerate() {
                    if n > 0 {
                        out.extend_from_slice(b", ");
                    }
                    sql_value(out, &row[i], self.dialect);
                }
                out.push(b')');
                self.open_rows += 1;
                if self.open_rows == SQL_BATCH {
                    out.extend_from_slice(b";\n");
                    self.open_rows = 0;
                }
            }
            FileFormat::Sqlite => unreachable!("SQLite files are not streamed"),
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.format == FileFormat::Sql && self.open_rows > 0 {
            out.extend_from_slice(b";\n");
            self.open_rows = 0;
        }
    }
}

fn csv_field(out: &mut Vec<u8>, s: &[u8], force_quotes: bool) {
    // An empty string must be quoted ("" is not NULL), and so must PostgreSQL's
    // end-of-data marker, which COPY would stop at.
    let quote = force_quotes
        || s.is_empty()
        || s == b"\\."
        || s.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !quote {
        out.extend_from_slice(s);
        return;
    }
    dialect::push_quoted(out, s, b'"');
}

fn csv_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => {}
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Real(f) => out.extend_from_slice(real_text(*f).as_bytes()),
        Value::Text(t) => csv_field(out, t, false),
        Value::Blob(b) => out.extend_from_slice(hex_text(b).as_bytes()),
    }
}

/// A float as text that reads back to the same bits (`NaN`, `Infinity`, `-Infinity`
/// as PostgreSQL writes them).
pub(crate) fn real_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:?}")
    }
}

pub(crate) fn hex_text(b: &[u8]) -> String {
    format!("\\x{}", crate::repo::crypto::hex(b))
}

fn json_string(out: &mut Vec<u8>, s: &[u8]) -> std::result::Result<(), String> {
    let s = std::str::from_utf8(s)
        .map_err(|_| "holds text that is not valid UTF-8, which JSON cannot carry: export it as CSV, SQL or SQLite".to_string())?;
    serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())
}

/// Whether PostgreSQL's text form of a number is also a JSON number.
fn json_number(s: &[u8]) -> bool {
    let s = match s.strip_prefix(b"-") {
        Some(rest) => rest,
        None => s,
    };
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && s[0] == b'0') {
        return false;
    }
    let mut rest = &s[digits..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    if let Some(exp) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exp = exp
            .strip_prefix(b"+")
            .or_else(|| exp.strip_prefix(b"-"))
            .unwrap_or(exp);
        return !exp.is_empty() && exp.iter().all(|b| b.is_ascii_digit());
    }
    rest.is_empty()
}

fn json_value(out: &mut Vec<u8>, v: &Value, kind: Kind) -> std::result::Result<(), String> {
    match (v, kind) {
        (Value::Null, _) => out.extend_from_slice(b"null"),
        (Value::Integer(i), _) => out.extend_from_slice(i.to_string().as_bytes()),
        (Value::Real(f), _) if f.is_finite() => out.extend_from_slice(real_text(*f).as_bytes()),
        (Value::Real(f), _) => json_string(out, real_text(*f).as_bytes())?,
        (Value::Blob(b), _) => json_string(out, hex_text(b).as_bytes())?,
        (Value::Text(t), Kind::PgInteger | Kind::PgFloat | Kind::PgNumeric) if json_number(t) => {
            out.extend_from_slice(t)
        }
        (Value::Text(t), Kind::PgBool) if t == b"t" => out.extend_from_slice(b"true"),
        (Value::Text(t), Kind::PgBool) if t == b"f" => out.extend_from_slice(b"false"),
        // Already JSON (PostgreSQL checked it), kept as written (a `json` value keeps
        // its spacing) unless it spans lines, which JSON lines cannot hold.
        (Value::Text(t), Kind::PgJson) if !t.iter().any(|&b| b == b'\n' || b == b'\r') => {
            out.extend_from_slice(t)
        }
        (Value::Text(t), Kind::PgJson) => {
            let parsed: serde_json::Value = serde_json::from_slice(t)
                .map_err(|e| format!("holds JSON that does not parse: {e}"))?;
            serde_json::to_writer(&mut *out, &parsed).map_err(|e| e.to_string())?
        }
        (Value::Text(t), _) => json_string(out, t)?,
    }
    Ok(())
}

fn sql_value(out: &mut Vec<u8>, v: &Value, dialect: &dyn Dialect) {
    match v {
        Value::Null => out.extend_from_slice(b"NULL"),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Real(f) => {
            // SQLite stores NaN as NULL anyway; 9e999 reads as an infinity.
            let s = if f.is_nan() {
                "NULL".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 { "9e999" } else { "-9e999" }.to_string()
            } else {
                format!("{f:?}")
            };
            out.extend_from_slice(s.as_bytes())
        }
        Value::Text(t) => dialect.text_literal(t, out),
        Value::Blob(b) => {
            out.extend_from_slice(format!("X'{}'", crate::repo::crypto::hex(b)).as_bytes())
        }
    }
}

/// The statements that recreate an exported table, each ending in `;`.
fn table_sql(plan: &ExportPlan, t: &ExportTable) -> Result<TableSql> {
    let mut sql = dialect::of(plan.engine).table_sql(&t.entry, &t.table, &t.columns)?;
    for s in sql.before.iter_mut().chain(sql.after.iter_mut()) {
        if !s.ends_with(';') {
            s.push(';');
        }
    }
    Ok(sql)
}

/// The SQL script's opening: what it is, session settings, schemas and enum types.
fn sql_prologue(plan: &ExportPlan) -> String {
    let dialect = dialect::of(plan.engine);
    let mut s = format!(
        "-- tablesafe {}: snapshot {} of {} taken {}\n-- {} table(s); load with {}\n",
        env!("CARGO_PKG_VERSION"),
        plan.snapshot,
        plan.source,
        chrono::DateTime::from_timestamp_millis(plan.snapshot_time_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default(),
        plan.tables.len(),
        dialect.script_loader(),
    );
    let tables: Vec<&str> = plan.tables.iter().map(|t| t.table.as_str()).collect();
    s.push_str(&dialect.script_begin(&tables, &plan.manifest.enums));
    s
}

/// State of a streamed export.
struct Streaming<'a> {
    repo: &'a Repository,
    plan: &'a ExportPlan,
    progress: &'a dyn Progress,
    /// The table being read, and its encoder.
    current: Option<(usize, TableRows<'a>, Encoder, TableSql)>,
    next_table: usize,
    started: bool,
    finished: bool,
    foreign_keys: Vec<String>,
}

/// The export as a stream of bytes (CSV, JSON lines or SQL). A table that does not
/// match its checksum ends the stream with an error.
pub fn stream<'a>(
    repo: &'a Repository,
    plan: &'a ExportPlan,
    progress: &'a dyn Progress,
) -> Result<BoxStream<'a, Result<Vec<u8>>>> {
    if plan.format == FileFormat::Sqlite {
        return Err(Error::invalid(
            "a SQLite file is written to disk, not streamed: use write_file",
        ));
    }
    let state = Streaming {
        repo,
        plan,
        progress,
        current: None,
        next_table: 0,
        started: false,
        finished: false,
        foreign_keys: Vec::new(),
    };
    Ok(futures::stream::try_unfold(state, |mut s| async move {
        loop {
            if s.finished {
                return Ok(None);
            }
            let mut out = Vec::new();
            if !s.started {
                s.started = true;
                if s.plan.format == FileFormat::Sql {
                    out.extend_from_slice(sql_prologue(s.plan).as_bytes());
                }
            }
            if s.current.is_none() {
                if s.next_table == s.plan.tables.len() {
                    s.finished = true;
                    if s.plan.format == FileFormat::Sql {
                        for fk in &s.foreign_keys {
                            out.extend_from_slice(fk.as_bytes());
                            out.push(b'\n');
                        }
                        out.extend_from_slice(b"COMMIT;\n");
                    }
                    return Ok(Some((out, s)));
                }
                let i = s.next_table;
                s.next_table += 1;
                let t = &s.plan.tables[i];
                let enc = Encoder::new(s.plan, t);
                let sql = if s.plan.format == FileFormat::Sql {
                    let sql = table_sql(s.plan, t)?;
                    out.extend_from_slice(
                        format!("\n-- {}: {} rows\n", t.table, t.rows).as_bytes(),
                    );
                    for stmt in &sql.before {
                        out.extend_from_slice(stmt.as_bytes());
                        out.push(b'\n');
                    }
                    sql
                } else {
                    enc.header(&mut out);
                    TableSql {
                        before: Vec::new(),
                        after: Vec::new(),
                        foreign_keys: Vec::new(),
                    }
                };
                s.progress.table_started(&t.table, Some(t.rows));
                s.current = Some((i, TableRows::open(s.repo, &t.entry)?, enc, sql));
            }
            let (i, reader, enc, sql) = s.current.as_mut().expect("set above");
            s.progress.check_abort()?;
            match reader.next_batch().await? {
                Some((rows, bytes)) => {
                    let filter = &s.plan.tables[*i].filter;
                    let mut n = 0;
                    for row in rows.iter().filter(|r| filter.matches(r)) {
                        enc.row(row, &mut out)?;
                        n += 1;
                    }
                    s.plan.written[*i].fetch_add(n, AtomicOrdering::Relaxed);
                    s.progress.advanced(rows.len() as u64, bytes);
                }
                None => {
                    enc.end(&mut out);
                    for stmt in &sql.after {
                        out.extend_from_slice(stmt.as_bytes());
                        out.push(b'\n');
                    }
                    s.foreign_keys.append(&mut sql.foreign_keys);
                    s.progress.table_finished(&s.plan.tables[*i].table);
                    s.current = None;
                }
            }
            if !out.is_empty() {
                return Ok(Some((out, s)));
            }
        }
    })
    .boxed())
}

/// What [`write_file`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub path: String,
    pub format: FileFormat,
    pub tables: Vec<WrittenTable>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WrittenTable {
    pub table: String,
    pub rows: u64,
}

/// Writes the export to `path`, which must not exist yet: under a temporary name in the
/// same directory first, renamed into place once every table matched its checksum.
pub async fn write_file(
    repo: &Repository,
    plan: &ExportPlan,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Written> {
    if path.exists() {
        return Err(Error::invalid(format!(
            "{} already exists: choose another file name or remove it first",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} is not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "directory {} does not exist",
            dir.display()
        )));
    }
    let partial = dir.join(format!(
        ".{}.tablesafe-{}.partial",
        name.to_string_lossy(),
        crate::repo::crypto::hex(&rand::random::<[u8; 4]>())
    ));
    let result = async {
        if plan.format == FileFormat::Sqlite {
            write_sqlite(repo, plan, &partial, progress).await?;
        } else {
            use tokio::io::AsyncWriteExt;
            let file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
            let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let mut pieces = stream(repo, plan, progress)?;
            while let Some(piece) = pieces.try_next().await? {
                file.write_all(&piece)
                    .await
                    .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
            }
            file.flush()
                .await
                .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
            file.into_inner()
                .sync_all()
                .await
                .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
        }
        // No overwrite of a file that appeared meanwhile.
        if path.exists() {
            return Err(Error::invalid(format!(
                "{} appeared while the export ran: the export was not kept",
                path.display()
            )));
        }
        tokio::fs::rename(&partial, path)
            .await
            .map_err(|e| Error::io(format!("renaming into {}", path.display()), e))?;
        let bytes = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(Written {
            path: path.display().to_string(),
            format: plan.format,
            tables: plan
                .tables
                .iter()
                .zip(plan.written.iter())
                .map(|(t, n)| WrittenTable {
                    table: t.table.clone(),
                    rows: n.load(AtomicOrdering::Relaxed),
                })
                .collect(),
            bytes,
        })
    }
    .await;
    if result.is_err() {
        for p in [
            partial.clone(),
            PathBuf::from(format!("{}-journal", partial.display())),
            PathBuf::from(format!("{}-wal", partial.display())),
            PathBuf::from(format!("{}-shm", partial.display())),
        ] {
            let _ = tokio::fs::remove_file(p).await;
        }
    }
    result
}

async fn write_sqlite(
    repo: &Repository,
    plan: &ExportPlan,
    path: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    if plan.engine == Engine::Sqlite {
        // The restore path: same schema, indexes and checks.
        let opts = crate::restore::RestoreOptions {
            snapshot: plan.snapshot.to_string(),
            dest: Secret::new(format!("sqlite://{}", path.display())),
            selection: Selection {
                include: plan
                    .tables
                    .iter()
                    .map(|t| crate::selection::glob_literal(&t.table))
                    .collect(),
                exclude: Vec::new(),
                columns: plan
                    .tables
                    .iter()
                    .filter(|t| t.columns.len() != t.entry.stream_columns.len())
                    .map(|t| (t.table.clone(), t.columns.clone()))
                    .collect(),
            },
            rename: Default::default(),
            mode: crate::restore::Mode::Create,
            jobs: 1,
            parallel_min_bytes: u64::MAX,
            at_ms: None,
            filter: plan.filter.clone(),
            objects: Default::default(),
        };
        let restore_plan = crate::restore::plan(repo, &opts).await?;
        let done = crate::restore::execute(repo, &restore_plan, progress).await?;
        for (t, n) in plan.tables.iter().zip(plan.written.iter()) {
            let rows = done
                .iter()
                .find(|d| d.table == t.table)
                .map_or(0, |d| d.rows);
            n.store(rows, AtomicOrdering::Relaxed);
        }
        return Ok(());
    }
    let mut db = SqliteDb::open_write(path).await?;
    db.exec("BEGIN IMMEDIATE").await?;
    if plan.engine == Engine::Mysql {
        // Columns without a declared type keep every value exactly as it was read
        // (integers, floats, text, bytes); the primary key comes along.
        for (t, written) in plan.tables.iter().zip(plan.written.iter()) {
            let columns: Vec<SqliteColumn> = t
                .columns
                .iter()
                .map(|c| SqliteColumn {
                    name: c,
                    decl: "",
                    not_null: false,
                    kind: Kind::Sqlite,
                })
                .collect();
            let key = crate::merge::key_of(&t.entry);
            table_to_sqlite(repo, &mut db, t, &columns, &key, written, progress).await?;
        }
        db.exec("COMMIT").await?;
        return Ok(());
    }
    for (t, written) in plan.tables.iter().zip(plan.written.iter()) {
        let def = t.entry.schema.postgres.as_ref().ok_or_else(|| {
            Error::damaged(format!("table {} lacks its PostgreSQL definition", t.table))
        })?;
        let columns: Vec<SqliteColumn> = t
            .columns
            .iter()
            .filter_map(|c| def.columns.iter().find(|pc| &pc.name == c))
            .map(|c| {
                let kind = dialect::pg_kind(Some(c));
                SqliteColumn {
                    name: &c.name,
                    decl: match kind {
                        Kind::PgInteger | Kind::PgBool => "INTEGER",
                        Kind::PgFloat => "REAL",
                        Kind::PgBytea => "BLOB",
                        _ => "TEXT",
                    },
                    not_null: c.not_null,
                    kind,
                }
            })
            .collect();
        table_to_sqlite(repo, &mut db, t, &columns, &def.pk, written, progress).await?;
    }
    db.exec("COMMIT").await?;
    Ok(())
}

/// A column of a table written into a new SQLite file.
struct SqliteColumn<'a> {
    name: &'a str,
    /// The declared type; empty for none (every value keeps its own class).
    decl: &'static str,
    not_null: bool,
    /// How its values convert ([`sqlite_value`]).
    kind: Kind,
}

/// Creates `t` in the SQLite file with `columns` (and `key` as its primary key when all
/// of it is exported) and writes its rows.
async fn table_to_sqlite(
    repo: &Repository,
    db: &mut SqliteDb,
    t: &ExportTable,
    columns: &[SqliteColumn<'_>],
    key: &[String],
    written: &AtomicU64,
    progress: &dyn Progress,
) -> Result<()> {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut part = lite::quote(c.name);
            if !c.decl.is_empty() {
                part.push(' ');
                part.push_str(c.decl);
            }
            if c.not_null {
                part.push_str(" NOT NULL");
            }
            part
        })
        .collect();
    if !key.is_empty() && key.iter().all(|k| t.columns.contains(k)) {
        parts.push(format!(
            "PRIMARY KEY ({})",
            key.iter()
                .map(|k| lite::quote(k))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let table = lite::quote(&t.table);
    db.exec(&format!("CREATE TABLE {table} ({})", parts.join(", ")))
        .await?;
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns
            .iter()
            .map(|c| lite::quote(c.name))
            .collect::<Vec<_>>()
            .join(", "),
        vec!["?"; columns.len()].join(", ")
    );
    let keep: Vec<usize> = columns
        .iter()
        .filter_map(|c| t.entry.stream_columns.iter().position(|s| s == c.name))
        .collect();
    progress.table_started(&t.table, Some(t.rows));
    let mut reader = TableRows::open(repo, &t.entry)?;
    while let Some((rows, bytes)) = reader.next_batch().await? {
        progress.check_abort()?;
        for row in rows.iter().filter(|r| t.filter.matches(r)) {
            written.fetch_add(1, AtomicOrdering::Relaxed);
            let values = keep
                .iter()
                .zip(columns)
                .map(|(&i, c)| sqlite_value(&row[i], c.kind))
                .collect::<Result<Vec<_>>>()?;
            db.insert(&insert, values).await?;
        }
        progress.advanced(rows.len() as u64, bytes);
    }
    progress.table_finished(&t.table);
    Ok(())
}

/// A value as the SQLite value it becomes: PostgreSQL text by its column's kind;
/// everything else (MySQL's values, [`Kind::Sqlite`]) as it is.
fn sqlite_value(v: &Value, kind: Kind) -> Result<Value> {
    let Value::Text(t) = v else {
        return Ok(v.clone());
    };
    let text = || String::from_utf8_lossy(t);
    Ok(match kind {
        Kind::PgInteger => text()
            .parse::<i64>()
            .map(Value::Integer)
            .unwrap_or_else(|_| v.clone()),
        Kind::PgFloat => text()
            .parse::<f64>()
            .map(Value::Real)
            .unwrap_or_else(|_| v.clone()),
        Kind::PgBool => Value::Integer(i64::from(t == b"t")),
        Kind::PgBytea => {
            let hex = t
                .strip_prefix(b"\\x")
                .ok_or_else(|| Error::damaged("a bytea value is not in hex form".to_string()))?;
            if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(Error::damaged(
                    "a bytea value is not in hex form".to_string(),
                ));
            }
            Value::Blob(
                hex.chunks(2)
                    .map(|p| hex_digit(p[0]) * 16 + hex_digit(p[1]))
                    .collect(),
            )
        }
        _ => v.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_unescape() {
        let row = copy_fields(b"1\t\\N\ta\\tb\\\\c\\nd\t\\\\x0102\t\\101\\x42");
        assert_eq!(
            row,
            vec![
                Value::Text(b"1".to_vec()),
                Value::Null,
                Value::Text(b"a\tb\\c\nd".to_vec()),
                Value::Text(b"\\x0102".to_vec()),
                Value::Text(b"AB".to_vec()),
            ]
        );
    }

    #[test]
    fn csv_tells_null_from_empty_and_quotes_what_needs_it() {
        let mut out = Vec::new();
        for (i, v) in [
            Value::Null,
            Value::Text(Vec::new()),
            Value::Text(b"a,\"b\"\nc".to_vec()),
            Value::Text(b"\\.".to_vec()),
            Value::Blob(vec![0, 255]),
            Value::Real(f64::NEG_INFINITY),
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            csv_value(&mut out, v);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ",\"\",\"a,\"\"b\"\"\nc\",\"\\.\",\\x00ff,-Infinity"
        );
    }

    #[test]
    fn json_numbers_are_only_what_json_accepts() {
        for ok in [
            "0",
            "-1",
            "1.50",
            "1e10",
            "-2.5E-3",
            "123456789012345678901234567890.1",
        ] {
            assert!(json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "NaN",
            "Infinity",
            "-Infinity",
            "01",
            "1.",
            ".5",
            "1e",
            "",
            "-",
        ] {
            assert!(!json_number(bad.as_bytes()), "{bad}");
        }
    }
}
