//! Backup history, verification, restores, the audit log and the dashboard.

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TableBrief {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    #[serde(default)]
    pub segment: Segment,
}

/// Whether a table's part of a snapshot holds every row or only the changes since the
/// previous one (the engine's `SegmentKind`, as the history stores it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Segment {
    #[default]
    Full,
    Delta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotView {
    /// Row id in the history (what the console's actions name).
    pub id: i64,
    pub snapshot_id: String,
    pub target: String,
    pub policy: String,
    pub policy_id: Option<i64>,
    pub source: String,
    pub source_id: Option<i64>,
    pub time_ms: i64,
    pub tables: i64,
    pub rows: i64,
    pub bytes: i64,
    pub bytes_stored: i64,
    pub duration_ms: i64,
    /// `None`: never verified.
    pub verified_ok: Option<bool>,
    pub verified_at: Option<i64>,
    pub details: Vec<TableBrief>,
    /// The history row this snapshot is a copy of.
    pub copy_of: Option<i64>,
    /// For a policy's snapshot: each target it should also be copied to, and whether
    /// the copy is there.
    pub copies: Vec<CopyState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CopyState {
    pub target: String,
    pub complete: bool,
}

/// Snapshots newest first; filters by policy or source (0 = any); `before` = the
/// (time, id) of the last row of the previous page.
#[server(endpoint = "snapshots/list", input = server_fn::codec::Json)]
pub async fn list_snapshots(
    policy_id: i64,
    source_id: i64,
    before: Option<(i64, i64)>,
) -> Result<Vec<SnapshotView>, AppError> {
    use crate::api::PAGE;
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "snapshot.list").await?;
    let db = &c.state.db;
    let granted_to = if c.can(Perm::SeeAll) { 0 } else { c.user.id };
    let rows = store::snapshots_page(db, before, policy_id, source_id, granted_to, PAGE)
        .await
        .or_internal("listing snapshots")?;
    let names = store::names(db).await.or_internal("names")?;
    let sources = names.sources;
    let targets = names.targets;
    let policies = names.policies;
    let copy_targets = store::all_copy_targets(db)
        .await
        .or_internal("listing copy targets")?;
    let (lo, hi) = rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
        (lo.min(r.id), hi.max(r.id))
    });
    let copies = if rows.is_empty() {
        Vec::new()
    } else {
        store::copies_between(db, lo, hi)
            .await
            .or_internal("listing copies")?
    };
    Ok(rows
        .into_iter()
        .map(|r| SnapshotView {
            copy_of: r.copy_of,
            copies: match (r.policy_id, r.copy_of) {
                (Some(p), None) => copy_targets
                    .iter()
                    .filter(|(pid, _)| *pid == p)
                    .map(|(_, t)| CopyState {
                        target: targets.get(t).cloned().unwrap_or_default(),
                        complete: copies.contains(&(r.id, *t)),
                    })
                    .collect(),
                _ => Vec::new(),
            },
            id: r.id,
            snapshot_id: r.snapshot_id,
            target: targets.get(&r.target_id).cloned().unwrap_or_default(),
            policy: r
                .policy_id
                .and_then(|p| policies.get(&p).cloned())
                .unwrap_or_default(),
            policy_id: r.policy_id,
            source: r
                .source_id
                .and_then(|s| sources.get(&s).cloned())
                .unwrap_or_default(),
            source_id: r.source_id,
            time_ms: r.time_ms,
            tables: r.table_count,
            rows: r.row_count,
            bytes: r.bytes,
            bytes_stored: r.bytes_stored,
            duration_ms: r.duration_ms,
            verified_ok: r.verify_ok.map(|v| v != 0),
            verified_at: r.verified_at,
            details: serde_json::from_str(&r.details).unwrap_or_default(),
        })
        .collect())
}

/// Queues a read-back verify of one snapshot; returns the job id.
#[server(endpoint = "snapshots/verify")]
pub async fn verify_snapshot(id: i64) -> Result<i64, AppError> {
    use crate::api::jobs::JobParams;
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::RunJobs, "snapshot.verify").await?;
    let result = async {
        let s = store::snapshot(&c.state.db, id)
            .await
            .or_internal("loading a snapshot")?
            .ok_or_else(|| AppError::NotFound("Snapshot".into()))?;
        let params = JobParams::Verify {
            target_id: s.target_id,
            snapshot_id: s.snapshot_id.clone(),
        };
        let job = c
            .state
            .enqueue(store::NewJob {
                policy_id: s.policy_id,
                source_id: s.source_id,
                target_id: Some(s.target_id),
                params,
                title: format!("Verify snapshot {}", &s.snapshot_id[..12]),
                created_by: Some(c.user.id),
                rows_total: Some(s.row_count),
                bytes_total: None,
                retry_of: None,
            })
            .await
            .or_internal("queueing a job")?;
        Ok(job)
    }
    .await;
    c.audited("snapshot.verify", &format!("snapshot #{id}"), result)
        .await
}

/// What a restore should do, as the wizard collects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    /// Row id of the snapshot in the history.
    pub snapshot: i64,
    /// Where to: a source (by default the snapshot's own).
    pub dest_source_id: i64,
    /// Tables to restore (all when empty).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Only these columns of a table (all when a table is not named).
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
    /// Source table → destination table.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// `create` (new tables only), `replace`, `upsert`, `skip-existing` or
    /// `replace-rows`.
    pub mode: String,
    /// For `replace`: the user typed the names of the tables that will be replaced.
    #[serde(default)]
    pub confirm: String,
    /// For `replace`: back up the tables being replaced first (on by default).
    #[serde(default = "yes")]
    pub safety_backup: bool,
    /// Restore the source as it was at this instant (unix ms) instead of the snapshot:
    /// the latest snapshot before it plus the changes captured up to it (PostgreSQL
    /// sources with continuous capture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// Only rows for which these hold, one condition each in `restore --where` syntax
    /// (`id >= 1000`, `region = EU`): a key range or a predicate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTableView {
    pub source_table: String,
    pub dest_table: String,
    /// `create`, `replace`, `append`, `upsert`, `skip-existing` or `replace-rows`.
    pub action: String,
    pub rows: u64,
    pub bytes: u64,
    /// For a merge in a preview: what it would do to the table's rows (a dry run).
    #[serde(default)]
    pub diff: Option<MergeCounts>,
}

pub use tablesafe_types::{MergeCounts, MergeMode};

impl PlannedTableView {
    /// The diff in words, as the action treats it.
    pub fn diff_text(&self) -> Option<String> {
        let mode = MergeMode::parse(&self.action)?;
        Some(self.diff?.describe(mode))
    }
}

/// A restore as planned on the server: what happens to each table, where, and how many
/// approvals it needs before it may run.
#[cfg(feature = "ssr")]
pub(crate) struct Planned {
    pub tables: Vec<PlannedTableView>,
    /// The schema objects made besides the tables, counted by kind ("2 views, 1
    /// trigger"); empty when none.
    pub objects: String,
    /// Objects that use restored tables but are not made, with why.
    pub objects_left: Vec<String>,
    /// Changes to tables the destination has besides the tables' actions (a partition
    /// attached to an existing parent): a restore that is not only new tables.
    pub changes_existing: Vec<String>,
    pub dest: crate::ssr::store::SourceRow,
    /// The snapshot's source, when it is known.
    pub source: Option<crate::ssr::store::SourceRow>,
    /// A point-in-time restore's instant.
    pub at_ms: Option<i64>,
    /// A diff was asked for the plan's merges but not computed: the caller may not run
    /// this restore as it is ([`plan_restore`]).
    pub diff_withheld: bool,
}

#[cfg(feature = "ssr")]
impl Planned {
    /// Approvals the caller needs: the larger of the two sources' rules, and at least one
    /// when a caller who may only restore into new tables asks to replace one.
    pub fn approvals_required(&self, c: &crate::ssr::ctx::Ctx) -> i64 {
        let rule = self
            .source
            .iter()
            .chain([&self.dest])
            .map(|s| s.approvals_required)
            .max()
            .unwrap_or(0);
        if self.replaces() && !c.can(crate::auth::Perm::RunJobs) {
            rule.max(1)
        } else {
            rule
        }
    }

    pub fn replaces(&self) -> bool {
        self.tables.iter().any(|t| t.action != "create") || !self.changes_existing.is_empty()
    }

    /// The existing tables whose rows the restore changes (replaced, or merged into),
    /// as the user must type them to confirm.
    pub fn replaced(&self) -> Vec<&str> {
        self.tables
            .iter()
            .filter(|t| t.action != "create" && t.action != "append")
            .map(|t| t.dest_table.as_str())
            .collect()
    }

    /// How long a request for it may wait: the shorter of the two sources' settings.
    pub fn ttl_minutes(&self) -> i64 {
        self.source
            .iter()
            .chain([&self.dest])
            .map(|s| s.request_ttl_minutes)
            .min()
            .unwrap_or(4320)
    }

    pub fn title(&self) -> String {
        let at = self
            .at_ms
            .map(|t| format!(" as of {}", crate::pages::ui::time(t)))
            .unwrap_or_default();
        format!(
            "Restore {} into {}{at}",
            self.tables
                .iter()
                .map(|t| t.dest_table.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.dest.name
        )
    }

    /// Checks the typed confirmation of a replace.
    pub fn check_confirmed(&self, req: &RestoreRequest) -> Result<(), AppError> {
        if self.tables.is_empty() {
            return Err(AppError::Invalid(
                "Nothing to restore: no table selected.".into(),
            ));
        }
        let replaced = self.replaced();
        if !replaced.is_empty() && req.confirm.trim() != replaced.join(", ") {
            let verb = if self
                .tables
                .iter()
                .all(|t| t.action == "replace" || t.action == "create")
            {
                "replacing"
            } else {
                "changing"
            };
            return Err(AppError::Field(
                "confirm".into(),
                format!("Type {} to confirm {verb} it.", replaced.join(", ")),
            ));
        }
        Ok(())
    }

    /// The job that carries it out, on behalf of `created_by`.
    pub fn job(
        &self,
        req: &RestoreRequest,
        created_by: i64,
    ) -> Result<crate::ssr::store::NewJob, AppError> {
        use crate::api::jobs::JobParams;
        let params = JobParams::Restore {
            snapshot: req.snapshot,
            dest_source_id: req.dest_source_id,
            tables: req.tables.clone(),
            columns: req.columns.clone(),
            rename: req.rename.clone(),
            mode: req.mode.clone(),
            safety_backup: req.safety_backup && !self.replaced().is_empty(),
            at_ms: req.at_ms,
            conditions: req.conditions.clone(),
        };
        Ok(crate::ssr::store::NewJob {
            policy_id: None,
            source_id: Some(req.dest_source_id),
            target_id: None,
            params,
            title: self.title(),
            created_by: Some(created_by),
            rows_total: Some(self.tables.iter().map(|t| t.rows as i64).sum()),
            bytes_total: Some(self.tables.iter().map(|t| t.bytes as i64).sum()),
            retry_of: None,
        })
    }
}

/// Checks a restore request against the caller's role and the destination, and plans it
/// with the engine (a dry run: nothing changes). With `any_mode`, a caller who may only
/// restore into new tables may still plan a replace (for a request that someone who
/// may run it must approve).
///
/// `with_diff` adds each merge's diff (rows it would insert, update, leave and delete;
/// `engine::restore::diff`, read-only). The diff reads the destination's live rows and
/// compares them with the backup's — with conditions, it counts rows matching any
/// predicate the caller writes — so it needs the right to run the merge itself: the
/// caller may run restores in any mode (`RunJobs`) and this one needs no approval.
/// Everyone else (a requester preparing a request; anyone where the two-person rule
/// holds, where backups cannot be browsed either) gets the plan without it
/// ([`Planned::diff_withheld`]), and may still file the request.
#[cfg(feature = "ssr")]
pub(crate) async fn plan_restore(
    c: &crate::ssr::ctx::Ctx,
    req: &RestoreRequest,
    any_mode: bool,
    with_diff: bool,
) -> Result<Planned, AppError> {
    use crate::api::sources::visible_source;
    use crate::auth::Perm;
    use crate::ssr::{secrets::Kind, store};
    if !matches!(
        req.mode.as_str(),
        "create" | "replace" | "upsert" | "skip-existing" | "replace-rows"
    ) {
        return Err(AppError::Field(
            "mode".into(),
            "Choose create, replace, upsert, skip-existing or replace-rows.".into(),
        ));
    }
    let filter = engine::filter::RowFilter::parse(
        &req.conditions
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| AppError::Field("conditions".into(), e.to_string()))?;
    if req.mode != "create" && !any_mode && !c.can(Perm::RunJobs) {
        return Err(AppError::Forbidden);
    }
    let db = &c.state.db;
    let snap = store::snapshot(db, req.snapshot)
        .await
        .or_internal("loading a snapshot")?
        .ok_or_else(|| AppError::NotFound("Snapshot".into()))?;
    // Requesters: only snapshots of sources granted to them, only into granted sources.
    let source = match snap.source_id {
        Some(sid) => Some(visible_source(c, sid).await?),
        None if c.can(Perm::SeeAll) => None,
        None => return Err(AppError::NotFound("Snapshot".into())),
    };
    let dest = visible_source(c, req.dest_source_id).await?;
    // The rules of the databases, not of these rows (`ssr::rules`).
    let source = match source {
        Some(s) => Some(
            crate::ssr::rules::effective(&c.state, s)
                .await
                .or_internal("checking an approval rule")?,
        ),
        None => None,
    };
    let dest = crate::ssr::rules::effective(&c.state, dest)
        .await
        .or_internal("checking an approval rule")?;
    let target = store::target(db, snap.target_id)
        .await
        .or_internal("loading a target")?
        .ok_or_else(|| AppError::NotFound("Target".into()))?;
    // The one rule for new table names (the engine applies it too, for the CLI). Not a
    // field error: the wizard has no "rename" field to show it by, only the suffix.
    for (from, to) in &req.rename {
        if to != from {
            tablesafe_types::check_new_table_name(to)
                .map_err(|e| AppError::Invalid(format!("New name for {from}: {e}.")))?;
        }
    }
    let password = c
        .state
        .secrets
        .open(Kind::RepositoryPassword, &target.sealed_password)
        .or_internal("opening a password")?;
    let url = c
        .state
        .secrets
        .open(Kind::SourceUrl, &dest.sealed_url)
        .or_internal("opening a URL")?;
    // What the caller reads names the source as they know it, never its URL, and shows
    // no file path of the server to a non-admin (issue 27).
    let hide = {
        let label = format!("source \"{}\"", dest.name);
        let mut known = vec![(url.expose().to_string(), label.clone())];
        if let Ok(p) = engine::source::SourceUrl::parse(&url) {
            known.push((p.display(), label.clone()));
            if let engine::source::SourceUrl::Sqlite(path) = p {
                known.push((path.display().to_string(), label));
            }
        }
        let admin = c.can(Perm::ManageUsers);
        move |m: String| crate::ssr::words::without_paths(&m, &known, admin)
    };
    // (Checked again here: a source added before the rule, or by another way.)
    let parsed = engine::source::SourceUrl::parse(&url)
        .map_err(|e| AppError::Invalid(hide(e.to_string())))?;
    crate::ssr::check_destination(&c.state, &parsed, c.can(Perm::ManageUsers))
        .map_err(|m| AppError::Invalid(hide(m)))?;
    let repo = crate::ssr::open_target(&c.state, &target, &password)
        .await
        .map_err(|e| AppError::Invalid(hide(e.to_string())))?;
    let opts = engine::restore::RestoreOptions {
        snapshot: snap.snapshot_id.clone(),
        dest: url,
        selection: engine::selection::Selection {
            include: req.tables.iter().map(|t| glob_literal(t)).collect(),
            exclude: Vec::new(),
            columns: req.columns.clone(),
        },
        rename: req.rename.clone(),
        mode: req
            .mode
            .parse()
            .map_err(|e: engine::Error| AppError::Field("mode".into(), e.to_string()))?,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: req.at_ms,
        filter,
        objects: Default::default(),
    };
    let plan = engine::restore::plan(&repo, &opts).await.map_err(|e| {
        AppError::Invalid(crate::ssr::words::in_callers_words(&hide(e.to_string())))
    })?;
    let tables: Vec<PlannedTableView> = plan
        .tables
        .iter()
        .map(|t| PlannedTableView {
            source_table: t.source_table.clone(),
            dest_table: t.dest_table.clone(),
            action: serde_json::to_value(&t.action)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            rows: t.rows,
            bytes: t.bytes,
            diff: None,
        })
        .collect();
    let mut planned = Planned {
        tables,
        objects: engine::objects::summary(&plan.objects),
        objects_left: plan.objects_left.clone(),
        changes_existing: plan.changes_existing.clone(),
        dest,
        source,
        at_ms: plan.at_ms,
        diff_withheld: false,
    };
    if !any_mode && !c.can(Perm::RunJobs) && planned.replaces() {
        return Err(AppError::Forbidden);
    }
    if with_diff && plan.tables.iter().any(|t| t.action.merge().is_some()) {
        if c.can(Perm::RunJobs) && planned.approvals_required(c) == 0 {
            let diff = engine::restore::diff(&repo, &plan, &engine::progress::NoProgress)
                .await
                .map_err(|e| AppError::Invalid(e.to_string()))?;
            for t in &mut planned.tables {
                t.diff = diff
                    .iter()
                    .find(|d| d.table == t.dest_table)
                    .and_then(|d| d.merge);
            }
        } else {
            planned.diff_withheld = true;
        }
    }
    Ok(planned)
}

#[cfg(feature = "ssr")]
pub use engine::selection::glob_literal;

/// What the wizard shows before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePreview {
    pub tables: Vec<PlannedTableView>,
    /// Schema objects made besides the tables, counted by kind ("2 views, 1 trigger").
    #[serde(default)]
    pub objects: String,
    /// Objects that use restored tables but are not made, with why.
    #[serde(default)]
    pub objects_left: Vec<String>,
    /// Approvals needed before it runs (0: the caller may run it now); with any, the
    /// wizard files a restore request instead.
    pub approvals_required: i64,
    /// Why the merges show no diff, when they do not: it compares the destination's
    /// rows with the backup's, so only someone who may run the restore as it is gets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_note: Option<String>,
}

#[server(endpoint = "restore/preview", input = server_fn::codec::Json)]
pub async fn preview_restore(req: RestoreRequest) -> Result<RestorePreview, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::RestoreNew, "restore.preview").await?;
    let planned = plan_restore(&c, &req, true, true).await?;
    Ok(RestorePreview {
        diff_note: planned.diff_withheld.then(|| {
            "Not compared with the destination's rows (the rows shown are the backup's): that comparison is shown only to someone who may run this restore without approval.".to_string()
        }),
        approvals_required: planned.approvals_required(&c),
        tables: planned.tables,
        objects: planned.objects,
        objects_left: planned.objects_left,
    })
}

/// The instants a snapshot's source can be restored to from captured changes
/// (`(from, to)`, unix ms), if it has any (PostgreSQL with continuous capture).
#[server(endpoint = "snapshots/range")]
pub async fn restorable_range(id: i64) -> Result<Option<(i64, i64)>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::RestoreNew, "snapshot.range").await?;
    let opened = crate::api::browse::ssr::open_snapshot(&c, id).await?;
    let repo = opened.repo;
    let manifest = repo
        .load_snapshot_by_id(&opened.row.snapshot_id)
        .await
        .map_err(|e| AppError::Invalid(e.to_string()))?;
    let ranges = engine::capture::ranges(&repo)
        .await
        .map_err(|e| AppError::Invalid(e.to_string()))?;
    Ok(ranges
        .into_iter()
        .filter(|r| r.source == manifest.source.url)
        .map(|r| (r.from_ms, r.to_ms))
        .max_by_key(|r| r.1))
}

/// Queues the restore after planning it again; returns the job id. A restore that needs
/// approval is refused here: it goes through a restore request (`requests/file`).
#[server(endpoint = "restore/start", input = server_fn::codec::Json)]
pub async fn start_restore(req: RestoreRequest) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::RestoreNew, "restore.start").await?;
    let result = async {
        let planned = plan_restore(&c, &req, false, false).await?;
        planned.check_confirmed(&req)?;
        if planned.approvals_required(&c) > 0 {
            return Err(AppError::Invalid(format!(
                "This restore needs {} approval(s): file a restore request instead.",
                planned.approvals_required(&c)
            )));
        }
        let job = c
            .state
            .enqueue(planned.job(&req, c.user.id)?)
            .await
            .or_internal("queueing a job")?;
        Ok(job)
    }
    .await;
    c.audited(
        "restore.start",
        &format!("snapshot #{}", req.snapshot),
        result,
    )
    .await
}

pub use crate::model::Outcome;

/// An audit log entry as stored (its outcome verbatim: an entry is shown as written,
/// even one whose hash no longer matches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditView {
    pub id: i64,
    pub at: i64,
    pub username: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
}

/// Newest first; filters match a prefix of the user name / action and the exact
/// outcome (empty = any).
#[server(endpoint = "audit/list")]
pub async fn list_audit(
    user: String,
    action: String,
    outcome: String,
    before: Option<i64>,
) -> Result<Vec<AuditView>, AppError> {
    use crate::api::PAGE;
    use crate::auth::Perm;
    use crate::ssr::{audit, ctx};
    let c = ctx::authorize(Perm::SeeAudit, "audit.list").await?;
    let rows = audit::search(&c.state.db, &user, &action, &outcome, before, PAGE)
        .await
        .or_internal("listing the audit log")?;
    Ok(rows.into_iter().map(AuditView::from).collect())
}

#[cfg(feature = "ssr")]
impl From<crate::ssr::audit::Row> for AuditView {
    fn from(r: crate::ssr::audit::Row) -> Self {
        AuditView {
            id: r.id,
            at: r.at,
            username: r.username,
            address: r.address,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

/// What a check of the audit log found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheck {
    /// The chain is intact and matches every signed head that could be read.
    pub holds: bool,
    /// The first entry whose hash or link does not match.
    pub broken_at: Option<i64>,
    /// Entries that matched.
    pub entries: i64,
    /// What holds and what does not, for a person.
    pub summary: String,
    /// (place, what its head says): beside the server key, then each target.
    pub places: Vec<(String, String)>,
}

/// Walks the audit chain and compares it with the signed heads written outside the
/// history database (see `ssr::anchor`).
#[server(endpoint = "audit/verify")]
pub async fn verify_audit() -> Result<AuditCheck, AppError> {
    use crate::auth::Perm;
    use crate::ssr::anchor::{self, Status};
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::SeeAudit, "audit.verify").await?;
    let report = anchor::check(&c.state.db, &c.state.secrets, &c.state.audit_head)
        .await
        .or_internal("verifying the audit log")?;
    let places = report
        .heads
        .iter()
        .map(|(place, status)| {
            // The file's path is the server's business, not the browser's.
            let place = if place.starts_with("target ") {
                place.clone()
            } else {
                "the server's data directory".to_string()
            };
            let said = match status {
                Status::Missing => "no head yet".to_string(),
                Status::Matches(h) => format!("matches ({} entries)", h.entries),
                Status::Contradicted(_, why) => format!("does not match: {why}"),
                Status::Forged(why) => format!("ignored: {why}"),
                Status::Unreadable(_) => "could not be read".to_string(),
            };
            (place, said)
        })
        .collect();
    Ok(AuditCheck {
        holds: report.holds(),
        broken_at: report.chain.broken_at,
        entries: report.chain.entries,
        summary: report.summary(),
        places,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub source_id: i64,
    pub name: String,
    pub last_success_ms: Option<i64>,
    /// Whether its latest finished backup (succeeded or failed; cancelled ones do not
    /// count) failed: its current state, whatever older failures there were.
    pub last_backup_failed: bool,
    /// The next scheduled run of any of its enabled policies.
    pub next_run: Option<i64>,
    pub failures_7d: i64,
}

/// Facts about this installation for the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallationInfo {
    pub version: String,
    pub history_backend: String,
    pub schema_version: i64,
}

#[server(endpoint = "server_info")]
pub async fn server_info() -> Result<InstallationInfo, AppError> {
    use crate::ssr::{AppState, session};
    let state = expect_context::<AppState>();
    session::require_user(&state).await?;
    let schema_version = state
        .db
        .schema_version()
        .await
        .or_internal("reading schema version")?;
    Ok(InstallationInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        history_backend: state.db.backend.label().to_string(),
        schema_version,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardView {
    pub sources: Vec<SourceHealth>,
    /// (time, bytes stored) of recent snapshots, oldest first.
    pub stored: Vec<(i64, i64)>,
    /// (time, seconds) of recent successful backups, oldest first.
    pub backup_durations: Vec<(i64, f64)>,
    /// (time, seconds) of recent successful restores, oldest first.
    pub restore_durations: Vec<(i64, f64)>,
    /// The server's clock (ages are computed from it, the same on server and browser).
    pub now_ms: i64,
    /// Per policy with drills, the newest snapshot a restore drill proved restorable
    /// (empty for requesters).
    pub proven: Vec<crate::api::drills::ProvenView>,
}

#[server(endpoint = "dashboard_data")]
pub async fn dashboard_data() -> Result<DashboardView, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, db::now_ms, store};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "dashboard").await?;
    let db = &c.state.db;
    let only = (!c.can(Perm::SeeAll)).then_some(c.user.id);
    let sources = store::sources(db, only).await.or_internal("sources")?;
    let week_ago = now_ms() - 7 * 24 * 3600 * 1000;
    let mut health = store::source_health(db, week_ago)
        .await
        .or_internal("source health")?;
    let mut out = Vec::new();
    for s in sources {
        let h = health.remove(&s.id).unwrap_or(store::Health {
            last_success: None,
            last_backup_failed: false,
            next_run: None,
            failures: 0,
        });
        out.push(SourceHealth {
            source_id: s.id,
            name: s.name,
            last_success_ms: h.last_success,
            last_backup_failed: h.last_backup_failed,
            next_run: h.next_run,
            failures_7d: h.failures,
        });
    }
    let granted = only.unwrap_or(0);
    let mut stored: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT time_ms, bytes_stored FROM snapshots WHERE ($1 = 0 OR source_id IN (SELECT source_id FROM source_grants WHERE user_id = $1)) ORDER BY time_ms DESC LIMIT 60",
    )
    .bind(granted)
    .fetch_all(&db.pool)
    .await
    .or_internal("stored series")?;
    stored.reverse();
    let mut durations = Vec::new();
    for kind in ["backup", "restore"] {
        let mut series: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT finished_at, finished_at - started_at FROM jobs WHERE kind = $2 AND status = 'succeeded' AND started_at IS NOT NULL AND ($1 = 0 OR created_by = $1) ORDER BY id DESC LIMIT 60",
        )
        .bind(granted)
        .bind(kind)
        .fetch_all(&db.pool)
        .await
        .or_internal("duration series")?;
        series.reverse();
        durations.push(
            series
                .into_iter()
                .map(|(t, ms)| (t, ms as f64 / 1000.0))
                .collect::<Vec<_>>(),
        );
    }
    let restore_durations = durations.pop().unwrap_or_default();
    let backup_durations = durations.pop().unwrap_or_default();
    Ok(DashboardView {
        sources: out,
        stored,
        backup_durations,
        restore_durations,
        now_ms: now_ms(),
        proven: if only.is_none() {
            crate::api::drills::proven(db).await?
        } else {
            Vec::new()
        },
    })
}
