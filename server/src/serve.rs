//! `tablesafe serve`: the console over HTTP.

use crate::cli::{ServeArgs, bootstrap_admin};
use crate::hardening::{self, HttpPolicy};
use anyhow::{Context, Result};
use app::api::history::Outcome;
use app::error::AppError;
use app::ssr::{AppState, key_guard, keys, session};
use app::{App, shell};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{StatusCode, header};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

pub async fn serve(args: ServeArgs) -> Result<()> {
    crate::metrics::install()?;
    let http_policy = HttpPolicy::new(args.public_url.as_deref())?.trusting(&args.trusted_proxies);
    let metrics_access = crate::metrics::Access::from_env(args.metrics_public);
    // Opening creates the data directory, where the key file is by default.
    let db = args.history.open().await?;
    engine::repo::cache::set_default_dir(
        (!args.no_repo_cache).then(|| args.history.data_dir.join("cache")),
    );
    let key_file = args.history.key_path();
    // One key per history database: never a new key for a database that has one, and
    // never a worker whose key opens none of its secrets.
    key_guard::refuse_new_key(&db, &key_file).await?;
    let existed = key_file.exists();
    let server_key = keys::load_or_create(&key_file)?;
    if let Err(e) = key_guard::check(&db, &server_key, &key_file).await {
        // A key made just now that lost to another worker's: not left behind to be
        // refused again at the next start.
        if !existed {
            let _ = std::fs::remove_file(&key_file);
        }
        return Err(e);
    }
    let db = db.with_server_key(&server_key);
    bootstrap_admin(&db).await?;
    // Secure by default when users reach the console over https (`--public-url`).
    let secure_cookies = args.secure_cookies.unwrap_or(http_policy.https);
    if http_policy.https && !secure_cookies {
        tracing::warn!(
            "--public-url is https but --secure-cookies=false: the session cookie may be sent over plain http"
        );
    }
    let sessions =
        session::SessionKeys::new(&server_key, args.session_hours * 3600, secure_cookies)
            .under(http_policy.base());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let site = crate::assets::Site::resolve(args.site_root.clone());
    site.warn_if_missing();
    let leptos_options = LeptosOptions::builder()
        .output_name("tablesafe")
        .site_root(site.leptos_root())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    let state = AppState {
        db,
        leptos_options,
        sessions: Arc::new(sessions),
        secrets: Arc::new(app::ssr::secrets::SecretBox::new(&server_key)),
        throttle: Arc::new(app::ssr::throttle::Throttle::default()),
        bursts: Arc::new(app::ssr::throttle::Bursts::new(
            std::time::Duration::from_secs(args.audit_burst_secs),
        )),
        trusted_proxies: Arc::new(args.trusted_proxies.clone()),
        outbound: Arc::new(args.outbound()?),
        jobs_queued: Arc::new(tokio::sync::Notify::new()),
        public_url: args.public_url.clone(),
        protected: Arc::new(
            args.history
                .protected(&key_file)
                .allowing_only(&args.sqlite_dirs),
        ),
        audit_head: Arc::new(app::ssr::anchor::local_file(&key_file)),
    };

    let worker = args
        .worker_name
        .clone()
        .unwrap_or_else(|| default_worker_name(&args.history.data_dir));
    crate::runner::spawn(state.clone(), worker.clone(), args.jobs as usize);
    crate::scheduler::spawn(state.clone());
    crate::anchor::spawn(state.clone(), args.audit_anchor_secs);
    crate::capturer::spawn(state.clone(), worker.clone());
    crate::notifier::spawn(
        state.clone(),
        worker.clone(),
        args.notify_retry_secs as i64 * 1000,
    );
    let app = router(state, http_policy, metrics_access);
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
/// `leptos_routes_with_context` with the same context), static files as the fallback;
/// every answer with the security headers (`hardening`).
pub fn router(state: AppState, policy: HttpPolicy, metrics: crate::metrics::Access) -> Router {
    let policy = Arc::new(policy);
    let prefix = policy.clone();
    let metrics = Arc::new(metrics);
    let routes = generate_route_list(App);
    let context = {
        let state = state.clone();
        move || {
            provide_context(state.clone());
            hardening::provide_request_nonce();
        }
    };
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, context, {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ))
        .layer(middleware::from_fn(refusal_status));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(crate::metrics::readyz))
        .route(
            "/metrics",
            get(move |state: State<AppState>, headers: http::HeaderMap| {
                crate::metrics::metrics_handler(state, metrics.clone(), headers)
            }),
        )
        .route("/audit.csv", get(audit_csv))
        .route("/drills.csv", get(drills_csv))
        .route("/snapshots/{id}/export", get(export_snapshot))
        .route(
            "/hooks/policies/{id}/backup",
            axum::routing::post(trigger_backup),
        )
        .merge(crate::rest::routes())
        .merge(pages)
        .fallback(crate::assets::fallback(
            leptos_axum::file_and_error_handler_with_context::<AppState, _>(
                hardening::provide_request_nonce,
                shell,
            ),
        ))
        .layer(middleware::from_fn_with_state(
            policy.clone(),
            hardening::reject_cross_site,
        ))
        .layer(middleware::from_fn_with_state(
            policy,
            hardening::security_headers,
        ))
        // Failures are logged where they happen, with their cause (`app::ssr::internal`).
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state);
    // `--public-url`'s path prefix comes off before routing (`hardening::strip_prefix`);
    // a `Router::layer` would run after it.
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(
                prefix,
                hardening::strip_prefix,
            ))
            .service(app),
    )
}

/// Gives a server function's refusal its HTTP status. server_fn 0.8 answers every
/// error with 500 (`Res::error_response`), marked with the `serverfnerror` header and
/// the error's JSON as the body (`{"error", "field"?, "code"}`, `app::error`); this
/// reads that body back as the [`AppError`] it is and sets [`AppError::status`] (401,
/// 403, 400, 404, 409; 500 stays for `Internal`), the body untouched. One place for
/// every server function, rather than a
/// `ResponseOptions::set_status` beside each of the many `Err(…)` they return; the
/// browser's client decodes the error from any 4xx/5xx answer alike.
async fn refusal_status(req: Request<Body>, next: Next) -> Response {
    let res = next.run(req).await;
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR
        || !res
            .headers()
            .contains_key(leptos::server_fn::error::SERVER_FN_ERROR_HEADER)
    {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // An AppError's JSON is a short message; anything longer is not one.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        tracing::error!("a server function's error answer was too long to read");
        return crate::rest::error(AppError::Internal);
    };
    if let Ok(error) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status = error.status();
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Pages other than the login page need a session; without one a full page load is sent
/// to `/login`. A logged-in user asking for `/login` goes to the dashboard. Server
/// functions (`/api/…`) check the session themselves and answer with an error instead.
/// Both redirects stay under `--public-url`'s path prefix (the path here has lost it).
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
    let base = req
        .extensions()
        .get::<app::base::BasePath>()
        .map(|b| b.0.clone())
        .unwrap_or_default();
    match (req.uri().path() == "/login", user.is_some()) {
        (true, true) => Redirect::to(&format!("{base}/")).into_response(),
        (false, false) => Redirect::to(&format!("{base}/login")).into_response(),
        _ => next.run(req).await,
    }
}

/// `POST /hooks/policies/{id}/backup` with `Authorization: Bearer TOKEN`: starts a
/// backup of the policy (for CI pipelines, deploy hooks, other systems). 202 with the job
/// id; 401 for a missing, wrong or revoked token (after 5 wrong tokens for a policy each
/// further attempt must wait, like logins); 409 while a backup of the policy is queued or
/// running. Every attempt is audited.
async fn trigger_backup(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::extract::Path(id): axum::extract::Path<i64>,
    headers: http::HeaderMap,
) -> Response {
    use app::ssr::{audit, store};
    // Every answer in the API's error shape (`app::error`).
    let reply = |status: StatusCode, body: serde_json::Value| {
        if status.is_success() {
            return (status, axum::Json(body)).into_response();
        }
        let code = match status {
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::CONFLICT => "conflict",
            _ => "throttled",
        };
        let mut body = body;
        body["code"] = code.into();
        (status, axum::Json(body)).into_response()
    };
    let address =
        app::ssr::client::address(peer.ip(), &headers, &state.trusted_proxies).to_string();
    let group = app::ssr::client::group(&address);
    let keys = [format!("trigger:{id}|ip:{group}"), format!("ip:{group}")];
    let event = |outcome: Outcome, detail: &str| audit::Event {
        user_id: None,
        username: "trigger".into(),
        address: address.clone(),
        action: "policy.trigger".into(),
        target: format!("policy #{id}"),
        outcome,
        detail: detail.into(),
    };
    // Failures without a valid token go to the audit log one entry per burst.
    let anonymous = async |e: audit::Event| {
        if state.bursts.record(&e) {
            let _ = audit::append(&state.db, &e).await;
        }
    };
    if let Some(wait) = state.throttle.check(&keys) {
        anonymous(event(Outcome::Denied, "too many wrong tokens")).await;
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"error": format!("too many wrong tokens; try again in {} s", wait.as_secs().max(1))}),
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let policy = match store::policy(&state.db, id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "loading a policy for a trigger");
            return crate::rest::error(AppError::Internal);
        }
    };
    let expected = policy.as_ref().and_then(|p| p.trigger_hash.clone());
    let given = store::trigger_hash(token);
    let Some(policy) = policy.filter(|_| {
        !token.is_empty()
            && expected
                .as_deref()
                .is_some_and(|e| constant_time_eq(e.as_bytes(), given.as_bytes()))
    }) else {
        state.throttle.failed(&keys);
        anonymous(event(Outcome::Denied, "missing, wrong or revoked token")).await;
        return reply(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "missing, wrong or revoked trigger token"}),
        );
    };
    match store::policy_hold(&state.db, &policy).await {
        Ok(None) => {}
        Ok(Some(why)) => {
            let _ = audit::append(&state.db, &event(Outcome::Failed, &why)).await;
            return reply(StatusCode::CONFLICT, serde_json::json!({"error": why}));
        }
        Err(e) => {
            tracing::error!(error = %e, "checking a triggered policy's source and target");
            return crate::rest::error(AppError::Internal);
        }
    }
    let result = async {
        if store::policy_busy(&state.db.pool, id).await? {
            return Ok(None);
        }
        let job = store::backup_job(
            &state.db,
            &policy,
            format!("Triggered backup: {}", policy.name),
            None,
        )
        .await?;
        Ok::<_, anyhow::Error>(Some(state.enqueue(job).await?))
    }
    .await;
    match result {
        Ok(Some(job)) => {
            let _ = audit::append(&state.db, &event(Outcome::Ok, &format!("job {job}"))).await;
            reply(StatusCode::ACCEPTED, serde_json::json!({"job": job}))
        }
        Ok(None) => {
            let _ = audit::append(
                &state.db,
                &event(
                    Outcome::Failed,
                    "a backup of this policy is already queued or running",
                ),
            )
            .await;
            reply(
                StatusCode::CONFLICT,
                serde_json::json!({"error": "a backup of this policy is already queued or running"}),
            )
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "queueing a triggered backup");
            crate::rest::error(AppError::Internal)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[derive(serde::Deserialize)]
struct AuditFilter {
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
}

/// A CSV download for admins and auditors: 401 without a session, 403 (audited as
/// denied) for other roles, otherwise `rows` (the header line first) as
/// `tablesafe-{name}.csv`, audited as `action` on `target`.
async fn audited_csv(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &http::HeaderMap,
    (action, target, name): (&str, &str, &str),
    rows: impl AsyncFnOnce(&AppState) -> anyhow::Result<Vec<Vec<String>>>,
) -> Response {
    use app::auth::Perm;
    use app::ssr::audit;
    let user = match session::from_headers(state, headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return crate::rest::error(AppError::Unauthenticated),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reading a session for {target}");
            return crate::rest::error(AppError::Internal);
        }
    };
    let event = |outcome: Outcome| audit::Event {
        user_id: Some(user.id),
        username: user.username.clone(),
        address: app::ssr::client::address(peer.ip(), headers, &state.trusted_proxies).to_string(),
        action: action.into(),
        target: target.into(),
        outcome,
        detail: String::new(),
    };
    if !user.role.can(Perm::SeeAudit) {
        let _ = audit::append(&state.db, &event(Outcome::Denied)).await;
        return crate::rest::error(AppError::Forbidden);
    }
    let rows = match rows(state).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "exporting {target}");
            return crate::rest::error(AppError::Internal);
        }
    };
    let _ = audit::append(&state.db, &event(Outcome::Ok)).await;
    let mut out = String::new();
    for fields in rows {
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"tablesafe-{name}.csv\""),
            ),
        ],
        out,
    )
        .into_response()
}

/// The header line of a CSV export.
fn csv_header(names: &str) -> Vec<String> {
    names.split(',').map(String::from).collect()
}

/// The audit log as CSV (admins and auditors), newest first, with the page's filters.
/// The export itself is audited.
async fn audit_csv(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::extract::Query(f): axum::extract::Query<AuditFilter>,
    headers: http::HeaderMap,
) -> Response {
    let what = ("audit.export", "audit log", "audit");
    audited_csv(&state, peer, &headers, what, async |state| {
        let found =
            app::ssr::audit::search(&state.db, &f.user, &f.action, &f.outcome, None, i64::MAX)
                .await?;
        let mut rows = vec![csv_header(
            "id,time_utc,user,address,action,target,outcome,detail,hash",
        )];
        rows.extend(found.into_iter().map(|r| {
            vec![
                r.id.to_string(),
                iso_time(r.at),
                r.username,
                r.address,
                r.action,
                r.target,
                r.outcome,
                r.detail,
                r.hash,
            ]
        }));
        Ok(rows)
    })
    .await
}

/// `GET /snapshots/{id}/export?format=…&table=…`: a download of a snapshot's rows
/// (`app::api::browse`).
async fn export_snapshot(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::extract::Path(id): axum::extract::Path<i64>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
    headers: http::HeaderMap,
) -> Response {
    let user = match session::from_headers(&state, &headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return crate::rest::error(AppError::Unauthenticated),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reading a session for an export");
            return crate::rest::error(AppError::Internal);
        }
    };
    let address =
        app::ssr::client::address(peer.ip(), &headers, &state.trusted_proxies).to_string();
    let ctx = app::ssr::ctx::Ctx {
        state,
        user,
        address,
    };
    app::api::browse::ssr::export_response(ctx, id, query).await
}

/// Every restore drill's evidence as CSV (admins and auditors), newest first, with the
/// full report (JSON) in the last column. The export itself is audited.
async fn drills_csv(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: http::HeaderMap,
) -> Response {
    let what = ("drill.export", "restore drills", "drills");
    audited_csv(&state, peer, &headers, what, async |state| {
        let found = app::ssr::drills::list(&state.db, None, i64::MAX).await?;
        let mut rows = vec![csv_header(
            "id,started_utc,policy,snapshot,snapshot_time_utc,passed,duration_ms,restore_ms,tables,rows,checks,error,job,report",
        )];
        for r in found {
            let report = r.report.clone();
            let job = r.job_id.map(|j| j.to_string()).unwrap_or_default();
            let v = app::api::drills::drill_view(r);
            let checks: Vec<String> = v
                .checks
                .iter()
                .map(|(ok, line)| format!("{} {line}", if *ok { "ok" } else { "FAIL" }))
                .collect();
            rows.push(vec![
                v.id.to_string(),
                iso_time(v.started_at),
                v.policy,
                v.snapshot_id,
                iso_time(v.snapshot_time),
                if v.passed { "passed" } else { "failed" }.to_string(),
                v.duration_ms.to_string(),
                v.restore_ms.to_string(),
                v.tables.to_string(),
                v.rows.to_string(),
                checks.join("; "),
                v.error.unwrap_or_default(),
                job,
                report,
            ]);
        }
        Ok(rows)
    })
    .await
}

/// One CSV field: quoted when needed, and never starting with a character a spreadsheet
/// would run as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn iso_time(ms: i64) -> String {
    let (y, m, d, h, mi, s) = app::pages::ui::civil(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `host:data-dir`: stable across restarts, so a restarted worker recognizes the jobs it
/// was running.
fn default_worker_name(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
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
    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(super::csv_field("plain"), "plain");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::csv_field("=cmd()"), "'=cmd()");
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso_time(1_764_028_800_000), "2025-11-25T00:00:00Z");
    }
}
