//! Restoring rows into a table that exists, by key: `upsert` (backup rows replace the
//! rows with the same key, missing ones are inserted), `skip-existing` (only rows whose
//! key is missing are inserted) and `replace-rows` (the rows the restore covers — the
//! whole table, or those matching `--where` — become exactly the backup's: upserted,
//! and rows in that scope that the backup lacks are deleted). Rows of the destination
//! outside the restore's scope are never touched.
//!
//! The backup's rows (filtered and checked against the table's checksum as in every
//! restore) are loaded into a temporary table inside the restore's transaction; the
//! changes are then a few set-wise statements, and a dry run ([`crate::restore::diff`])
//! is the same work rolled back, so the counts it shows are exactly what a run does.
//! Rows are matched on the snapshot's primary key; a row counts as updated when any
//! restored column differs (compared as text on PostgreSQL, so `json` and floats compare
//! exactly; with SQLite's `IS NOT`).

use crate::filter::BoundFilter;
use crate::model::{Identity, TableEntry};
use crate::source::mysql::{self as my, MyDb};
use crate::source::postgres::{self as pg, PgDb, split_name};
use crate::source::sqlite::{self as lite, SqliteDb};
use crate::{Error, Result};
use futures::StreamExt;

pub use tablesafe_types::{MergeCounts, MergeMode};

/// The primary key of a snapshot's table, which merges match on.
pub(crate) fn key_of(e: &TableEntry) -> Vec<String> {
    e.schema.primary_key()
}

/// One table's merge, as planned.
pub(crate) struct MergeTable<'a> {
    pub entry: &'a TableEntry,
    pub dest: &'a str,
    pub columns: &'a [String],
    pub key: Vec<String>,
    pub mode: MergeMode,
    pub filter: &'a BoundFilter,
}

const STAGE: &str = "tablesafe_merge_rows";
const SCOPE: &str = "tablesafe_merge_scope";

fn join<S: AsRef<str>>(cols: &[S], f: impl Fn(&str) -> String, sep: &str) -> String {
    cols.iter()
        .map(|c| f(c.as_ref()))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The temporary table a merge's rows load into (`COPY … FROM STDIN`), with the
/// destination's column types; dropped at commit.
pub(crate) const PG_STAGE: &str = STAGE;

/// The error of a destination table whose columns do not fit the backup's rows.
fn cannot_take(t: &MergeTable<'_>, e: Error) -> Error {
    Error::invalid(format!(
        "{} cannot take the backup's rows (it needs the columns {}): {e}",
        t.dest,
        t.columns.join(", ")
    ))
}

/// Creates [`PG_STAGE`] for one table, inside the caller's transaction.
pub(crate) async fn prepare_postgres(db: &mut PgDb, t: &MergeTable<'_>) -> Result<()> {
    let (schema, table) = split_name(t.dest);
    let rel = pg::qualified(&schema, &table);
    let cols = join(t.columns, pg::quote, ", ");
    db.exec(&format!(
        "DROP TABLE IF EXISTS pg_temp.{STAGE}, pg_temp.{SCOPE}"
    ))
    .await?;
    db.exec(&format!(
        "CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {cols} FROM {rel} WITH NO DATA"
    ))
    .await
    .map_err(|e| cannot_take(t, e))
}

/// Counts and applies a merge of the rows loaded into the engine's staging table: one
/// flow for every engine, each writing the statements in its own SQL.
pub(crate) async fn apply<D: MergeSql>(db: &mut D, t: &MergeTable<'_>) -> Result<MergeCounts> {
    let scoped = !t.filter.is_empty();
    let sql = D::statements(t, scoped);
    let mut counts = MergeCounts {
        inserted: db.count(&sql.count_new).await?,
        updated: db.count(&sql.count_changed).await?,
        ..Default::default()
    };
    counts.unchanged = db.count(&sql.count_matched).await? - counts.updated;
    if t.mode == MergeMode::ReplaceRows {
        if scoped {
            db.fill_scope(t).await?;
        }
        counts.deleted = db.count(&sql.count_gone).await?;
        if counts.deleted > 0 {
            db.exec(&sql.delete_gone).await?;
        }
    }
    if let Some(update) = &sql.update_changed
        && t.mode != MergeMode::SkipExisting
        && counts.updated > 0
    {
        db.exec(update).await?;
    }
    if counts.inserted > 0 {
        db.exec(&sql.insert_new).await?;
    }
    for drop in &sql.cleanup {
        db.exec(drop).await?;
    }
    Ok(counts)
}

/// One engine's statements for [`apply`]: `s` is the staged backup rows ([`STAGE`]),
/// `d` the destination table, `c` the keys in the restore's scope ([`SCOPE`]).
pub(crate) struct Statements {
    /// Staged rows whose key the destination lacks.
    count_new: String,
    /// Rows whose key both have and whose values differ.
    count_changed: String,
    /// Rows whose key both have.
    count_matched: String,
    /// `replace-rows`: destination rows in scope that the backup lacks, and their delete.
    count_gone: String,
    delete_gone: String,
    /// None when there is no column to set (every column is in the key, or may not be
    /// written).
    update_changed: Option<String>,
    insert_new: String,
    cleanup: Vec<String>,
}

/// What [`apply`] needs of a destination engine.
pub(crate) trait MergeSql: crate::source::RunSql {
    /// The statements for one table; `scoped`: the restore has a filter and
    /// [`MergeSql::fill_scope`] runs before `count_gone`.
    fn statements(t: &MergeTable<'_>, scoped: bool) -> Statements;
    /// Fills [`SCOPE`] with the keys of the destination's rows that match the filter.
    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send;
}

/// Where the key's columns stand in the backup's rows.
fn key_positions(t: &MergeTable<'_>) -> Vec<usize> {
    t.key
        .iter()
        .filter_map(|k| t.entry.stream_columns.iter().position(|c| c == k))
        .collect()
}

/// The non-key columns, which decide whether a row changed.
fn value_columns<'a>(t: &'a MergeTable<'_>) -> Vec<&'a String> {
    t.columns.iter().filter(|c| !t.key.contains(c)).collect()
}

impl MergeSql for PgDb {
    fn statements(t: &MergeTable<'_>, scoped: bool) -> Statements {
        let (schema, table) = split_name(t.dest);
        let rel = pg::qualified(&schema, &table);
        let q = |c: &str| pg::quote(c);
        let cols = join(t.columns, q, ", ");
        let on = join(&t.key, |k| format!("d.{} = s.{}", q(k), q(k)), " AND ");
        let values = value_columns(t);
        let differs = if values.is_empty() {
            "false".to_string()
        } else {
            let text = |alias: &str| join(&values, |c| format!("{alias}.{}::text", q(c)), ", ");
            format!("({}) IS DISTINCT FROM ({})", text("s"), text("d"))
        };
        let absent = format!("NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {on})");
        let (gone, delete_gone) = if scoped {
            let on_scope = join(&t.key, |k| format!("d.{} = c.{}", q(k), q(k)), " AND ");
            (
                format!("SELECT 1 FROM {rel} d JOIN {SCOPE} c ON {on_scope} WHERE {absent}"),
                format!(
                    "DELETE FROM {rel} d USING {SCOPE} c WHERE ({}) = ({}) AND {absent}",
                    join(&t.key, |k| format!("d.{}", q(k)), ", "),
                    join(&t.key, |k| format!("c.{}", q(k)), ", ")
                ),
            )
        } else {
            (
                format!("SELECT 1 FROM {rel} d WHERE {absent}"),
                format!("DELETE FROM {rel} d WHERE {absent}"),
            )
        };
        // Identity columns GENERATED ALWAYS cannot be set by an UPDATE.
        let identity_always: Vec<&str> = t
            .entry
            .schema
            .postgres
            .iter()
            .flat_map(|d| &d.columns)
            .filter(|c| c.identity == Identity::Always)
            .map(|c| c.name.as_str())
            .collect();
        let set: Vec<String> = values
            .iter()
            .filter(|c| !identity_always.contains(&c.as_str()))
            .map(|c| format!("{} = s.{}", q(c), q(c)))
            .collect();
        let missing = format!("NOT EXISTS (SELECT 1 FROM {rel} d WHERE {on})");
        Statements {
            count_new: format!("SELECT count(*) FROM {STAGE} s WHERE {missing}"),
            count_changed: format!(
                "SELECT count(*) FROM {STAGE} s JOIN {rel} d ON {on} WHERE {differs}"
            ),
            count_matched: format!("SELECT count(*) FROM {STAGE} s JOIN {rel} d ON {on}"),
            count_gone: format!("SELECT count(*) FROM ({gone}) x"),
            delete_gone,
            update_changed: (!set.is_empty()).then(|| {
                format!(
                    "UPDATE {rel} d SET {} FROM {STAGE} s WHERE {on} AND {differs}",
                    set.join(", ")
                )
            }),
            insert_new: format!(
                "INSERT INTO {rel} ({cols}) OVERRIDING SYSTEM VALUE SELECT {} FROM {STAGE} s WHERE {missing}",
                join(t.columns, |c| format!("s.{}", q(c)), ", ")
            ),
            cleanup: vec![format!(
                "DROP TABLE IF EXISTS pg_temp.{STAGE}, pg_temp.{SCOPE}"
            )],
        }
    }

    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send {
        pg_scope(self, t)
    }
}

/// The keys of the destination's rows that match the restore's filter, evaluated by the
/// same code on the same text form as the backup's rows, into a temporary table.
async fn pg_scope(db: &mut PgDb, t: &MergeTable<'_>) -> Result<()> {
    let (schema, table) = split_name(t.dest);
    let rel = pg::qualified(&schema, &table);
    let q = |c: &str| pg::quote(c);
    let stream_cols = join(&t.entry.stream_columns, q, ", ");
    let key_pos = key_positions(t);
    let sql = format!("COPY (SELECT {stream_cols} FROM {rel}) TO STDOUT");
    let mut keys = Vec::new();
    {
        let mut out = db.conn.copy_out_raw(&sql).await.map_err(|e| {
            Error::invalid(format!(
                "{} lacks a column the filter or the backup needs ({}): {e}",
                t.dest,
                t.entry.stream_columns.join(", ")
            ))
        })?;
        let mut carry: Vec<u8> = Vec::new();
        while let Some(piece) = out.next().await {
            let piece = piece.map_err(|e| Error::Database {
                context: sql.clone(),
                source: e,
            })?;
            carry.extend_from_slice(&piece);
            let end = memchr::memrchr(b'\n', &carry).map(|i| i + 1).unwrap_or(0);
            if end > 0 {
                for line in carry[..end - 1].split(|&b| b == b'\n') {
                    if t.filter.matches(&crate::export::copy_fields(line)) {
                        let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                        let mut k = Vec::new();
                        for (i, p) in key_pos.iter().enumerate() {
                            if i > 0 {
                                k.push(b'\t');
                            }
                            k.extend_from_slice(fields[*p]);
                        }
                        k.push(b'\n');
                        keys.push(k);
                    }
                }
                carry.drain(..end);
            }
        }
    }
    pg::copy_into_temp(
        &mut db.conn,
        SCOPE,
        &join(&t.key, q, ", "),
        &rel,
        &keys.concat(),
    )
    .await
}

/// Creates the temporary table a merge's rows load into, inside the caller's
/// transaction; returns the `INSERT` that loads one row into it.
pub(crate) async fn prepare_sqlite(db: &mut SqliteDb, t: &MergeTable<'_>) -> Result<String> {
    let rel = lite::quote(t.dest);
    let cols = join(t.columns, lite::quote, ", ");
    db.exec(&format!("DROP TABLE IF EXISTS temp.{STAGE}"))
        .await?;
    db.exec(&format!("DROP TABLE IF EXISTS temp.{SCOPE}"))
        .await?;
    db.exec(&format!(
        "CREATE TEMP TABLE {STAGE} AS SELECT {cols} FROM main.{rel} WHERE 0"
    ))
    .await
    .map_err(|e| cannot_take(t, e))?;
    Ok(format!(
        "INSERT INTO temp.{STAGE} ({cols}) VALUES ({})",
        vec!["?"; t.columns.len()].join(", ")
    ))
}

impl MergeSql for SqliteDb {
    fn statements(t: &MergeTable<'_>, scoped: bool) -> Statements {
        let q = |c: &str| lite::quote(c);
        let rel = lite::quote(t.dest);
        let cols = join(t.columns, q, ", ");
        let on = join(&t.key, |k| format!("d.{} IS s.{}", q(k), q(k)), " AND ");
        let values = value_columns(t);
        let differs = if values.is_empty() {
            "0".to_string()
        } else {
            join(&values, |c| format!("d.{} IS NOT s.{}", q(c), q(c)), " OR ")
        };
        let in_scope = if scoped {
            format!(
                "EXISTS (SELECT 1 FROM temp.{SCOPE} c WHERE {})",
                join(&t.key, |k| format!("c.{} IS d.{}", q(k), q(k)), " AND ")
            )
        } else {
            "1".to_string()
        };
        let gone = format!("{in_scope} AND NOT EXISTS (SELECT 1 FROM temp.{STAGE} s WHERE {on})");
        let missing = format!("NOT EXISTS (SELECT 1 FROM main.{rel} d WHERE {on})");
        Statements {
            count_new: format!("SELECT count(*) FROM temp.{STAGE} s WHERE {missing}"),
            count_changed: format!(
                "SELECT count(*) FROM temp.{STAGE} s JOIN main.{rel} d ON {on} WHERE {differs}"
            ),
            count_matched: format!("SELECT count(*) FROM temp.{STAGE} s JOIN main.{rel} d ON {on}"),
            count_gone: format!("SELECT count(*) FROM main.{rel} d WHERE {gone}"),
            // SQLite's DELETE has no alias: the correlated tests name the table `d`
            // through a subquery on its key.
            delete_gone: format!(
                "DELETE FROM main.{rel} WHERE ({}) IN (SELECT {} FROM main.{rel} d WHERE {gone})",
                join(&t.key, q, ", "),
                join(&t.key, |k| format!("d.{}", q(k)), ", ")
            ),
            update_changed: (!values.is_empty()).then(|| {
                format!(
                    "UPDATE main.{rel} AS d SET {} FROM temp.{STAGE} AS s WHERE {on} AND ({differs})",
                    join(&values, |c| format!("{} = s.{}", q(c), q(c)), ", ")
                )
            }),
            insert_new: format!(
                "INSERT INTO main.{rel} ({cols}) SELECT {} FROM temp.{STAGE} s WHERE {missing}",
                join(t.columns, |c| format!("s.{}", q(c)), ", ")
            ),
            cleanup: vec![
                format!("DROP TABLE IF EXISTS temp.{STAGE}"),
                format!("DROP TABLE IF EXISTS temp.{SCOPE}"),
            ],
        }
    }

    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send {
        sqlite_scope(self, t)
    }
}

/// The keys of the destination's rows matching the restore's filter, into a temporary
/// table (the filter evaluated on SQLite's values, as on the backup's).
async fn sqlite_scope(db: &mut SqliteDb, t: &MergeTable<'_>) -> Result<()> {
    let q = |c: &str| lite::quote(c);
    let rel = lite::quote(t.dest);
    db.exec(&format!(
        "CREATE TEMP TABLE {SCOPE} AS SELECT {} FROM main.{rel} WHERE 0",
        join(&t.key, q, ", ")
    ))
    .await?;
    let key_pos = key_positions(t);
    let sql = format!(
        "SELECT {} FROM main.{rel}",
        join(&t.entry.stream_columns, q, ", ")
    );
    let n = t.entry.stream_columns.len();
    let mut keys = Vec::new();
    {
        let mut rows = sqlx::query(&sql).fetch(&mut db.conn);
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| {
                Error::invalid(format!(
                    "{} lacks a column the filter or the backup needs ({}): {e}",
                    t.dest,
                    t.entry.stream_columns.join(", ")
                ))
            })?;
            let values = lite::row_values(&row, n)?;
            if t.filter.matches(&values) {
                keys.push(
                    key_pos
                        .iter()
                        .map(|&i| values[i].clone())
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    let insert = format!(
        "INSERT INTO temp.{SCOPE} VALUES ({})",
        vec!["?"; t.key.len()].join(", ")
    );
    for k in keys {
        db.insert(&insert, k).await?;
    }
    Ok(())
}

/// MySQL: creates the temporary table a merge's rows load into (`LIKE` the
/// destination; a temporary table does not end the restore's transaction there).
pub(crate) async fn prepare_mysql(db: &mut MyDb, t: &MergeTable<'_>) -> Result<String> {
    db.exec(&format!("DROP TEMPORARY TABLE IF EXISTS {STAGE}, {SCOPE}"))
        .await?;
    db.exec(&format!(
        "CREATE TEMPORARY TABLE {STAGE} LIKE {}",
        my::quote(t.dest)
    ))
    .await
    .map_err(|e| Error::invalid(format!("{} cannot take the backup's rows: {e}", t.dest)))?;
    Ok(STAGE.to_string())
}

/// MySQL: values compare as bytes (`CAST … AS BINARY`), so a change of letter case in
/// a case-insensitive column counts as a change.
impl MergeSql for MyDb {
    fn statements(t: &MergeTable<'_>, scoped: bool) -> Statements {
        let q = |c: &str| my::quote(c);
        let rel = my::quote(t.dest);
        let cols = join(t.columns, my::quote, ", ");
        let on = join(&t.key, |k| format!("d.{} <=> s.{}", q(k), q(k)), " AND ");
        let values = value_columns(t);
        let differs = if values.is_empty() {
            "FALSE".to_string()
        } else {
            format!(
                "NOT ({})",
                join(
                    &values,
                    |c| format!("CAST(d.{} AS BINARY) <=> CAST(s.{} AS BINARY)", q(c), q(c)),
                    " AND "
                )
            )
        };
        let first = q(&t.key[0]);
        let scope = if scoped {
            format!(
                " JOIN {SCOPE} c ON {}",
                join(&t.key, |k| format!("d.{} <=> c.{}", q(k), q(k)), " AND ")
            )
        } else {
            String::new()
        };
        // A temporary table can appear only once in a MySQL statement: joins, not
        // correlated subqueries.
        let new = format!("{STAGE} s LEFT JOIN {rel} d ON {on} WHERE d.{first} IS NULL");
        let gone = format!("{rel} d{scope} LEFT JOIN {STAGE} s ON {on} WHERE s.{first} IS NULL");
        Statements {
            count_new: format!("SELECT COUNT(*) FROM {new}"),
            count_changed: format!(
                "SELECT COUNT(*) FROM {STAGE} s JOIN {rel} d ON {on} WHERE {differs}"
            ),
            count_matched: format!("SELECT COUNT(*) FROM {STAGE} s JOIN {rel} d ON {on}"),
            count_gone: format!("SELECT COUNT(*) FROM {gone}"),
            delete_gone: format!("DELETE d FROM {gone}"),
            update_changed: (!values.is_empty()).then(|| {
                format!(
                    "UPDATE {rel} d JOIN {STAGE} s ON {on} SET {} WHERE {differs}",
                    join(&values, |c| format!("d.{} = s.{}", q(c), q(c)), ", ")
                )
            }),
            insert_new: format!(
                "INSERT INTO {rel} ({cols}) SELECT {} FROM {new}",
                join(t.columns, |c| format!("s.{}", q(c)), ", ")
            ),
            cleanup: vec![format!("DROP TEMPORARY TABLE IF EXISTS {STAGE}, {SCOPE}")],
        }
    }

    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send {
        my_scope(self, t)
    }
}

/// MySQL: the keys of the destination's rows matching the filter (evaluated on values
/// read the way a backup reads them), into a temporary table.
async fn my_scope(db: &mut MyDb, t: &MergeTable<'_>) -> Result<()> {
    let info = db.describe(t.dest).await?;
    let mut exprs = Vec::new();
    let mut reads = Vec::new();
    for c in &t.entry.stream_columns {
        let i = info
            .data_columns
            .iter()
            .position(|d| d == c)
            .ok_or_else(|| Error::invalid(format!("{} has no column {c} to filter on", t.dest)))?;
        reads.push(info.reads[i].0);
        exprs.push(info.reads[i].1.clone());
    }
    let sql = format!("SELECT {} FROM {}", exprs.join(", "), my::quote(t.dest));
    let key_pos = key_positions(t);
    let mut keys = Vec::new();
    {
        let mut rows = db.rows(&sql, reads);
        while let Some(row) = rows.next().await {
            let row = row?;
            if t.filter.matches(&row) {
                keys.push(key_pos.iter().map(|&i| row[i].clone()).collect::<Vec<_>>());
            }
        }
    }
    db.exec(&format!(
        "CREATE TEMPORARY TABLE {SCOPE} SELECT {} FROM {} LIMIT 0",
        join(&t.key, my::quote, ", "),
        my::quote(t.dest)
    ))
    .await?;
    for chunk in keys.chunks(500) {
        db.insert_rows(SCOPE, &t.key, chunk).await?;
    }
    Ok(())
}

/// Checks a merge is possible for a snapshot's table.
pub(crate) fn check(e: &TableEntry, columns: &[String]) -> Result<Vec<String>> {
    let key = key_of(e);
    if key.is_empty() {
        return Err(Error::invalid(format!(
            "{} has no primary key in the snapshot: rows cannot be matched; restore it into a new table instead",
            e.name
        )));
    }
    for k in &key {
        if !columns.contains(k) {
            return Err(Error::invalid(format!(
                "{}: the key column {k} must be restored to match rows",
                e.name
            )));
        }
    }
    Ok(key)
}
