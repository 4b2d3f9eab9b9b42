//! The engine subcommands: init, backup, snapshots, restore, verify, prune, copy.
//!
//! Contract for scripts (and the console): exit 0 on success, otherwise non-zero with
//! one line on stderr. `backup` prints the snapshot id as the last line of stdout.
//! `--json` prints one JSON document on stdout instead of text. Passwords come from
//! `TABLESAFE_PASSWORD` or `--password-file`, never from the command line.

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::backup::{BackupOptions, backup};
use engine::model::SegmentKind;
use engine::progress::Progress;
use engine::repo::{Encryption, InitOptions, Repository};
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use engine::selection::{Selection, SelectionExt};
use engine::verify::{VerifyOptions, verify};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// The repository: a path, file:///path, s3://BUCKET/PREFIX?endpoint=URL&region=R
    /// (keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or
    /// sftp://USER@HOST:PORT/PATH[?key=FILE&known_hosts=strict|add|accept].
    #[arg(long)]
    pub repo: String,
    /// Read the repository password from this file (first line). Default: the
    /// TABLESAFE_PASSWORD environment variable.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Keep no local cache of the repository's snapshot manifests and index files
    /// (default: they are cached, checked on every read, in $XDG_CACHE_HOME/tablesafe
    /// or ~/.cache/tablesafe).
    #[arg(long)]
    pub no_cache: bool,
}

impl RepoArgs {
    /// The local cache ([`engine::repo::cache`]) repositories opened from here use.
    fn use_cache(&self) {
        engine::repo::cache::set_default_dir(if self.no_cache {
            None
        } else {
            engine::repo::cache::user_cache_dir()
        });
    }

    fn password(&self) -> Result<Option<Secret<String>>> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read password file {}", path.display()))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                bail!("password file {} is empty", path.display());
            }
            return Ok(Some(Secret::new(line)));
        }
        Ok(crate::cli::env_secret("TABLESAFE_PASSWORD"))
    }

    async fn open(&self) -> Result<Repository> {
        self.use_cache();
        Ok(Repository::open(&self.repo, self.password()?.as_ref()).await?)
    }

    /// Without loading the index: for a backup, which loads what it needs itself.
    async fn open_for_backup(&self) -> Result<Repository> {
        self.use_cache();
        Ok(Repository::open_lazy(&self.repo, self.password()?.as_ref()).await?)
    }

    async fn create(&self, no_encryption: bool) -> Result<Repository> {
        let opts = match (self.password()?, no_encryption) {
            (Some(_), true) => bail!("--no-encryption and a password were both given; choose one"),
            (Some(p), false) => InitOptions::encrypted(p),
            (None, true) => InitOptions::unencrypted(),
            (None, false) => bail!(
                "a new repository needs a password: set TABLESAFE_PASSWORD or --password-file \
                 (or --no-encryption for an unencrypted repository)"
            ),
        };
        self.use_cache();
        Ok(Repository::init(&self.repo, opts).await?)
    }
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Create an unencrypted repository (data readable by anyone with access to it).
    #[arg(long)]
    pub no_encryption: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The database: sqlite:///abs/path.db, sqlite://relative.db, postgres://user@host:port/db.
    #[arg(long)]
    pub source: String,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Tables to take (glob; repeatable). Default: all.
    #[arg(long)]
    pub include: Vec<String>,
    /// Tables to leave out (glob; repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Only these columns of a table: TABLE=COL,COL (primary-key columns are always kept).
    #[arg(long)]
    pub columns: Vec<String>,
    /// A tag for the snapshot: KEY=VALUE (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Create the repository unencrypted if it does not exist.
    #[arg(long)]
    pub no_encryption: bool,
    /// Readers of the one snapshot (PostgreSQL: connections; a table of 64 MB or more is
    /// read in key ranges at once) and threads compressing chunks. Default: the number
    /// of cores, at most 8.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// List every schema object carried and every object left out by name (by
    /// default: a count per kind).
    #[arg(long)]
    pub verbose: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The snapshot: `latest`, an id, or a unique prefix of one. With --at it only names
    /// the source (default: that of the latest snapshot).
    #[arg(long, required_unless_present_any = ["at", "to_file"])]
    pub snapshot: Option<String>,
    /// Restore the source as it was at this instant (RFC 3339, e.g.
    /// 2026-12-01T14:06:59Z). PostgreSQL: the latest snapshot before it plus the
    /// changes `tablesafe capture` stored up to it. SQLite: the newest state a capture
    /// took at or before it (exact while the database was seen unchanged).
    #[arg(long)]
    pub at: Option<String>,
    /// The database to restore into (same URL forms as `backup --source`).
    #[arg(long, required_unless_present = "to_file", conflicts_with = "to_file")]
    pub dest: Option<String>,
    /// Restore into a new file instead of a database: CSV or JSON lines (one table,
    /// chosen with --include), SQL statements or a SQLite database (any tables). The
    /// format comes from the extension (.csv, .jsonl, .sql, .sqlite) or --format.
    #[arg(long, value_name = "FILE")]
    pub to_file: Option<std::path::PathBuf>,
    /// The file's format when its extension does not say: csv, jsonl, sql or sqlite.
    #[arg(long, requires = "to_file")]
    pub format: Option<String>,
    #[arg(long)]
    pub include: Vec<String>,
    #[arg(long)]
    pub columns: Vec<String>,
    /// Only rows for which this holds (repeatable; all must hold): `COLUMN OP VALUE`
    /// with OP one of = != < <= > >= or `contains`, or `COLUMN is null` / `is not
    /// null`. Two conditions on the key give a key range: --where 'id >= 1000' --where
    /// 'id < 2000'. Numbers compare as numbers, other values as text (binary order).
    #[arg(long = "where", value_name = "CONDITION")]
    pub filter: Vec<String>,
    /// Restore table OLD as NEW (repeatable).
    #[arg(long)]
    pub rename: Vec<String>,
    /// create: fail if a table exists; replace: drop and recreate; append: add rows;
    /// into an existing table by primary key: upsert (backup rows replace rows with the
    /// same key, missing ones are inserted), skip-existing (only missing rows are
    /// inserted), replace-rows (the rows the restore covers, all or those --where
    /// selects, become the backup's: rows there that the backup lacks are deleted).
    /// --dry-run shows how many rows each merge would insert, update and delete, from
    /// reads alone (no row locked, no trigger fired). MySQL tables whose engine cannot
    /// roll back (MyISAM, MEMORY, Aria) are not merged or appended into.
    #[arg(long, default_value = "create")]
    pub mode: String,
    /// PostgreSQL: connections that load one big table at once (default: one per core,
    /// at most 4). Big tables load into a staging table that the restore's transaction
    /// renames into place, so a failed restore still changes nothing.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Print what would happen and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restoring some tables: leave out the objects that only use them (their
    /// triggers, policies, views over them alone, grants, comments). What they need
    /// (types, functions, sequences, extensions) still comes along.
    #[arg(long)]
    pub no_dependents: bool,
    /// Leave out GRANTs (a grant to a role the destination lacks is always left out,
    /// and reported).
    #[arg(long)]
    pub no_acl: bool,
    /// PostgreSQL: leave materialized views empty (refresh them later yourself).
    #[arg(long)]
    pub no_refresh: bool,
    /// MySQL: also make the scheduled events (off by default, as with mysqldump: a
    /// restored copy should not start running the source's jobs).
    #[arg(long)]
    pub events: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The snapshot: `latest`, an id, or a unique prefix of one.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// The table (`schema.table` for PostgreSQL); without it, the snapshot's tables are
    /// listed.
    #[arg(long)]
    pub table: Option<String>,
    /// Only rows for which this holds (repeatable), as in `restore --where`.
    #[arg(long = "where", value_name = "CONDITION")]
    pub filter: Vec<String>,
    /// Look up one row by its primary key: one value per key column, in key order.
    #[arg(long, num_args = 1..)]
    pub key: Vec<String>,
    /// Skip this many matching rows.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Rows to show (at most 500).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub limit: u16,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only this snapshot; default all.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Read, decrypt and re-hash all data and recompute every table's checksum.
    #[arg(long)]
    pub read_data: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub keep: engine::retention::KeepRules,
    /// Only snapshots with this tag (KEY=VALUE, repeatable) are subject to the rules.
    #[arg(long)]
    pub tag: Vec<String>,
    /// The IANA time zone whose days, weeks… the rules count.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// Show what would be removed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The repository to copy from (same forms as --repo).
    #[arg(long)]
    pub from: String,
    /// Its password file (default: TABLESAFE_PASSWORD).
    #[arg(long)]
    pub from_password_file: Option<PathBuf>,
    /// The repository to copy to; created (with its own password) if missing.
    #[arg(long)]
    pub to: String,
    /// Its password file (default: TABLESAFE_TO_PASSWORD, else the source's password).
    #[arg(long)]
    pub to_password_file: Option<PathBuf>,
    /// Only this snapshot (repeatable; id, prefix or `latest`). Default: every snapshot
    /// the destination does not have yet.
    #[arg(long)]
    pub snapshot: Vec<String>,
    #[arg(long)]
    pub json: bool,
    /// Keep no local cache of either repository's manifests and index files.
    #[arg(long)]
    pub no_cache: bool,
}

fn pairs(args: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} {a:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn when_exact(ms: i64) -> String {
    engine::capture::rfc3339(ms)
}

fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

pub async fn init(a: InitArgs) -> Result<()> {
    let repo = a.repo.create(a.no_encryption).await?;
    println!(
        "created {} repository {} at {}",
        if a.no_encryption {
            "an unencrypted"
        } else {
            "an encrypted"
        },
        repo.config.id,
        repo.storage.display
    );
    Ok(())
}

pub async fn run_backup(a: BackupArgs) -> Result<()> {
    let mut repo = if Repository::exists(&a.repo.repo).await? {
        a.repo.open_for_backup().await?
    } else {
        a.repo.create(a.no_encryption).await?
    };
    let opts = BackupOptions {
        source: Secret::new(a.source.clone()),
        selection: Selection {
            include: a.include,
            exclude: a.exclude,
            columns: Selection::parse_columns(&a.columns)?,
        },
        tags: pairs(&a.tag, "--tag")?,
    };
    let progress = CliProgress::new(a.json);
    let par = match a.jobs {
        Some(n) => engine::backup::Parallel::jobs(n.into()),
        None => engine::backup::Parallel::default(),
    };
    let result = engine::backup::backup_parallel(&mut repo, &opts, par, &progress).await;
    progress.done();
    let s = result?;
    let snap = &s.snapshot;
    if a.json {
        println!(
            "{}",
            json!({
                "id": s.id,
                "tables": snap.tables.len(),
                "rows": snap.total_rows(),
                "bytes_read": snap.total_bytes(),
                "bytes_stored": snap.bytes_stored,
                "seconds": snap.duration_ms as f64 / 1000.0,
                "incremental_tables": snap.tables.iter().filter(|t| t.segment == SegmentKind::Delta).count(),
                "changed_rows_only_tables": s.changes_only,
                "skipped": snap.skipped,
            })
        );
        return Ok(());
    }
    for t in &snap.tables {
        let delta = if t.segment == SegmentKind::Delta {
            let read = if s.changes_only.contains(&t.name) {
                ", only changed rows read"
            } else {
                ""
            };
            format!(" (incremental: {} of changes{read})", size(t.segment_bytes))
        } else {
            String::new()
        };
        println!(
            "table {}: {} rows, {}{delta}",
            t.name,
            t.rows,
            size(t.bytes)
        );
    }
    if a.verbose {
        for o in &snap.objects {
            println!("object {}", o.key());
        }
        for k in &snap.skipped {
            println!("skipped {} {}: {}", k.kind, k.name, k.reason);
        }
    } else {
        let keys: Vec<String> = snap.objects.iter().map(|o| o.key()).collect();
        if !keys.is_empty() {
            println!("schema objects: {}", engine::objects::summary(&keys));
        }
        // One line per kind of what is not carried, with why (--verbose names them).
        let mut kinds: Vec<(String, String, usize)> = Vec::new();
        for k in &snap.skipped {
            let kind = k.kind.to_string();
            match kinds
                .iter_mut()
                .find(|(kk, r, _)| *kk == kind && *r == k.reason)
            {
                Some((_, _, n)) => *n += 1,
                None => kinds.push((kind, k.reason.clone(), 1)),
            }
        }
        for (kind, reason, n) in kinds {
            println!(
                "skipped {n} {kind}{}: {reason} (--verbose lists them)",
                if n == 1 { "" } else { "s" }
            );
        }
    }
    println!(
        "snapshot of {} tables, {} rows, {} read, {} stored, {:.1} s",
        snap.tables.len(),
        snap.total_rows(),
        size(snap.total_bytes()),
        size(snap.bytes_stored),
        snap.duration_ms as f64 / 1000.0
    );
    println!("{}", s.id);
    Ok(())
}

pub async fn snapshots(a: SnapshotsArgs) -> Result<()> {
    let repo = a.repo.open().await?;
    let all = repo.snapshots().await?;
    let ranges = engine::capture::ranges(&repo).await?;
    let restorable_to = |s: &engine::model::Snapshot| {
        ranges
            .iter()
            .filter(|r| r.source == s.source.url && r.from_ms <= s.time_ms)
            .map(|r| r.to_ms)
            .max()
    };
    if a.json {
        let list: Vec<_> = all
            .iter()
            .map(|(id, s)| {
                json!({
                    "id": id, "time_ms": s.time_ms, "time": when(s.time_ms), "source": s.source.url,
                    "tags": s.tags, "bytes_stored": s.bytes_stored,
                    "tables": s.tables.iter().map(|t| json!({"name": t.name, "rows": t.rows, "bytes": t.bytes, "checksum": t.checksum, "segment": t.segment, "segment_bytes": t.segment_bytes, "layers": t.base.len() + 1})).collect::<Vec<_>>(),
                    "skipped": s.skipped,
                    // PostgreSQL with `tablesafe capture`: any instant from this
                    // snapshot up to here can be restored (`restore --at`).
                    "restorable_to_ms": restorable_to(s),
                    // SQLite: a round of `tablesafe capture`.
                    "capture": s.capture,
                    "restorable_to": restorable_to(s).map(when_exact),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<12}  {:<23}  {:>6}  {:>10}  {:>9}  SOURCE / TAGS",
        "ID", "TIME", "TABLES", "ROWS", "STORED"
    );
    // SQLite capture rounds are many: one line per capture below, not per round.
    let mut rounds: BTreeMap<&str, (usize, i64, i64)> = BTreeMap::new();
    for (id, s) in &all {
        if let Some(c) = &s.capture {
            let r = rounds
                .entry(c.name.as_str())
                .or_insert((0, s.time_ms, s.time_ms));
            *r = (r.0 + 1, r.1.min(s.time_ms), r.2.max(s.time_ms));
            continue;
        }
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<12}  {:<23}  {:>6}  {:>10}  {:>9}  {} {}",
            id.short(),
            when(s.time_ms),
            s.tables.len(),
            s.total_rows(),
            size(s.bytes_stored),
            s.source.url,
            tags.join(" ")
        );
    }
    println!("{} snapshots", all.len());
    for (name, (n, first, last)) in &rounds {
        println!(
            "capture {name}: {n} round snapshot(s) from {} to {} (not listed above)",
            when(*first),
            when(*last)
        );
    }
    for r in &ranges {
        println!(
            "{}: restorable to any instant from {} to {} (capture {})",
            r.source,
            when_exact(r.from_ms),
            when_exact(r.to_ms),
            r.slot
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// The database: postgres://user@host:port/db (the password from PGPASSWORD or
    /// ~/.pgpass; needs wal_level = logical and a role with REPLICATION), or
    /// sqlite:///path (a snapshot each round the database changed).
    #[arg(long)]
    pub source: String,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The capture's name (a-z, 0-9, _): PostgreSQL, one slot and publication per
    /// name; SQLite, one chain of rounds per name.
    #[arg(long, default_value = "main")]
    pub name: String,
    /// Tables to capture (glob; repeatable). Default: all with a primary key.
    #[arg(long)]
    pub include: Vec<String>,
    /// Tables to leave out (glob; repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Seconds between rounds (the recovery point is about this plus a round's time).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval_secs: u64,
    /// WAL the slot may hold back on the source, in MB, before the capture drops it
    /// rather than fill the source's disk.
    #[arg(long, default_value_t = 1024)]
    pub max_lag_mb: u64,
    /// Run one round and exit.
    #[arg(long)]
    pub once: bool,
    /// PostgreSQL: drop the slot and publication and exit (stored changes stay
    /// restorable). SQLite keeps nothing on the source.
    #[arg(long)]
    pub stop: bool,
    #[arg(long)]
    pub json: bool,
}

/// `tablesafe capture`: sets up the slot, makes sure a snapshot taken after it exists
/// (the base the changes replay on), then stores the source's changes every interval
/// until stopped (Ctrl-C / SIGTERM end it after the current round).
pub async fn run_capture(a: CaptureArgs) -> Result<()> {
    let source = Secret::new(a.source.clone());
    let is_sqlite = matches!(
        engine::source::SourceUrl::parse(&source)?,
        engine::source::SourceUrl::Sqlite(_)
    );
    if a.stop && is_sqlite {
        println!("a SQLite capture keeps nothing on the source: stopping its process is enough");
        return Ok(());
    }
    if a.stop {
        let dropped = engine::capture::teardown(&source, &a.name).await?;
        println!(
            "{}",
            if dropped {
                "capture stopped: its slot and publication were dropped"
            } else {
                "no capture slot was there; the publication is gone too"
            }
        );
        return Ok(());
    }
    let mut repo = if Repository::exists(&a.repo.repo).await? {
        a.repo.open().await?
    } else {
        a.repo.create(false).await?
    };
    let selection = Selection {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        columns: Default::default(),
    };
    let stop = stop_signal();
    if is_sqlite {
        return run_sqlite_capture(&a, repo, source, selection, stop).await;
    }
    let mut opts = engine::capture::CaptureOptions::new(source.clone(), &a.name);
    opts.selection = selection.clone();
    opts.max_lag_bytes = a.max_lag_mb.saturating_mul(1 << 20);
    let setup = engine::capture::setup(&opts).await?;
    if a.json {
        println!("{}", json!({ "setup": setup }));
    } else {
        println!(
            "capturing {} table(s) through slot {}{}",
            setup.tables.len(),
            setup.slot,
            if setup.created { " (new)" } else { "" }
        );
        for (t, why) in &setup.not_captured {
            println!("not captured: {t}: {why}");
        }
    }
    // The changes replay on a snapshot taken after the slot existed.
    let display = engine::source::SourceUrl::parse(&source)?.display();
    let has_base = repo.snapshots().await?.iter().any(|(_, s)| {
        s.source.url == display
            && s.pg_point
                .as_ref()
                .is_some_and(|p| p.slots.contains(&setup.slot))
    });
    if !has_base {
        let progress = CliProgress::new(true);
        let s = backup(
            &mut repo,
            &BackupOptions {
                source: source.clone(),
                selection,
                tags: [(
                    "reason".to_string(),
                    "base of continuous capture".to_string(),
                )]
                .into(),
            },
            &progress,
        )
        .await?;
        progress.done();
        if a.json {
            println!("{}", json!({ "base_snapshot": s.id }));
        } else {
            println!("base snapshot {} taken", s.id.short());
        }
    }
    if a.once {
        // One round that also records an idle stretch: the range ends now.
        opts.idle_segment_ms = 0;
    }
    let progress = CliProgress::new(true);
    let mut pos = engine::capture::Position::default();
    loop {
        // --once catches up completely; a running capture returns now and then to
        // check for a stop.
        let round = if a.once {
            engine::capture::until_drained(&mut repo, &opts, &mut pos, &progress).await
        } else {
            engine::capture::capture_round(&mut repo, &opts, &mut pos, &progress).await
        };
        let round = match round {
            Ok(r) => r,
            Err(e) => {
                pos.close().await;
                return Err(e.into());
            }
        };
        if a.json {
            println!("{}", json!({ "round": round }));
        } else if round.segment.is_some() && round.transactions > 0 {
            println!(
                "stored {} transaction(s), {} change(s); restorable up to {}",
                round.transactions,
                round.changes,
                round.covers_until_ms.map(when_exact).unwrap_or_default()
            );
        }
        if a.once || !wait_for_next_round(&stop, a.interval_secs).await {
            // The stream reports the last stored position as it closes.
            pos.close().await;
            return Ok(());
        }
    }
}

type StopFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// Set once Ctrl-C or SIGTERM arrives: the capture ends after its current round.
fn stop_signal() -> StopFlag {
    let stop = StopFlag::default();
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    stop
}

/// Sleeps until the next round; false when asked to stop meanwhile (or before).
async fn wait_for_next_round(stop: &StopFlag, interval_secs: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(interval_secs);
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        if std::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tablesafe capture` of a SQLite database: a round every interval, a snapshot when
/// the database changed (engine::capture::sqlite).
async fn run_sqlite_capture(
    a: &CaptureArgs,
    mut repo: Repository,
    source: Secret<String>,
    selection: Selection,
    stop: StopFlag,
) -> Result<()> {
    let mut capture = engine::capture::sqlite::SqliteCapture::new(
        source,
        &a.name,
        selection,
        Default::default(),
    )?;
    let progress = CliProgress::new(true);
    loop {
        let round = capture.round(&mut repo, &progress).await?;
        if a.json {
            println!("{}", json!({ "round": round }));
        } else if let Some(id) = &round.snapshot {
            println!(
                "round {}: snapshot {} ({} rows); restorable up to {}",
                round.seq,
                id.short(),
                round.rows,
                when_exact(round.covers_until_ms)
            );
        }
        if a.once || !wait_for_next_round(&stop, a.interval_secs).await {
            return Ok(());
        }
    }
}

/// An RFC 3339 instant as unix milliseconds.
fn parse_instant(s: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .with_context(|| format!("--at {s:?}: use RFC 3339, e.g. 2026-12-01T14:06:59Z"))
}

pub async fn restore(a: RestoreArgs) -> Result<()> {
    let repo = a.repo.open().await?;
    if let Some(path) = &a.to_file {
        return restore_to_file(&repo, &a, path).await;
    }
    let dest = a.dest.clone().expect("clap requires --dest or --to-file");
    let opts = RestoreOptions {
        snapshot: a.snapshot.clone().unwrap_or_else(|| "latest".into()),
        dest: Secret::new(dest),
        selection: Selection {
            include: a.include,
            exclude: Vec::new(),
            columns: Selection::parse_columns(&a.columns)?,
        },
        rename: pairs(&a.rename, "--rename")?,
        mode: a.mode.parse::<Mode>()?,
        jobs: a
            .jobs
            .map(usize::from)
            .unwrap_or_else(engine::restore::default_jobs),
        parallel_min_bytes: engine::restore::DEFAULT_PARALLEL_MIN_BYTES,
        at_ms: a.at.as_deref().map(parse_instant).transpose()?,
        filter: engine::filter::RowFilter::parse(&a.filter)?,
        objects: engine::objects::ObjectOptions {
            dependents: !a.no_dependents,
            acl: !a.no_acl,
            refresh: !a.no_refresh,
            events: a.events,
        },
    };
    let plan = engine::restore::plan(&repo, &opts).await?;
    if a.dry_run {
        // Merges: the row counts, from reads alone (the backup's rows in temporary
        // tables compared with the destination's; engine::restore::diff).
        let diff = if plan.tables.iter().any(|t| t.action.merge().is_some()) {
            let progress = CliProgress::new(a.json);
            let diff = engine::restore::diff(&repo, &plan, &progress).await;
            progress.done();
            diff?
        } else {
            Vec::new()
        };
        if a.json {
            println!("{}", json!({ "dry_run": true, "plan": plan, "diff": diff }));
        } else {
            println!(
                "dry run: restoring snapshot {} into {} would:",
                plan.snapshot.short(),
                plan.dest
            );
            if let Some(line) = as_of_line(&plan) {
                println!("  {line}");
            }
            for t in &plan.tables {
                let what = match t.action {
                    engine::restore::Action::Create => "create",
                    engine::restore::Action::Replace => "replace",
                    engine::restore::Action::Append => "append to",
                    engine::restore::Action::Upsert => "upsert into",
                    engine::restore::Action::SkipExisting => "add missing rows to",
                    engine::restore::Action::ReplaceRows => "replace rows of",
                };
                let from = if t.source_table != t.dest_table {
                    format!(" (from {})", t.source_table)
                } else {
                    String::new()
                };
                let loaders = if t.loaders > 1 {
                    format!(", over {} connections", t.loaders)
                } else {
                    String::new()
                };
                match diff
                    .iter()
                    .find(|d| d.table == t.dest_table)
                    .and_then(|d| d.merge)
                {
                    Some(m) => println!(
                        "  {what} table {}{from}: {}",
                        t.dest_table,
                        t.action
                            .merge()
                            .map(|mode| m.describe(mode))
                            .unwrap_or_default()
                    ),
                    None => println!(
                        "  {what} table {}{from}: {} rows, {}{loaders}",
                        t.dest_table,
                        t.rows,
                        size(t.bytes)
                    ),
                }
            }
            if !plan.objects.is_empty() {
                println!("  make {}", engine::objects::summary(&plan.objects));
            }
            for left in &plan.objects_left {
                println!("  not restored: {left}");
            }
            println!("nothing was changed");
        }
        return Ok(());
    }
    let progress = CliProgress::new(a.json);
    let result = engine::restore::execute(&repo, &plan, &progress).await;
    progress.done();
    let done = result?;
    if a.json {
        println!(
            "{}",
            json!({
                "snapshot": plan.snapshot,
                "dest": plan.dest,
                "tables": done,
                "at_ms": plan.at_ms,
                "as_of_ms": plan.as_of_ms,
                "unchanged_until_ms": plan.unchanged_until_ms,
            })
        );
    } else {
        if let Some(line) = as_of_line(&plan) {
            println!("{line}");
        }
        for t in &done {
            match (
                &t.merge,
                plan.tables.iter().find(|p| p.dest_table == t.table),
            ) {
                (Some(m), Some(p)) => {
                    println!(
                        "merged into table {}: {}",
                        t.table,
                        p.action
                            .merge()
                            .map(|mode| m.describe(mode))
                            .unwrap_or_default()
                    )
                }
                _ => println!("restored table {}: {} rows", t.table, t.rows),
            }
            for note in &t.notes {
                println!("  note: {note}");
            }
        }
        if !plan.objects.is_empty() {
            println!("made {}", engine::objects::summary(&plan.objects));
        }
        for left in &plan.objects_left {
            println!("not restored: {left}");
        }
    }
    Ok(())
}

/// `tablesafe show`: a page of a table in a snapshot, or the snapshot's tables.
pub async fn show(a: ShowArgs) -> Result<()> {
    let repo = a.repo.open().await?;
    let Some(table) = a.table.clone() else {
        let (id, snap) = repo.find_snapshot(&a.snapshot).await?;
        if a.json {
            let tables: Vec<_> = snap
                .tables
                .iter()
                .map(|t| json!({ "table": t.name, "rows": t.rows, "columns": t.stream_columns }))
                .collect();
            println!("{}", json!({ "snapshot": id, "tables": tables }));
        } else {
            println!(
                "snapshot {} has {} table(s); choose one with --table:",
                id.short(),
                snap.tables.len()
            );
            for t in &snap.tables {
                println!(
                    "  {} ({} rows): {}",
                    t.name,
                    t.rows,
                    t.stream_columns.join(", ")
                );
            }
        }
        return Ok(());
    };
    let page = engine::browse::browse(
        &repo,
        &engine::browse::BrowseQuery {
            snapshot: a.snapshot.clone(),
            table,
            filter: engine::filter::RowFilter::parse(&a.filter)?,
            key: a.key.clone(),
            offset: a.offset,
            limit: usize::from(a.limit),
        },
    )
    .await?;
    if a.json {
        println!("{}", serde_json::to_string(&page)?);
        return Ok(());
    }
    print!("{}", page_text(&page));
    Ok(())
}

/// A page of rows as an aligned text table, with where it sits in the table.
fn page_text(page: &engine::browse::BrowsePage) -> String {
    let cell = |v: &Option<String>| match v {
        None => "NULL".to_string(),
        Some(s) => s.replace('\n', "\\n").replace('\t', "\\t"),
    };
    let mut widths: Vec<usize> = page.columns.iter().map(|c| c.chars().count()).collect();
    for row in &page.rows {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell(v).chars().count()).min(60);
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let c: String = c.chars().take(*w).collect();
                format!("{c:<w$}", w = *w)
            })
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(page.columns.clone()));
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.push('\n');
    for row in &page.rows {
        out.push_str(&line(row.iter().map(cell).collect()));
        out.push('\n');
    }
    let first = page.offset + 1;
    let last = page.offset + page.rows.len() as u64;
    out.push_str(&if page.rows.is_empty() {
        format!(
            "no matching rows (table {} of snapshot {}: {} rows)\n",
            page.table,
            page.snapshot.short(),
            page.table_rows
        )
    } else {
        format!(
            "rows {first}–{last} of the matches{} (table {} of snapshot {}: {} rows){}\n",
            if page.more { ", more follow" } else { "" },
            page.table,
            page.snapshot.short(),
            page.table_rows,
            if page.more {
                format!("; next page: --offset {last}")
            } else {
                String::new()
            }
        )
    });
    out
}

/// `restore --to-file`: a snapshot's tables written to a new file.
async fn restore_to_file(
    repo: &engine::repo::Repository,
    a: &RestoreArgs,
    path: &std::path::Path,
) -> Result<()> {
    use engine::export::FileFormat;
    if a.at.is_some() {
        bail!(
            "--at cannot be combined with --to-file: restore to a point in time into a database, then export from there"
        );
    }
    if !a.rename.is_empty() || a.mode != "create" || a.jobs.is_some() {
        bail!("--rename, --mode and --jobs apply to a database restore, not --to-file");
    }
    let format = match &a.format {
        Some(f) => FileFormat::parse(f)?,
        None => FileFormat::from_path(path)?,
    };
    let selection = Selection {
        include: a.include.clone(),
        exclude: Vec::new(),
        columns: Selection::parse_columns(&a.columns)?,
    };
    let snapshot = a.snapshot.clone().unwrap_or_else(|| "latest".into());
    let filter = engine::filter::RowFilter::parse(&a.filter)?;
    let plan = engine::export::plan(repo, &snapshot, &selection, &filter, format).await?;
    if a.dry_run {
        if a.json {
            println!("{}", json!({ "dry_run": true, "plan": plan }));
        } else {
            println!(
                "dry run: snapshot {} to {} ({}) would write:",
                plan.snapshot.short(),
                path.display(),
                format.extension()
            );
            for t in &plan.tables {
                println!(
                    "  table {}: {} rows, {} columns",
                    t.table,
                    t.rows,
                    t.columns.len()
                );
            }
            println!("nothing was written");
        }
        return Ok(());
    }
    let progress = CliProgress::new(a.json);
    let result = engine::export::write_file(repo, &plan, path, &progress).await;
    progress.done();
    let written = result?;
    if a.json {
        println!("{}", json!({ "snapshot": plan.snapshot, "file": written }));
    } else {
        for t in &written.tables {
            println!("wrote table {}: {} rows", t.table, t.rows);
        }
        println!(
            "{} ({}, {}) from snapshot {}",
            written.path,
            format.extension(),
            size(written.bytes),
            plan.snapshot.short()
        );
    }
    Ok(())
}

/// What state a point-in-time restore gives, in words.
fn as_of_line(plan: &engine::restore::RestorePlan) -> Option<String> {
    let at = plan.at_ms?;
    let as_of = plan.as_of_ms.unwrap_or(at);
    let until = plan.unchanged_until_ms.unwrap_or(as_of);
    Some(if plan.pitr_replays() {
        format!(
            "the snapshot, then the changes captured up to {}",
            when_exact(at)
        )
    } else if until >= at {
        format!(
            "the database as of {}: captured at {} and unchanged until {}",
            when_exact(at),
            when_exact(as_of),
            when_exact(until)
        )
    } else {
        format!(
            "the newest state captured before {}: the database as of {} (commits between {} and the next round are not in it)",
            when_exact(at),
            when_exact(as_of),
            when_exact(until)
        )
    })
}

pub async fn run_verify(a: VerifyArgs) -> Result<()> {
    let repo = a.repo.open().await?;
    let progress = CliProgress::new(a.json);
    let result = verify(
        &repo,
        &VerifyOptions {
            snapshot: a.snapshot.clone(),
            read_data: a.read_data,
        },
        &progress,
    )
    .await;
    progress.done();
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!(
                "DAMAGED {}: {} (snapshots: {}; tables: {})",
                p.object,
                p.message,
                p.snapshots.iter().cloned().collect::<Vec<_>>().join(", "),
                p.tables.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        println!(
            "checked {} snapshots, {} tables, {} chunks{}",
            report.snapshots,
            report.tables,
            report.chunks,
            if report.read_data {
                " (data read and re-hashed)"
            } else {
                " (existence only; --read-data reads everything)"
            }
        );
    }
    if !report.ok() {
        bail!(
            "verification found {} damaged objects",
            report.problems.len()
        );
    }
    if !a.json {
        println!("no problems found");
    }
    Ok(())
}

pub async fn run_prune(a: PruneArgs) -> Result<()> {
    let tz: chrono_tz::Tz = a
        .time_zone
        .parse()
        .map_err(|_| anyhow::anyhow!("--time-zone {:?} is not an IANA time zone", a.time_zone))?;
    let rules = a.keep;
    let mut repo = a.repo.open().await?;
    let report = engine::prune::prune(
        &mut repo,
        &engine::prune::PruneOptions {
            rules,
            tz,
            only_tags: pairs(&a.tag, "--tag")?,
            dry_run: a.dry_run,
        },
    )
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut group = "";
    for d in &report.decisions {
        if d.group != group {
            group = &d.group;
            println!("{group}");
        }
        println!(
            "  {}  {}  {}",
            &d.id[..12],
            when(d.time_ms),
            if d.keep {
                format!("keep ({})", d.reasons.join(", "))
            } else if a.dry_run {
                "would remove".into()
            } else {
                "removed".into()
            }
        );
    }
    if a.dry_run {
        println!(
            "dry run: would remove {} snapshots and free up to {}",
            report.forgotten.len(),
            size(report.bytes_unreferenced)
        );
    } else {
        println!(
            "removed {} snapshots; freed {} ({} packs)",
            report.forgotten.len(),
            size(report.bytes_freed),
            report.packs_deleted
        );
        if report.packs_deferred > 0 {
            println!(
                "{} packs ({}) are unreferenced but were left for the next prune: in use by {}",
                report.packs_deferred,
                size(report.bytes_deferred),
                report.waiting_for.join(", ")
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The copy to take good data from (same forms as --repo).
    #[arg(long)]
    pub from: String,
    /// Its password file (default: TABLESAFE_FROM_PASSWORD, else the repository's).
    #[arg(long)]
    pub from_password_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `tablesafe repair`: every damaged pack's chunks rewritten (from the pack where they
/// still read, else from the copy), damaged packs removed, then a full verify. Fails
/// when anything stays unrecoverable.
pub async fn run_repair(a: RepairArgs) -> Result<()> {
    let mut repo = a.repo.open().await?;
    let from_password = match &a.from_password_file {
        Some(_) => RepoArgs {
            repo: a.from.clone(),
            password_file: a.from_password_file.clone(),
            no_cache: a.repo.no_cache,
        }
        .password()?,
        None => crate::cli::env_secret("TABLESAFE_FROM_PASSWORD").or(a.repo.password()?),
    };
    let copy = Repository::open(&a.from, from_password.as_ref()).await?;
    let progress = CliProgress::new(a.json);
    let result = engine::repair::repair(&mut repo, &copy, &progress).await;
    progress.done();
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.damaged_packs.is_empty() && report.unrecoverable.is_empty() {
        println!("nothing damaged");
    } else {
        println!(
            "damaged packs: {}; {} chunk(s) rewritten from {}, {} kept from the damaged packs",
            report.damaged_packs.join(", "),
            report.chunks_from_copy,
            a.from,
            report.chunks_kept
        );
    }
    if !report.unrecoverable.is_empty() {
        bail!(
            "{} chunk(s) are in neither repository and stay lost: {}",
            report.unrecoverable.len(),
            report.unrecoverable.join(", ")
        );
    }
    if let Some(v) = report.verify.as_ref().filter(|v| !v.ok()) {
        bail!(
            "after the repair, verify still finds {} problem(s)",
            v.problems.len()
        );
    }
    if !a.json {
        println!("verified: no problems found");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The snapshot to prove: latest, random, an id or a unique prefix.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// Where the scratch copy goes. A PostgreSQL snapshot: a server,
    /// postgres://user@host:port/db (tablesafe creates a database there for the drill
    /// and drops it afterwards; the user needs CREATEDB; the password from PGPASSWORD
    /// or ~/.pgpass). A MySQL snapshot: a server, mysql://user:password@host:port/db
    /// (a database is created and dropped likewise). A SQLite snapshot: a directory for
    /// the scratch file (default: the system's temporary directory).
    #[arg(long)]
    pub scratch: Option<String>,
    /// SQL that must return one row whose first column is true, run read-only on the
    /// restored copy (repeatable), e.g. "SELECT count(*) > 0 FROM orders".
    #[arg(long = "assert")]
    pub assertions: Vec<String>,
    /// PostgreSQL: connections that load one big table at once.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    #[arg(long)]
    pub json: bool,
}

/// `tablesafe drill`: restore a snapshot into a scratch database, check every table
/// against the manifest and the user's assertions, remove the copy, print the
/// evidence. Fails unless everything passed.
pub async fn run_drill(a: DrillArgs) -> Result<()> {
    let repo = a.repo.open().await?;
    let scratch = match &a.scratch {
        Some(s) => engine::drill::Scratch::parse(&Secret::new(s.clone())),
        None => engine::drill::Scratch::Dir(std::env::temp_dir()),
    };
    let opts = engine::drill::DrillOptions {
        snapshot: a.snapshot.clone(),
        scratch,
        assertions: a.assertions.clone(),
        jobs: a
            .jobs
            .map(usize::from)
            .unwrap_or_else(engine::restore::default_jobs),
    };
    let progress = CliProgress::new(a.json);
    let result = engine::drill::drill(&repo, &opts, &progress).await;
    progress.done();
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", drill_text(&report));
    }
    if !report.passed {
        bail!(
            "the drill failed: snapshot {} did not prove restorable",
            report.snapshot.short()
        );
    }
    Ok(())
}

/// A drill report as the terminal shows it.
pub fn drill_text(r: &engine::drill::DrillReport) -> String {
    let mut out = format!(
        "snapshot {} of {}, taken {}\nrestored {} table(s), {} rows into {} in {:.1} s; checked in {:.1} s\n",
        r.snapshot.short(),
        r.source,
        when_exact(r.snapshot_time_ms),
        r.tables.len(),
        r.rows,
        r.scratch,
        r.restore_ms as f64 / 1000.0,
        r.check_ms as f64 / 1000.0
    );
    for t in &r.tables {
        let verdict = if t.passed { "ok  " } else { "FAIL" };
        let checksum = if t.checksum_matches {
            format!("checksum matches ({})", t.compared)
        } else {
            "checksum DIFFERS".to_string()
        };
        out.push_str(&format!(
            "  {verdict} {}: {} of {} rows, {checksum}\n",
            t.table, t.rows_restored, t.rows_expected
        ));
    }
    for c in &r.assertions {
        let verdict = if c.passed { "ok  " } else { "FAIL" };
        out.push_str(&format!("  {verdict} assert {}: {}\n", c.sql, c.detail));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out.push_str(if r.cleaned_up {
        "scratch copy removed\n"
    } else {
        "the scratch copy could NOT be removed\n"
    });
    out.push_str(if r.passed {
        "drill passed\n"
    } else {
        "drill FAILED\n"
    });
    out
}

pub async fn run_copy(a: CopyArgs) -> Result<()> {
    let from = RepoArgs {
        repo: a.from.clone(),
        password_file: a.from_password_file.clone(),
        no_cache: a.no_cache,
    };
    let src = from.open().await?;
    let to_password = match &a.to_password_file {
        Some(_) => RepoArgs {
            repo: a.to.clone(),
            password_file: a.to_password_file.clone(),
            no_cache: a.no_cache,
        }
        .password()?,
        None => crate::cli::env_secret("TABLESAFE_TO_PASSWORD").or(from.password()?),
    };
    let mut dst = if Repository::exists(&a.to).await? {
        Repository::open(&a.to, to_password.as_ref()).await?
    } else {
        let opts = match to_password {
            Some(p) => InitOptions::encrypted(p),
            None if src.config.encryption == Encryption::None => InitOptions::unencrypted(),
            None => bail!("the destination does not exist and no password was given for it"),
        };
        Repository::init(&a.to, opts).await?
    };
    let progress = CliProgress::new(a.json);
    let only = (!a.snapshot.is_empty()).then_some(a.snapshot.as_slice());
    let result = engine::copy::copy(&src, &mut dst, only, &progress).await;
    progress.done();
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for c in &report.copied {
        println!(
            "copied {} → {} ({} new)",
            c.source_id.short(),
            c.dest_id.short(),
            size(c.bytes_stored)
        );
    }
    println!(
        "{} snapshots copied, {} already there",
        report.copied.len(),
        report.already_there.len()
    );
    Ok(())
}

/// Progress on a terminal (stderr); silent otherwise or with `--json`.
struct CliProgress {
    bar: Option<ProgressBar>,
}

impl CliProgress {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {pos} rows, {prefix} [{elapsed}]")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn table_started(&self, table: &str, rows: Option<u64>) {
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.set_message(match rows {
                Some(r) => format!("{table} (of {r})"),
                None => table.to_string(),
            });
        }
    }
    fn advanced(&self, rows: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(rows);
            let _ = bytes;
        }
    }
}
