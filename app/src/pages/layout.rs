use crate::SECTIONS;
use crate::auth::{Logout, current_user};
use leptos::prelude::*;
use leptos_router::components::{A, Outlet, Redirect};
use leptos_router::hooks::use_location;

/// Bumped by a page that changed what waits for the user (an approval, a rejection), so
/// the navigation's count of waiting requests loads again.
#[derive(Clone, Copy)]
pub struct PendingChanged(pub RwSignal<u32>);

/// The frame of every page behind the login: header, navigation, the page itself.
///
/// The server already redirects a full page load without a session to `/login` (see the
/// `server` crate's route guard); the check here covers client-side navigation after the
/// session ended.
#[component]
pub fn Layout() -> impl IntoView {
    let user = Resource::new(|| (), |_| current_user());
    provide_context(super::ui::CurrentUser(user));
    // How many restore requests wait for this user's decision (0 for who may decide
    // none: see `pending_for_me`), loaded in the browser after each page change and
    // decision. Kept out of the server's render on purpose: a resource read in a
    // suspense nested in the navigation's may stream in after it, and then the server's
    // and the browser's first renders can differ (hydration panics were seen with one).
    let changed = RwSignal::new(0u32);
    provide_context(PendingChanged(changed));
    let location = use_location();
    let pending = RwSignal::new(None::<i64>);
    Effect::new(move |_| {
        let _ = (location.pathname.get(), changed.get());
        leptos::task::spawn_local(async move {
            let n = crate::api::requests::pending_for_me().await.ok();
            pending.try_set(n);
        });
    });
    let logout = ServerAction::<Logout>::new();
    view! {
        <div class="layout">
            <header class="topbar">
                <a class="brand" href=crate::base::url("/")>"tablesafe"</a>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        match user.await {
                            Ok(Some(u)) => view! {
                                <a class="who" href=crate::base::url("/account") data-testid="current-user">
                                    {u.username} <span class="role">{u.role.as_str()}</span>
                                </a>
                            }.into_any(),
                            // The server's redirect takes the path as it is; the
                            // browser's navigation puts the router's base in front.
                            _ => view! { <Redirect path=if cfg!(feature = "ssr") { crate::base::url("/login") } else { "/login".into() }/> }.into_any(),
                        }
                    })}
                </Suspense>
                <ActionForm action=logout attr:class="logout">
                    <button type="submit">"Log out"</button>
                </ActionForm>
            </header>
            <nav class="sidebar" aria-label="Main">
                <ul>
                    // Not an <A>: under a path prefix the router resolves "/" to
                    // "/tablesafe" while the page is at "/tablesafe/", and its exact match
                    // would never mark the dashboard current.
                    <li><a href=crate::base::url("/") aria-current={
                        let home = crate::base::base();
                        move || (location.pathname.get().trim_end_matches('/') == home.as_ref()).then_some("page")
                    }>"Dashboard"</a></li>
                    {SECTIONS.iter().map(|(path, label, _, perm)| view! {
                        <super::ui::IfCan perm=*perm>
                            <li><A href=crate::base::url(path)>{*label}{(*path == "/requests").then(|| view! { <PendingBadge pending=pending/> })}</A></li>
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

/// The count of requests waiting for the user, on *Requests* (nothing when none).
#[component]
fn PendingBadge(pending: RwSignal<Option<i64>>) -> impl IntoView {
    move || {
        pending.get().filter(|n| *n > 0).map(|n| {
            view! {
                <span class="nav-badge" data-testid="requests-badge"
                    title=format!("{n} waiting for your approval")>
                    {n}<span class="visually-hidden">" waiting for your approval"</span>
                </span>
            }
        })
    }
}
