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
    streamed: Vec<(Streamed, Vec<crate::model::ChunkId>)>,
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

/// Streams every planned table, in order, into `pipe`: one [`Streamed`] per plan. A
/// table with a parent goes as a delta (from only its changed rows where the source
/// can say which), and is read again whole when the delta has to be abandoned.
async fn stream_tables<S: SourceReader>(
    src: &mut S,
    repo: &Repository,
    plans: &[Plan],
    pipe: &Pipeline,
    out: &mut Vec<Streamed>,
    progress: &dyn Progress,
) -> Result<()> {
    for (i, plan) in plans.iter().enumerate() {
        let mut delta = plan.parent.is_some();
        let mut since = plan.changed_since.filter(|_| delta);
        let lines = plan.format == StreamFormat::PgCopyText;
        loop {
            let mut feed = Feed::start(repo, pipe, progress, plan, lines, delta).await?;
            if let Some(xid) = since.take() {
                if src.changes_only(repo, plan, xid, &mut feed).await? {
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
            src.fill(i, plan, &mut feed).await?;
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

/// Reads the source through `src`: plans, parents, the streams, the pipeline.
async fn read_source<S: SourceReader>(
    repo: &Repository,
    opts: &BackupOptions,
    url: &SourceUrl,
    mut src: S,
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
    let pipeline = Pipeline::start(repo);
    let mut streamed = Vec::new();
    let read = stream_tables(&mut src, repo, &plans, &pipeline, &mut streamed, progress).await;
    let (chunks, written, bytes_stored) = pipeline.finish(read).await?;
    src.db().exec("COMMIT").await?;
    Ok(Read {
        engine: S::ENGINE,
        time_ms,
        plans,
        streamed: streamed.into_iter().zip(chunks).collect(),
        written,
        bytes_stored,
        objects,
        skipped,
        enums,
        pg_point: src.point(),
    })
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
    let result = match plan::prepare(repo, &opts.source).await {
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
            read_source(repo, opts, &url, src, progress).await?
        }
        SourceUrl::Mysql(secret) => {
            let src = mysql::Reader::connect(secret, url.display()).await?;
            read_source(repo, opts, &url, src, progress).await?
        }
        SourceUrl::Postgres(secret) => {
            let src = postgres::Reader::connect(secret, url.display()).await?;
            read_source(repo, opts, &url, src, progress).await?
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
