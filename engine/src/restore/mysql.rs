//! Restoring into MySQL/MariaDB: staging tables and one `RENAME TABLE`.

use super::*;

/// A MySQL or MariaDB database.
pub(super) struct Mysql {
    pub(super) db: MyDb,
}

impl Destination for Mysql {
    fn table_exists<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.db.table_exists(name))
    }

    fn cannot_roll_back<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(crate::merge::mysql_engine_without_rollback(
            &mut self.db,
            name,
        ))
    }

    fn execute<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(execute(run, self.db))
    }

    fn preview<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(preview(run, self.db))
    }
}

/// The counts of the plan's merges ([`super::diff`]). The temporary tables first (MySQL
/// makes none in a read-only transaction), then one `READ ONLY` transaction with a
/// consistent snapshot — MySQL then refuses any change but to temporary tables, and
/// its reads of InnoDB tables take no locks — in which the backup's rows load into them
/// and are compared with the destination's by `SELECT`s. (Tables that cannot roll back
/// never get here: the plan refuses merges into them.)
async fn preview(run: Run<'_>, mut db: MyDb) -> Result<Vec<RestoredTable>> {
    use crate::merge::MergeSql;
    let (repo, _, progress) = run.parts();
    let merges = run.merges();
    let result = async {
        let mut stages = Vec::new();
        for (_, m) in &merges {
            stages.push(crate::merge::prepare_mysql(&mut db, m).await?);
        }
        db.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        let mut done = Vec::new();
        for ((t, m), stage) in merges.iter().zip(&stages) {
            progress.table_started(&t.dest_table, Some(t.rows));
            let rows = load_mysql_rows(repo, &mut db, t, stage, progress).await?;
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes: Vec::new(),
                merge: Some(crate::merge::count(&mut db, m).await?),
            });
        }
        Ok(done)
    }
    .await;
    let _ = db.exec("ROLLBACK").await;
    for (_, m) in &merges {
        for drop in MyDb::cleanup(m) {
            let _ = db.exec(&drop).await;
        }
    }
    result
}

/// A MySQL restore. DDL commits implicitly there, so one transaction cannot hold it:
/// tables to create or replace load into `tablesafe_stage_…` tables first (invisible to
/// applications), each checked against its checksum; appended rows go in one
/// transaction; then one `RENAME TABLE` puts every new table in place at once (the
/// replaced ones are dropped after it), and foreign keys are added, checked, last. A
/// failure before the rename changes nothing (the staging tables are dropped).
async fn execute(run: Run<'_>, mut db: MyDb) -> Result<Vec<RestoredTable>> {
    let (repo, plan, progress) = run.parts();
    db.exec("SET FOREIGN_KEY_CHECKS = 0").await?;
    for t in plan
        .tables
        .iter()
        .filter(|t| matches!(t.action, Action::Replace))
    {
        let others: Vec<String> = db
            .referenced_by(&t.dest_table)
            .await?
            .into_iter()
            .filter(|o| !plan.tables.iter().any(|p| &p.dest_table == o))
            .collect();
        if !others.is_empty() {
            return Err(Error::invalid(format!(
                "{} is referenced by foreign keys of {}: restore those tables too, or restore under a new name",
                t.dest_table,
                others.join(", ")
            )));
        }
    }
    let tag = crate::repo::crypto::hex(&rand::random::<[u8; 4]>());
    let mut staged: Vec<(usize, String)> = Vec::new();
    let result = async {
        let mut done = Vec::new();
        for (i, t) in plan.tables.iter().enumerate() {
            if !t.action.creates() {
                done.push(None);
                continue;
            }
            let stage = format!("tablesafe_stage_{tag}_{i}");
            let (create, indexes) = if t.columns.len() == t.entry.stream_columns.len() {
                my::create_sql_for_load(&t.entry.schema.create_sql, &stage)?
            } else {
                (my::create_table_for(&stage, &t.schema_columns()), Vec::new())
            };
            db.exec(&create).await?;
            staged.push((i, stage.clone()));
            progress.table_started(&t.dest_table, Some(t.rows));
            // One connection per table: two inserting into one InnoDB table contend for
            // its last page (measured: 1.2x the server's CPU and slower, on 2 cores).
            db.exec("START TRANSACTION").await?;
            let rows = load_mysql_rows(repo, &mut db, t, &stage, progress).await?;
            db.exec("COMMIT").await?;
            if !indexes.is_empty() {
                db.exec(&format!("ALTER TABLE {} {}", my::quote(&stage), indexes.join(", ")))
                    .await?;
            }
            progress.table_finished(&t.dest_table);
            done.push(Some(rows));
        }
        // Appends and merges: one transaction (temporary tables do not end it).
        let mut merges = vec![None; plan.tables.len()];
        db.exec("START TRANSACTION").await?;
        for (i, t) in plan.tables.iter().enumerate() {
            if t.action.creates() {
                continue;
            }
            progress.table_started(&t.dest_table, Some(t.rows));
            match t.merge_table(i) {
                Some(m) => {
                    let stage = crate::merge::prepare_mysql(&mut db, &m).await?;
                    done[i] = Some(load_mysql_rows(repo, &mut db, t, &stage, progress).await?);
                    merges[i] = Some(crate::merge::apply(&mut db, &m).await?);
                }
                None => {
                    done[i] = Some(load_mysql_rows(repo, &mut db, t, &t.dest_table, progress).await?)
                }
            }
            progress.table_finished(&t.dest_table);
        }
        let mut restored: Vec<RestoredTable> = plan
            .tables
            .iter()
            .zip(done)
            .zip(merges)
            .map(|((t, rows), merge)| RestoredTable {
                table: t.dest_table.clone(),
                rows: rows.unwrap_or(0),
                notes: Vec::new(),
                merge,
            })
            .collect();
        db.exec("COMMIT").await?;
        // Routines need no table: made before the tables appear. (MySQL has no
        // transactional DDL and appended rows are committed by now: an object that
        // cannot be made is reported, not a failed restore that a retry would repeat.)
        let current = current_user(&mut db).await?;
        let mut object_notes = Vec::new();
        for o in plan.made.iter().filter(|o| o.phase == Phase::Before) {
            make_object(&mut db, o, &current, &mut object_notes).await;
        }
        let mut renames = Vec::new();
        let mut olds = Vec::new();
        for (i, stage) in &staged {
            let t = &plan.tables[*i];
            if matches!(t.action, Action::Replace) {
                let old = format!("tablesafe_old_{tag}_{i}");
                renames.push(format!("{} TO {}", my::quote(&t.dest_table), my::quote(&old)));
                olds.push(old);
            }
            renames.push(format!("{} TO {}", my::quote(stage), my::quote(&t.dest_table)));
        }
        if !renames.is_empty() {
            db.exec(&format!("RENAME TABLE {}", renames.join(", ")))
                .await?;
        }
        staged.clear();
        for old in &olds {
            db.exec(&format!("DROP TABLE {}", my::quote(old))).await?;
        }
        db.exec("SET FOREIGN_KEY_CHECKS = 1").await?;
        for (i, t) in plan.tables.iter().enumerate() {
            if !t.action.creates() {
                continue;
            }
            if t.columns.len() != t.entry.stream_columns.len() {
                // Constraints on columns left out cannot come back.
                continue;
            }
            for (name, def) in my::foreign_keys(&t.entry.schema.create_sql) {
                let name = if t.dest_table == t.entry.name {
                    name
                } else {
                    format!("{}_{name}", t.dest_table)
                };
                let referenced = def
                    .split(" REFERENCES ")
                    .nth(1)
                    .and_then(|r| r.strip_prefix('`'))
                    .and_then(|r| r.split('`').next())
                    .unwrap_or("")
                    .to_string();
                if !referenced.is_empty() && !db.table_exists(&referenced).await? {
                    restored[i].notes.push(format!(
                        "foreign key {name} not restored: {referenced} does not exist in the destination"
                    ));
                    continue;
                }
                db.exec(&format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {def}",
                    my::quote(&t.dest_table),
                    my::quote(&name)
                ))
                .await?;
            }
        }
        // Views, triggers and events once the tables are in place.
        for o in plan.made.iter().filter(|o| o.phase == Phase::After) {
            make_object(&mut db, o, &current, &mut object_notes).await;
        }
        attach_notes(&mut restored, object_notes);
        Ok(restored)
    }
    .await;
    if result.is_err() {
        let _ = db.exec("ROLLBACK").await;
        for (_, stage) in &staged {
            let _ = db
                .exec(&format!("DROP TABLE IF EXISTS {}", my::quote(stage)))
                .await;
        }
    }
    result
}

/// The restoring account as a `DEFINER` clause names it: `` `user`@`host` ``.
async fn current_user(db: &mut MyDb) -> Result<String> {
    let who: String = sqlx::query_scalar("SELECT CURRENT_USER()")
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: "reading CURRENT_USER()".into(),
            source: e,
        })?;
    let (user, host) = who.rsplit_once('@').unwrap_or((&who, "%"));
    Ok(format!("{}@{}", my::quote(user), my::quote(host)))
}

/// `sql` with its `DEFINER=…` clause, and the account it names when that is not the
/// restoring one (it is then replaced by `CURRENT_USER`: making objects for another
/// account needs SUPER or SET USER, and that account may not exist here).
fn definer(sql: &str, current: &str) -> (String, Option<String>) {
    let Some(at) = sql.find("DEFINER=") else {
        return (sql.to_string(), None);
    };
    let rest = &sql[at + "DEFINER=".len()..];
    // `user`@`host`: two backquoted names (backquotes doubled inside).
    let mut end = 0;
    let mut quotes = 0;
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            if quotes % 2 == 1 && bytes.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            quotes += 1;
            if quotes == 4 {
                end = i + 1;
                break;
            }
        }
        i += 1;
    }
    if end == 0 {
        return (sql.to_string(), None);
    }
    let account = &rest[..end];
    if account == current {
        return (sql.to_string(), None);
    }
    (
        format!("{}DEFINER=CURRENT_USER{}", &sql[..at], &rest[end..]),
        Some(account.to_string()),
    )
}

/// Makes one object. One the destination already has is kept, and one that cannot be
/// made (or whose statement is not a CREATE) is left out; both with a note.
async fn make_object(
    db: &mut MyDb,
    o: &SchemaObject,
    current: &str,
    notes: &mut Vec<(Option<String>, String)>,
) {
    use sqlx::Executor;
    let table = o.tables.first().cloned();
    let mut made = true;
    for sql in &o.sql {
        let is_setting = sql.starts_with("SET ");
        if !made && !is_setting {
            continue;
        }
        if !is_setting && !sql.starts_with("CREATE ") {
            notes.push((
                table.clone(),
                format!(
                    "{} {} not made: its statement is not a CREATE",
                    o.kind, o.name
                ),
            ));
            made = false;
            continue;
        }
        let (sql, replaced) = definer(sql, current);
        // A view's statement goes as one prepared statement (it cannot carry another
        // along); routines, triggers and events have compound bodies MySQL does not
        // prepare.
        let result = if o.kind == ObjectKind::View && !is_setting {
            sqlx::query(&sql)
                .persistent(false)
                .execute(&mut db.conn)
                .await
                .map(|_| ())
        } else {
            db.conn.execute(sql.as_str()).await.map(|_| ())
        };
        if let Err(e) = result {
            let number = e
                .as_database_error()
                .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
                .map(|d| d.number());
            // Exists already: table/view 1050, routine 1304, trigger 1359, event 1537.
            let note = if matches!(number, Some(1050 | 1304 | 1359 | 1537)) {
                format!("kept the destination's existing {} {}", o.kind, o.name)
            } else {
                format!("{} {} not made: {e}", o.kind, o.name)
            };
            notes.push((table.clone(), note));
            made = false;
            continue;
        }
        if let Some(account) = replaced {
            notes.push((
                table.clone(),
                format!(
                    "{} {}: definer {account} replaced by the restoring account {current}",
                    o.kind, o.name
                ),
            ));
        }
    }
}

/// Rows on their way to the loading connection.
enum Piece {
    Rows(Vec<Vec<crate::model::Value>>),
    /// The rows turned out damaged (or the restore was cancelled): stop.
    Abort,
}

/// Parameters in one `INSERT` at most (a prepared statement takes 65,535), and rows
/// (batches of 3,000 rows instead of 500 took MariaDB 1.2x the CPU per row here).
const BATCH_PARAMS: usize = 60_000;
const BATCH_ROWS: usize = 500;
/// Value bytes in one `INSERT` at most, far below the smallest `max_allowed_packet`
/// (MySQL 8's default is 64 MiB, MariaDB's 16 MiB): wide rows make smaller batches.
const BATCH_BYTES: usize = 2 << 20;

/// Inserts a table's rows (filtered) into `into` on `db` (in the transaction its caller
/// opened), in multi-row statements, checking them against the table's checksum;
/// returns the rows inserted. Reading and decoding the repository's stream runs
/// alongside the inserts, so the server is not left waiting for the next batch.
async fn load_mysql_rows(
    repo: &Repository,
    db: &mut MyDb,
    t: &PlannedTable,
    into: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
    let consume = async {
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Rows(rows) => db.insert_rows(into, &t.columns, &rows).await?,
                Piece::Abort => return Ok(()),
            }
        }
        Ok::<(), Error>(())
    };
    let produce = async move {
        let result = produce_rows(repo, t, &tx, progress).await;
        if result.is_err() {
            let _ = tx.send(Piece::Abort).await;
        }
        result
    };
    match futures::join!(produce, consume) {
        (Ok(rows), Ok(())) => Ok(rows),
        // Damage or a cancel is the cause; otherwise a failed insert explains a
        // producer that could not hand it rows.
        (Err(e), _) if matches!(e, Error::Damaged(_) | Error::Cancelled) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
    }
}

/// Decodes a table's rows, keeps those the filter passes (projected to the restored
/// columns) and hands them to the loader in batches.
async fn produce_rows(
    repo: &Repository,
    t: &PlannedTable,
    tx: &tokio::sync::mpsc::Sender<Piece>,
    progress: &dyn Progress,
) -> Result<u64> {
    let batch_rows = (BATCH_PARAMS / t.columns.len().max(1)).clamp(1, BATCH_ROWS);
    let keep: Vec<usize> = t
        .columns
        .iter()
        .filter_map(|c| t.entry.stream_columns.iter().position(|s| s == c))
        .collect();
    let all = keep.len() == t.entry.stream_columns.len();
    let mut reader = crate::export::TableRows::open(repo, &t.entry)?;
    let mut kept = 0u64;
    let mut pending: Vec<Vec<crate::model::Value>> = Vec::with_capacity(batch_rows);
    let mut pending_bytes = 0usize;
    let stopped = || Error::Other("the loading connection stopped".into());
    while let Some((rows, bytes)) = reader.next_batch().await? {
        progress.check_abort()?;
        let n = rows.len() as u64;
        for row in rows.into_iter().filter(|r| t.filter.matches(r)) {
            kept += 1;
            let row = if all {
                row
            } else {
                keep.iter().map(|&i| row[i].clone()).collect()
            };
            pending_bytes += row.iter().map(value_bytes).sum::<usize>();
            pending.push(row);
            if pending.len() == batch_rows || pending_bytes >= BATCH_BYTES {
                let full = std::mem::replace(&mut pending, Vec::with_capacity(batch_rows));
                pending_bytes = 0;
                tx.send(Piece::Rows(full)).await.map_err(|_| stopped())?;
            }
        }
        progress.advanced(n, bytes);
    }
    if !pending.is_empty() {
        tx.send(Piece::Rows(pending)).await.map_err(|_| stopped())?;
    }
    Ok(kept)
}

/// About what a value adds to an `INSERT`'s packet.
fn value_bytes(v: &crate::model::Value) -> usize {
    use crate::model::Value;
    match v {
        Value::Text(b) | Value::Blob(b) => b.len() + 9,
        _ => 9,
    }
}
