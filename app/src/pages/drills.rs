//! Restore drills: per policy, when a drill runs and what it checks, Run drill now, and
//! the evidence of past drills (exportable for auditors).

use super::ui::{ErrorLine, Field, IfCan, Listing, When, failed, field_error, general_error};
use crate::api::drills::{
    DeleteDrillPlan, DrillPlanView, DrillView, ProvenView, RunDrill, SaveDrillPlan,
    list_drill_plans, list_drills, proven_restorable,
};
use crate::api::jobs::{PolicyView, list_policies};
use crate::api::sources::{SourceView, list_sources};
use crate::auth::Perm;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

#[component]
pub fn DrillsPage() -> impl IntoView {
    let save = ServerAction::<SaveDrillPlan>::new();
    let remove = ServerAction::<DeleteDrillPlan>::new();
    let run = ServerAction::<RunDrill>::new();
    let editing = RwSignal::new(None::<(PolicyView, Option<DrillPlanView>)>);
    let data = Resource::new(
        move || (save.version().get(), remove.version().get()),
        |_| async {
            let policies = list_policies().await?;
            let plans = list_drill_plans().await?;
            let proven = proven_restorable().await?;
            let sources = list_sources().await?;
            Ok::<_, crate::error::AppError>((policies, plans, proven, sources))
        },
    );
    let drills = Resource::new(move || run.version().get(), |_| list_drills(None));
    Effect::new(move |_| {
        if let Some(Ok(())) = save.value().get() {
            editing.set(None);
        }
    });
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = run.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    view! {
        <Title text="Restore drills"/>
        <h1>"Restore drills"</h1>
        <p class="muted">"A drill restores a policy's latest (or a random) snapshot into a scratch database, reads every table back and compares its rows and checksum with the backup, runs your SQL assertions, drops the scratch copy and keeps the evidence."</p>
        <IfCan perm=Perm::SeeAudit>
            <p><a class="button" href=crate::base::url("/drills.csv") download="tablesafe-drills.csv" data-testid="export-drills">"Export evidence (CSV)"</a></p>
        </IfCan>
        <ErrorLine error=general_error(run)/>
        <ErrorLine error=general_error(remove)/>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => failed(e),
                    Ok((policies, plans, proven, sources)) => plan_table(policies, plans, proven, sources, editing, run, remove),
                }
            })}
        </Suspense>
        {move || editing.get().map(|(p, plan)| view! { <PlanEditor policy=p plan=plan save=save data=data/> })}
        <h2>"Evidence"</h2>
        <Listing items=drills empty="No drill has run yet." show=move |list| {
            evidence_table(list)
        }/>
    }
}

type Data = Resource<
    Result<
        (
            Vec<PolicyView>,
            Vec<DrillPlanView>,
            Vec<ProvenView>,
            Vec<SourceView>,
        ),
        crate::error::AppError,
    >,
>;

fn plan_table(
    policies: Vec<PolicyView>,
    plans: Vec<DrillPlanView>,
    proven: Vec<ProvenView>,
    sources: Vec<SourceView>,
    editing: RwSignal<Option<(PolicyView, Option<DrillPlanView>)>>,
    run: ServerAction<RunDrill>,
    remove: ServerAction<DeleteDrillPlan>,
) -> AnyView {
    if policies.is_empty() {
        return view! { <p class="muted">"Create a " <a href=crate::base::url("/policies")>"policy"</a> " first."</p> }.into_any();
    }
    let rows = policies
        .into_iter()
        .map(|p| {
            let id = p.id;
            let plan = plans.iter().find(|d| d.policy_id == id).cloned();
            let summary = match &plan {
                None => "no drill planned".to_string(),
                Some(d) => {
                    let when = if d.schedule.is_empty() {
                        "on demand".to_string()
                    } else {
                        format!("{} ({})", d.schedule, d.timezone)
                    };
                    let scratch = d
                        .scratch_source_id
                        .and_then(|s| sources.iter().find(|x| x.id == s))
                        .map(|s| format!(", scratch server {}", s.name))
                        .unwrap_or_default();
                    format!(
                        "{when}; the {} snapshot{scratch}; {} assertion(s)",
                        d.pick,
                        d.assertions.len()
                    )
                }
            };
            let next = plan
                .as_ref()
                .and_then(|d| d.next_run.map(|t| (t, d.timezone.clone())))
                .map(|(t, zone)| view! { "next: " <When ms=t zone=zone/> });
            let proof = proven.iter().find(|x| x.policy_id == id).map(|x| {
                let last = view! {
                    "last drill " <When ms=x.last_drill_at/>
                    {if x.last_passed { ": passed" } else { ": FAILED" }}
                };
                let proven = match x.proven_snapshot_time {
                    Some(t) => view! { "proven restorable: snapshot of " <When ms=t/> }.into_any(),
                    None => "never proven restorable".into_any(),
                };
                (x.last_passed, last, proven)
            });
            let this = StoredValue::new((p.clone(), plan.clone()));
            let has_plan = plan.is_some();
            view! {
                <tr data-testid=format!("drill-{}", p.name)>
                    <td>{p.name.clone()}</td>
                    <td data-label="Drill" data-testid="drill-plan">{summary}{next.map(|n| view! { <br/><span class="muted">{n}</span> })}</td>
                    <td data-label="Last proven restorable" data-testid="drill-proof">{match proof {
                        None => view! { <span class="muted">"not drilled yet"</span> }.into_any(),
                        Some((ok, last, proven)) => view! {
                            <span class={if ok { "" } else { "error" }}>{last}</span><br/><span>{proven}</span>
                        }.into_any(),
                    }}</td>
                    <td>
                        <IfCan perm=Perm::RunJobs>
                            <button disabled=move || run.pending().get()
                                on:click=move |_| { run.dispatch(RunDrill { policy_id: id }); }>"Run drill now"</button>
                        </IfCan>
                        <IfCan perm=Perm::Configure>
                            <button class="secondary" on:click=move |_| editing.set(Some(this.get_value()))>
                                {if has_plan { "Change drill" } else { "Set up drill" }}
                            </button>
                            {has_plan.then(|| view! {
                                <button class="secondary" on:click=move |_| {
                                    // What goes and what stays, before anything goes.
                                    if window().confirm_with_message(&format!(
                                        "Remove the restore drill of {}? Its schedule and assertions go; past drill reports and the last proof stay.",
                                        this.with_value(|(p, _)| p.name.clone())
                                    )).unwrap_or(false) {
                                        remove.dispatch(DeleteDrillPlan { policy_id: id });
                                    }
                                }>"Remove drill"</button>
                            })}
                        </IfCan>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="list" data-testid="drill-plans">
            <thead><tr><th>"Policy"</th><th>"Drill"</th><th>"Last proven restorable"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

#[component]
fn PlanEditor(
    policy: PolicyView,
    plan: Option<DrillPlanView>,
    save: ServerAction<SaveDrillPlan>,
    data: Data,
) -> impl IntoView {
    let plan = plan.unwrap_or(DrillPlanView {
        policy_id: policy.id,
        schedule: String::new(),
        timezone: policy.timezone.clone(),
        pick: "latest".into(),
        scratch_source_id: None,
        assertions: Vec::new(),
        next_run: None,
    });
    let random = plan.pick == "random";
    let scratch = plan.scratch_source_id;
    view! {
        <h2>{format!("Drill of {}", policy.name)}</h2>
        <ActionForm action=save attr:class="form" attr:aria-label="Drill plan">
            <input type="hidden" name="policy_id" value=policy.id.to_string()/>
            <Field label="Schedule (empty: on demand only)" name="schedule" value=plan.schedule.clone()
                placeholder="daily at 04:00, 0 4 * * 0, every 60 minutes" error=field_error(save, "schedule")/>
            <Field label="Time zone" name="timezone" value=plan.timezone.clone() error=field_error(save, "timezone")/>
            <div class="field">
                <label for="f-pick">"Snapshot"</label>
                <select id="f-pick" name="pick">
                    <option value="latest" selected=!random>"the latest"</option>
                    <option value="random" selected=random>"a random one"</option>
                </select>
                <p class="field-error">{move || field_error(save, "pick").get()}</p>
            </div>
            <div class="field">
                <label for="f-scratch">"Scratch server (PostgreSQL, MySQL: a database is created there and dropped after the drill)"</label>
                <select id="f-scratch" name="scratch_source_id">
                    <option value="">"none (SQLite: a temporary file)"</option>
                    {move || data.get().and_then(|r| r.ok()).map(|(_, _, _, sources)| {
                        sources.into_iter().filter(|s| s.engine != tablesafe_types::Engine::Sqlite).map(|s| view! {
                            <option value=s.id.to_string() selected=Some(s.id) == scratch>{s.name}</option>
                        }).collect_view()
                    })}
                </select>
                <p class="field-error" data-testid="error-scratch">{move || field_error(save, "scratch").get()}</p>
            </div>
            <Field label="SQL assertions, one per line, each returning true" name="assertions" multiline=true
                value=plan.assertions.join("\n") placeholder="SELECT count(*) > 0 FROM orders"
                error=field_error(save, "assertions")/>
            <ErrorLine error=general_error(save)/>
            <button type="submit" disabled=move || save.pending().get()>"Save drill"</button>
        </ActionForm>
    }
    .into_any()
}

fn evidence_table(list: Vec<DrillView>) -> AnyView {
    view! {
        <table class="list" data-testid="drills">
            <thead><tr><th>"Started"</th><th>"Policy"</th><th>"Snapshot"</th><th>"Result"</th><th>"Restore / total"</th><th>"Checks"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|d| {
                    let short = super::names::short_id(&d.snapshot_id);
                    let outcome = if d.passed { "passed" } else { "failed" };
                    view! {
                        <tr data-testid=format!("drill-run-{}", d.id)>
                            <td data-label="Started"><When ms=d.started_at/></td>
                            <td>{d.policy.clone()}{d.job_id.map(|j| view! { <br/><a href=crate::base::url(&format!("/jobs/{j}"))>{super::names::job_ref(j)}</a> })}</td>
                            <td><code>{short}</code><br/><span class="muted"><When ms=d.snapshot_time/></span></td>
                            <td class={if d.passed { "" } else { "error" }} data-label="Result" data-testid="drill-outcome">{outcome}</td>
                            <td>{format!("{} / {}", super::ui::duration(d.restore_ms), super::ui::duration(d.duration_ms))}<br/>
                                <span class="muted">{format!("{} tables, {} rows", d.tables, d.rows)}</span></td>
                            <td>
                                <details>
                                    <summary>{format!("{} checks", d.checks.len())}</summary>
                                    <ul>
                                        {d.checks.into_iter().map(|(ok, line)| view! {
                                            <li class={if ok { "" } else { "error" }}>{if ok { "ok " } else { "FAIL " }}{line}</li>
                                        }).collect_view()}
                                    </ul>
                                    {d.error.map(|e| view! { <p class="error">{e}</p> })}
                                    {(!d.cleaned_up).then(|| view! { <p class="error">"the scratch copy could not be removed"</p> })}
                                </details>
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
