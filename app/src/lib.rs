//! The tablesafe console: Leptos components (rendered on the server, hydrated in the
//! browser) and the server functions they call. Server-only code lives in [`ssr`]
//! (feature `ssr`); server functions are thin shells around it: authenticate, authorize,
//! validate, call a plain function, map the error.

pub mod api;
pub mod auth;
pub mod error;
pub mod forms;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod ssr;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::path;

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The console's sections, in navigation order: (path, label, what is coming there).
pub const SECTIONS: &[(&str, &str, &str)] = &[
    (
        "/sources",
        "Sources",
        "Add SQLite and PostgreSQL databases, test connections and browse their tables.",
    ),
    (
        "/targets",
        "Targets",
        "Local directories, S3-compatible buckets and SFTP paths that hold encrypted repositories.",
    ),
    (
        "/policies",
        "Policies",
        "What to back up, where to, on which schedule, and how long to keep it.",
    ),
    (
        "/backups",
        "Backups",
        "Snapshot history per policy and source, with verification status.",
    ),
    (
        "/restores",
        "Restores",
        "The restore wizard and self-service restore requests.",
    ),
    (
        "/jobs",
        "Jobs",
        "Every backup, restore and verify with live progress, logs and cancel.",
    ),
    (
        "/audit",
        "Audit",
        "The tamper-evident record of every login, change, run and restore.",
    ),
    (
        "/users",
        "Users",
        "Accounts and roles: admin, operator, requester, auditor.",
    ),
];

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/tablesafe.css"/>
        <Title formatter=|text: String| if text.is_empty() { "tablesafe".to_string() } else { format!("{text} · tablesafe") }/>
        <Router>
            <Routes fallback=pages::NotFound>
                <Route path=path!("/login") view=pages::login::LoginPage/>
                <ParentRoute path=path!("") view=pages::layout::Layout>
                    <Route path=path!("") view=pages::dashboard::Dashboard/>
                    <Route path=path!("sources") view=|| view! { <pages::ComingSoon path="/sources"/> }/>
                    <Route path=path!("targets") view=|| view! { <pages::ComingSoon path="/targets"/> }/>
                    <Route path=path!("policies") view=|| view! { <pages::ComingSoon path="/policies"/> }/>
                    <Route path=path!("backups") view=|| view! { <pages::ComingSoon path="/backups"/> }/>
                    <Route path=path!("restores") view=|| view! { <pages::ComingSoon path="/restores"/> }/>
                    <Route path=path!("jobs") view=|| view! { <pages::ComingSoon path="/jobs"/> }/>
                    <Route path=path!("audit") view=|| view! { <pages::ComingSoon path="/audit"/> }/>
                    <Route path=path!("users") view=|| view! { <pages::ComingSoon path="/users"/> }/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}
