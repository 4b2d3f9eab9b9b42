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

use crate::model::{ConstraintKind, Engine, Identity, ObjectKind, PgEnum, Phase, SchemaObject};
use crate::model::{RowDecoder, TableEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::secret::Secret;
use crate::selection::{Selection, SelectionExt};
use crate::source::SourceUrl;
use crate::source::mysql::{self as my, MyDb};
use crate::source::postgres::{self as pg, PgDb, count_lines, split_name};
use crate::source::sqlite::{
    SqliteDb, create_table_for, quote, rename_create_index, rename_create_table,
};
use crate::{Error, Result};
use futures::StreamExt;
use futures::future::BoxFuture;

mod mysql;
mod postgres;
mod sqlite;
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
    /// Which schema objects besides the tables come along ([`crate::objects`]).
    pub objects: crate::objects::ObjectOptions,
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

    /// For the actions that change the rows of an existing table in place (append and
    /// merges, which count on a rollback if anything fails): what that change is.
    fn changes_rows(&self) -> Option<&'static str> {
        match self {
            Action::Append => Some("an append to it"),
            Action::Upsert => Some("an upsert into it"),
            Action::SkipExisting => Some("a skip-existing merge into it"),
            Action::ReplaceRows => Some("a replace-rows merge into it"),
            Action::Create | Action::Replace => None,
        }
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
    pub snapshot: crate::model::SnapshotId,
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
    /// Schema objects made besides the tables (views, functions, triggers, types…), in
    /// the order they are made.
    pub objects: Vec<String>,
    /// Objects that use restored tables but are not made, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects_left: Vec<String>,
    /// What the restore changes of tables the destination already has besides the
    /// tables' own actions (a partition attached to an existing parent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes_existing: Vec<String>,
    #[serde(skip)]
    made: Vec<crate::model::SchemaObject>,
    #[serde(skip)]
    object_opts: crate::objects::ObjectOptions,
    /// PostgreSQL: connections that load tables at once ([`RestoreOptions::jobs`]).
    #[serde(skip)]
    jobs: usize,
}

impl PlannedTable {
    /// The table's manifest entry.
    pub(crate) fn entry(&self) -> &TableEntry {
        &self.entry
    }

    /// The snapshot's column definitions of the restored columns (SQLite, MySQL), for a
    /// table made of only some of them.
    fn schema_columns(&self) -> Vec<crate::model::Column> {
        self.entry
            .schema
            .columns
            .iter()
            .filter(|c| self.columns.contains(&c.name))
            .cloned()
            .collect()
    }

    /// The table's merge, if its action is one; `slot`: its place in the plan.
    fn merge_table(&self, slot: usize) -> Option<crate::merge::MergeTable<'_>> {
        Some(crate::merge::MergeTable {
            entry: &self.entry,
            dest: &self.dest_table,
            columns: &self.columns,
            key: self.key.clone(),
            mode: self.action.merge()?,
            filter: &self.filter,
            slot,
        })
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
            id.short(),
            snapshot.source.engine,
            url.display()
        )));
    }
    for from in opts.rename.keys() {
        if !snapshot.tables.iter().any(|t| &t.name == from) {
            return Err(Error::invalid(format!(
                "--rename names table {from:?}, which is not in snapshot {}",
                id.short()
            )));
        }
    }
    let names = opts
        .selection
        .apply(snapshot.tables.iter().map(|t| t.name.as_str()))?;
    let mut dest = open_destination(&url).await?;
    let mut tables = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let names: std::collections::HashSet<&String> = names.iter().collect();
    // Which destination tables exist, asked once for all (thousands of tables).
    let dest_names: Vec<String> = snapshot
        .tables
        .iter()
        .filter(|t| names.contains(&t.name))
        .map(|t| opts.rename.get(&t.name).unwrap_or(&t.name).clone())
        .collect();
    let existing = dest.tables_exist(&dest_names).await?;
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
        if dest_table != entry.name {
            tablesafe_types::check_new_table_name(&dest_table).map_err(Error::invalid)?;
        }
        if !seen.insert(dest_table.to_lowercase()) {
            return Err(Error::invalid(format!(
                "two tables would be restored into {dest_table:?}"
            )));
        }
        let columns = crate::selection::chosen_columns(
            &entry.name,
            &entry.stream_columns,
            &entry.schema.primary_key(),
            opts.selection.columns.get(&entry.name),
        )?;
        let exists = existing.contains(&dest_table);
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
        let staged =
            dest.loads_in_parallel() && action.creates() && entry.bytes >= opts.parallel_min_bytes;
        let key = if action.merge().is_some() {
            crate::merge::check(entry, &columns)?
        } else {
            Vec::new()
        };
        if let Some(change) = action.changes_rows()
            && let Some(engine) = dest.cannot_roll_back(&dest_table).await?
        {
            return Err(Error::invalid(format!(
                "table {dest_table:?} in {} uses the {engine} storage engine, which cannot roll back: {change} could be left half done if anything failed, so tablesafe does not change it. Convert it to a transactional engine first (ALTER TABLE `{}` ENGINE=InnoDB), or restore into a new table (--mode create with --rename {}={dest_table}_restored; in the console, restore into new tables) and copy the rows you need",
                url.display(),
                dest_table.replace('`', "``"),
                entry.name
            )));
        }
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
    let chosen = crate::objects::chosen(
        &snapshot.objects,
        &snapshot
            .tables
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>(),
        &tables
            .iter()
            .map(|t| crate::objects::Restored {
                name: t.source_table.clone(),
                same_name: t.dest_table == t.source_table,
                creates: t.action.creates(),
                needs: t
                    .entry
                    .schema
                    .postgres
                    .as_ref()
                    .map(|p| p.needs.clone())
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>(),
        opts.objects,
    );
    // A partition attached to a partitioned table the destination already has adds
    // its rows to that table: a change to an existing table, as an append is.
    let mut changes_existing = Vec::new();
    for o in chosen
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Partition)
    {
        let parent = o
            .needs
            .first()
            .and_then(|k| k.strip_prefix(&format!("{} ", ObjectKind::PartitionedTable)));
        if let Some(parent) = parent
            && dest.table_exists(parent).await?
        {
            changes_existing.push(format!(
                "{} is attached to {parent}, which the destination already has",
                o.name
            ));
        }
    }
    Ok(RestorePlan {
        changes_existing,
        objects: chosen.objects.iter().map(|o| o.key()).collect(),
        objects_left: chosen.left,
        made: chosen.objects,
        object_opts: opts.objects,
        jobs: opts.jobs.max(1),
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
    // Repeatedly the first table (in the given order) none of whose references is
    // still to come, or the first table left when there is none (a cycle). Kept in
    // counts and sets rather than rescanning the rest each time: thousands of tables
    // would make that quadratic.
    use std::collections::{BTreeSet, HashMap};
    let n = tables.len();
    let at: HashMap<&str, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (entry(t).name.as_str(), i))
        .collect();
    let mut pending = vec![0usize; n];
    let mut referenced_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, t) in tables.iter().enumerate() {
        let mut refs: Vec<usize> = entry(t)
            .schema
            .references
            .iter()
            .filter_map(|r| at.get(r.as_str()).copied())
            .filter(|&j| j != i)
            .collect();
        refs.sort_unstable();
        refs.dedup();
        pending[i] = refs.len();
        for j in refs {
            referenced_by[j].push(i);
        }
    }
    let mut left: BTreeSet<usize> = (0..n).collect();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(&first) = left.first() {
        let i = ready.first().copied().unwrap_or(first);
        ready.remove(&i);
        left.remove(&i);
        order.push(i);
        for &k in &referenced_by[i] {
            pending[k] -= 1;
            if pending[k] == 0 && left.contains(&k) {
                ready.insert(k);
            }
        }
    }
    let mut slots: Vec<Option<T>> = std::mem::take(tables).into_iter().map(Some).collect();
    *tables = order
        .into_iter()
        .map(|i| slots[i].take().expect("each table once"))
        .collect();
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

/// Notes about schema objects go with the restored table they belong to, else the
/// first one.
fn attach_notes(done: &mut [RestoredTable], notes: Vec<(Option<String>, String)>) {
    for (table, note) in notes {
        let i = table
            .and_then(|t| done.iter().position(|d| d.table == t))
            .unwrap_or(0);
        if let Some(d) = done.get_mut(i) {
            d.notes.push(note);
        }
    }
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

/// The dry run of a plan's merges (upsert, skip-existing, replace-rows): each table's
/// counts (inserted, updated, unchanged, deleted) are what running it would do now.
/// Read-only by construction ([`crate::merge`]): the backup's rows load into temporary
/// tables and are compared with the destination's by `SELECT`s in a read-only
/// transaction (SQLite: a read-only connection); no statement that could change the
/// destination's tables is made, no row of them is locked, no trigger fires, no
/// sequence moves. Tables the plan creates, replaces or appends to are left out.
pub async fn diff(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<Vec<RestoredTable>> {
    let mut merges = plan.clone();
    merges.tables.retain(|t| t.action.merge().is_some());
    merges.made.clear();
    if merges.tables.is_empty() {
        return Ok(Vec::new());
    }
    run(repo, &merges, progress, true).await
}

async fn run(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
    preview: bool,
) -> Result<Vec<RestoredTable>> {
    // A shared lock keeps a concurrent prune from deleting the packs being read if the
    // snapshot is forgotten meanwhile. Best effort: a read-only target still restores.
    let lock = repo
        .lock(crate::repo::lock::LockKind::Shared, "restore")
        .await
        .ok();
    let result = match open_destination(&plan.dest_url).await {
        Ok(dest) => {
            let run = Run {
                repo,
                plan,
                progress,
            };
            if preview {
                dest.preview(run).await
            } else {
                dest.execute(run).await
            }
        }
        Err(e) => Err(e),
    };
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

/// A table store as a restore writes it: adding a destination engine means implementing
/// this (and [`crate::backup`]'s source side). [`open_destination`] is the one place a
/// restore looks at the engine; the plan is made with one connection and run with
/// another ([`plan`] and [`execute`] may run in different processes).
trait Destination: Send {
    /// Whether big tables load over several connections into staging tables first
    /// ([`RestoreOptions::jobs`]).
    fn loads_in_parallel(&self) -> bool {
        false
    }

    /// Whether the destination has table `name` (`schema.table` on PostgreSQL). Changes
    /// nothing.
    fn table_exists<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Which of `names` the destination has, as [`Destination::table_exists`] says.
    fn tables_exist<'a>(
        &'a mut self,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::HashSet<String>>> {
        Box::pin(async move {
            let mut found = std::collections::HashSet::new();
            for n in names {
                if self.table_exists(n).await? {
                    found.insert(n.clone());
                }
            }
            Ok(found)
        })
    }

    /// Why changing the rows of table `name` in place (an append or a merge) could not
    /// be rolled back, if it could not: the name of its storage engine (MySQL's
    /// MyISAM, MEMORY, Aria…). Changes nothing.
    fn cannot_roll_back<'a>(&'a mut self, _name: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }

    /// Runs `plan`: every table checked against its checksum before the change becomes
    /// visible, at once; on any error nothing changes.
    fn execute<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>>;

    /// The counts of the plan's merges ([`diff`], whose plan holds only merges), without
    /// changing, locking or firing anything of the destination's: temporary tables and
    /// reads only, in a transaction the database keeps read-only.
    fn preview<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>>;
}

/// One run of a plan: what [`Destination::execute`] and [`Destination::preview`] work
/// from.
#[derive(Clone, Copy)]
struct Run<'a> {
    repo: &'a Repository,
    plan: &'a RestorePlan,
    progress: &'a dyn Progress,
}

impl<'a> Run<'a> {
    fn parts(self) -> (&'a Repository, &'a RestorePlan, &'a dyn Progress) {
        (self.repo, self.plan, self.progress)
    }

    /// The plan's merges, each with its table.
    fn merges(self) -> Vec<(&'a PlannedTable, crate::merge::MergeTable<'a>)> {
        self.plan
            .tables
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((t, t.merge_table(i)?)))
            .collect()
    }
}

/// Connects to the destination `url` names.
async fn open_destination(url: &SourceUrl) -> Result<Box<dyn Destination>> {
    Ok(match url {
        SourceUrl::Sqlite(path) => Box::new(sqlite::Sqlite::open(path).await?),
        SourceUrl::Postgres(secret) => Box::new(postgres::Postgres {
            db: PgDb::connect(secret, url.display()).await?,
            url: secret.clone(),
        }),
        SourceUrl::Mysql(secret) => Box::new(mysql::Mysql {
            db: MyDb::connect(secret, url.display()).await?,
        }),
    })
}
