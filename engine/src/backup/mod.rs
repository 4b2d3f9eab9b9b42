//! Backup: one consistent read of the source, streamed through chunking, dedup,
//! compression and encryption into packs, then the snapshot manifest.
//!
//! Two stages run in parallel: the async reader (rows → stream bytes → checksum) and a
//! blocking worker (FastCDC → chunk id → dedup → zstd → seal → pack writes), joined by a
//! bounded channel so memory stays flat whatever the table size.

//! Each engine is a [`SourceReader`] (`sqlite.rs`, `mysql.rs`, `postgres.rs`): it opens
//! the one read transaction, plans the selected tables from its catalog and streams them;
//! everything else — parents, the pipeline, the manifest — is the same for all.

mod feed;
mod mysql;
mod pg_blocks;
mod pipeline;
mod plan;
mod postgres;
mod sqlite;
mod values;

use crate::model::ChunkId;
use crate::model::{
    Engine, PgEnum, PgPoint, SegmentKind, Skipped, Snapshot, SnapshotSource, StreamFormat,
    TableEntry,
};
use crate::progress::Progress;
use crate::repo::{Repository, now_ms};
use crate::secret::Secret;
use crate::selection::Selection;
use crate::source::{DiscoveredTable, RunSql, SourceDb, SourceUrl};
use crate::{Error, Result};
use feed::{Feed, Streamed};
use pipeline::{Pipeline, Written};
use plan::{Plan, choose_parents, selected};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub source: Secret<String>,
    pub selection: Selection,
    pub tags: BTreeMap<String, String>,
}

/// How many readers a backup runs at once ([`backup_parallel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallel {
    /// Connections reading the one snapshot (PostgreSQL; other engines read on one) and
    /// threads compressing and encrypting chunks. At least 1.
    pub jobs: usize,
    /// A table at least this large (the source's statistics, PostgreSQL) is read in
    /// `jobs` key ranges at once when it is stored whole.
    pub split_min_bytes: u64,
}

/// The most readers a backup runs by default.
pub const MAX_DEFAULT_JOBS: usize = 8;

impl Default for Parallel {
    /// One reader per core, at most [`MAX_DEFAULT_JOBS`]; tables of 64 MB or more split.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Parallel {
            jobs: cores.clamp(1, MAX_DEFAULT_JOBS),
            split_min_bytes: 64 << 20,
        }
    }
}

impl Parallel {
    /// `jobs` readers (at least 1), big tables split as by default.
    pub fn jobs(jobs: usize) -> Self {
        Parallel {
            jobs: jobs.max(1),
            ..Parallel::default()
        }
    }
}

/// What a finished backup reports.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub id: crate::model::SnapshotId,
    pub snapshot: Snapshot,
    /// Tables whose delta was built from only the rows changed since the parent (read by
    /// their `xmin`, PostgreSQL) instead of every row.
    pub changes_only: Vec<String>,
}

/// A table store as a backup reads it. Everything a backup reads goes through one read
/// transaction on one connection, from [`SourceReader::begin`] to the `COMMIT` that
/// [`read_source`] sends on [`SourceReader::db`] (crate docs, "What makes a snapshot consistent"). Adding a
/// source engine means implementing this (and restore's destination side).
trait SourceReader {
    const ENGINE: Engine;
    type Db: SourceDb;

    /// Starts the read transaction; every later call reads inside it.
    async fn begin(&mut self) -> Result<()> {
        self.db().begin_snapshot().await
    }

    /// The connection the read transaction runs on.
    fn db(&mut self) -> &mut Self::Db;

    /// Plans one selected table (with its `--columns` list, if any); what the plan
    /// leaves out goes to `skipped`.
    fn plan_table(
        &mut self,
        table: &<Self::Db as SourceDb>::Table,
        columns: Option<&Vec<String>>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Plan>;

    /// Once the parents are chosen: lets a plan read less than every row (PostgreSQL's
    /// changes-only deltas). `latest` is the source's latest snapshot.
    fn narrow(&self, _latest: &Snapshot, _planned: &mut Planned) {}

    /// Streams plan number `i`'s rows into `feed` (whose `restart` stops the read: the
    /// table is then read again whole).
    async fn fill(&mut self, i: usize, plan: &Plan, feed: &mut Feed<'_>) -> Result<()>;

    /// Builds a delta from only the rows written by transaction `since` or later
    /// (PostgreSQL, where [`SourceReader::narrow`] set [`Plan::changed_since`]); false
    /// when that is not possible this time.
    async fn changes_only(
        &mut self,
        _repo: &Repository,
        _plan: &Plan,
        _since: u64,
        _feed: &mut Feed<'_>,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Where the read sits in the source's history (PostgreSQL; recorded in the
    /// snapshot for point-in-time restores and changes-only deltas).
    fn point(&self) -> Option<PgPoint> {
        None
    }

    /// Up to `n` more readers that read the same snapshot as this one, each in its own
    /// read transaction on its own connection, joined to this reader's (PostgreSQL:
    /// `pg_export_snapshot()` here, `SET TRANSACTION SNAPSHOT` there). This reader's
    /// transaction must stay open until they are done. None: the engine reads on one
    /// connection.
    async fn helpers(&mut self, _n: usize) -> Result<Vec<Self>>
    where
        Self: Sized,
    {
        Ok(Vec::new())
    }

    /// The size of each planned table by the source's statistics (bytes; 0 unknown),
    /// to read the largest first and split the big ones.
    async fn sizes(&mut self, plans: &[Plan]) -> Result<Vec<u64>> {
        Ok(vec![0; plans.len()])
    }

    /// The statements reading `plan`'s stream in `n` parts (of about equal size, in
    /// stream order) whose streams, concatenated, are a stream of the table read in
    /// this transaction; empty when the table cannot be split.
    async fn split(&mut self, _plan: &Plan, _n: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Streams one part made by [`SourceReader::split`] into `feed`.
    async fn fill_part(&mut self, _sql: &str, _feed: &mut Feed<'_>) -> Result<()> {
        Err(Error::Other(
            "this source does not read tables in parts".into(),
        ))
    }
}

/// The selected tables of a source, planned.
struct Planned {
    plans: Vec<Plan>,
    objects: Vec<crate::model::SchemaObject>,
    skipped: Vec<Skipped>,
    /// PostgreSQL enum types the tables use.
    enums: Vec<PgEnum>,
}

/// What one consistent read of the source stored.
struct Read {
    engine: Engine,
    time_ms: i64,
    plans: Vec<Plan>,
    /// Per plan, its stream and chunk ids.
    streamed: Vec<(Streamed, Vec<ChunkId>)>,
    written: Written,
    bytes_stored: u64,
    objects: Vec<crate::model::SchemaObject>,
    skipped: Vec<Skipped>,
    enums: Vec<PgEnum>,
    pg_point: Option<PgPoint>,
}

/// Reads the catalog and plans the selected tables, in catalog order.
async fn plan_source<S: SourceReader>(
    src: &mut S,
    selection: &Selection,
    progress: &dyn Progress,
) -> Result<Planned> {
    let catalog = src.db().discover().await?;
    let mut skipped = catalog.skipped.clone();
    let mut plans = Vec::new();
    // What the progress counts against: the statistics, not a count (a scan).
    let mut expected = 0u64;
    for (table, columns) in selected(&catalog.tables, |t| t.name(), selection)? {
        if progress.wants_planned() {
            expected += src.db().estimate_rows(table).await?.unwrap_or(0);
        }
        plans.push(src.plan_table(table, columns, &mut skipped)?);
    }
    if expected > 0 {
        progress.planned(expected);
    }
    // A selection that takes none of the source's tables is a mistake (a typo'd
    // pattern), not a backup: it would count as the policy's last success while
    // protecting nothing. (A source with no tables at all is backed up as empty: a
    // capture round after a mistaken DROP must record it. The console refuses that for
    // scheduled backups itself.)
    if plans.is_empty() && !catalog.tables.is_empty() {
        let mut have: Vec<&str> = catalog.tables.iter().map(|t| t.name().as_str()).collect();
        let more = have.len().saturating_sub(10);
        have.truncate(10);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(Error::invalid(format!(
            "the selection (include {:?}, exclude {:?}) matches none of the source's tables: {}{more}",
            selection.include,
            selection.exclude,
            have.join(", "),
        )));
    }
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    let objects = crate::objects::carried(catalog.objects, &names, &mut skipped);
    Ok(Planned {
        plans,
        objects,
        skipped,
        enums: catalog.enums,
    })
}

/// One table, or one key range of a table, for a reader to stream.
struct Task {
    plan: usize,
    /// Part `part` of `of`, read by `sql`; `of` is 0 for a table read whole.
    part: usize,
    of: usize,
    sql: String,
}

/// A task streamed; its chunk list comes from its reader's pipeline.
struct Done {
    task: Task,
    streamed: Streamed,
}

/// Streams one table (`task.of == 0`) into `pipe`: as a delta when it has a parent (from
/// only its changed rows where the source can say which), read again whole when the
/// delta has to be abandoned.
async fn stream_table<S: SourceReader>(
    src: &mut S,
    repo: &Repository,
    plan: &Plan,
    i: usize,
    pipe: &Pipeline,
    progress: &dyn Progress,
) -> Result<Streamed> {
    let mut delta = plan.parent.is_some();
    let mut since = plan.changed_since.filter(|_| delta);
    let lines = plan.format == StreamFormat::PgCopyText;
    loop {
        let mut feed = Feed::start(repo, pipe, progress, plan, lines, delta).await?;
        if let Some(xid) = since.take() {
            if src.changes_only(repo, plan, xid, &mut feed).await? {
                if let Some(mut s) = feed.finish(&plan.name).await? {
                    s.changes_only = true;
                    return Ok(s);
                }
            } else {
                // Not possible this time: the table is read whole, as a delta still.
                feed.restart = true;
                let _ = feed.finish(&plan.name).await?;
            }
            continue;
        }
        src.fill(i, plan, &mut feed).await?;
        match feed.finish(&plan.name).await? {
            Some(s) => return Ok(s),
            None => delta = false,
        }
    }
}

/// One reader's share of the tasks: it takes the next task from `queue` until none is
/// left (or another reader failed), streaming into its own pipeline.
async fn run_lane<S: SourceReader>(
    src: &mut S,
    repo: &Repository,
    plans: &[Plan],
    pipe: &Pipeline,
    queue: &std::sync::Mutex<std::collections::VecDeque<Task>>,
    failed: &std::sync::atomic::AtomicBool,
    progress: &dyn Progress,
) -> Result<Vec<Done>> {
    use std::sync::atomic::Ordering;
    let mut done = Vec::new();
    loop {
        if failed.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let Some(task) = queue.lock().expect("task queue").pop_front() else {
            return Ok(done);
        };
        let plan = &plans[task.plan];
        let result = if task.of == 0 {
            stream_table(src, repo, plan, task.plan, pipe, progress).await
        } else {
            async {
                let lines = plan.format == StreamFormat::PgCopyText;
                let mut feed = Feed::start(repo, pipe, progress, plan, lines, false).await?;
                let spec = plan.key.clone().ok_or_else(|| {
                    Error::Other(format!(
                        "{}: only a keyed table is read in parts",
                        plan.name
                    ))
                })?;
                feed.check = crate::checksum::StreamCheck::for_part(spec);
                src.fill_part(&task.sql, &mut feed).await?;
                match feed.finish(&plan.name).await? {
                    Some(s) => Ok(s),
                    None => Err(Error::Other("a full segment was abandoned".into())),
                }
            }
            .await
        };
        match result {
            Ok(streamed) => done.push(Done { task, streamed }),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

/// The tasks for the planned tables: largest first (by `sizes`), a table stored whole
/// and at least `par.split_min_bytes` large split into `par.jobs` parts when the source
/// can.
async fn tasks<S: SourceReader>(
    src: &mut S,
    plans: &[Plan],
    par: Parallel,
    helpers: usize,
    blocks: bool,
) -> Result<Vec<Task>> {
    let sizes = if helpers > 0 {
        src.sizes(plans).await?
    } else {
        vec![0; plans.len()]
    };
    let mut order: Vec<usize> = (0..plans.len()).collect();
    // Largest first, so that no reader is left with a big table at the end; equal sizes
    // keep the catalog order.
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut tasks = Vec::new();
    for i in order {
        let plan = &plans[i];
        let whole = Task {
            plan: i,
            part: 0,
            of: 0,
            sql: plan.sql.clone(),
        };
        // Only a keyed table's checksum (blocks, format 2) combines over parts.
        if helpers == 0
            || plan.parent.is_some()
            || plan.key.is_none()
            || !blocks
            || sizes[i] < par.split_min_bytes.max(1)
        {
            tasks.push(whole);
            continue;
        }
        let parts = src.split(plan, helpers + 1).await?;
        if parts.len() < 2 {
            tasks.push(whole);
            continue;
        }
        let of = parts.len();
        tasks.extend(parts.into_iter().enumerate().map(|(part, sql)| Task {
            plan: i,
            part,
            of,
            sql,
        }));
    }
    Ok(tasks)
}

/// Streams every planned table with `src` and its helpers, one pipeline each: one
/// [`Streamed`] and chunk list per plan, in plan order, and what the pipelines wrote.
/// A table read in parts gets its parts' chunk lists concatenated in key order and
/// their streams combined ([`combine_parts`]).
async fn stream_tables<S: SourceReader>(
    src: &mut S,
    repo: &Repository,
    plans: &[Plan],
    par: Parallel,
    progress: &dyn Progress,
) -> Result<(Vec<(Streamed, Vec<ChunkId>)>, Written, u64)> {
    let blocks = repo.config.format >= 2;
    let tasks = tasks(src, plans, par, par.jobs.max(1) - 1, blocks).await?;
    // Helpers join the snapshot once the tasks are known: no connection is opened that
    // would have nothing to read.
    let mut helpers = if par.jobs > 1 && tasks.len() > 1 {
        src.helpers(par.jobs.min(tasks.len()) - 1).await?
    } else {
        Vec::new()
    };
    let lanes = (helpers.len() + 1).min(tasks.len()).max(1);
    let queue = std::sync::Mutex::new(tasks.into_iter().collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    // Each pipeline seals on its share of the jobs' threads.
    let threads = par.jobs.div_ceil(lanes).max(1);
    let pipes: Vec<Pipeline> = (0..lanes).map(|_| Pipeline::start(repo, threads)).collect();
    let results = {
        let mut readers: Vec<&mut S> = std::iter::once(&mut *src)
            .chain(helpers.iter_mut())
            .collect();
        let runs = readers
            .iter_mut()
            .zip(&pipes)
            .map(|(r, pipe)| run_lane(&mut **r, repo, plans, pipe, &queue, &failed, progress));
        futures::future::join_all(runs).await
    };
    // Every pipeline is finished (a failed read makes each discard what it wrote); the
    // first error, preferring a real one to the others' cancellation, is the backup's.
    let mut first_err: Option<Error> = None;
    let mut outputs = Vec::new();
    let any_failed = results.iter().any(|r| r.is_err());
    for (pipe, result) in pipes.into_iter().zip(results) {
        let (read, done) = match result {
            Ok(done) if !any_failed => (Ok(()), done),
            Ok(_) => (Err(Error::Cancelled), Vec::new()),
            Err(e) => (Err(e), Vec::new()),
        };
        match pipe.finish(read).await {
            Ok((chunks, written, stored)) => outputs.push((done, chunks, written, stored)),
            Err(Error::Cancelled) => {}
            Err(e) => {
                if first_err.is_none() || matches!(first_err, Some(Error::Cancelled)) {
                    first_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if any_failed {
        return Err(Error::Cancelled);
    }
    // The helpers' transactions end before this reader's: the snapshot they joined was
    // exported by it (crate docs, "What makes a snapshot consistent").
    for h in &mut helpers {
        h.db().exec("COMMIT").await?;
    }
    let mut all_written = Vec::new();
    let mut stored = 0;
    let mut per_plan: Vec<Vec<(Done, Vec<ChunkId>)>> = plans.iter().map(|_| Vec::new()).collect();
    for (done, chunks, written, bytes) in outputs {
        if done.len() != chunks.len() {
            return Err(Error::Other(format!(
                "backup pipeline: {} streams read, {} chunked",
                done.len(),
                chunks.len()
            )));
        }
        all_written.extend(written);
        stored += bytes;
        for (d, c) in done.into_iter().zip(chunks) {
            per_plan[d.task.plan].push((d, c));
        }
    }
    let mut out = Vec::with_capacity(plans.len());
    for (plan, mut parts) in plans.iter().zip(per_plan) {
        parts.sort_by_key(|(d, _)| d.task.part);
        out.push(combine_parts(plan, parts)?);
    }
    Ok((out, all_written, stored))
}

/// One table's [`Streamed`] from its parts', in key order: their block hashers
/// joined (the block across each seam hashed there), so the checksum and block list
/// are those of one read of the whole stream.
fn combine(parts: Vec<Streamed>) -> Result<Streamed> {
    let mut hasher: Option<crate::checksum::TableHasher> = None;
    let (mut rows, mut bytes, mut segment_bytes) = (0, 0, 0);
    let mut key = Vec::new();
    for p in parts {
        let Some(part) = p.part else {
            return Err(Error::Other(
                "a table part was read without its block hasher".into(),
            ));
        };
        hasher = Some(match hasher {
            None => part,
            Some(h) => h.join(part),
        });
        rows += p.rows;
        bytes += p.bytes;
        segment_bytes += p.segment_bytes;
        key = p.key;
    }
    let sum = hasher
        .ok_or_else(|| Error::Other("a table read in no parts".into()))?
        .finish();
    if sum.rows != rows || sum.bytes != bytes {
        return Err(Error::Other(format!(
            "a table read in parts hashed {} rows ({} bytes) but streamed {rows} ({bytes} bytes)",
            sum.rows, sum.bytes
        )));
    }
    Ok(Streamed {
        rows,
        bytes,
        checksum: sum.root,
        blocks: Some(sum),
        part: None,
        base: Vec::new(),
        segment_bytes,
        key,
        edges: None,
        changes_only: false,
    })
}

/// A table's stream from its parts, in key order: the chunk lists concatenated, the
/// counts added, the checksum combined; the key kept only when every part proved it
/// and each part's last row sorts before the next part's first.
fn combine_parts(
    plan: &Plan,
    mut parts: Vec<(Done, Vec<ChunkId>)>,
) -> Result<(Streamed, Vec<ChunkId>)> {
    if parts.len() == 1 && parts[0].0.task.of == 0 {
        let (d, chunks) = parts.pop().expect("one part");
        return Ok((d.streamed, chunks));
    }
    let of = parts.first().map_or(0, |(d, _)| d.task.of);
    if of == 0 || parts.len() != of {
        return Err(Error::Other(format!(
            "{}: {} of {of} parts read",
            plan.name,
            parts.len()
        )));
    }
    let mut keyed = parts.iter().all(|(d, _)| !d.streamed.key.is_empty());
    if keyed {
        let mut prev: Option<&crate::segment::Key> = None;
        for (d, _) in &parts {
            let Some((first, last)) = &d.streamed.edges else {
                continue;
            };
            if prev.is_some_and(|p| crate::segment::cmp_key(p, first) != std::cmp::Ordering::Less) {
                keyed = false;
                break;
            }
            prev = Some(last);
        }
    }
    let mut chunks = Vec::new();
    let mut streams = Vec::with_capacity(parts.len());
    for (d, c) in parts {
        chunks.extend(c);
        streams.push(d.streamed);
    }
    let mut s = combine(streams)?;
    if !keyed {
        s.key = Vec::new();
    }
    Ok((s, chunks))
}

/// Reads the source through `src`: plans, parents, the streams, the pipeline.
async fn read_source<S: SourceReader>(
    repo: &Repository,
    opts: &BackupOptions,
    url: &SourceUrl,
    mut src: S,
    par: Parallel,
    progress: &dyn Progress,
) -> Result<Read> {
    src.begin().await?;
    let time_ms = now_ms();
    let mut planned = plan_source(&mut src, &opts.selection, progress).await?;
    if let Some(latest) = choose_parents(repo, url, &mut planned.plans).await? {
        src.narrow(&latest, &mut planned);
    }
    let Planned {
        plans,
        objects,
        skipped,
        enums,
    } = planned;
    let (streamed, written, bytes_stored) =
        stream_tables(&mut src, repo, &plans, par, progress).await?;
    src.db().exec("COMMIT").await?;
    Ok(Read {
        engine: S::ENGINE,
        time_ms,
        plans,
        streamed,
        written,
        bytes_stored,
        objects,
        skipped,
        enums,
        pg_point: src.point(),
    })
}

/// A backup with the default number of readers ([`Parallel::default`]).
pub async fn backup(
    repo: &mut Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    backup_parallel(repo, opts, Parallel::default(), progress).await
}

/// A backup with `par.jobs` readers of the one snapshot (PostgreSQL) and as many
/// threads sealing chunks.
pub async fn backup_parallel(
    repo: &mut Repository,
    opts: &BackupOptions,
    par: Parallel,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    backup_run(repo, opts, None, par, progress).await
}

/// A backup that is also round `capture` of a SQLite continuous capture.
pub(crate) async fn backup_as(
    repo: &mut Repository,
    opts: &BackupOptions,
    capture: Option<crate::model::CaptureRound>,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    backup_run(repo, opts, capture, Parallel::default(), progress).await
}

async fn backup_run(
    repo: &mut Repository,
    opts: &BackupOptions,
    capture: Option<crate::model::CaptureRound>,
    par: Parallel,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    // Lock first, then read the index and prune's condemned packs (crate docs,
    // "Concurrency"): from here on no prune deletes what this backup may reference.
    let lock = repo
        .lock(crate::repo::lock::LockKind::Shared, "backup")
        .await?;
    let result = match plan::prepare(repo, &opts.source).await {
        Ok(()) => backup_locked(repo, opts, capture, par, progress).await,
        Err(e) => Err(e),
    };
    lock.release().await;
    result
}

async fn backup_locked(
    repo: &mut Repository,
    opts: &BackupOptions,
    capture: Option<crate::model::CaptureRound>,
    par: Parallel,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let url = SourceUrl::parse(&opts.source)?;
    let Read {
        engine,
        time_ms,
        plans,
        streamed,
        written,
        bytes_stored,
        objects,
        skipped,
        enums,
        pg_point,
    } = match &url {
        SourceUrl::Sqlite(path) => {
            let src = sqlite::Reader::open(path).await?;
            read_source(repo, opts, &url, src, par, progress).await?
        }
        SourceUrl::Mysql(secret) => {
            let src = mysql::Reader::connect(secret, url.display(), par.jobs).await?;
            read_source(repo, opts, &url, src, par, progress).await?
        }
        SourceUrl::Postgres(secret) => {
            let src = postgres::Reader::connect(secret, url.display()).await?;
            read_source(repo, opts, &url, src, par, progress).await?
        }
    };
    // Format 2: each keyed table's block list (`checksum` module), stored like the
    // streams: before the manifest that names it.
    let mut streamed = streamed;
    let sums = streamed.iter_mut().map(|(s, _)| s.blocks.take()).collect();
    let (block_lists, lists_written, lists_stored) = feed::store_block_lists(repo, sums).await?;
    let mut written = written;
    written.extend(lists_written);
    let bytes_stored = bytes_stored + lists_stored;
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
        .zip(block_lists)
        .map(|((p, (s, chunks)), blocks)| TableEntry {
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
            blocks,
        })
        .collect();
    let changes_only = streamed_changes_only;
    let snapshot = Snapshot {
        format: repo.config.format,
        time_ms,
        source: SnapshotSource {
            engine,
            url: url.display(),
        },
        selection: opts.selection.clone(),
        tags: opts.tags.clone(),
        tables,
        enums,
        skipped,
        objects,
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
    repo.save_hint(&snapshot.source.url, &id, &snapshot).await;
    Ok(BackupSummary {
        id,
        snapshot,
        changes_only,
    })
}
