//! `POST /admin/backups`: a consistent online backup of the record store, its dead-letter queue
//! and the runtime admin settings, written while the service keeps serving. The backup's layout
//! and its verification and restore are described in `docs/operations/backup.md`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mainstay_storage_tiering::{BackupError, BackupTarget};
use serde::{Deserialize, Serialize};

use super::Routes;
use crate::app::AppState;
use crate::problem::Problem;

/// The backup route, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new().route("post", "/backups", post(create))
}

/// Whether a request's `to` is what the schema allows: 1 to 63 characters, none of
/// U+0000-U+001F or U+007F.
fn check_requested_destination(to: &str) -> Result<(), &'static str> {
    let count = to.chars().count();
    if count == 0 || count > 63 || to.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') {
        return Err("`to` must be 1 to 63 characters without control characters");
    }
    Ok(())
}

/// Where to write the backup.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The backup root: a directory path on this host, `file:///dir` or `s3://bucket/prefix`.
    /// The backup goes to `<to>/<backup id>/`. Refused inside the live data directory or the
    /// store's own object-store prefix. Default: `backup.url` (a setting, which may be longer
    /// than 63 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 63, pattern = r"^[^\x00-\x1f\x7f]+$")]
    pub to: Option<String>,
}

/// A backup written.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupCreated {
    /// The backup's id (`<UTC time>-<ULID>`, sorting by creation time).
    pub id: String,
    /// Where it is: `<to>/<id>`.
    pub location: String,
    /// The consistent point's LSN: every write acknowledged up to it is in the backup, none after.
    pub consistent_lsn: u64,
    /// The consistent point's time, unix seconds.
    pub consistent_at: u64,
    /// Files in the backup, `backup.json` not counted.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Records in the backup.
    pub records: u64,
    /// Dead-letter entries in the backup.
    pub dlq_entries: u64,
}

/// Writes a consistent online backup.
#[utoipa::path(post, path = "/admin/backups", tag = "admin", security(("admin_token" = [])),
    request_body = BackupRequest,
    responses(
        (status = 201, description = "The backup is complete (its backup.json written)", body = BackupCreated),
        (status = 400, description = "The body is not a backup request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The destination is not usable, inside the live data directory or object-store prefix, or missing with no `backup.url`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage is disabled, or the store is fenced or closed", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Reading the store or writing the destination failed; no complete backup was written", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(State(state): State<AppState>, body: Bytes) -> Response {
    // An object only: serde would also build the struct from a JSON array.
    let object = serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|error| error.to_string())
        .and_then(|value| {
            if value.is_object() {
                serde_json::from_value::<BackupRequest>(value).map_err(|error| error.to_string())
            } else {
                Err("not a JSON object".to_owned())
            }
        });
    let request: BackupRequest = match object {
        Ok(request) => request,
        Err(error) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be {{\"to\": \"<url>\"}} or {{}} (then `backup.url`): {error}"
                ),
            )
            .into_response();
        }
    };
    let Some(storage) = &state.storage else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage is disabled (storage.enabled = false): there is nothing to back up",
        )
        .into_response();
    };
    let settings = state
        .config
        .storage
        .data_dir
        .join(crate::config::ADMIN_OVERRIDES_FILE);
    // As the schema says, a request's `to` is 1 to 63 characters (a path component stays under
    // the 255 bytes of a file name whatever their encoding), none of U+0000-U+001F or U+007F.
    // `backup.url`, the operator's setting, is not held to the request's schema: a real
    // `s3://bucket/prefix` root is often longer.
    if let Some(to) = &request.to
        && let Err(reason) = check_requested_destination(to)
    {
        return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, reason).into_response();
    }
    let Some(to) = request.to.or_else(|| state.config.backup.url.clone()) else {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no destination: give {\"to\": \"<url>\"}, or set `backup.url`",
        )
        .into_response();
    };
    let target = match BackupTarget::parse(&to) {
        Ok(target) => target.settings_file(settings),
        Err(error) => {
            return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
                .into_response();
        }
    };
    match storage.store.backup(&target).await {
        Ok(manifest) => {
            let created = BackupCreated {
                location: format!("{}/{}", to.trim_end_matches('/'), manifest.id),
                id: manifest.id.clone(),
                consistent_lsn: manifest.consistent_point.lsn,
                consistent_at: manifest.consistent_point.unix_time,
                files: manifest.files.len(),
                bytes: manifest.files.iter().map(|f| f.size).sum(),
                records: manifest.counts.records,
                dlq_entries: manifest.counts.dlq_entries,
            };
            (StatusCode::CREATED, Json(created)).into_response()
        }
        Err(error @ (BackupError::InvalidDestination { .. } | BackupError::InsideLive { .. })) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()).into_response()
        }
        Err(error @ BackupError::Unavailable(_)) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "a backup failed");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}
