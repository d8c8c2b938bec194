//! `POST /admin/store/handover`: hands a stopped, fenced instance's data directory to this one.
//!
//! The directory must be readable here (the same host or a shared volume). Its acknowledged
//! records that never reached the object store (the WAL, pending and pinned segments, whole
//! `memory` collections) are replayed through this store's normal write path, except ids this
//! instance wrote since it took over (decision 0072); then its WAL and segments are moved into
//! `handed-over-<unix seconds>/`. Client writes wait while a handover batch runs, so none can
//! slip between the check of an id and its replay. Run it again after any failure: what was
//! handed over is skipped the second time. The runbook is `docs/runbooks/storage-handover.md`.

use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mainstay_storage_tiering::{
    AcceptError, HandoverError, HandoverReport, HandoverSource, StrandedCollection, StrandedRecord,
    WriteError,
};
use serde::{Deserialize, Serialize};

use super::Routes;
use crate::app::{AppState, Storage};
use crate::problem::Problem;

/// Skipped ids listed per collection in the answer at most (the count is always complete).
const LISTED_SKIPS: usize = 100;

/// Records checked and replayed while client writes wait.
const CHUNK_RECORDS: usize = 500;

/// The handover route, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new().route("post", "/store/handover", post(handover))
}

/// What to hand over.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoverRequest {
    /// The fenced instance's `storage.data_dir`, as an absolute path on this host. The instance
    /// must be stopped.
    #[schema(pattern = "^/", min_length = 1, max_length = 4096)]
    pub data_dir: String,
}

/// What happened to one collection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionHandover {
    /// The store's name of the collection.
    pub collection: String,
    /// Its tiering policy in the handed-over directory.
    pub policy: String,
    /// The collection did not exist here and was created.
    pub created: bool,
    /// Records written here.
    pub applied: usize,
    /// Records skipped because this instance wrote the id after it took over (its version kept).
    pub skipped: usize,
    /// Records already here: the same value (handed over before), or a newer version committed
    /// before the takeover; and deletes of ids not here.
    pub superseded: usize,
    /// The first skipped ids (at most 100), for reconciliation.
    pub skipped_ids: Vec<String>,
}

/// The outcome of a handover.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HandoverOutcome {
    /// Per collection of the directory.
    pub collections: Vec<CollectionHandover>,
    /// Where the directory's WAL and segments were moved.
    pub moved_to: String,
}

fn source_problem(error: &HandoverError) -> Response {
    let status = match error {
        HandoverError::Locked(_) => StatusCode::CONFLICT,
        HandoverError::NotADataDirectory(_) => StatusCode::NOT_FOUND,
        HandoverError::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Problem::new(status, error.to_string()).into_response()
}

/// Replays a stopped instance's stranded records into this one, then moves its WAL and
/// segments aside.
#[utoipa::path(post, path = "/admin/store/handover", tag = "admin", security(("admin_token" = [])),
    request_body = HandoverRequest,
    responses(
        (status = 200, description = "Every record was handed over or skipped; the directory's WAL and segments were moved aside", body = HandoverOutcome),
        (status = 404, description = "No data directory of the store (no readable `catalog.json`) at this path", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The directory is locked (stop the fenced instance first), or it is this instance's own", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The path is not absolute, or the directory is corrupt", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A record could not be read or written here (fenced, WAL failed, object store down); nothing was moved: run it again", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn handover(
    storage: Storage,
    State(state): State<AppState>,
    crate::problem::Json(request): crate::problem::Json<HandoverRequest>,
) -> Response {
    let data_dir = PathBuf::from(&request.data_dir);
    if !data_dir.is_absolute() || request.data_dir.len() > 4096 {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "data_dir must be an absolute path (at most 4,096 bytes)",
        )
        .into_response();
    }
    // Whatever cannot be a data directory (missing, a file, unreadable, a name the file system
    // refuses) is a 404 here, never a failure of this instance.
    if !std::fs::metadata(data_dir.join("catalog.json")).is_ok_and(|meta| meta.is_file()) {
        return Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "{} is not a data directory of the store (no readable catalog.json); pass the fenced instance's storage.data_dir",
                data_dir.display()
            ),
        )
        .into_response();
    }
    let own = std::fs::canonicalize(&state.config.storage.data_dir).ok();
    if own.is_some() && std::fs::canonicalize(&data_dir).ok() == own {
        return Problem::new(
            StatusCode::CONFLICT,
            "this is the instance's own data directory; pass the fenced instance's storage.data_dir",
        )
        .into_response();
    }
    // The work runs on its own task: a request that times out does not cut it short.
    let task = tokio::spawn(run(state, storage, data_dir));
    match task.await {
        Ok(response) => response,
        Err(error) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the handover task failed: {error}; run it again"),
        )
        .into_response(),
    }
}

async fn run(state: AppState, storage: Storage, data_dir: PathBuf) -> Response {
    let opened = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || HandoverSource::open(&data_dir)).await
    };
    let source = match opened {
        Ok(Ok(source)) => source,
        Ok(Err(error)) => return source_problem(&error),
        Err(error) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
                .into_response();
        }
    };
    tracing::warn!(data_dir = %data_dir.display(), collections = source.collections().len(), "handover started");
    let mut collections = Vec::new();
    for stranded in source.collections() {
        let mut report = HandoverReport::default();
        // A chunk at a time, so that client writes wait for one chunk at most, never for a
        // whole collection; an empty collection is still created.
        let mut chunks: Vec<&[StrandedRecord]> = stranded.records.chunks(CHUNK_RECORDS).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for records in chunks {
            let chunk = StrandedCollection {
                name: stranded.name.clone(),
                policy: stranded.policy,
                records: records.to_vec(),
            };
            let accepted = {
                // Client writes wait meanwhile, so that none lands between a check and its
                // replay.
                let _exclusive = storage.write_gate.write().await;
                storage
                    .store
                    .accept_handover(&chunk, storage.takeover_lsn)
                    .await
            };
            match accepted {
                Ok(done) => {
                    report.created |= done.created;
                    report.applied += done.applied;
                    report.superseded += done.superseded;
                    report.skipped.extend(done.skipped);
                }
                Err(AcceptError::Write(WriteError::Fenced(fenced))) => {
                    return state.faults.fenced(&fenced);
                }
                Err(error) => {
                    tracing::error!(collection = %stranded.name, error = %error, "handover stopped; nothing was moved aside");
                    return Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "collection {:?}: {error}; nothing was moved aside, run the handover again",
                            stranded.name
                        ),
                    )
                    .into_response();
                }
            }
        }
        tracing::info!(
            collection = %stranded.name,
            created = report.created,
            applied = report.applied,
            skipped = report.skipped.len(),
            superseded = report.superseded,
            "handover: collection done"
        );
        collections.push(CollectionHandover {
            collection: stranded.name.clone(),
            policy: stranded.policy.as_str().to_owned(),
            created: report.created,
            applied: report.applied,
            skipped: report.skipped.len(),
            superseded: report.superseded,
            skipped_ids: report.skipped.into_iter().take(LISTED_SKIPS).collect(),
        });
    }
    let moved = tokio::task::spawn_blocking(move || source.finish()).await;
    match moved {
        Ok(Ok(moved_to)) => {
            tracing::warn!(data_dir = %data_dir.display(), moved_to = %moved_to.display(), "handover finished");
            Json(HandoverOutcome {
                collections,
                moved_to: moved_to.display().to_string(),
            })
            .into_response()
        }
        Ok(Err(error)) => source_problem(&error),
        Err(error) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}
