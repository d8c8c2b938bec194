//! The OpenAPI document, generated from the handlers' annotations, and `GET /openapi.json`.

use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Routes;

/// The API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "mainstay-api", description = "The mainstay reference API", license(name = "MIT OR Apache-2.0")),
    paths(
        super::health::live,
        super::health::ready,
        super::health::startup,
        super::health::deps,
        super::health::admin_health,
        super::metrics::metrics,
        openapi_json,
        super::v1::whoami,
        super::collections::create,
        super::collections::list_collections,
        super::collections::drop_collection,
        super::collections::put_record,
        super::collections::get_record,
        super::collections::delete_record,
        super::collections::put_batch,
        super::collections::list_records,
        super::collections::compact,
        super::handover::handover,
        super::wal_damage::list,
        super::wal_damage::acknowledge,
        super::admin::config,
        super::runtime_config::read,
        super::runtime_config::write,
        super::admin::delay,
        super::breakers::list,
        super::breakers::reset,
        super::breakers::force_open,
        super::dlq::list,
        super::dlq::entry,
        super::dlq::retry,
        super::dlq::delete,
        super::dlq::purge,
        super::dlq::export,
    ),
    components(schemas(crate::problem::Problem, crate::auth::Caller)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// Adds the two ways of authenticating.
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON with a trailing newline, as committed in `docs/openapi.json`.
#[must_use]
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    let mut text = doc.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// The document, generated once per process.
static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The OpenAPI route.
pub fn routes() -> Routes {
    Routes::new().route("get", "/openapi.json", get(openapi_json))
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "observability",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get_or_init(document).as_str(),
    )
        .into_response()
}
