//! `GET /metrics`: every metric of the process in the OpenMetrics text format.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Routes;
use crate::app::AppState;

/// The media type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics route.
pub fn routes() -> Routes {
    Routes::new().route("get", "/metrics", get(metrics))
}

/// The scrape endpoint.
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(storage) = &state.storage {
        state.faults.update_gauges(&storage.store, &storage.dlq);
    }
    let mut text = String::with_capacity(16 * 1024);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        tracing::error!(error = %error, "could not encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}
