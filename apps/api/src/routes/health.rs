//! The health probes: `GET /health/live`, `/health/ready`, `/health/startup`, `/health/deps`, and
//! the full report at `GET /admin/health`.
//!
//! Liveness answers from process state alone; readiness runs the (cached) dependency checks and
//! answers 503 only when the aggregate is `unhealthy`, and as soon as shutdown begins. Every answer
//! carries `Cache-Control: no-store`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mainstay_health::{ProbeResponse, Report, View};

use super::Routes;
use crate::app::AppState;

/// The public health routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/health/live", get(live))
        .route("get", "/health/ready", get(ready))
        .route("get", "/health/startup", get(startup))
        .route("get", "/health/deps", get(deps))
}

/// The admin health route, relative to `/admin`.
pub fn admin_routes() -> Routes {
    Routes::new().route("get", "/health", get(admin_health))
}

fn answer(probe: ProbeResponse) -> Response {
    let status = StatusCode::from_u16(probe.status_code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (status, Json(probe.report)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Liveness: never touches a dependency, so a slow database cannot get the pod restarted.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is alive and its runtime turns", body = Report)))]
pub async fn live(State(state): State<AppState>) -> Response {
    answer(state.health.liveness().await)
}

/// Readiness: the critical dependencies; 200 with `degraded` when only non-critical ones fail.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready (status `healthy` or `degraded`)", body = Report),
        (status = 503, description = "Not ready: a critical dependency is unhealthy, startup is not complete, or shutdown began", body = Report),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    answer(state.health.readiness(View::Public).await)
}

/// Startup: 503 until the service has finished starting.
#[utoipa::path(get, path = "/health/startup", tag = "health",
    responses(
        (status = 200, description = "Startup complete", body = Report),
        (status = 503, description = "Still starting", body = Report),
    ))]
pub async fn startup(State(state): State<AppState>) -> Response {
    answer(state.health.startup().await)
}

/// Every dependency with its status and latency.
#[utoipa::path(get, path = "/health/deps", tag = "health",
    responses(
        (status = 200, description = "Every check (status `healthy` or `degraded`)", body = Report),
        (status = 503, description = "A critical dependency is unhealthy", body = Report),
    ))]
pub async fn deps(State(state): State<AppState>) -> Response {
    answer(state.health.deps(View::Public).await)
}

/// The full report with the checks' own messages and details.
#[utoipa::path(get, path = "/admin/health", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every check with messages and details", body = Report),
        (status = 503, description = "A critical dependency is unhealthy", body = Report),
        (status = 401, description = "Missing or wrong admin token", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_health(State(state): State<AppState>) -> Response {
    answer(state.health.deps(View::Admin).await)
}
