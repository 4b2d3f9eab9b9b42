//! Restore requests: the list with filters, and one request with its approvals, its
//! history, (for approvers) Approve and Reject, and (for the requester) Change and
//! Withdraw.

use super::ui::{ErrorLine, PagedListing, When, failed, general_error, id_param, submit_own_form};
use crate::api::history::Outcome;
use crate::api::requests::{
    ApproveRequest, CancelRequest, ChangeRequest, RejectRequest, RequestState, RequestView,
    get_request, list_requests, pending_for_me,
};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

fn state_badge(state: RequestState) -> impl IntoView {
    let class = format!("badge {state}");
    let state = state.as_str();
    view! { <span class=class data-testid="request-state">{state}</span> }
}

fn approvals_text(r: &RequestView) -> String {
    if r.approvals_required == 0 {
        "no approval needed".into()
    } else {
        format!("{} of {} approvals", r.approvals, r.approvals_required)
    }
}

#[component]
pub fn RequestsPage() -> impl IntoView {
    let query = use_query_map();
    let state = move || query.read().get("state").unwrap_or_default();
    let mine = move || query.read().get("mine").is_some_and(|v| v == "on");
    let before = move || {
        query
            .read()
            .get("before")
            .and_then(|v| v.parse::<i64>().ok())
    };
    let list = Resource::new(
        move || (state(), mine(), before()),
        |(s, m, b)| list_requests(s, m, b),
    );
    view! {
        <Title text="Requests"/>
        <h1>"Restore requests"</h1>
        <p class="muted">"File one from the " <a href=crate::base::url("/restores")>"restore wizard"</a>
            ". Sources can require one or two approvals (by someone other than the requester) before a restore runs."</p>
        <form class="filters" method="get" action=crate::base::url("/requests")>
            <label for="state">"State"</label>
            <select id="state" name="state" on:change=submit_own_form>
                <option value="" selected=move || state().is_empty()>"any"</option>
                {RequestState::ALL.iter().map(|s| s.as_str()).map(|s| view! {
                    <option value=s selected=move || state() == s>{s}</option>
                }).collect_view()}
            </select>
            <input type="checkbox" id="mine" name="mine" prop:checked=mine on:change=submit_own_form/>
            <label for="mine">"Only mine"</label>
            <noscript><button type="submit">"Filter"</button></noscript>
        </form>
        <PagedListing items=list empty="No requests." older="Older requests →"
            href=move |r: &RequestView| format!("/requests?state={}&mine={}&before={}", state(), if mine() { "on" } else { "" }, r.id)
            show=move |rows| view! {
                <table class="list" data-testid="requests">
                    <thead><tr><th>"#"</th><th>"Restore"</th><th>"State"</th><th>"Approvals"</th><th>"Requested by"</th><th>"Filed"</th><th>"Reason"</th></tr></thead>
                    <tbody>
                        {rows.into_iter().map(|r| view! {
                            <tr data-testid=format!("request-{}", r.id)>
                                <td data-label="Request"><a href=crate::base::url(&format!("/requests/{}", r.id))>{r.id}</a></td>
                                <td><a href=crate::base::url(&format!("/requests/{}", r.id))>{r.title.clone()}</a></td>
                                <td>{state_badge(r.state)}</td>
                                <td data-label="Approvals">{approvals_text(&r)}</td>
                                <td data-label="Requested by">{r.requester.clone()}</td>
                                <td data-label="Filed"><When ms=r.created_at/></td>
                                <td class="reason" data-label="Reason">{r.reason.clone()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()/>
    }
}

#[component]
pub fn RequestPage() -> impl IntoView {
    let id = id_param();
    let approve = ServerAction::<ApproveRequest>::new();
    let reject = ServerAction::<RejectRequest>::new();
    let cancel = ServerAction::<CancelRequest>::new();
    let change = ServerAction::<ChangeRequest>::new();
    let detail = Resource::new(
        move || {
            (
                id(),
                approve.version().get(),
                reject.version().get(),
                cancel.version().get(),
                change.version().get(),
            )
        },
        |(id, _, _, _, _)| get_request(id),
    );
    // A decision changes what waits for this user: the navigation's count loads again.
    if let Some(super::layout::PendingChanged(changed)) = use_context() {
        Effect::new(move |_| {
            if matches!(approve.value().get(), Some(Ok(_)))
                || matches!(reject.value().get(), Some(Ok(_)))
            {
                changed.update(|n| *n += 1);
            }
        });
    }
    view! {
        <Title text="Restore request"/>
        <p><a href=crate::base::url("/requests")>"← Requests"</a></p>
        <ErrorLine error=general_error(approve)/>
        <ErrorLine error=general_error(reject)/>
        <ErrorLine error=general_error(cancel)/>
        <ErrorLine error=general_error(change)/>
        {move || matches!(approve.value().get(), Some(Ok(_))).then(|| view! {
            <p class="ok" role="status" data-testid="approved">"You approved this request."</p>
        })}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => failed(e),
                    Ok(d) => view! {
                        <RequestSummary r=d.request.clone()/>
                        <Decide r=d.request.clone() approve=approve reject=reject cancel=cancel/>
                        {(d.request.can_change && d.request.state == RequestState::Requested).then(|| view! { <ChangeForm r=d.request.clone() change=change/> })}
                        <h2>"History"</h2>
                        <ol class="log" data-testid="request-history">
                            {d.history.into_iter().map(|h| view! {
                                <li class=if h.outcome == Outcome::Ok.as_str() { "info" } else { "error" }>
                                    <span class="muted"><When ms=h.at/></span>" "
                                    {format!("{} · {} · {}", h.username, h.action, h.outcome)}
                                    {(!h.detail.is_empty()).then(|| format!(" · {}", h.detail))}
                                </li>
                            }).collect_view()}
                        </ol>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn RequestSummary(r: RequestView) -> impl IntoView {
    let req = &r.request;
    let tables = if req.tables.is_empty() {
        "all tables".to_string()
    } else {
        req.tables.join(", ")
    };
    let renames = req
        .rename
        .iter()
        .map(|(a, b)| format!("{a} → {b}"))
        .collect::<Vec<_>>()
        .join(", ");
    view! {
        <h1>{format!("Request {} · {}", r.id, r.title)}</h1>
        <p>{state_badge(r.state)} " · " <span data-testid="request-approvals">{approvals_text(&r)}</span>
            {(!r.approvers.is_empty()).then(|| format!(" (by {})", r.approvers.join(", ")))}</p>
        <dl class="facts">
            <dt>"Requested by"</dt><dd>{r.requester.clone()} " · " <When ms=r.created_at/></dd>
            <dt>"Reason"</dt><dd data-testid="request-reason">{r.reason.clone()}</dd>
            <dt>"From"</dt><dd>{format!("snapshot #{} of {}", req.snapshot, if r.source.is_empty() { "?" } else { &r.source })}</dd>
            <dt>"Tables"</dt><dd>{tables}</dd>
            <dt>"Into"</dt><dd>{format!("{} ({})", r.dest, if req.mode == "replace" { "replacing existing tables" } else { "new tables" })}
                {(!renames.is_empty()).then(|| format!(" · {renames}"))}</dd>
            <dt>"Expires"</dt><dd><When ms=r.expires_at/></dd>
            {r.decided_by.clone().map(|d| view! { <dt>"Decided by"</dt><dd>{d}</dd> })}
            {r.reject_reason.clone().map(|d| view! { <dt>"Rejected because"</dt><dd data-testid="reject-reason">{d}</dd> })}
        </dl>
        {r.job_id.map(|j| view! { <p>"Restore job: " <a href=crate::base::url(&format!("/jobs/{j}")) data-testid="request-job">{format!("job {j}")}</a></p> })}
        {(!r.restored.is_empty()).then(|| view! {
            <h2>"Restored"</h2>
            <ul data-testid="restored">
                {r.restored.iter().map(|(t, n)| view! { <li>{format!("{t}: {n} rows")}</li> }).collect_view()}
            </ul>
        })}
        {r.safety_snapshot.clone().map(|s| view! { <p>"Safety backup of the replaced tables: snapshot " <span class="mono">{super::names::short_id(&s)}</span></p> })}
        {r.error.clone().map(|e| view! { <p class="error" role="alert">{e}</p> })}
    }
    .into_any()
}

/// Approve / Reject for those who may; Withdraw for the requester.
#[component]
fn Decide(
    r: RequestView,
    approve: ServerAction<ApproveRequest>,
    reject: ServerAction<RejectRequest>,
    cancel: ServerAction<CancelRequest>,
) -> impl IntoView {
    let (why, set_why) = signal(String::new());
    let id = r.id;
    let version = r.version.clone();
    view! {
        {r.can_approve.then(|| view! {
            <div class="actions">
                <button data-testid="approve" disabled=move || approve.pending().get()
                    on:click=move |_| { approve.dispatch(ApproveRequest { id, version: version.clone() }); }>"Approve"</button>
            </div>
            <label for="reject-reason">"Reason for rejecting"</label>
            <input id="reject-reason" prop:value=move || why.get() on:input=move |ev| set_why.set(event_target_value(&ev))/>
            <button class="danger" disabled=move || reject.pending().get() || why.get().trim().is_empty()
                on:click=move |_| { reject.dispatch(RejectRequest { id, reason: why.get_untracked() }); }>"Reject"</button>
        })}
        {r.can_change.then(|| view! {
            <div class="actions">
                <button class="secondary" disabled=move || cancel.pending().get()
                    on:click=move |_| { cancel.dispatch(CancelRequest { id }); }>"Withdraw request"</button>
            </div>
        })}
    }
    .into_any()
}

/// The requester changes what a waiting request restores (destination table names) or
/// its reason. Any change sends it back to zero approvals: approvals bind to the version
/// an approver read.
#[component]
fn ChangeForm(r: RequestView, change: ServerAction<ChangeRequest>) -> impl IntoView {
    let id = r.id;
    let req = r.request.clone();
    let reason = RwSignal::new(r.reason.clone());
    let names: Vec<(String, RwSignal<String>)> = req
        .tables
        .iter()
        .map(|t| {
            let dest = req.rename.get(t).cloned().unwrap_or_else(|| t.clone());
            (t.clone(), RwSignal::new(dest))
        })
        .collect();
    let fields = names.clone();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let mut changed = req.clone();
        changed.rename = names
            .iter()
            .filter_map(|(t, n)| {
                let n = n.get_untracked().trim().to_string();
                (!n.is_empty() && &n != t).then(|| (t.clone(), n))
            })
            .collect();
        change.dispatch(ChangeRequest {
            id,
            req: changed,
            reason: reason.get_untracked(),
        });
    };
    view! {
        <details class="card" data-testid="change-request">
            <summary>"Change this request"</summary>
            <p class="muted">"Approvals given so far stop counting: approvers approve the request as it is then."</p>
            <form class="form" aria-label="Change request" on:submit=submit>
                {fields.into_iter().map(|(t, n)| {
                    let fid = format!("dest-{t}");
                    view! {
                        <div class="field">
                            <label for=fid.clone()>{format!("Restore {t} as")}</label>
                            <input id=fid prop:value=move || n.get() on:input=move |ev| n.set(event_target_value(&ev))/>
                        </div>
                    }
                }).collect_view()}
                <div class="field">
                    <label for="change-reason">"Reason"</label>
                    <textarea id="change-reason" rows="3" prop:value=move || reason.get()
                        on:input=move |ev| reason.set(event_target_value(&ev))></textarea>
                </div>
                <button type="submit" disabled=move || change.pending().get()>"Save changes"</button>
            </form>
        </details>
    }
    .into_any()
}

/// For the dashboard: how many restore requests wait for the user's decision, with a
/// link to them (nothing when none, or for who may decide none). Loaded in the browser
/// once the page is up, like the navigation's badge, so the first renders match.
#[component]
pub fn WaitingForYou() -> impl IntoView {
    let pending = RwSignal::new(None::<i64>);
    Effect::new(move |_| {
        leptos::task::spawn_local(async move {
            pending.try_set(pending_for_me().await.ok());
        });
    });
    move || {
        pending.get().filter(|n| *n > 0).map(|n| {
            view! {
                <p class="waiting-for-you" data-testid="waiting-for-you">
                    <a href=crate::base::url("/requests?state=requested")>{format!(
                        "{n} restore request{} wait{} for your approval",
                        if n == 1 { "" } else { "s" },
                        if n == 1 { "s" } else { "" }
                    )}</a>
                </p>
            }
        })
    }
}
