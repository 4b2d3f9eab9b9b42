use super::ui::{ErrorLine, Field, When, failed, field_error, general_error};
use crate::api::sources::list_sources;
use crate::api::users::{
    ChangePassword, CreateToken, CreateUser, GrantSource, RemoveUser, RevokeToken, SetApprover,
    SetUserDisabled, SetUserRole, SignOutEverywhere, list_tokens, list_users,
};
use crate::auth::Role;
use crate::forms;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn UsersPage() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let toggle = ServerAction::<SetUserDisabled>::new();
    let grant = ServerAction::<GrantSource>::new();
    let approver = ServerAction::<SetApprover>::new();
    let sign_out = ServerAction::<SignOutEverywhere>::new();
    let set_role = ServerAction::<SetUserRole>::new();
    let remove = ServerAction::<RemoveUser>::new();
    // The user whose removal is being confirmed (id, name), and the last one removed.
    let removing = RwSignal::new(None::<(i64, String)>);
    let removed = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let Some(Ok(())) = remove.value().get() {
            removed.set(removing.get_untracked().map(|(_, n)| n));
            removing.set(None);
        }
    });
    // The role each row's select shows, by user id, until "Change role" sends it.
    let chosen = RwSignal::new(std::collections::HashMap::<i64, String>::new());
    // The last change sent, for its confirmation: (user name, role).
    let role_sent = RwSignal::new((String::new(), String::new()));
    // Grants and approvers save as they are ticked: what the last one changed, and once
    // the server accepted it, "Saved" with that (a refusal shows as an error line).
    let tick_sent = RwSignal::new(String::new());
    let tick_saved = RwSignal::new(None::<String>);
    // A saved tick needs no reload: the box already shows what the server holds, and a
    // reload racing the next tick would untick it. A refused tick reloads the list so the
    // box shows the truth again.
    let tick_refused = RwSignal::new(0u32);
    for done in [grant.value(), approver.value()] {
        Effect::new(move |_| {
            if let Some(r) = done.get() {
                if r.is_err() {
                    tick_refused.update(|n| *n += 1);
                }
                tick_saved.set(
                    r.ok()
                        .map(|()| format!("Saved: {}.", tick_sent.get_untracked())),
                );
            }
        });
    }
    let users = Resource::new(
        move || {
            (
                create.version().get(),
                set_role.version().get(),
                toggle.version().get(),
                remove.version().get(),
                tick_refused.get(),
            )
        },
        |_| async { (list_users().await, list_sources().await.unwrap_or_default()) },
    );
    // A user added: the form empties (never keeping the password) and says who was made.
    let add_form = NodeRef::<leptos::html::Form>::new();
    let created = RwSignal::new(None::<String>);
    Effect::new(move |_| match create.value().get() {
        Some(Ok(_)) => {
            if let Some(f) = add_form.get_untracked() {
                let who = format!(
                    "{} ({})",
                    form_value(&f, "input[name=username]").trim(),
                    form_value(&f, "select[name=role]")
                );
                created.set(Some(format!(
                    "Added user {who}. Give them their initial password; they can change it under Account."
                )));
                f.reset();
            }
        }
        Some(Err(_)) => created.set(None),
        None => {}
    });
    view! {
        <Title text="Users"/>
        <h1>"Users"</h1>
        <p class="muted">"Admins manage accounts; operators run everything else; requesters restore into new tables from the sources granted to them; auditors read everything, change nothing."</p>
        <ErrorLine error=general_error(toggle)/>
        <ErrorLine error=general_error(grant)/>
        <ErrorLine error=general_error(approver)/>
        <ErrorLine error=general_error(sign_out)/>
        <ErrorLine error=general_error(remove)/>
        {move || removed.get().map(|n| view! {
            <p class="ok" role="status" data-testid="user-removed">{format!("User {n} removed: their sessions ended and their tokens, grants and approver rights are gone. The history still names them.")}</p>
        })}
        {move || removing.get().map(|(id, n)| view! {
            <section class="card" role="alertdialog" aria-label="Remove a user" data-testid="remove-user-confirm">
                <h2>{format!("Remove {n}?")}</h2>
                <ul>
                    <li>"Their console sessions end at once; they cannot log in again."</li>
                    <li>"Their API tokens, source grants and approver rights are deleted."</li>
                    <li>"Their waiting restore requests are cancelled, and their approvals of waiting requests no longer count."</li>
                    <li>"Jobs, restore requests, approvals and the audit log keep their name; no new account can take it."</li>
                </ul>
                <p class="muted">"To keep the account for later, Disable it instead."</p>
                <button class="danger" disabled=move || remove.pending().get()
                    on:click=move |_| { remove.dispatch(RemoveUser { id }); }>{format!("Remove {n}")}</button>
                " "
                <button class="secondary" on:click=move |_| removing.set(None)>"Cancel"</button>
            </section>
        })}
        <ErrorLine error=Signal::derive(move || set_role.value().get().and_then(|r| r.err()).map(|e| e.to_string()))/>
        {move || matches!(set_role.value().get(), Some(Ok(()))).then(|| {
            let (who, role) = role_sent.get();
            view! { <p class="ok" role="status" data-testid="role-changed">{format!("{who} is now {role}: their sessions ended (the new role applies when they log in again), and their API tokens wider than it stopped working.")}</p> }
        })}
        {move || tick_saved.get().map(|m| view! { <p class="ok" role="status" data-testid="tick-saved">{m}</p> })}
        <Show when=move || matches!(sign_out.value().get(), Some(Ok(())))>
            <p class="ok" role="status">"Signed out everywhere: that user's browsers must log in again."</p>
        </Show>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let (users, sources) = users.await;
                match users {
                    Err(e) => failed(e),
                    Ok(list) => view! {
                        <table class="list" data-testid="users">
                            <thead><tr><th>"User"</th><th>"Role"</th><th>"Since"</th><th>"Status"</th><th>"Sources (requesters)"</th><th>"May approve restores of"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|u| {
                                    let id = u.id;
                                    let disabled = u.disabled;
                                    let name = StoredValue::new(u.username.clone());
                                    view! {
                                        <tr data-testid=format!("user-{}", u.username)>
                                            <td>{u.username.clone()}</td>
                                            <td>
                                                <select id=format!("role-{}", u.username) aria-label=format!("Role of {}", u.username)
                                                    on:change=move |ev| { let v = event_target_value(&ev); chosen.update(|m| { m.insert(id, v); }); }>
                                                    {Role::ALL.iter().map(|r| view! { <option value=r.as_str() selected=*r == u.role>{r.as_str()}</option> }).collect_view()}
                                                </select>
                                                " "
                                                <button class="secondary" disabled=move || set_role.pending().get()
                                                    on:click=move |_| {
                                                        if let Some(role) = chosen.get_untracked().get(&id).cloned() {
                                                            role_sent.set((name.get_value(), role.clone()));
                                                            set_role.dispatch(SetUserRole { id, role });
                                                        }
                                                    }>"Change role"</button>
                                            </td>
                                            <td data-label="Since"><When ms=u.created_at/></td>
                                            <td data-label="Status">{if disabled { "disabled" } else { "active" }}</td>
                                            <td>
                                                {(u.role == Role::Requester).then(|| sources.iter().map(|s| {
                                                    let (sid, granted) = (s.id, u.sources.contains(&s.id));
                                                    let cid = format!("g-{}-{}", id, s.id);
                                                    let source = s.name.clone();
                                                    view! {
                                                        <div class="check">
                                                            <input type="checkbox" id=cid.clone() prop:checked=granted
                                                                aria-label=format!("Grant {}", s.name)
                                                                on:change=move |ev| {
                                                                    let granted = event_target_checked(&ev);
                                                                    tick_sent.set(format!("{} {} restore from {source}", name.get_value(), if granted { "may now" } else { "may no longer" }));
                                                                    grant.dispatch(GrantSource { user_id: id, source_id: sid, granted });
                                                                }/>
                                                            <label for=cid>{s.name.clone()}</label>
                                                        </div>
                                                    }
                                                }).collect_view())}
                                            </td>
                                            <td>
                                                {(u.role == Role::Requester).then(|| sources.iter().map(|s| {
                                                    let (sid, on) = (s.id, u.approves.contains(&s.id));
                                                    let cid = format!("a-{}-{}", id, s.id);
                                                    let source = s.name.clone();
                                                    view! {
                                                        <div class="check">
                                                            <input type="checkbox" id=cid.clone() prop:checked=on
                                                                aria-label=format!("Approver for {}", s.name)
                                                                on:change=move |ev| {
                                                                    let on = event_target_checked(&ev);
                                                                    tick_sent.set(format!("{} {} approve restores of {source}", name.get_value(), if on { "may now" } else { "may no longer" }));
                                                                    approver.dispatch(SetApprover { user_id: id, source_id: sid, on });
                                                                }/>
                                                            <label for=cid>{s.name.clone()}</label>
                                                        </div>
                                                    }
                                                }).collect_view())}
                                                {matches!(u.role, Role::Admin | Role::Operator).then_some("all sources")}
                                            </td>
                                            <td>
                                                <button class="secondary" on:click=move |_| {
                                                    toggle.dispatch(SetUserDisabled { id, disabled: !disabled });
                                                }>{if disabled { "Enable" } else { "Disable" }}</button>
                                                " "
                                                <button class="secondary" title="End this user's console sessions in every browser"
                                                    on:click=move |_| { sign_out.dispatch(SignOutEverywhere { id }); }
                                                >"Sign out everywhere"</button>
                                                " "
                                                <button class="danger" on:click=move |_| removing.set(Some((id, name.get_value())))>"Remove"</button>
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
        <ActionForm action=create node_ref=add_form attr:class="form" attr:aria-label="Add a user">
            <Field label="User name" name="username" error=field_error(create, "username")
                check=|v| forms::username(v).map(|_| ())/>
            <div class="field">
                <label for="f-role">"Role"</label>
                <select id="f-role" name="role">
                    // Least privilege by default.
                    {Role::ALL.iter().map(|r| view! { <option value=r.as_str() selected=*r == Role::Requester>{r.as_str()}</option> }).collect_view()}
                </select>
            </div>
            <Field label="Initial password" name="password" kind="password" error=field_error(create, "password")
                check=|v| forms::password("password", v)/>
            <ErrorLine error=general_error(create)/>
            {move || created.get().map(|m| view! { <p class="ok" role="status" data-testid="user-created">{m}</p> })}
            <button type="submit" disabled=move || create.pending().get()>"Add user"</button>
        </ActionForm>
    }
}

/// The value of the form control `selector` matches in `form` ("" if none).
fn form_value(form: &leptos::web_sys::HtmlFormElement, selector: &str) -> String {
    use leptos::wasm_bindgen::JsCast;
    let Some(el) = form.query_selector(selector).ok().flatten() else {
        return String::new();
    };
    if let Some(i) = el.dyn_ref::<leptos::web_sys::HtmlInputElement>() {
        i.value()
    } else if let Some(s) = el.dyn_ref::<leptos::web_sys::HtmlSelectElement>() {
        s.value()
    } else {
        String::new()
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
        <SignOutEverywhereHere/>
        <ApiTokens/>
    }
}

/// Ends every session of the logged-in user, this one included (a browser left logged
/// in elsewhere); logging out ends only this one.
#[component]
fn SignOutEverywhereHere() -> impl IntoView {
    let sign_out = ServerAction::<SignOutEverywhere>::new();
    let user = use_context::<super::ui::CurrentUser>();
    Effect::new(move || {
        if matches!(sign_out.value().get(), Some(Ok(()))) {
            let _ = window().location().set_href(&crate::base::url("/login"));
        }
    });
    view! {
        <h2>"Sessions"</h2>
        <p class="muted">"Logging out ends this browser's session. If you were logged in somewhere you no longer control, end every session (this also revokes your API tokens):"</p>
        <ErrorLine error=general_error(sign_out)/>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let me = match user {
                    Some(super::ui::CurrentUser(r)) => r.await.ok().flatten(),
                    None => None,
                };
                me.map(|me| view! {
                    <button class="secondary" on:click=move |_| { sign_out.dispatch(SignOutEverywhere { id: me.id }); }>
                        "Sign out everywhere"
                    </button>
                })
            })}
        </Suspense>
    }
}

/// The caller's API tokens: create (shown once), list with last use, revoke.
#[component]
fn ApiTokens() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = Resource::new(
        move || (create.version().get(), revoke.version().get()),
        |_| list_tokens(),
    );
    view! {
        <h2>"API tokens"</h2>
        <p class="muted">"For scripts and other systems: send " <code>"Authorization: Bearer TOKEN"</code>
            " to the server functions or the REST routes under " <code>"/api/v1"</code>
            " (see the README). A token acts as you, with your role or a narrower one, until it expires or you revoke it."</p>
        <ActionForm action=create attr:class="form" attr:aria-label="Create an API token">
            <Field label="Token name" name="name" placeholder="ci-pipeline" error=field_error(create, "name")/>
            <label for="token-role">"Acts as"</label>
            <select id="token-role" name="role">
                <option value="">"my role"</option>
                {Role::ALL.into_iter().map(|r| view! { <option value=r.as_str()>{r.as_str()}</option> }).collect_view()}
            </select>
            <ErrorLine error=field_error(create, "role")/>
            <Field label="Valid for (days)" name="days" kind="number" value="90" error=field_error(create, "days")/>
            <ErrorLine error=general_error(create)/>
            <button type="submit" disabled=move || create.pending().get()>"Create token"</button>
        </ActionForm>
        {move || create.value().get().and_then(|r| r.ok()).map(|t| view! {
            <p class="ok" role="status">"Your new token (copy it now; it is not shown again): "
                <code data-testid="new-token">{t}</code></p>
        })}
        <ErrorLine error=general_error(revoke)/>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match tokens.await {
                    Err(e) => failed(e),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No tokens."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="list" data-testid="tokens">
                            <thead><tr><th>"Name"</th><th>"Acts as"</th><th>"Created"</th><th>"Expires"</th><th>"Last used"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| {
                                    let id = t.id;
                                    view! {
                                        <tr data-testid=format!("token-{}", t.name)>
                                            <td>{t.name.clone()}</td>
                                            <td data-label="Acts as">{t.role.as_str()}</td>
                                            <td data-label="Created"><When ms=t.created_at/></td>
                                            <td data-label="Expires"><When ms=t.expires_at/></td>
                                            <td data-label="Last used">{match t.last_used_at {
                                                Some(at) => view! { <When ms=at/> }.into_any(),
                                                None => "never".into_any(),
                                            }}</td>
                                            <td>{if t.revoked {
                                                view! { <span>"revoked"</span> }.into_any()
                                            } else {
                                                view! { <button class="danger" on:click=move |_| { revoke.dispatch(RevokeToken { id }); }>"Revoke"</button> }.into_any()
                                            }}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
    }
    .into_any()
}
