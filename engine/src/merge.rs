//! Restoring rows into a table that exists, by key: `upsert` (backup rows replace the
//! rows with the same key, missing ones are inserted), `skip-existing` (only rows whose
//! key is missing are inserted) and `replace-rows` (the rows the restore covers — the
//! whole table, or those matching `--where` — become exactly the backup's: upserted,
//! and rows in that scope that the backup lacks are deleted). Rows of the destination
//! outside the restore's scope are never touched.
//!
//! The backup's rows (filtered and checked against the table's checksum as in every
//! restore) are loaded into a temporary table; [`count`] then compares them with the
//! destination using only `SELECT`s (plain reads: no `FOR UPDATE`, no row locks), and a
//! run ([`apply`]) follows the counts with a few set-wise statements. A dry run
//! ([`crate::restore::diff`]) is [`count`] alone — read-only by construction, not by
//! rollback: it never builds the statements that change the destination, and the
//! database enforces it as well (PostgreSQL and MySQL count in a `READ ONLY`
//! transaction, which still lets the session fill its temporary tables; SQLite opens the
//! file read-only). So a preview fires no trigger, moves no sequence or
//! `AUTO_INCREMENT` counter and blocks no writer beyond what a read does, and since a
//! run counts with the same statements before it changes anything, its counts are the
//! preview's (unless the table changes in between).
//!
//! Rows are matched on the snapshot's primary key; a row counts as updated when any
//! restored column differs (compared as text on PostgreSQL, so `json` and floats compare
//! exactly; with SQLite's `IS NOT`; as bytes on MySQL).
//!
//! MySQL tables whose storage engine cannot roll back (MyISAM, MEMORY, Aria…) are not
//! merged into: the restore's plan refuses them ([`crate::restore::plan`]).

use crate::filter::BoundFilter;
use crate::model::{Identity, TableEntry};
use crate::source::mysql::{self as my, MyDb};
use crate::source::postgres::{self as pg, PgDb, split_name};
use crate::source::sqlite::{self as lite, SqliteDb};
use crate::{Error, Result};

mod scope;

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
    /// The table's place in the restore: names its temporary tables, so a dry run can
    /// make every table's before its transaction turns read-only.
    pub slot: usize,
}

impl MergeTable<'_> {
    /// The temporary table the backup's rows load into, with the destination's column
    /// types.
    pub(crate) fn stage(&self) -> String {
        format!("tablesafe_merge_rows_{}", self.slot)
    }

    /// The temporary table of the keys of the destination's rows in the restore's
    /// scope ([`MergeTable::scoped`]).
    fn scope(&self) -> String {
        format!("tablesafe_merge_scope_{}", self.slot)
    }

    /// Whether the destination's rows in the restore's scope must be found first:
    /// `replace-rows` under a filter deletes only those the backup lacks.
    fn scoped(&self) -> bool {
        self.mode == MergeMode::ReplaceRows && !self.filter.is_empty()
    }
}

fn join<S: AsRef<str>>(cols: &[S], f: impl Fn(&str) -> String, sep: &str) -> String {
    cols.iter()
        .map(|c| f(c.as_ref()))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The error of a destination table whose columns do not fit the backup's rows.
fn cannot_take(t: &MergeTable<'_>, e: Error) -> Error {
    Error::invalid(format!(
        "{} cannot take the backup's rows (it needs the columns {}): {e}",
        t.dest,
        t.columns.join(", ")
    ))
}

/// Creates the temporary tables of one table's merge (dropped at the end of the
/// caller's transaction). Makes no other change, so a dry run calls it before it turns
/// its transaction read-only.
pub(crate) async fn prepare_postgres(db: &mut PgDb, t: &MergeTable<'_>) -> Result<()> {
    let (schema, table) = split_name(t.dest);
    let rel = pg::qualified(&schema, &table);
    let (stage, scope) = (t.stage(), t.scope());
    db.exec(&format!(
        "DROP TABLE IF EXISTS pg_temp.{stage}, pg_temp.{scope}"
    ))
    .await?;
    db.exec(&format!(
        "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {} FROM {rel} WITH NO DATA",
        join(t.columns, pg::quote, ", ")
    ))
    .await
    .map_err(|e| cannot_take(t, e))?;
    if t.scoped() {
        db.exec(&format!(
            "CREATE TEMP TABLE {scope} ON COMMIT DROP AS SELECT {} FROM {rel} WITH NO DATA",
            join(&t.key, pg::quote, ", ")
        ))
        .await?;
    }
    Ok(())
}

/// What a merge of the rows loaded into the table's stage would do to the destination,
/// found with `SELECT`s alone (and, for a scoped `replace-rows`, by reading the
/// destination's rows into the scope table): the whole of a dry run, and the first
/// half of [`apply`].
pub(crate) async fn count<D: MergeSql>(db: &mut D, t: &MergeTable<'_>) -> Result<MergeCounts> {
    let sql = D::counts(t);
    let mut counts = MergeCounts {
        inserted: db.count(&sql.new).await?,
        updated: db.count(&sql.changed).await?,
        ..Default::default()
    };
    counts.unchanged = db.count(&sql.matched).await? - counts.updated;
    if t.mode == MergeMode::ReplaceRows {
        if t.scoped() {
            db.fill_scope(t).await?;
        }
        counts.deleted = db.count(&sql.gone).await?;
    }
    Ok(counts)
}

/// Counts ([`count`]), then applies a merge of the rows loaded into the table's stage:
/// one flow for every engine, each writing the statements in its own SQL.
pub(crate) async fn apply<D: MergeSql>(db: &mut D, t: &MergeTable<'_>) -> Result<MergeCounts> {
    let counts = count(db, t).await?;
    let sql = D::changes(t);
    if t.mode == MergeMode::ReplaceRows && counts.deleted > 0 {
        db.exec(&sql.delete_gone).await?;
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
    for drop in D::cleanup(t) {
        db.exec(&drop).await?;
    }
    Ok(counts)
}

/// One engine's queries for [`count`]: `SELECT count(*)`s only. `s` is the staged
/// backup rows ([`MergeTable::stage`]), `d` the destination table, `c` the keys in the
/// restore's scope ([`MergeTable::scope`]).
pub(crate) struct Counts {
    /// Staged rows whose key the destination lacks.
    new: String,
    /// Rows whose key both have and whose values differ.
    changed: String,
    /// Rows whose key both have.
    matched: String,
    /// `replace-rows`: destination rows in scope that the backup lacks.
    gone: String,
}

/// One engine's statements that change the destination, for [`apply`] alone.
pub(crate) struct Changes {
    /// `replace-rows`: deletes the destination rows in scope that the backup lacks.
    delete_gone: String,
    /// None when there is no column to set (every column is in the key, or may not be
    /// written).
    update_changed: Option<String>,
    insert_new: String,
}

/// What [`count`] and [`apply`] need of a destination engine.
pub(crate) trait MergeSql: crate::source::RunSql {
    /// The queries that count a merge: reads only.
    fn counts(t: &MergeTable<'_>) -> Counts;
    /// The statements that carry it out.
    fn changes(t: &MergeTable<'_>) -> Changes;
    /// Drops the table's temporary tables.
    fn cleanup(t: &MergeTable<'_>) -> Vec<String>;
    /// Fills the scope table with the keys of the destination's rows that match the
    /// filter (reading the destination, writing only the temporary table).
    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send;
}

/// The non-key columns, which decide whether a row changed.
fn value_columns<'a>(t: &'a MergeTable<'_>) -> Vec<&'a String> {
    t.columns.iter().filter(|c| !t.key.contains(c)).collect()
}
impl MergeSql for PgDb {
    fn counts(t: &MergeTable<'_>) -> Counts {
        let p = PgParts::of(t);
        let (rel, stage, on, differs) = (&p.rel, &p.stage, &p.on, &p.differs);
        Counts {
            new: format!("SELECT count(*) FROM {stage} s WHERE {}", p.missing),
            changed: format!("SELECT count(*) FROM {stage} s JOIN {rel} d ON {on} WHERE {differs}"),
            matched: format!("SELECT count(*) FROM {stage} s JOIN {rel} d ON {on}"),
            gone: format!("SELECT count(*) FROM ({}) x", p.gone),
        }
    }

    fn changes(t: &MergeTable<'_>) -> Changes {
        let p = PgParts::of(t);
        let q = |c: &str| pg::quote(c);
        let (rel, stage, on, absent) = (&p.rel, &p.stage, &p.on, &p.absent);
        let delete_gone = if t.scoped() {
            format!(
                "DELETE FROM {rel} d USING {} c WHERE ({}) = ({}) AND {absent}",
                t.scope(),
                join(&t.key, |k| format!("d.{}", q(k)), ", "),
                join(&t.key, |k| format!("c.{}", q(k)), ", ")
            )
        } else {
            format!("DELETE FROM {rel} d WHERE {absent}")
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
        let set: Vec<String> = value_columns(t)
            .iter()
            .filter(|c| !identity_always.contains(&c.as_str()))
            .map(|c| format!("{} = s.{}", q(c), q(c)))
            .collect();
        Changes {
            delete_gone,
            update_changed: (!set.is_empty()).then(|| {
                format!(
                    "UPDATE {rel} d SET {} FROM {stage} s WHERE {on} AND {}",
                    set.join(", "),
                    p.differs
                )
            }),
            insert_new: format!(
                "INSERT INTO {rel} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {stage} s WHERE {}",
                join(t.columns, q, ", "),
                join(t.columns, |c| format!("s.{}", q(c)), ", "),
                p.missing
            ),
        }
    }

    fn cleanup(t: &MergeTable<'_>) -> Vec<String> {
        vec![format!(
            "DROP TABLE IF EXISTS pg_temp.{}, pg_temp.{}",
            t.stage(),
            t.scope()
        )]
    }

    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send {
        scope::postgres(self, t)
    }
}

/// The pieces PostgreSQL's counts and changes share.
struct PgParts {
    rel: String,
    stage: String,
    /// `d` and `s` have the same key.
    on: String,
    /// Their restored values differ.
    differs: String,
    /// The staged row's key is not in the destination.
    missing: String,
    /// The destination row's key is not staged.
    absent: String,
    /// The destination rows in scope that the backup lacks.
    gone: String,
}

impl PgParts {
    fn of(t: &MergeTable<'_>) -> Self {
        let (schema, table) = split_name(t.dest);
        let rel = pg::qualified(&schema, &table);
        let stage = t.stage();
        let q = |c: &str| pg::quote(c);
        let on = join(&t.key, |k| format!("d.{} = s.{}", q(k), q(k)), " AND ");
        let values = value_columns(t);
        let differs = if values.is_empty() {
            "false".to_string()
        } else {
            let text = |alias: &str| join(&values, |c| format!("{alias}.{}::text", q(c)), ", ");
            format!("({}) IS DISTINCT FROM ({})", text("s"), text("d"))
        };
        let absent = format!("NOT EXISTS (SELECT 1 FROM {stage} s WHERE {on})");
        let gone = if t.scoped() {
            let on_scope = join(&t.key, |k| format!("d.{} = c.{}", q(k), q(k)), " AND ");
            format!(
                "SELECT 1 FROM {rel} d JOIN {} c ON {on_scope} WHERE {absent}",
                t.scope()
            )
        } else {
            format!("SELECT 1 FROM {rel} d WHERE {absent}")
        };
        let missing = format!("NOT EXISTS (SELECT 1 FROM {rel} d WHERE {on})");
        PgParts {
            rel,
            stage,
            on,
            differs,
            missing,
            absent,
            gone,
        }
    }
}

/// Creates the temporary tables of one table's merge; returns the `INSERT` that loads
/// one row into its stage. Changes nothing in the database file itself (temporary
/// tables live in SQLite's temp database), so it works on a read-only connection.
pub(crate) async fn prepare_sqlite(db: &mut SqliteDb, t: &MergeTable<'_>) -> Result<String> {
    let rel = lite::quote(t.dest);
    let cols = join(t.columns, lite::quote, ", ");
    let (stage, scope) = (t.stage(), t.scope());
    db.exec(&format!("DROP TABLE IF EXISTS temp.{stage}"))
        .await?;
    db.exec(&format!("DROP TABLE IF EXISTS temp.{scope}"))
        .await?;
    db.exec(&format!(
        "CREATE TEMP TABLE {stage} AS SELECT {cols} FROM main.{rel} WHERE 0"
    ))
    .await
    .map_err(|e| cannot_take(t, e))?;
    if t.scoped() {
        db.exec(&format!(
            "CREATE TEMP TABLE {scope} AS SELECT {} FROM main.{rel} WHERE 0",
            join(&t.key, lite::quote, ", ")
        ))
        .await?;
    }
    Ok(format!(
        "INSERT INTO temp.{stage} ({cols}) VALUES ({})",
        vec!["?"; t.columns.len()].join(", ")
    ))
}

impl MergeSql for SqliteDb {
    fn counts(t: &MergeTable<'_>) -> Counts {
        let p = LiteParts::of(t);
        let (rel, stage, on, differs) = (&p.rel, &p.stage, &p.on, &p.differs);
        Counts {
            new: format!("SELECT count(*) FROM temp.{stage} s WHERE {}", p.missing),
            changed: format!(
                "SELECT count(*) FROM temp.{stage} s JOIN main.{rel} d ON {on} WHERE {differs}"
            ),
            matched: format!("SELECT count(*) FROM temp.{stage} s JOIN main.{rel} d ON {on}"),
            gone: format!("SELECT count(*) FROM main.{rel} d WHERE {}", p.gone),
        }
    }

    fn changes(t: &MergeTable<'_>) -> Changes {
        let p = LiteParts::of(t);
        let q = |c: &str| lite::quote(c);
        let (rel, stage, on, differs) = (&p.rel, &p.stage, &p.on, &p.differs);
        let values = value_columns(t);
        Changes {
            // SQLite's DELETE has no alias: the correlated tests name the table `d`
            // through a subquery on its key.
            delete_gone: format!(
                "DELETE FROM main.{rel} WHERE ({}) IN (SELECT {} FROM main.{rel} d WHERE {})",
                join(&t.key, q, ", "),
                join(&t.key, |k| format!("d.{}", q(k)), ", "),
                p.gone
            ),
            update_changed: (!values.is_empty()).then(|| {
                format!(
                    "UPDATE main.{rel} AS d SET {} FROM temp.{stage} AS s WHERE {on} AND ({differs})",
                    join(&values, |c| format!("{} = s.{}", q(c), q(c)), ", ")
                )
            }),
            insert_new: format!(
                "INSERT INTO main.{rel} ({}) SELECT {} FROM temp.{stage} s WHERE {}",
                join(t.columns, q, ", "),
                join(t.columns, |c| format!("s.{}", q(c)), ", "),
                p.missing
            ),
        }
    }

    fn cleanup(t: &MergeTable<'_>) -> Vec<String> {
        vec![
            format!("DROP TABLE IF EXISTS temp.{}", t.stage()),
            format!("DROP TABLE IF EXISTS temp.{}", t.scope()),
        ]
    }

    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send {
        scope::sqlite(self, t)
    }
}

/// The pieces SQLite's counts and changes share.
struct LiteParts {
    rel: String,
    stage: String,
    on: String,
    differs: String,
    missing: String,
    /// A destination row `d` in scope that the backup lacks.
    gone: String,
}

impl LiteParts {
    fn of(t: &MergeTable<'_>) -> Self {
        let q = |c: &str| lite::quote(c);
        let rel = lite::quote(t.dest);
        let stage = t.stage();
        let on = join(&t.key, |k| format!("d.{} IS s.{}", q(k), q(k)), " AND ");
        let values = value_columns(t);
        let differs = if values.is_empty() {
            "0".to_string()
        } else {
            join(&values, |c| format!("d.{} IS NOT s.{}", q(c), q(c)), " OR ")
        };
        let in_scope = if t.scoped() {
            format!(
                "EXISTS (SELECT 1 FROM temp.{} c WHERE {})",
                t.scope(),
                join(&t.key, |k| format!("c.{} IS d.{}", q(k), q(k)), " AND ")
            )
        } else {
            "1".to_string()
        };
        let gone = format!("{in_scope} AND NOT EXISTS (SELECT 1 FROM temp.{stage} s WHERE {on})");
        let missing = format!("NOT EXISTS (SELECT 1 FROM main.{rel} d WHERE {on})");
        LiteParts {
            rel,
            stage,
            on,
            differs,
            missing,
            gone,
        }
    }
}

/// MySQL: creates the temporary tables of one table's merge (`LIKE` the destination; a
/// temporary table does not end a transaction there, but may not be created in a
/// `READ ONLY` one, so a dry run makes them first); returns the stage's name.
pub(crate) async fn prepare_mysql(db: &mut MyDb, t: &MergeTable<'_>) -> Result<String> {
    let (stage, scope) = (t.stage(), t.scope());
    db.exec(&format!("DROP TEMPORARY TABLE IF EXISTS {stage}, {scope}"))
        .await?;
    db.exec(&format!(
        "CREATE TEMPORARY TABLE {stage} LIKE {}",
        my::quote(t.dest)
    ))
    .await
    .map_err(|e| Error::invalid(format!("{} cannot take the backup's rows: {e}", t.dest)))?;
    if t.scoped() {
        // No row is read (LIMIT 0), so no row is locked.
        db.exec(&format!(
            "CREATE TEMPORARY TABLE {scope} SELECT {} FROM {} LIMIT 0",
            join(&t.key, my::quote, ", "),
            my::quote(t.dest)
        ))
        .await?;
    }
    Ok(stage)
}

/// MySQL: values compare as bytes (`CAST … AS BINARY`), so a change of letter case in
/// a case-insensitive column counts as a change. A temporary table can appear only once
/// in a MySQL statement: joins, not correlated subqueries.
impl MergeSql for MyDb {
    fn counts(t: &MergeTable<'_>) -> Counts {
        let p = MyParts::of(t);
        let (rel, stage, on, differs) = (&p.rel, &p.stage, &p.on, &p.differs);
        Counts {
            new: format!("SELECT COUNT(*) FROM {}", p.new),
            changed: format!("SELECT COUNT(*) FROM {stage} s JOIN {rel} d ON {on} WHERE {differs}"),
            matched: format!("SELECT COUNT(*) FROM {stage} s JOIN {rel} d ON {on}"),
            gone: format!("SELECT COUNT(*) FROM {}", p.gone),
        }
    }

    fn changes(t: &MergeTable<'_>) -> Changes {
        let p = MyParts::of(t);
        let q = |c: &str| my::quote(c);
        let (rel, stage, on, differs) = (&p.rel, &p.stage, &p.on, &p.differs);
        let values = value_columns(t);
        Changes {
            delete_gone: format!("DELETE d FROM {}", p.gone),
            update_changed: (!values.is_empty()).then(|| {
                format!(
                    "UPDATE {rel} d JOIN {stage} s ON {on} SET {} WHERE {differs}",
                    join(&values, |c| format!("d.{} = s.{}", q(c), q(c)), ", ")
                )
            }),
            insert_new: format!(
                "INSERT INTO {rel} ({}) SELECT {} FROM {}",
                join(t.columns, q, ", "),
                join(t.columns, |c| format!("s.{}", q(c)), ", "),
                p.new
            ),
        }
    }

    fn cleanup(t: &MergeTable<'_>) -> Vec<String> {
        vec![format!(
            "DROP TEMPORARY TABLE IF EXISTS {}, {}",
            t.stage(),
            t.scope()
        )]
    }

    fn fill_scope(&mut self, t: &MergeTable<'_>) -> impl Future<Output = Result<()>> + Send {
        scope::mysql(self, t)
    }
}

/// The pieces MySQL's counts and changes share.
struct MyParts {
    rel: String,
    stage: String,
    on: String,
    differs: String,
    /// `FROM` clause of the staged rows whose key the destination lacks.
    new: String,
    /// `FROM` clause of the destination rows in scope that the backup lacks.
    gone: String,
}

impl MyParts {
    fn of(t: &MergeTable<'_>) -> Self {
        let q = |c: &str| my::quote(c);
        let rel = my::quote(t.dest);
        let stage = t.stage();
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
        let scope = if t.scoped() {
            format!(
                " JOIN {} c ON {}",
                t.scope(),
                join(&t.key, |k| format!("d.{} <=> c.{}", q(k), q(k)), " AND ")
            )
        } else {
            String::new()
        };
        let new = format!("{stage} s LEFT JOIN {rel} d ON {on} WHERE d.{first} IS NULL");
        let gone = format!("{rel} d{scope} LEFT JOIN {stage} s ON {on} WHERE s.{first} IS NULL");
        MyParts {
            rel,
            stage,
            on,
            differs,
            new,
            gone,
        }
    }
}

/// MySQL: why rows merged or appended into table `name` could not be rolled back, if
/// they could not: its storage engine has no transactions (MyISAM, MEMORY, Aria, CSV,
/// ARCHIVE…; `information_schema.ENGINES.TRANSACTIONS`). Returns the engine's name.
pub(crate) async fn mysql_engine_without_rollback(
    db: &mut MyDb,
    name: &str,
) -> Result<Option<String>> {
    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT t.ENGINE, e.TRANSACTIONS FROM information_schema.TABLES t \
         LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
         WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut db.conn)
    .await
    .map_err(|e| Error::Database {
        context: format!("reading the storage engine of {name} on {}", db.display),
        source: e,
    })?;
    Ok(match row {
        // A view has no engine of its own.
        Some((Some(engine), transactions)) if transactions.as_deref() != Some("YES") => {
            Some(engine)
        }
        _ => None,
    })
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
