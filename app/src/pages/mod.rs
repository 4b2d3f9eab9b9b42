//! One module per console page.

pub mod audit;
pub mod backups;
pub mod browse;
pub mod dashboard;
pub mod drills;
pub mod jobs;
pub mod layout;
pub mod login;
pub mod names;
pub mod notifications;
pub mod policies;
pub mod requests;
pub mod restores;
pub mod sources;
pub mod ui;
pub mod users;

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found"/>
        <main class="narrow">
            <h1>"Page not found"</h1>
            <p><a href=crate::base::url("/")>"Back to the dashboard"</a></p>
        </main>
    }
}
