//! `tablesafe serve`: the console over HTTP.

use crate::cli::{ServeArgs, bootstrap_admin};
use anyhow::{Context, Result};
use app::ssr::{AppState, keys, session};
use app::{App, shell};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{Method, StatusCode, header};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::trace::TraceLayer;

pub async fn serve(args: ServeArgs) -> Result<()> {
    let db = args.history.open().await?;
    bootstrap_admin(&db).await?;
    let key_file = args
        .key_file
        .clone()
        .unwrap_or_else(|| args.history.data_dir.join("server.key"));
    let server_key = keys::load_or_create(&key_file)?;
    let sessions =
        session::SessionKeys::new(&server_key, args.session_hours * 3600, args.secure_cookies);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let site_root = resolve_site_root(args.site_root.clone());
    if !site_root.join("pkg/tablesafe.js").exists() {
        tracing::warn!(
            site_root = %site_root.display(),
            "the console's browser files are missing; build them with `cargo leptos build` \
             (pages will render but not become interactive)"
        );
    }
    let leptos_options = LeptosOptions::builder()
        .output_name("tablesafe")
        .site_root(site_root.to_string_lossy().as_ref())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    let state = AppState {
        db,
        leptos_options,
        sessions: Arc::new(sessions),
        secrets: Arc::new(app::ssr::secrets::SecretBox::new(&server_key)),
        throttle: Arc::new(app::ssr::throttle::Throttle::default()),
        jobs_queued: Arc::new(tokio::sync::Notify::new()),
    };

    let app = router(state);
    tracing::info!("tablesafe console listening on http://{addr}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("tablesafe console stopped");
    Ok(())
}

/// The whole HTTP surface: the pages and the server functions (`/api/…`, registered by
/// `leptos_routes_with_context` with the same context), static files as the fallback.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, context, {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(pages)
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn(reject_cross_site))
        // Failures are logged where they happen, with their cause (`app::ssr::internal`);
        // a failed login, answered with status 500 by the server-function protocol, is
        // not an error of the server.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// Pages other than the login page need a session; without one a full page load is sent
/// to `/login`. A logged-in user asking for `/login` goes to the dashboard. Server
/// functions (`/api/…`) check the session themselves and answer with an error instead.
async fn require_session(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let user = match session::from_headers(&state, req.headers()).await {
        Ok(user) => user,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match (req.uri().path() == "/login", user.is_some()) {
        (true, true) => Redirect::to("/").into_response(),
        (false, false) => Redirect::to("/login").into_response(),
        _ => next.run(req).await,
    }
}

/// Refuses state-changing requests sent by another site. The SameSite=Strict cookie
/// already keeps the session out of them; this is the second lock on the door.
async fn reject_cross_site(req: Request<Body>, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && is_cross_site(req.headers()) {
        tracing::warn!(path = %req.uri().path(), "rejected a cross-site request");
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    next.run(req).await
}

fn is_cross_site(headers: &http::HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return true;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or(origin);
            !origin_host.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

/// `--site-root`, else `LEPTOS_SITE_ROOT` (set by `cargo leptos serve`), else the `site`
/// directory cargo-leptos builds beside the binary (target/site for target/release/tablesafe),
/// else ./target/site.
fn resolve_site_root(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    if let Ok(dir) = std::env::var("LEPTOS_SITE_ROOT") {
        return PathBuf::from(dir);
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("site")))
        .filter(|d| d.join("pkg").is_dir())
    {
        return beside;
    }
    PathBuf::from("target/site")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

#[cfg(test)]
mod tests {
    use super::is_cross_site;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_posts_pass_and_foreign_ones_do_not() {
        assert!(!is_cross_site(&headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://127.0.0.1:3000")
        ])));
        assert!(
            !is_cross_site(&headers(&[("host", "127.0.0.1:3000")])),
            "no Origin: a non-browser client"
        );
        assert!(is_cross_site(&headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://evil.example")
        ])));
        assert!(is_cross_site(&headers(&[
            ("host", "a:1"),
            ("origin", "null")
        ])));
        assert!(is_cross_site(&headers(&[
            ("host", "a:1"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!is_cross_site(&headers(&[
            ("host", "a:1"),
            ("sec-fetch-site", "same-origin")
        ])));
    }
}
