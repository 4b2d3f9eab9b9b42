//! The restore wizard: snapshot → tables (and columns) → destination and names → mode
//! → preview (a dry run on the server) → run, then the job page.

use super::ui::{ErrorLine, failed, general_error};
use crate::api::history::{
    PlannedTableView, PreviewRestore, RestoreRequest, StartRestore, list_snapshots,
    restorable_range,
};
use crate::api::requests::FileRequest;
use crate::api::sources::list_sources;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};
use std::collections::BTreeMap;

#[component]
pub fn RestoresPage() -> impl IntoView {
    let query = use_query_map();
    let preselected = query
        .read_untracked()
        .get("snapshot")
        .and_then(|v| v.parse::<i64>().ok());
    let snapshots = Resource::new(|| (), |_| list_snapshots(0, 0, None));
    let sources = Resource::new(|| (), |_| list_sources());

    let (snapshot, set_snapshot) = signal(preselected);
    let (tables, set_tables) = signal(Vec::<String>::new());
    // Per table: the columns to restore, comma-separated (empty: all).
    let (columns, set_columns) = signal(BTreeMap::<String, String>::new());
    let (dest, set_dest) = signal(None::<i64>);
    let (suffix, set_suffix) = signal("_restored".to_string());
    let (mode, set_mode) = signal("create".to_string());
    let (confirm, set_confirm) = signal(String::new());
    let (safety, set_safety) = signal(true);
    let preview = ServerAction::<PreviewRestore>::new();
    let start = ServerAction::<StartRestore>::new();
    let file = ServerAction::<FileRequest>::new();
    let (reason, set_reason) = signal(String::new());
    // A point in time (UTC, as the input gives it), for sources with captured changes.
    let at = RwSignal::new(String::new());
    // Only rows where… (one condition per line, `restore --where` syntax).
    let conditions = RwSignal::new(String::new());
    let range = Resource::new(
        move || snapshot.get(),
        |id| async move {
            match id {
                Some(id) => restorable_range(id).await,
                None => Ok(None),
            }
        },
    );

    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = start.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(request)) = file.value().get() {
            navigate(&format!("/requests/{request}"), Default::default());
        }
    });
    let w = Wizard {
        snapshots,
        sources,
        snapshot,
        set_snapshot,
        tables,
        set_tables,
        columns,
        set_columns,
        dest,
        set_dest,
        suffix,
        set_suffix,
        mode,
        set_mode,
        confirm,
        set_confirm,
        safety,
        set_safety,
        preview,
        start,
        file,
        reason,
        set_reason,
        at,
        range,
        conditions,
    };
    view! {
        <Title text="Restore"/>
        <h1>"Restore"</h1>
        <ol class="wizard">
            <li><SnapshotStep w=w/></li>
            <li><TablesStep w=w/></li>
            <li><DestinationStep w=w/></li>
            <li><ModeStep w=w/></li>
            <li><RunStep w=w/></li>
        </ol>
    }
}

/// The wizard's state, shared by its steps. Each step is its own component with an
/// erased view (`.into_any()`): one view type for the whole wizard nests too deep for
/// the compiler in the release wasm build (issue 9).
#[derive(Clone, Copy)]
struct Wizard {
    snapshots: Resource<Result<Vec<crate::api::history::SnapshotView>, crate::error::AppError>>,
    sources: Resource<Result<Vec<crate::api::sources::SourceView>, crate::error::AppError>>,
    snapshot: ReadSignal<Option<i64>>,
    set_snapshot: WriteSignal<Option<i64>>,
    tables: ReadSignal<Vec<String>>,
    set_tables: WriteSignal<Vec<String>>,
    columns: ReadSignal<BTreeMap<String, String>>,
    set_columns: WriteSignal<BTreeMap<String, String>>,
    dest: ReadSignal<Option<i64>>,
    set_dest: WriteSignal<Option<i64>>,
    suffix: ReadSignal<String>,
    set_suffix: WriteSignal<String>,
    mode: ReadSignal<String>,
    set_mode: WriteSignal<String>,
    confirm: ReadSignal<String>,
    set_confirm: WriteSignal<String>,
    safety: ReadSignal<bool>,
    set_safety: WriteSignal<bool>,
    preview: ServerAction<PreviewRestore>,
    start: ServerAction<StartRestore>,
    file: ServerAction<FileRequest>,
    reason: ReadSignal<String>,
    set_reason: WriteSignal<String>,
    at: RwSignal<String>,
    range: Resource<Result<Option<(i64, i64)>, crate::error::AppError>>,
    conditions: RwSignal<String>,
}

impl Wizard {
    /// The restore the wizard describes now, once a snapshot is chosen.
    fn request(self) -> Option<RestoreRequest> {
        let snaps = self
            .snapshots
            .get()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let chosen = self.snapshot.get()?;
        let snap = snaps.into_iter().find(|s| s.id == chosen)?;
        let tables = self.tables.get();
        let suffix = self.suffix.get();
        let rename: BTreeMap<String, String> = if suffix.is_empty() {
            BTreeMap::new()
        } else {
            tables
                .iter()
                .map(|t| (t.clone(), format!("{t}{suffix}")))
                .collect()
        };
        Some(RestoreRequest {
            snapshot: chosen,
            dest_source_id: self.dest.get().or(snap.source_id).unwrap_or(0),
            columns: self
                .columns
                .get()
                .into_iter()
                .filter(|(t, _)| tables.contains(t))
                .map(|(t, c)| {
                    (
                        t,
                        c.split(',')
                            .map(|x| x.trim().to_string())
                            .filter(|x| !x.is_empty())
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, c)| !c.is_empty())
                .collect(),
            tables,
            rename,
            mode: self.mode.get(),
            confirm: self.confirm.get(),
            safety_backup: self.safety.get(),
            at_ms: super::ui::parse_utc(&self.at.get()),
            conditions: self
                .conditions
                .get()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

#[component]
fn SnapshotStep(w: Wizard) -> impl IntoView {
    let Wizard {
        snapshots,
        snapshot,
        set_snapshot,
        set_tables,
        preview,
        ..
    } = w;
    view! {
        <h2>"1. Snapshot"</h2>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match snapshots.await {
                    Err(e) => failed(e),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No snapshots yet: run a backup first."</p> }.into_any(),
                    Ok(list) => view! {
                        <label for="snapshot">"Snapshot"</label>
                        <select id="snapshot" on:change=move |ev| {
                            set_snapshot.set(event_target_value(&ev).parse().ok());
                            set_tables.set(Vec::new());
                            w.at.set(String::new());
                            preview.clear();
                        }>
                            <option value="">"Choose a snapshot"</option>
                            {list.into_iter().map(|s| {
                                let label = format!("{} · {} · {} · {} tables", super::names::snapshot_label(&s.snapshot_id, s.time_ms), s.source, super::names::object_name("policy", &s.policy, s.policy_id), s.tables);
                                view! { <option value=s.id.to_string() selected=move || snapshot.get() == Some(s.id)>{label}</option> }
                            }).collect_view()}
                        </select>
                    }.into_any(),
                }
            })}
        </Suspense>
        <PointInTime w=w/>
    }
    .into_any()
}

/// For a source with captured changes: restore it as it was at an instant instead of
/// the snapshot (the server picks the latest snapshot before it and replays the rest).
#[component]
fn PointInTime(w: Wizard) -> impl IntoView {
    let Wizard {
        range, at, preview, ..
    } = w;
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match range.await {
                    Ok(Some((from, to))) => view! {
                        <div class="field" data-testid="point-in-time">
                            <p class="muted" data-testid="restorable-range">{format!(
                                "Changes are captured: this source can be restored to any instant from {} to {}.",
                                super::ui::time(from), super::ui::time(to))}</p>
                            <label for="at">"Point in time (UTC; empty: the snapshot itself)"</label>
                            <input id="at" type="datetime-local" step="1" prop:value=move || at.get()
                                on:input=move |ev| { at.set(event_target_value(&ev)); preview.clear(); }/>
                        </div>
                    }.into_any(),
                    _ => ().into_any(),
                }
            })}
        </Transition>
    }
    .into_any()
}

#[component]
fn TablesStep(w: Wizard) -> impl IntoView {
    let Wizard {
        snapshots,
        snapshot,
        ..
    } = w;
    // Inside a Transition: the snapshot list is a resource, and reading it outside one
    // renders "choose a snapshot" on the server but the tables in the browser when the
    // page is opened with ?snapshot=N — a hydration mismatch that panicked the wasm.
    view! {
        <h2>"2. Tables"</h2>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let id = snapshot.get();
                Suspend::new(async move {
                    let snaps = snapshots.await.ok().unwrap_or_default();
                    match id.and_then(|id| snaps.into_iter().find(|s| s.id == id)) {
                        None => view! { <p class="muted">"Choose a snapshot first."</p> }.into_any(),
                        Some(s) => view! {
                            <fieldset data-testid="restore-tables">
                                <legend>"Tables to restore"</legend>
                                {s.details.into_iter().map(|t| view! { <TableChoice name=t.name rows=t.rows w=w/> }).collect_view()}
                            </fieldset>
                        }.into_any(),
                    }
                })
            }}
        </Transition>
    }
    .into_any()
}

/// One table of the snapshot: a checkbox, and when chosen, which of its columns.
#[component]
fn TableChoice(name: String, rows: u64, w: Wizard) -> impl IntoView {
    let Wizard {
        tables,
        set_tables,
        set_columns,
        preview,
        ..
    } = w;
    let id = format!("t-{name}");
    let cid = format!("c-{name}");
    let label = format!("{name} ({rows} rows)");
    let columns_label =
        format!("Columns of {name} (comma-separated; empty: all; the key always comes along)");
    let name = StoredValue::new(name);
    view! {
        <div class="check">
            <input type="checkbox" id=id.clone()
                prop:checked=move || tables.get().contains(&name.get_value())
                on:change=move |ev| {
                    let on = event_target_checked(&ev);
                    let name = name.get_value();
                    set_tables.update(|ts| {
                        ts.retain(|x| x != &name);
                        if on { ts.push(name.clone()); }
                    });
                    preview.clear();
                }/>
            <label for=id>{label}</label>
        </div>
        <Show when=move || tables.get().contains(&name.get_value())>
            <div class="field indent">
                <label for=cid.clone()>{columns_label.clone()}</label>
                <input id=cid.clone() on:input=move |ev| {
                    let v = event_target_value(&ev);
                    set_columns.update(|m| { m.insert(name.get_value(), v); });
                    preview.clear();
                }/>
            </div>
        </Show>
    }
    .into_any()
}

#[component]
fn DestinationStep(w: Wizard) -> impl IntoView {
    let Wizard {
        sources,
        set_dest,
        suffix,
        set_suffix,
        preview,
        ..
    } = w;
    view! {
        <h2>"3. Destination"</h2>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let list = sources.await.unwrap_or_default();
                view! {
                    <label for="dest">"Restore into"</label>
                    <select id="dest" on:change=move |ev| { set_dest.set(event_target_value(&ev).parse().ok()); preview.clear(); }>
                        <option value="">"the snapshot's own source"</option>
                        {list.into_iter().map(|s| view! { <option value=s.id.to_string()>{s.name}</option> }).collect_view()}
                    </select>
                }
                .into_any()
            })}
        </Suspense>
        <label for="suffix">"New table names: add this suffix (empty: keep the names)"</label>
        <input id="suffix" prop:value=move || suffix.get() aria-describedby="error-suffix"
            on:input=move |ev| { set_suffix.set(event_target_value(&ev)); preview.clear(); }/>
        // The same rule the server applies to every new table name.
        <p class="error" id="error-suffix" data-testid="error-suffix">{move || {
            let s = suffix.get();
            (!s.is_empty())
                .then(|| tablesafe_types::check_new_table_name(&format!("t{s}")).err())
                .flatten()
                .map(|_| "The suffix may use letters, digits and _ only (and names stay within 63 characters).".to_string())
        }}</p>
    }
    .into_any()
}

#[component]
fn ModeStep(w: Wizard) -> impl IntoView {
    let Wizard {
        mode,
        set_mode,
        confirm,
        set_confirm,
        safety,
        set_safety,
        preview,
        conditions,
        ..
    } = w;
    let radio = move |value: &'static str, label: &'static str| {
        let id = format!("mode-{value}");
        view! {
            <div class="check">
                <input type="radio" id=id.clone() name="mode" prop:checked=move || mode.get() == value
                    on:change=move |_| { set_mode.set(value.into()); preview.clear(); }/>
                <label for=id>{label}</label>
            </div>
        }
    };
    view! {
        <h2>"4. Mode"</h2>
        {radio("create", "Create new tables (fails if a table exists)")}
        {radio("replace", "Replace existing tables (drops them first)")}
        {radio("upsert", "Upsert into existing tables: rows with the same key are overwritten, missing rows inserted")}
        {radio("skip-existing", "Add missing rows to existing tables: rows whose key exists are left as they are")}
        {radio("replace-rows", "Replace rows in existing tables: the rows restored (all, or those matching the conditions below) become the backup's, extra rows there are deleted")}
        <label for="conditions">"Only rows where (optional; one condition per line, e.g. id >= 1000, region = EU, note is null)"</label>
        <textarea id="conditions" prop:value=move || conditions.get()
            on:input=move |ev| { conditions.set(event_target_value(&ev)); preview.clear(); }></textarea>
        <ErrorLine error=super::ui::field_error(preview, "conditions")/>
        <Show when=move || mode.get() != "create">
            <label for="confirm">"Type the names of the tables that will be changed, comma-separated"</label>
            <input id="confirm" prop:value=move || confirm.get() on:input=move |ev| set_confirm.set(event_target_value(&ev))/>
            <div class="check">
                <input type="checkbox" id="safety" prop:checked=move || safety.get()
                    on:change=move |ev| set_safety.set(event_target_checked(&ev))/>
                <label for="safety">"Back up the tables being changed first (recommended)"</label>
            </div>
        </Show>
    }
    .into_any()
}

#[component]
fn RunStep(w: Wizard) -> impl IntoView {
    let Wizard {
        preview,
        start,
        file,
        reason,
        set_reason,
        ..
    } = w;
    let request = move || w.request();
    let plan = move || preview.value().get().and_then(|r| r.ok());
    let needs = move || plan().map(|p| p.approvals_required).unwrap_or(0);
    view! {
        <h2>"5. Preview and run"</h2>
        <button class="secondary" disabled=move || request().is_none_or(|r| r.tables.is_empty()) || preview.pending().get()
            on:click=move |_| { if let Some(req) = request() { preview.dispatch(PreviewRestore { req }); } }>"Preview"</button>
        <ErrorLine error=general_error(preview)/>
        {move || plan().map(|p| view! {
            {preview_table(p.tables)}
            {p.diff_note.map(|n| view! { <p data-testid="plan-diff-note">{n}</p> })}
            <Show when={let o = p.objects.clone(); move || !o.is_empty()}>
                <p data-testid="plan-objects">{format!("Also made: {}.", p.objects)}</p>
            </Show>
            <ul data-testid="plan-objects-left">
                {p.objects_left.into_iter().map(|l| view! { <li>{format!("Not restored: {l}")}</li> }).collect_view()}
            </ul>
        })}
        <Show when=move || plan().is_some() && needs() == 0>
            <button disabled=move || start.pending().get()
                on:click=move |_| { if let Some(req) = request() { start.dispatch(StartRestore { req }); } }>"Run restore"</button>
        </Show>
        <Show when=move || plan().is_some() && needs() != 0>
            <p data-testid="approval-needed">{move || format!(
                "This restore needs {} approval{} by someone other than you before it runs: file a request.",
                needs(), if needs() == 1 { "" } else { "s" })}</p>
            <label for="reason">"Reason (the approvers read it)"</label>
            <textarea id="reason" prop:value=move || reason.get() on:input=move |ev| set_reason.set(event_target_value(&ev))></textarea>
            <ErrorLine error=super::ui::field_error(file, "reason")/>
            <button data-testid="file-request" disabled=move || file.pending().get()
                on:click=move |_| { if let Some(req) = request() { file.dispatch(FileRequest { req, reason: reason.get_untracked() }); } }>"File restore request"</button>
            <ErrorLine error=general_error(file)/>
        </Show>
        <ErrorLine error=Signal::derive(move || start.value().get().and_then(|r| r.err()).map(|e| e.to_string()))/>
    }
    .into_any()
}

fn preview_table(tables: Vec<PlannedTableView>) -> impl IntoView {
    view! {
        <table class="list" data-testid="restore-plan">
            <thead><tr><th>"From"</th><th>"Into"</th><th>"Action"</th><th>"Rows"</th><th>"Bytes"</th></tr></thead>
            <tbody>
                {tables.into_iter().map(|t| {
                    let diff = t.diff_text();
                    view! {
                        <tr>
                            <td>{t.source_table}</td>
                            <td>{t.dest_table}</td>
                            <td>{t.action}</td>
                            <td class="num" data-testid="plan-rows">{diff.unwrap_or_else(|| t.rows.to_string())}</td>
                            <td class="num">{super::ui::bytes(t.bytes as i64)}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}
