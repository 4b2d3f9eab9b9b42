use crate::SECTIONS;
use crate::auth::{Logout, current_user};
use leptos::prelude::*;
use leptos_router::components::{A, Outlet, Redirect};

/// The frame of every page behind the login: header, navigation, the page itself.
///
/// The server already redirects a full page load without a session to `/login` (see the
/// `server` crate's route guard); the check here covers client-side navigation after the
/// session ended.
#[component]
pub fn Layout() -> impl IntoView {
    let user = Resource::new(|| (), |_| current_user());
    provide_context(super::ui::CurrentUser(user));
    let logout = ServerAction::<Logout>::new();
    view! {
        <div class="layout">
            <header class="topbar">
                <a class="brand" href="/">"tablesafe"</a>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        match user.await {
                            Ok(Some(u)) => view! {
                                <a class="who" href="/account" data-testid="current-user">
                                    {u.username} <span class="role">{u.role.as_str()}</span>
                                </a>
                            }.into_any(),
                            _ => view! { <Redirect path="/login"/> }.into_any(),
                        }
                    })}
                </Suspense>
                <ActionForm action=logout attr:class="logout">
                    <button type="submit">"Log out"</button>
                </ActionForm>
            </header>
            <nav class="sidebar" aria-label="Main">
                <ul>
                    <li><A href="/" exact=true>"Dashboard"</A></li>
                    {SECTIONS.iter().map(|(path, label, _, perm)| view! {
                        <super::ui::IfCan perm=*perm>
                            <li><A href=*path>{*label}</A></li>
                        </super::ui::IfCan>
                    }).collect_view()}
                </ul>
            </nav>
            <main class="content">
                <Outlet/>
            </main>
        </div>
    }
}
