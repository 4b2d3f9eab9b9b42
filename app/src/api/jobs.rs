#![allow(clippy::too_many_arguments)] // server functions take one argument per form field
//! Policies, the jobs they start, the snapshots those make, and restores.

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyView {
    pub id: i64,
    pub name: String,
    pub source_id: i64,
    pub source: String,
    pub target_id: i64,
    pub target: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub columns: BTreeMap<String, Vec<String>>,
    pub schedule: String,
    pub timezone: String,
    pub enabled: bool,
    /// Why it is not backed up although enabled ("source paused", "target paused").
    pub held: Option<String>,
    /// When the scheduler runs it next (unix ms), if it has a schedule.
    pub next_run: Option<i64>,
    /// Whether a trigger URL is active.
    pub has_trigger: bool,
    pub retention: Retention,
    /// Targets each snapshot is also copied to: (id, name).
    pub copy_targets: Vec<(i64, String)>,
    /// The late alert as set: None from the schedule, Some(0) off, else minutes.
    pub rpo_minutes: Option<i64>,
    /// The minutes it may go without a successful backup, as in effect (None: never late).
    pub late_after_minutes: Option<i64>,
    /// When its last successful backup finished.
    pub last_success: Option<i64>,
    /// No successful backup within `late_after_minutes` (backup late: RPO breach).
    pub late: bool,
    /// Continuous capture every this many seconds (PostgreSQL); None: snapshots only.
    pub capture_secs: Option<i64>,
    /// With continuous capture: every commit up to this instant is stored (the end of
    /// the restorable range), and the last round's error, if it failed.
    pub restorable_to: Option<i64>,
    pub capture_error: Option<String>,
}

/// A policy's retention rules: the engine's own definition, which the browser links
/// too (all zero keeps everything).
pub use tablesafe_types::KeepRules as Retention;

/// A policy's rules from their stored JSON; empty or unreadable keeps everything.
pub fn parse_retention(stored: &str) -> Retention {
    serde_json::from_str(stored).unwrap_or_default()
}

/// One snapshot in a retention preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRow {
    pub snapshot_id: String,
    pub time_ms: i64,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPreview {
    pub policy_id: i64,
    pub rules: Retention,
    pub rows: Vec<RetentionRow>,
}

/// A policy's selection, stored as JSON.
pub use tablesafe_types::Selection;

pub use crate::model::{JobKind, JobParams, JobStatus};

/// [`crate::ssr::rules::require_admin_if_guarded`] for policy `id`'s source (a policy
/// that does not exist is left to the caller's own "not found").
#[cfg(feature = "ssr")]
async fn guard_policy(c: &crate::ssr::ctx::Ctx, id: i64) -> Result<(), AppError> {
    use crate::ssr::store;
    if let Some(p) = store::policy(&c.state.db, id)
        .await
        .or_internal("loading a policy")?
    {
        crate::ssr::rules::require_admin_if_guarded(c, p.source_id).await?;
    }
    Ok(())
}

#[server(endpoint = "policies/list")]
pub async fn list_policies() -> Result<Vec<PolicyView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::SeeAll, "policy.list").await?;
    let db = &c.state.db;
    let names = store::names(db).await.or_internal("names")?;
    let sources = names.sources;
    let targets = names.targets;
    let rows = store::policies(db).await.or_internal("listing policies")?;
    let copies = store::all_copy_targets(db)
        .await
        .or_internal("listing copy targets")?;
    let successes = store::last_successes(db)
        .await
        .or_internal("last successes")?;
    let captures = store::captures(db).await.or_internal("captures")?;
    let (paused_sources, paused_targets) = store::paused(db).await.or_internal("paused")?;
    let now = crate::ssr::db::now_ms();
    Ok(rows
        .into_iter()
        .map(|p| {
            let sel: Selection = serde_json::from_str(&p.selection).unwrap_or_default();
            let last_success = successes.get(&p.id).copied();
            let held = if paused_sources.contains(&p.source_id) {
                Some("source paused".to_string())
            } else if paused_targets.contains(&p.target_id) {
                Some("target paused".to_string())
            } else {
                None
            };
            let runs = p.enabled != 0 && held.is_none();
            let late_after = store::late_after_ms(&p, now).filter(|_| runs);
            let late =
                late_after.is_some_and(|limit| now - last_success.unwrap_or(p.created_at) > limit);
            let capture = captures.iter().find(|c| c.policy_id == p.id);
            PolicyView {
                capture_secs: p.capture_secs,
                restorable_to: capture.and_then(|c| c.covers_until_ms),
                capture_error: capture.and_then(|c| c.last_error.clone()),
                rpo_minutes: p.rpo_minutes,
                late_after_minutes: late_after.map(|ms| ms / 60_000),
                last_success,
                late,
                id: p.id,
                name: p.name,
                source: sources.get(&p.source_id).cloned().unwrap_or_default(),
                source_id: p.source_id,
                target: targets.get(&p.target_id).cloned().unwrap_or_default(),
                target_id: p.target_id,
                include: sel.include,
                exclude: sel.exclude,
                columns: sel.columns,
                schedule: p.schedule,
                timezone: p.timezone,
                enabled: p.enabled != 0,
                next_run: p.next_run_at.filter(|_| runs),
                held,
                has_trigger: p.trigger_hash.is_some(),
                retention: parse_retention(&p.retention),
                copy_targets: copies
                    .iter()
                    .filter(|(pid, _)| *pid == p.id)
                    .map(|(_, t)| (*t, targets.get(t).cloned().unwrap_or_default()))
                    .collect(),
            }
        })
        .collect())
}

#[server(endpoint = "policies/create")]
pub async fn create_policy(
    name: String,
    source_id: i64,
    target_id: i64,
    include: String,
    exclude: String,
    columns: String,
    schedule: String,
    timezone: String,
    enabled: Option<String>,
) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.create").await?;
    let name_for_audit = name.trim().to_string();
    let result = async {
        crate::ssr::rules::require_admin_if_guarded(&c, source_id).await?;
        let f = PolicyFields::check(&name, &include, &exclude, &columns, &schedule, &timezone)?;
        super::selection::refuse_impossible(&c, source_id, &f.chosen).await?;
        let db = &c.state.db;
        store::source(db, source_id)
            .await
            .or_internal("loading a source")?
            .ok_or_else(|| AppError::Field("source_id".into(), "Choose a source.".into()))?;
        store::target(db, target_id)
            .await
            .or_internal("loading a target")?
            .ok_or_else(|| AppError::Field("target_id".into(), "Choose a target.".into()))?;
        let enabled = enabled.is_some_and(|v| v != "false" && v != "off");
        store::insert_policy(
            db,
            &f.name,
            source_id,
            target_id,
            &f.selection,
            &f.schedule,
            &f.timezone,
            enabled,
            f.next_run_at,
            c.user.id,
        )
        .await
        .or_internal("creating a policy")?
        .ok_or_else(|| AppError::name_taken("policy"))
    }
    .await;
    c.audited("policy.create", &format!("policy {name_for_audit}"), result)
        .await
}

/// A policy's form fields (create and edit), checked: the same rules for both.
#[cfg(feature = "ssr")]
struct PolicyFields {
    name: String,
    /// The selection as stored (JSON).
    selection: String,
    /// The selection itself.
    chosen: Selection,
    schedule: String,
    timezone: String,
    /// The schedule's first slot after now (None: on demand only).
    next_run_at: Option<i64>,
}

#[cfg(feature = "ssr")]
impl PolicyFields {
    fn check(
        name: &str,
        include: &str,
        exclude: &str,
        columns: &str,
        schedule: &str,
        timezone: &str,
    ) -> Result<PolicyFields, AppError> {
        use crate::forms;
        let name = forms::name("name", name)?;
        let selection = Selection {
            include: forms::globs("include", include)?,
            exclude: forms::globs("exclude", exclude)?,
            columns: forms::columns(columns)?,
        };
        // The engine's own check of the globs, so a typo fails here and not at 2 a.m.
        engine::selection::SelectionExt::check(&selection)
            .map_err(|e| AppError::Field("include".into(), e.to_string()))?;
        let schedule = forms::schedule(schedule)?;
        let timezone = forms::timezone(timezone)?;
        // The full check (cron syntax, a real IANA zone) needs the server's tables.
        let parsed = crate::ssr::schedule::parse(&schedule, &timezone)
            .map_err(|(f, m)| AppError::Field(f.into(), m))?;
        let next_run_at = parsed.and_then(|s| s.next_after(crate::ssr::db::now_ms()));
        Ok(PolicyFields {
            name,
            selection: serde_json::to_string(&selection).or_internal("selection json")?,
            chosen: selection,
            schedule,
            timezone,
            next_run_at,
        })
    }
}

/// Changes a policy's name, selection and schedule (its source and target stay: a
/// policy for another pair is a new policy). Checked as on create; the next run is
/// counted again from the new schedule.
#[server(endpoint = "policies/update")]
pub async fn update_policy(
    id: i64,
    name: String,
    include: String,
    exclude: String,
    columns: String,
    schedule: String,
    timezone: String,
) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.update").await?;
    let result = async {
        guard_policy(&c, id).await?;
        let f = PolicyFields::check(&name, &include, &exclude, &columns, &schedule, &timezone)?;
        let p = load_policy(&c.state.db, id).await?;
        super::selection::refuse_impossible(&c, p.source_id, &f.chosen).await?;
        match store::update_policy(
            &c.state.db,
            id,
            &f.name,
            &f.selection,
            &f.schedule,
            &f.timezone,
            f.next_run_at,
        )
        .await
        .or_internal("updating a policy")?
        {
            None => Err(AppError::name_taken("policy")),
            Some(false) => Err(AppError::NotFound("Policy".into())),
            Some(true) => Ok(()),
        }
    }
    .await;
    c.audited(
        "policy.update",
        &format!(
            "policy #{id}: name {}, schedule {:?} {}",
            name.trim(),
            schedule.trim(),
            timezone.trim()
        ),
        result,
    )
    .await
}

/// Pauses (`enabled` false: the scheduler no longer queues it, it is never late) or
/// resumes a policy; a resumed policy runs at its schedule's next slot from now, not for
/// the slots it missed. Run now and its trigger URL still work while it is paused.
#[server(endpoint = "policies/set_enabled")]
pub async fn set_policy_enabled(id: i64, enabled: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.enable").await?;
    let action = if enabled {
        "policy.enable"
    } else {
        "policy.disable"
    };
    let result = async {
        guard_policy(&c, id).await?;
        let db = &c.state.db;
        let p = load_policy(db, id).await?;
        let next = crate::ssr::schedule::parse(&p.schedule, &p.timezone)
            .ok()
            .flatten()
            .and_then(|s| s.next_after(crate::ssr::db::now_ms()));
        if !store::set_policy_enabled(db, id, enabled, next)
            .await
            .or_internal("enabling a policy")?
        {
            return Err(AppError::NotFound("Policy".into()));
        }
        Ok(())
    }
    .await;
    c.audited(action, &format!("policy #{id}"), result).await
}

/// What deleting a policy takes with it, for the confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDeletion {
    pub id: i64,
    pub name: String,
    /// Snapshots it made: they stay in the history and the repository.
    pub snapshots: i64,
    /// What goes with it, in words ("its schedule (daily)", "its trigger URL", …).
    pub goes: Vec<String>,
    /// Why it cannot be deleted now, if it cannot.
    pub blocked: Option<String>,
}

/// Why a policy cannot be deleted now, if it cannot.
#[cfg(feature = "ssr")]
fn deletion_blocked(p: &crate::ssr::store::PolicyRow, active_jobs: i64) -> Option<String> {
    if active_jobs > 0 {
        Some(format!(
            "A job of this policy is queued or running ({active_jobs}): cancel it or wait until it ends, then delete the policy."
        ))
    } else if p.capture_secs.is_some() {
        Some("Continuous capture is on: turn it off first (that removes what it keeps on the source), then delete the policy.".into())
    } else {
        None
    }
}

/// The confirmation of a deletion: what goes with the policy and what stays.
#[server(endpoint = "policies/deletion")]
pub async fn preview_policy_deletion(id: i64) -> Result<PolicyDeletion, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.deletion").await?;
    let db = &c.state.db;
    let p = load_policy(db, id).await?;
    let d = store::policy_dependents(db, id)
        .await
        .or_internal("what a policy has")?;
    let copies = store::all_copy_targets(db)
        .await
        .or_internal("listing copy targets")?
        .into_iter()
        .filter(|(pid, _)| *pid == id)
        .count();
    let mut goes = vec![if p.schedule.is_empty() {
        "its settings (it has no schedule)".to_string()
    } else {
        format!("its schedule ({} in {})", p.schedule, p.timezone)
    }];
    if !parse_retention(&p.retention).is_empty() {
        goes.push("its retention rules (nothing is pruned any more)".into());
    }
    if copies > 0 {
        goes.push(format!(
            "copying to {copies} other target(s) (copies made so far stay)"
        ));
    }
    if d.drill_plan {
        goes.push("its restore drill plan (past drill reports stay)".into());
    }
    if p.trigger_hash.is_some() {
        goes.push("its trigger URL (calls to it fail from then on)".into());
    }
    Ok(PolicyDeletion {
        id,
        blocked: deletion_blocked(&p, d.active_jobs),
        name: p.name,
        snapshots: d.snapshots,
        goes,
    })
}

/// Deletes a policy: its schedule, retention rules, copies, drill plan and trigger go;
/// its snapshots stay in the history and in the repository, listed as a removed
/// policy's and restorable. Refused while one of its jobs is queued or running, or
/// while continuous capture is on.
#[server(endpoint = "policies/delete")]
pub async fn delete_policy(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.delete").await?;
    let mut what = format!("policy #{id}");
    let result = async {
        guard_policy(&c, id).await?;
        let db = &c.state.db;
        let p = load_policy(db, id).await?;
        what = format!("policy #{id} {}", p.name);
        if let Some(why) = deletion_blocked(&p, 0) {
            return Err(AppError::Invalid(why));
        }
        match store::delete_policy(db, id)
            .await
            .or_internal("deleting a policy")?
        {
            store::PolicyDeleted::Deleted => Ok(()),
            store::PolicyDeleted::NotFound => Err(AppError::NotFound("Policy".into())),
            store::PolicyDeleted::Busy => Err(AppError::conflict(
                "A job of this policy is queued or running: cancel it or wait until it ends, then delete the policy.",
            )),
        }
    }
    .await;
    c.audited("policy.delete", &what, result).await
}

/// Parses the retention form (each field a count, empty = 0).
#[cfg(feature = "ssr")]
fn retention_form(fields: [(&str, &str); 7]) -> Result<Retention, AppError> {
    let mut n = [0u32; 7];
    for (i, (name, v)) in fields.iter().enumerate() {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        n[i] = match v.parse::<u32>() {
            Ok(x) if x <= 100_000 => x,
            _ => {
                return Err(AppError::Field(
                    (*name).into(),
                    "A whole number from 0 to 100000.".into(),
                ));
            }
        };
    }
    Ok(Retention {
        last: n[0],
        hourly: n[1],
        daily: n[2],
        weekly: n[3],
        monthly: n[4],
        yearly: n[5],
        floor: n[6],
    })
}

/// A policy, or `NotFound`.
#[cfg(feature = "ssr")]
async fn load_policy(
    db: &crate::ssr::db::Db,
    id: i64,
) -> Result<crate::ssr::store::PolicyRow, AppError> {
    crate::ssr::store::policy(db, id)
        .await
        .or_internal("loading a policy")?
        .ok_or_else(|| AppError::NotFound("Policy".into()))
}

/// The policy's snapshots (those made by it, in its target) and which of them the
/// given rules keep, and why: the same engine function prune runs.
#[cfg(feature = "ssr")]
async fn retention_decisions(
    state: &crate::ssr::AppState,
    p: &crate::ssr::store::PolicyRow,
    rules: &Retention,
) -> anyhow::Result<Vec<engine::retention::Decision>> {
    use crate::ssr::secrets::Kind;
    let target = crate::ssr::store::target(&state.db, p.target_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the policy's target no longer exists"))?;
    let password = state
        .secrets
        .open(Kind::RepositoryPassword, &target.sealed_password)?;
    let repo = crate::ssr::open_target(state, &target, &password).await?;
    let tz: chrono_tz::Tz = p.timezone.parse().unwrap_or(chrono_tz::UTC);
    let only = [("policy-id".to_string(), p.id.to_string())].into();
    Ok(engine::prune::decide(&repo, rules, tz, &only).await?)
}

#[server(endpoint = "policies/retention_preview")]
pub async fn preview_retention(
    id: i64,
    last: String,
    hourly: String,
    daily: String,
    weekly: String,
    monthly: String,
    yearly: String,
    floor: String,
) -> Result<RetentionPreview, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::Configure, "policy.retention.preview").await?;
    let rules = retention_form([
        ("last", &last),
        ("hourly", &hourly),
        ("daily", &daily),
        ("weekly", &weekly),
        ("monthly", &monthly),
        ("yearly", &yearly),
        ("floor", &floor),
    ])?;
    let p = load_policy(&c.state.db, id).await?;
    let decisions = retention_decisions(&c.state, &p, &rules)
        .await
        .map_err(|e| AppError::Invalid(format!("The target cannot be read: {e}")))?;
    Ok(RetentionPreview {
        policy_id: id,
        rules,
        rows: decisions
            .into_iter()
            .map(|d| RetentionRow {
                snapshot_id: d.id,
                time_ms: d.time_ms,
                keep: d.keep || rules.is_empty(),
                reasons: if rules.is_empty() {
                    vec!["no rules: everything is kept".into()]
                } else {
                    d.reasons
                },
            })
            .collect(),
    })
}

#[server(endpoint = "policies/retention_save")]
pub async fn save_retention(
    id: i64,
    last: u32,
    hourly: u32,
    daily: u32,
    weekly: u32,
    monthly: u32,
    yearly: u32,
    floor: u32,
) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.retention.save").await?;
    let rules = Retention {
        last,
        hourly,
        daily,
        weekly,
        monthly,
        yearly,
        floor,
    };
    let result = async {
        guard_policy(&c, id).await?;
        let json = if rules.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&rules).or_internal("retention json")?
        };
        if !store::set_retention(&c.state.db, id, &json)
            .await
            .or_internal("saving retention")?
        {
            return Err(AppError::NotFound("Policy".into()));
        }
        Ok(())
    }
    .await;
    c.audited(
        "policy.retention.save",
        &format!("policy #{id}: {}", rules.describe()),
        result,
    )
    .await
}

/// Sets how long the policy may go without a successful backup before `backup.late` is
/// announced: `minutes` None derives it from the schedule, 0 turns it off.
#[server(endpoint = "policies/late_alert")]
pub async fn set_late_alert(id: i64, minutes: Option<i64>) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.late_alert").await?;
    let result = async {
        guard_policy(&c, id).await?;
        if let Some(m) = minutes
            && !(0..=525_600).contains(&m)
        {
            return Err(AppError::Field(
                "minutes".into(),
                "Enter minutes between 0 (off) and 525600 (a year), or leave it empty to follow the schedule.".into(),
            ));
        }
        if !store::set_rpo(&c.state.db, id, minutes)
            .await
            .or_internal("saving the late alert")?
        {
            return Err(AppError::NotFound("Policy".into()));
        }
        Ok(())
    }
    .await;
    let what = match minutes {
        None => "from the schedule".to_string(),
        Some(0) => "off".to_string(),
        Some(m) => format!("after {m} min"),
    };
    c.audited(
        "policy.late_alert",
        &format!("policy #{id}: {what}"),
        result,
    )
    .await
}

/// Turns continuous capture on (every `secs` seconds, 1–3600) or off (None) for a
/// policy. PostgreSQL: turning it off drops the capture's replication slot and
/// publication on the source at once (a forgotten slot would keep WAL forever). SQLite
/// keeps nothing on the source (engine::capture::sqlite). What was stored so far stays
/// restorable.
#[server(endpoint = "policies/continuous")]
pub async fn set_continuous(id: i64, secs: Option<i64>) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::secrets::Kind;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.continuous").await?;
    let result = async {
        guard_policy(&c, id).await?;
        let db = &c.state.db;
        let p = load_policy(db, id).await?;
        let source = store::source(db, p.source_id)
            .await
            .or_internal("loading a source")?
            .ok_or_else(|| AppError::NotFound("Source".into()))?;
        if let Some(s) = secs
            && !(1..=3600).contains(&s)
        {
            return Err(AppError::Field(
                "secs".into(),
                "Capture every 1 to 3600 seconds.".into(),
            ));
        }
        if secs.is_some()
            && let Some(why) = store::policy_hold(db, &p)
                .await
                .or_internal("checking a policy's source and target")?
        {
            return Err(AppError::Field("secs".into(), why));
        }
        if secs.is_some() && source.engine == tablesafe_types::Engine::Mysql {
            return Err(AppError::Field(
                "secs".into(),
                "Continuous capture of MySQL is not available yet: schedule frequent backups (they are incremental).".into(),
            ));
        }
        if secs.is_none() && p.capture_secs.is_some() && source.engine == tablesafe_types::Engine::Postgres {
            let url = c
                .state
                .secrets
                .open(Kind::SourceUrl, &source.sealed_url)
                .or_internal("opening a URL")?;
            engine::capture::teardown(&url, &format!("p{id}"))
                .await
                .map_err(|e| AppError::Invalid(format!("Could not drop the capture slot: {e}")))?;
        }
        if !store::set_capture(db, id, secs)
            .await
            .or_internal("saving continuous capture")?
        {
            return Err(AppError::NotFound("Policy".into()));
        }
        Ok(())
    }
    .await;
    let what = match secs {
        Some(s) => format!("every {s} s"),
        None => "off".into(),
    };
    c.audited(
        "policy.continuous",
        &format!("policy #{id}: {what}"),
        result,
    )
    .await
}

/// Queues a job that applies the policy's retention rules now.
#[server(endpoint = "policies/prune")]
pub async fn prune_policy(id: i64) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.prune").await?;
    let result = async {
        let db = &c.state.db;
        let p = load_policy(db, id).await?;
        if parse_retention(&p.retention).is_empty() {
            return Err(AppError::Invalid(
                "This policy keeps everything: save retention rules first.".into(),
            ));
        }
        let job = c
            .state
            .enqueue(store::NewJob {
                policy_id: Some(p.id),
                source_id: Some(p.source_id),
                target_id: Some(p.target_id),
                params: JobParams::Prune { policy_id: p.id },
                title: format!("Retention: {}", p.name),
                created_by: Some(c.user.id),
                rows_total: None,
                bytes_total: None,
                retry_of: None,
            })
            .await
            .or_internal("queueing a job")?;
        Ok(job)
    }
    .await;
    c.audited("policy.prune", &format!("policy #{id}"), result)
        .await
}

/// Sets the targets the policy's snapshots are copied to, besides its own target.
#[server(endpoint = "policies/copies", input = server_fn::codec::Json)]
pub async fn set_copy_targets(id: i64, targets: Vec<i64>) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.copies").await?;
    let result = async {
        guard_policy(&c, id).await?;
        let db = &c.state.db;
        let p = load_policy(db, id).await?;
        let mut wanted: Vec<i64> = targets.clone();
        wanted.sort();
        wanted.dedup();
        for t in &wanted {
            if *t == p.target_id {
                return Err(AppError::Field(
                    "targets".into(),
                    "The policy's own target already has every snapshot.".into(),
                ));
            }
            store::target(db, *t)
                .await
                .or_internal("loading a target")?
                .ok_or_else(|| AppError::Field("targets".into(), "No such target.".into()))?;
        }
        store::set_copy_targets(db, id, &wanted)
            .await
            .or_internal("saving copy targets")
    }
    .await;
    c.audited(
        "policy.copies",
        &format!("policy #{id}: copy to targets {targets:?}"),
        result,
    )
    .await
}

/// A new trigger token for the policy (any earlier one stops working). The token is
/// returned once and only its hash is stored.
#[server(endpoint = "policies/trigger_create")]
pub async fn create_trigger(id: i64) -> Result<String, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.trigger.create").await?;
    let result = async {
        guard_policy(&c, id).await?;
        let token = crate::ssr::password::generate();
        let hash = store::trigger_hash(token.expose());
        if !store::set_trigger_hash(&c.state.db, id, Some(&hash))
            .await
            .or_internal("storing a trigger")?
        {
            return Err(AppError::NotFound("Policy".into()));
        }
        Ok(token.expose().to_string())
    }
    .await;
    c.audited("policy.trigger.create", &format!("policy #{id}"), result)
        .await
}

#[server(endpoint = "policies/trigger_revoke")]
pub async fn revoke_trigger(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "policy.trigger.revoke").await?;
    let result = async {
        guard_policy(&c, id).await?;
        if !store::set_trigger_hash(&c.state.db, id, None)
            .await
            .or_internal("revoking a trigger")?
        {
            return Err(AppError::NotFound("Policy".into()));
        }
        Ok(())
    }
    .await;
    c.audited("policy.trigger.revoke", &format!("policy #{id}"), result)
        .await
}

/// Queues a backup of the policy now; returns the job id.
#[server(endpoint = "policies/run")]
pub async fn run_policy(id: i64) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::RunJobs, "policy.run").await?;
    let result = async {
        let db = &c.state.db;
        let p = load_policy(db, id).await?;
        if let Some(why) = store::policy_hold(db, &p)
            .await
            .or_internal("checking a policy's source and target")?
        {
            // Paused source or target: the policy's state, not the request, is in the way.
            return Err(AppError::conflict(why));
        }
        let new = store::backup_job(db, &p, format!("Backup: {}", p.name), Some(c.user.id))
            .await
            .or_internal("preparing a job")?;
        let job = c.state.enqueue(new).await.or_internal("queueing a job")?;
        Ok(job)
    }
    .await;
    c.audited("policy.run", &format!("policy #{id}"), result)
        .await
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: i64,
    pub kind: JobKind,
    pub status: JobStatus,
    pub title: String,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub rows_done: i64,
    pub bytes_done: i64,
    pub rows_total: Option<i64>,
    pub bytes_total: Option<i64>,
    pub current_table: Option<String>,
    pub error: Option<String>,
    pub result: Option<String>,
    pub snapshot_id: Option<String>,
    pub cancel_requested: bool,
    /// The server's clock when this view was made (for the ETA).
    pub now_ms: i64,
}

impl JobView {
    pub fn finished(&self) -> bool {
        self.status.finished()
    }

    /// Done fraction 0..=1, when a total is known.
    pub fn fraction(&self) -> Option<f64> {
        if self.status == JobStatus::Succeeded {
            return Some(1.0);
        }
        // Rows first: the estimate of bytes is the last snapshot's *stored* (compressed,
        // deduplicated) size, while the bytes done are the source's bytes read, so
        // bytes reached "99 %" long before the end.
        let (done, total) = match (self.rows_total, self.bytes_total) {
            (Some(t), _) if t > 0 => (self.rows_done, t),
            (_, Some(t)) if t > 0 => (self.bytes_done, t),
            _ => return None,
        };
        Some((done as f64 / total as f64).clamp(0.0, 0.99))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub id: i64,
    pub at: i64,
    pub level: String,
    pub message: String,
}

#[cfg(feature = "ssr")]
fn job_view(
    r: crate::ssr::store::JobRow,
    users: &std::collections::HashMap<i64, String>,
) -> JobView {
    JobView {
        id: r.id,
        // The history's CHECK constraints allow only these words.
        kind: r.kind,
        status: r.status,
        title: r.title,
        created_by: r
            .created_by
            .and_then(|u| users.get(&u).cloned())
            .unwrap_or_else(|| "scheduler".into()),
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        rows_done: r.rows_done,
        bytes_done: r.bytes_done,
        rows_total: r.rows_total,
        bytes_total: r.bytes_total,
        current_table: r.current_table,
        error: r.error,
        result: r.result,
        snapshot_id: r.snapshot_id,
        cancel_requested: r.cancel_requested != 0,
        now_ms: crate::ssr::db::now_ms(),
    }
}

/// Newest first; `before`: the smallest id of the previous page.
#[server(endpoint = "jobs/list")]
pub async fn list_jobs(
    before: Option<i64>,
    status: Option<String>,
) -> Result<Vec<JobView>, AppError> {
    use crate::api::PAGE;
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "job.list").await?;
    let only_own = (!c.can(Perm::SeeAll)).then_some(c.user.id);
    let status = status.filter(|s| !s.is_empty());
    if let Some(s) = &status
        && JobStatus::parse(s).is_none()
    {
        return Err(AppError::Field("status".into(), "Unknown status.".into()));
    }
    let rows = store::jobs_page(&c.state.db, before, status.as_deref(), only_own, PAGE)
        .await
        .or_internal("listing jobs")?;
    let users = store::names(&c.state.db).await.or_internal("names")?.users;
    Ok(rows.into_iter().map(|r| job_view(r, &users)).collect())
}

#[cfg(feature = "ssr")]
async fn visible_job(
    c: &crate::ssr::ctx::Ctx,
    id: i64,
) -> Result<crate::ssr::store::JobRow, AppError> {
    use crate::auth::Perm;
    let row = crate::ssr::store::job(&c.state.db, id)
        .await
        .or_internal("loading a job")?
        .ok_or_else(|| AppError::NotFound("Job".into()))?;
    if c.can(Perm::SeeAll) || row.created_by == Some(c.user.id) {
        Ok(row)
    } else {
        Err(AppError::NotFound("Job".into()))
    }
}

/// A job and its log lines after `after_log` (so a page can poll cheaply).
#[server(endpoint = "jobs/get")]
pub async fn get_job(id: i64, after_log: i64) -> Result<(JobView, Vec<LogLine>), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "job.get").await?;
    let row = visible_job(&c, id).await?;
    let users = store::names(&c.state.db).await.or_internal("names")?.users;
    let logs = store::job_logs(&c.state.db, id, after_log)
        .await
        .or_internal("loading job logs")?
        .into_iter()
        .map(|(id, at, level, message)| LogLine {
            id,
            at,
            level,
            message,
        })
        .collect();
    Ok((job_view(row, &users), logs))
}

#[server(endpoint = "jobs/cancel")]
pub async fn cancel_job(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize_any(&[Perm::RunJobs, Perm::RestoreNew], "job.cancel").await?;
    let result = async {
        let row = visible_job(&c, id).await?;
        if !c.can(Perm::RunJobs) && row.created_by != Some(c.user.id) {
            return Err(AppError::Forbidden);
        }
        if !store::request_cancel(&c.state.db, id)
            .await
            .or_internal("cancelling a job")?
        {
            return Err(AppError::conflict("This job has already finished."));
        }
        Ok(())
    }
    .await;
    c.audited("job.cancel", &format!("job {id}"), result).await
}

/// Queues a failed or cancelled job again (a new job; the old one stays as it was).
#[server(endpoint = "jobs/retry")]
pub async fn retry_job(id: i64) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::RunJobs, "job.retry").await?;
    let result = async {
        let row = visible_job(&c, id).await?;
        if !matches!(row.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(AppError::Invalid(
                "Only failed or cancelled jobs can be retried.".into(),
            ));
        }
        let params: JobParams =
            serde_json::from_str(&row.params).or_internal("reading a job's parameters")?;
        // A restore is planned again under today's rules: if the databases' approval
        // rule asks for approvals now, a retry is a new restore request (the approvals
        // of the first run, if any, were for that run).
        if let JobParams::Restore {
            snapshot,
            dest_source_id,
            tables,
            columns,
            rename,
            mode,
            safety_backup,
            at_ms,
            conditions,
        } = &params
        {
            let req = crate::api::history::RestoreRequest {
                snapshot: *snapshot,
                dest_source_id: *dest_source_id,
                tables: tables.clone(),
                columns: columns.clone(),
                rename: rename.clone(),
                mode: mode.clone(),
                confirm: String::new(),
                safety_backup: *safety_backup,
                at_ms: *at_ms,
                conditions: conditions.clone(),
            };
            let planned = crate::api::history::plan_restore(&c, &req, true, false).await?;
            let required = planned.approvals_required(&c);
            if required > 0 {
                return Err(AppError::Invalid(format!(
                    "This restore needs {required} approval(s) under the current rule: file a restore request to run it again."
                )));
            }
        }
        let job = c
            .state
            .enqueue(store::NewJob {
                policy_id: row.policy_id,
                source_id: row.source_id,
                target_id: row.target_id,
                params: serde_json::from_str(&row.params)
                    .or_internal("reading a job's parameters")?,
                title: row.title,
                created_by: Some(c.user.id),
                rows_total: row.rows_total,
                bytes_total: row.bytes_total,
                retry_of: Some(id),
            })
            .await
            .or_internal("queueing a job")?;
        Ok(job)
    }
    .await;
    c.audited("job.retry", &format!("job {id}"), result).await
}
