use super::ui::{
    ErrorLine, Field, IfCan, Listing, bytes, failed, field_error, general_error, id_param,
};
use crate::api::sources::{
    AddSource, AddTarget, SetApprovalRule, TestSource, list_sources, list_targets, source_tables,
};
use crate::auth::Perm;
use crate::forms;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn SourcesPage() -> impl IntoView {
    let add = ServerAction::<AddSource>::new();
    let test = ServerAction::<TestSource>::new();
    let rule = ServerAction::<SetApprovalRule>::new();
    let sources = Resource::new(
        move || (add.version().get(), rule.version().get()),
        |_| list_sources(),
    );
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
        <ErrorLine error=general_error(rule)/>
        <Listing items=sources empty="No sources yet." show=move |list| {
            view! {
                <table class="list" data-testid="sources">
                    <thead><tr><th>"Name"</th><th>"Engine"</th><th>"Connection"</th><th>"Restores need"</th><th></th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|s| {
                            let id = s.id;
                            view! {
                                <tr data-testid=format!("source-{}", s.name)>
                                    <td><a href=format!("/sources/{id}")>{s.name.clone()}</a></td>
                                    <td>{s.engine.as_str()}</td>
                                    <td class="mono">{s.url.clone()}</td>
                                    <td><ApprovalRule source=s.clone() rule=rule/></td>
                                    <td>
                                        <IfCan perm=Perm::Configure>
                                            <button class="secondary" disabled=move || test.pending().get()
                                                on:click=move |_| { test.dispatch(TestSource { id }); }>"Test connection"</button>
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
            <h2>"Add a source"</h2>
            <ActionForm action=add attr:class="form" attr:aria-label="Add a source">
                <Field label="Name" name="name" error=field_error(add, "name") check=|v| forms::name("name", v).map(|_| ())/>
                <Field label="Connection URL" name="url" placeholder="sqlite:///var/lib/app.db or postgres://user:password@host:5432/db"
                    error=field_error(add, "url") check=|v| forms::source_url(v).map(|_| ())/>
                <ErrorLine error=general_error(add)/>
                <button type="submit" disabled=move || add.pending().get()>"Add source"</button>
            </ActionForm>
        </IfCan>
    }
}

/// How many approvals restores of a source need; admins change it here, others read it.
#[component]
fn ApprovalRule(
    source: crate::api::sources::SourceView,
    rule: ServerAction<SetApprovalRule>,
) -> impl IntoView {
    let id = source.id;
    let (required, ttl) = (source.approvals_required, source.request_ttl_minutes);
    let label = |n: i64| match n {
        0 => "no approval",
        1 => "one approval",
        _ => "two approvals (two-person rule)",
    };
    let hours = (ttl as f64 / 60.0).to_string();
    let sel = format!("rule-{}", source.name);
    let exp = format!("ttl-{}", source.name);
    view! {
        <span data-testid=format!("needs-{}", source.name)>{label(required)}</span>
        <IfCan perm=Perm::ManageUsers>
            <details>
            <summary>"Change"</summary>
            <label for=sel.clone()>"Approvals needed"</label>
            <select id=sel.clone() data-testid=sel.clone() on:change=move |ev| {
                if let Ok(n) = event_target_value(&ev).parse::<i64>() {
                    rule.dispatch(SetApprovalRule { id, approvals_required: n, request_ttl_minutes: ttl });
                }
            }>
                {[0, 1, 2].into_iter().map(|n| view! { <option value=n.to_string() selected=n == required>{label(n)}</option> }).collect_view()}
            </select>
            <label for=exp.clone()>"Requests expire after (hours)"</label>
            <input id=exp.clone() type="number" min="0.1" step="any" class="narrow" value=hours.clone() on:change=move |ev| {
                if let Ok(h) = event_target_value(&ev).parse::<f64>() {
                    let minutes = (h * 60.0).round() as i64;
                    rule.dispatch(SetApprovalRule { id, approvals_required: required, request_ttl_minutes: minutes });
                }
            }/>
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
        <p><a href="/sources">"← Sources"</a></p>
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
    let targets = Resource::new(move || add.version().get(), |_| list_targets());
    view! {
        <Title text="Targets"/>
        <h1>"Targets"</h1>
        <p class="muted">"Where encrypted repositories live. The repository password encrypts every backup; it is stored encrypted and never shown again — keep a copy somewhere safe."</p>
        <Listing items=targets empty="No targets yet." show=move |list| {
            view! {
                <table class="list" data-testid="targets">
                    <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Location"</th><th>"Snapshots"</th><th>"Used"</th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|t| view! {
                            <tr data-testid=format!("target-{}", t.name)>
                                <td>{t.name.clone()}</td>
                                <td>{t.kind.clone()}</td>
                                <td class="mono">{t.location.clone()}</td>
                                <td class="num">{t.snapshots}</td>
                                <td class="num">{t.used_bytes.map(|b| bytes(b as i64)).unwrap_or_else(|| "unknown".into())}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }/>
        <IfCan perm=Perm::Configure>
            <h2>"Add a target"</h2>
            <ActionForm action=add attr:class="form" attr:aria-label="Add a target">
                <Field label="Name" name="name" error=field_error(add, "name") check=|v| forms::name("name", v).map(|_| ())/>
                <Field label="Location: a directory, s3://bucket/prefix?endpoint=…&region=…, or sftp://user@host:port/path" name="location" placeholder="/var/backups/shop"
                    error=field_error(add, "location") check=|v| forms::target_location(v).map(|_| ())/>
                <Field label="Repository password" name="password" kind="password"
                    error=field_error(add, "password") check=forms::repository_password/>
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
                <button type="submit" disabled=move || add.pending().get()>"Add target"</button>
            </ActionForm>
        </IfCan>
    }
}
