//! PostgreSQL as a backup source: one REPEATABLE READ transaction on one connection for
//! discovery and every table, including a delta's fallback re-read (crate docs, "What
//! makes a snapshot consistent"). Issue 10's report of restores whose pgbench sums
//! disagreed came from pgbench truncating pgbench_history before each run (no `-n`),
//! not from here: the source disagreed too. Tables are read as COPY text; a keyed
//! table's delta may be built from only the rows changed since its parent
//! ([`changes_only`]).

use super::feed::Feed;
use super::plan::{Plan, changed_since, chosen_columns};
use super::{Planned, SourceReader};
use crate::model::{Engine, PgPoint, Skipped, Snapshot, StreamFormat, TableEntry, TableSchema};
use crate::repo::Repository;
use crate::secret::Secret;
use crate::segment::{Key, KeySpec, Merged, cmp_key, push_delete, push_upsert};
use crate::source::postgres::{PgDb, PgTableInfo};
use crate::{Error, Result};
use futures::StreamExt;

pub(super) struct Reader {
    db: PgDb,
    point: Option<PgPoint>,
    /// To connect helpers ([`SourceReader::helpers`]).
    url: Secret<String>,
    display: String,
}

impl Reader {
    pub(super) async fn connect(url: &Secret<String>, display: String) -> Result<Self> {
        Ok(Reader {
            db: PgDb::connect(url, display.clone()).await?,
            point: None,
            url: url.clone(),
            display,
        })
    }
}

impl SourceReader for Reader {
    const ENGINE: Engine = Engine::Postgres;
    type Db = PgDb;

    async fn begin(&mut self) -> Result<()> {
        self.point = self.db.begin_snapshot_at().await?;
        Ok(())
    }

    fn db(&mut self) -> &mut PgDb {
        &mut self.db
    }

    fn plan_table(
        &mut self,
        info: &PgTableInfo,
        wanted: Option<&Vec<String>>,
        _skipped: &mut Vec<Skipped>,
    ) -> Result<Plan> {
        let columns = chosen_columns(&info.name, &info.data_columns, &info.pk, wanted)?;
        let schema = TableSchema {
            columns: Vec::new(),
            create_sql: String::new(),
            indexes: Vec::new(),
            references: info.references.clone(),
            all_columns: columns.len() == info.data_columns.len(),
            postgres: Some(info.table.clone()),
        };
        let sql = PgDb::copy_out_sql(info, &columns);
        Ok(Plan::new(
            info.name.clone(),
            schema,
            columns,
            StreamFormat::PgCopyText,
            sql,
        ))
    }

    /// Tables whose parent has the same column definitions read only the rows changed
    /// since it, when the server's history allows ([`changed_since`]).
    fn narrow(&self, latest: &Snapshot, planned: &mut Planned) {
        let Some(now) = &self.point else { return };
        let Some(xid) = changed_since(latest, now, &planned.enums) else {
            return;
        };
        for plan in planned.plans.iter_mut() {
            let same_columns = |p: &TableEntry| {
                let cols = |s: &TableSchema| s.postgres.as_ref().map(|d| d.columns.clone());
                cols(&p.schema) == cols(&plan.schema) && cols(&p.schema).is_some()
            };
            if plan.parent.as_ref().is_some_and(same_columns) {
                plan.changed_since = Some(xid);
            }
        }
    }

    async fn fill(&mut self, _i: usize, plan: &Plan, feed: &mut Feed<'_>) -> Result<()> {
        let mut stream = self.db.copy_out(&plan.sql).await?;
        while let Some(piece) = stream.next().await {
            feed.push(&piece?).await?;
            if feed.restart {
                break;
            }
        }
        // Reading stopped early: the COPY must finish before the connection is reused.
        while feed.restart && stream.next().await.is_some() {}
        Ok(())
    }

    async fn changes_only(
        &mut self,
        repo: &Repository,
        plan: &Plan,
        since: u64,
        feed: &mut Feed<'_>,
    ) -> Result<bool> {
        changes_only(repo, &mut self.db, plan, since, feed).await
    }

    fn point(&self) -> Option<PgPoint> {
        self.point.clone()
    }

    /// Exports this transaction's snapshot and starts each helper's transaction on it:
    /// `SET TRANSACTION SNAPSHOT` as the first statement of a REPEATABLE READ
    /// transaction makes it see exactly what this one sees. This transaction stays open
    /// until the helpers commit (the export is valid only while it is).
    async fn helpers(&mut self, n: usize) -> Result<Vec<Self>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // A server or role that cannot export (a standby before PostgreSQL 10, some
        // PostgreSQL-compatible engines) reads on one connection; the failed statement
        // would abort the transaction, hence the savepoint.
        self.db.exec("SAVEPOINT tablesafe_export").await?;
        let exported: std::result::Result<String, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut self.db.conn)
                .await;
        let snapshot = match exported {
            Ok(s) => {
                self.db.exec("RELEASE SAVEPOINT tablesafe_export").await?;
                s
            }
            Err(_) => {
                self.db
                    .exec("ROLLBACK TO SAVEPOINT tablesafe_export")
                    .await?;
                return Ok(Vec::new());
            }
        };
        let join = format!(
            "SET TRANSACTION SNAPSHOT {}",
            crate::source::sql_string(&snapshot)
        );
        let connect = |_| async {
            let mut db = PgDb::connect(&self.url, self.display.clone()).await?;
            db.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            db.exec(&join).await?;
            Ok::<_, Error>(Reader {
                db,
                point: None,
                url: self.url.clone(),
                display: self.display.clone(),
            })
        };
        // A helper that cannot connect or join (max_connections reached, say) only
        // costs speed: the tables are shared among the readers there are.
        let joined = futures::future::join_all((0..n).map(connect)).await;
        Ok(joined.into_iter().filter_map(|r| r.ok()).collect())
    }

    async fn sizes(&mut self, plans: &[Plan]) -> Result<Vec<u64>> {
        use crate::source::postgres::qualified;
        let rels: Vec<String> = plans
            .iter()
            .map(|p| match &p.schema.postgres {
                Some(t) => qualified(&t.schema, &t.name),
                None => String::new(),
            })
            .collect();
        // to_regclass: a table dropped meanwhile is 0, never an error.
        let sizes: Vec<Option<i64>> = sqlx::query_scalar(
            "SELECT pg_table_size(to_regclass(r)) FROM unnest($1::text[]) WITH ORDINALITY AS t(r, i) ORDER BY i",
        )
        .bind(&rels)
        .fetch_all(&mut self.db.conn)
        .await
        .map_err(|e| Error::Other(format!("reading table sizes: {e}")))?;
        Ok(sizes
            .into_iter()
            .map(|s| s.unwrap_or(0).max(0) as u64)
            .collect())
    }

    async fn split(&mut self, plan: &Plan, n: usize) -> Result<Vec<String>> {
        split(&mut self.db, plan, n).await
    }

    async fn fill_part(&mut self, sql: &str, feed: &mut Feed<'_>) -> Result<()> {
        let mut stream = self.db.copy_out(sql).await?;
        while let Some(piece) = stream.next().await {
            feed.push(&piece?).await?;
        }
        Ok(())
    }
}

/// A part holds the rows before its first block boundary (16 on average, checksum
/// module docs) until it is joined to the part before it: a table whose rows average
/// more than this by `pg_table_size` is read whole, so that memory stays flat in row
/// width. (That size is after compression: values that compress well still split, and
/// their part heads are held whole, costing memory, never correctness.)
const SPLIT_MAX_ROW_BYTES: u64 = 64 << 10;

/// The COPY statements reading `plan` in about `n` parts of equal size, in stream
/// order, all in this transaction's snapshot. A keyed table is cut by ranges of its
/// first key column (bounds from the column's histogram in `pg_stats`, or from the
/// snapshot's own rows when there are no statistics), each part ordered by the whole
/// key like the table's one read; the parts' streams concatenated are the table's
/// stream. Empty: not split (a table without a key: its checksum is the BLAKE3 of the
/// whole stream, which does not combine over parts).
async fn split(db: &mut PgDb, plan: &Plan, n: usize) -> Result<Vec<String>> {
    use crate::source::postgres::{column_list, qualified, quote};
    let Some(def) = plan.schema.postgres.as_ref() else {
        return Ok(Vec::new());
    };
    if n < 2 {
        return Ok(Vec::new());
    }
    let rel = qualified(&def.schema, &def.name);
    let cols = column_list(&plan.columns);
    // Only keyed tables are split: their checksum combines over key ranges.
    if def.pk.is_empty() {
        return Ok(Vec::new());
    }
    let first = &def.pk[0];
    let Some(column) = def.columns.iter().find(|c| &c.name == first) else {
        return Ok(Vec::new());
    };
    // Rows wide on average are read whole (SPLIT_MAX_ROW_BYTES).
    let (tuples, size): (f32, i64) = sqlx::query_as(
        "SELECT reltuples, pg_table_size(oid) FROM pg_class WHERE oid = to_regclass($1)",
    )
    .bind(&rel)
    .fetch_optional(&mut db.conn)
    .await
    .map_err(|e| Error::Other(format!("reading the size of {rel}: {e}")))?
    .unwrap_or((0.0, 0));
    let wide = |rows: f64| rows >= 1.0 && size as f64 / rows > SPLIT_MAX_ROW_BYTES as f64;
    // Bounds as text, cast back to the column's type in the statements.
    let histogram: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT histogram_bounds::text::text[] FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3",
    )
    .bind(&def.schema)
    .bind(&def.name)
    .bind(first)
    .fetch_optional(&mut db.conn)
    .await
    .map_err(|e| Error::Other(format!("reading the statistics of {rel}: {e}")))?
    .flatten();
    let bounds: Vec<String> = match histogram {
        // Statistics imply an analyzed table: its row estimate holds.
        Some(_) if wide(f64::from(tuples)) => return Ok(Vec::new()),
        Some(h) if h.len() > n => (1..n).map(|k| h[h.len() * k / n].clone()).collect(),
        _ => {
            let fractions: Vec<f64> = (1..n).map(|k| k as f64 / n as f64).collect();
            let sql = format!(
                "SELECT unnest(p)::text, c FROM (SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY {}) AS p, count(*) AS c FROM {rel}) s",
                quote(first)
            );
            let found: Vec<(Option<String>, i64)> = sqlx::query_as(&sql)
                .bind(&fractions)
                .fetch_all(&mut db.conn)
                .await
                .map_err(|e| Error::Other(format!("finding key ranges of {rel}: {e}")))?;
            if found.first().is_some_and(|(_, c)| wide(*c as f64)) {
                return Ok(Vec::new());
            }
            found.into_iter().filter_map(|(b, _)| b).collect()
        }
    };
    let mut bounds: Vec<String> = bounds;
    bounds.dedup();
    if bounds.is_empty() {
        return Ok(Vec::new());
    }
    let key = quote(first);
    let ty = &column.type_sql;
    let value = |b: &str| format!("{}::{ty}", crate::source::sql_string(b));
    let order = column_list(&def.pk);
    let mut parts = Vec::with_capacity(bounds.len() + 1);
    for k in 0..=bounds.len() {
        let mut conds = Vec::new();
        if k > 0 {
            conds.push(format!("{key} > {}", value(&bounds[k - 1])));
        }
        if k < bounds.len() {
            conds.push(format!("{key} <= {}", value(&bounds[k])));
        }
        parts.push(format!(
            "COPY (SELECT {cols} FROM {rel} WHERE {} ORDER BY {order}) TO STDOUT",
            conds.join(" AND ")
        ));
    }
    Ok(parts)
}

/// A parent's rows decoded ahead of their use (see [`changes_only`]).
struct Prefetched<'a> {
    merged: Merged<'a>,
    ahead: std::collections::VecDeque<(Key, Vec<u8>)>,
    /// Reading ahead failed: [`Prefetched::next`] reports it.
    failed: bool,
}

impl Prefetched<'_> {
    /// Decodes rows ahead until `done` is set or [`PREFETCH_BYTES`] are held.
    async fn prefetch(&mut self, done: &std::sync::atomic::AtomicBool) {
        let mut bytes = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) && bytes < PREFETCH_BYTES {
            match self.merged.next().await {
                Ok(Some(row)) => {
                    bytes += row.1.len();
                    self.ahead.push_back(row);
                }
                Ok(None) => break,
                Err(_) => {
                    self.failed = true;
                    break;
                }
            }
        }
    }

    async fn next(&mut self) -> Result<Option<(Key, Vec<u8>)>> {
        match self.ahead.pop_front() {
            Some(row) => Ok(Some(row)),
            None if self.failed => Err(Error::damaged("the parent's rows could not be read")),
            None => self.merged.next().await,
        }
    }
}

/// How much of a parent's rows [`Prefetched`] holds at most.
const PREFETCH_BYTES: usize = 64 << 20;

/// Feeds a PostgreSQL table's current rows, in key order, to `feed` without reading
/// every row from the server: the rows written by transaction `since` or later (by
/// their `xmin`: every row changed after the parent snapshot, and a few it already
/// had), the current keys (so deleted rows are known), and the parent's rows for the
/// rest. Everything is read in the backup's one transaction, so the three agree; if
/// they do not — a current key that is neither changed nor in the parent, a changed row
/// whose key is gone — or there are too many changes, returns `false` and the caller
/// reads the table whole. The stream fed is byte for byte what reading every row gives
/// (the same COPY text in the same order), so the checksum is computed as for any other
/// read; the key order is proven here (the current keys strictly increase, and every
/// row fed has the key it is fed for), and the delta records (rows that differ from
/// the parent's, keys gone) are written while matching.
async fn changes_only(
    repo: &Repository,
    db: &mut PgDb,
    plan: &Plan,
    since: u64,
    feed: &mut Feed<'_>,
) -> Result<bool> {
    // Format 2: from the parent's block list alone, when it has one.
    if let Some(done) = super::pg_blocks::changed_blocks(repo, db, plan, since, feed).await? {
        return Ok(done);
    }
    let (Some(spec), Some(parent), Some(def)) =
        (&plan.key, &plan.parent, plan.schema.postgres.as_ref())
    else {
        return Ok(false);
    };
    use crate::source::postgres::{column_list, qualified};
    let rel = qualified(&def.schema, &def.name);
    let (cols, order) = (column_list(&plan.columns), column_list(&spec.names));
    // age() counts back from the same reference for both sides, so this is "xmin is
    // `since` or later" in the 32-bit, wrapping transaction id space; frozen and other
    // special ids have the largest age. Rows older than 2^31 transactions can look new:
    // they are read and found unchanged, never missed.
    let changed_sql = format!(
        "COPY (SELECT {cols} FROM {rel} WHERE age(xmin) <= age('{}'::xid) ORDER BY {order}) TO STDOUT",
        since & 0xffff_ffff
    );
    let mut changed = Vec::new();
    let mut too_many = false;
    // While the server looks for changed rows, the parent's first rows are decoded.
    let mut parent_rows = Prefetched {
        merged: Merged::new(repo, &parent.name, parent.layers(), spec.clone()),
        ahead: std::collections::VecDeque::new(),
        failed: false,
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let read_changed = async {
        let result: Result<()> = async {
            let mut stream = db.copy_out(&changed_sql).await?;
            while let Some(piece) = stream.next().await {
                let piece = piece?;
                if !too_many {
                    changed.extend_from_slice(&piece);
                    too_many = changed.len() > super::pg_blocks::MAX_CHANGED_BYTES;
                }
            }
            Ok(())
        }
        .await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    };
    let (read, ()) = futures::join!(read_changed, parent_rows.prefetch(&done));
    read?;
    if too_many {
        return Ok(false);
    }
    let mut changed_rows: Vec<(Key, std::ops::Range<usize>)> = Vec::new();
    let mut at = 0;
    while let Some(n) = spec.row_len(&changed[at..])? {
        let mut key = Key::new();
        if spec.key_into(&changed[at..at + n], &mut key).is_err()
            || changed_rows
                .last()
                .is_some_and(|(k, _)| cmp_key(k, &key) != std::cmp::Ordering::Less)
        {
            return Ok(false);
        }
        changed_rows.push((key, at..at + n));
        at += n;
    }
    if at != changed.len() {
        return Ok(false);
    }

    let key_spec = KeySpec::new(&StreamFormat::PgCopyText, &spec.names, &plan.schema)
        .ok_or_else(|| Error::Other("the key of a keyed table has no key spec".into()))?;
    let mut head = match parent_rows.next().await {
        Ok(h) => h,
        Err(_) => return Ok(false),
    };
    let mut next_changed = changed_rows.into_iter().peekable();
    // The delta is written here, as rows are matched, instead of diffing the stream
    // against the parent's rows a second time: the feed hashes, counts and checks the
    // order of the stream, and ships these records.
    let Some(keyed) = feed.keyed.as_mut() else {
        return Ok(false);
    };
    keyed.order.differ = None;
    feed.order_known = true;
    let mut delta = Vec::new();
    let keys_sql = format!("COPY (SELECT {order} FROM {rel} ORDER BY {order}) TO STDOUT");
    let mut stream = db.copy_out(&keys_sql).await?;
    let mut carry: Vec<u8> = Vec::new();
    let mut key = Key::new();
    let mut last: Option<Key> = None;
    let mut ok = true;
    'read: while let Some(piece) = stream.next().await {
        carry.extend_from_slice(&piece?);
        let mut at = 0;
        while let Some(n) = key_spec.row_len(&carry[at..])? {
            let line = &carry[at..at + n];
            at += n;
            if key_spec.key_into(line, &mut key).is_err()
                || last
                    .as_ref()
                    .is_some_and(|l| cmp_key(l, &key) != std::cmp::Ordering::Less)
            {
                ok = false;
                break 'read;
            }
            // Parent rows before this key were deleted since.
            while let Some((pk, _)) = &head
                && cmp_key(pk, &key) == std::cmp::Ordering::Less
            {
                push_delete(&mut delta, pk);
                head = match parent_rows.next().await {
                    Ok(h) => h,
                    Err(_) => {
                        ok = false;
                        break 'read;
                    }
                };
            }
            let in_parent = head
                .as_ref()
                .is_some_and(|(pk, _)| cmp_key(pk, &key).is_eq());
            match next_changed.peek() {
                Some((ck, range)) if cmp_key(ck, &key).is_eq() => {
                    let row = &changed[range.clone()];
                    feed.buf.extend_from_slice(row);
                    // Read because of its xmin, yet the same as in the parent: no record.
                    if !(in_parent && head.as_ref().is_some_and(|(_, p)| p.as_slice() == row)) {
                        push_upsert(&mut delta, row);
                    }
                    next_changed.next();
                }
                // A changed row whose key is not among the current keys.
                Some((ck, _)) if cmp_key(ck, &key).is_lt() => {
                    ok = false;
                    break 'read;
                }
                _ if in_parent => {
                    let (_, row) = head.as_ref().expect("in_parent");
                    feed.buf.extend_from_slice(row);
                }
                // Neither changed nor in the parent: the xmin test missed a row.
                _ => {
                    ok = false;
                    break 'read;
                }
            }
            if in_parent {
                head = match parent_rows.next().await {
                    Ok(h) => h,
                    Err(_) => {
                        ok = false;
                        break 'read;
                    }
                };
            }
            last = Some(std::mem::take(&mut key));
            if !delta.is_empty()
                && let Some(k) = feed.keyed.as_mut()
            {
                k.order.out.append(&mut delta);
            }
            feed.send_if_full().await?;
            if feed.restart {
                ok = false;
                break 'read;
            }
        }
        carry.drain(..at);
    }
    // Reading stopped early: the COPY must finish before the connection is reused.
    if !ok {
        while stream.next().await.is_some() {}
        return Ok(false);
    }
    drop(stream);
    if !carry.is_empty() || next_changed.next().is_some() {
        return Ok(false);
    }
    // Parent rows after the last current key were deleted since.
    while let Some((pk, _)) = head {
        push_delete(&mut delta, &pk);
        head = match parent_rows.next().await {
            Ok(h) => h,
            Err(_) => return Ok(false),
        };
    }
    if let Some(k) = feed.keyed.as_mut() {
        k.order.out.append(&mut delta);
    }
    Ok(true)
}
