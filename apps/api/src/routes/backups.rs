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

/// The longest backup root: an S3 object key's limit, and far under a local path's.
const MAX_DESTINATION_BYTES: usize = 1024;
/// The longest part of a backup root between slashes: a file name's limit.
const MAX_COMPONENT_BYTES: usize = 255;

/// Whether `to` may name a backup root, as the schema says: 1 to 1,024 bytes, no part between
/// slashes over 255 bytes, none of U+0000-U+001F or U+007F. The message says which rule failed.
fn check_destination(to: &str) -> Result<(), String> {
    if to.is_empty() || to.len() > MAX_DESTINATION_BYTES {
        return Err(format!(
            "`to` must be 1 to {MAX_DESTINATION_BYTES} bytes long, not {}",
            to.len()
        ));
    }
    if to.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') {
        return Err("`to` must not contain control characters".to_owned());
    }
    if let Some(long) = to.split('/').find(|part| part.len() > MAX_COMPONENT_BYTES) {
        return Err(format!(
            "each part of `to` between slashes must be at most {MAX_COMPONENT_BYTES} bytes; one is {}",
            long.len()
        ));
    }
    Ok(())
}

/// Where to write the backup.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The backup root: a directory path on this host, `file:///dir` or `s3://bucket/prefix`.
    /// The backup goes to `<to>/<backup id>/`. At most 1,024 bytes (an S3 key's limit), no part
    /// between slashes over 255 bytes (a file name's), no control characters. Refused inside
    /// the live data directory or the store's own object-store prefix. Default: `backup.url`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[^\x00-\x1f\x7f]+$")]
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
    let Some(to) = request.to.or_else(|| state.config.backup.url.clone()) else {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no destination: give {\"to\": \"<url>\"}, or set `backup.url`",
        )
        .into_response();
    };
    if let Err(reason) = check_destination(&to) {
        return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, reason).into_response();
    }
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

#[cfg(test)]
mod tests {
    use super::check_destination;

    #[test]
    fn a_destination_is_limited_by_bytes_and_by_part_not_to_63_characters() {
        let s3 = "s3://company-backups-eu-west-1/production/mainstay-api/orders-service/hourly";
        assert!(s3.len() > 63);
        assert_eq!(check_destination(s3), Ok(()));
        let deep = format!("/var/backups/{}", vec!["d".repeat(200); 4].join("/"));
        assert_eq!(check_destination(&deep), Ok(()));
        let part = check_destination(&format!("/var/backups/{}", "é".repeat(128))).unwrap_err();
        assert!(part.contains("at most 255 bytes; one is 256"), "{part}");
        let long = check_destination(&"/a".repeat(513)).unwrap_err();
        assert!(long.contains("1 to 1024 bytes long, not 1026"), "{long}");
        assert!(check_destination("").is_err());
        assert!(
            check_destination("/tmp/x\ny")
                .unwrap_err()
                .contains("control")
        );
    }
}
