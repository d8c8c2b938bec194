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
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mainstay_dlq::{EntryId, ErrorClass, Filter, RedriveError};
use serde::Deserialize;

use super::Routes;
use crate::app::AppState;
use crate::problem::Problem;

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
    /// Only this error class: `transient`, `permanent`, `exhausted` or `poisoned`.
    pub class: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Entries per page (default 100, at most 1,000).
    pub limit: Option<usize>,
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
pub async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Response {
    let error_class = match query.class.as_deref() {
        None | Some("") => None,
        Some(class) => {
            match serde_json::from_value::<ErrorClass>(serde_json::Value::String(class.to_owned()))
            {
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
    match state
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
    params(("id" = String, Path, description = "The entry's id (a ULID)")),
    responses(
        (status = 200, description = "The entry, payload in base64", body = Object),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an entry id", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn entry(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else {
        return not_an_id(&id);
    };
    match state.dlq.get(id) {
        Some(entry) => Json(entry.view()).into_response(),
        None => Problem::new(StatusCode::NOT_FOUND, format!("no dead-letter entry {id}"))
            .into_response(),
    }
}

/// Redrives the selected entries through their queues' handlers.
#[utoipa::path(post, path = "/admin/dlq/retry", tag = "admin", security(("admin_token" = [])),
    request_body(content = Object, description = "A filter: `{queue, id, error_class, older_than, newer_than}`, every field optional"),
    responses(
        (status = 200, description = "`{matched, succeeded, failed, skipped, cancelled}`", body = Object),
        (status = 409, description = "A selected queue has no registered handler; nothing was redriven", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The filter could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let filter: Filter = if body.is_empty() {
        Filter::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(filter) => filter,
            Err(error) => return unprocessable(format!("the filter could not be read: {error}")),
        }
    };
    match state.dlq.redrive(&filter).await {
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
    params(("id" = String, Path, description = "The entry's id (a ULID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else {
        return not_an_id(&id);
    };
    match state.dlq.delete(id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => Problem::new(StatusCode::NOT_FOUND, format!("no dead-letter entry {id}"))
            .into_response(),
        Err(error) => internal(&error),
    }
}

/// Deletes every entry of a queue.
#[utoipa::path(delete, path = "/admin/dlq", tag = "admin", security(("admin_token" = [])), params(QueueQuery),
    responses((status = 200, description = "`{purged: N}`", body = Object)))]
pub async fn purge(State(state): State<AppState>, Query(query): Query<QueueQuery>) -> Response {
    match state.dlq.purge(&query.queue).await {
        Ok(purged) => Json(serde_json::json!({ "purged": purged })).into_response(),
        Err(error) => internal(&error),
    }
}

/// The queue as a `dlq.json` document, for backups and runbooks.
#[utoipa::path(get, path = "/admin/dlq/export", tag = "admin", security(("admin_token" = [])), params(QueueQuery),
    responses((status = 200, description = "The export document", body = Object)))]
pub async fn export(State(state): State<AppState>, Query(query): Query<QueueQuery>) -> Response {
    match state.dlq.export(&query.queue) {
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
