//! `GET /health/live`: liveness, answered from process state alone.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::Routes;

/// The liveness answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `healthy` while the process can answer.
    pub status: &'static str,
}

/// The health routes.
pub fn routes() -> Routes {
    Routes::new().route("get", "/health/live", get(live))
}

/// Liveness: never touches a dependency, so a slow database cannot get the pod restarted.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is alive", body = Liveness)))]
pub async fn live() -> Response {
    no_store(Json(Liveness { status: "healthy" }).into_response())
}

/// Marks a health answer as never cacheable.
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
