use super::ui::{ErrorLine, IfCan, When, bytes, duration, failed, general_error};
use crate::api::history::{Segment, VerifySnapshot, list_snapshots};
use crate::api::jobs::list_policies;
use crate::api::sources::list_sources;
use crate::auth::Perm;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};

#[component]
pub fn BackupsPage() -> impl IntoView {
    let query = use_query_map();
    let num = move |k: &str| query.read().get(k).and_then(|v| v.parse::<i64>().ok());
    let policy = move || num("policy").unwrap_or(0);
    let source = move || num("source").unwrap_or(0);
    let before = move || num("before_time").zip(num("before_id"));
    let verify = ServerAction::<VerifySnapshot>::new();
    let snaps = Resource::new(
        move || (policy(), source(), before()),
        |(p, s, b)| list_snapshots(p, s, b),
    );
    let filters = Resource::new(
        || (),
        |_| async {
            (
                list_policies().await.unwrap_or_default(),
                list_sources().await.unwrap_or_default(),
            )
        },
    );
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = verify.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    view! {
            <Title text="Backups"/>
            <h1>"Backups"</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let (policies, sources) = filters.await;
                    view! {
                        <form class="filters" method="get" action=crate::base::url("/backups") aria-label="Filter backups">
                            <label for="policy">"Policy"</label>
                            <select id="policy" name="policy">
                                <option value="0">"any"</option>
                                {policies.into_iter().map(|p| view! { <option value=p.id.to_string() selected=move || policy() == p.id>{p.name}</option> }).collect_view()}
                            </select>
                            <label for="source">"Source"</label>
                            <select id="source" name="source">
                                <option value="0">"any"</option>
                                {sources.into_iter().map(|s| view! { <option value=s.id.to_string() selected=move || source() == s.id>{s.name}</option> }).collect_view()}
                            </select>
                            <button type="submit" class="secondary">"Filter"</button>
                        </form>
                    }
                })}
            </Suspense>
            <ErrorLine error=general_error(verify)/>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match snaps.await {
                        Err(e) => failed(e),
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No snapshots."</p> }.into_any(),
                        Ok(list) => {
                            let next = list.last().map(|s| (s.time_ms, s.id));
                            let full = list.len() as i64 == crate::api::PAGE;
                            view! {
                                <table class="list" data-testid="snapshots">
                                    <thead><tr><th>"Time"</th><th>"Policy"</th><th>"Source → target"</th><th>"Tables"</th><th>"Rows"</th><th>"Stored"</th><th>"Took"</th><th>"Verified"</th><th></th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|s| {
                                            let id = s.id;
                                            view! {
                                                <tr data-testid=format!("snapshot-{}", super::names::short_id(&s.snapshot_id))>
                                                    <td><When ms=s.time_ms/><br/><span class="mono muted" data-testid="snapshot-short">{super::names::short_id(&s.snapshot_id)}</span></td>
                                                    // A deleted policy's snapshots stay listed, as its.
                                                    <td data-label="Policy">{super::names::object_name("policy", &s.policy, s.policy_id)}</td>
                                                    <td>{format!("{} → {}", s.source, s.target)}
                                                        {s.copy_of.map(|_| view! { <br/><span class="muted">"(a copy)"</span> })}
                                                        {(!s.copies.is_empty()).then(|| view! {
                                                            <ul class="copies" data-testid="copies">
                                                                {s.copies.iter().map(|c| view! {
                                                                    <li data-testid=format!("copy-{}", c.target)>
                                                                        {format!("{}: {}", c.target, if c.complete { "copy complete" } else { "not copied yet" })}
                                                                    </li>
                                                                }).collect_view()}
                                                            </ul>
                                                        })}
                                                    </td>
                                                    <td>
                                                        <details>
                                                            <summary>{s.tables}</summary>
                                                            <ul class="tables">
                                                                {s.details.iter().map(|t| view! {
                                                                    <li>{format!("{}: {} rows, {}{}", t.name, t.rows, bytes(t.bytes as i64),
                                                                        if t.segment == Segment::Delta { " (incremental)" } else { "" })}</li>
                                                                }).collect_view()}
                                                            </ul>
                                                        </details>
                                                    </td>
                                                    <td class="num" data-label="Rows">{s.rows}</td>
                                                    <td class="num" data-label="Stored">{bytes(s.bytes_stored)}</td>
                                                    <td class="num" data-label="Took">{duration(s.duration_ms)}</td>
                                                    <td data-label="Verified" data-testid="verified">{match s.verified_ok {
                                                        None => "not yet".into_any(),
                                                        Some(true) => view! { "ok, " {s.verified_at.map(|t| view! { <When ms=t/> })} }.into_any(),
                                                        Some(false) => "DAMAGED".into_any(),
                                                    }}</td>
                                                    <td class="actions">
                                                        <IfCan perm=Perm::RunJobs>
                                                            <button class="secondary" on:click=move |_| { verify.dispatch(VerifySnapshot { id }); }>"Verify"</button>
                                                        </IfCan>
    <IfCan perm=Perm::RestoreNew>
                                                            <a class="button secondary" href=crate::base::url(&format!("/backups/{id}")) data-testid="browse">"Browse"</a>
                                                        </IfCan>
                                                        <a class="button" href=crate::base::url(&format!("/restores?snapshot={id}"))>"Restore"</a>
                                                    </td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                {(full).then(|| next.map(|(t, i)| view! {
                                    <p><a href=crate::base::url(&format!("/backups?policy={}&source={}&before_time={t}&before_id={i}", policy(), source()))>"Older snapshots →"</a></p>
                                }))}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        }
}
