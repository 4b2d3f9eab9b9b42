//! A small REST surface for scripts and other systems, under `/api/v1`, authenticated
//! with a per-user API token (`Authorization: Bearer tsk_…`, created on the account
//! page). Each route calls the same server function the console calls, in the same
//! context, so every role check, validation and audit entry is the console's own.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/v1/openapi.json` | this API's OpenAPI 3.1 description (no token needed) |
//! | `GET /api/v1/policies` | policies |
//! | `POST /api/v1/policies/{id}/run` | run a backup now → 202 `{"job": N}` |
//! | `GET /api/v1/snapshots` | snapshots, newest first |
//! | `GET /api/v1/jobs` | jobs, newest first (`?status=`) |
//! | `GET /api/v1/jobs/{id}` | one job and its log |
//! | `POST /api/v1/requests` | file a restore request `{"req": …, "reason": …}` → 201 `{"request": N}` |
//! | `GET /api/v1/requests/{id}` | a request and its history |
//! | `POST /api/v1/requests/{id}/approve` | approve `{"version": …}` → `{"job": N or null}` |
//!
//! Every error, whatever went wrong (a path that does not exist, a body that is not
//! JSON, a refusal of the server function), is [`AppError`]'s wire form
//! `{"error": message, "field"?: name, "code": …}` with its status ([`AppError::status`]):
//! 400, 401, 403, 404, 405, 409, and 500 only for a fault of the server.
//!
//! The description is generated from the handlers' `#[utoipa::path]` attributes and the
//! types' `ToSchema` derives; the router is made from the same list ([`api`]), so a route
//! cannot be served without being described. `server/tests/it/openapi.rs` checks every
//! route's real answers against it.

use app::api;
use app::api::history::RestoreRequest;
use app::api::jobs::{JobView, LogLine, PolicyView};
use app::api::requests::RequestDetail;
use app::error::AppError;
use app::ssr::AppState;
use app::ssr::words::Interface;
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use leptos::prelude::provide_context;
use leptos::reactive::computed::ScopedFuture;
use leptos::reactive::owner::Owner;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of `/api/v1` (the description among them) and the 404/405 in the error
/// shape for anything else under it, and under `/api/` (where the server functions are:
/// their exact paths win over the catch-all).
pub fn routes() -> axum::Router<AppState> {
    let (router, _) = api().split_for_parts();
    router
        .method_not_allowed_fallback(method_not_allowed)
        .route("/api/v1", axum::routing::any(not_found))
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .route("/api/{*rest}", axum::routing::any(not_found))
}

/// The router and its description, from one list: what is routed is described.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Description::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(policies))
        .routes(routes!(run_policy))
        .routes(routes!(snapshots))
        .routes(routes!(jobs))
        .routes(routes!(job))
        .routes(routes!(file_request))
        .routes(routes!(request))
        .routes(routes!(approve))
}

/// The OpenAPI 3.1 description of `/api/v1`, as served at `/api/v1/openapi.json`.
pub fn description() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tablesafe API",
        description = "Scripts and other systems drive tablesafe over `/api/v1` with an API token \
            (`Authorization: Bearer tsk_…`, created on the console's account page). A token acts as \
            its user, with their role or a narrower one. Every error is \
            `{\"error\": message, \"field\"?: name, \"code\": kind}` with its HTTP status."
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
    components(schemas(ErrorBody, ErrorCode))
)]
struct Description;

/// The bearer token security scheme, named `token`.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tsk_…")
                    .description(Some(
                        "An API token from the console's account page (shown once).",
                    ))
                    .build(),
            ),
        );
    }
}

/// What every error answer holds, whatever its status.
#[derive(Serialize, Deserialize, ToSchema)]
#[allow(dead_code)] // Only described: AppError serializes itself to this shape.
struct ErrorBody {
    /// What went wrong and what to do, for a person to read.
    error: String,
    /// The input to blame, when it is one field (`reason`, `mode`, `name`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    code: ErrorCode,
}

/// The kind of refusal, for a script to branch on: `unauthenticated` (401),
/// `forbidden` (403), `invalid` (400), `not_found` (404), `conflict` (409: the state of
/// what it names is in the way, e.g. a request already decided), `internal` (500; the
/// cause is in the server log).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum ErrorCode {
    InvalidCredentials,
    Unauthenticated,
    Forbidden,
    Invalid,
    NotFound,
    Conflict,
    Internal,
    Transport,
}

/// Runs a server function as the console would: with the app state and this request's
/// head (which carries the bearer token and the client address) in its context, and
/// [`Interface::Api`], so its messages name this API's fields rather than the
/// console's buttons or the command line's flags.
async fn call<T, F>(state: AppState, parts: Parts, f: impl FnOnce() -> F) -> Result<T, AppError>
where
    F: Future<Output = Result<T, AppError>>,
{
    let owner = Owner::new();
    let fut = owner.with(|| {
        provide_context(state);
        provide_context(parts);
        provide_context(Interface::Api);
        ScopedFuture::new(f())
    });
    fut.await
}

/// An error answer: [`AppError`]'s wire form with its status.
pub fn error(e: AppError) -> Response {
    (e.status(), Json(e)).into_response()
}

fn reply<T: Serialize>(status: StatusCode, r: Result<T, AppError>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => error(e),
    }
}

async fn not_found(req: Request) -> Response {
    error(AppError::NotFound(format!(
        "{} (the routes are in /api/v1/openapi.json)",
        req.uri().path()
    )))
}

async fn method_not_allowed(req: Request) -> Response {
    let mut r = error(AppError::Invalid(format!(
        "{} does not take {} (the routes are in /api/v1/openapi.json).",
        req.uri().path(),
        req.method()
    )));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// An id in the path; not a number is a 400 in the error shape naming `id`.
struct Id(i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| error(AppError::Invalid(e.body_text())))?;
        raw.parse().map(Id).map_err(|_| {
            error(AppError::Field(
                "id".into(),
                format!("The id in the path must be a number, not {raw:?}."),
            ))
        })
    }
}

/// The query string, or a 400 in the error shape.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                error(AppError::Invalid(format!(
                    "The query string is not valid: {}.",
                    e.body_text()
                )))
            })
    }
}

/// The request head and its JSON body (with or without a `Content-Type`), or a 400 in
/// the error shape that says what is wrong with the body.
struct ApiJson<T>(Parts, T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let bad = |m: String| error(AppError::Invalid(m));
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|e| bad(format!("The request body could not be read: {e}.")))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "The JSON body is not valid: {e} (its shape is in /api/v1/openapi.json)."
            ))
        })?;
        Ok(ApiJson(parts, value))
    }
}

/// This description, as JSON.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of /api/v1", body = Object))
)]
async fn openapi_json() -> Response {
    match description().to_json() {
        Ok(json) => ([(http::header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serializing the OpenAPI description");
            error(AppError::Internal)
        }
    }
}

/// The backup policies (needs a role that sees everything: not a requester).
#[utoipa::path(
    get,
    path = "/api/v1/policies",
    tag = "policies",
    responses(
        (status = 200, description = "Every policy", body = Vec<PolicyView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role may not list policies", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn policies(state: axum::extract::State<AppState>, parts: Parts) -> Response {
    reply(
        StatusCode::OK,
        call(state.0, parts, api::jobs::list_policies).await,
    )
}

/// The id of a job just queued.
#[derive(Serialize, ToSchema)]
struct JobStarted {
    job: i64,
}

/// Queues a backup of the policy now (operators and admins).
#[utoipa::path(
    post,
    path = "/api/v1/policies/{id}/run",
    tag = "policies",
    params(("id" = i64, Path, description = "The policy's id")),
    responses(
        (status = 202, description = "Queued: the job's id", body = JobStarted),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role may not run backups", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 409, description = "Its source or target is paused", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn run_policy(state: axum::extract::State<AppState>, Id(id): Id, parts: Parts) -> Response {
    let r = call(state.0, parts, || api::jobs::run_policy(id)).await;
    reply(StatusCode::ACCEPTED, r.map(|job| JobStarted { job }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SnapshotQuery {
    /// Only this policy's snapshots (0 or absent: any).
    #[serde(default)]
    policy_id: i64,
    /// Only this source's snapshots (0 or absent: any).
    #[serde(default)]
    source_id: i64,
}

/// Snapshots the token's user may see, newest first (requesters: those of the sources
/// granted to them).
#[utoipa::path(
    get,
    path = "/api/v1/snapshots",
    tag = "snapshots",
    params(SnapshotQuery),
    responses(
        (status = 200, description = "Snapshots, newest first", body = Vec<app::api::history::SnapshotView>),
        (status = 400, description = "The query string is not valid", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn snapshots(
    state: axum::extract::State<AppState>,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
    parts: Parts,
) -> Response {
    let r = call(state.0, parts, || {
        api::history::list_snapshots(q.policy_id, q.source_id, None)
    })
    .await;
    reply(StatusCode::OK, r)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// A page after the first: the smallest id of the previous page.
    before: Option<i64>,
    /// Only jobs in this state (`queued`, `running`, `succeeded`, `failed`, `cancelled`).
    status: Option<String>,
}

/// Jobs the token's user may see, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = Vec<JobView>),
        (status = 400, description = "The query string or the status is not valid", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn jobs(
    state: axum::extract::State<AppState>,
    ApiQuery(q): ApiQuery<JobsQuery>,
    parts: Parts,
) -> Response {
    let r = call(state.0, parts, || api::jobs::list_jobs(q.before, q.status)).await;
    reply(StatusCode::OK, r)
}

/// A job and its log.
#[derive(Serialize, ToSchema)]
struct JobDetail {
    job: JobView,
    log: Vec<LogLine>,
}

/// One job and its log.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job and its log", body = JobDetail),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job, or not one the token's user may see", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn job(state: axum::extract::State<AppState>, Id(id): Id, parts: Parts) -> Response {
    let r = call(state.0, parts, || api::jobs::get_job(id, 0)).await;
    reply(StatusCode::OK, r.map(|(job, log)| JobDetail { job, log }))
}

/// A restore request to file.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct FileBody {
    /// The restore: `snapshot`, `dest_source_id` and `mode` are needed, the rest is
    /// optional (all tables, all columns, no renames).
    req: RestoreRequest,
    /// Why (shown to the approvers, kept in the audit log).
    reason: String,
}

/// The id of a request just filed.
#[derive(Serialize, ToSchema)]
struct RequestFiled {
    request: i64,
}

/// Files a restore request. When nothing needs approving, its restore starts at once
/// (its job is on the request).
#[utoipa::path(
    post,
    path = "/api/v1/requests",
    tag = "requests",
    request_body = FileBody,
    responses(
        (status = 201, description = "Filed: the request's id", body = RequestFiled),
        (status = 400, description = "The body or the restore it asks for is not valid (`field` names the input)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role may not restore, or not into that source", body = ErrorBody),
        (status = 404, description = "No such snapshot or source, or not one the token's user may see", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn file_request(
    state: axum::extract::State<AppState>,
    ApiJson(parts, b): ApiJson<FileBody>,
) -> Response {
    let r = call(state.0, parts, || {
        api::requests::file_request(b.req, b.reason)
    })
    .await;
    reply(
        StatusCode::CREATED,
        r.map(|request| RequestFiled { request }),
    )
}

/// A request and its history.
#[utoipa::path(
    get,
    path = "/api/v1/requests/{id}",
    tag = "requests",
    params(("id" = i64, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The request and its history", body = RequestDetail),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such request, or not one the token's user may see", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn request(state: axum::extract::State<AppState>, Id(id): Id, parts: Parts) -> Response {
    let r = call(state.0, parts, || api::requests::get_request(id)).await;
    reply(StatusCode::OK, r)
}

/// An approval, of the version of the request the approver read.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct ApproveBody {
    /// The request's `version` as `GET /api/v1/requests/{id}` gave it.
    version: String,
}

/// The restore job, when this was the last approval needed.
#[derive(Serialize, ToSchema)]
struct Approved {
    job: Option<i64>,
}

/// Approves a request (someone other than its requester, who may decide for its
/// sources).
#[utoipa::path(
    post,
    path = "/api/v1/requests/{id}/approve",
    tag = "requests",
    params(("id" = i64, Path, description = "The request's id")),
    request_body = ApproveBody,
    responses(
        (status = 200, description = "Approved; `job` is the restore job when this was the last approval needed", body = Approved),
        (status = 400, description = "The body or the id is not valid, or the restore no longer is", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's user may not approve it (or filed it)", body = ErrorBody),
        (status = 404, description = "No such request, or not one the token's user may see", body = ErrorBody),
        (status = 409, description = "Already decided, approved by this user, or changed since `version`", body = ErrorBody),
        (status = 500, description = "A fault of the server (see its log)", body = ErrorBody),
    )
)]
async fn approve(
    state: axum::extract::State<AppState>,
    Id(id): Id,
    ApiJson(parts, b): ApiJson<ApproveBody>,
) -> Response {
    let r = call(state.0, parts, || {
        api::requests::approve_request(id, b.version)
    })
    .await;
    reply(StatusCode::OK, r.map(|job| Approved { job }))
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// The description's error codes are the ones `AppError` answers with.
    #[test]
    fn described_error_codes_are_app_errors_codes() {
        let described: Vec<String> = [
            ErrorCode::InvalidCredentials,
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::Invalid,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::Internal,
            ErrorCode::Transport,
        ]
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        assert_eq!(described, app::error::AppError::CODES);
    }

    /// Nothing is routed beside the list that is described (`api()`): a plain
    /// `.route("/api/v1/…")` here would be served but missing from openapi.json.
    #[test]
    fn every_route_is_described() {
        let source = include_str!("rest.rs");
        let routed: Vec<&str> = source
            .lines()
            .filter(|l| l.trim_start().starts_with(".route(\""))
            .collect();
        assert_eq!(
            routed,
            [
                "        .route(\"/api/v1\", axum::routing::any(not_found))",
                "        .route(\"/api/v1/{*rest}\", axum::routing::any(not_found))",
                "        .route(\"/api/{*rest}\", axum::routing::any(not_found))"
            ]
        );
        let paths = super::description().paths.paths;
        assert_eq!(paths.len(), 9, "{:?}", paths.keys());
    }
}
