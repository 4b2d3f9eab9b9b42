//! Self-service restore requests with approval (issue 11).
//!
//! Anyone who may restore files a request: a restore (the wizard's [`RestoreRequest`])
//! and a reason. The sources involved decide how many approvals it needs (none, one, or
//! two different people); the requester never counts. Each approval is bound to the
//! version of the request its approver saw: when the requester changes the request, the
//! approvals given so far stop counting. The last approval queues the restore job; the
//! request then follows its job (running, done, failed). Everything is in the audit log
//! under `restore request #N`, which is also the request's history.

#[cfg(feature = "ssr")]
use crate::api::history::Outcome;
use crate::api::history::{AuditView, RestoreRequest};
use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::model::RequestState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestView {
    pub id: i64,
    pub state: RequestState,
    pub title: String,
    pub reason: String,
    pub requester: String,
    /// The snapshot's source (empty when unknown) and the destination.
    pub source: String,
    pub dest: String,
    pub request: RestoreRequest,
    /// The version approvals are bound to; `approve` must name it.
    pub version: String,
    pub approvals: i64,
    pub approvals_required: i64,
    /// Who approved the current version.
    pub approvers: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    /// Who approved it last (starting the restore), rejected or withdrew it.
    pub decided_by: Option<String>,
    pub reject_reason: Option<String>,
    pub job_id: Option<i64>,
    /// Rows restored per destination table, once done.
    pub restored: Vec<(String, u64)>,
    /// The snapshot of the tables a replace dropped, taken first.
    pub safety_snapshot: Option<String>,
    pub error: Option<String>,
    /// What the caller may do with it now.
    pub can_approve: bool,
    pub can_change: bool,
}

/// A request and its history (its audit entries, oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestDetail {
    pub request: RequestView,
    pub history: Vec<AuditView>,
}

#[cfg(feature = "ssr")]
mod server {
    use super::*;
    use crate::api::history::Planned;

    use crate::auth::{Perm, Role};
    use crate::ssr::ctx::Ctx;
    use crate::ssr::requests::{self as rq, RequestRow};
    use crate::ssr::store;

    pub fn target(id: i64) -> String {
        format!("restore request #{id}")
    }

    pub fn reason(field: &str, reason: &str) -> Result<String, AppError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(AppError::Field(
                field.into(),
                "Say why (the approvers read it).".into(),
            ));
        }
        if reason.chars().count() > 2000 {
            return Err(AppError::Field(
                field.into(),
                "Keep it under 2000 characters.".into(),
            ));
        }
        Ok(reason.to_string())
    }

    pub fn params(req: &RestoreRequest) -> Result<String, AppError> {
        serde_json::to_string(req).or_internal("request json")
    }

    /// Whether the caller may approve or reject `row` at all (any version): never their
    /// own, never as an auditor; admins and operators always; others where they were
    /// made approvers of every source involved, and only for restores into new tables.
    pub async fn may_decide(
        c: &Ctx,
        row: &RequestRow,
        req: &RestoreRequest,
    ) -> Result<bool, AppError> {
        if row.requested_by == c.user.id || c.user.role == Role::Auditor {
            return Ok(false);
        }
        if c.can(Perm::RunJobs) {
            return Ok(true);
        }
        if req.mode != "create" {
            return Ok(false);
        }
        for sid in row.source_id.iter().chain([&row.dest_source_id]) {
            if !store::is_approver(&c.state.db, *sid, c.user.id)
                .await
                .or_internal("checking an approver")?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The request if the caller may see it: everyone who sees everything; others their
    /// own and those on sources they may approve.
    pub async fn visible(c: &Ctx, id: i64) -> Result<RequestRow, AppError> {
        let row = rq::get(&c.state.db, id)
            .await
            .or_internal("loading a request")?
            .ok_or_else(|| AppError::NotFound("Request".into()))?;
        if c.can(Perm::SeeAll) || row.requested_by == c.user.id {
            return Ok(row);
        }
        let sources: Vec<i64> = row
            .source_id
            .into_iter()
            .chain([row.dest_source_id])
            .collect();
        for sid in sources {
            if store::is_approver(&c.state.db, sid, c.user.id)
                .await
                .or_internal("checking an approver")?
            {
                return Ok(row);
            }
        }
        Err(AppError::NotFound("Request".into()))
    }

    /// A request the caller filed (others' are refused).
    pub async fn own(c: &Ctx, id: i64) -> Result<RequestRow, AppError> {
        let row = visible(c, id).await?;
        if row.requested_by != c.user.id {
            return Err(AppError::Forbidden);
        }
        Ok(row)
    }

    /// The refusal of an action on a request that is past waiting.
    /// A request already decided (a conflict with its state, 409).
    pub fn no_longer(row: &RequestRow, what: &str) -> AppError {
        AppError::conflict(format!(
            "This request is {}: it can no longer be {what}.",
            row.state
        ))
    }

    /// Whether the caller may decide any request at all: admins and operators, and
    /// users made approvers of some source; never auditors.
    pub async fn may_decide_some(c: &Ctx) -> Result<bool, AppError> {
        if c.user.role == Role::Auditor {
            return Ok(false);
        }
        if c.can(Perm::RunJobs) {
            return Ok(true);
        }
        Ok(store::approvers(&c.state.db)
            .await
            .or_internal("approvers")?
            .iter()
            .any(|(_, u)| *u == c.user.id))
    }

    pub async fn names(c: &Ctx) -> Result<store::Names, AppError> {
        store::names(&c.state.db).await.or_internal("names")
    }

    /// `names`: from [`names`], loaded once per call however many requests are shown.
    pub async fn view(
        c: &Ctx,
        row: RequestRow,
        names: &store::Names,
        approvers: Vec<String>,
    ) -> Result<RequestView, AppError> {
        let req: RestoreRequest = serde_json::from_str(&row.params).or_internal("request json")?;
        // Approve is offered once per person and version: not again after approving.
        let can_approve = row.state == RequestState::Requested
            && !approvers.contains(&c.user.username)
            && may_decide(c, &row, &req).await?;
        let result: Option<serde_json::Value> = row
            .job_result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        let restored = result
            .as_ref()
            .and_then(|r| r["tables"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| Some((t["table"].as_str()?.to_string(), t["rows"].as_u64()?)))
            .collect();
        let safety_snapshot = result
            .as_ref()
            .and_then(|r| r["safety_snapshot"].as_str().map(str::to_string));
        Ok(RequestView {
            id: row.id,
            can_change: row.state == RequestState::Requested && row.requested_by == c.user.id,
            can_approve,
            state: row.state,
            title: row.title,
            reason: row.reason,
            requester: row.requester.unwrap_or_default(),
            source: row
                .source_id
                .and_then(|s| names.sources.get(&s).cloned())
                .unwrap_or_default(),
            dest: names
                .sources
                .get(&row.dest_source_id)
                .cloned()
                .unwrap_or_default(),
            request: req,
            version: row.version_hash,
            approvals: row.approvals,
            approvals_required: row.approvals_required,
            approvers,
            created_at: row.created_at,
            updated_at: row.updated_at,
            expires_at: row.expires_at,
            decided_by: row.decider,
            reject_reason: row.reject_reason,
            job_id: row.job_id,
            restored,
            safety_snapshot,
            error: row.job_error,
        })
    }

    /// Queues the notification of `event` about request `id` as it is now.
    pub async fn announce(c: &Ctx, event: &str, id: i64) {
        match rq::get(&c.state.db, id).await {
            Ok(Some(row)) => {
                crate::ssr::notify::events::request(&c.state, event, &row, &c.user.username).await
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "loading a request to announce it")
            }
        }
    }

    /// Queues the restore of a fully approved request (once, whoever gets here first).
    pub async fn start(
        c: &Ctx,
        row: &RequestRow,
        planned: &Planned,
        req: &RestoreRequest,
    ) -> Result<Option<i64>, AppError> {
        let job = planned.job(req, row.requested_by)?;
        let started = rq::start(&c.state.db, row.id, &row.version_hash, c.user.id, job)
            .await
            .or_internal("starting a request")?;
        if let Some(job) = started {
            c.state.jobs_queued.notify_waiters();
            c.audit(
                "request.start",
                &target(row.id),
                Outcome::Ok,
                &format!("job #{job}"),
            )
            .await;
            announce(c, "restore.approved", row.id).await;
        }
        Ok(started)
    }

    /// Whether `row` (a waiting request) waits for the caller: they may decide it and
    /// have not approved its current version yet.
    /// `approvers`: those of its current version.
    pub async fn waits_for(
        c: &Ctx,
        row: &RequestRow,
        approvers: &[String],
    ) -> Result<bool, AppError> {
        let req: RestoreRequest = serde_json::from_str(&row.params).or_internal("request json")?;
        if !may_decide(c, row, &req).await? {
            return Ok(false);
        }
        Ok(!approvers.contains(&c.user.username))
    }
}

/// How many restore requests wait for the caller's decision: waiting (not expired),
/// not their own, within their rights (see `may_decide`) and not approved by them yet.
/// The navigation's badge and the dashboard show it. Whoever may approve nothing gets
/// 0, whatever waits: the count says nothing about requests they may not decide. It
/// looks at the 200 newest waiting requests only: it runs on every page change, and a
/// flood of requests must not slow every approver's navigation (the Requests page
/// lists them all).
#[server(endpoint = "requests/pending_for_me")]
pub async fn pending_for_me() -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authenticate().await?;
    if !server::may_decide_some(&c).await? {
        return Ok(0);
    }
    const NEWEST: i64 = 200;
    let visible = if c.can(Perm::SeeAll) {
        rq::Visible::All
    } else {
        rq::Visible::For(c.user.id)
    };
    let rows = rq::page(
        &c.state.db,
        visible,
        None,
        Some(RequestState::Requested.as_str()),
        None,
        NEWEST,
    )
    .await
    .or_internal("listing waiting requests")?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let approvers = rq::approvers_of(&c.state.db, &ids)
        .await
        .or_internal("approvers")?;
    let mut count = 0;
    for row in &rows {
        let none = Vec::new();
        let approvers = approvers.get(&row.id).unwrap_or(&none);
        if server::waits_for(&c, row, approvers).await? {
            count += 1;
        }
    }
    Ok(count)
}

/// Files a restore request; returns its id. When nothing needs approving, it starts at
/// once (its job is on the request).
#[server(endpoint = "requests/file", input = server_fn::codec::Json)]
pub async fn file_request(req: RestoreRequest, reason: String) -> Result<i64, AppError> {
    use crate::api::history::plan_restore;

    use crate::auth::Perm;
    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authorize(Perm::RestoreNew, "request.file").await?;
    let filed: Result<_, AppError> = async {
        let reason = server::reason("reason", &reason)?;
        let planned = plan_restore(&c, &req, true, false).await?;
        planned.check_confirmed(&req)?;
        let required = planned.approvals_required(&c);
        let params = server::params(&req)?;
        let id = rq::insert(
            &c.state.db,
            rq::NewRequest {
                source_id: planned.source.as_ref().map(|s| s.id),
                dest_source_id: req.dest_source_id,
                snapshot: req.snapshot,
                params: &params,
                reason: &reason,
                title: &planned.title(),
                approvals_required: required,
                requested_by: c.user.id,
                ttl_minutes: planned.ttl_minutes(),
            },
        )
        .await
        .or_internal("filing a request")?;
        Ok((id, planned, required))
    }
    .await;
    let (id, planned, required) = match filed {
        Ok(x) => x,
        Err(e) => {
            c.audit(
                "request.file",
                &format!("snapshot #{}", req.snapshot),
                Outcome::Failed,
                &e.to_string(),
            )
            .await;
            return Err(e);
        }
    };
    c.audit(
        "request.file",
        &server::target(id),
        Outcome::Ok,
        &format!(
            "{}; needs {required} approval(s); reason: {}",
            planned.title(),
            reason.trim()
        ),
    )
    .await;
    server::announce(&c, "restore.requested", id).await;
    if required == 0 {
        let row = server::visible(&c, id).await?;
        server::start(&c, &row, &planned, &req).await?;
    }
    Ok(id)
}

/// Requests newest first; `state` one of [`RequestState`]'s words or empty; `mine`: only those the
/// caller filed.
#[server(endpoint = "requests/list")]
pub async fn list_requests(
    state: String,
    mine: bool,
    before: Option<i64>,
) -> Result<Vec<RequestView>, AppError> {
    use crate::api::PAGE;
    use crate::auth::Perm;
    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "request.list").await?;
    let state = state.trim();
    if !state.is_empty() && RequestState::parse(state).is_none() {
        return Err(AppError::Field("state".into(), "Unknown state.".into()));
    }
    let visible = if c.can(Perm::SeeAll) {
        rq::Visible::All
    } else {
        rq::Visible::For(c.user.id)
    };
    let rows = rq::page(
        &c.state.db,
        visible,
        before,
        (!state.is_empty()).then_some(state),
        mine.then_some(c.user.id),
        PAGE,
    )
    .await
    .or_internal("listing requests")?;
    let names = server::names(&c).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut approvers = rq::approvers_of(&c.state.db, &ids)
        .await
        .or_internal("approvers")?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let who = approvers.remove(&row.id).unwrap_or_default();
        out.push(server::view(&c, row, &names, who).await?);
    }
    Ok(out)
}

#[server(endpoint = "requests/get")]
pub async fn get_request(id: i64) -> Result<RequestDetail, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{audit, ctx, requests as rq};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "request.get").await?;
    let row = server::visible(&c, id).await?;
    let history = audit::for_target(&c.state.db, &server::target(id))
        .await
        .or_internal("a request's history")?
        .into_iter()
        .map(AuditView::from)
        .collect();
    Ok(RequestDetail {
        request: {
            let approvers = rq::approvers(&c.state.db, row.id)
                .await
                .or_internal("approvers")?
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            server::view(&c, row, &server::names(&c).await?, approvers).await?
        },
        history,
    })
}

/// Approves the version `version` of a request; returns the restore job when this was
/// the last approval needed.
#[server(endpoint = "requests/approve")]
pub async fn approve_request(id: i64, version: String) -> Result<Option<i64>, AppError> {
    use crate::api::history::plan_restore;

    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authenticate().await?;
    let denied = |detail: &str| {
        let c = &c;
        let detail = detail.to_string();
        async move {
            c.audit(
                "request.approve",
                &server::target(id),
                Outcome::Denied,
                &detail,
            )
            .await;
            AppError::Forbidden
        }
    };
    // Who can never approve anything is refused before the request is even looked up.
    if !server::may_decide_some(&c).await? {
        return Err(denied(&format!(
            "the {} role may not approve",
            c.user.role.as_str()
        ))
        .await);
    }
    let result = async {
        let row = server::visible(&c, id).await?;
        if row.state != RequestState::Requested {
            return Err(server::no_longer(&row, "approved"));
        }
        if row.requested_by == c.user.id {
            return Err(AppError::Refused(
                "You filed this request: someone else must approve it.".into(),
            ));
        }
        let req: RestoreRequest = serde_json::from_str(&row.params).or_internal("request json")?;
        if !server::may_decide(&c, &row, &req).await? {
            return Err(AppError::Forbidden);
        }
        if row.version_hash != version.trim() {
            return Err(AppError::conflict(
                "The request changed after you opened it: read it again before approving.",
            ));
        }
        // Plan again now: the destination may have changed since it was filed.
        let planned = plan_restore(&c, &req, true, false).await?;
        planned.check_confirmed(&req)?;
        if !rq::approve(&c.state.db, id, c.user.id, &row.version_hash)
            .await
            .or_internal("approving a request")?
        {
            return Err(AppError::conflict(
                "You approved this version already, or it is no longer waiting.",
            ));
        }
        Ok((row, planned, req))
    }
    .await;
    let (row, planned, req) = match result {
        Ok(x) => x,
        Err(e) => {
            let outcome = if matches!(e, AppError::Forbidden | AppError::Refused(_)) {
                Outcome::Denied
            } else {
                Outcome::Failed
            };
            c.audit(
                "request.approve",
                &server::target(id),
                outcome,
                &e.to_string(),
            )
            .await;
            return Err(e);
        }
    };
    c.audit("request.approve", &server::target(id), Outcome::Ok, "")
        .await;
    let now = rq::get(&c.state.db, id)
        .await
        .or_internal("loading a request")?
        .ok_or_else(|| AppError::NotFound("Request".into()))?;
    if now.approvals >= now.approvals_required && now.version_hash == row.version_hash {
        return server::start(&c, &now, &planned, &req).await;
    }
    Ok(None)
}

/// Rejects a waiting request, with a reason for the requester.
#[server(endpoint = "requests/reject")]
pub async fn reject_request(id: i64, reason: String) -> Result<(), AppError> {
    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authenticate().await?;
    if !server::may_decide_some(&c).await? {
        c.audit(
            "request.reject",
            &server::target(id),
            Outcome::Denied,
            "role",
        )
        .await;
        return Err(AppError::Forbidden);
    }
    let result = async {
        let reason = server::reason("reason", &reason)?;
        let row = server::visible(&c, id).await?;
        let req: RestoreRequest = serde_json::from_str(&row.params).or_internal("request json")?;
        if row.requested_by == c.user.id {
            return Err(AppError::Invalid(
                "You filed this request: withdraw it instead.".into(),
            ));
        }
        if !server::may_decide(&c, &row, &req).await? {
            return Err(AppError::Forbidden);
        }
        if !rq::reject(&c.state.db, id, c.user.id, &reason)
            .await
            .or_internal("rejecting a request")?
        {
            return Err(server::no_longer(&row, "rejected"));
        }
        Ok(())
    }
    .await;
    if result.is_ok() {
        server::announce(&c, "restore.rejected", id).await;
    }
    c.audited("request.reject", &server::target(id), result)
        .await
}

/// The requester withdraws a request that has not started.
#[server(endpoint = "requests/cancel")]
pub async fn cancel_request(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authorize(Perm::RestoreNew, "request.cancel").await?;
    let result = async {
        let row = server::own(&c, id).await?;
        if !rq::cancel(&c.state.db, id, c.user.id)
            .await
            .or_internal("withdrawing a request")?
        {
            return Err(server::no_longer(&row, "withdrawn"));
        }
        Ok(())
    }
    .await;
    c.audited("request.cancel", &server::target(id), result)
        .await
}

/// The requester changes a waiting request: a new version, so approvals start over.
#[server(endpoint = "requests/change", input = server_fn::codec::Json)]
pub async fn change_request(id: i64, req: RestoreRequest, reason: String) -> Result<(), AppError> {
    use crate::api::history::plan_restore;

    use crate::auth::Perm;
    use crate::ssr::{ctx, requests as rq};
    let c = ctx::authorize(Perm::RestoreNew, "request.change").await?;
    let result = async {
        let row = server::own(&c, id).await?;
        let reason = server::reason("reason", &reason)?;
        let planned = plan_restore(&c, &req, true, false).await?;
        planned.check_confirmed(&req)?;
        let params = server::params(&req)?;
        let changed = rq::change(
            &c.state.db,
            id,
            c.user.id,
            rq::Change {
                params: &params,
                reason: &reason,
                title: &planned.title(),
                source_id: planned.source.as_ref().map(|s| s.id),
                dest_source_id: req.dest_source_id,
                snapshot: req.snapshot,
                approvals_required: planned.approvals_required(&c).max(row.approvals_required),
                ttl_minutes: planned.ttl_minutes(),
            },
        )
        .await
        .or_internal("changing a request")?;
        if !changed {
            return Err(server::no_longer(&row, "changed"));
        }
        Ok(())
    }
    .await;
    c.audited("request.change", &server::target(id), result)
        .await
}
