//! Restore: plan (what would be created, replaced or appended — the dry run), then
//! execute the plan in one transaction, so a failure or damaged data changes nothing.
//!
//! PostgreSQL tables of [`RestoreOptions::parallel_min_bytes`] or more load faster over
//! several connections, which one transaction cannot span. They load first, each into
//! a staging table (`tablesafe_stage_…`, without defaults or constraints) in its
//! destination schema, committed; the restore's transaction then drops the table being
//! replaced, renames the staging table into place and adds defaults, constraints,
//! indexes and sequence values, so the visible change still happens at one commit. The
//! schemas and enum types the staging tables need are committed first too. If anything
//! fails, the transaction rolls back and the staging tables, schemas and types the
//! restore created are dropped (a restore killed outright can leave a
//! `tablesafe_stage_…` table behind, which is safe to drop).

use crate::model::{ConstraintKind, Engine, Identity, PgEnum};
use crate::model::{RowDecoder, TableEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::secret::Secret;
use crate::selection::Selection;
use crate::source::SourceUrl;
use crate::source::mysql::{self as my, MyDb};
use crate::source::postgres::{self as pg, PgDb, count_lines, split_name};
use crate::source::sqlite::{
    SqliteDb, create_table_for, quote, rename_create_index, rename_create_table,
};
use crate::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fail if a table exists.
    Create,
    /// Drop and recreate.
    Replace,
    /// Insert into the existing table.
    Append,
    /// Into the existing table by key: backup rows replace rows with the same key,
    /// the others are inserted ([`crate::merge`]).
    Upsert,
    /// Into the existing table by key: only rows whose key it lacks are inserted.
    SkipExisting,
    /// Into the existing table by key: the rows the restore covers (all, or those
    /// matching the filter) become the backup's, deleting those the backup lacks.
    ReplaceRows,
}

impl Mode {
    /// How a merge mode meets existing rows (`None` for create, replace, append).
    pub fn merge(self) -> Option<crate::merge::MergeMode> {
        match self {
            Mode::Upsert => Some(crate::merge::MergeMode::Upsert),
            Mode::SkipExisting => Some(crate::merge::MergeMode::SkipExisting),
            Mode::ReplaceRows => Some(crate::merge::MergeMode::ReplaceRows),
            Mode::Create | Mode::Replace | Mode::Append => None,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "create" => Ok(Mode::Create),
            "replace" => Ok(Mode::Replace),
            "append" => Ok(Mode::Append),
            "upsert" => Ok(Mode::Upsert),
            "skip-existing" => Ok(Mode::SkipExisting),
            "replace-rows" => Ok(Mode::ReplaceRows),
            other => Err(Error::invalid(format!(
                "unknown restore mode {other:?}: use create, replace, append, upsert, skip-existing or replace-rows"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `latest`, an id or a unique prefix.
    pub snapshot: String,
    pub dest: Secret<String>,
    pub selection: Selection,
    pub rename: BTreeMap<String, String>,
    pub mode: Mode,
    /// PostgreSQL: connections that load one big table at once (1: a single COPY).
    pub jobs: usize,
    /// PostgreSQL: tables with at least this many stream bytes load over `jobs`
    /// connections into a staging table that the restore's transaction then renames
    /// into place.
    pub parallel_min_bytes: u64,
    /// Restore the source as it was at this instant (unix ms): the latest snapshot of
    /// the source `snapshot` names, taken at or before it, plus the captured changes
    /// committed up to it ([`crate::capture`]); for SQLite, the newest state a
    /// capture took at or before it ([`crate::capture::sqlite`]).
    pub at_ms: Option<i64>,
    /// Only rows that pass these conditions (`--where`); all rows when empty. Every
    /// selected table must have the columns it names.
    pub filter: crate::filter::RowFilter,
}

/// What `--jobs` defaults to: one loader per core, at most 4.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Below this, one COPY in the restore's own transaction is as fast and simpler.
pub const DEFAULT_PARALLEL_MIN_BYTES: u64 = 32 << 20;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Replace,
    Append,
    Upsert,
    #[serde(rename = "skip-existing")]
    SkipExisting,
    #[serde(rename = "replace-rows")]
    ReplaceRows,
}

impl Action {
    /// The merge an action does into an existing table, if it is one.
    pub fn merge(&self) -> Option<crate::merge::MergeMode> {
        match self {
            Action::Upsert => Some(crate::merge::MergeMode::Upsert),
            Action::SkipExisting => Some(crate::merge::MergeMode::SkipExisting),
            Action::ReplaceRows => Some(crate::merge::MergeMode::ReplaceRows),
            Action::Create | Action::Replace | Action::Append => None,
        }
    }

    /// Whether the table is created (or dropped and created) by the restore.
    pub fn creates(&self) -> bool {
        matches!(self, Action::Create | Action::Replace)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTable {
    pub source_table: String,
    pub dest_table: String,
    pub action: Action,
    pub columns: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    /// Connections that will load the rows (more than one: a parallel staged load).
    pub loaders: usize,
    #[serde(skip)]
    entry: TableEntry,
    #[serde(skip)]
    filter: crate::filter::BoundFilter,
    /// Merge modes: the key rows are matched on.
    #[serde(skip)]
    key: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub snapshot: String,
    pub dest: String,
    pub tables: Vec<PlannedTable>,
    #[serde(skip)]
    dest_url: SourceUrl,
    #[serde(skip)]
    enums: Vec<PgEnum>,
    /// The instant restored to, for a point-in-time restore (unix ms).
    pub at_ms: Option<i64>,
    /// The rows restored: only those passing these conditions (all when empty); the
    /// plan's row counts are then the tables' totals, upper bounds.
    pub filter: crate::filter::RowFilter,
    /// The instant whose state is restored: `at_ms` itself with PostgreSQL's replayed
    /// changes; for SQLite the newest captured state at or before it.
    pub as_of_ms: Option<i64>,
    /// That state held, unchanged, up to this instant: the restore is exactly the
    /// database as of `at_ms` when this is not earlier.
    pub unchanged_until_ms: Option<i64>,
    #[serde(skip)]
    pitr: Option<crate::capture::PitrBase>,
}

impl PlannedTable {
    /// The table's manifest entry.
    pub(crate) fn entry(&self) -> &TableEntry {
        &self.entry
    }

    fn merge_table(&self, mode: crate::merge::MergeMode) -> crate::merge::MergeTable<'_> {
        crate::merge::MergeTable {
            entry: &self.entry,
            dest: &self.dest_table,
            columns: &self.columns,
            key: self.key.clone(),
            mode,
            filter: &self.filter,
        }
    }
}

impl RestorePlan {
    /// Whether captured changes are replayed on the snapshot (PostgreSQL).
    pub fn pitr_replays(&self) -> bool {
        self.pitr.is_some()
    }

    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Works out what a restore would do, checking the destination, without changing it.
pub async fn plan(repo: &Repository, opts: &RestoreOptions) -> Result<RestorePlan> {
    if opts.at_ms.is_some() && !opts.filter.is_empty() {
        return Err(Error::invalid(
            "a restore to a point in time cannot also filter rows (--where): restore the instant into new tables, then copy the rows you need",
        ));
    }
    let (mut id, mut snapshot) = repo.find_snapshot(&opts.snapshot).await?;
    let mut pitr = None;
    let mut as_of = None;
    if let Some(at) = opts.at_ms {
        match snapshot.source.engine {
            Engine::Postgres => {
                let base = crate::capture::pitr_base(repo, &snapshot.source.url, at).await?;
                id = base.snapshot_id.clone();
                snapshot = base.snapshot.clone();
                as_of = Some((at, at));
                pitr = Some(base);
            }
            Engine::Sqlite => {
                // The newest captured state at or before `at` (capture::sqlite).
                let base = crate::capture::sqlite::base(repo, &snapshot.source.url, at).await?;
                id = base.snapshot_id;
                snapshot = base.snapshot;
                as_of = Some((base.as_of_ms, base.unchanged_until_ms));
            }
            Engine::Mysql => {
                return Err(Error::invalid(
                    "restore to a point in time is not available for MySQL (it has no captured changes): restore a snapshot",
                ));
            }
        }
    }
    let url = SourceUrl::parse(&opts.dest)?;
    let dest_engine = url.engine();
    if dest_engine != snapshot.source.engine {
        return Err(Error::invalid(format!(
            "snapshot {} is of a {:?} database and cannot be restored into {}",
            &id[..12],
            snapshot.source.engine,
            url.display()
        )));
    }
    for from in opts.rename.keys() {
        if !snapshot.tables.iter().any(|t| &t.name == from) {
            return Err(Error::invalid(format!(
                "--rename names table {from:?}, which is not in snapshot {}",
                &id[..12]
            )));
        }
    }
    let names = opts
        .selection
        .apply(snapshot.tables.iter().map(|t| t.name.as_str()))?;
    let mut dest = Dest::open(&url).await?;
    let mut tables = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in snapshot.tables.iter().filter(|t| names.contains(&t.name)) {
        entry.format.check_known(&entry.name)?;
        let dest_table = opts
            .rename
            .get(&entry.name)
            .cloned()
            .unwrap_or_else(|| entry.name.clone());
        if dest_table.is_empty() {
            return Err(Error::invalid(format!(
                "--rename {}= needs a new name",
                entry.name
            )));
        }
        if !seen.insert(dest_table.to_lowercase()) {
            return Err(Error::invalid(format!(
                "two tables would be restored into {dest_table:?}"
            )));
        }
        let columns = match opts.selection.columns.get(&entry.name) {
            None => entry.stream_columns.clone(),
            Some(wanted) => {
                for c in wanted {
                    if !entry.stream_columns.contains(c) {
                        return Err(Error::invalid(format!(
                            "table {:?} in the snapshot has no column {c:?}",
                            entry.name
                        )));
                    }
                }
                let pk: Vec<&String> = match &entry.schema.postgres {
                    Some(def) => def.pk.iter().collect(),
                    None => entry
                        .schema
                        .columns
                        .iter()
                        .filter(|c| c.pk > 0)
                        .map(|c| &c.name)
                        .collect(),
                };
                entry
                    .stream_columns
                    .iter()
                    .filter(|c| wanted.contains(c) || pk.contains(c))
                    .cloned()
                    .collect()
            }
        };
        let exists = dest.table_exists(&dest_table).await?;
        let action = match (opts.mode, exists) {
            (Mode::Create, true) => {
                return Err(Error::invalid(format!(
                    "table {dest_table:?} already exists in {}: choose --mode replace or append, or --rename {}=NEW",
                    url.display(),
                    entry.name
                )));
            }
            (Mode::Append, false) => {
                return Err(Error::invalid(format!(
                    "table {dest_table:?} does not exist in {}: nothing to append to",
                    url.display()
                )));
            }
            (Mode::Upsert | Mode::SkipExisting | Mode::ReplaceRows, false) => {
                return Err(Error::invalid(format!(
                    "table {dest_table:?} does not exist in {}: nothing to merge into (restore it with --mode create)",
                    url.display()
                )));
            }
            (Mode::Upsert, true) => Action::Upsert,
            (Mode::SkipExisting, true) => Action::SkipExisting,
            (Mode::ReplaceRows, true) => Action::ReplaceRows,
            (Mode::Create, false) | (Mode::Replace, false) => Action::Create,
            (Mode::Replace, true) => Action::Replace,
            (Mode::Append, true) => Action::Append,
        };
        let staged = dest_engine == Engine::Postgres
            && action.creates()
            && entry.bytes >= opts.parallel_min_bytes;
        let key = if action.merge().is_some() {
            crate::merge::check(entry, &columns)?
        } else {
            Vec::new()
        };
        tables.push(PlannedTable {
            source_table: entry.name.clone(),
            dest_table,
            action,
            columns,
            rows: entry.rows,
            bytes: entry.bytes,
            loaders: if staged { opts.jobs.max(1) } else { 1 },
            filter: opts.filter.bind(entry, snapshot.source.engine)?,
            key,
            entry: entry.clone(),
        });
    }
    order_by_references(&mut tables, |t| &t.entry);
    if let Some(base) = &pitr {
        for t in &tables {
            if !t.action.creates() {
                return Err(Error::invalid(
                    "restore to a point in time creates or replaces tables; append and merges are not possible",
                ));
            }
            if !crate::capture::captured_throughout(&base.segments, &t.source_table) {
                return Err(Error::invalid(format!(
                    "{} was not captured (tables without a primary key are not): it cannot be restored to a point in time; leave it out or restore it from a snapshot",
                    t.source_table
                )));
            }
        }
    }
    Ok(RestorePlan {
        snapshot: id,
        dest: url.display(),
        tables,
        dest_url: url,
        enums: snapshot.enums.clone(),
        at_ms: opts.at_ms,
        filter: opts.filter.clone(),
        as_of_ms: as_of.map(|a| a.0),
        unchanged_until_ms: as_of.map(|a| a.1),
        pitr,
    })
}

/// Referenced tables first, so foreign keys restore in a valid order (checks are also
/// deferred to commit, which covers cycles).
pub(crate) fn order_by_references<T>(tables: &mut Vec<T>, entry: impl Fn(&T) -> &TableEntry) {
    let mut ordered: Vec<T> = Vec::with_capacity(tables.len());
    let mut rest = std::mem::take(tables);
    while !rest.is_empty() {
        let names: Vec<String> = rest.iter().map(|t| entry(t).name.clone()).collect();
        let ready = rest
            .iter()
            .position(|t| {
                let e = entry(t);
                e.schema
                    .references
                    .iter()
                    .all(|r| r == &e.name || !names.contains(r))
            })
            .unwrap_or(0);
        ordered.push(rest.remove(ready));
    }
    *tables = ordered;
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredTable {
    pub table: String,
    pub rows: u64,
    /// What could not be restored with the table (a foreign key to a table the
    /// destination lacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Merge modes: rows inserted, updated, unchanged and deleted (in a dry run, what
    /// would be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::merge::MergeCounts>,
}

/// Runs a plan. Every table is checked against its checksum before the transaction
/// commits; on any error nothing in the destination changes.
pub async fn execute(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<Vec<RestoredTable>> {
    run(repo, plan, progress, false).await
}

/// The dry run of a plan's merges (upsert, skip-existing, replace-rows): the same work
/// as [`execute`] on those tables, rolled back, so each table's counts (inserted,
/// updated, unchanged, deleted) are exactly what running it would do now. Tables the
/// plan creates, replaces or appends to are left out.
pub async fn diff(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<Vec<RestoredTable>> {
    let mut merges = plan.clone();
    merges.tables.retain(|t| t.action.merge().is_some());
    if merges.tables.is_empty() {
        return Ok(Vec::new());
    }
    run(repo, &merges, progress, true).await
}

async fn run(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
    dry: bool,
) -> Result<Vec<RestoredTable>> {
    // A shared lock keeps a concurrent prune from deleting the packs being read if the
    // snapshot is forgotten meanwhile. Best effort: a read-only target still restores.
    let lock = repo
        .lock(crate::repo::lock::LockKind::Shared, "restore")
        .await
        .ok();
    let result = match &plan.dest_url {
        SourceUrl::Sqlite(path) => execute_sqlite(repo, plan, path, progress, dry).await,
        SourceUrl::Postgres(_) => execute_postgres(repo, plan, progress, dry).await,
        SourceUrl::Mysql(_) => execute_mysql(repo, plan, progress, dry).await,
    };
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

/// A destination database, for planning.
enum Dest {
    Sqlite(SqliteDb),
    /// A SQLite file that does not exist yet: planning must not create it.
    NewSqlite,
    Postgres(PgDb),
    Mysql(MyDb),
}

impl Dest {
    async fn open(url: &SourceUrl) -> Result<Dest> {
        Ok(match url {
            SourceUrl::Sqlite(path) if !path.exists() => Dest::NewSqlite,
            SourceUrl::Sqlite(path) => Dest::Sqlite(SqliteDb::open_write(path).await?),
            SourceUrl::Postgres(secret) => {
                Dest::Postgres(PgDb::connect(secret, url.display()).await?)
            }
            SourceUrl::Mysql(secret) => Dest::Mysql(MyDb::connect(secret, url.display()).await?),
        })
    }

    async fn table_exists(&mut self, name: &str) -> Result<bool> {
        match self {
            Dest::Sqlite(db) => db.table_exists(name).await,
            Dest::NewSqlite => Ok(false),
            Dest::Postgres(db) => {
                let (schema, table) = split_name(name);
                db.table_exists(&schema, &table).await
            }
            Dest::Mysql(db) => db.table_exists(name).await,
        }
    }
}

async fn execute_sqlite(
    repo: &Repository,
    plan: &RestorePlan,
    path: &std::path::Path,
    progress: &dyn Progress,
    dry: bool,
) -> Result<Vec<RestoredTable>> {
    let mut db = SqliteDb::open_write(path).await?;
    db.exec("BEGIN IMMEDIATE").await?;
    let result = async {
        db.exec("PRAGMA defer_foreign_keys = ON").await?;
        let mut done = Vec::new();
        for t in &plan.tables {
            progress.table_started(&t.dest_table, Some(t.rows));
            let (rows, merge) = match t.action.merge() {
                Some(mode) => {
                    let m = t.merge_table(mode);
                    let insert = crate::merge::prepare_sqlite(&mut db, &m).await?;
                    let rows = load_sqlite_rows(repo, &mut db, t, &insert, progress).await?;
                    (rows, Some(crate::merge::apply_sqlite(&mut db, &m).await?))
                }
                None => (restore_table(repo, &mut db, t, progress).await?, None),
            };
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes: Vec::new(),
                merge,
            });
        }
        db.exec(if dry { "ROLLBACK" } else { "COMMIT" }).await?;
        Ok(done)
    }
    .await;
    if result.is_err() {
        let _ = db.exec("ROLLBACK").await;
    }
    result
}

/// What a PostgreSQL restore created outside its transaction (schemas and enum types
/// that staging tables need, the staging tables): dropped again if the restore fails.
#[derive(Default)]
struct Outside {
    schemas: Vec<String>,
    types: Vec<String>,
    stages: Vec<String>,
}

impl Outside {
    async fn undo(self, db: &mut PgDb) {
        for t in self.stages {
            let _ = db.exec(&format!("DROP TABLE IF EXISTS {t}")).await;
        }
        for t in self.types {
            let _ = db.exec(&format!("DROP TYPE IF EXISTS {t}")).await;
        }
        for s in self.schemas.into_iter().rev() {
            let _ = db.exec(&format!("DROP SCHEMA IF EXISTS {s}")).await;
        }
    }
}

/// Creates the schemas and enum types the plan needs and the destination lacks; when
/// `outside` is given they are committed now and recorded there.
async fn create_schemas_and_types(
    db: &mut PgDb,
    plan: &RestorePlan,
    mut outside: Option<&mut Outside>,
) -> Result<()> {
    let mut schemas: Vec<String> = plan
        .tables
        .iter()
        .map(|t| split_name(&t.dest_table).0)
        .chain(plan.enums.iter().map(|e| e.schema.clone()))
        .collect();
    schemas.sort();
    schemas.dedup();
    for s in &schemas {
        if !db.schema_exists(s).await? {
            db.exec(&format!("CREATE SCHEMA {}", pg::quote(s))).await?;
            if let Some(o) = outside.as_deref_mut() {
                o.schemas.push(pg::quote(s));
            }
        }
    }
    for e in &plan.enums {
        if !db.type_exists(&e.schema, &e.name).await? {
            let labels: Vec<String> = e
                .labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect();
            let name = pg::qualified(&e.schema, &e.name);
            db.exec(&format!(
                "CREATE TYPE {name} AS ENUM ({})",
                labels.join(", ")
            ))
            .await?;
            if let Some(o) = outside.as_deref_mut() {
                o.types.push(name);
            }
        }
    }
    Ok(())
}

async fn execute_postgres(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
    dry: bool,
) -> Result<Vec<RestoredTable>> {
    let SourceUrl::Postgres(secret) = &plan.dest_url else {
        unreachable!("checked by the caller")
    };
    let mut db = PgDb::connect(secret, plan.dest.clone()).await?;
    let mut outside = Outside::default();
    let mut in_transaction = false;
    let result = async {
        // Big tables first load, over several connections, into staging tables; those
        // connections can only use committed schemas and types.
        let mut staged: BTreeMap<String, (String, u64)> = BTreeMap::new();
        if plan.tables.iter().any(|t| t.loaders > 1) {
            create_schemas_and_types(&mut db, plan, Some(&mut outside)).await?;
            for t in plan.tables.iter().filter(|t| t.loaders > 1) {
                let (stage, rows) =
                    stage_table(repo, secret, plan, t, &mut db, &mut outside, progress).await?;
                staged.insert(t.dest_table.clone(), (stage, rows));
            }
        }
        db.exec("BEGIN").await?;
        in_transaction = true;
        create_schemas_and_types(&mut db, plan, None).await?;
        let mut done = Vec::new();
        let mut foreign_keys = Vec::new();
        for (i, t) in plan.tables.iter().enumerate() {
            if let Some(mode) = t.action.merge() {
                let m = t.merge_table(mode);
                crate::merge::prepare_postgres(&mut db, &m).await?;
                progress.table_started(&t.dest_table, Some(t.rows));
                let stage = crate::merge::PG_STAGE;
                let sql = format!("COPY {stage} ({}) FROM STDIN", column_list(&t.columns));
                let rows = load(repo, t, vec![&mut db.conn], &sql, stage, progress).await?;
                progress.table_finished(&t.dest_table);
                let counts = crate::merge::apply_postgres(&mut db, &m).await?;
                done.push(RestoredTable {
                    table: t.dest_table.clone(),
                    rows,
                    notes: Vec::new(),
                    merge: Some(counts),
                });
                continue;
            }
            let stage = staged.get(&t.dest_table);
            let rows =
                restore_pg_table(repo, &mut db, t, stage, i, &mut foreign_keys, progress).await?;
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes: Vec::new(),
                merge: None,
            });
        }
        if let Some(base) = &plan.pitr {
            // Captured changes on top of the snapshot's rows, before foreign keys are
            // checked (the source ran them in this order, with its constraints).
            let mut targets = std::collections::HashMap::new();
            for t in &plan.tables {
                let (schema, table) = split_name(&t.dest_table);
                targets.insert(
                    t.source_table.clone(),
                    crate::capture::ReplayTarget {
                        rel: pg::qualified(&schema, &table),
                        columns: t.columns.clone(),
                    },
                );
            }
            db.exec("SET LOCAL standard_conforming_strings = on")
                .await?;
            crate::capture::replay(repo, base, &targets, &mut db.conn, progress).await?;
            for (i, t) in plan.tables.iter().enumerate() {
                let (schema, table) = split_name(&t.dest_table);
                let rel = pg::qualified(&schema, &table);
                done[i].rows = db.count_all(&rel).await?;
                db.catch_up_sequences(&rel, &t.entry, &t.columns).await?;
            }
        }
        // A foreign key to a table that is neither restored nor in the destination
        // cannot be added: the table comes back without it, and says so.
        for (i, name, sql, condef) in foreign_keys {
            if let Some(rel) = pg::referenced_relation(&condef)
                && !db.relation_exists(&rel).await?
            {
                done[i].notes.push(format!(
                    "foreign key {name} not restored: {rel} does not exist in the destination"
                ));
                continue;
            }
            db.exec(&sql).await?;
        }
        db.exec(if dry { "ROLLBACK" } else { "COMMIT" }).await?;
        Ok(done)
    }
    .await;
    if result.is_err() {
        if in_transaction {
            let _ = db.exec("ROLLBACK").await;
        }
        outside.undo(&mut db).await;
    }
    result
}

/// Loads a big table over several connections into a new staging table next to its
/// destination, committed but not yet in place. Returns its name and row count.
async fn stage_table(
    repo: &Repository,
    secret: &Secret<String>,
    plan: &RestorePlan,
    t: &PlannedTable,
    db: &mut PgDb,
    outside: &mut Outside,
    progress: &dyn Progress,
) -> Result<(String, u64)> {
    let def = pg_definition(&t.entry)?;
    let (schema, _) = split_name(&t.dest_table);
    let stage = format!(
        "tablesafe_stage_{}",
        crate::repo::crypto::hex(&rand::random::<[u8; 6]>())
    );
    db.exec(&pg::create_table_sql(
        def,
        &schema,
        &stage,
        &t.columns,
        &[],
        true,
    ))
    .await?;
    let rel = pg::qualified(&schema, &stage);
    outside.stages.push(rel.clone());
    let mut loaders = Vec::with_capacity(t.loaders);
    for _ in 0..t.loaders {
        loaders.push(PgDb::connect(secret, plan.dest.clone()).await?);
    }
    progress.table_started(&t.dest_table, Some(t.rows));
    let sql = format!("COPY {rel} ({}) FROM STDIN", column_list(&t.columns));
    let rows = load(
        repo,
        t,
        loaders.iter_mut().map(|l| &mut l.conn).collect(),
        &sql,
        &rel,
        progress,
    )
    .await?;
    progress.table_finished(&t.dest_table);
    Ok((stage, rows))
}

fn pg_definition(e: &TableEntry) -> Result<&crate::model::PgTable> {
    e.schema
        .postgres
        .as_ref()
        .ok_or_else(|| Error::damaged(format!("table {} lacks its PostgreSQL definition", e.name)))
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| pg::quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps the tab-separated fields of a COPY text line whose flag is set (tabs inside
/// values are escaped as `\t`, so a raw tab always separates fields).
fn project_copy_line(line: &[u8], keep: &[bool], out: &mut Vec<u8>) {
    let mut first = true;
    for (field, k) in line.split(|&b| b == b'\t').zip(keep) {
        if *k {
            if !first {
                out.push(b'\t');
            }
            out.extend_from_slice(field);
            first = false;
        }
    }
    out.push(b'\n');
}

/// Rows on their way to one COPY.
enum Piece {
    Rows(Vec<u8>),
    /// The rows turned out damaged: abort the COPY.
    Abort,
}

/// Streams a table's rows (projected to the restored columns) into one `COPY … FROM
/// STDIN` per connection, whole rows at a time, and checks them against the table's
/// checksum. Returns the row count; on damage the COPYs are aborted.
async fn load(
    repo: &Repository,
    t: &PlannedTable,
    conns: Vec<&mut sqlx::PgConnection>,
    sql: &str,
    rel: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let db_err = |err| Error::Database {
        context: format!("COPY into {rel}"),
        source: err,
    };
    let mut senders = Vec::new();
    let mut consumers = Vec::new();
    for conn in conns {
        let mut copy = conn.copy_in_raw(sql).await.map_err(db_err)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
        senders.push(tx);
        consumers.push(async move {
            while let Some(piece) = rx.recv().await {
                match piece {
                    Piece::Rows(rows) => {
                        copy.send(rows.as_slice()).await.map_err(db_err)?;
                    }
                    Piece::Abort => {
                        let _ = copy.abort("tablesafe: restore aborted").await;
                        return Ok(());
                    }
                }
            }
            copy.finish().await.map(|_| ()).map_err(db_err)
        });
    }
    let produce = async {
        let result = produce_rows(repo, t, &senders, progress).await;
        if result.is_err() {
            for tx in &senders {
                let _ = tx.send(Piece::Abort).await;
            }
        }
        drop(senders);
        result
    };
    let (produced, consumed) = futures::join!(produce, futures::future::join_all(consumers));
    let consumed: Result<Vec<()>> = consumed.into_iter().collect();
    match (produced, consumed) {
        (Ok(rows), Ok(_)) => Ok(rows),
        // A loader that failed explains a producer that could not hand it rows.
        (Err(e), _) if matches!(e, Error::Damaged(_) | Error::Cancelled) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
    }
}

async fn produce_rows(
    repo: &Repository,
    t: &PlannedTable,
    senders: &[tokio::sync::mpsc::Sender<Piece>],
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    let all = t.columns.len() == e.stream_columns.len();
    let keep: Vec<bool> = e
        .stream_columns
        .iter()
        .map(|c| t.columns.contains(c))
        .collect();
    let filtered = !t.filter.is_empty();
    let mut hasher = blake3::Hasher::new();
    let mut rows = 0u64;
    let mut kept = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let mut next = 0;
    let mut stream = crate::segment::table_stream(repo, e)?;
    while let Some(piece) = stream.next().await {
        progress.check_abort()?;
        let piece = piece?;
        hasher.update(&piece);
        let n = count_lines(&piece);
        rows += n;
        progress.advanced(n, piece.len() as u64);
        // Whole rows only, so pieces can go to different connections.
        let mut buf = if carry.is_empty() {
            piece
        } else {
            let mut c = std::mem::take(&mut carry);
            c.extend_from_slice(&piece);
            c
        };
        let end = memchr::memrchr(b'\n', &buf).map(|i| i + 1).unwrap_or(0);
        carry = buf.split_off(end);
        if filtered {
            let mut out = Vec::with_capacity(buf.len());
            if !buf.is_empty() {
                for line in buf[..buf.len() - 1].split(|&b| b == b'\n') {
                    if t.filter.matches(&crate::export::copy_fields(line)) {
                        kept += 1;
                        if all {
                            out.extend_from_slice(line);
                            out.push(b'\n');
                        } else {
                            project_copy_line(line, &keep, &mut out);
                        }
                    }
                }
            }
            buf = out;
        } else if !all {
            kept += n;
            let mut out = Vec::with_capacity(buf.len());
            for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                project_copy_line(line, &keep, &mut out);
            }
            buf = out;
        } else {
            kept += n;
        }
        if !buf.is_empty() {
            senders[next % senders.len()]
                .send(Piece::Rows(buf))
                .await
                .map_err(|_| Error::Other(format!("loading {} stopped", t.dest_table)))?;
            next += 1;
        }
    }
    if hasher.finalize().to_hex().as_str() != e.checksum || rows != e.rows || !carry.is_empty() {
        return Err(Error::damaged(format!(
            "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
            e.name, e.rows
        )));
    }
    Ok(kept)
}

/// Restores one table inside the restore's transaction: creates it (or renames its
/// staging table into place), loads the rows unless staged, then adds constraints,
/// indexes and sequence values.
async fn restore_pg_table(
    repo: &Repository,
    db: &mut PgDb,
    t: &PlannedTable,
    staged: Option<&(String, u64)>,
    index: usize,
    foreign_keys: &mut Vec<(usize, String, String, String)>,
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    let def = pg_definition(e)?;
    let (schema, table) = split_name(&t.dest_table);
    let renamed = t.dest_table != e.name;
    let rel = pg::qualified(&schema, &table);
    let new_name = |old: &str| {
        if renamed {
            format!("{table}_{old}")
        } else {
            old.to_string()
        }
    };
    let creates = matches!(t.action, Action::Create | Action::Replace);
    let all = t.columns.len() == e.stream_columns.len();
    let mut seq_targets: Vec<(String, String, i64, bool)> = Vec::new();
    if creates {
        if matches!(t.action, Action::Replace) {
            db.exec(&format!("DROP TABLE {rel}")).await?;
        }
        // Serial columns: their sequence first (renamed along with the table).
        let mut renames = Vec::new();
        for (regclass, column, last, called) in &def.sequences {
            let col = def.columns.iter().find(|c| &c.name == column);
            if col.is_some_and(|c| c.identity == Identity::None) && t.columns.contains(column) {
                let target = if renamed {
                    pg::qualified(&schema, &format!("{table}_{column}_seq"))
                } else {
                    regclass.clone()
                };
                db.exec(&format!("CREATE SEQUENCE IF NOT EXISTS {target}"))
                    .await?;
                renames.push((regclass.clone(), target.clone()));
                seq_targets.push((target, String::new(), *last, *called));
            } else if t.columns.contains(column) {
                seq_targets.push((String::new(), column.clone(), *last, *called));
            }
        }
        match staged {
            Some((stage, _)) => {
                db.exec(&format!(
                    "ALTER TABLE {} RENAME TO {}",
                    pg::qualified(&schema, stage),
                    pg::quote(&table)
                ))
                .await?;
                for sql in pg::column_defaults_sql(def, &schema, &table, &t.columns, &renames) {
                    db.exec(&sql).await?;
                }
            }
            None => {
                db.exec(&pg::create_table_sql(
                    def, &schema, &table, &t.columns, &renames, false,
                ))
                .await?
            }
        }
        for (target, column, _, _) in &seq_targets {
            if column.is_empty() {
                let col = def
                    .sequences
                    .iter()
                    .find(|s| renames.iter().any(|(o, n)| n == target && o == &s.0))
                    .map(|s| s.1.clone());
                if let Some(col) = col {
                    db.exec(&format!(
                        "ALTER SEQUENCE {target} OWNED BY {rel}.{}",
                        pg::quote(&col)
                    ))
                    .await?;
                }
            }
        }
    }
    let rows = match staged {
        Some((_, rows)) => *rows,
        None => {
            progress.table_started(&t.dest_table, Some(t.rows));
            // FREEZE (allowed because the table was created in this transaction) writes
            // the rows already frozen, sparing the first VACUUM a pass over them.
            let sql = format!(
                "COPY {rel} ({}) FROM STDIN{}",
                column_list(&t.columns),
                if creates { " (FREEZE)" } else { "" }
            );
            let rows = load(repo, t, vec![&mut db.conn], &sql, &rel, progress).await?;
            progress.table_finished(&t.dest_table);
            rows
        }
    };

    if creates {
        for c in &def.constraints {
            // Constraints on columns that were left out cannot come back.
            if !all && c.kind != ConstraintKind::PrimaryKey {
                continue;
            }
            let sql = pg::constraint_sql(&schema, &table, &new_name(&c.name), &c.definition);
            if c.kind == ConstraintKind::ForeignKey {
                foreign_keys.push((index, new_name(&c.name), sql, c.definition.clone()))
            } else {
                db.exec(&sql).await?
            }
        }
        if all {
            for (name, idxdef) in &def.indexes {
                if let Some(sql) = pg::index_sql(idxdef, &schema, &table, &new_name(name)) {
                    db.exec(&sql).await?;
                }
            }
        }
        for (target, column, last, called) in &seq_targets {
            let seq = if column.is_empty() {
                target.clone()
            } else {
                db.serial_sequence(&rel, column).await?
            };
            db.setval(&seq, *last, *called).await?;
        }
    }
    Ok(rows)
}

async fn restore_table(
    repo: &Repository,
    db: &mut SqliteDb,
    t: &PlannedTable,
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    if matches!(t.action, Action::Create | Action::Replace) {
        if matches!(t.action, Action::Replace) {
            db.exec(&format!("DROP TABLE {}", quote(&t.dest_table)))
                .await?;
        }
        let create = if t.columns.len() == e.stream_columns.len() {
            rename_create_table(&e.schema.create_sql, &t.dest_table)?
        } else {
            let cols: Vec<_> = e
                .schema
                .columns
                .iter()
                .filter(|c| t.columns.contains(&c.name))
                .cloned()
                .collect();
            create_table_for(&t.dest_table, &cols)
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
            db.exec(&rename_create_index(&idx.sql, &name, &t.dest_table)?)
                .await?;
        }
    }
    Ok(kept)
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
    if hasher.finalize().to_hex().as_str() != e.checksum || rows != e.rows {
        return Err(Error::damaged(format!(
            "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
            e.name, e.rows
        )));
    }
    Ok(kept)
}

/// A MySQL restore. DDL commits implicitly there, so one transaction cannot hold it:
/// tables to create or replace load into `tablesafe_stage_…` tables first (invisible to
/// applications), each checked against its checksum; appended rows go in one
/// transaction; then one `RENAME TABLE` puts every new table in place at once (the
/// replaced ones are dropped after it), and foreign keys are added, checked, last. A
/// failure before the rename changes nothing (the staging tables are dropped).
async fn execute_mysql(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
    dry: bool,
) -> Result<Vec<RestoredTable>> {
    let SourceUrl::Mysql(secret) = &plan.dest_url else {
        unreachable!("checked by the caller")
    };
    let mut db = MyDb::connect(secret, plan.dest.clone()).await?;
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
                let cols: Vec<_> = t
                    .entry
                    .schema
                    .columns
                    .iter()
                    .filter(|c| t.columns.contains(&c.name))
                    .cloned()
                    .collect();
                my::create_table_for(&stage, &cols)
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
                    merges[i] = Some(crate::merge::apply_mysql(&mut db, &m).await?);
                }
                None => {
                    done[i] = Some(load_mysql_rows(repo, &mut db, t, &t.dest_table, progress).await?)
                }
            }
            progress.table_finished(&t.dest_table);
        }
        if dry {
            // A dry run (restore::diff) holds only merges: nothing to put in place.
            db.exec("ROLLBACK").await?;
            return Ok(plan
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
                .collect());
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
