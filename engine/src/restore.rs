//! Restore: plan (what would be created, replaced or appended — the dry run), then
//! execute the plan in one transaction, so a failure or damaged data changes nothing.

use crate::model::{Engine, PgEnum};
use crate::model::{RowDecoder, TableEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::secret::Secret;
use crate::selection::Selection;
use crate::source::SourceUrl;
use crate::source::postgres::{self as pg, PgDb, count_lines, split_name};
use crate::source::sqlite::{
    SqliteDb, create_table_for, quote, rename_create_index, rename_create_table,
};
use crate::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fail if a table exists.
    Create,
    /// Drop and recreate.
    Replace,
    /// Insert into the existing table.
    Append,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "create" => Ok(Mode::Create),
            "replace" => Ok(Mode::Replace),
            "append" => Ok(Mode::Append),
            other => Err(Error::invalid(format!(
                "unknown restore mode {other:?}: use create, replace or append"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `latest`, an id or a unique prefix.
    pub snapshot: String,
    pub dest: Secret<String>,
    pub selection: Selection,
    pub rename: BTreeMap<String, String>,
    pub mode: Mode,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Replace,
    Append,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTable {
    pub source_table: String,
    pub dest_table: String,
    pub action: Action,
    pub columns: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    #[serde(skip)]
    entry: TableEntry,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub snapshot: String,
    pub dest: String,
    pub tables: Vec<PlannedTable>,
    #[serde(skip)]
    dest_url: SourceUrl,
    #[serde(skip)]
    enums: Vec<PgEnum>,
}

impl RestorePlan {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Works out what a restore would do, checking the destination, without changing it.
pub async fn plan(repo: &Repository, opts: &RestoreOptions) -> Result<RestorePlan> {
    let (id, snapshot) = repo.find_snapshot(&opts.snapshot).await?;
    let url = SourceUrl::parse(&opts.dest)?;
    let dest_engine = match url {
        SourceUrl::Sqlite(_) => Engine::Sqlite,
        SourceUrl::Postgres(_) => Engine::Postgres,
    };
    if dest_engine != snapshot.source.engine {
        return Err(Error::invalid(format!(
            "snapshot {} is of a {:?} database and cannot be restored into {}",
            &id[..12],
            snapshot.source.engine,
            url.display()
        )));
    }
    for from in opts.rename.keys() {
        if !snapshot.tables.iter().any(|t| &t.name == from) {
            return Err(Error::invalid(format!(
                "--rename names table {from:?}, which is not in snapshot {}",
                &id[..12]
            )));
        }
    }
    let names = opts
        .selection
        .apply(snapshot.tables.iter().map(|t| t.name.as_str()))?;
    let mut dest = Dest::open(&url).await?;
    let mut tables = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in snapshot.tables.iter().filter(|t| names.contains(&t.name)) {
        let dest_table = opts
            .rename
            .get(&entry.name)
            .cloned()
            .unwrap_or_else(|| entry.name.clone());
        if dest_table.is_empty() {
            return Err(Error::invalid(format!(
                "--rename {}= needs a new name",
                entry.name
            )));
        }
        if !seen.insert(dest_table.to_lowercase()) {
            return Err(Error::invalid(format!(
                "two tables would be restored into {dest_table:?}"
            )));
        }
        let columns = match opts.selection.columns.get(&entry.name) {
            None => entry.stream_columns.clone(),
            Some(wanted) => {
                for c in wanted {
                    if !entry.stream_columns.contains(c) {
                        return Err(Error::invalid(format!(
                            "table {:?} in the snapshot has no column {c:?}",
                            entry.name
                        )));
                    }
                }
                let pk: Vec<&String> = match &entry.schema.postgres {
                    Some(def) => def.pk.iter().collect(),
                    None => entry
                        .schema
                        .columns
                        .iter()
                        .filter(|c| c.pk > 0)
                        .map(|c| &c.name)
                        .collect(),
                };
                entry
                    .stream_columns
                    .iter()
                    .filter(|c| wanted.contains(c) || pk.contains(c))
                    .cloned()
                    .collect()
            }
        };
        let exists = dest.table_exists(&dest_table).await?;
        let action = match (opts.mode, exists) {
            (Mode::Create, true) => {
                return Err(Error::invalid(format!(
                    "table {dest_table:?} already exists in {}: choose --mode replace or append, or --rename {}=NEW",
                    url.display(),
                    entry.name
                )));
            }
            (Mode::Append, false) => {
                return Err(Error::invalid(format!(
                    "table {dest_table:?} does not exist in {}: nothing to append to",
                    url.display()
                )));
            }
            (Mode::Create, false) | (Mode::Replace, false) => Action::Create,
            (Mode::Replace, true) => Action::Replace,
            (Mode::Append, true) => Action::Append,
        };
        tables.push(PlannedTable {
            source_table: entry.name.clone(),
            dest_table,
            action,
            columns,
            rows: entry.rows,
            bytes: entry.bytes,
            entry: entry.clone(),
        });
    }
    order_by_references(&mut tables);
    Ok(RestorePlan {
        snapshot: id,
        dest: url.display(),
        tables,
        dest_url: url,
        enums: snapshot.enums.clone(),
    })
}

/// Referenced tables first, so foreign keys restore in a valid order (checks are also
/// deferred to commit, which covers cycles).
fn order_by_references(tables: &mut Vec<PlannedTable>) {
    let mut ordered: Vec<PlannedTable> = Vec::with_capacity(tables.len());
    let mut rest = std::mem::take(tables);
    while !rest.is_empty() {
        let names: Vec<String> = rest.iter().map(|t| t.source_table.clone()).collect();
        let ready = rest
            .iter()
            .position(|t| {
                t.entry
                    .schema
                    .references
                    .iter()
                    .all(|r| r == &t.source_table || !names.contains(r))
            })
            .unwrap_or(0);
        ordered.push(rest.remove(ready));
    }
    *tables = ordered;
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredTable {
    pub table: String,
    pub rows: u64,
}

/// Runs a plan. Every table is checked against its checksum before the transaction
/// commits; on any error nothing in the destination changes.
pub async fn execute(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<Vec<RestoredTable>> {
    match &plan.dest_url {
        SourceUrl::Sqlite(path) => execute_sqlite(repo, plan, path, progress).await,
        SourceUrl::Postgres(_) => execute_postgres(repo, plan, progress).await,
    }
}

/// A destination database, for planning.
enum Dest {
    Sqlite(SqliteDb),
    /// A SQLite file that does not exist yet: planning must not create it.
    NewSqlite,
    Postgres(PgDb),
}

impl Dest {
    async fn open(url: &SourceUrl) -> Result<Dest> {
        Ok(match url {
            SourceUrl::Sqlite(path) if !path.exists() => Dest::NewSqlite,
            SourceUrl::Sqlite(path) => Dest::Sqlite(SqliteDb::open_write(path).await?),
            SourceUrl::Postgres(secret) => {
                Dest::Postgres(PgDb::connect(secret, url.display()).await?)
            }
        })
    }

    async fn table_exists(&mut self, name: &str) -> Result<bool> {
        match self {
            Dest::Sqlite(db) => db.table_exists(name).await,
            Dest::NewSqlite => Ok(false),
            Dest::Postgres(db) => {
                let (schema, table) = split_name(name);
                db.table_exists(&schema, &table).await
            }
        }
    }
}

async fn execute_sqlite(
    repo: &Repository,
    plan: &RestorePlan,
    path: &std::path::Path,
    progress: &dyn Progress,
) -> Result<Vec<RestoredTable>> {
    let mut db = SqliteDb::open_write(path).await?;
    db.exec("BEGIN IMMEDIATE").await?;
    let result = async {
        db.exec("PRAGMA defer_foreign_keys = ON").await?;
        let mut done = Vec::new();
        for t in &plan.tables {
            progress.table_started(&t.dest_table, Some(t.rows));
            let rows = restore_table(repo, &mut db, t, progress).await?;
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
            });
        }
        db.exec("COMMIT").await?;
        Ok(done)
    }
    .await;
    if result.is_err() {
        let _ = db.exec("ROLLBACK").await;
    }
    result
}

async fn execute_postgres(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<Vec<RestoredTable>> {
    let SourceUrl::Postgres(secret) = &plan.dest_url else {
        unreachable!("checked by the caller")
    };
    let mut db = PgDb::connect(secret, plan.dest.clone()).await?;
    db.exec("BEGIN").await?;
    let result = async {
        let mut schemas: Vec<String> = plan
            .tables
            .iter()
            .map(|t| split_name(&t.dest_table).0)
            .collect();
        schemas.sort();
        schemas.dedup();
        for s in &schemas {
            db.exec(&format!("CREATE SCHEMA IF NOT EXISTS {}", pg::quote(s)))
                .await?;
        }
        for e in &plan.enums {
            if !db.type_exists(&e.schema, &e.name).await? {
                db.exec(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    pg::quote(&e.schema)
                ))
                .await?;
                let labels: Vec<String> = e
                    .labels
                    .iter()
                    .map(|l| format!("'{}'", l.replace('\'', "''")))
                    .collect();
                db.exec(&format!(
                    "CREATE TYPE {} AS ENUM ({})",
                    pg::qualified(&e.schema, &e.name),
                    labels.join(", ")
                ))
                .await?;
            }
        }
        let mut done = Vec::new();
        let mut foreign_keys = Vec::new();
        for t in &plan.tables {
            progress.table_started(&t.dest_table, Some(t.rows));
            let rows = restore_pg_table(repo, &mut db, t, &mut foreign_keys, progress).await?;
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
            });
        }
        for fk in foreign_keys {
            db.exec(&fk).await?;
        }
        db.exec("COMMIT").await?;
        Ok(done)
    }
    .await;
    if result.is_err() {
        let _ = db.exec("ROLLBACK").await;
    }
    result
}

/// Keeps the tab-separated fields of a COPY text line whose flag is set (tabs inside
/// values are escaped as `\t`, so a raw tab always separates fields).
fn project_copy_line(line: &[u8], keep: &[bool], out: &mut Vec<u8>) {
    let mut first = true;
    for (field, k) in line.split(|&b| b == b'\t').zip(keep) {
        if *k {
            if !first {
                out.push(b'\t');
            }
            out.extend_from_slice(field);
            first = false;
        }
    }
    out.push(b'\n');
}

async fn restore_pg_table(
    repo: &Repository,
    db: &mut PgDb,
    t: &PlannedTable,
    foreign_keys: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    let def = e.schema.postgres.as_ref().ok_or_else(|| {
        Error::damaged(format!("table {} lacks its PostgreSQL definition", e.name))
    })?;
    let (schema, table) = split_name(&t.dest_table);
    let renamed = t.dest_table != e.name;
    let rel = pg::qualified(&schema, &table);
    let new_name = |old: &str| {
        if renamed {
            format!("{table}_{old}")
        } else {
            old.to_string()
        }
    };
    let creates = matches!(t.action, Action::Create | Action::Replace);
    let all = t.columns.len() == e.stream_columns.len();
    let mut seq_targets: Vec<(String, String, i64, bool)> = Vec::new();
    if creates {
        if matches!(t.action, Action::Replace) {
            db.exec(&format!("DROP TABLE {rel}")).await?;
        }
        // Serial columns: their sequence first (renamed along with the table).
        let mut renames = Vec::new();
        for (regclass, column, last, called) in &def.sequences {
            let col = def.columns.iter().find(|c| &c.name == column);
            if col.is_some_and(|c| c.identity.is_empty()) && t.columns.contains(column) {
                let target = if renamed {
                    pg::qualified(&schema, &format!("{table}_{column}_seq"))
                } else {
                    regclass.clone()
                };
                db.exec(&format!("CREATE SEQUENCE IF NOT EXISTS {target}"))
                    .await?;
                renames.push((regclass.clone(), target.clone()));
                seq_targets.push((target, String::new(), *last, *called));
            } else if t.columns.contains(column) {
                seq_targets.push((String::new(), column.clone(), *last, *called));
            }
        }
        db.exec(&pg::create_table_sql(
            def, &schema, &table, &t.columns, &renames,
        ))
        .await?;
        for (target, column, _, _) in &seq_targets {
            if column.is_empty() {
                let col = def
                    .sequences
                    .iter()
                    .find(|s| renames.iter().any(|(o, n)| n == target && o == &s.0))
                    .map(|s| s.1.clone());
                if let Some(col) = col {
                    db.exec(&format!(
                        "ALTER SEQUENCE {target} OWNED BY {rel}.{}",
                        pg::quote(&col)
                    ))
                    .await?;
                }
            }
        }
    }
    let cols = t
        .columns
        .iter()
        .map(|c| pg::quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let keep: Vec<bool> = e
        .stream_columns
        .iter()
        .map(|c| t.columns.contains(c))
        .collect();
    let mut copy = db
        .conn
        .copy_in_raw(&format!(
            // FREEZE (allowed because the table was created in this transaction) writes
            // the rows already frozen, sparing the first VACUUM a pass over them.
            "COPY {rel} ({cols}) FROM STDIN{}",
            if creates { " (FREEZE)" } else { "" }
        ))
        .await
        .map_err(|err| Error::Database {
            context: format!("COPY into {rel}"),
            source: err,
        })?;
    let mut hasher = blake3::Hasher::new();
    let mut rows = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let outcome: Result<()> = async {
        let mut chunks = crate::segment::table_stream(repo, e)?;
        while let Some(chunk) = chunks.next().await {
            progress.check_abort()?;
            let chunk = chunk?;
            hasher.update(&chunk);
            let n = count_lines(&chunk);
            rows += n;
            if all {
                copy.send(chunk.as_slice()).await.map_err(|err| Error::Database { context: format!("COPY into {rel}"), source: err })?;
            } else {
                carry.extend_from_slice(&chunk);
                let end = carry.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
                let mut out = Vec::with_capacity(end);
                for line in carry[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    project_copy_line(line, &keep, &mut out);
                }
                carry.drain(..end);
                copy.send(out.as_slice()).await.map_err(|err| Error::Database { context: format!("COPY into {rel}"), source: err })?;
            }
            progress.advanced(n, chunk.len() as u64);
        }
        if hasher.finalize().to_hex().as_str() != e.checksum || rows != e.rows || !carry.is_empty() {
            return Err(Error::damaged(format!(
                "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
                e.name, e.rows
            )));
        }
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        let _ = copy.abort("tablesafe: restore aborted").await;
        return Err(err);
    }
    copy.finish().await.map_err(|err| Error::Database {
        context: format!("COPY into {rel}"),
        source: err,
    })?;

    if creates {
        for (name, kind, condef) in &def.constraints {
            // Constraints on columns that were left out cannot come back.
            if !all && kind != "p" {
                continue;
            }
            let sql = pg::constraint_sql(&schema, &table, &new_name(name), condef);
            if kind == "f" {
                foreign_keys.push(sql)
            } else {
                db.exec(&sql).await?
            }
        }
        if all {
            for (name, idxdef) in &def.indexes {
                if let Some(sql) = pg::index_sql(idxdef, &schema, &table, &new_name(name)) {
                    db.exec(&sql).await?;
                }
            }
        }
        for (target, column, last, called) in &seq_targets {
            let seq = if column.is_empty() {
                target.clone()
            } else {
                db.serial_sequence(&rel, column).await?
            };
            db.setval(&seq, *last, *called).await?;
        }
    }
    Ok(rows)
}

async fn restore_table(
    repo: &Repository,
    db: &mut SqliteDb,
    t: &PlannedTable,
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    if matches!(t.action, Action::Create | Action::Replace) {
        if matches!(t.action, Action::Replace) {
            db.exec(&format!("DROP TABLE {}", quote(&t.dest_table)))
                .await?;
        }
        let create = if t.columns.len() == e.stream_columns.len() {
            rename_create_table(&e.schema.create_sql, &t.dest_table)?
        } else {
            let cols: Vec<_> = e
                .schema
                .columns
                .iter()
                .filter(|c| t.columns.contains(&c.name))
                .cloned()
                .collect();
            create_table_for(&t.dest_table, &cols)
        };
        db.exec(&create).await?;
    }
    let keep: Vec<bool> = e
        .stream_columns
        .iter()
        .map(|c| t.columns.contains(c))
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote(&t.dest_table),
        t.columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", "),
        vec!["?"; t.columns.len()].join(", ")
    );
    let mut decoder = RowDecoder::new(e.stream_columns.len());
    let mut hasher = blake3::Hasher::new();
    let mut rows = 0u64;
    let mut chunks = crate::segment::table_stream(repo, e)?;
    while let Some(chunk) = chunks.next().await {
        progress.check_abort()?;
        let chunk = chunk?;
        hasher.update(&chunk);
        decoder.push(&chunk);
        let mut batch = 0u64;
        while let Some(row) = decoder.next_row()? {
            let row = if t.columns.len() == e.stream_columns.len() {
                row
            } else {
                row.into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(v, _)| v)
                    .collect()
            };
            db.insert(&insert, row).await?;
            batch += 1;
        }
        rows += batch;
        progress.advanced(batch, chunk.len() as u64);
    }
    decoder.finish()?;
    if hasher.finalize().to_hex().as_str() != e.checksum || rows != e.rows {
        return Err(Error::damaged(format!(
            "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
            e.name, e.rows
        )));
    }
    if matches!(t.action, Action::Create | Action::Replace)
        && t.columns.len() == e.stream_columns.len()
    {
        for idx in &e.schema.indexes {
            let name = if t.dest_table == e.name {
                idx.name.clone()
            } else {
                format!("{}_{}", t.dest_table, idx.name)
            };
            db.exec(&rename_create_index(&idx.sql, &name, &t.dest_table)?)
                .await?;
        }
    }
    Ok(rows)
}
