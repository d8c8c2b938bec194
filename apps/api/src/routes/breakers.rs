//! Circuit breakers on the admin API: `GET /admin/circuit-breakers`, `POST
//! /admin/circuit-breakers/{name}/reset` and `/force-open`.
//!
//! Every component that creates a breaker registers it in the app's `BreakerRegistry`, so this list
//! is complete. An unknown name is a 404 problem.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mainstay_resilience::{BreakerSnapshot, UnknownBreaker};

use super::Routes;
use crate::app::AppState;
use crate::problem::{Path, Problem};

/// The breaker routes, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/circuit-breakers", get(list))
        .route("post", "/circuit-breakers/{name}/reset", post(reset))
        .route(
            "post",
            "/circuit-breakers/{name}/force-open",
            post(force_open),
        )
}

fn answer(result: Result<BreakerSnapshot, UnknownBreaker>) -> Response {
    match result {
        Ok(snapshot) => Json(snapshot).into_response(),
        Err(error) => Problem::new(StatusCode::NOT_FOUND, error.to_string()).into_response(),
    }
}

/// Every breaker: name, state, call counts and the time until it admits trial calls.
#[utoipa::path(get, path = "/admin/circuit-breakers", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every registered breaker, sorted by name", body = Vec<Object>),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<BreakerSnapshot>> {
    Json(state.breakers.snapshots())
}

/// Closes a breaker and clears its counts.
#[utoipa::path(post, path = "/admin/circuit-breakers/{name}/reset", tag = "admin", security(("admin_token" = [])),
    params(("name" = String, Path, description = "The breaker's name")),
    responses(
        (status = 200, description = "The breaker after the reset", body = Object),
        (status = 404, description = "No breaker has this name", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reset(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    tracing::warn!(breaker = %name, "admin: circuit breaker reset to closed");
    answer(state.breakers.reset(&name))
}

/// Opens a breaker until it is reset: every call is rejected.
#[utoipa::path(post, path = "/admin/circuit-breakers/{name}/force-open", tag = "admin", security(("admin_token" = [])),
    params(("name" = String, Path, description = "The breaker's name")),
    responses(
        (status = 200, description = "The breaker, forced open", body = Object),
        (status = 404, description = "No breaker has this name", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn force_open(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    tracing::warn!(breaker = %name, "admin: circuit breaker forced open");
    answer(state.breakers.force_open(&name))
}
