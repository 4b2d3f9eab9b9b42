use super::ui::{ErrorLine, Field, failed, field_error, general_error, time};
use crate::api::sources::list_sources;
use crate::api::users::{ChangePassword, CreateUser, GrantSource, SetUserDisabled, list_users};
use crate::auth::Role;
use crate::forms;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn UsersPage() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let toggle = ServerAction::<SetUserDisabled>::new();
    let grant = ServerAction::<GrantSource>::new();
    let users = Resource::new(
        move || {
            (
                create.version().get(),
                toggle.version().get(),
                grant.version().get(),
            )
        },
        |_| async { (list_users().await, list_sources().await.unwrap_or_default()) },
    );
    view! {
        <Title text="Users"/>
        <h1>"Users"</h1>
        <p class="muted">"Admins manage accounts; operators run everything else; requesters restore into new tables from the sources granted to them; auditors read everything, change nothing."</p>
        <ErrorLine error=general_error(toggle)/>
        <ErrorLine error=general_error(grant)/>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let (users, sources) = users.await;
                match users {
                    Err(e) => failed(e),
                    Ok(list) => view! {
                        <table class="list" data-testid="users">
                            <thead><tr><th>"User"</th><th>"Role"</th><th>"Since"</th><th>"Status"</th><th>"Sources (requesters)"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|u| {
                                    let id = u.id;
                                    let disabled = u.disabled;
                                    view! {
                                        <tr data-testid=format!("user-{}", u.username)>
                                            <td>{u.username.clone()}</td>
                                            <td>{u.role.as_str()}</td>
                                            <td>{time(u.created_at)}</td>
                                            <td>{if disabled { "disabled" } else { "active" }}</td>
                                            <td>
                                                {(u.role == Role::Requester).then(|| sources.iter().map(|s| {
                                                    let (sid, granted) = (s.id, u.sources.contains(&s.id));
                                                    let cid = format!("g-{}-{}", id, s.id);
                                                    view! {
                                                        <div class="check">
                                                            <input type="checkbox" id=cid.clone() prop:checked=granted
                                                                on:change=move |ev| {
                                                                    grant.dispatch(GrantSource { user_id: id, source_id: sid, granted: event_target_checked(&ev) });
                                                                }/>
                                                            <label for=cid>{s.name.clone()}</label>
                                                        </div>
                                                    }
                                                }).collect_view())}
                                            </td>
                                            <td>
                                                <button class="secondary" on:click=move |_| {
                                                    toggle.dispatch(SetUserDisabled { id, disabled: !disabled });
                                                }>{if disabled { "Enable" } else { "Disable" }}</button>
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Suspense>
        <h2>"Add a user"</h2>
        <ActionForm action=create attr:class="form" attr:aria-label="Add a user">
            <Field label="User name" name="username" error=field_error(create, "username")
                check=|v| forms::username(v).map(|_| ())/>
            <div class="field">
                <label for="f-role">"Role"</label>
                <select id="f-role" name="role">
                    {Role::ALL.iter().map(|r| view! { <option value=r.as_str()>{r.as_str()}</option> }).collect_view()}
                </select>
            </div>
            <Field label="Initial password" name="password" kind="password" error=field_error(create, "password")
                check=|v| forms::password("password", v)/>
            <ErrorLine error=general_error(create)/>
            <button type="submit" disabled=move || create.pending().get()>"Add user"</button>
        </ActionForm>
    }
}

#[component]
pub fn AccountPage() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let done = move || matches!(change.value().get(), Some(Ok(())));
    view! {
        <Title text="Account"/>
        <h1>"Your account"</h1>
        <h2>"Change your password"</h2>
        <ActionForm action=change attr:class="form" attr:aria-label="Change password">
            <Field label="Current password" name="current" kind="password" error=field_error(change, "current")/>
            <Field label="New password" name="new" kind="password" error=field_error(change, "new")
                check=|v| forms::password("new", v)/>
            <ErrorLine error=general_error(change)/>
            <Show when=done>
                <p class="ok" role="status">"Your password was changed."</p>
            </Show>
            <button type="submit" disabled=move || change.pending().get()>"Change password"</button>
        </ActionForm>
    }
}
