//! Restoring into SQLite: one `BEGIN IMMEDIATE` transaction, foreign keys deferred.
//!
//! The transaction runs on a rusqlite connection owned by a blocking thread
//! ([`LiteConn`]): rows are decoded and checked here and cross to that thread in
//! batches, where one prepared `INSERT` writes them (sqlx's driver would cross threads
//! for every row). A plan that merges rows into existing tables runs on sqlx instead,
//! whose connection [`crate::merge`] is written for.

use super::*;
use crate::model::Value;
use crate::source::sqlite::bulk::{self, LiteConn};
use tokio::sync::mpsc;

/// The connection a restore's transaction runs on.
trait Writer: Send {
    async fn exec(&mut self, sql: &str) -> Result<()>;
    async fn table_exists(&mut self, name: &str) -> Result<bool>;
    /// Inserts the rows of every batch from `rows` with `insert`, until it closes.
    async fn insert(
        &mut self,
        insert: &str,
        table: &str,
        rows: mpsc::Receiver<Vec<Vec<Value>>>,
    ) -> Result<()>;
}

impl Writer for LiteConn {
    async fn exec(&mut self, sql: &str) -> Result<()> {
        LiteConn::exec(self, sql).await
    }

    async fn table_exists(&mut self, name: &str) -> Result<bool> {
        LiteConn::table_exists(self, name).await
    }

    async fn insert(
        &mut self,
        insert: &str,
        table: &str,
        rows: mpsc::Receiver<Vec<Vec<Value>>>,
    ) -> Result<()> {
        let (insert, table) = (insert.to_string(), table.to_string());
        self.call(move |c| bulk::insert_rows(c, &insert, &table, rows).map(|_| ()))
            .await
    }
}

impl Writer for SqliteDb {
    async fn exec(&mut self, sql: &str) -> Result<()> {
        SqliteDb::exec(self, sql).await
    }

    async fn table_exists(&mut self, name: &str) -> Result<bool> {
        SqliteDb::table_exists(self, name).await
    }

    async fn insert(
        &mut self,
        insert: &str,
        _table: &str,
        mut rows: mpsc::Receiver<Vec<Vec<Value>>>,
    ) -> Result<()> {
        while let Some(batch) = rows.recv().await {
            for row in batch {
                SqliteDb::insert(self, insert, row).await?;
            }
        }
        Ok(())
    }
}

/// A SQLite file; one that does not exist yet is created only by the restore itself.
pub(super) struct Sqlite {
    path: std::path::PathBuf,
    /// Read-only: planning and previews never open the file for writing.
    db: Option<SqliteDb>,
}

impl Sqlite {
    pub(super) async fn open(path: &std::path::Path) -> Result<Self> {
        let db = match path.exists() {
            true => Some(SqliteDb::open_read(path).await?),
            false => None,
        };
        Ok(Sqlite {
            path: path.to_path_buf(),
            db,
        })
    }
}

impl Destination for Sqlite {
    fn table_exists<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match &mut self.db {
                Some(db) => db.table_exists(name).await,
                None => Ok(false),
            }
        })
    }

    fn execute<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(async move {
            drop(self.db);
            let merges = !run.merges().is_empty();
            match merges {
                true => execute(run, SqliteDb::open_write(&self.path).await?).await,
                false => execute(run, LiteConn::open_write(&self.path).await?).await,
            }
        })
    }

    fn preview<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(async move {
            let db = match self.db {
                Some(db) => db,
                None => SqliteDb::open_read(&self.path).await?,
            };
            preview(run, db).await
        })
    }
}

/// The counts of the plan's merges ([`super::diff`]) over a read-only connection: the
/// backup's rows load into temporary tables (SQLite's separate temp database) and are
/// compared with the file's by `SELECT`s, in one read transaction — a shared lock, as
/// any reader takes: writers still begin, and commit once it ends.
async fn preview(run: Run<'_>, mut db: SqliteDb) -> Result<Vec<RestoredTable>> {
    let (repo, _, progress) = run.parts();
    db.exec("BEGIN").await?;
    let result = async {
        let mut done = Vec::new();
        for (t, m) in run.merges() {
            progress.table_started(&t.dest_table, Some(t.rows));
            let insert = crate::merge::prepare_sqlite(&mut db, &m).await?;
            let rows = load_rows(repo, &mut db, t, &insert, progress).await?;
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes: Vec::new(),
                merge: Some(crate::merge::count(&mut db, &m).await?),
            });
        }
        Ok(done)
    }
    .await;
    let _ = db.exec("ROLLBACK").await;
    result
}

/// The restore's transaction on `db`; merges need it to be [`SqliteDb`].
async fn execute<W: Writer + Merging>(run: Run<'_>, mut db: W) -> Result<Vec<RestoredTable>> {
    let (repo, plan, progress) = run.parts();
    db.exec("BEGIN IMMEDIATE").await?;
    let result = async {
        db.exec("PRAGMA defer_foreign_keys = ON").await?;
        let mut done = Vec::new();
        for (i, t) in plan.tables.iter().enumerate() {
            progress.table_started(&t.dest_table, Some(t.rows));
            let (rows, merge, notes) = match t.merge_table(i) {
                Some(m) => {
                    let (rows, merge) = db.merge(repo, t, &m, progress).await?;
                    (rows, Some(merge), Vec::new())
                }
                None => {
                    let (rows, notes) = restore_table(repo, &mut db, plan, t, progress).await?;
                    (rows, None, notes)
                }
            };
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes,
                merge,
            });
        }
        // Views, triggers (after the rows: they do not fire on them), AUTOINCREMENT
        // counters and pragmas, in the same transaction.
        let mut notes = Vec::new();
        for o in &plan.made {
            for sql in &o.sql {
                if let Err(e) = db.exec(sql).await {
                    let text = e.to_string();
                    if text.contains("already exists") {
                        notes.push((
                            o.tables.first().cloned(),
                            format!("kept the destination's existing {} {}", o.kind, o.name),
                        ));
                        break;
                    }
                    return Err(Error::Other(format!(
                        "making {} {}: {text}",
                        o.kind, o.name
                    )));
                }
            }
        }
        attach_notes(&mut done, notes);
        db.exec("COMMIT").await?;
        Ok(done)
    }
    .await;
    if result.is_err() {
        let _ = db.exec("ROLLBACK").await;
    }
    result
}

/// Restores one table's rows (making it first for Create/Replace); returns the rows
/// restored and notes on what was left out.
async fn restore_table(
    repo: &Repository,
    db: &mut impl Writer,
    plan: &RestorePlan,
    t: &PlannedTable,
    progress: &dyn Progress,
) -> Result<(u64, Vec<String>)> {
    let mut notes = Vec::new();
    let e = &t.entry;
    if matches!(t.action, Action::Create | Action::Replace) {
        if matches!(t.action, Action::Replace) {
            db.exec(&format!("DROP TABLE {}", quote(&t.dest_table)))
                .await?;
        }
        // Under its own name the table is made by its own statement, text unchanged
        // (sqlite_master keeps it, and `.dump` prints it).
        let create = if t.columns.len() == e.stream_columns.len() && t.dest_table == e.name {
            e.schema.create_sql.clone()
        } else if t.columns.len() == e.stream_columns.len() {
            rename_create_table(&e.schema.create_sql, &t.dest_table)?
        } else {
            create_table_for(&t.dest_table, &t.schema_columns())
        };
        // A foreign key to a table that is neither restored (under that name) nor in the
        // destination cannot hold: the table comes back without it, and says so.
        let mut missing = Vec::new();
        for parent in crate::source::sqlite::foreign_key_parents(&create) {
            let restored = plan
                .tables
                .iter()
                .any(|p| p.dest_table.eq_ignore_ascii_case(&parent));
            if !restored && !db.table_exists(&parent).await? {
                notes.push(format!(
                    "foreign key to {parent} not restored: {parent} does not exist in the destination"
                ));
                missing.push(parent);
            }
        }
        let create = match missing.is_empty() {
            true => create,
            false => crate::source::sqlite::drop_foreign_keys(&create, &missing),
        };
        db.exec(&create).await?;
    }
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
    let kept = load_rows(repo, db, t, &insert, progress).await?;
    if matches!(t.action, Action::Create | Action::Replace)
        && t.columns.len() == e.stream_columns.len()
    {
        for idx in &e.schema.indexes {
            let name = if t.dest_table == e.name {
                idx.name.clone()
            } else {
                format!("{}_{}", t.dest_table, idx.name)
            };
            let sql = if t.dest_table == e.name {
                idx.sql.clone()
            } else {
                rename_create_index(&idx.sql, &name, &t.dest_table)?
            };
            db.exec(&sql).await?;
        }
    }
    Ok((kept, notes))
}

/// Merging rows into an existing table ([`crate::merge`]): on sqlx only.
trait Merging {
    async fn merge(
        &mut self,
        repo: &Repository,
        t: &PlannedTable,
        m: &crate::merge::MergeTable<'_>,
        progress: &dyn Progress,
    ) -> Result<(u64, crate::merge::MergeCounts)>;
}

impl Merging for SqliteDb {
    async fn merge(
        &mut self,
        repo: &Repository,
        t: &PlannedTable,
        m: &crate::merge::MergeTable<'_>,
        progress: &dyn Progress,
    ) -> Result<(u64, crate::merge::MergeCounts)> {
        let insert = crate::merge::prepare_sqlite(self, m).await?;
        let rows = load_rows(repo, self, t, &insert, progress).await?;
        Ok((rows, crate::merge::apply(self, m).await?))
    }
}

impl Merging for LiteConn {
    async fn merge(
        &mut self,
        _: &Repository,
        t: &PlannedTable,
        _: &crate::merge::MergeTable<'_>,
        _: &dyn Progress,
    ) -> Result<(u64, crate::merge::MergeCounts)> {
        // `Destination::execute` opens sqlx whenever the plan merges.
        Err(Error::Other(format!(
            "merging into {} needs the sqlx connection",
            t.dest_table
        )))
    }
}

/// Inserts a table's rows (filtered, projected to the restored columns) with `insert`,
/// checking them against the table's checksum; returns the rows inserted. The rows are
/// decoded here and handed to the connection in batches of about
/// [`bulk::BATCH_ROWS`] rows or [`bulk::BATCH_BYTES`] bytes; a checksum that does not
/// match fails the load after its rows went in, and the caller's transaction rolls them
/// back: nothing is visible until the whole restore commits.
async fn load_rows(
    repo: &Repository,
    db: &mut impl Writer,
    t: &PlannedTable,
    insert: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let (tx, rx) = mpsc::channel(2);
    let written = db.insert(insert, &t.dest_table, rx);
    let (read, written) = tokio::join!(decode_rows(repo, t, tx, progress), written);
    // A failed insert closed the channel: its error is the cause.
    written?;
    read
}

/// The rows of `t` from the repository, decoded, filtered and projected, sent to `out`
/// in batches; checks the table's checksum and row count at the end.
async fn decode_rows(
    repo: &Repository,
    t: &PlannedTable,
    out: mpsc::Sender<Vec<Vec<Value>>>,
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    let keep: Vec<bool> = e
        .stream_columns
        .iter()
        .map(|c| t.columns.contains(c))
        .collect();
    let mut decoder = RowDecoder::new(e.stream_columns.len());
    let mut hasher = crate::checksum::StreamCheck::new(e)?;
    let mut rows = 0u64;
    let mut kept = 0u64;
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    let stopped = || Error::Other(format!("restoring {}: the writer stopped", t.dest_table));
    let mut chunks = crate::segment::table_stream(repo, e)?;
    while let Some(chunk) = chunks.next().await {
        progress.check_abort()?;
        let chunk = chunk?;
        hasher.update(&chunk)?;
        decoder.push(&chunk);
        let mut read = 0u64;
        while let Some(row) = decoder.next_row()? {
            read += 1;
            if !t.filter.matches(&row) {
                continue;
            }
            kept += 1;
            let row: Vec<Value> = if t.columns.len() == e.stream_columns.len() {
                row
            } else {
                row.into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(v, _)| v)
                    .collect()
            };
            batch_bytes += row.iter().map(value_size).sum::<usize>();
            batch.push(row);
            if batch.len() >= bulk::BATCH_ROWS || batch_bytes >= bulk::BATCH_BYTES {
                out.send(std::mem::take(&mut batch))
                    .await
                    .map_err(|_| stopped())?;
                batch_bytes = 0;
            }
        }
        rows += read;
        progress.advanced(read, chunk.len() as u64);
    }
    decoder.finish()?;
    if !batch.is_empty() {
        out.send(batch).await.map_err(|_| stopped())?;
    }
    if !hasher.matches(e) || rows != e.rows {
        return Err(Error::damaged(format!(
            "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
            e.name, e.rows
        )));
    }
    Ok(kept)
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Text(b) | Value::Blob(b) => b.len() + 8,
        _ => 9,
    }
}
