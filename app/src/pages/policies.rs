use super::ui::{ErrorLine, Field, IfCan, Listing, When, field_error, general_error};
use crate::api::jobs::{
    CreatePolicy, CreateTrigger, DeletePolicy, PolicyView, PreviewRetention, PrunePolicy,
    RevokeTrigger, RunPolicy, SaveRetention, SetContinuous, SetCopyTargets, SetLateAlert,
    SetPolicyEnabled, UpdatePolicy, list_policies, preview_policy_deletion,
};
use crate::api::sources::{SourceView, TargetView, list_sources, list_targets};
use crate::auth::Perm;
use crate::error::AppError;
use crate::forms;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

/// The policies page. Its parts are separate components whose views are erased
/// (`.into_any()`): one view type for the whole page nests deep enough to overflow the
/// compiler's query depth in the release (non-erased) wasm build (issue 9).
#[component]
pub fn PoliciesPage() -> impl IntoView {
    let create = ServerAction::<CreatePolicy>::new();
    let run = ServerAction::<RunPolicy>::new();
    let trigger = ServerAction::<CreateTrigger>::new();
    let trigger_for = RwSignal::new(0i64);
    let revoke = ServerAction::<RevokeTrigger>::new();
    let save_retention = ServerAction::<SaveRetention>::new();
    let save_copies = ServerAction::<SetCopyTargets>::new();
    let late_alert = ServerAction::<SetLateAlert>::new();
    let continuous = ServerAction::<SetContinuous>::new();
    let update = ServerAction::<UpdatePolicy>::new();
    let toggle = ServerAction::<SetPolicyEnabled>::new();
    let delete = ServerAction::<DeletePolicy>::new();
    let changing = RwSignal::new(None::<PolicyView>);
    let deleting = RwSignal::new(None::<PolicyView>);
    let editing = RwSignal::new(None::<PolicyView>);
    let copies_of = RwSignal::new(None::<PolicyView>);
    let policies = Resource::new(
        move || {
            (
                create.version().get(),
                trigger.version().get(),
                revoke.version().get(),
                save_retention.version().get(),
                save_copies.version().get(),
                late_alert.version().get(),
                continuous.version().get(),
                update.version().get(),
                toggle.version().get(),
                delete.version().get(),
            )
        },
        |_| list_policies(),
    );
    // Created here, not in the form: `IfCan` renders its children inside a `Suspend`,
    // and a resource created there loses the request's context on the server.
    let choices: Choices = Resource::new(
        || (),
        |_| async { (list_sources().await, list_targets().await) },
    );
    // Run now: follow the new job on its page.
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = run.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    let actions = RowActions {
        run,
        trigger,
        trigger_for,
        revoke,
        editing,
        copies_of,
        late_alert,
        continuous,
        toggle,
        changing,
        deleting,
    };
    // What the last change did, in words (the row itself shows the new state).
    let said = RwSignal::new(None::<String>);
    // After a save, what the policy's selection takes from its source now.
    let matched_for = RwSignal::new(None::<i64>);
    Effect::new(move |_| {
        if let Some(Ok(id)) = create.value().get() {
            matched_for.set(Some(id));
            said.set(Some("Policy created.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = update.value().get() {
            matched_for.set(changing.get_untracked().map(|p| p.id));
            changing.set(None);
            said.set(Some("Policy saved.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = toggle.value().get() {
            said.set(Some("Policy updated.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = delete.value().get() {
            let name = deleting.get_untracked().map(|p| p.name).unwrap_or_default();
            deleting.set(None);
            said.set(Some(format!(
                "Policy {name} deleted; its snapshots stay in Backups."
            )));
        }
    });
    view! {
        <Title text="Policies"/>
        <h1>"Policies"</h1>
        <p class="muted">"What to back up, where to, and when: a schedule runs by itself (a run missed while the server was down runs once when it is back), or use Run now."</p>
        <ErrorLine error=general_error(run)/>
        <ErrorLine error=general_error(trigger)/>
        <ErrorLine error=general_error(toggle)/>
        {move || said.get().map(|m| view! { <p class="ok" role="status" data-testid="policy-said">{m}</p> })}
        {move || matched_for.get().map(|id| view! { <SelectionMatches id=id/> })}
        <ErrorLine error=Signal::derive(move || late_alert.value().get().and_then(|r| r.err()).map(|e| e.to_string()))/>
        <ErrorLine error=Signal::derive(move || continuous.value().get().and_then(|r| r.err()).map(|e| e.to_string()))/>
        <NewTrigger trigger=trigger trigger_for=trigger_for/>
        <Listing items=policies empty="No policies yet." show=move |list| {
            view! { <PolicyTable list=list actions=actions/> }.into_any()
        }/>
        {move || changing.get().map(|p| view! { <PolicyEditor policy=p update=update changing=changing/> })}
        {move || deleting.get().map(|p| view! { <DeleteConfirm policy=p delete=delete deleting=deleting/> })}
        {move || editing.get().map(|p| view! { <RetentionEditor policy=p save=save_retention/> })}
        {move || copies_of.get().map(|p| view! { <CopiesEditor policy=p save=save_copies/> })}
        <IfCan perm=Perm::Configure>
            <CreatePolicyForm create=create choices=choices/>
        </IfCan>
    }
}

/// What the buttons of a policy's row do (shared by every row).
#[derive(Clone, Copy)]
struct RowActions {
    run: ServerAction<RunPolicy>,
    trigger: ServerAction<CreateTrigger>,
    trigger_for: RwSignal<i64>,
    revoke: ServerAction<RevokeTrigger>,
    editing: RwSignal<Option<PolicyView>>,
    copies_of: RwSignal<Option<PolicyView>>,
    late_alert: ServerAction<SetLateAlert>,
    continuous: ServerAction<SetContinuous>,
    toggle: ServerAction<SetPolicyEnabled>,
    changing: RwSignal<Option<PolicyView>>,
    deleting: RwSignal<Option<PolicyView>>,
}

/// A new trigger URL: the token exists only in this answer, so it is shown once, with
/// how to use it.
#[component]
fn NewTrigger(trigger: ServerAction<CreateTrigger>, trigger_for: RwSignal<i64>) -> impl IntoView {
    move || {
        let token = trigger.value().get()?.ok()?;
        let id = trigger_for.get();
        // The address the user opened (with the path prefix, if any).
        let origin = window().location().origin().unwrap_or_default() + &crate::base::base();
        Some(view! {
            <div class="card" role="status" data-testid="trigger">
                <p><strong>"Trigger URL created. Copy the token now: it is not shown again."</strong></p>
                <p class="mono" data-testid="trigger-command">{format!("curl -X POST -H 'Authorization: Bearer {token}' {origin}/hooks/policies/{id}/backup")}</p>
            </div>
        }.into_any())
    }
}

#[component]
fn PolicyTable(list: Vec<PolicyView>, actions: RowActions) -> impl IntoView {
    view! {
        <table class="list" data-testid="policies">
            <thead><tr><th>"Name"</th><th>"Source → target"</th><th>"Selection"</th><th>"Schedule"</th><th>"Retention"</th><th></th></tr></thead>
            <tbody>
                {list.into_iter().map(|p| view! { <PolicyRow p=p actions=actions/> }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

/// What a policy backs up, in words.
fn selection_text(p: &PolicyView) -> String {
    if p.include.is_empty() && p.exclude.is_empty() && p.columns.is_empty() {
        return "all tables".to_string();
    }
    let mut parts = Vec::new();
    if !p.include.is_empty() {
        parts.push(format!("include {}", p.include.join(", ")));
    }
    if !p.exclude.is_empty() {
        parts.push(format!("exclude {}", p.exclude.join(", ")));
    }
    for (t, c) in &p.columns {
        parts.push(format!("{t}: {}", c.join(", ")));
    }
    parts.join("; ")
}

#[component]
fn PolicyRow(p: PolicyView, actions: RowActions) -> impl IntoView {
    let RowActions {
        run,
        trigger,
        trigger_for,
        revoke,
        editing,
        copies_of,
        late_alert,
        continuous,
        toggle,
        changing,
        deleting,
    } = actions;
    let id = p.id;
    let selection = selection_text(&p);
    let retention = p.retention.describe();
    let schedule = if p.schedule.is_empty() {
        "on demand".to_string()
    } else {
        format!("{} ({})", p.schedule, p.timezone)
    };
    let copies = (!p.copy_targets.is_empty()).then(|| {
        let names = p.copy_targets.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
        view! { <br/><span class="muted" data-testid="copy-targets">{format!("copies: {}", names.join(", "))}</span> }
    });
    let enabled = p.enabled;
    let next_run = if let Some(why) = p.held.clone().filter(|_| enabled) {
        Some(
            view! { <br/><span class="badge" data-testid="held">{format!("{why}: not backed up")}</span> }
                .into_any(),
        )
    } else if enabled {
        p.next_run.map(|t| {
            view! { <br/><span class="muted" data-testid="next-run">"next: "<When ms=t zone=p.timezone.clone()/></span> }.into_any()
        })
    } else {
        Some(
            view! { <br/><span class="badge" data-testid="paused">"paused: not scheduled"</span> }
                .into_any(),
        )
    };
    let late = late_view(&p, late_alert);
    let capture = continuous_view(&p, continuous);
    let has_trigger = p.has_trigger;
    let this = StoredValue::new(p.clone());
    view! {
        <tr data-testid=format!("policy-{}", p.name)>
            <td>{p.name.clone()}{(!enabled).then(|| view! { " " <span class="badge" data-testid="disabled">"disabled"</span> })}</td>
            <td>{format!("{} → {}", p.source, p.target)}{copies}</td>
            <td data-label="Selection">{selection}</td>
            <td data-label="Schedule">{schedule}{next_run}{late}{capture}</td>
            <td data-label="Retention" data-testid="retention">{retention}</td>
            <td>
                <IfCan perm=Perm::RunJobs>
                    <button disabled=move || run.pending().get()
                        on:click=move |_| { run.dispatch(RunPolicy { id }); }>"Run now"</button>
                </IfCan>
                <IfCan perm=Perm::Configure>
                    <button class="secondary" on:click=move |_| { trigger_for.set(id); trigger.dispatch(CreateTrigger { id }); }>
                        {if has_trigger { "New trigger URL" } else { "Trigger URL" }}
                    </button>
                    {has_trigger.then(|| view! {
                        <button class="secondary" on:click=move |_| { revoke.dispatch(RevokeTrigger { id }); }>"Revoke trigger"</button>
                    })}
                    <button class="secondary" on:click=move |_| editing.set(Some(this.get_value()))>"Retention"</button>
                    <button class="secondary" on:click=move |_| copies_of.set(Some(this.get_value()))>"Copies"</button>
                    <button class="secondary" on:click=move |_| changing.set(Some(this.get_value()))>"Edit"</button>
                    <button class="secondary" disabled=move || toggle.pending().get()
                        on:click=move |_| { toggle.dispatch(SetPolicyEnabled { id, enabled: !enabled }); }>
                        {if enabled { "Disable" } else { "Enable" }}
                    </button>
                    <button class="danger" on:click=move |_| deleting.set(Some(this.get_value()))>"Delete"</button>
                </IfCan>
            </td>
        </tr>
    }
    .into_any()
}

/// Whether the policy is late (no successful backup within its expected interval), and
/// for those who configure, how long that interval is.
fn late_view(p: &PolicyView, action: ServerAction<SetLateAlert>) -> impl IntoView + use<> {
    let id = p.id;
    let status = if p.late {
        let since = match p.last_success {
            Some(t) => view! { "late: no successful backup since " <When ms=t/> }.into_any(),
            None => "late: no successful backup yet".into_any(),
        };
        view! { <br/><span class="badge failed" data-testid="late">{since}</span> }.into_any()
    } else {
        ().into_any()
    };
    let rule = match (p.rpo_minutes, p.late_after_minutes) {
        (Some(0), _) => "late alert off".to_string(),
        (_, Some(m)) => format!("late after {m} min without a success"),
        (_, None) => "no late alert (no schedule)".to_string(),
    };
    view! {
        {status}
        <br/><span class="muted" data-testid="late-rule">{rule}</span>
        {number_setting(
            "Late alert",
            "Minutes without a successful backup (empty: from the schedule; 0: off)",
            format!("rpo-{}", p.name),
            (0, None),
            p.rpo_minutes,
            move |minutes| { action.dispatch(SetLateAlert { id, minutes }); },
        )}
    }
}

/// A number a policy can be given (empty: none) in a folded section, for those who
/// configure; `set` runs when the field holds a number or nothing.
fn number_setting(
    summary: &'static str,
    label: &'static str,
    input_id: String,
    (min, max): (i64, Option<i64>),
    value: Option<i64>,
    set: impl Fn(Option<i64>) + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let value = value.map(|v| v.to_string()).unwrap_or_default();
    view! {
        <IfCan perm=Perm::Configure>
            <details>
                <summary>{summary}</summary>
                <label for=input_id.clone()>{label}</label>
                <input id=input_id.clone() data-testid=input_id.clone() type="number" min=min max=max class="narrow" value=value.clone()
                    on:change={
                        let set = set.clone();
                        move |ev| {
                            let v = event_target_value(&ev);
                            let n = v.trim().parse::<i64>().ok();
                            if v.trim().is_empty() || n.is_some() {
                                set(n);
                            }
                        }
                    }/>
            </details>
        </IfCan>
    }
}

/// Continuous capture (PostgreSQL changes, SQLite rounds): how often, how far the restorable range reaches,
/// and for those who configure, on/off.
fn continuous_view(p: &PolicyView, action: ServerAction<SetContinuous>) -> impl IntoView + use<> {
    let id = p.id;
    let state = match (p.capture_secs, p.restorable_to, &p.capture_error) {
        (None, _, _) => "snapshots only".to_string(),
        (Some(s), _, Some(e)) => format!("continuous every {s} s — last round failed: {e}"),
        (Some(s), Some(_), None) => format!("continuous every {s} s — restorable to "),
        (Some(s), None, None) => format!("continuous every {s} s — starting"),
    };
    let to = p
        .restorable_to
        .filter(|_| p.capture_secs.is_some() && p.capture_error.is_none());
    view! {
        <br/><span class="muted" data-testid="continuous">{state}{to.map(|t| view! { <When ms=t/> })}</span>
        {number_setting(
            "Continuous capture",
            "Capture every N seconds for point-in-time restore (PostgreSQL: committed changes; SQLite: a snapshot each round the database changed; empty: off)",
            format!("capture-{}", p.name),
            (1, Some(3600)),
            p.capture_secs,
            move |secs| { action.dispatch(SetContinuous { id, secs }); },
        )}
    }
}

/// The sources and targets a new policy can use.
type Choices = Resource<(
    Result<Vec<SourceView>, AppError>,
    Result<Vec<TargetView>, AppError>,
)>;

#[component]
fn CreatePolicyForm(create: ServerAction<CreatePolicy>, choices: Choices) -> impl IntoView {
    // Created: the form empties (the page says what was made and what it takes).
    let form = NodeRef::<leptos::html::Form>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = create.value().get()
            && let Some(f) = form.get_untracked()
        {
            f.reset();
        }
    });
    view! {
        <h2>"Create a policy"</h2>
        <ActionForm action=create node_ref=form attr:class="form" attr:aria-label="Create a policy">
            <Field label="Name" name="name" error=field_error(create, "name") check=|v| forms::name("name", v).map(|_| ())/>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let (sources, targets) = choices.await;
                    view! {
                        <div class="field">
                            <label for="f-source_id">"Source"</label>
                            <select id="f-source_id" name="source_id">
                                {sources.unwrap_or_default().into_iter().map(|s| view! { <option value=s.id.to_string()>{s.name}</option> }).collect_view()}
                            </select>
                            <p class="field-error">{move || field_error(create, "source_id").get()}</p>
                        </div>
                        <div class="field">
                            <label for="f-target_id">"Target"</label>
                            <select id="f-target_id" name="target_id">
                                {targets.unwrap_or_default().into_iter().map(|t| view! { <option value=t.id.to_string()>{t.name}</option> }).collect_view()}
                            </select>
                            <p class="field-error">{move || field_error(create, "target_id").get()}</p>
                        </div>
                    }
                    .into_any()
                })}
            </Suspense>
            <Field label="Include tables (globs, one per line; empty: all)" name="include" multiline=true
                error=field_error(create, "include") check=|v| forms::globs("include", v).map(|_| ())/>
            <Field label="Exclude tables" name="exclude" multiline=true
                error=field_error(create, "exclude") check=|v| forms::globs("exclude", v).map(|_| ())/>
            <Field label="Only some columns (table=col1,col2 per line)" name="columns" multiline=true
                error=field_error(create, "columns") check=|v| forms::columns(v).map(|_| ())/>
            <Field label="Schedule" name="schedule" placeholder="0 2 * * *, hourly, daily at 02:30, every 15 minutes"
                error=field_error(create, "schedule") check=|v| forms::schedule(v).map(|_| ())/>
            <Field label="Time zone" name="timezone" value="UTC"
                error=field_error(create, "timezone") check=|v| forms::timezone(v).map(|_| ())/>
            <div class="field check">
                <input id="f-enabled" type="checkbox" name="enabled" value="on" checked/>
                <label for="f-enabled">"Enabled"</label>
            </div>
            <ErrorLine error=general_error(create)/>
            <button type="submit" disabled=move || create.pending().get()>"Create policy"</button>
        </ActionForm>
    }
    .into_any()
}

/// What a saved policy's selection takes from its source now (or why that could not be
/// read: the source may be down; the backup checks again when it runs).
#[component]
fn SelectionMatches(id: i64) -> impl IntoView {
    let found = Resource::new(move || id, crate::api::selection::policy_matches);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Reading the source's tables…"</p> }>
            {move || Suspend::new(async move {
                match found.await {
                    Ok(m) => view! { <p class="ok" role="status" data-testid="policy-matches">{m.describe()}</p> }.into_any(),
                    Err(e) => view! {
                        <p class="error" role="alert" data-testid="policy-matches">
                            {format!("Saved, but what it takes could not be checked now: {e}")}
                        </p>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
    .into_any()
}

/// Retention rules of one policy: edit, preview per snapshot (kept or removed, and by
/// which rule: the function prune runs), save, apply now.
#[component]
fn RetentionEditor(policy: PolicyView, save: ServerAction<SaveRetention>) -> impl IntoView {
    // Snapshot times in the zone whose days, weeks… the rules count.
    let zone = policy.timezone.clone();
    let preview = ServerAction::<PreviewRetention>::new();
    let prune = ServerAction::<PrunePolicy>::new();
    let r = policy.retention;
    let id = policy.id;
    let num = |n: u32| if n == 0 { String::new() } else { n.to_string() };
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = prune.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    let fields: [(&'static str, &'static str, String); 7] = [
        ("Keep the last N snapshots", "last", num(r.last)),
        (
            "Hourly: the newest of each of the last N hours",
            "hourly",
            num(r.hourly),
        ),
        ("Daily: … of the last N days", "daily", num(r.daily)),
        ("Weekly: … of the last N weeks", "weekly", num(r.weekly)),
        ("Monthly: … of the last N months", "monthly", num(r.monthly)),
        ("Yearly: … of the last N years", "yearly", num(r.yearly)),
        ("Floor: never remove the newest N", "floor", num(r.floor)),
    ];
    view! {
        <section class="card" data-testid="retention-editor" aria-label="Retention">
            <h2>{format!("Retention of {}", policy.name)}</h2>
            <p class="muted">{format!(
                "Now: {}. Periods count only those that have a snapshot, in {}; a snapshot is kept if any rule keeps it. \
                 Retention applies after each backup of this policy, to the snapshots it made.",
                r.describe(), policy.timezone
            )}</p>
            <ActionForm action=preview attr:class="form grid" attr:aria-label="Retention rules">
                <input type="hidden" name="id" value=id.to_string()/>
                {fields.into_iter().map(|(label, name, value)| view! {
                    <Field label=label name=name kind="number" value=value error=field_error(preview, name)/>
                }).collect_view()}
                <ErrorLine error=general_error(preview)/>
                <button type="submit" disabled=move || preview.pending().get()>"Preview"</button>
            </ActionForm>
            {move || preview.value().get().and_then(|r| r.ok()).map(|pv| {
                let rules = pv.rules;
                let removed = pv.rows.iter().filter(|r| !r.keep).count();
                view! {
                    <p data-testid="retention-summary">{format!(
                        "{}: keeps {} of {} snapshots, removes {}.",
                        rules.describe(), pv.rows.len() - removed, pv.rows.len(), removed
                    )}</p>
                    <table class="list" data-testid="retention-preview">
                        <thead><tr><th>"Snapshot"</th><th>"Time"</th><th>"Verdict"</th><th>"Why"</th></tr></thead>
                        <tbody>
                            {pv.rows.into_iter().map(|row| view! {
                                <tr data-testid=format!("verdict-{}", super::names::short_id(&row.snapshot_id))>
                                    <td class="mono">{super::names::short_id(&row.snapshot_id)}</td>
                                    <td><When ms=row.time_ms zone=zone.clone()/></td>
                                    <td>{if row.keep { "kept" } else { "removed" }}</td>
                                    <td>{row.reasons.join(", ")}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <button disabled=move || save.pending().get()
                        on:click=move |_| { save.dispatch(SaveRetention {
                            id, last: rules.last, hourly: rules.hourly, daily: rules.daily,
                            weekly: rules.weekly, monthly: rules.monthly, yearly: rules.yearly,
                            floor: rules.floor,
                        }); }>"Save these rules"</button>
                }
            })}
            {move || save.value().get().map(|r| match r {
                Ok(()) => view! { <p role="status" data-testid="retention-saved">"Saved."</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
            <button class="secondary" disabled=move || prune.pending().get()
                on:click=move |_| { prune.dispatch(PrunePolicy { id }); }>"Apply saved rules now"</button>
            <ErrorLine error=general_error(prune)/>
        </section>
    }
    .into_any()
}

/// Which other targets get a copy of each snapshot of the policy.
#[component]
fn CopiesEditor(policy: PolicyView, save: ServerAction<SetCopyTargets>) -> impl IntoView {
    let targets = Resource::new(|| (), |_| list_targets());
    let chosen = RwSignal::new(
        policy
            .copy_targets
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<i64>>(),
    );
    let id = policy.id;
    let own = policy.target_id;
    view! {
        <section class="card" data-testid="copies-editor" aria-label="Copies">
            <h2>{format!("Copies of {}", policy.name)}</h2>
            <p class="muted">{format!(
                "Each backup is written to {} and then copied to the targets chosen here. A target that is down fails only its copy; the next run catches it up.",
                policy.target
            )}</p>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let list = targets.await.unwrap_or_default();
                    list.into_iter().filter(|t| t.id != own).map(|t| {
                        let tid = t.id;
                        let input_id = format!("copy-{tid}");
                        view! {
                            <div class="field check">
                                <input id=input_id.clone() type="checkbox"
                                    prop:checked=move || chosen.get().contains(&tid)
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        chosen.update(|c| {
                                            c.retain(|x| *x != tid);
                                            if on { c.push(tid); }
                                        });
                                    }/>
                                <label for=input_id>{t.name.clone()}</label>
                            </div>
                        }
                    }).collect_view()
                })}
            </Suspense>
            <button disabled=move || save.pending().get()
                on:click=move |_| { save.dispatch(SetCopyTargets { id, targets: chosen.get() }); }>"Save copies"</button>
            {move || save.value().get().map(|r| match r {
                Ok(()) => view! { <p role="status" data-testid="copies-saved">"Saved."</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </section>
    }
    .into_any()
}

/// One labelled field of the edit form (its own ids: the create form is on the page too).
fn edit_field(
    label: &'static str,
    name: &'static str,
    value: String,
    multiline: bool,
    error: Signal<Option<String>>,
) -> impl IntoView {
    let id = format!("e-{name}");
    let input = if multiline {
        view! { <textarea id=id.clone() name=name rows="3">{value}</textarea> }.into_any()
    } else {
        view! { <input id=id.clone() name=name type="text" value=value/> }.into_any()
    };
    view! {
        <div class="field">
            <label for=id>{label}</label>
            {input}
            <p class="field-error" data-testid=format!("edit-error-{name}")>{move || error.get()}</p>
        </div>
    }
}

/// Changes a policy's name, selection and schedule: the create form's fields and checks
/// (its source and target stay).
#[component]
fn PolicyEditor(
    policy: PolicyView,
    update: ServerAction<UpdatePolicy>,
    changing: RwSignal<Option<PolicyView>>,
) -> impl IntoView {
    let columns = policy
        .columns
        .iter()
        .map(|(t, c)| format!("{t}={}", c.join(",")))
        .collect::<Vec<_>>()
        .join("\n");
    let e = move |name: &'static str| field_error(update, name);
    view! {
        <section class="card" data-testid="policy-editor" aria-label="Edit policy">
            <h2>{format!("Edit {}", policy.name)}</h2>
            <p class="muted">{format!(
                "Backs up {} to {}. The next run is counted again from the new schedule.",
                policy.source, policy.target
            )}</p>
            <ActionForm action=update attr:class="form" attr:aria-label="Edit policy">
                <input type="hidden" name="id" value=policy.id.to_string()/>
                {edit_field("Name", "name", policy.name.clone(), false, e("name"))}
                {edit_field("Include tables (globs, one per line; empty: all)", "include", policy.include.join("\n"), true, e("include"))}
                {edit_field("Exclude tables", "exclude", policy.exclude.join("\n"), true, e("exclude"))}
                {edit_field("Only some columns (table=col1,col2 per line)", "columns", columns, true, e("columns"))}
                {edit_field("Schedule", "schedule", policy.schedule.clone(), false, e("schedule"))}
                {edit_field("Time zone", "timezone", policy.timezone.clone(), false, e("timezone"))}
                <ErrorLine error=general_error(update)/>
                <button type="submit" disabled=move || update.pending().get()>"Save policy"</button>
                " "
                <button type="button" class="secondary" on:click=move |_| changing.set(None)>"Cancel"</button>
            </ActionForm>
        </section>
    }
    .into_any()
}

/// Deleting a policy: what goes with it and what stays, then the deletion.
#[component]
fn DeleteConfirm(
    policy: PolicyView,
    delete: ServerAction<DeletePolicy>,
    deleting: RwSignal<Option<PolicyView>>,
) -> impl IntoView {
    let id = policy.id;
    let plan = Resource::new(move || id, preview_policy_deletion);
    view! {
        <section class="card" data-testid="delete-policy" aria-label="Delete policy">
            <h2>{format!("Delete policy {}?", policy.name)}</h2>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match plan.await {
                        Err(e) => super::ui::failed(e),
                        Ok(d) => {
                            let stays = format!(
                                "Stays: its {} snapshot(s), in the history (Backups, listed as a removed policy's) and in the repository; they can still be restored, verified and pruned by hand.",
                                d.snapshots
                            );
                            let name = d.name.clone();
                            view! {
                                <p>"Goes with it:"</p>
                                <ul data-testid="delete-goes">
                                    {d.goes.into_iter().map(|g| view! { <li>{g}</li> }).collect_view()}
                                </ul>
                                <p data-testid="delete-stays">{stays}</p>
                                {match d.blocked {
                                    Some(why) => view! { <p class="error" role="alert">{why}</p> }.into_any(),
                                    None => view! {
                                        <button class="danger" disabled=move || delete.pending().get()
                                            on:click=move |_| { delete.dispatch(DeletePolicy { id }); }>
                                            {format!("Delete policy {name}")}
                                        </button>
                                    }.into_any(),
                                }}
                            }.into_any()
                        }
                    }
                })}
            </Suspense>
            " "
            <button type="button" class="secondary" on:click=move |_| deleting.set(None)>"Keep it"</button>
            <ErrorLine error=general_error(delete)/>
        </section>
    }
    .into_any()
}
