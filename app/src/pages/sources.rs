use super::ui::{
    ErrorLine, Field, IfCan, Listing, SaveStatus, bytes, failed, field_error, general_error,
    id_param,
};
use crate::api::sources::{
    AddSource, AddTarget, DeleteSource, DeleteTarget, EditSource, EditTarget, SetApprovalRule,
    SetSourcePaused, SetTargetPaused, SourceView, TargetView, TestSource, list_sources,
    list_targets, source_tables,
};
use crate::auth::Perm;
use crate::forms;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn SourcesPage() -> impl IntoView {
    let add = ServerAction::<AddSource>::new();
    let test = ServerAction::<TestSource>::new();
    let edit = ServerAction::<EditSource>::new();
    let delete = ServerAction::<DeleteSource>::new();
    let pause = ServerAction::<SetSourcePaused>::new();
    // What the last Pause/Resume asked (the action's input is gone once it is done).
    let pause_sent = RwSignal::new(false);
    let editing = RwSignal::new(None::<SourceView>);
    let sources = Resource::new(
        move || {
            (
                add.version().get(),
                edit.version().get(),
                delete.version().get(),
                pause.version().get(),
            )
        },
        |_| list_sources(),
    );
    // A saved change closes the form; the last change done is said in words.
    let (said, set_said) = signal(None::<String>);
    Effect::new(move |_| {
        if let Some(Ok(())) = edit.value().get() {
            editing.set(None);
            set_said.set(Some("Source saved.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = delete.value().get() {
            set_said.set(Some("Source deleted.".into()));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = pause.value().get() {
            set_said.set(Some(
                if pause_sent.get_untracked() {
                    "Source paused: its policies are not backed up until you resume it; restores still work."
                } else {
                    "Source resumed: its policies run at their next scheduled time."
                }
                .into(),
            ));
        }
    });
    // A source added: the form empties (its URL may hold a password) and says so.
    let add_form = NodeRef::<leptos::html::Form>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = add.value().get()
            && let Some(f) = add_form.get_untracked()
        {
            let name = input_value(&f, "name");
            set_said.set(Some(format!("Source '{}' added.", name.trim())));
            f.reset();
        }
    });
    let done = move || {
        said.get()
            .map(|m| view! { <p class="ok" role="status" data-testid="source-saved">{m}</p> })
    };
    let test_result = move || {
        test.value().get().map(|r| match r {
            Ok(msg) => view! { <p class="ok" role="status" data-testid="test-result">{msg}</p> }.into_any(),
            Err(e) => view! { <p class="error" role="alert" data-testid="test-result">{e.to_string()}</p> }.into_any(),
        })
    };
    view! {
        <Title text="Sources"/>
        <h1>"Sources"</h1>
        <p class="muted">"The databases tablesafe backs up. Passwords in connection URLs are encrypted at rest and never shown again."</p>
        {test_result}
        {done}
        <ErrorLine error=general_error(delete)/>
        <ErrorLine error=general_error(pause)/>
        <Listing items=sources empty="No sources yet." show=move |list| {
            view! {
                <table class="list" data-testid="sources">
                    <thead><tr><th>"Name"</th><th>"Engine"</th><th>"Connection"</th><th>"Restores need"</th><th></th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|s| {
                            let id = s.id;
                            let whole = s.clone();
                            view! {
                                <tr data-testid=format!("source-{}", s.name)>
                                    <td><a href=crate::base::url(&format!("/sources/{id}"))>{s.name.clone()}</a>
                                        {s.paused.then(|| view! { " " <span class="badge" data-testid="source-paused">"paused"</span> })}</td>
                                    <td data-label="Engine">{s.engine.as_str()}</td>
                                    <td class="mono" data-label="Connection">{s.url.clone()}</td>
                                    <td data-label="Restores need"><ApprovalRule source=s.clone()/></td>
                                    <td>
                                        <IfCan perm=Perm::Configure>
                                            <button class="secondary" disabled=move || test.pending().get()
                                                on:click=move |_| { test.dispatch(TestSource { id }); }>"Test connection"</button>
                                            <button class="secondary" data-testid=format!("edit-source-{}", whole.name) on:click={
                                                let s = whole.clone();
                                                move |_| editing.set(Some(s.clone()))
                                            }>"Edit"</button>
                                            <button class="secondary" on:click={
                                                let paused = !whole.paused;
                                                move |_| { pause_sent.set(paused); pause.dispatch(SetSourcePaused { id, paused }); }
                                            }>{if whole.paused { "Resume" } else { "Pause" }}</button>
                                            <button class="secondary danger" data-testid=format!("delete-source-{}", whole.name) on:click={
                                                let name = whole.name.clone();
                                                move |_| {
                                                    #[cfg(feature = "hydrate")]
                                                    if !window().confirm_with_message(&format!(
                                                        "Delete source {name}? Who may see it and approve its restores goes with it. Its snapshots stay in the history and in the repositories. A source that policies back up cannot be deleted until they are."
                                                    )).unwrap_or(false) {
                                                        return;
                                                    }
                                                    let _ = &name;
                                                    delete.dispatch(DeleteSource { id });
                                                }
                                            }>"Delete"</button>
                                        </IfCan>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }/>
        <IfCan perm=Perm::Configure>
            {move || editing.get().map(|s| view! { <EditSourceForm source=s edit=edit editing=editing/> })}
            <Show when=move || editing.get().is_none()>
            <h2>"Add a source"</h2>
            <ActionForm action=add node_ref=add_form attr:class="form" attr:aria-label="Add a source">
                <Field label="Name" name="name" error=field_error(add, "name") check=|v| forms::name("name", v).map(|_| ())/>
                <Field label="Connection URL" name="url" placeholder="sqlite:///var/lib/app.db or postgres://user:password@host:5432/db"
                    error=field_error(add, "url") check=|v| forms::source_url(v).map(|_| ())/>
                <ErrorLine error=general_error(add)/>
                <button type="submit" disabled=move || add.pending().get()>"Add source"</button>
            </ActionForm>
            </Show>
        </IfCan>
    }
}

/// Changes a source's name and URL. The URL is shown without its password: left out,
/// the stored one is kept while the server, port, database and user stay the same.
#[component]
fn EditSourceForm(
    source: SourceView,
    edit: ServerAction<EditSource>,
    editing: RwSignal<Option<SourceView>>,
) -> impl IntoView {
    let url = source.url.replace(":***@", "@");
    view! {
        <h2>{format!("Change source {}", source.name)}</h2>
        <ActionForm action=edit attr:class="form" attr:aria-label="Change a source">
            <input type="hidden" name="id" value=source.id.to_string()/>
            <Field label="Name" name="name" value=source.name.clone() error=field_error(edit, "name") check=|v| forms::name("name", v).map(|_| ())/>
            <Field label="Connection URL (the password is not shown: leave it out to keep it; it is needed again if the host, port, database or user changes)" name="url" value=url
                error=field_error(edit, "url") check=|v| forms::source_url(v).map(|_| ())/>
            <ErrorLine error=general_error(edit)/>
            <button type="submit" disabled=move || edit.pending().get()>"Save source"</button>
            <button type="button" class="secondary" on:click=move |_| editing.set(None)>"Cancel"</button>
        </ActionForm>
    }
}

/// How many approvals restores of a source need; admins change it here, others read it.
/// Each control saves on change and says so next to it ("Saved", or why not); the list
/// is not reloaded for it, so the panel stays open and shows what is saved.
#[component]
fn ApprovalRule(source: crate::api::sources::SourceView) -> impl IntoView {
    let rule = ServerAction::<SetApprovalRule>::new();
    let id = source.id;
    // What the server holds (approvals, expiry in minutes), and what was last sent.
    let saved = RwSignal::new((source.approvals_required, source.request_ttl_minutes));
    let sent = RwSignal::new(saved.get_untracked());
    Effect::new(move |_| {
        if let Some(Ok(())) = rule.value().get() {
            saved.set(sent.get_untracked());
        }
    });
    // A value the browser cannot send at all (not a number).
    let (local, set_local) = signal(None::<&'static str>);
    let label = |n: i64| match n {
        0 => "no approval",
        1 => "one approval",
        _ => "two approvals (two-person rule)",
    };
    let required = source.approvals_required;
    let hours = (source.request_ttl_minutes as f64 / 60.0).to_string();
    let sel = format!("rule-{}", source.name);
    let exp = format!("ttl-{}", source.name);
    let send = move |r: (i64, i64)| {
        set_local.set(None);
        sent.set(r);
        rule.dispatch(SetApprovalRule {
            id,
            approvals_required: r.0,
            request_ttl_minutes: r.1,
        });
    };
    view! {
        <span data-testid=format!("needs-{}", source.name)>{move || label(saved.get().0)}</span>
        <IfCan perm=Perm::ManageUsers>
            <details>
            <summary>"Change"</summary>
            <label for=sel.clone()>"Approvals needed"</label>
            <select id=sel.clone() data-testid=sel.clone() on:change=move |ev| {
                if let Ok(n) = event_target_value(&ev).parse::<i64>() {
                    send((n, saved.get_untracked().1));
                }
            }>
                {[0, 1, 2].into_iter().map(|n| view! { <option value=n.to_string() selected=n == required>{label(n)}</option> }).collect_view()}
            </select>
            <label for=exp.clone()>"Requests expire after (hours)"</label>
            <input id=exp.clone() type="number" min="0.1" step="any" class="narrow" value=hours.clone() on:change=move |ev| {
                match event_target_value(&ev).trim().parse::<f64>() {
                    Ok(h) if h.is_finite() => send((saved.get_untracked().0, (h * 60.0).round() as i64)),
                    _ => set_local.set(Some("Enter a number of hours, such as 24.")),
                }
            }/>
            {move || local.get().map(|m| view! { <span class="error" role="alert">{m}</span> })}
            <SaveStatus action=rule testid="rule-status"/>
            </details>
        </IfCan>
    }
    .into_any()
}

#[component]
pub fn SourcePage() -> impl IntoView {
    let id = id_param();
    let tables = Resource::new(id, source_tables);
    view! {
        <Title text="Tables"/>
        <h1>"Tables"</h1>
        <p><a href=crate::base::url("/sources")>"← Sources"</a></p>
        <Suspense fallback=|| view! { <p class="muted">"Connecting…"</p> }>
            {move || Suspend::new(async move {
                match tables.await {
                    Err(e) => failed(e),
                    Ok(list) => view! {
                        <table class="list" data-testid="tables">
                            <thead><tr><th>"Table"</th><th>"Rows"</th><th>"Columns"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| view! {
                                    <tr data-testid=format!("table-{}", t.name)>
                                        <td>{t.name.clone()}</td>
                                        <td class="num">{if t.rows_exact { t.rows.to_string() } else { format!("≈{}", t.rows) }}</td>
                                        <td class="mono">{t.columns.iter().map(|(c, ty)| {
                                            let key = if t.key.contains(c) { " (key)" } else { "" };
                                            format!("{c} {ty}{key}")
                                        }).collect::<Vec<_>>().join(", ")}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
pub fn TargetsPage() -> impl IntoView {
    let add = ServerAction::<AddTarget>::new();
    let edit = ServerAction::<EditTarget>::new();
    let delete = ServerAction::<DeleteTarget>::new();
    let pause = ServerAction::<SetTargetPaused>::new();
    // What the last Pause/Resume asked (the action's input is gone once it is done).
    let pause_sent = RwSignal::new(false);
    let editing = RwSignal::new(None::<TargetView>);
    let targets = Resource::new(
        move || {
            (
                add.version().get(),
                edit.version().get(),
                delete.version().get(),
                pause.version().get(),
            )
        },
        |_| list_targets(),
    );
    let (said, set_said) = signal(None::<String>);
    Effect::new(move |_| {
        if let Some(Ok(())) = pause.value().get() {
            set_said.set(Some(
                if pause_sent.get_untracked() {
                    "Target paused: no backup or copy writes into it until you resume it; restores from it still work."
                } else {
                    "Target resumed: its policies run at their next scheduled time, and copies catch up."
                }
                .into(),
            ));
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = edit.value().get() {
            editing.set(None);
            set_said.set(Some("Target saved.".into()));
        }
    });
    // A target added: the form empties, never keeping the password, and says so.
    let add_form = NodeRef::<leptos::html::Form>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = add.value().get()
            && let Some(f) = add_form.get_untracked()
        {
            let name = input_value(&f, "name");
            set_said.set(Some(format!(
                "Target '{}' added. Keep a copy of its repository password somewhere safe: it is not shown again.",
                name.trim()
            )));
            f.reset();
        }
    });
    // The password typed twice differs: refused here before sending (and by the server).
    let (mismatch, set_mismatch) = signal(None::<String>);
    let repeat_error = Signal::derive(move || {
        mismatch
            .get()
            .or_else(|| field_error(add, "password_repeat").get())
    });
    let check_repeat = move |ev: leptos::ev::MouseEvent| {
        let Some(f) = add_form.get_untracked() else {
            return;
        };
        let differ = crate::forms::same_password(
            &input_value(&f, "password"),
            Some(&input_value(&f, "password_repeat")),
        )
        .err();
        if differ.is_some() {
            ev.prevent_default();
        }
        set_mismatch.set(differ.map(|e| e.to_string()));
    };
    Effect::new(move |_| {
        if let Some(Ok(n)) = delete.value().get() {
            set_said.set(Some(format!(
                "Target removed from the console; {n} snapshot(s) in it are no longer listed. Its repository's files were not deleted."
            )));
        }
    });
    let done = move || {
        said.get()
            .map(|m| view! { <p class="ok" role="status" data-testid="target-saved">{m}</p> })
    };
    view! {
        <Title text="Targets"/>
        <h1>"Targets"</h1>
        <p class="muted">"Where encrypted repositories live. The repository password encrypts every backup; it is stored encrypted and never shown again — keep a copy somewhere safe."</p>
        {done}
        <ErrorLine error=general_error(delete)/>
        <Listing items=targets empty="No targets yet." show=move |list| {
            view! {
                <table class="list" data-testid="targets">
                    <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Location"</th><th>"Snapshots"</th><th>"Used"</th><th></th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|t| { let id = t.id; let whole = t.clone(); view! {
                            <tr data-testid=format!("target-{}", t.name)>
                                <td>{t.name.clone()}{t.paused.then(|| view! { " " <span class="badge" data-testid="target-paused">"paused"</span> })}</td>
                                <td data-label="Kind">{t.kind.clone()}</td>
                                <td class="mono" data-label="Location">{t.location.clone()}</td>
                                <td class="num" data-label="Snapshots">{t.snapshots}</td>
                                <td class="num" data-label="Used">{t.used_bytes.map(|b| bytes(b as i64)).unwrap_or_else(|| "unknown".into())}</td>
                                <td>
                                    <IfCan perm=Perm::Configure>
                                        <button class="secondary" data-testid=format!("edit-target-{}", whole.name) on:click={
                                            let t = whole.clone();
                                            move |_| editing.set(Some(t.clone()))
                                        }>"Edit"</button>
                                        <button class="secondary" on:click={
                                            let paused = !whole.paused;
                                            move |_| { pause_sent.set(paused); pause.dispatch(SetTargetPaused { id, paused }); }
                                        }>{if whole.paused { "Resume" } else { "Pause" }}</button>
                                        <button class="secondary danger" data-testid=format!("delete-target-{}", whole.name) on:click={
                                            let (name, location, snapshots) = (whole.name.clone(), whole.location.clone(), whole.snapshots);
                                            move |_| {
                                                #[cfg(feature = "hydrate")]
                                                if !window().confirm_with_message(&format!(
                                                    "Remove target {name} from the console? The repository at {location} is NOT deleted: its files stay where they are (delete them yourself if you mean to). The {snapshots} snapshot(s) in it are no longer listed in the history. A target that policies use cannot be removed until they stop."
                                                )).unwrap_or(false) {
                                                    return;
                                                }
                                                let _ = (&name, &location, snapshots);
                                                delete.dispatch(DeleteTarget { id });
                                            }
                                        }>"Remove"</button>
                                    </IfCan>
                                </td>
                            </tr>
                        }}).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }/>
        <IfCan perm=Perm::Configure>
            {move || editing.get().map(|t| view! { <EditTargetForm target=t edit=edit editing=editing/> })}
            <Show when=move || editing.get().is_none()>
            <h2>"Add a target"</h2>
            <ActionForm action=add node_ref=add_form attr:class="form" attr:aria-label="Add a target">
                <Field label="Name" name="name" error=field_error(add, "name") check=|v| forms::name("name", v).map(|_| ())/>
                <Field label="Location: a directory, s3://bucket/prefix?endpoint=…&region=…, or sftp://user@host:port/path" name="location" placeholder="/var/backups/shop"
                    error=field_error(add, "location") check=|v| forms::target_location(v).map(|_| ())/>
                <Field label="Repository password (never shown again: keep a copy)" name="password" kind="password"
                    error=field_error(add, "password") check=forms::repository_password/>
                <Field label="Repeat password" name="password_repeat" kind="password" error=repeat_error/>
                <details>
                    <summary>"Credentials for S3 or SFTP"</summary>
                    <Field label="S3 access key id" name="s3_access_key_id" error=field_error(add, "s3_access_key_id")/>
                    <Field label="S3 secret access key" name="s3_secret_access_key" kind="password" error=field_error(add, "s3_secret_access_key")/>
                    <Field label="SSH private key (for sftp://)" name="ssh_private_key" multiline=true error=field_error(add, "ssh_private_key")/>
                    <IfCan perm=Perm::ManageUsers>
                        <div class="check">
                            <input type="checkbox" id="f-server-identity" name="server_identity" value="on"/>
                            <label for="f-server-identity">"What is not given here may come from the server's own identity (its AWS configuration and environment, its SSH keys). Admins only."</label>
                        </div>
                    </IfCan>
                </details>
                <ErrorLine error=general_error(add)/>
                <button type="submit" disabled=move || add.pending().get() on:click=check_repeat>"Add target"</button>
            </ActionForm>
            </Show>
        </IfCan>
    }
}

/// Renames a target or replaces its credentials (blank keeps them). Its location and
/// repository password stay: a repository elsewhere is another target.
#[component]
fn EditTargetForm(
    target: TargetView,
    edit: ServerAction<EditTarget>,
    editing: RwSignal<Option<TargetView>>,
) -> impl IntoView {
    view! {
        <h2>{format!("Change target {}", target.name)}</h2>
        <p class="muted">{format!("Location {} (a repository elsewhere is another target).", target.location)}</p>
        <ActionForm action=edit attr:class="form" attr:aria-label="Change a target">
            <input type="hidden" name="id" value=target.id.to_string()/>
            <Field label="Name" name="name" value=target.name.clone() error=field_error(edit, "name") check=|v| forms::name("name", v).map(|_| ())/>
            <details>
                <summary>"Replace the credentials for S3 or SFTP (blank: keep the stored ones)"</summary>
                <Field label="S3 access key id" name="s3_access_key_id" error=field_error(edit, "s3_access_key_id")/>
                <Field label="S3 secret access key" name="s3_secret_access_key" kind="password" error=field_error(edit, "s3_secret_access_key")/>
                <Field label="SSH private key (for sftp://)" name="ssh_private_key" multiline=true error=field_error(edit, "ssh_private_key")/>
            </details>
            <ErrorLine error=general_error(edit)/>
            <button type="submit" disabled=move || edit.pending().get()>"Save target"</button>
            <button type="button" class="secondary" on:click=move |_| editing.set(None)>"Cancel"</button>
        </ActionForm>
    }
}

/// The value of the input named `name` in `form` ("" if none).
fn input_value(form: &leptos::web_sys::HtmlFormElement, name: &str) -> String {
    use leptos::wasm_bindgen::JsCast;
    form.query_selector(&format!("[name={name}]"))
        .ok()
        .flatten()
        .and_then(|el| el.dyn_into::<leptos::web_sys::HtmlInputElement>().ok())
        .map(|i| i.value())
        .unwrap_or_default()
}
