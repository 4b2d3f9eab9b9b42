//! A small REST surface for scripts and other systems, under `/api/v1`, authenticated
//! with a per-user API token (`Authorization: Bearer tsk_…`, created on the account
//! page). Each route calls the same server function the console calls, in the same
//! context, so every role check, validation and audit entry is the console's own.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/v1/policies` | policies |
//! | `POST /api/v1/policies/{id}/run` | run a backup now → 202 `{"job": N}` |
//! | `GET /api/v1/snapshots` | snapshots, newest first |
//! | `GET /api/v1/jobs` | jobs, newest first (`?status=`) |
//! | `GET /api/v1/jobs/{id}` | one job and its log |
//! | `POST /api/v1/requests` | file a restore request `{"req": …, "reason": …}` → 201 `{"request": N}` |
//! | `GET /api/v1/requests/{id}` | a request and its history |
//! | `POST /api/v1/requests/{id}/approve` | approve `{"version": …}` → `{"job": N or null}` |
//!
//! Errors are `{"error": message}` (and `"field"` when one input is wrong) with the
//! status the console's server functions answer with too (`AppError::status`): 401,
//! 403, 404, 400, and 500 only for a fault of the server.

use app::api;
use app::error::AppError;
use app::ssr::AppState;
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use leptos::prelude::provide_context;
use leptos::reactive::computed::ScopedFuture;
use leptos::reactive::owner::Owner;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/v1/policies", get(policies))
        .route("/api/v1/policies/{id}/run", post(run_policy))
        .route("/api/v1/snapshots", get(snapshots))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/requests", post(file_request))
        .route("/api/v1/requests/{id}", get(request))
        .route("/api/v1/requests/{id}/approve", post(approve))
}

/// Runs a server function as the console would: with the app state and this request's
/// head (which carries the bearer token and the client address) in its context.
async fn call<T, F>(
    state: AppState,
    parts: http::request::Parts,
    f: impl FnOnce() -> F,
) -> Result<T, AppError>
where
    F: Future<Output = Result<T, AppError>>,
{
    let owner = Owner::new();
    let fut = owner.with(|| {
        provide_context(state);
        provide_context(parts);
        ScopedFuture::new(f())
    });
    fut.await
}

fn reply<T: serde::Serialize>(status: StatusCode, r: Result<T, AppError>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => {
            let code = e.status();
            let mut body = json!({"error": e.to_string()});
            if let AppError::Field(field, _) = &e {
                body["field"] = json!(field);
            }
            (code, Json(body)).into_response()
        }
    }
}

/// The request head, for [`call`].
async fn head(req: Request) -> http::request::Parts {
    req.into_parts().0
}

async fn policies(State(state): State<AppState>, req: Request) -> Response {
    let parts = head(req).await;
    reply(
        StatusCode::OK,
        call(state, parts, api::jobs::list_policies).await,
    )
}

async fn run_policy(State(state): State<AppState>, Path(id): Path<i64>, req: Request) -> Response {
    let parts = head(req).await;
    let r = call(state, parts, || api::jobs::run_policy(id)).await;
    reply(StatusCode::ACCEPTED, r.map(|job| json!({"job": job})))
}

#[derive(Deserialize)]
struct SnapshotQuery {
    #[serde(default)]
    policy_id: i64,
    #[serde(default)]
    source_id: i64,
}

async fn snapshots(
    State(state): State<AppState>,
    Query(q): Query<SnapshotQuery>,
    req: Request,
) -> Response {
    let parts = head(req).await;
    let r = call(state, parts, || {
        api::history::list_snapshots(q.policy_id, q.source_id, None)
    })
    .await;
    reply(StatusCode::OK, r)
}

#[derive(Deserialize)]
struct JobsQuery {
    before: Option<i64>,
    status: Option<String>,
}

async fn jobs(State(state): State<AppState>, Query(q): Query<JobsQuery>, req: Request) -> Response {
    let parts = head(req).await;
    let r = call(state, parts, || api::jobs::list_jobs(q.before, q.status)).await;
    reply(StatusCode::OK, r)
}

async fn job(State(state): State<AppState>, Path(id): Path<i64>, req: Request) -> Response {
    let parts = head(req).await;
    let r = call(state, parts, || api::jobs::get_job(id, 0)).await;
    reply(
        StatusCode::OK,
        r.map(|(job, log)| json!({"job": job, "log": log})),
    )
}

#[derive(Deserialize)]
struct FileBody {
    req: api::history::RestoreRequest,
    reason: String,
}

/// The request head and its JSON body, or a 400 that says what is wrong with the body.
async fn body<T: serde::de::DeserializeOwned>(
    req: Request,
) -> Result<(http::request::Parts, T), Response> {
    let (parts, body) = req.into_parts();
    let bad = |m: String| reply::<()>(StatusCode::BAD_REQUEST, Err(AppError::Invalid(m)));
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("The JSON body is not valid: {e}")))?;
    Ok((parts, value))
}

async fn file_request(State(state): State<AppState>, req: Request) -> Response {
    let (parts, b) = match body::<FileBody>(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = call(state, parts, || {
        api::requests::file_request(b.req, b.reason)
    })
    .await;
    reply(StatusCode::CREATED, r.map(|id| json!({"request": id})))
}

async fn request(State(state): State<AppState>, Path(id): Path<i64>, req: Request) -> Response {
    let parts = head(req).await;
    let r = call(state, parts, || api::requests::get_request(id)).await;
    reply(StatusCode::OK, r)
}

#[derive(Deserialize)]
struct ApproveBody {
    version: String,
}

async fn approve(State(state): State<AppState>, Path(id): Path<i64>, req: Request) -> Response {
    let (parts, b) = match body::<ApproveBody>(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = call(state, parts, || {
        api::requests::approve_request(id, b.version)
    })
    .await;
    reply(StatusCode::OK, r.map(|job| json!({"job": job})))
}
