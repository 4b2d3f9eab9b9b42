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

    fn execute<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(execute(run, self.db))
    }
}

/// A MySQL restore. DDL commits implicitly there, so one transaction cannot hold it:
/// tables to create or replace load into `tablesafe_stage_…` tables first (invisible to
/// applications), each checked against its checksum; appended rows go in one
/// transaction; then one `RENAME TABLE` puts every new table in place at once (the
/// replaced ones are dropped after it), and foreign keys are added, checked, last. A
/// failure before the rename changes nothing (the staging tables are dropped).
async fn execute(run: Run<'_>, mut db: MyDb) -> Result<Vec<RestoredTable>> {
    let (repo, plan, progress, dry) = run.parts();
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
            let create = if t.columns.len() == t.entry.stream_columns.len() {
                my::create_sql_without_foreign_keys(&t.entry.schema.create_sql, &stage)?
            } else {
                my::create_table_for(&stage, &t.schema_columns())
            };
            db.exec(&create).await?;
            staged.push((i, stage.clone()));
            progress.table_started(&t.dest_table, Some(t.rows));
            db.exec("START TRANSACTION").await?;
            let rows = load_mysql_rows(repo, &mut db, t, &stage, progress).await?;
            db.exec("COMMIT").await?;
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
            match t.action.merge() {
                Some(mode) => {
                    let m = t.merge_table(mode);
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
        if dry {
            // A dry run (restore::diff) holds only merges: nothing to put in place.
            db.exec("ROLLBACK").await?;
            return Ok(restored);
        }
        db.exec("COMMIT").await?;
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

/// Inserts a table's rows (filtered) into `into`, in multi-row statements, checking them
/// against the table's checksum; returns the rows inserted.
async fn load_mysql_rows(
    repo: &Repository,
    db: &mut MyDb,
    t: &PlannedTable,
    into: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let batch = (60_000 / t.columns.len().max(1)).clamp(1, 500);
    let keep: Vec<usize> = t
        .columns
        .iter()
        .filter_map(|c| t.entry.stream_columns.iter().position(|s| s == c))
        .collect();
    let all = keep.len() == t.entry.stream_columns.len();
    let mut reader = crate::export::TableRows::open(repo, &t.entry)?;
    let mut kept = 0u64;
    let mut pending: Vec<Vec<crate::model::Value>> = Vec::with_capacity(batch);
    while let Some((rows, bytes)) = reader.next_batch().await? {
        progress.check_abort()?;
        let n = rows.len() as u64;
        for row in rows.into_iter().filter(|r| t.filter.matches(r)) {
            kept += 1;
            pending.push(if all {
                row
            } else {
                keep.iter().map(|&i| row[i].clone()).collect()
            });
            if pending.len() == batch {
                db.insert_rows(into, &t.columns, &pending).await?;
                pending.clear();
            }
        }
        progress.advanced(n, bytes);
    }
    db.insert_rows(into, &t.columns, &pending).await?;
    Ok(kept)
}
