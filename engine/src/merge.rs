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
use serde::{Deserialize, Serialize};

/// How backup rows meet the destination's rows with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeMode {
    Upsert,
    SkipExisting,
    ReplaceRows,
}

/// What a merge does (or, in a dry run, would do) to one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeCounts {
    /// Backup rows whose key the table lacks.
    pub inserted: u64,
    /// Rows whose key both have and whose values differ (left as they are by
    /// `skip-existing`).
    pub updated: u64,
    /// Rows whose key both have with equal values.
    pub unchanged: u64,
    /// `replace-rows`: rows in the restore's scope that the backup lacks.
    pub deleted: u64,
}

/// The primary key of a snapshot's table, which merges match on.
pub(crate) fn key_of(e: &TableEntry) -> Vec<String> {
    match &e.schema.postgres {
        Some(def) => def.pk.clone(),
        None => {
            let mut pk: Vec<_> = e.schema.columns.iter().filter(|c| c.pk > 0).collect();
            pk.sort_by_key(|c| c.pk);
            pk.into_iter().map(|c| c.name.clone()).collect()
        }
    }
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

fn join(cols: &[String], f: impl Fn(&str) -> String, sep: &str) -> String {
    cols.iter().map(|c| f(c)).collect::<Vec<_>>().join(sep)
}

/// The temporary table a merge's rows load into (`COPY … FROM STDIN`), with the
/// destination's column types; dropped at commit.
pub(crate) const PG_STAGE: &str = STAGE;

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
    .map_err(|e| {
        Error::invalid(format!(
            "{} cannot take the backup's rows (it needs the columns {}): {e}",
            t.dest,
            t.columns.join(", ")
        ))
    })
}

async fn pg_count(db: &mut PgDb, sql: String) -> Result<u64> {
    sqlx::query_scalar::<_, i64>(&sql)
        .fetch_one(&mut db.conn)
        .await
        .map(|n| n as u64)
        .map_err(|e| Error::Database {
            context: sql,
            source: e,
        })
}

/// Counts and applies the merge of the rows loaded into [`PG_STAGE`].
pub(crate) async fn apply_postgres(db: &mut PgDb, t: &MergeTable<'_>) -> Result<MergeCounts> {
    let (schema, table) = split_name(t.dest);
    let rel = pg::qualified(&schema, &table);
    let q = |c: &str| pg::quote(c);
    let cols = join(t.columns, q, ", ");
    let on = join(&t.key, |k| format!("d.{} = s.{}", q(k), q(k)), " AND ");
    let values: Vec<&String> = t.columns.iter().filter(|c| !t.key.contains(c)).collect();
    let differs = if values.is_empty() {
        "false".to_string()
    } else {
        format!(
            "({}) IS DISTINCT FROM ({})",
            values
                .iter()
                .map(|c| format!("s.{}::text", q(c)))
                .collect::<Vec<_>>()
                .join(", "),
            values
                .iter()
                .map(|c| format!("d.{}::text", q(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut counts = MergeCounts {
        inserted: pg_count(
            db,
            format!(
                "SELECT count(*) FROM {STAGE} s WHERE NOT EXISTS (SELECT 1 FROM {rel} d WHERE {on})"
            ),
        )
        .await?,
        updated: pg_count(
            db,
            format!("SELECT count(*) FROM {STAGE} s JOIN {rel} d ON {on} WHERE {differs}"),
        )
        .await?,
        ..Default::default()
    };
    counts.unchanged = pg_count(
        db,
        format!("SELECT count(*) FROM {STAGE} s JOIN {rel} d ON {on}"),
    )
    .await?
        - counts.updated;
    if t.mode == MergeMode::ReplaceRows {
        let scope = if t.filter.is_empty() {
            format!("SELECT 1 FROM {rel} d WHERE NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {on})")
        } else {
            pg_scope(db, t, &rel).await?;
            let on_scope = join(&t.key, |k| format!("d.{} = c.{}", q(k), q(k)), " AND ");
            format!(
                "SELECT 1 FROM {rel} d JOIN {SCOPE} c ON {on_scope} WHERE NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {on})"
            )
        };
        counts.deleted = pg_count(db, format!("SELECT count(*) FROM ({scope}) x")).await?;
        if counts.deleted > 0 {
            let del = if t.filter.is_empty() {
                format!("DELETE FROM {rel} d WHERE NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {on})")
            } else {
                format!(
                    "DELETE FROM {rel} d USING {SCOPE} c WHERE ({}) = ({}) AND NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {on})",
                    join(&t.key, |k| format!("d.{}", q(k)), ", "),
                    join(&t.key, |k| format!("c.{}", q(k)), ", ")
                )
            };
            db.exec(&del).await?;
        }
    }
    if t.mode != MergeMode::SkipExisting && counts.updated > 0 {
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
        if !set.is_empty() {
            db.exec(&format!(
                "UPDATE {rel} d SET {} FROM {STAGE} s WHERE {on} AND {differs}",
                set.join(", ")
            ))
            .await?;
        }
    }
    if counts.inserted > 0 {
        db.exec(&format!(
            "INSERT INTO {rel} ({cols}) OVERRIDING SYSTEM VALUE SELECT {} FROM {STAGE} s WHERE NOT EXISTS (SELECT 1 FROM {rel} d WHERE {on})",
            join(t.columns, |c| format!("s.{}", q(c)), ", ")
        ))
        .await?;
    }
    db.exec(&format!(
        "DROP TABLE IF EXISTS pg_temp.{STAGE}, pg_temp.{SCOPE}"
    ))
    .await?;
    Ok(counts)
}

/// The keys of the destination's rows that match the restore's filter, evaluated by the
/// same code on the same text form as the backup's rows, into a temporary table.
async fn pg_scope(db: &mut PgDb, t: &MergeTable<'_>, rel: &str) -> Result<()> {
    let q = |c: &str| pg::quote(c);
    let stream_cols = join(&t.entry.stream_columns, q, ", ");
    let key_pos: Vec<usize> = t
        .key
        .iter()
        .filter_map(|k| t.entry.stream_columns.iter().position(|c| c == k))
        .collect();
    db.exec(&format!(
        "CREATE TEMP TABLE {SCOPE} ON COMMIT DROP AS SELECT {} FROM {rel} WITH NO DATA",
        join(&t.key, q, ", ")
    ))
    .await?;
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
    let mut copy = db
        .conn
        .copy_in_raw(&format!("COPY {SCOPE} FROM STDIN"))
        .await
        .map_err(|e| Error::Database {
            context: "filling the merge scope".into(),
            source: e,
        })?;
    for chunk in keys.chunks(10_000) {
        copy.send(chunk.concat())
            .await
            .map_err(|e| Error::Database {
                context: "filling the merge scope".into(),
                source: e,
            })?;
    }
    copy.finish().await.map_err(|e| Error::Database {
        context: "filling the merge scope".into(),
        source: e,
    })?;
    Ok(())
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
    .map_err(|e| {
        Error::invalid(format!(
            "{} cannot take the backup's rows (it needs the columns {}): {e}",
            t.dest,
            t.columns.join(", ")
        ))
    })?;
    Ok(format!(
        "INSERT INTO temp.{STAGE} ({cols}) VALUES ({})",
        vec!["?"; t.columns.len()].join(", ")
    ))
}

/// Counts and applies the merge of the rows loaded by [`prepare_sqlite`]'s statement.
pub(crate) async fn apply_sqlite(db: &mut SqliteDb, t: &MergeTable<'_>) -> Result<MergeCounts> {
    let q = |c: &str| lite::quote(c);
    let rel = lite::quote(t.dest);
    let cols = join(t.columns, q, ", ");
    let on = join(&t.key, |k| format!("d.{} IS s.{}", q(k), q(k)), " AND ");
    let values: Vec<&String> = t.columns.iter().filter(|c| !t.key.contains(c)).collect();
    let differs = if values.is_empty() {
        "0".to_string()
    } else {
        values
            .iter()
            .map(|c| format!("d.{} IS NOT s.{}", q(c), q(c)))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let mut counts = MergeCounts {
        inserted: sqlite_count(
            db,
            &format!("SELECT count(*) FROM temp.{STAGE} s WHERE NOT EXISTS (SELECT 1 FROM main.{rel} d WHERE {on})"),
        )
        .await?,
        updated: sqlite_count(
            db,
            &format!("SELECT count(*) FROM temp.{STAGE} s JOIN main.{rel} d ON {on} WHERE {differs}"),
        )
        .await?,
        ..Default::default()
    };
    counts.unchanged = sqlite_count(
        db,
        &format!("SELECT count(*) FROM temp.{STAGE} s JOIN main.{rel} d ON {on}"),
    )
    .await?
        - counts.updated;
    if t.mode == MergeMode::ReplaceRows {
        let in_scope = if t.filter.is_empty() {
            "1".to_string()
        } else {
            sqlite_scope(db, t, &rel).await?;
            format!(
                "EXISTS (SELECT 1 FROM temp.{SCOPE} c WHERE {})",
                join(&t.key, |k| format!("c.{} IS d.{}", q(k), q(k)), " AND ")
            )
        };
        let gone = format!("{in_scope} AND NOT EXISTS (SELECT 1 FROM temp.{STAGE} s WHERE {on})");
        counts.deleted = sqlite_count(
            db,
            &format!("SELECT count(*) FROM main.{rel} d WHERE {gone}"),
        )
        .await?;
        if counts.deleted > 0 {
            // SQLite's DELETE has no alias: the correlated tests name the table `d`
            // through a subquery on its rowid-less key.
            db.exec(&format!(
                "DELETE FROM main.{rel} WHERE ({}) IN (SELECT {} FROM main.{rel} d WHERE {gone})",
                join(&t.key, q, ", "),
                join(&t.key, |k| format!("d.{}", q(k)), ", ")
            ))
            .await?;
        }
    }
    if t.mode != MergeMode::SkipExisting && counts.updated > 0 && !values.is_empty() {
        db.exec(&format!(
            "UPDATE main.{rel} AS d SET {} FROM temp.{STAGE} AS s WHERE {on} AND ({differs})",
            values
                .iter()
                .map(|c| format!("{} = s.{}", q(c), q(c)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await?;
    }
    if counts.inserted > 0 {
        db.exec(&format!(
            "INSERT INTO main.{rel} ({cols}) SELECT {} FROM temp.{STAGE} s WHERE NOT EXISTS (SELECT 1 FROM main.{rel} d WHERE {on})",
            join(t.columns, |c| format!("s.{}", q(c)), ", ")
        ))
        .await?;
    }
    db.exec(&format!("DROP TABLE IF EXISTS temp.{STAGE}"))
        .await?;
    db.exec(&format!("DROP TABLE IF EXISTS temp.{SCOPE}"))
        .await?;
    Ok(counts)
}

async fn sqlite_count(db: &mut SqliteDb, sql: &str) -> Result<u64> {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&mut db.conn)
        .await
        .map(|n| n as u64)
        .map_err(|e| Error::Database {
            context: sql.to_string(),
            source: e,
        })
}

/// The keys of the destination's rows matching the restore's filter, into a temporary
/// table (the filter evaluated on SQLite's values, as on the backup's).
async fn sqlite_scope(db: &mut SqliteDb, t: &MergeTable<'_>, rel: &str) -> Result<()> {
    let q = |c: &str| lite::quote(c);
    db.exec(&format!(
        "CREATE TEMP TABLE {SCOPE} AS SELECT {} FROM main.{rel} WHERE 0",
        join(&t.key, q, ", ")
    ))
    .await?;
    let key_pos: Vec<usize> = t
        .key
        .iter()
        .filter_map(|k| t.entry.stream_columns.iter().position(|c| c == k))
        .collect();
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

/// MySQL: counts and applies the merge of the rows loaded into [`prepare_mysql`]'s
/// table. Values compare as bytes (`CAST … AS BINARY`), so a change of letter case in a
/// case-insensitive column counts as a change.
pub(crate) async fn apply_mysql(db: &mut MyDb, t: &MergeTable<'_>) -> Result<MergeCounts> {
    let q = |c: &str| my::quote(c);
    let rel = my::quote(t.dest);
    let cols = join(t.columns, my::quote, ", ");
    let on = join(&t.key, |k| format!("d.{} <=> s.{}", q(k), q(k)), " AND ");
    let values: Vec<&String> = t.columns.iter().filter(|c| !t.key.contains(c)).collect();
    let differs = if values.is_empty() {
        "FALSE".to_string()
    } else {
        format!(
            "NOT ({})",
            values
                .iter()
                .map(|c| format!("CAST(d.{} AS BINARY) <=> CAST(s.{} AS BINARY)", q(c), q(c)))
                .collect::<Vec<_>>()
                .join(" AND ")
        )
    };
    let first = q(&t.key[0]);
    let mut counts = MergeCounts {
        inserted: my_count(
            db,
            format!(
                "SELECT COUNT(*) FROM {STAGE} s LEFT JOIN {rel} d ON {on} WHERE d.{first} IS NULL"
            ),
        )
        .await?,
        updated: my_count(
            db,
            format!("SELECT COUNT(*) FROM {STAGE} s JOIN {rel} d ON {on} WHERE {differs}"),
        )
        .await?,
        ..Default::default()
    };
    counts.unchanged = my_count(
        db,
        format!("SELECT COUNT(*) FROM {STAGE} s JOIN {rel} d ON {on}"),
    )
    .await?
        - counts.updated;
    if t.mode == MergeMode::ReplaceRows {
        let scoped = if t.filter.is_empty() {
            String::new()
        } else {
            my_scope(db, t).await?;
            format!(
                " JOIN {SCOPE} c ON {}",
                join(&t.key, |k| format!("d.{} <=> c.{}", q(k), q(k)), " AND ")
            )
        };
        counts.deleted = my_count(
            db,
            format!("SELECT COUNT(*) FROM {rel} d{scoped} LEFT JOIN {STAGE} s ON {on} WHERE s.{first} IS NULL"),
        )
        .await?;
        if counts.deleted > 0 {
            db.exec(&format!(
                "DELETE d FROM {rel} d{scoped} LEFT JOIN {STAGE} s ON {on} WHERE s.{first} IS NULL"
            ))
            .await?;
        }
    }
    if t.mode != MergeMode::SkipExisting && counts.updated > 0 && !values.is_empty() {
        db.exec(&format!(
            "UPDATE {rel} d JOIN {STAGE} s ON {on} SET {} WHERE {differs}",
            values
                .iter()
                .map(|c| format!("d.{} = s.{}", q(c), q(c)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await?;
    }
    if counts.inserted > 0 {
        db.exec(&format!(
            "INSERT INTO {rel} ({cols}) SELECT {} FROM {STAGE} s LEFT JOIN {rel} d ON {on} WHERE d.{first} IS NULL",
            join(t.columns, |c| format!("s.{}", q(c)), ", ")
        ))
        .await?;
    }
    db.exec(&format!("DROP TEMPORARY TABLE IF EXISTS {STAGE}, {SCOPE}"))
        .await?;
    Ok(counts)
}

async fn my_count(db: &mut MyDb, sql: String) -> Result<u64> {
    sqlx::query_scalar::<_, i64>(&sql)
        .fetch_one(&mut db.conn)
        .await
        .map(|n| n as u64)
        .map_err(|e| Error::Database {
            context: sql,
            source: e,
        })
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
    let key_pos: Vec<usize> = t
        .key
        .iter()
        .filter_map(|k| t.entry.stream_columns.iter().position(|c| c == k))
        .collect();
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
