use crate::SECTIONS;
use crate::error::AppError;
use leptos::prelude::*;
use leptos_meta::Title;
use serde::{Deserialize, Serialize};

/// Facts about this installation for the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallationInfo {
    pub version: String,
    pub history_backend: String,
    pub schema_version: i64,
}

#[server(endpoint = "server_info")]
pub async fn server_info() -> Result<InstallationInfo, AppError> {
    use crate::ssr::{AppState, internal, session};
    let state = expect_context::<AppState>();
    session::require_user(&state).await?;
    let schema_version = state
        .db
        .schema_version()
        .await
        .map_err(|e| internal("reading schema version", e))?;
    Ok(InstallationInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        history_backend: state.db.backend.label().to_string(),
        schema_version,
    })
}

#[component]
pub fn Dashboard() -> impl IntoView {
    let info = Resource::new(|| (), |_| server_info());
    view! {
        <Title text="Dashboard"/>
        <h1>"Dashboard"</h1>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match info.await {
                    Ok(i) => view! {
                        <p class="muted" data-testid="server-info">
                            {format!(
                                "tablesafe {} · history database: {} (schema {})",
                                i.version, i.history_backend, i.schema_version
                            )}
                        </p>
                    }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
        <section class="cards" aria-label="Sections">
            {SECTIONS.iter().map(|(path, label, about)| view! {
                <article class="card">
                    <h2><a href=*path>{*label}</a></h2>
                    <p>{*about}</p>
                    <p class="coming-soon">"Coming soon."</p>
                </article>
            }).collect_view()}
        </section>
    }
}
