//! The tablesafe console: Leptos components (rendered on the server, hydrated in the
//! browser) and the server functions they call. Server-only code lives in [`ssr`]
//! (feature `ssr`); server functions are thin shells around it: authenticate, authorize,
//! validate, call a plain function, map the error. The view types both the server
//! functions ([`api`]) and the server-only code use live in [`model`], so that `ssr`
//! never imports `api`.

pub mod api;
pub mod auth;
pub mod base;
pub mod error;
pub mod forms;
pub mod model;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod ssr;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::path;

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    // Under a path prefix (`--public-url …/tablesafe/`) the bundle, the favicon and every
    // link carry it; the <meta> hands it to the browser (`base`).
    let base = base::base();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name=base::META_NAME content=base.to_string()/>
                <link rel="icon" type="image/svg+xml" href=format!("{base}/favicon.svg")/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options root=base.to_string()/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The console's sections, in navigation order: (path, label, what is there, who sees
/// it in the navigation — the server enforces access either way).
pub const SECTIONS: &[(&str, &str, &str, auth::Perm)] = &[
    (
        "/sources",
        "Sources",
        "Add SQLite and PostgreSQL databases, test connections and browse their tables.",
        auth::Perm::RestoreNew,
    ),
    (
        "/targets",
        "Targets",
        "Directories that hold encrypted repositories.",
        auth::Perm::SeeAll,
    ),
    (
        "/policies",
        "Policies",
        "What to back up, where to, on which schedule; Run now.",
        auth::Perm::SeeAll,
    ),
    (
        "/backups",
        "Backups",
        "Snapshot history per policy and source, with verification status.",
        auth::Perm::RestoreNew,
    ),
    (
        "/drills",
        "Drills",
        "Restore drills: scheduled proof that snapshots restore, with the evidence.",
        auth::Perm::SeeAll,
    ),
    (
        "/restores",
        "Restores",
        "The restore wizard.",
        auth::Perm::RestoreNew,
    ),
    (
        "/requests",
        "Requests",
        "Restore requests: file, approve (one or two people), follow to the restored rows.",
        auth::Perm::SeeRequests,
    ),
    (
        "/jobs",
        "Jobs",
        "Every backup, restore and verify with live progress, logs and cancel.",
        auth::Perm::RestoreNew,
    ),
    (
        "/notifications",
        "Notifications",
        "Channels (signed webhook, Slack, e-mail), the events each receives, and every delivery.",
        auth::Perm::SeeAll,
    ),
    (
        "/audit",
        "Audit",
        "The tamper-evident record of every login, change, run and restore.",
        auth::Perm::SeeAudit,
    ),
    (
        "/users",
        "Users",
        "Accounts and roles: admin, operator, requester, auditor.",
        auth::Perm::ManageUsers,
    ),
];

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let base = base::provide();
    #[cfg(feature = "ssr")]
    base::provide_request_url(&base);
    view! {
        <Stylesheet id="leptos" href=format!("{base}/pkg/tablesafe.css")/>
        <Title formatter=|text: String| if text.is_empty() { "tablesafe".to_string() } else { format!("{text} · tablesafe") }/>
        <Router base=base.to_string()>
            <Routes fallback=pages::NotFound>
                <Route path=path!("/login") view=pages::login::LoginPage/>
                <ParentRoute path=path!("") view=pages::layout::Layout>
                    <Route path=path!("") view=pages::dashboard::Dashboard/>
                    <Route path=path!("sources") view=pages::sources::SourcesPage/>
                    <Route path=path!("sources/:id") view=pages::sources::SourcePage/>
                    <Route path=path!("targets") view=pages::sources::TargetsPage/>
                    <Route path=path!("policies") view=pages::policies::PoliciesPage/>
                    <Route path=path!("backups") view=pages::backups::BackupsPage/>
                    <Route path=path!("backups/:id") view=pages::browse::BrowsePage/>
                    <Route path=path!("drills") view=pages::drills::DrillsPage/>
                    <Route path=path!("restores") view=pages::restores::RestoresPage/>
                    <Route path=path!("requests") view=pages::requests::RequestsPage/>
                    <Route path=path!("requests/:id") view=pages::requests::RequestPage/>
                    <Route path=path!("notifications") view=pages::notifications::NotificationsPage/>
                    <Route path=path!("jobs") view=pages::jobs::JobsPage/>
                    <Route path=path!("jobs/:id") view=pages::jobs::JobPage/>
                    <Route path=path!("audit") view=pages::audit::AuditPage/>
                    <Route path=path!("users") view=pages::users::UsersPage/>
                    <Route path=path!("account") view=pages::users::AccountPage/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}
