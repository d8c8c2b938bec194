//! The `/v1` data API. Every route here runs behind [`crate::auth::require_caller`].

use axum::routing::get;
use axum::{Extension, Json};

use super::Routes;
use crate::auth::Caller;

/// The `/v1` routes, relative to `/v1`.
pub fn routes() -> Routes {
    Routes::new().route("get", "/whoami", get(whoami))
}

/// Who the service takes the caller to be: organisation, tier, plan and pseudonymous principal.
#[utoipa::path(get, path = "/v1/whoami", tag = "v1",
    security(("api_key" = []), ()),
    responses(
        (status = 200, description = "The caller's identity", body = Caller),
        (status = 401, description = "Unknown key, or no key when anonymous callers are not allowed", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Caller> {
    Json(caller)
}
