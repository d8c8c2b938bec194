//! The OpenAPI document, generated from the handlers' annotations, and `GET /openapi.json`.

use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Routes;

/// The API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "mainstay-api", description = "The mainstay reference API.\n\nTwo modes (docs/operations/stateless.md): with `storage.enabled = true` (the default) every operation here is served; with `storage.enabled = false` (the stateless mode, an API gateway that scales horizontally) the operations marked `x-mainstay-mode: stateful` (the records API under `/v1/collections`, and `/admin/dlq`, `/admin/collections/...`, `/admin/store/...`) are not served and answer 404 problem+json of type `.../storage-disabled`, as do the `compaction` and `dlq` sections of `/admin/config/{section}`. Operations marked `x-mainstay-mode: all` are served in both modes.", license(name = "MIT OR Apache-2.0")),
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
        super::backups::create,
        super::breakers::list,
        super::breakers::reset,
        super::breakers::force_open,
        super::dlq::list,
        super::dlq::entry,
        super::dlq::retry,
        super::dlq::delete,
        super::dlq::purge,
        super::dlq::export,
        super::organisations::export,
        super::organisations::erase,
        super::organisations::erasure_status,
    ),
    components(schemas(crate::problem::Problem, crate::auth::Caller)),
    modifiers(&SecuritySchemes, &CommonProblems, &Modes),
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

/// Adds the problems that layers, not handlers, answer to every operation they apply to, so that
/// no route can forget one: 401 (authentication) on `/v1` and `/admin`, 429 (rate limit and
/// failed-authentication throttle) on `/v1`, 422 (a parameter or body the extractors refuse) where
/// an operation has parameters or a body, 413 (`server.body_limit_bytes`) and 415 (not declared as
/// JSON) where it has a body, and 504 (`server.request_timeout`) everywhere. A handler's own
/// description of a status wins. 405 is not listed: it answers methods the document does not
/// give a path, with an `Allow` header.
#[derive(Debug)]
struct CommonProblems;

impl CommonProblems {
    fn problem(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                crate::problem::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
            .into()
    }

    fn add(operation: &mut utoipa::openapi::path::Operation, path: &str) {
        let mut statuses: Vec<(&str, &str)> = Vec::new();
        if path.starts_with("/v1/") {
            statuses.push((
                "401",
                "No API key when anonymous callers are not allowed, or an unknown key (`WWW-Authenticate: Bearer`)",
            ));
            statuses.push((
                "429",
                "Over the rate limit, or too many failed authentications from this client; retry after `Retry-After`",
            ));
            statuses.push((
                "403",
                "The key's organisation was erased (`type` ends in `/organisation-erased`); an operator removes the key or issues a new one",
            ));
        }
        if path.starts_with("/admin/") {
            statuses.push((
                "401",
                "Missing or wrong admin token (`WWW-Authenticate: Bearer`)",
            ));
        }
        let has_parameters = operation
            .parameters
            .as_ref()
            .is_some_and(|parameters| !parameters.is_empty());
        if has_parameters || operation.request_body.is_some() {
            statuses.push((
                "422",
                "A parameter or the body does not match the document (the detail names it)",
            ));
        }
        if let Some(body) = &operation.request_body {
            statuses.push((
                "413",
                "The body is larger than `server.body_limit_bytes` (or a storage limit)",
            ));
            if body.content.keys().any(|media| media.ends_with("json")) {
                statuses.push(("415", "The body is not declared as `application/json`"));
            }
        }
        statuses.push((
            "504",
            "The request took longer than `server.request_timeout`; its outcome is unknown (retry it: writes are idempotent)",
        ));
        for (status, description) in statuses {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| Self::problem(description));
        }
    }
}

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                Self::add(operation, path);
            }
        }
    }
}

/// Marks every operation with the modes that serve it: `x-mainstay-mode: stateful` for those
/// served only with a record store ([`super::STORAGE_PATHS`]), with a sentence in the description
/// and the 404 a stateless instance answers; `x-mainstay-mode: all` for the others.
#[derive(Debug)]
struct Modes;

/// The sentence added to the description of an operation served only with a record store.
const STATEFUL_ONLY: &str = "Served only with `storage.enabled = true`; a stateless instance (`storage.enabled = false`) answers 404 problem+json of type `.../storage-disabled`.";

impl Modify for Modes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::extensions::ExtensionsBuilder;
        for (path, item) in &mut openapi.paths.paths {
            let stateful = super::needs_storage(path);
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let mode = if stateful { "stateful" } else { "all" };
                let extensions = ExtensionsBuilder::new()
                    .add("x-mainstay-mode", serde_json::Value::from(mode))
                    .build();
                match &mut operation.extensions {
                    Some(existing) => existing.merge(extensions),
                    None => operation.extensions = Some(extensions),
                }
                if !stateful {
                    continue;
                }
                operation.description = Some(match operation.description.take() {
                    Some(description) if !description.is_empty() => {
                        format!("{description}\n\n{STATEFUL_ONLY}")
                    }
                    _ => STATEFUL_ONLY.to_owned(),
                });
                operation
                    .responses
                    .responses
                    .entry("404".to_owned())
                    .or_insert_with(|| {
                        CommonProblems::problem(
                            "A stateless instance (`storage.enabled = false`) does not serve this operation (`.../storage-disabled`)",
                        )
                    });
            }
        }
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
