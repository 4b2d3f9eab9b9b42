//! Applying captured changes on a restored snapshot: set-wise per table (the net
//! effect on each row), or statement by statement when a table's columns changed.

use super::change::{Cell, Op, Relation};
use super::pitr::{PitrBase, captured_throughout};
use super::segment::read_segment;
use crate::model::XidSnapshot;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::postgres::{copy_into_temp, quote};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// A table a replay writes to: where its rows went and which columns it has.
#[derive(Debug, Clone)]
pub struct ReplayTarget {
    /// The destination relation, quoted.
    pub rel: String,
    pub columns: Vec<String>,
}

/// What a replay applied.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Replayed {
    pub transactions: u64,
    pub changes: u64,
    /// The commit time of the last transaction applied.
    pub last_commit_ms: Option<i64>,
}

fn literal(cell: &Cell) -> Result<String> {
    Ok(match cell {
        Cell::Null => "NULL".into(),
        Cell::Text(b) => {
            let s = std::str::from_utf8(b)
                .map_err(|_| Error::Other("a captured value is not UTF-8".into()))?;
            format!("'{}'", s.replace('\'', "''"))
        }
        Cell::Unchanged => unreachable!("unchanged values are skipped"),
    })
}

fn where_key(rel: &Relation, key_cells: &[Cell], target: &ReplayTarget) -> Result<String> {
    let mut parts = Vec::new();
    for ((col, is_key), cell) in rel.columns.iter().zip(key_cells) {
        if !is_key {
            continue;
        }
        if !target.columns.contains(col) {
            return Err(Error::invalid(format!(
                "point-in-time restore of {} needs its key column {col}",
                rel.name
            )));
        }
        match cell {
            Cell::Null | Cell::Unchanged => {
                return Err(Error::Other(format!(
                    "a captured change of {} has no key value",
                    rel.name
                )));
            }
            c => parts.push(format!("{} = {}", quote(col), literal(c)?)),
        }
    }
    if parts.is_empty() {
        return Err(Error::invalid(format!(
            "{} has no key in the captured changes",
            rel.name
        )));
    }
    Ok(parts.join(" AND "))
}

/// The SQL for one change, or None when it touches no restored column.
fn statement(op: &Op, targets: &HashMap<String, ReplayTarget>) -> Result<Option<String>> {
    let rel = match op {
        Op::Insert { rel, .. }
        | Op::Update { rel, .. }
        | Op::Delete { rel, .. }
        | Op::Truncate { rel } => rel,
    };
    let Some(t) = targets.get(&rel.name) else {
        return Ok(None);
    };
    Ok(Some(match op {
        Op::Insert { new, .. } => {
            let mut cols = Vec::new();
            let mut vals = Vec::new();
            for ((col, _), cell) in rel.columns.iter().zip(new) {
                if t.columns.contains(col) && *cell != Cell::Unchanged {
                    cols.push(quote(col));
                    vals.push(literal(cell)?);
                }
            }
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                t.rel,
                cols.join(", "),
                vals.join(", ")
            )
        }
        Op::Update { old, new, .. } => {
            let mut sets = Vec::new();
            for ((col, _), cell) in rel.columns.iter().zip(new) {
                if t.columns.contains(col) && *cell != Cell::Unchanged {
                    sets.push(format!("{} = {}", quote(col), literal(cell)?));
                }
            }
            let key = where_key(rel, old.as_deref().unwrap_or(new), t)?;
            if sets.is_empty() {
                return Ok(None);
            }
            format!("UPDATE {} SET {} WHERE {key}", t.rel, sets.join(", "))
        }
        Op::Delete { old, .. } => {
            format!("DELETE FROM {} WHERE {}", t.rel, where_key(rel, old, t)?)
        }
        Op::Truncate { .. } => format!("DELETE FROM {}", t.rel),
    }))
}

async fn run_batch(conn: &mut sqlx::PgConnection, sql: String) -> Result<()> {
    if sql.is_empty() {
        return Ok(());
    }
    // A query without arguments goes as one simple-protocol message: many statements,
    // one round trip.
    sqlx::Executor::execute(&mut *conn, sql.as_str())
        .await
        .map(|_| ())
        .map_err(|e| Error::Database {
            context: "replaying captured changes".into(),
            source: e,
        })
}

/// Applies the captured transactions of `base` on the restored tables, on `conn`
/// (inside the restore's transaction): those the snapshot does not see, committed at or
/// before `base.at_ms`, in commit order, in batches of statements.
pub async fn replay(
    repo: &Repository,
    base: &PitrBase,
    targets: &HashMap<String, ReplayTarget>,
    conn: &mut sqlx::PgConnection,
    progress: &dyn Progress,
) -> Result<Replayed> {
    let point = base
        .snapshot
        .pg_point
        .as_ref()
        .ok_or_else(|| Error::Other("the snapshot has no change position".into()))?;
    let seen = &point.xid_snapshot;
    for name in targets.keys() {
        if !captured_throughout(&base.segments, name) {
            return Err(Error::invalid(format!(
                "{name} was not captured (tables without a primary key are not); restore it from a snapshot instead"
            )));
        }
    }
    // The net effect per row, applied set-wise (two COPYs per table) instead of one
    // statement per change: the state at T is the snapshot with every changed key's
    // final version in place. Statements remain the fallback when a table's columns
    // changed within the window.
    let mut done = Replayed::default();
    let mut net: HashMap<String, NetTable> = HashMap::new();
    let mut consistent = true;
    'segments: for seg in &base.segments {
        progress.check_abort()?;
        for txn in read_segment(repo, seg).await? {
            if txn.end_lsn <= point.wal_lsn || seen.sees(txn.xid) || txn.commit_ms > base.at_ms {
                continue;
            }
            let mut any = false;
            for op in &txn.ops {
                let rel = op.rel();
                if !targets.contains_key(&rel.name) {
                    continue;
                }
                let table = net.entry(rel.name.clone()).or_insert_with(|| NetTable {
                    columns: rel.columns.clone(),
                    ..Default::default()
                });
                if table.columns != rel.columns {
                    consistent = false;
                    break 'segments;
                }
                table.apply(op)?;
                done.changes += 1;
                any = true;
            }
            if any {
                done.transactions += 1;
                done.last_commit_ms = Some(txn.commit_ms);
            }
        }
    }
    if consistent {
        for (name, table) in &net {
            table.write(&targets[name], conn).await?;
        }
        return Ok(done);
    }
    replay_statements(repo, base, targets, conn, progress, seen, point.wal_lsn).await
}

/// The changes of one table folded into each row's final version.
#[derive(Default)]
struct NetTable {
    columns: Vec<(String, bool)>,
    /// Emptied at some point: the snapshot's rows are all gone.
    truncated: bool,
    /// Key cells → the row's last version (None: deleted). A version may hold
    /// `Unchanged` cells when the row's earlier version is the snapshot's.
    rows: HashMap<Vec<Cell>, Option<Vec<Cell>>>,
}

impl NetTable {
    fn key(&self, name: &str, cells: &[Cell]) -> Result<Vec<Cell>> {
        let key: Vec<Cell> = self
            .columns
            .iter()
            .zip(cells)
            .filter(|((_, is_key), _)| *is_key)
            .map(|(_, c)| c.clone())
            .collect();
        if key.is_empty() || key.iter().any(|c| !matches!(c, Cell::Text(_))) {
            return Err(Error::Other(format!(
                "a captured change of {name} has no key value"
            )));
        }
        Ok(key)
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        let name = &op.rel().name;
        match op {
            Op::Insert { new, .. } => {
                let k = self.key(name, new)?;
                self.rows.insert(k, Some(new.clone()));
            }
            Op::Update { old, new, .. } => {
                let k_new = self.key(name, new)?;
                let k_old = match old {
                    Some(o) => self.key(name, o)?,
                    None => k_new.clone(),
                };
                let merged = match self.rows.get(&k_old) {
                    Some(Some(prev)) => new
                        .iter()
                        .zip(prev)
                        .map(|(n, p)| {
                            if *n == Cell::Unchanged {
                                p.clone()
                            } else {
                                n.clone()
                            }
                        })
                        .collect(),
                    _ => new.clone(),
                };
                if k_old != k_new {
                    self.rows.insert(k_old, None);
                }
                self.rows.insert(k_new, Some(merged));
            }
            Op::Delete { old, .. } => {
                let k = self.key(name, old)?;
                self.rows.insert(k, None);
            }
            Op::Truncate { .. } => {
                self.truncated = true;
                self.rows.clear();
            }
        }
        Ok(())
    }

    /// Deletes every changed key, inserts the final versions (COPY into temporary
    /// tables, then one statement each), and updates in place the rows whose final
    /// version kept a value from the snapshot.
    async fn write(&self, t: &ReplayTarget, conn: &mut sqlx::PgConnection) -> Result<()> {
        let key_cols: Vec<&String> = self
            .columns
            .iter()
            .filter(|(_, k)| *k)
            .map(|(c, _)| c)
            .collect();
        for c in &key_cols {
            if !t.columns.contains(c) {
                return Err(Error::invalid(format!(
                    "point-in-time restore of {} needs its key column {c}",
                    t.rel
                )));
            }
        }
        // The restored columns the stream has, in the stream's order.
        let cols: Vec<(usize, &String)> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, (c, _))| t.columns.contains(c))
            .map(|(i, (c, _))| (i, c))
            .collect();
        let quoted = |cs: &[&String]| cs.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let all_cols: Vec<&String> = cols.iter().map(|(_, c)| *c).collect();
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        let mut partial = String::new();
        // For the rows updated in place: this table under its destination name.
        let in_place = HashMap::from([(t.rel.clone(), t.clone())]);
        let rel = Arc::new(Relation {
            oid: 0,
            name: t.rel.clone(),
            columns: self.columns.clone(),
        });
        for (k, row) in &self.rows {
            match row {
                Some(r) if r.contains(&Cell::Unchanged) => {
                    if let Some(sql) = statement(
                        &Op::Update {
                            rel: rel.clone(),
                            old: None,
                            new: r.clone(),
                        },
                        &in_place,
                    )? {
                        partial.push_str(&sql);
                        partial.push_str(";\n");
                    }
                }
                Some(r) => {
                    copy_line(&mut keys, k.iter());
                    copy_line(&mut rows, cols.iter().map(|(i, _)| &r[*i]));
                }
                None => copy_line(&mut keys, k.iter()),
            }
        }
        if self.truncated {
            run_batch(conn, format!("DELETE FROM {}", t.rel)).await?;
        }
        if !keys.is_empty() && !self.truncated {
            copy_into_temp(
                conn,
                "tablesafe_replay_keys",
                &quoted(&key_cols),
                &t.rel,
                &keys,
            )
            .await?;
            let on: Vec<String> = key_cols
                .iter()
                .map(|c| format!("t.{q} = k.{q}", q = quote(c)))
                .collect();
            run_batch(
                conn,
                format!(
                    "DELETE FROM {} t USING tablesafe_replay_keys k WHERE {}; DROP TABLE tablesafe_replay_keys",
                    t.rel,
                    on.join(" AND ")
                ),
            )
            .await?;
        }
        if !rows.is_empty() {
            copy_into_temp(
                conn,
                "tablesafe_replay_rows",
                &quoted(&all_cols),
                &t.rel,
                &rows,
            )
            .await?;
            run_batch(
                conn,
                format!(
                    "INSERT INTO {rel} ({c}) SELECT {c} FROM tablesafe_replay_rows; DROP TABLE tablesafe_replay_rows",
                    rel = t.rel,
                    c = quoted(&all_cols)
                ),
            )
            .await?;
        }
        run_batch(conn, partial).await
    }
}

/// One line of COPY's text format.
fn copy_line<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = &'a Cell>) {
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match c {
            Cell::Null | Cell::Unchanged => out.extend_from_slice(b"\\N"),
            Cell::Text(b) => {
                for &byte in b {
                    match byte {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        _ => out.push(byte),
                    }
                }
            }
        }
    }
    out.push(b'\n');
}

/// The statement-per-change replay, for windows in which a table's columns changed.
async fn replay_statements(
    repo: &Repository,
    base: &PitrBase,
    targets: &HashMap<String, ReplayTarget>,
    conn: &mut sqlx::PgConnection,
    progress: &dyn Progress,
    seen: &XidSnapshot,
    wal_lsn: u64,
) -> Result<Replayed> {
    let mut done = Replayed::default();
    let mut batch = String::new();
    let mut in_batch = 0;
    for seg in &base.segments {
        progress.check_abort()?;
        for txn in read_segment(repo, seg).await? {
            if txn.end_lsn <= wal_lsn || seen.sees(txn.xid) || txn.commit_ms > base.at_ms {
                continue;
            }
            let mut any = false;
            for op in &txn.ops {
                if let Some(sql) = statement(op, targets)? {
                    batch.push_str(&sql);
                    batch.push_str(";\n");
                    in_batch += 1;
                    done.changes += 1;
                    any = true;
                }
            }
            if any {
                done.transactions += 1;
                done.last_commit_ms = Some(txn.commit_ms);
            }
            if in_batch >= 500 {
                run_batch(conn, std::mem::take(&mut batch)).await?;
                in_batch = 0;
            }
        }
    }
    run_batch(conn, std::mem::take(&mut batch)).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::change::tests::rel;

    #[test]
    fn visibility_follows_the_snapshot() {
        let s = XidSnapshot::parse("100:105:101,103").unwrap();
        assert!(s.sees(99));
        assert!(s.sees(100));
        assert!(!s.sees(101));
        assert!(s.sees(102));
        assert!(!s.sees(103));
        assert!(!s.sees(105));
        assert!(!s.sees(200));
        // With an epoch: 32-bit ids are widened by the snapshot's.
        let e =
            XidSnapshot::parse(&format!("{}:{}:", (1u64 << 32) + 10, (1u64 << 32) + 20)).unwrap();
        assert!(e.sees(5));
        assert!(!e.sees(25));
    }

    #[test]
    fn statements_quote_values_and_keep_unchanged_columns() {
        let r = rel();
        let mut targets = HashMap::new();
        targets.insert(
            "public.t".to_string(),
            ReplayTarget {
                rel: "\"public\".\"t2\"".into(),
                columns: vec!["id".into(), "v".into()],
            },
        );
        let ins = Op::Insert {
            rel: r.clone(),
            new: vec![Cell::Text(b"1".to_vec()), Cell::Text(b"O'Brien".to_vec())],
        };
        assert_eq!(
            statement(&ins, &targets).unwrap().unwrap(),
            "INSERT INTO \"public\".\"t2\" (\"id\", \"v\") VALUES ('1', 'O''Brien')"
        );
        let upd = Op::Update {
            rel: r.clone(),
            old: None,
            new: vec![Cell::Text(b"1".to_vec()), Cell::Unchanged],
        };
        assert_eq!(
            statement(&upd, &targets).unwrap().unwrap(),
            "UPDATE \"public\".\"t2\" SET \"id\" = '1' WHERE \"id\" = '1'",
            "an unchanged TOASTed value is left alone"
        );
        let upd = Op::Update {
            rel: r.clone(),
            old: Some(vec![Cell::Text(b"1".to_vec()), Cell::Null]),
            new: vec![Cell::Text(b"9".to_vec()), Cell::Null],
        };
        assert_eq!(
            statement(&upd, &targets).unwrap().unwrap(),
            "UPDATE \"public\".\"t2\" SET \"id\" = '9', \"v\" = NULL WHERE \"id\" = '1'"
        );
        let other = Op::Truncate {
            rel: Arc::new(Relation {
                oid: 8,
                name: "public.x".into(),
                columns: vec![],
            }),
        };
        assert_eq!(statement(&other, &targets).unwrap(), None, "not restored");
    }
}
