//! SQLite: discovery, consistent reads, and writes for restore.
//!
//! A backup reads a private copy taken with SQLite's online backup API
//! ([`bulk::PrivateCopy`]), so the snapshot is a state the database was in at one
//! instant even while writers run, and writers wait at most for that file-speed copy.
//! Rows cross threads in batches ([`bulk`]); discovery stays on sqlx.

pub mod bulk;

use crate::error::Context;
use crate::model::{Column, Index, ObjectKind, Skipped, TableSchema, Value, key_columns};
use crate::{Error, Result};
use futures::{Stream, StreamExt};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Connection, Decode, Executor, Row, Sqlite, TypeInfo, ValueRef};
use std::path::{Path, PathBuf};

/// `"name"` with embedded quotes doubled: safe for any identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub struct SqliteDb {
    pub conn: SqliteConnection,
    pub path: PathBuf,
}

/// A table as discovered: schema plus what a read needs.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub schema: TableSchema,
    pub without_rowid: bool,
    /// Columns with stored data (generated columns excluded), in table order.
    pub data_columns: Vec<String>,
}

pub type Catalog = super::Catalog<TableInfo>;

discovered_table!(
    TableInfo,
    |t| key: key_columns(&t.schema.columns),
    columns: super::declared_types(&t.schema.columns),
);

impl super::SourceDb for SqliteDb {
    type Table = TableInfo;

    /// Starts the read transaction every later read of the backup belongs to.
    async fn begin_snapshot(&mut self) -> Result<()> {
        self.exec("BEGIN").await?;
        // A deferred transaction takes its snapshot at the first read.
        self.exec("SELECT count(*) FROM sqlite_master").await
    }

    /// Tables with columns, keys, indexes and foreign keys; objects not carried (views,
    /// triggers, virtual tables) go to `skipped` with the reason.
    async fn discover(&mut self) -> Result<Catalog> {
        let objects: Vec<(String, String, String, Option<String>)> =
            sqlx::query_as("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid")
                .fetch_all(&mut self.conn)
                .await
                .context(|| format!("reading the schema of {}", self.path.display()))?;
        let mut catalog = Catalog::default();
        for (kind, name, _, sql) in &objects {
            let sql = sql.clone().unwrap_or_default();
            match kind.as_str() {
                "table" if name.starts_with("sqlite_") => {}
                "table"
                    if sql
                        .trim_start()
                        .to_ascii_uppercase()
                        .starts_with("CREATE VIRTUAL") =>
                {
                    catalog.skipped.push(Skipped {
                        kind: ObjectKind::VirtualTable,
                        name: name.clone(),
                        reason: "virtual tables are not carried yet".into(),
                    });
                }
                "table" => {
                    let info = self.table_info(name, &sql, &objects).await?;
                    catalog.tables.push(info);
                }
                _ => {}
            }
        }
        catalog.objects = self.objects(&objects, &catalog.tables).await?;
        Ok(catalog)
    }

    async fn count_table(&mut self, t: &TableInfo) -> Result<(u64, bool)> {
        Ok((self.count_rows(&t.name).await?, true))
    }

    const ESTIMATE_IS_COUNT: bool = true;

    /// SQLite keeps no row counts; counting walks the table's b-tree without decoding
    /// rows, a small part of what reading it for a backup costs.
    async fn estimate_rows(&mut self, t: &TableInfo) -> Result<Option<u64>> {
        Ok(Some(self.count_rows(&t.name).await?))
    }
}

connection_statements!(SqliteDb, db => db.path.display());

/// The names a statement mentions: bare words and `"quoted"`, `` `quoted` `` and
/// `[quoted]` identifiers (lower-cased: SQLite compares names without case).
fn mentioned_names(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let close = match c {
            '"' => '"',
            '`' => '`',
            '[' => ']',
            '\'' => {
                // A string literal: not a name.
                while let Some(c) = chars.next() {
                    if c == '\'' && chars.next_if_eq(&'\'').is_none() {
                        break;
                    }
                }
                continue;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(word.to_lowercase());
                continue;
            }
            _ => continue,
        };
        let mut name = String::new();
        while let Some(c) = chars.next() {
            if c == close {
                if close != ']' && chars.next_if_eq(&close).is_some() {
                    name.push(close);
                    continue;
                }
                break;
            }
            name.push(c);
        }
        out.push(name.to_lowercase());
    }
    out
}

impl SqliteDb {
    /// Views and triggers (made after the data), the `AUTOINCREMENT` counters of
    /// `sqlite_sequence`, and the `user_version` and `application_id` pragmas.
    async fn objects(
        &mut self,
        master: &[(String, String, String, Option<String>)],
        tables: &[TableInfo],
    ) -> Result<Vec<crate::model::SchemaObject>> {
        use crate::model::{Phase, SchemaObject};
        let object = |kind: ObjectKind, name: &str, sql: Vec<String>| {
            SchemaObject::new(kind, name, Phase::After, sql)
        };
        let table_of = |word: &str| tables.iter().find(|t| t.name.to_lowercase() == word);
        let views: Vec<String> = master
            .iter()
            .filter(|(k, ..)| k == "view")
            .map(|(_, n, ..)| n.to_lowercase())
            .collect();
        let mut out = Vec::new();
        for (kind, name, _, sql) in master {
            let kind = match kind.as_str() {
                "view" => ObjectKind::View,
                "trigger" => ObjectKind::Trigger,
                _ => continue,
            };
            let sql = sql.clone().unwrap_or_default();
            let mut o = object(kind.clone(), name, vec![sql.clone()]);
            for word in mentioned_names(&sql) {
                if word == name.to_lowercase() {
                    continue;
                }
                if let Some(t) = table_of(&word) {
                    if !o.tables.contains(&t.name) {
                        o.tables.push(t.name.clone());
                    }
                } else if let Some(v) = master.iter().find(|(k, n, ..)| {
                    k == "view" && n.to_lowercase() == word && views.contains(&word)
                }) {
                    let key = format!("{} {}", ObjectKind::View, v.1);
                    if !o.needs.contains(&key) {
                        o.needs.push(key);
                    }
                }
            }
            o.drop = Some(format!(
                "DROP {} IF EXISTS {}",
                if kind == ObjectKind::View {
                    "VIEW"
                } else {
                    "TRIGGER"
                },
                quote(name)
            ));
            out.push(o);
        }
        let has_sequence = master
            .iter()
            .any(|(k, n, ..)| k == "table" && n == "sqlite_sequence");
        if has_sequence {
            let counters: Vec<(String, i64)> =
                sqlx::query_as("SELECT name, seq FROM sqlite_sequence ORDER BY name")
                    .fetch_all(&mut self.conn)
                    .await
                    .context(|| format!("reading sqlite_sequence of {}", self.path.display()))?;
            for (table, seq) in counters {
                let Some(t) = table_of(&table.to_lowercase()) else {
                    continue;
                };
                let lit = super::sql_string(&t.name);
                let mut o = object(
                    ObjectKind::Sequence,
                    &t.name,
                    vec![
                        format!(
                            "UPDATE sqlite_sequence SET seq = max(seq, {seq}) WHERE name = {lit}"
                        ),
                        format!(
                            "INSERT INTO sqlite_sequence (name, seq) SELECT {lit}, {seq} WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = {lit})"
                        ),
                    ],
                );
                o.tables.push(t.name.clone());
                out.push(o);
            }
        }
        for pragma in ["user_version", "application_id"] {
            let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut self.conn)
                .await
                .context(|| format!("reading PRAGMA {pragma} of {}", self.path.display()))?;
            if value != 0 {
                out.push(object(
                    ObjectKind::Setting,
                    pragma,
                    vec![format!("PRAGMA {pragma} = {value}")],
                ));
            }
        }
        Ok(crate::objects::order(out))
    }
}

impl SqliteDb {
    /// Opens an existing database read-only.
    pub async fn open_read(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::invalid(format!(
                "SQLite database {} does not exist",
                path.display()
            )));
        }
        SqliteDb::open(path, SqliteConnectOptions::new().read_only(true)).await
    }

    /// `PRAGMA journal_mode` of an existing database (`wal`, `delete`, …), read-only.
    pub async fn journal_mode(path: &Path) -> Result<String> {
        let mut db = SqliteDb::open_read(path).await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut db.conn)
            .await
            .context(|| format!("reading the journal mode of {}", path.display()))?;
        Ok(mode.to_lowercase())
    }

    /// Opens a backup's private copy ([`bulk::PrivateCopy`]) of the database at `shown`
    /// (the path messages name).
    pub async fn open_copy(copy: &Path, shown: &Path) -> Result<Self> {
        let mut db = SqliteDb::open(copy, SqliteConnectOptions::new().read_only(true)).await?;
        db.path = shown.to_path_buf();
        Ok(db)
    }

    /// Opens (creating if needed) a database to restore into.
    pub async fn open_write(path: &Path) -> Result<Self> {
        SqliteDb::open(path, SqliteConnectOptions::new().create_if_missing(true)).await
    }

    async fn open(path: &Path, opts: SqliteConnectOptions) -> Result<Self> {
        // Backups and restores run whole-table statements: sqlx's "slow statement"
        // warnings would only be noise in the user's terminal and logs.
        let opts = opts.filename(path).disable_statement_logging();
        let conn = SqliteConnection::connect_with(&opts)
            .await
            .context(|| format!("opening {}", path.display()))?;
        Ok(SqliteDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub async fn count_rows(&mut self, table: &str) -> Result<u64> {
        self.count(&format!("SELECT count(*) FROM {}", quote(table)))
            .await
    }

    pub async fn table_exists(&mut self, name: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(name)
        .fetch_one(&mut self.conn)
        .await
        .context(|| format!("looking up table {name}"))?;
        Ok(n > 0)
    }

    async fn table_info(
        &mut self,
        name: &str,
        sql: &str,
        objects: &[(String, String, String, Option<String>)],
    ) -> Result<TableInfo> {
        let cols: Vec<(String, String, i64, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?)",
        )
        .bind(name)
        .fetch_all(&mut self.conn)
        .await
        .context(|| format!("reading the columns of {name}"))?;
        let columns = cols
            .iter()
            .map(|(n, t, nn, d, pk, _)| Column {
                name: n.clone(),
                decl_type: t.clone(),
                not_null: *nn != 0,
                default: d.clone(),
                pk: *pk as u32,
            })
            .collect();
        let data_columns = cols
            .iter()
            .filter(|c| c.5 == 0)
            .map(|c| c.0.clone())
            .collect();
        let references: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)")
                .bind(name)
                .fetch_all(&mut self.conn)
                .await
                .context(|| format!("reading the foreign keys of {name}"))?;
        let indexes = objects
            .iter()
            .filter(|(k, _, tbl, sql)| k == "index" && tbl == name && sql.is_some())
            .map(|(_, n, _, sql)| Index {
                name: n.clone(),
                sql: sql.clone().unwrap_or_default(),
            })
            .collect();
        let without_rowid = self
            .conn
            .execute(format!("SELECT rowid FROM {} LIMIT 0", quote(name)).as_str())
            .await
            .is_err();
        Ok(TableInfo {
            name: name.to_string(),
            schema: TableSchema {
                columns,
                create_sql: sql.to_string(),
                indexes,
                references,
                all_columns: true,
                postgres: None,
            },
            without_rowid,
            data_columns,
        })
    }

    /// The query that reads `table` (only `columns`) in primary-key order (rowid order
    /// for tables without one); run it with [`SqliteDb::rows`].
    pub fn rows_sql(table: &TableInfo, columns: &[String]) -> String {
        let mut order: Vec<String> = key_columns(&table.schema.columns)
            .iter()
            .map(|c| quote(c))
            .collect();
        if !table.without_rowid {
            // Ties (NULLs in a legacy nullable primary key) still come in a fixed order.
            order.push("rowid".into());
        }
        format!(
            "SELECT {} FROM {}{}",
            columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
            quote(&table.name),
            if order.is_empty() {
                String::new()
            } else {
                format!(" ORDER BY {}", order.join(", "))
            }
        )
    }

    /// Streams the rows of a [`SqliteDb::rows_sql`] query as values exactly as stored.
    pub fn rows<'a>(
        &'a mut self,
        sql: &'a str,
        columns: usize,
    ) -> impl Stream<Item = Result<Vec<Value>>> + 'a {
        sqlx::query(sql).fetch(&mut self.conn).map(move |row| {
            row.context(|| format!("reading rows: {sql}"))
                .and_then(|r| row_values(&r, columns))
        })
    }

    /// Inserts one row with a prepared (cached) `INSERT`.
    pub async fn insert(&mut self, sql: &str, row: Vec<Value>) -> Result<()> {
        let mut q = sqlx::query(sql);
        for v in row {
            q = match v {
                Value::Null => q.bind(None::<i64>),
                Value::Integer(i) => q.bind(i),
                Value::Real(f) => q.bind(f),
                Value::Text(b) => q.bind(String::from_utf8(b).map_err(|_| {
                    Error::invalid("a TEXT value is not valid UTF-8; restoring such values is not supported yet")
                })?),
                Value::Blob(b) => q.bind(b),
            };
        }
        q.execute(&mut self.conn)
            .await
            .map(|_| ())
            .context(|| format!("inserting: {sql}"))
    }
}

pub(crate) fn row_values(row: &SqliteRow, n: usize) -> Result<Vec<Value>> {
    (0..n)
        .map(|i| {
            let raw = row
                .try_get_raw(i)
                .map_err(|e| Error::Other(e.to_string()))?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_string();
            let err =
                |e: sqlx::error::BoxDynError| Error::Other(format!("decoding a {kind} value: {e}"));
            Ok(match kind.as_str() {
                "INTEGER" => Value::Integer(<i64 as Decode<Sqlite>>::decode(raw).map_err(err)?),
                "REAL" => Value::Real(<f64 as Decode<Sqlite>>::decode(raw).map_err(err)?),
                "TEXT" => Value::Text(<Vec<u8> as Decode<Sqlite>>::decode(raw).map_err(err)?),
                _ => Value::Blob(<Vec<u8> as Decode<Sqlite>>::decode(raw).map_err(err)?),
            })
        })
        .collect()
}

/// What a user should know about the source at `path` in `journal_mode` (see
/// [`SqliteDb::journal_mode`]): nothing in WAL mode; otherwise that the application's
/// writes wait while a backup copies the file, and how to switch.
pub fn journal_note(path: &Path, journal_mode: &str) -> Option<String> {
    (!journal_mode.eq_ignore_ascii_case("wal")).then(|| {
        format!(
            "Not in WAL mode (journal_mode={journal_mode}): while a backup copies the file \
             (as long as `sqlite3 .backup` takes: seconds per GB), the application's \
             writes wait; in WAL mode they never wait for a backup. Switch once, while \
             nothing else writes: \
             sqlite3 {} 'PRAGMA journal_mode=WAL' (it stays set in the file).",
            path.display()
        )
    })
}

/// A token of SQL text: its byte range and whether it is an identifier or word.
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    word: bool,
}

/// Splits SQL into words/identifiers (bare, "quoted", [bracketed], `backticked`),
/// string literals and single punctuation characters; skips whitespace and comments.
fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else if matches!(c, b'"' | b'`' | b'\'') {
            let start = i;
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push(Token {
                start,
                end: i,
                word: c != b'\'',
            });
        } else if c == b'[' {
            let start = i;
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push(Token {
                start,
                end: i,
                word: true,
            });
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Token {
                start,
                end: i,
                word: true,
            });
        } else {
            out.push(Token {
                start: i,
                end: i + 1,
                word: false,
            });
            i += 1;
        }
    }
    out
}

fn is_kw(sql: &str, t: &Token, kw: &str) -> bool {
    t.word && sql[t.start..t.end].eq_ignore_ascii_case(kw)
}

/// Index of the object-name token after `CREATE [TEMP] <kind> [IF NOT EXISTS]`, and
/// whether it is schema-qualified (`main.x`: the name is then two tokens later).
fn name_token(sql: &str, toks: &[Token], kind: &str) -> Option<usize> {
    let mut i = 0;
    if !is_kw(sql, toks.get(i)?, "CREATE") {
        return None;
    }
    i += 1;
    while !is_kw(sql, toks.get(i)?, kind) {
        i += 1;
        if i > 3 {
            return None;
        }
    }
    i += 1;
    if is_kw(sql, toks.get(i)?, "IF") {
        i += 3;
    }
    if toks.get(i + 1).map(|t| &sql[t.start..t.end]) == Some(".") {
        i += 2;
    }
    toks.get(i).filter(|t| t.word).map(|_| i)
}

fn replace_spans(sql: &str, mut spans: Vec<(usize, usize, String)>) -> String {
    spans.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut out = sql.to_string();
    for (start, end, with) in spans {
        out.replace_range(start..end, &with);
    }
    out
}

/// Where the name at token `i` begins, including a schema prefix (`main.`), which is
/// replaced along with the name: the restore decides the database.
fn name_start(sql: &str, toks: &[Token], i: usize) -> usize {
    if i >= 2 && &sql[toks[i - 1].start..toks[i - 1].end] == "." {
        toks[i - 2].start
    } else {
        toks[i].start
    }
}

/// `CREATE TABLE old (…)` → `CREATE TABLE "new" (…)`, anything else untouched.
pub fn rename_create_table(sql: &str, new_name: &str) -> Result<String> {
    let toks = tokens(sql);
    let i = name_token(sql, &toks, "TABLE")
        .ok_or_else(|| Error::damaged(format!("cannot parse table definition {sql:?}")))?;
    let start = name_start(sql, &toks, i);
    Ok(replace_spans(
        sql,
        vec![(start, toks[i].end, quote(new_name))],
    ))
}

/// `CREATE INDEX idx ON old (…)` → `CREATE INDEX "new_name" ON "new_table" (…)`.
pub fn rename_create_index(sql: &str, new_index: &str, new_table: &str) -> Result<String> {
    let toks = tokens(sql);
    let bad = || Error::damaged(format!("cannot parse index definition {sql:?}"));
    let i = name_token(sql, &toks, "INDEX").ok_or_else(bad)?;
    let on = (i + 1..toks.len())
        .find(|&j| is_kw(sql, &toks[j], "ON"))
        .ok_or_else(bad)?;
    let table = toks.get(on + 1).filter(|t| t.word).ok_or_else(bad)?;
    let start = name_start(sql, &toks, i);
    Ok(replace_spans(
        sql,
        vec![
            (start, toks[i].end, quote(new_index)),
            (table.start, table.end, quote(new_table)),
        ],
    ))
}

/// An identifier's text without its quotes ("x", [x], `x`; doubled quotes undone).
fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(b'['), Some(b']')) if s.len() >= 2 => s[1..s.len() - 1].to_string(),
        (Some(&q @ (b'"' | b'`')), Some(&e)) if s.len() >= 2 && q == e => {
            let q = q as char;
            s[1..s.len() - 1].replace(&format!("{q}{q}"), &q.to_string())
        }
        _ => s.to_string(),
    }
}

/// The foreign-key clauses of a `CREATE TABLE`: each one's byte range to remove (with
/// its separating comma or leading whitespace) and the table it references (unquoted,
/// without a schema).
fn foreign_key_clauses(sql: &str) -> Vec<(usize, usize, String)> {
    let toks = tokens(sql);
    let text = |t: &Token| &sql[t.start..t.end];
    let Some(name) = name_token(sql, &toks, "TABLE") else {
        return Vec::new();
    };
    let Some(open) = toks
        .get(name + 1)
        .filter(|t| text(t) == "(")
        .map(|_| name + 1)
    else {
        return Vec::new();
    };
    // The definitions between the outer parentheses: (first token, end, comma before).
    let mut elements: Vec<(usize, usize, Option<usize>)> = Vec::new();
    let (mut depth, mut start, mut comma) = (0usize, open + 1, None);
    for (i, t) in toks.iter().enumerate().skip(open + 1) {
        match text(t) {
            "(" => depth += 1,
            ")" if depth > 0 => depth -= 1,
            ")" | "," if depth == 0 => {
                elements.push((start, i, comma));
                if text(t) == ")" {
                    break;
                }
                (start, comma) = (i + 1, Some(i));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (first, end, comma) in elements {
        let el = &toks[first..end];
        let kw = |j: usize, k: &str| el.get(j).is_some_and(|t| is_kw(sql, t, k));
        let table_fk = kw(0, "FOREIGN") || (kw(0, "CONSTRAINT") && kw(2, "FOREIGN"));
        let mut depth = 0usize;
        let mut j = if table_fk { 0 } else { 1 };
        while j < el.len() {
            match text(&el[j]) {
                "(" => depth += 1,
                ")" => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > 0 || !kw(j, "REFERENCES") {
                j += 1;
                continue;
            }
            let clause_start = if j >= 2 && kw(j - 2, "CONSTRAINT") {
                j - 2
            } else {
                j
            };
            // The parent, possibly `schema.parent`.
            let mut k = j + 1;
            if el.get(k + 1).is_some_and(|t| text(t) == ".") {
                k += 2;
            }
            let Some(parent) = el.get(k).filter(|t| t.word) else {
                break;
            };
            let parent = unquote(text(parent));
            let mut last = k;
            k += 1;
            if el.get(k).is_some_and(|t| text(t) == "(") {
                while k < el.len() && text(&el[k]) != ")" {
                    k += 1;
                }
                last = k.min(el.len() - 1);
                k += 1;
            }
            loop {
                if kw(k, "ON") && (kw(k + 1, "DELETE") || kw(k + 1, "UPDATE")) {
                    k += 2;
                    if kw(k, "SET") || kw(k, "NO") {
                        k += 1;
                    }
                    last = k;
                    k += 1;
                } else if kw(k, "MATCH") {
                    last = k + 1;
                    k += 2;
                } else if kw(k, "DEFERRABLE") || (kw(k, "NOT") && kw(k + 1, "DEFERRABLE")) {
                    k += if kw(k, "NOT") { 2 } else { 1 };
                    last = k - 1;
                    if kw(k, "INITIALLY") {
                        last = k + 1;
                        k += 2;
                    }
                } else {
                    break;
                }
            }
            let last = last.min(el.len() - 1);
            let from = match (table_fk, comma) {
                (true, Some(c)) => toks[c].start,
                (true, None) => el[0].start,
                (false, _) if clause_start > 0 => el[clause_start - 1].end,
                (false, _) => el[clause_start].start,
            };
            out.push((from, el[last].end, parent));
            j = k;
        }
    }
    out
}

/// The tables a `CREATE TABLE`'s foreign keys reference (unquoted, without a schema).
pub fn foreign_key_parents(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, _, p) in foreign_key_clauses(sql) {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&p)) {
            out.push(p);
        }
    }
    out
}

/// A `CREATE TABLE` without its foreign keys to the `parents` named (matched
/// case-insensitively, as SQLite does): table constraints with their comma, column
/// constraints with their leading space; every other byte unchanged.
pub fn drop_foreign_keys(sql: &str, parents: &[String]) -> String {
    let spans = foreign_key_clauses(sql)
        .into_iter()
        .filter(|(_, _, p)| parents.iter().any(|m| m.eq_ignore_ascii_case(p)))
        .map(|(a, b, _)| (a, b, String::new()))
        .collect();
    replace_spans(sql, spans)
}

/// A CREATE TABLE for a subset of columns, from the discovered column list (used when
/// only some columns were backed up; table constraints naming other columns are lost
/// and the primary key is kept).
pub fn create_table_for(name: &str, columns: &[Column]) -> String {
    let pk = key_columns(columns);
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut s = quote(&c.name);
            if !c.decl_type.is_empty() {
                s.push(' ');
                s.push_str(&c.decl_type);
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            if let Some(d) = &c.default {
                s.push_str(" DEFAULT ");
                s.push_str(d);
            }
            s
        })
        .collect();
    if !pk.is_empty() {
        parts.push(format!(
            "PRIMARY KEY ({})",
            pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        ));
    }
    format!("CREATE TABLE {} ({})", quote(name), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_tables_with_any_kind_of_name() {
        assert_eq!(
            rename_create_table("CREATE TABLE t (a)", "n").unwrap(),
            "CREATE TABLE \"n\" (a)"
        );
        assert_eq!(
            rename_create_table(
                "create table if not exists \"we\"\"ird (\" (a int)",
                "new \"x\""
            )
            .unwrap(),
            "create table if not exists \"new \"\"x\"\"\" (a int)"
        );
        assert_eq!(
            rename_create_table("CREATE TABLE main.[a b](x)", "c").unwrap(),
            "CREATE TABLE \"c\"(x)"
        );
        assert_eq!(
            rename_create_table("CREATE TABLE `t`(x) WITHOUT ROWID", "u").unwrap(),
            "CREATE TABLE \"u\"(x) WITHOUT ROWID"
        );
    }

    fn drop(sql: &str, parents: &[&str]) -> String {
        let parents: Vec<String> = parents.iter().map(|p| p.to_string()).collect();
        drop_foreign_keys(sql, &parents)
    }

    #[test]
    fn drops_table_level_foreign_keys_with_their_comma() {
        let sql = "CREATE TABLE orders (\n  id INTEGER PRIMARY KEY,\n  cid INT NOT NULL,\n  total REAL CHECK (total >= 0),\n  CONSTRAINT fk_c FOREIGN KEY (cid) REFERENCES customers(id) ON DELETE SET NULL ON UPDATE NO ACTION MATCH SIMPLE DEFERRABLE INITIALLY DEFERRED\n)";
        assert_eq!(foreign_key_parents(sql), vec!["customers"]);
        assert_eq!(
            drop(sql, &["Customers"]),
            "CREATE TABLE orders (\n  id INTEGER PRIMARY KEY,\n  cid INT NOT NULL,\n  total REAL CHECK (total >= 0)\n)"
        );
        assert_eq!(drop(sql, &["other"]), sql);
        assert_eq!(
            drop(
                "CREATE TABLE o(a, b, UNIQUE(a), FOREIGN KEY(a,b) REFERENCES main.\"cu\"\"st\"(x, y), CHECK(a > 0))",
                &["cu\"st"]
            ),
            "CREATE TABLE o(a, b, UNIQUE(a), CHECK(a > 0))"
        );
    }

    #[test]
    fn drops_column_level_foreign_keys_keeping_other_constraints() {
        assert_eq!(
            drop(
                "CREATE TABLE o (cid INTEGER REFERENCES customers(id) NOT NULL DEFAULT 1, n TEXT COLLATE NOCASE)",
                &["customers"]
            ),
            "CREATE TABLE o (cid INTEGER NOT NULL DEFAULT 1, n TEXT COLLATE NOCASE)"
        );
        assert_eq!(
            drop(
                "CREATE TABLE o (cid INT CONSTRAINT fk REFERENCES [customers] ON DELETE CASCADE NOT DEFERRABLE NOT NULL, x)",
                &["customers"]
            ),
            "CREATE TABLE o (cid INT NOT NULL, x)"
        );
        assert_eq!(
            drop(
                "CREATE TABLE `o` (cid INT REFERENCES `customers`, pid INT REFERENCES products (id) CHECK (pid > 0), PRIMARY KEY (cid, pid))",
                &["customers"]
            ),
            "CREATE TABLE `o` (cid INT, pid INT REFERENCES products (id) CHECK (pid > 0), PRIMARY KEY (cid, pid))"
        );
    }

    #[test]
    fn keeps_foreign_keys_to_present_tables() {
        let sql = "CREATE TABLE o (a REFERENCES c, b, FOREIGN KEY (b) REFERENCES p (id))";
        assert_eq!(foreign_key_parents(sql), vec!["c", "p"]);
        assert_eq!(drop(sql, &["p"]), "CREATE TABLE o (a REFERENCES c, b)");
        assert_eq!(
            drop(sql, &["c"]),
            "CREATE TABLE o (a, b, FOREIGN KEY (b) REFERENCES p (id))"
        );
        assert_eq!(
            drop("CREATE TABLE o AS SELECT 1", &["c"]),
            "CREATE TABLE o AS SELECT 1"
        );
    }

    #[test]
    fn renames_indexes_and_their_table() {
        assert_eq!(
            rename_create_index(
                "CREATE UNIQUE INDEX \"i on\" ON \"t\" (a, \"ON\")",
                "n_i",
                "n"
            )
            .unwrap(),
            "CREATE UNIQUE INDEX \"n_i\" ON \"n\" (a, \"ON\")"
        );
    }
}
