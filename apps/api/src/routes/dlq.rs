//! The dead-letter queue on the admin API.
//!
//! - `GET /admin/dlq?queue=&class=&cursor=&limit=`: a page of entries (without payloads), in id
//!   order, with the cursor of the next page.
//! - `GET /admin/dlq/{id}`: one entry with its payload (base64).
//! - `POST /admin/dlq/retry`: redrives the entries a filter selects through their queue's
//!   registered handler; answers how many succeeded and failed, or 409 when a queue has no
//!   handler (nothing moves then).
//! - `DELETE /admin/dlq/{id}`, `DELETE /admin/dlq?queue=`: delete one entry, or purge a queue.
//! - `GET /admin/dlq/export?queue=`: the queue as the `dlq.json` document operators keep.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mainstay_dlq::{EntryId, FailureClass, Filter, RedriveError};
use serde::Deserialize;

use super::Routes;
use crate::app::Storage;
use crate::problem::{Path, Problem, Query};

/// The DLQ routes, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/dlq", get(list))
        .route("delete", "/dlq", axum::routing::delete(purge))
        .route("get", "/dlq/export", get(export))
        .route("post", "/dlq/retry", post(retry))
        .route("get", "/dlq/{id}", get(entry))
        .route("delete", "/dlq/{id}", axum::routing::delete(delete))
}

/// The query of `GET /admin/dlq`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this error class.
    #[param(value_type = Option<ErrorClassName>)]
    pub class: Option<String>,
    /// The `next_cursor` of the previous page (an entry id, a ULID).
    #[param(pattern = r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")]
    pub cursor: Option<String>,
    /// Entries per page: 1 to 1,000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Why an entry's work failed.
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = ErrorClass)]
#[allow(dead_code, reason = "the schema of `mainstay_dlq::FailureClass`")]
pub enum ErrorClassName {
    /// Failed in a way a retry may fix.
    #[schema(rename = "transient")]
    Transient,
    /// Failed in a way a retry cannot fix.
    #[schema(rename = "permanent")]
    Permanent,
    /// Retried until its attempts ran out.
    #[schema(rename = "exhausted")]
    Exhausted,
    /// Crashed or hung its handler.
    #[schema(rename = "poisoned")]
    Poisoned,
}

/// Entries per page at most.
const MAX_PAGE: usize = 1_000;

/// The durations a redrive filter takes: up to four `<number><unit>` parts separated by
/// spaces, units `ns`, `us`, `ms`, `s`, `m`, `h`, `d`, `w` (`1h 30m`).
fn valid_duration(text: &str) -> bool {
    let parts: Vec<&str> = text.split(' ').collect();
    parts.len() <= 4
        && parts.iter().all(|part| {
            let digits = part.bytes().take_while(u8::is_ascii_digit).count();
            (1..=9).contains(&digits)
                && matches!(
                    &part[digits..],
                    "ns" | "us" | "ms" | "s" | "m" | "h" | "d" | "w"
                )
        })
}

/// The body of `POST /admin/dlq/retry`: which entries to redrive. Every field is optional; an
/// empty body or `{}` selects every entry.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this entry (a ULID).
    #[schema(pattern = r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")]
    pub id: Option<String>,
    /// Only this error class.
    #[schema(value_type = Option<ErrorClassName>)]
    pub error_class: Option<FailureClass>,
    /// Only entries whose first failure is at least this old (`1h 30m`: up to four parts of
    /// 1-9 digits and a unit of `ns`, `us`, `ms`, `s`, `m`, `h`, `d`, `w`).
    #[schema(
        pattern = r"^[0-9]{1,9}(?:ns|us|ms|s|m|h|d|w)(?: [0-9]{1,9}(?:ns|us|ms|s|m|h|d|w)){0,3}$"
    )]
    pub older_than: Option<String>,
    /// Only entries whose first failure is at most this old (as `older_than`).
    #[schema(
        pattern = r"^[0-9]{1,9}(?:ns|us|ms|s|m|h|d|w)(?: [0-9]{1,9}(?:ns|us|ms|s|m|h|d|w)){0,3}$"
    )]
    pub newer_than: Option<String>,
}

impl RetryFilter {
    /// The DLQ's filter, or why a field is not allowed.
    fn into_filter(self) -> Result<Filter, String> {
        let id = match self.id {
            None => None,
            Some(id) => Some(
                id.parse::<EntryId>()
                    .map_err(|_| format!("id `{id}` is not a dead-letter entry id (a ULID)"))?,
            ),
        };
        let duration = |key: &str, text: Option<String>| match text {
            None => Ok(None),
            Some(text) if valid_duration(&text) => humantime::parse_duration(&text)
                .map(Some)
                .map_err(|error| format!("{key} `{text}`: {error}")),
            Some(text) => Err(format!(
                "{key} `{text}` is not a duration such as `1h 30m` (1-4 parts of 1-9 digits and a unit of ns, us, ms, s, m, h, d, w)"
            )),
        };
        Ok(Filter {
            queue: self.queue,
            id,
            error_class: self.error_class,
            older_than: duration("older_than", self.older_than)?,
            newer_than: duration("newer_than", self.newer_than)?,
        })
    }
}

/// The query naming one queue.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// The queue.
    pub queue: String,
}

fn unprocessable(detail: impl Into<String>) -> Response {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail).into_response()
}

fn internal(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "dlq operation failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the dead-letter queue could not be written: {error}"),
    )
    .into_response()
}

fn not_an_id(id: &str) -> Response {
    unprocessable(format!("`{id}` is not a dead-letter entry id (a ULID)"))
}

/// A page of entries, without payloads.
#[utoipa::path(get, path = "/admin/dlq", tag = "admin", security(("admin_token" = [])), params(ListQuery),
    responses(
        (status = 200, description = "`{entries: [...], next_cursor}`", body = Object),
        (status = 422, description = "Unknown class or invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(storage: Storage, Query(query): Query<ListQuery>) -> Response {
    if query
        .limit
        .is_some_and(|limit| limit == 0 || limit > MAX_PAGE)
    {
        return unprocessable(format!("limit must be 1 to {MAX_PAGE}"));
    }
    let error_class = match query.class.as_deref() {
        None => None,
        Some(class) => {
            match serde_json::from_value::<FailureClass>(serde_json::Value::String(
                class.to_owned(),
            )) {
                Ok(class) => Some(class),
                Err(_) => {
                    return unprocessable(format!(
                        "class `{class}` is not one of transient, permanent, exhausted, poisoned"
                    ));
                }
            }
        }
    };
    let filter = Filter {
        queue: query.queue.filter(|queue| !queue.is_empty()),
        error_class,
        ..Filter::default()
    };
    match storage
        .dlq
        .list(&filter, query.cursor.as_deref(), query.limit.unwrap_or(0))
    {
        Ok(page) => Json(serde_json::json!({
            "entries": page.entries.iter().map(mainstay_dlq::Entry::summary).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }))
        .into_response(),
        Err(error) => unprocessable(error.to_string()),
    }
}

/// One entry with its payload.
#[utoipa::path(get, path = "/admin/dlq/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The entry's id (a ULID)", pattern = r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 200, description = "The entry, payload in base64", body = Object),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an entry id", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn entry(storage: Storage, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else {
        return not_an_id(&id);
    };
    match storage.dlq.get(id) {
        Some(entry) => Json(entry.view()).into_response(),
        None => Problem::new(StatusCode::NOT_FOUND, format!("no dead-letter entry {id}"))
            .into_response(),
    }
}

/// Redrives the selected entries through their queues' handlers.
#[utoipa::path(post, path = "/admin/dlq/retry", tag = "admin", security(("admin_token" = [])),
    request_body(content = Option<RetryFilter>, content_type = "application/json", description = "Which entries: every field optional; no body selects every entry"),
    responses(
        (status = 200, description = "`{matched, succeeded, failed, skipped, cancelled}`", body = Object),
        (status = 409, description = "A selected queue has no registered handler; nothing was redriven", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The filter could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry(
    storage: Storage,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let requested: RetryFilter = if body.is_empty() {
        RetryFilter::default()
    } else if !crate::problem::is_json(&headers) {
        return crate::problem::not_json().into_response();
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Null) => RetryFilter::default(),
            Ok(_) => match crate::problem::json_object(&body) {
                Ok(filter) => filter,
                Err(problem) => return (*problem).into_response(),
            },
            Err(error) => return unprocessable(format!("the filter could not be read: {error}")),
        }
    };
    let filter = match requested.into_filter() {
        Ok(filter) => filter,
        Err(detail) => return unprocessable(detail),
    };
    match storage.dlq.redrive(&filter).await {
        Ok(report) => {
            tracing::info!(
                succeeded = report.succeeded,
                failed = report.failed,
                "admin: dlq redrive finished"
            );
            Json(report).into_response()
        }
        Err(error @ RedriveError::NoHandler { .. }) => {
            Problem::new(StatusCode::CONFLICT, error.to_string()).into_response()
        }
        Err(error) => internal(&error),
    }
}

/// Deletes one entry.
#[utoipa::path(delete, path = "/admin/dlq/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The entry's id (a ULID)", pattern = r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(storage: Storage, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else {
        return not_an_id(&id);
    };
    match storage.dlq.delete(id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => Problem::new(StatusCode::NOT_FOUND, format!("no dead-letter entry {id}"))
            .into_response(),
        Err(error) => internal(&error),
    }
}

/// Deletes every entry of a queue.
#[utoipa::path(delete, path = "/admin/dlq", tag = "admin", security(("admin_token" = [])), params(QueueQuery),
    responses((status = 200, description = "`{purged: N}`", body = Object)))]
pub async fn purge(storage: Storage, Query(query): Query<QueueQuery>) -> Response {
    match storage.dlq.purge(&query.queue).await {
        Ok(purged) => Json(serde_json::json!({ "purged": purged })).into_response(),
        Err(error) => internal(&error),
    }
}

/// The queue as a `dlq.json` document, for backups and runbooks.
#[utoipa::path(get, path = "/admin/dlq/export", tag = "admin", security(("admin_token" = [])), params(QueueQuery),
    responses((status = 200, description = "The export document", body = Object)))]
pub async fn export(storage: Storage, Query(query): Query<QueueQuery>) -> Response {
    match storage.dlq.export(&query.queue) {
        Ok(json) => {
            let mut response = json.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => internal(&error),
    }
}
