//! Backup: one consistent read of the source, streamed through chunking, dedup,
//! compression and encryption into packs, then the snapshot manifest.
//!
//! Two stages run in parallel: the async reader (rows → stream bytes → checksum) and a
//! blocking worker (FastCDC → chunk id → dedup → zstd → seal → pack writes), joined by a
//! bounded channel so memory stays flat whatever the table size.

use crate::chunker::Chunker;
use crate::model::{
    Engine, Layer, SegmentKind, Skipped, Snapshot, SnapshotSource, StreamFormat, TableEntry,
    TableSchema, encode_value,
};
use crate::progress::Progress;
use crate::repo::crypto::hex;
use crate::repo::{Location, PackWriter, Repository, now_ms};
use crate::secret::Secret;
use crate::segment::{self, Key, KeySpec, Merged, cmp_key, push_delete, push_upsert};
use crate::selection::Selection;
use crate::source::SourceUrl;
use crate::source::mysql::{MyDb, MyTableInfo};
use crate::source::postgres::{PgDb, PgTableInfo, count_lines};
use crate::source::sqlite::{SqliteDb, TableInfo, create_table_for};
use crate::{Error, Result};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub source: Secret<String>,
    pub selection: Selection,
    pub tags: BTreeMap<String, String>,
}

/// What a finished backup reports.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub id: String,
    pub snapshot: Snapshot,
    /// Tables whose delta was built from only the rows changed since the parent (read by
    /// their `xmin`, PostgreSQL) instead of every row.
    pub changes_only: Vec<String>,
}

enum Msg {
    Start,
    Data(Vec<u8>),
    End,
    /// The reader failed: discard what was written.
    Abort,
}

const WORKER_STOPPED: &str = "backup worker stopped";

const SEND_AT: usize = 1 << 20;

const SMALL_DELTAS: u64 = 4 << 20;

type Written = Vec<([u8; 32], Location)>;
/// Per table chunk lists, the chunks written, bytes stored.
type WorkerOutput = (Vec<Vec<String>>, Written, u64);

/// The chunk/pack worker and the channel feeding it.
struct Pipeline {
    tx: tokio::sync::mpsc::Sender<Msg>,
    worker: tokio::task::JoinHandle<Result<WorkerOutput>>,
}

/// What one table's stream produced.
struct Streamed {
    rows: u64,
    bytes: u64,
    checksum: String,
    /// The delta's base (the parent's layers), or empty for a full segment.
    base: Vec<Layer>,
    segment_bytes: u64,
    /// The key the stream proved to be strictly ordered by, if any.
    key: Vec<String>,
    /// Built from the rows changed since the parent ([`changes_only`]).
    changes_only: bool,
}

/// The worker's state between messages.
struct Worker {
    writer: PackWriter,
    index: std::sync::Arc<std::collections::HashMap<[u8; 32], Location>>,
    chunker: Chunker,
    params: crate::chunker::ChunkerParams,
    current: Vec<String>,
    tables: Vec<Vec<String>>,
    rt: tokio::runtime::Handle,
}

impl Worker {
    fn chunk(&mut self, chunk: Vec<u8>) -> Result<()> {
        let id = self.writer.keys().chunk_id(&chunk);
        if !self.index.contains_key(&id) && !self.writer.is_pending(&id) {
            self.writer.add(id, &chunk, &self.rt)?;
        }
        self.current.push(hex(&id));
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Start => {
                self.chunker = Chunker::new(self.params);
                self.current = Vec::new();
            }
            Msg::Data(bytes) => {
                for chunk in self.chunker.push(&bytes) {
                    self.chunk(chunk)?;
                }
            }
            Msg::End => {
                for chunk in self.chunker.finish() {
                    self.chunk(chunk)?;
                }
                self.tables.push(std::mem::take(&mut self.current));
            }
            Msg::Abort => return Err(Error::Cancelled),
        }
        Ok(())
    }
}

impl Pipeline {
    fn start(repo: &Repository) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let params = repo.config.chunker;
        let mut w = Worker {
            writer: repo.pack_writer(),
            index: repo.dedup_view(),
            chunker: Chunker::new(params),
            params,
            current: Vec::new(),
            tables: Vec::new(),
            rt: tokio::runtime::Handle::current(),
        };
        let worker = tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                if let Err(e) = w.handle(msg) {
                    // Nothing will reference what this backup stored: give the space back.
                    w.writer.discard(&w.rt);
                    return Err(e);
                }
            }
            let rt = w.rt.clone();
            match w.writer.flush(&rt) {
                Ok(()) => {
                    let (written, stored) = w.writer.finish(&rt)?;
                    Ok((w.tables, written, stored))
                }
                Err(e) => {
                    w.writer.discard(&rt);
                    Err(e)
                }
            }
        });
        Pipeline { tx, worker }
    }

    async fn send(&self, msg: Msg) -> Result<()> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| Error::Other(WORKER_STOPPED.into()))
    }

    /// Ends the input and waits for the worker. On a read error the worker discards what
    /// it wrote. A worker error explains a failed read (a closed channel) better than the
    /// read error itself, except when the reader asked the worker to abort.
    async fn finish(self, read: Result<()>) -> Result<WorkerOutput> {
        if read.is_err() {
            let _ = self.tx.send(Msg::Abort).await;
        }
        drop(self.tx);
        let joined = self
            .worker
            .await
            .map_err(|e| Error::Other(format!("backup worker: {e}")))?;
        match (read, joined) {
            // The read stopped because the worker did: the worker's error is the cause.
            (Err(Error::Other(m)), Err(w)) if m == WORKER_STOPPED => Err(w),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(v)) => Ok(v),
        }
    }
}

/// A table about to be read.
struct Plan {
    name: String,
    schema: TableSchema,
    columns: Vec<String>,
    format: StreamFormat,
    sql: String,
    /// How to order the stream's rows, if this crate can.
    key: Option<KeySpec>,
    /// The previous snapshot's entry for this table, when this backup may store a delta
    /// against it.
    parent: Option<TableEntry>,
    /// PostgreSQL: the parent snapshot's oldest running transaction, when only rows
    /// written by it or later need to be read ([`changes_only`]).
    changed_since: Option<u64>,
}

impl Plan {
    /// A table read whole, keyed when this crate can order its stream (no parent yet).
    fn new(
        name: String,
        schema: TableSchema,
        columns: Vec<String>,
        format: StreamFormat,
        sql: String,
    ) -> Plan {
        let key = KeySpec::new(&format, &columns, &schema);
        Plan {
            name,
            schema,
            columns,
            format,
            sql,
            key,
            parent: None,
            changed_since: None,
        }
    }
}

pub async fn backup(
    repo: &mut Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    backup_as(repo, opts, None, progress).await
}

/// A backup that is also round `capture` of a SQLite continuous capture.
pub(crate) async fn backup_as(
    repo: &mut Repository,
    opts: &BackupOptions,
    capture: Option<crate::model::CaptureRound>,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    // Lock first, then read the index and prune's condemned packs (crate docs,
    // "Concurrency"): from here on no prune deletes what this backup may reference.
    let lock = repo
        .lock(crate::repo::lock::LockKind::Shared, "backup")
        .await?;
    let result = match repo.load_index().await {
        Ok(()) => backup_locked(repo, opts, capture, progress).await,
        Err(e) => Err(e),
    };
    lock.release().await;
    result
}

async fn backup_locked(
    repo: &mut Repository,
    opts: &BackupOptions,
    capture: Option<crate::model::CaptureRound>,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let url = SourceUrl::parse(&opts.source)?;
    let (engine, time_ms, plans, streamed, written, bytes_stored, skipped, enums, pg_point) =
        match &url {
            SourceUrl::Sqlite(path) => {
                // One read transaction for everything below, up to the COMMIT after the
                // last table (crate docs, "What makes a snapshot consistent").
                let mut db = SqliteDb::open_read(path).await?;
                db.begin_snapshot().await?;
                let time_ms = now_ms();
                let catalog = db.discover().await?;
                let mut skipped = catalog.skipped.clone();
                let mut plans = Vec::new();
                for (table, columns) in selected(&catalog.tables, |t| &t.name, &opts.selection)? {
                    plans.push(plan_sqlite(table, columns, &mut skipped)?);
                }
                choose_parents(repo, &url, &mut plans).await?;
                let pipeline = Pipeline::start(repo);
                let mut streamed = Vec::new();
                let read = read_values(
                    repo,
                    ValueSource::Sqlite(&mut db),
                    &plans,
                    &pipeline,
                    &mut streamed,
                    progress,
                )
                .await;
                let (chunks, written, stored) = pipeline.finish(read).await?;
                db.exec("COMMIT").await?;
                (
                    Engine::Sqlite,
                    time_ms,
                    plans,
                    streamed.into_iter().zip(chunks).collect::<Vec<_>>(),
                    written,
                    stored,
                    skipped,
                    Vec::new(),
                    None,
                )
            }
            SourceUrl::Mysql(secret) => {
                // One REPEATABLE READ transaction WITH CONSISTENT SNAPSHOT on one
                // connection for discovery and every table (source::mysql).
                let mut db = MyDb::connect(secret, url.display()).await?;
                db.begin_snapshot().await?;
                let time_ms = now_ms();
                let catalog = db.discover().await?;
                let mut plans = Vec::new();
                let mut reads = Vec::new();
                let mut skipped = catalog.skipped.clone();
                for (table, columns) in selected(&catalog.tables, |t| &t.name, &opts.selection)? {
                    let plan = plan_mysql(table, columns, &mut skipped)?;
                    reads.push(
                        table
                            .data_columns
                            .iter()
                            .zip(&table.reads)
                            .filter(|(c, _)| plan.columns.contains(c))
                            .map(|(_, (r, _))| *r)
                            .collect::<Vec<_>>(),
                    );
                    plans.push(plan);
                }
                choose_parents(repo, &url, &mut plans).await?;
                let pipeline = Pipeline::start(repo);
                let mut streamed = Vec::new();
                let read = read_values(
                    repo,
                    ValueSource::Mysql(&mut db, &reads),
                    &plans,
                    &pipeline,
                    &mut streamed,
                    progress,
                )
                .await;
                let (chunks, written, stored) = pipeline.finish(read).await?;
                db.exec("COMMIT").await?;
                (
                    Engine::Mysql,
                    time_ms,
                    plans,
                    streamed.into_iter().zip(chunks).collect(),
                    written,
                    stored,
                    skipped,
                    Vec::new(),
                    None,
                )
            }
            SourceUrl::Postgres(secret) => {
                // One REPEATABLE READ transaction on this one connection for discovery and
                // every table, including a delta's fallback re-read (crate docs, "What
                // makes a snapshot consistent"). Issue 10's report of restores whose
                // pgbench sums disagreed came from pgbench truncating pgbench_history
                // before each run (no `-n`), not from here: the source disagreed too.
                let mut db = PgDb::connect(secret, url.display()).await?;
                let point = db.begin_snapshot_at().await?;
                let time_ms = now_ms();
                let catalog = db.discover().await?;
                let mut plans = Vec::new();
                for (table, columns) in selected(&catalog.tables, |t| &t.name, &opts.selection)? {
                    plans.push(plan_postgres(table, columns)?);
                }
                let latest = choose_parents(repo, &url, &mut plans).await?;
                if let (Some(parent), Some(now)) = (&latest, &point)
                    && let Some(xid) = changed_since(parent, now, &catalog.enums)
                {
                    for plan in plans.iter_mut() {
                        let same_columns = |p: &TableEntry| {
                            let cols =
                                |s: &TableSchema| s.postgres.as_ref().map(|d| d.columns.clone());
                            cols(&p.schema) == cols(&plan.schema) && cols(&p.schema).is_some()
                        };
                        if plan.parent.as_ref().is_some_and(same_columns) {
                            plan.changed_since = Some(xid);
                        }
                    }
                }
                let pipeline = Pipeline::start(repo);
                let mut streamed = Vec::new();
                let read =
                    read_postgres(repo, &mut db, &plans, &pipeline, &mut streamed, progress).await;
                let (chunks, written, stored) = pipeline.finish(read).await?;
                db.exec("COMMIT").await?;
                (
                    Engine::Postgres,
                    time_ms,
                    plans,
                    streamed.into_iter().zip(chunks).collect(),
                    written,
                    stored,
                    catalog.skipped,
                    catalog.enums,
                    point,
                )
            }
        };
    let written_packs: Vec<[u8; 32]> = written.iter().map(|(_, l)| l.pack).collect();
    repo.absorb(written);
    let streamed_changes_only: Vec<String> = plans
        .iter()
        .zip(&streamed)
        .filter(|(_, (s, _))| s.changes_only)
        .map(|(p, _)| p.name.clone())
        .collect();
    let tables: Vec<TableEntry> = plans
        .into_iter()
        .zip(streamed)
        .map(|(p, (s, chunks))| TableEntry {
            name: p.name,
            schema: p.schema,
            segment: if s.base.is_empty() {
                SegmentKind::Full
            } else {
                SegmentKind::Delta
            },
            format: p.format,
            stream_columns: p.columns,
            rows: s.rows,
            bytes: s.bytes,
            checksum: s.checksum,
            chunks,
            segment_bytes: s.segment_bytes,
            base: s.base,
            key: s.key,
        })
        .collect();
    let changes_only = streamed_changes_only;
    let snapshot = Snapshot {
        format: crate::repo::FORMAT_VERSION,
        time_ms,
        source: SnapshotSource {
            engine,
            url: url.display(),
        },
        selection: opts.selection.record(),
        tags: opts.tags.clone(),
        tables,
        enums,
        skipped,
        bytes_stored,
        duration_ms: started.elapsed().as_millis() as u64,
        pg_point,
        capture,
    };
    // Written last: the snapshot becomes visible only now.
    let id = match repo.save_snapshot(&snapshot).await {
        Ok(id) => id,
        Err(e) => {
            repo.discard_packs(&written_packs).await;
            return Err(e);
        }
    };
    Ok(BackupSummary {
        id,
        snapshot,
        changes_only,
    })
}

/// A selected table and its `--columns` list, if any.
type Selected<'a, T> = (&'a T, Option<&'a Vec<String>>);

/// The tables a selection takes, in catalog order, each with its `--columns` list.
fn selected<'a, T>(
    tables: &'a [T],
    name: impl Fn(&T) -> &String,
    selection: &'a Selection,
) -> Result<Vec<Selected<'a, T>>> {
    let chosen = selection.apply(tables.iter().map(|t| name(t).as_str()))?;
    Ok(tables
        .iter()
        .filter(|t| chosen.contains(name(t)))
        .map(|t| (t, selection.columns.get(name(t))))
        .collect())
}

/// Checks `--columns` against the table and returns the columns to read, in table
/// order, with primary-key columns always kept.
fn chosen_columns(
    table: &str,
    data_columns: &[String],
    pk: &[String],
    wanted: Option<&Vec<String>>,
) -> Result<Vec<String>> {
    let Some(wanted) = wanted else {
        return Ok(data_columns.to_vec());
    };
    for c in wanted {
        if !data_columns.contains(c) {
            return Err(Error::invalid(format!(
                "table {table:?} has no column {c:?}"
            )));
        }
    }
    Ok(data_columns
        .iter()
        .filter(|c| wanted.contains(c) || pk.contains(c))
        .cloned()
        .collect())
}

fn plan_sqlite(
    info: &TableInfo,
    wanted: Option<&Vec<String>>,
    skipped: &mut Vec<Skipped>,
) -> Result<Plan> {
    let pk: Vec<String> = info
        .schema
        .columns
        .iter()
        .filter(|c| c.pk > 0)
        .map(|c| c.name.clone())
        .collect();
    let columns = chosen_columns(&info.name, &info.data_columns, &pk, wanted)?;
    let mut schema = info.schema.clone();
    if columns.len() < info.data_columns.len() {
        schema.columns.retain(|c| columns.contains(&c.name));
        schema.create_sql = create_table_for(&info.name, &schema.columns);
        schema.all_columns = false;
        for idx in std::mem::take(&mut schema.indexes) {
            skipped.push(Skipped {
                kind: "index".into(),
                name: idx.name,
                reason: format!("only some columns of {} were backed up", info.name),
            });
        }
    }
    let sql = SqliteDb::rows_sql(info, &columns);
    Ok(Plan::new(
        info.name.clone(),
        schema,
        columns,
        StreamFormat::Values,
        sql,
    ))
}

fn plan_mysql(
    info: &MyTableInfo,
    wanted: Option<&Vec<String>>,
    skipped: &mut Vec<Skipped>,
) -> Result<Plan> {
    let columns = chosen_columns(&info.name, &info.data_columns, &info.pk, wanted)?;
    let mut schema = info.schema.clone();
    if columns.len() < info.data_columns.len() {
        // Only some columns: a definition of just those (types, NOT NULL, the key);
        // defaults, other indexes and foreign keys cannot come back without the rest.
        schema.columns.retain(|c| columns.contains(&c.name));
        schema.create_sql = crate::source::mysql::create_table_for(&info.name, &schema.columns);
        schema.all_columns = false;
        skipped.push(Skipped {
            kind: "definition".into(),
            name: info.name.clone(),
            reason: "only some columns were backed up: its defaults, indexes and foreign keys are not kept".into(),
        });
    }
    let sql = MyDb::rows_sql(info, &columns);
    // Keyed (and so incremental) when the key's values come back in the order this
    // crate compares them; a key whose collation orders otherwise is found out while
    // reading and the table is stored whole (as with SQLite's NOCASE keys).
    Ok(Plan::new(
        info.name.clone(),
        schema,
        columns,
        StreamFormat::Values,
        sql,
    ))
}

fn plan_postgres(info: &PgTableInfo, wanted: Option<&Vec<String>>) -> Result<Plan> {
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

/// For each table, the latest earlier snapshot of the same source that holds it keyed
/// the same way: the parent its delta will be stored against. A table gets a full
/// segment instead when it has no such parent, its chain is [`segment::MAX_LAYERS`]
/// long, or its deltas already add up to half its full segment (and more than
/// [`SMALL_DELTAS`]: for small tables a chain costs little).
/// Returns that latest snapshot.
async fn choose_parents(
    repo: &Repository,
    url: &SourceUrl,
    plans: &mut [Plan],
) -> Result<Option<Snapshot>> {
    if plans.iter().all(|p| p.key.is_none()) {
        return Ok(None);
    }
    let source = url.display();
    let latest = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|(_, s)| s.source.url == source)
        .max_by_key(|(_, s)| s.time_ms);
    let Some((_, latest)) = latest else {
        return Ok(None);
    };
    for plan in plans {
        let Some(key) = &plan.key else { continue };
        let Some(parent) = latest.tables.iter().find(|t| t.name == plan.name) else {
            continue;
        };
        let layers = parent.layers();
        let full = layers[0].bytes;
        let deltas: u64 = layers[1..].iter().map(|l| l.bytes).sum();
        if parent.format == plan.format
            && parent.stream_columns == plan.columns
            && KeySpec::of_entry(parent).as_ref() == Some(key)
            && layers.len() < segment::MAX_LAYERS
            && deltas <= (full / 2).max(SMALL_DELTAS)
        {
            plan.parent = Some(parent.clone());
        }
    }
    Ok(Some(latest))
}

/// PostgreSQL: the transaction id from which rows may have changed since `parent` was
/// taken (its snapshot's xmin: every transaction before it had ended and is in the
/// parent), when a backup at `now` can trust row `xmin`s for that: the same server
/// history (system identifier and timeline: not restored from an older base backup, not
/// promoted), transaction ids that only moved forward and stay within 2^31 of it (so the
/// 32-bit `xmin` comparison cannot wrap), and the same enum types (a renamed label
/// changes the text of rows that did not change).
fn changed_since(
    parent: &Snapshot,
    now: &crate::model::PgPoint,
    enums: &[crate::model::PgEnum],
) -> Option<u64> {
    let then = parent.pg_point.as_ref()?;
    if then.system_id.is_none()
        || then.system_id != now.system_id
        || then.timeline.is_none()
        || then.timeline != now.timeline
        || parent.enums != enums
    {
        return None;
    }
    let old = crate::capture::XidSnapshot::parse(&then.xid_snapshot).ok()?;
    let new = crate::capture::XidSnapshot::parse(&now.xid_snapshot).ok()?;
    let span = new.xmax().checked_sub(old.xmin())?;
    (new.xmax() >= old.xmax() && span < (1 << 31) - (1 << 24)).then_some(old.xmin())
}

/// Turns a table's new rows into a delta against its parent's rows: both in key order,
/// merged like two sorted lists.
struct Differ<'a> {
    parent: Merged<'a>,
    head: Option<(Key, Vec<u8>)>,
    primed: bool,
}

impl Differ<'_> {
    async fn fill(&mut self) -> Result<()> {
        if !self.primed {
            self.head = self.parent.next().await?;
            self.primed = true;
        }
        Ok(())
    }

    async fn row(&mut self, key: &Key, row: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.fill().await?;
        loop {
            let Some((pk, prow)) = &self.head else {
                push_upsert(out, row);
                return Ok(());
            };
            match cmp_key(pk, key) {
                std::cmp::Ordering::Less => {
                    push_delete(out, pk);
                    self.head = self.parent.next().await?;
                }
                std::cmp::Ordering::Equal => {
                    if prow.as_slice() != row {
                        push_upsert(out, row);
                    }
                    self.head = self.parent.next().await?;
                    return Ok(());
                }
                std::cmp::Ordering::Greater => {
                    push_upsert(out, row);
                    return Ok(());
                }
            }
        }
    }

    /// Parent rows after the last new row are gone.
    async fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.fill().await?;
        while let Some((pk, _)) = self.head.take() {
            push_delete(out, &pk);
            self.head = self.parent.next().await?;
        }
        Ok(())
    }
}

/// Row-level work on a keyed table's stream: checking its key order and, for a delta,
/// diffing it against the parent.
struct Keyed<'a> {
    spec: KeySpec,
    /// The start of a row that the previous piece ended inside.
    carry: Vec<u8>,
    last: Key,
    key: Key,
    started: bool,
    differ: Option<Differ<'a>>,
    out: Vec<u8>,
}

impl Keyed<'_> {
    /// Takes the complete rows of `carry` + `data`, leaving an unfinished one in
    /// `carry`. `Ok(false)`: the stream is not in key order.
    async fn rows(&mut self, data: &[u8]) -> Result<bool> {
        let mut data = data;
        if !self.carry.is_empty() {
            // Complete the carried row with as little of `data` as it needs.
            let mut carry = std::mem::take(&mut self.carry);
            let mut taken = 0;
            let mut step = 4096;
            while taken < data.len() {
                // Growing steps: a multi-megabyte row is not rescanned once per 4 KiB.
                let end = (taken + step).min(data.len());
                carry.extend_from_slice(&data[taken..end]);
                taken = end;
                step *= 2;
                if self.spec.row_len(&carry)?.is_some() {
                    break;
                }
            }
            let Some(n) = self.spec.row_len(&carry)? else {
                self.carry = carry;
                return Ok(true);
            };
            if !self.row(&carry[..n]).await? {
                return Ok(false);
            }
            // What the carried row did not need is the start of the next rows.
            data = &data[taken - (carry.len() - n)..];
        }
        let mut at = 0;
        while let Some(n) = self.spec.row_len(&data[at..])? {
            if !self.row(&data[at..at + n]).await? {
                return Ok(false);
            }
            at += n;
        }
        self.carry.extend_from_slice(&data[at..]);
        Ok(true)
    }

    async fn row(&mut self, row: &[u8]) -> Result<bool> {
        if self.spec.key_into(row, &mut self.key).is_err()
            || self.started && cmp_key(&self.last, &self.key) != std::cmp::Ordering::Less
        {
            return Ok(false);
        }
        if let Some(d) = self.differ.as_mut() {
            d.row(&self.key, row, &mut self.out).await?;
        }
        std::mem::swap(&mut self.last, &mut self.key);
        self.started = true;
        Ok(true)
    }
}

/// One table's bytes on their way to the worker: hashed, counted, and sent in pieces of
/// about [`SEND_AT`] bytes. Keyed tables are also checked for key order, and a table
/// with a parent is sent as a delta.
struct Feed<'a> {
    pipe: &'a Pipeline,
    progress: &'a dyn Progress,
    /// COPY text counts rows by lines; the values stream counts them as they are encoded.
    rows_are_lines: bool,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    rows: u64,
    bytes: u64,
    unreported_rows: u64,
    keyed: Option<Keyed<'a>>,
    base: Vec<Layer>,
    segment_bytes: u64,
    /// The delta could not be built (rows out of key order, unreadable parent): the
    /// table must be read again as a full segment.
    restart: bool,
    /// The rows are known to come in strictly increasing key order and the delta
    /// records are written by the caller ([`changes_only`]): no row is parsed here.
    order_known: bool,
}

impl<'a> Feed<'a> {
    /// `delta`: store the table as a delta against its plan's parent.
    async fn start(
        repo: &'a Repository,
        pipe: &'a Pipeline,
        progress: &'a dyn Progress,
        plan: &'a Plan,
        rows_are_lines: bool,
        delta: bool,
    ) -> Result<Feed<'a>> {
        progress.check_abort()?;
        progress.table_started(&plan.name, None);
        pipe.send(Msg::Start).await?;
        let parent = plan.parent.as_ref().filter(|_| delta);
        let keyed = plan.key.clone().map(|spec| Keyed {
            differ: parent.map(|p| Differ {
                parent: Merged::new(repo, &p.name, p.layers(), spec.clone()),
                head: None,
                primed: false,
            }),
            spec,
            carry: Vec::new(),
            last: Vec::new(),
            key: Vec::new(),
            started: false,
            out: Vec::new(),
        });
        Ok(Feed {
            pipe,
            progress,
            rows_are_lines,
            hasher: blake3::Hasher::new(),
            buf: Vec::with_capacity(SEND_AT + 65536),
            rows: 0,
            bytes: 0,
            unreported_rows: 0,
            keyed,
            base: parent.map(|p| p.layers()).unwrap_or_default(),
            segment_bytes: 0,
            restart: false,
            order_known: false,
        })
    }

    fn count_row(&mut self) {
        self.rows += 1;
        self.unreported_rows += 1;
    }

    async fn send_if_full(&mut self) -> Result<()> {
        if self.buf.len() >= SEND_AT {
            self.progress.check_abort()?;
            self.send().await?;
        }
        Ok(())
    }

    /// A keyed stream that breaks key order is no longer keyed; a delta is abandoned.
    fn not_in_key_order(&mut self) {
        if self.base.is_empty() {
            self.keyed = None;
        } else {
            self.restart = true;
        }
    }

    async fn send(&mut self) -> Result<()> {
        if self.rows_are_lines {
            let n = count_lines(&self.buf);
            self.rows += n;
            self.unreported_rows += n;
        }
        self.hasher.update(&self.buf);
        self.bytes += self.buf.len() as u64;
        self.progress.advanced(
            std::mem::take(&mut self.unreported_rows),
            self.buf.len() as u64,
        );
        let mut ship = std::mem::replace(&mut self.buf, Vec::with_capacity(SEND_AT + 65536));
        if let Some(k) = &mut self.keyed
            && !self.order_known
        {
            match k.rows(&ship).await {
                Ok(true) => {}
                // An unreadable parent only costs the delta: the full table still backs up.
                Ok(false) | Err(_) => self.not_in_key_order(),
            }
        }
        if !self.base.is_empty() {
            ship = std::mem::take(&mut self.keyed.as_mut().expect("a delta is keyed").out);
        }
        self.ship(ship).await
    }

    async fn ship(&mut self, bytes: Vec<u8>) -> Result<()> {
        if self.restart || bytes.is_empty() {
            return Ok(());
        }
        self.segment_bytes += bytes.len() as u64;
        self.pipe.send(Msg::Data(bytes)).await
    }

    /// `None`: the delta was abandoned; read the table again with `delta` false.
    async fn finish(mut self, table: &str) -> Result<Option<Streamed>> {
        self.send().await?;
        if let Some(k) = &mut self.keyed
            && !self.restart
        {
            let ended = k.carry.is_empty()
                && match &mut k.differ {
                    Some(d) => d.finish(&mut k.out).await.is_ok(),
                    None => true,
                };
            if !ended {
                self.not_in_key_order();
            } else if let Some(k) = &mut self.keyed {
                let out = std::mem::take(&mut k.out);
                self.ship(out).await?;
            }
        }
        if self.restart {
            return Ok(None);
        }
        self.pipe.send(Msg::End).await?;
        self.progress.table_finished(table);
        Ok(Some(Streamed {
            rows: self.rows,
            bytes: self.bytes,
            checksum: self.hasher.finalize().to_hex().to_string(),
            base: self.base,
            segment_bytes: self.segment_bytes,
            key: self.keyed.map(|k| k.spec.names).unwrap_or_default(),
            changes_only: false,
        }))
    }
}

/// Where rows come from as values (the `values` stream format).
enum ValueSource<'a> {
    Sqlite(&'a mut SqliteDb),
    /// With how each plan's columns are read.
    Mysql(&'a mut MyDb, &'a [Vec<crate::source::mysql::ReadAs>]),
}

impl ValueSource<'_> {
    /// The rows of plan `i`.
    fn rows<'s>(
        &'s mut self,
        i: usize,
        plan: &'s Plan,
    ) -> futures::stream::BoxStream<'s, Result<Vec<crate::model::Value>>> {
        match self {
            ValueSource::Sqlite(db) => db.rows(&plan.sql, plan.columns.len()).boxed(),
            ValueSource::Mysql(db, reads) => db.rows(&plan.sql, reads[i].clone()).boxed(),
        }
    }
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

/// At most this many bytes of changed rows are held to build a table's stream from
/// them; more changes than that and the table is read whole.
const MAX_CHANGED_BYTES: usize = 64 << 20;

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
                    too_many = changed.len() > MAX_CHANGED_BYTES;
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
    keyed.differ = None;
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
                k.out.append(&mut delta);
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
        k.out.append(&mut delta);
    }
    Ok(true)
}

/// Reads each table of a `values` source into the pipeline: as a delta against its
/// parent when it has one, read again whole when the delta has to be abandoned.
async fn read_values(
    repo: &Repository,
    mut src: ValueSource<'_>,
    plans: &[Plan],
    pipe: &Pipeline,
    out: &mut Vec<Streamed>,
    progress: &dyn Progress,
) -> Result<()> {
    for (i, plan) in plans.iter().enumerate() {
        let mut delta = plan.parent.is_some();
        loop {
            let mut feed = Feed::start(repo, pipe, progress, plan, false, delta).await?;
            let mut stream = src.rows(i, plan);
            while let Some(row) = stream.next().await {
                for v in &row? {
                    encode_value(&mut feed.buf, v);
                }
                feed.count_row();
                feed.send_if_full().await?;
                if feed.restart {
                    break;
                }
            }
            drop(stream);
            match feed.finish(&plan.name).await? {
                Some(s) => {
                    out.push(s);
                    break;
                }
                None => delta = false,
            }
        }
    }
    Ok(())
}

async fn read_postgres(
    repo: &Repository,
    db: &mut PgDb,
    plans: &[Plan],
    pipe: &Pipeline,
    out: &mut Vec<Streamed>,
    progress: &dyn Progress,
) -> Result<()> {
    for plan in plans {
        let mut delta = plan.parent.is_some();
        let mut since = plan.changed_since.filter(|_| delta);
        loop {
            let mut feed = Feed::start(repo, pipe, progress, plan, true, delta).await?;
            if let Some(xid) = since.take() {
                if changes_only(repo, db, plan, xid, &mut feed).await? {
                    if let Some(mut s) = feed.finish(&plan.name).await? {
                        s.changes_only = true;
                        out.push(s);
                        break;
                    }
                } else {
                    // Not possible this time: the table is read whole, as a delta still.
                    feed.restart = true;
                    let _ = feed.finish(&plan.name).await?;
                }
                continue;
            }
            let mut stream = db.copy_out(&plan.sql).await?;
            while let Some(piece) = stream.next().await {
                feed.buf.extend_from_slice(&piece?);
                feed.send_if_full().await?;
                if feed.restart {
                    break;
                }
            }
            // Reading stopped early: the COPY must finish before the connection is reused.
            while feed.restart && stream.next().await.is_some() {}
            drop(stream);
            match feed.finish(&plan.name).await? {
                Some(s) => {
                    out.push(s);
                    break;
                }
                None => delta = false,
            }
        }
    }
    Ok(())
}
