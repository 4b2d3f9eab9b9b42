//! Restoring into SQLite: one `BEGIN IMMEDIATE` transaction, foreign keys deferred.

use super::*;

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
            execute(run, SqliteDb::open_write(&self.path).await?).await
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
            let rows = load_sqlite_rows(repo, &mut db, t, &insert, progress).await?;
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

async fn execute(run: Run<'_>, mut db: SqliteDb) -> Result<Vec<RestoredTable>> {
    let (repo, plan, progress) = run.parts();
    db.exec("BEGIN IMMEDIATE").await?;
    let result = async {
        db.exec("PRAGMA defer_foreign_keys = ON").await?;
        let mut done = Vec::new();
        for (i, t) in plan.tables.iter().enumerate() {
            progress.table_started(&t.dest_table, Some(t.rows));
            let (rows, merge, notes) = match t.merge_table(i) {
                Some(m) => {
                    let insert = crate::merge::prepare_sqlite(&mut db, &m).await?;
                    let rows = load_sqlite_rows(repo, &mut db, t, &insert, progress).await?;
                    let merge = crate::merge::apply(&mut db, &m).await?;
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
    db: &mut SqliteDb,
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
    let kept = load_sqlite_rows(repo, db, t, &insert, progress).await?;
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

/// Inserts a table's rows (filtered, projected to the restored columns) with `insert`,
/// checking them against the table's checksum; returns the rows inserted.
async fn load_sqlite_rows(
    repo: &Repository,
    db: &mut SqliteDb,
    t: &PlannedTable,
    insert: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    let keep: Vec<bool> = e
        .stream_columns
        .iter()
        .map(|c| t.columns.contains(c))
        .collect();
    let mut decoder = RowDecoder::new(e.stream_columns.len());
    let mut hasher = blake3::Hasher::new();
    let mut rows = 0u64;
    let mut kept = 0u64;
    let mut chunks = crate::segment::table_stream(repo, e)?;
    while let Some(chunk) = chunks.next().await {
        progress.check_abort()?;
        let chunk = chunk?;
        hasher.update(&chunk);
        decoder.push(&chunk);
        let mut batch = 0u64;
        while let Some(row) = decoder.next_row()? {
            batch += 1;
            if !t.filter.matches(&row) {
                continue;
            }
            kept += 1;
            let row = if t.columns.len() == e.stream_columns.len() {
                row
            } else {
                row.into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(v, _)| v)
                    .collect()
            };
            db.insert(insert, row).await?;
        }
        rows += batch;
        progress.advanced(batch, chunk.len() as u64);
    }
    decoder.finish()?;
    if !e.checksum.matches(&hasher.finalize()) || rows != e.rows {
        return Err(Error::damaged(format!(
            "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
            e.name, e.rows
        )));
    }
    Ok(kept)
}
