use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
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
    use crate::ssr::{AppState, session};
    let state = expect_context::<AppState>();
    session::require_user(&state).await?;
    let schema_version = state
        .db
        .schema_version()
        .await
        .or_internal("reading schema version")?;
    Ok(InstallationInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        history_backend: state.db.backend.label().to_string(),
        schema_version,
    })
}

#[component]
pub fn Dashboard() -> impl IntoView {
    use super::ui::{bytes, failed, time};
    use crate::api::history::dashboard_data;
    let info = Resource::new(|| (), |_| server_info());
    let data = Resource::new(|| (), |_| dashboard_data());
    view! {
        <Title text="Dashboard"/>
        <h1>"Dashboard"</h1>
        <super::requests::WaitingForYou/>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => failed(e),
                    Ok(d) => view! {
                        <section class="cards" aria-label="Sources" data-testid="source-health">
                            {d.sources.is_empty().then(|| view! {
                                <article class="card"><h2>"Welcome"</h2><p>"Add a " <a href="/sources">"source"</a> ", a " <a href="/targets">"target"</a> " and a " <a href="/policies">"policy"</a> " to take your first backup."</p></article>
                            })}
                            {d.sources.into_iter().map(|s| {
                                let age = s.last_success_ms.map(|t| super::ui::duration(d.now_ms - t)).map(|a| format!("{a} ago"));
                                view! {
                                    <article class={if s.failures_7d > 0 { "card warn" } else { "card" }} data-testid=format!("health-{}", s.name)>
                                        <h2>{s.name.clone()}</h2>
                                        <p>"Last successful backup: " <strong>{s.last_success_ms.map(time).unwrap_or_else(|| "never".into())}</strong></p>
                                        {age.map(|a| view! { <p class="muted">{a}</p> })}
                                        <p data-testid="next-run">"Next run: " {s.next_run.map(time).unwrap_or_else(|| "not scheduled".into())}</p>
                                        <p>"Failures in the last 7 days: " <strong>{s.failures_7d}</strong></p>
                                    </article>
                                }
                            }).collect_view()}
                        </section>
                        {(!d.proven.is_empty()).then(|| proven_view(d.proven.clone(), d.now_ms))}
                        <section class="charts">
                            <figure>
                                <figcaption>"Bytes stored per snapshot"</figcaption>
                                {chart(d.stored.iter().map(|(t, b)| (*t, *b as f64)).collect(), |v| bytes(v as i64))}
                            </figure>
                            <figure>
                                <figcaption>"Job duration (seconds)"</figcaption>
                                {chart(d.durations.clone(), |v| format!("{v:.1} s"))}
                            </figure>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                info.await.ok().map(|i| view! {
                    <p class="muted" data-testid="server-info">
                        {format!(
                            "tablesafe {} · history database: {} (schema {})",
                            i.version, i.history_backend, i.schema_version
                        )}
                    </p>
                })
            })}
        </Suspense>
    }
}

/// Per policy, the newest snapshot a restore drill proved restorable, and how the last
/// drill went.
fn proven_view(list: Vec<crate::api::drills::ProvenView>, now: i64) -> AnyView {
    use super::ui::{duration, time};
    view! {
        <section aria-label="Last proven restorable" data-testid="proven">
            <h2>"Last proven restorable"</h2>
            <table class="list">
                <thead><tr><th>"Policy"</th><th>"Snapshot proven"</th><th>"Last drill"</th></tr></thead>
                <tbody>
                    {list.into_iter().map(|p| view! {
                        <tr data-testid=format!("proven-{}", p.policy)>
                            <td><a href="/drills">{p.policy.clone()}</a></td>
                            <td>{match (p.proven_snapshot_time, p.proven_at) {
                                (Some(t), Some(at)) => format!("taken {} — proven {} ago", time(t), duration(now - at)),
                                _ => "never".to_string(),
                            }}</td>
                            <td class={if p.last_passed { "" } else { "error" }}>
                                {format!("{}: {}", time(p.last_drill_at), if p.last_passed { "passed" } else { "FAILED" })}
                            </td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
    .into_any()
}

/// A small SVG bar chart of (time, value) points, oldest first.
fn chart(points: Vec<(i64, f64)>, label: fn(f64) -> String) -> impl IntoView {
    if points.is_empty() {
        return view! { <p class="muted">"No data yet."</p> }.into_any();
    }
    let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9);
    let (w, h) = (600.0, 160.0);
    let bw = w / points.len() as f64;
    let top = label(max);
    view! {
        <svg viewBox=format!("0 0 {w} {}", h + 20.0) role="img" aria-label=format!("up to {top}") class="chart">
            {points.into_iter().enumerate().map(|(i, (t, v))| {
                let bh = (v / max * h).max(1.0);
                view! {
                    <rect x=format!("{:.1}", i as f64 * bw + 1.0) y=format!("{:.1}", h - bh)
                        width=format!("{:.1}", (bw - 2.0).max(1.0)) height=format!("{bh:.1}")>
                        <title>{format!("{}: {}", super::ui::time(t), label(v))}</title>
                    </rect>
                }
            }).collect_view()}
            <text x="0" y=format!("{}", h + 16.0)>{format!("max {top}")}</text>
        </svg>
    }
    .into_any()
}
