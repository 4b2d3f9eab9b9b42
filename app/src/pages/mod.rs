//! One module per console page.

pub mod dashboard;
pub mod layout;
pub mod login;

use crate::SECTIONS;
use leptos::prelude::*;
use leptos_meta::Title;

/// A section of the console whose issue has not landed yet.
#[component]
pub fn ComingSoon(path: &'static str) -> impl IntoView {
    let (label, about) = SECTIONS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, label, about)| (*label, *about))
        .unwrap_or(("", ""));
    view! {
        <Title text=label/>
        <h1>{label}</h1>
        <p class="muted">{about}</p>
        <p class="coming-soon">"Coming soon."</p>
    }
}

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
            <p><a href="/">"Back to the dashboard"</a></p>
        </main>
    }
}
