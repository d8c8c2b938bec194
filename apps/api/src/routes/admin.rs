//! The admin API under `/admin`: its own bearer token, an audit line for every call.
//!
//! The routes exist only when `admin.token` is set. The presented token is compared in constant
//! time (over SHA-256 digests, so its length leaks nothing either). Every call, allowed or refused,
//! writes one log line with target `audit`: the action (method and route), the outcome (status) and
//! the first 16 hex digits of the SHA-256 of the presented token, never the token.
//! Later features add their admin endpoints as files next to this one.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Routes;
use crate::app::AppState;
use crate::problem::{Problem, Query};

/// The admin routes, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/config", get(config))
        .route("get", "/drill/delay", get(delay))
}

/// The admin token, kept as its digest.
#[derive(Debug, Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Keeps the digest of the configured token.
    #[must_use]
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }
}

/// Middleware: admits a call only with the admin token, and audits every call.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let action = format!(
        "{} {}",
        request.method(),
        request.extensions().get::<MatchedPath>().map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned()
        )
    );
    let presented_digest: Option<[u8; 32]> = crate::auth::bearer_token(request.headers())
        .map(|token| Sha256::digest(token.as_bytes()).into());
    let credential_sha256 =
        presented_digest.map_or_else(|| "none".to_owned(), |digest| hex::encode(&digest[..8]));
    let allowed = match (&state.admin_token, presented_digest) {
        (Some(expected), Some(digest)) => bool::from(expected.digest.ct_eq(&digest)),
        _ => false,
    };
    let response = if allowed {
        next.run(request).await
    } else {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "the admin API needs `Authorization: Bearer <admin.token>`",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        .into_response()
    };
    let outcome = response.status().as_u16();
    tracing::info!(target: "audit", action = %action, outcome, allowed, credential_sha256 = %credential_sha256, "admin call");
    response
}

/// The effective configuration, secrets masked, by key.
#[utoipa::path(get, path = "/admin/config", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every configuration key with its effective value", body = Object),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn config(State(state): State<AppState>) -> Json<BTreeMap<String, serde_json::Value>> {
    Json(crate::config::flatten(&state.config))
}

/// The query of [`delay`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DelayQuery {
    /// How long to wait before answering, in milliseconds (at most 60,000).
    #[param(minimum = 0, maximum = 60000)]
    pub ms: u64,
}

/// The longest drill delay.
const MAX_DELAY_MS: u64 = 60_000;

/// A drill endpoint: answers after the given delay, to rehearse draining, timeouts and load
/// balancer behaviour against a running instance.
#[utoipa::path(get, path = "/admin/drill/delay", tag = "admin", security(("admin_token" = [])), params(DelayQuery),
    responses(
        (status = 200, description = "Answered after the delay", body = Object),
        (status = 422, description = "Delay over 60,000 ms", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delay(Query(query): Query<DelayQuery>) -> Response {
    if query.ms > MAX_DELAY_MS {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("ms = {} is over the limit of {MAX_DELAY_MS}", query.ms),
        )
        .into_response();
    }
    tracing::info!(delay_ms = query.ms, "drill: delay started");
    tokio::time::sleep(Duration::from_millis(query.ms)).await;
    Json(serde_json::json!({ "delayed_ms": query.ms })).into_response()
}
