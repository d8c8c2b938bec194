//! The data API: collections of records on `mainstay-storage-tiering`, per organisation.
//!
//! Every route runs behind authentication and the rate limiter. A caller sees only its own
//! organisation's collections: the store's collection name is a tag of the organisation (the first
//! 12 hex digits of its SHA-256) joined to the name the caller gave, so no input reaches a path and
//! one organisation cannot name another's collection. Names the caller gives match
//! `[a-z0-9][a-z0-9_-]{0,50}` (the tag takes the rest of the store's 64 characters).
//!
//! Writes are acknowledged once fsync'd to the WAL. Past the local backlog bound they are refused
//! with 503 and `Retry-After`, never dropped. With the object store unavailable, a listing answers
//! what memory and the cache hold with `degraded: true`; a single read that needs the store is a
//! 503 problem with the same fields, never a false 404.
//!
//! With `storage.encryption` on, every value is sealed with the organisation's data key before it
//! reaches the store (bound to the store's collection name and the record id) and opened on the
//! way out; ids and collection names stay plain. A value of an erased organisation answers 403 of
//! type `.../organisation-erased`; one that does not authenticate answers 500 of type
//! `.../damaged-record` naming the collection and id, counted in
//! `keyring_operations_total{operation="open",outcome="damaged"}`.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use mainstay_storage_tiering::keyring::KeyringError;
use mainstay_storage_tiering::{
    CollectionError, ListQuery, ReadError, TieringPolicy, WalError, WriteError,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Routes;
use crate::app::{AppState, Storage};
use crate::auth::Caller;
use crate::problem::{Path, Problem, Query};

/// Longest collection name a caller may give.
const MAX_NAME: usize = 51;

/// The data routes, relative to `/v1`.
pub fn routes() -> Routes {
    Routes::new()
        .route("post", "/collections", post(create))
        .route("get", "/collections", get(list_collections))
        .route(
            "delete",
            "/collections/{collection}",
            axum::routing::delete(drop_collection),
        )
        .route("post", "/collections/{collection}/records", post(put_batch))
        .route(
            "get",
            "/collections/{collection}/records",
            get(list_records),
        )
        .route(
            "put",
            "/collections/{collection}/records/{id}",
            put(put_record),
        )
        .route(
            "get",
            "/collections/{collection}/records/{id}",
            get(get_record),
        )
        .route(
            "delete",
            "/collections/{collection}/records/{id}",
            axum::routing::delete(delete_record),
        )
}

/// The admin routes of the store, relative to `/admin`.
pub fn admin_routes() -> Routes {
    Routes::new().route("post", "/collections/{id}/compact", post(compact))
}

/// Compacts a collection now: merges its segments, drops overwritten records and tombstones.
/// `id` is the store's name of the collection (organisation tag, `-`, name), as the
/// `storage_*` metrics and logs show it.
#[utoipa::path(post, path = "/admin/collections/{id}/compact", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The store's collection name")),
    responses(
        (status = 200, description = "`{merged_segments: N}`", body = Object),
        (status = 404, description = "No such collection", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The compaction failed; nothing was lost", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn compact(storage: Storage, Path(id): Path<String>) -> Response {
    match storage.store.compact(&id).await {
        Ok(merged) => {
            tracing::info!(collection = %id, merged, "admin: compaction finished");
            Json(serde_json::json!({ "merged_segments": merged })).into_response()
        }
        Err(mainstay_storage_tiering::MaintenanceError::UnknownCollection(_)) => {
            status_problem(StatusCode::NOT_FOUND, format!("no collection {id:?}"))
        }
        Err(error) => status_problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The organisation's tag: the first 12 hex digits of its SHA-256, which every store name of
/// its collections starts with (then `-`).
pub(crate) fn tag(organisation: &str) -> String {
    hex::encode(&Sha256::digest(organisation.as_bytes())[..6])
}

/// The store's name of the caller's collection, or a 422 when the name is not allowed.
fn internal_name(caller: &Caller, name: &str) -> Result<String, Box<Problem>> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().enumerate().all(|(index, byte)| {
            byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || (index > 0 && matches!(byte, b'_' | b'-'))
        });
    if !valid {
        return Err(Box::new(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "collection name {name:?} is not allowed: use 1-{MAX_NAME} characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
            ),
        )));
    }
    Ok(format!("{}-{name}", tag(&caller.organisation)))
}

/// The store's name of the caller's collection named by the `{collection}` path segment: a 422
/// problem when the name is not allowed.
#[derive(Debug)]
pub struct OrgCollection(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OrgCollection {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        let Some(caller) = parts.extensions.get::<Caller>().cloned() else {
            return Err(status_problem(
                StatusCode::UNAUTHORIZED,
                "the caller is not authenticated",
            ));
        };
        let Path(params) =
            Path::<std::collections::BTreeMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
        let collection = params
            .get("collection")
            .map(String::as_str)
            .unwrap_or_default();
        internal_name(&caller, collection)
            .map(OrgCollection)
            .map_err(|problem| problem.into_response())
    }
}

fn status_problem(status: StatusCode, detail: impl Into<String>) -> Response {
    Problem::new(status, detail).into_response()
}

fn write_error(state: &AppState, error: WriteError) -> Response {
    match error {
        WriteError::Fenced(fenced) => state.faults.fenced(&fenced),
        // Too many records breaks the document's `maxItems`, like an empty batch its `minItems`:
        // a 422; 413 is for bytes.
        WriteError::InvalidCollection(_)
        | WriteError::InvalidId
        | WriteError::EmptyBatch
        | WriteError::TooManyRecords { .. } => {
            status_problem(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        WriteError::UnknownCollection(_) => {
            status_problem(StatusCode::NOT_FOUND, "no such collection; create it first")
        }
        WriteError::ValueTooLarge { .. } | WriteError::BatchTooLarge { .. } => {
            status_problem(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        WriteError::Backpressure { retry_after, .. } => {
            let seconds = retry_after.as_secs().max(1).to_string();
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
                .with_header(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&seconds).unwrap_or(HeaderValue::from_static("1")),
                )
                .into_response()
        }
        other => {
            if let WriteError::Wal(wal @ (WalError::Failed(_) | WalError::Io { .. })) = &other {
                state.faults.wal_failed(wal);
            } else {
                tracing::error!(error = %other, "write failed");
            }
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the write was not acknowledged: {other}; retry"),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            .into_response()
        }
    }
}

/// The answer to a keyring failure on record `id` of the store's collection `name`.
fn keyring_error(error: &KeyringError, name: &str, id: &str) -> Response {
    // The caller's name of the collection: the store's less the organisation tag.
    let collection = name.split_once('-').map_or(name, |(_, rest)| rest);
    match error {
        KeyringError::Erased => Problem::typed(
            StatusCode::FORBIDDEN,
            "organisation-erased",
            "organisation erased",
            "this organisation was erased: its data key was destroyed, so its records can be neither read nor written",
        )
        .into_response(),
        KeyringError::Unavailable(_) => {
            tracing::warn!(error = %error, "keyring unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the key store is unavailable: {error}; retry"),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            .into_response()
        }
        _ => {
            tracing::error!(error = %error, collection, id, "record value does not open");
            Problem::typed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "damaged-record",
                "damaged record",
                format!(
                    "record {id:?} of collection {collection:?} cannot be decrypted ({error}); it is never served corrupt"
                ),
            )
            .into_response()
        }
    }
}

/// The value to store for record `id`: sealed with the organisation's data key when encryption
/// is on (after the size check against the configured limit, so that the seal's overhead never
/// refuses a value within it), as given otherwise.
async fn seal(
    state: &AppState,
    caller: &Caller,
    name: &str,
    id: &str,
    value: Bytes,
) -> Result<Bytes, Response> {
    let Some(keyring) = &state.keyring else {
        return Ok(value);
    };
    let limit = state.config.storage.limits.max_value_bytes;
    if value.len() > limit {
        return Err(write_error(
            state,
            WriteError::ValueTooLarge {
                size: value.len(),
                limit,
            },
        ));
    }
    keyring
        .seal(&caller.organisation, name, id, &value)
        .await
        .map(Bytes::from)
        .map_err(|error| keyring_error(&error, name, id))
}

/// A stored value as the caller wrote it: opened when it is sealed.
async fn open(
    state: &AppState,
    caller: &Caller,
    name: &str,
    id: &str,
    stored: Bytes,
) -> Result<Bytes, Response> {
    let Some(keyring) = &state.keyring else {
        return Ok(stored);
    };
    keyring
        .open(&caller.organisation, name, id, &stored)
        .await
        .map_err(|error| keyring_error(&error, name, id))
}

/// The degraded fields, on a 503 read as on a degraded listing.
#[derive(Debug, Serialize)]
struct Degraded {
    degraded: bool,
    unavailable_sources: Vec<String>,
    partial_results: bool,
}

fn read_error(error: ReadError) -> Response {
    match error {
        ReadError::InvalidCollection(_)
        | ReadError::InvalidId
        | ReadError::InvalidPrefix
        | ReadError::InvalidCursor
        | ReadError::PageTooLarge { .. } => {
            status_problem(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        ReadError::UnknownCollection(_) => {
            status_problem(StatusCode::NOT_FOUND, "no such collection")
        }
        ReadError::Unavailable(_) => {
            let mut problem = serde_json::to_value(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.to_string(),
            ))
            .unwrap_or_default();
            if let (Some(object), Ok(serde_json::Value::Object(fields))) = (
                problem.as_object_mut(),
                serde_json::to_value(Degraded {
                    degraded: true,
                    unavailable_sources: vec!["object_store".into()],
                    partial_results: true,
                }),
            ) {
                object.extend(fields);
            }
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, problem.to_string()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::problem::PROBLEM_JSON),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        other => {
            tracing::error!(error = %other, "read failed");
            status_problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored data could not be read; it is never served corrupt",
            )
        }
    }
}

/// A new collection.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// The name, `[a-z0-9][a-z0-9_-]{0,50}`.
    #[schema(
        pattern = "^[a-z0-9][a-z0-9_-]{0,50}$",
        min_length = 1,
        max_length = 51,
        example = "orders"
    )]
    pub name: String,
    /// `memory`, `memory_s3` (default) or `s3_only`.
    #[serde(default = "default_policy")]
    #[schema(value_type = PolicyName, required = false)]
    pub policy: TieringPolicy,
}

/// A collection's tiering policy, as the document names it.
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = Policy)]
#[allow(
    dead_code,
    reason = "the schema of `TieringPolicy`, which the storage crate defines"
)]
pub enum PolicyName {
    /// Records in memory and the WAL only.
    #[schema(rename = "memory")]
    Memory,
    /// In memory, tiered to the object store (the default).
    #[schema(rename = "memory_s3")]
    MemoryS3,
    /// In the object store, read through a cache.
    #[schema(rename = "s3_only")]
    S3Only,
}

fn default_policy() -> TieringPolicy {
    TieringPolicy::MemoryS3
}

/// A collection as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionView {
    /// The name.
    pub name: String,
    /// The tiering policy.
    pub policy: String,
    /// Segments it holds.
    pub segments: usize,
}

/// Creates a collection in the caller's organisation.
#[utoipa::path(post, path = "/v1/collections", tag = "v1", security(("api_key" = []), ()), request_body = NewCollection,
    responses(
        (status = 201, description = "Created", body = CollectionView),
        (status = 409, description = "The organisation already has a collection of that name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or policy", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    storage: Storage,
    Extension(caller): Extension<Caller>,
    crate::problem::Json(new): crate::problem::Json<NewCollection>,
) -> Response {
    let name = match internal_name(&caller, &new.name) {
        Ok(name) => name,
        Err(problem) => return problem.into_response(),
    };
    match storage.store.create_collection(&name, new.policy).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(CollectionView {
                name: new.name,
                policy: new.policy.as_str().into(),
                segments: 0,
            }),
        )
            .into_response(),
        Err(CollectionError::AlreadyExists(_)) => {
            status_problem(StatusCode::CONFLICT, "a collection of that name exists")
        }
        Err(error @ (CollectionError::InvalidName(_) | CollectionError::NoObjectStore(_))) => {
            status_problem(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        Err(error) => status_problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The caller's organisation's collections.
#[utoipa::path(get, path = "/v1/collections", tag = "v1", security(("api_key" = []), ()),
    responses((status = 200, description = "`{collections: [...]}`", body = Object)))]
pub async fn list_collections(storage: Storage, Extension(caller): Extension<Caller>) -> Response {
    let prefix = format!("{}-", tag(&caller.organisation));
    let collections: Vec<CollectionView> = storage
        .store
        .collections()
        .into_iter()
        .filter_map(|info| {
            let name = info.name.strip_prefix(&prefix)?.to_owned();
            Some(CollectionView {
                name,
                policy: info.policy.as_str().into(),
                segments: info.segments,
            })
        })
        .collect();
    Json(serde_json::json!({ "collections": collections })).into_response()
}

/// Deletes a collection: its records, objects and dead-letter entries.
#[utoipa::path(delete, path = "/v1/collections/{collection}", tag = "v1", security(("api_key" = []), ()),
    params(("collection" = String, Path, description = "The collection, `[a-z0-9][a-z0-9_-]{0,50}`", pattern = r"^[a-z0-9][a-z0-9_-]{0,50}$", min_length = 1, max_length = 51)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such collection", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn drop_collection(storage: Storage, OrgCollection(name): OrgCollection) -> Response {
    match storage.store.drop_collection(&name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) | Err(CollectionError::Unknown(_)) => {
            status_problem(StatusCode::NOT_FOUND, "no such collection")
        }
        Err(error) => status_problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// Stores a record's raw bytes; answers once the write is durable.
#[utoipa::path(put, path = "/v1/collections/{collection}/records/{id}", tag = "v1", security(("api_key" = []), ()),
    params(("collection" = String, Path, description = "The collection, `[a-z0-9][a-z0-9_-]{0,50}`", pattern = r"^[a-z0-9][a-z0-9_-]{0,50}$", min_length = 1, max_length = 51), ("id" = String, Path, description = "The record id: 1-512 characters of `A-Z a-z 0-9 - _ . ~`, not `.` or `..`", pattern = r"^(?:[A-Za-z0-9_~-]|\.[A-Za-z0-9_~-]|\.\.[A-Za-z0-9._~-])[A-Za-z0-9._~-]*$", min_length = 1, max_length = 512)),
    request_body(content = RawBytes, content_type = "application/octet-stream", description = "The value, at most `storage.limits.max_value_bytes` (1 MiB by default)"),
    responses(
        (status = 204, description = "Acknowledged (fsync'd to the WAL)"),
        (status = 403, description = "The organisation was erased (`type` ends in `/organisation-erased`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such collection", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Value over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not acknowledged, retry after `Retry-After`: the local backlog is full, the WAL refuses writes, or this instance is fenced by another writer (`type` ends in `/fenced`: retry on another instance)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_record(
    storage: Storage,
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OrgCollection(name): OrgCollection,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body = match seal(&state, &caller, &name, &id, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let _shared = storage.write_gate.read().await;
    match storage.store.put(&name, &id, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => write_error(&state, error),
    }
}

/// Reads a record's raw bytes.
#[utoipa::path(get, path = "/v1/collections/{collection}/records/{id}", tag = "v1", security(("api_key" = []), ()),
    params(("collection" = String, Path, description = "The collection, `[a-z0-9][a-z0-9_-]{0,50}`", pattern = r"^[a-z0-9][a-z0-9_-]{0,50}$", min_length = 1, max_length = 51), ("id" = String, Path, description = "The record id: 1-512 characters of `A-Z a-z 0-9 - _ . ~`, not `.` or `..`", pattern = r"^(?:[A-Za-z0-9_~-]|\.[A-Za-z0-9_~-]|\.\.[A-Za-z0-9._~-])[A-Za-z0-9._~-]*$", min_length = 1, max_length = 512)),
    responses(
        (status = 200, description = "The value", content_type = "application/octet-stream", body = RawBytes),
        (status = 403, description = "The organisation was erased (`type` ends in `/organisation-erased`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "With `storage.encryption`, a stored value that does not authenticate (`type` ends in `/damaged-record`, naming the collection and id)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such record or collection", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The record needs the object store, which is unavailable (`degraded`, `unavailable_sources`, `partial_results`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_record(
    storage: Storage,
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OrgCollection(name): OrgCollection,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    match storage.store.get(&name, &id).await {
        Ok(Some(value)) => {
            let value = match open(&state, &caller, &name, &id, value).await {
                Ok(value) => value,
                Err(response) => return response,
            };
            let mut response = value.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Ok(None) => status_problem(StatusCode::NOT_FOUND, "no such record"),
        Err(error) => read_error(error),
    }
}

/// Deletes a record; answers once the tombstone is durable.
#[utoipa::path(delete, path = "/v1/collections/{collection}/records/{id}", tag = "v1", security(("api_key" = []), ()),
    params(("collection" = String, Path, description = "The collection, `[a-z0-9][a-z0-9_-]{0,50}`", pattern = r"^[a-z0-9][a-z0-9_-]{0,50}$", min_length = 1, max_length = 51), ("id" = String, Path, description = "The record id: 1-512 characters of `A-Z a-z 0-9 - _ . ~`, not `.` or `..`", pattern = r"^(?:[A-Za-z0-9_~-]|\.[A-Za-z0-9_~-]|\.\.[A-Za-z0-9._~-])[A-Za-z0-9._~-]*$", min_length = 1, max_length = 512)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such collection", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not acknowledged, retry after `Retry-After`: the local backlog is full, the WAL refuses writes, or this instance is fenced by another writer (`type` ends in `/fenced`: retry on another instance)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_record(
    storage: Storage,
    State(state): State<AppState>,
    OrgCollection(name): OrgCollection,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    let _shared = storage.write_gate.read().await;
    match storage.store.delete(&name, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => write_error(&state, error),
    }
}

/// One record of a batch.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// The record id: 1-512 characters of `A-Z a-z 0-9 - _ . ~`, not `.` or `..`.
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_~-]|\.[A-Za-z0-9_~-]|\.\.[A-Za-z0-9._~-])[A-Za-z0-9._~-]*$",
        min_length = 1,
        max_length = 512
    )]
    pub id: String,
    /// The value, standard base64 with padding (canonical: unused bits zero).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$",
        content_encoding = "base64"
    )]
    pub value_base64: String,
}

/// A batch of records, written all or nothing.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The records: 1 to `storage.limits.max_batch_records` (1,000 by default).
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<BatchRecord>,
}

/// Batches answered recently, by organisation, collection and `Idempotency-Key`: the SHA-256 of
/// the body and the answer. Bounded (the oldest key goes first) and kept in memory: a batch is
/// idempotent by itself (records are keyed by id), so after a restart a retried batch is simply
/// written again with the same result.
#[derive(Debug, Default)]
pub struct IdempotencyKeys {
    answered: parking_lot::Mutex<Answered>,
}

/// The remembered answers and the order their keys came in.
#[derive(Debug, Default)]
struct Answered {
    by_key: std::collections::HashMap<String, ([u8; 32], usize)>,
    order: std::collections::VecDeque<String>,
}

/// Idempotency keys remembered at most.
const IDEMPOTENCY_KEYS: usize = 10_000;

impl IdempotencyKeys {
    fn lookup(&self, key: &str) -> Option<([u8; 32], usize)> {
        self.answered.lock().by_key.get(key).copied()
    }

    /// Forgets every answer of the collections whose store name starts with `prefix` (an
    /// erased organisation's tag and `-`); returns how many.
    pub(crate) fn forget_prefix(&self, prefix: &str) -> usize {
        let mut answered = self.answered.lock();
        let before = answered.by_key.len();
        answered.by_key.retain(|key, _| !key.starts_with(prefix));
        answered.order.retain(|key| !key.starts_with(prefix));
        before - answered.by_key.len()
    }

    fn remember(&self, key: String, digest: [u8; 32], written: usize) {
        let mut answered = self.answered.lock();
        if answered
            .by_key
            .insert(key.clone(), (digest, written))
            .is_none()
        {
            answered.order.push_back(key);
        }
        while answered.order.len() > IDEMPOTENCY_KEYS {
            if let Some(oldest) = answered.order.pop_front() {
                answered.by_key.remove(&oldest);
            }
        }
    }
}

/// Writes a batch of records, all or nothing. With an `Idempotency-Key` header (at most 128
/// characters), a retry of the same batch is answered as the first time without writing again, and
/// the same key with another body is refused with 409 (`type` ends in `/idempotency-key-reused`).
#[utoipa::path(post, path = "/v1/collections/{collection}/records", tag = "v1", security(("api_key" = []), ()),
    params(("collection" = String, Path, description = "The collection, `[a-z0-9][a-z0-9_-]{0,50}`", pattern = r"^[a-z0-9][a-z0-9_-]{0,50}$", min_length = 1, max_length = 51),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried batch safe: the same key and body are answered once; 1-128 visible ASCII characters", pattern = r"^[!-~](?:[ -~]*[!-~])?$", min_length = 1, max_length = 128)),
    request_body = Batch,
    responses(
        (status = 200, description = "`{written: N}`, acknowledged (`replayed: true` for a retried key)", body = Object),
        (status = 403, description = "The organisation was erased (`type` ends in `/organisation-erased`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such collection", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` was used for another batch (`type` ends in `/idempotency-key-reused`); nothing was written", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A value over `storage.limits.max_value_bytes`, or the batch's values over `storage.limits.max_batch_bytes`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, id or base64, or more records than `storage.limits.max_batch_records`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not acknowledged, retry after `Retry-After`: the local backlog is full, the WAL refuses writes, or this instance is fenced by another writer (`type` ends in `/fenced`: retry on another instance)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_batch(
    storage: Storage,
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OrgCollection(name): OrgCollection,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if !crate::problem::is_json(&headers) {
        return crate::problem::not_json().into_response();
    }
    let idempotency = match headers.get("idempotency-key").map(|value| value.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= 128 => Some((
            format!("{name}/{key}"),
            <[u8; 32]>::from(Sha256::digest(&body)),
        )),
        Some(_) => {
            return status_problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key must be 1-128 visible ASCII characters",
            );
        }
    };
    if let Some((key, digest)) = &idempotency
        && let Some((seen, written)) = storage.idempotency.lookup(key)
    {
        if &seen != digest {
            return Problem::typed(
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used for another batch; use a new key for new content",
            )
            .into_response();
        }
        return Json(serde_json::json!({ "written": written, "replayed": true })).into_response();
    }
    let batch: Batch = match crate::problem::json_object(&body) {
        Ok(batch) => batch,
        Err(problem) => return (*problem).into_response(),
    };
    let mut records = Vec::with_capacity(batch.records.len());
    for record in batch.records {
        match base64::engine::general_purpose::STANDARD.decode(&record.value_base64) {
            Ok(value) => records.push((record.id, Bytes::from(value))),
            Err(_) => {
                return status_problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("record {:?}: value_base64 is not base64", record.id),
                );
            }
        }
    }
    let written = records.len();
    if state.keyring.is_some() {
        // The batch bound applies to what the caller sent, as without encryption.
        let bytes: usize = records.iter().map(|(_, value)| value.len()).sum();
        let limit = state.config.storage.limits.max_batch_bytes;
        if bytes > limit {
            return write_error(&state, WriteError::BatchTooLarge { bytes, limit });
        }
        let mut sealed = Vec::with_capacity(records.len());
        for (id, value) in records {
            match seal(&state, &caller, &name, &id, value).await {
                Ok(value) => sealed.push((id, value)),
                Err(response) => return response,
            }
        }
        records = sealed;
    }
    let _shared = storage.write_gate.read().await;
    match storage.store.put_batch(&name, records).await {
        Ok(()) => {
            if let Some((key, digest)) = idempotency {
                storage.idempotency.remember(key, digest, written);
            }
            Json(serde_json::json!({ "written": written })).into_response()
        }
        Err(error) => write_error(&state, error),
    }
}

/// The query of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsQuery {
    /// Only ids starting with this: up to 512 characters of `A-Z a-z 0-9 - _ . ~`.
    #[param(pattern = r"^[A-Za-z0-9._~-]*$", max_length = 512)]
    pub prefix: Option<String>,
    /// The `next_cursor` of the previous page: the id the listing continues after.
    #[param(
        pattern = r"^(?:[A-Za-z0-9_~-]|\.[A-Za-z0-9_~-]|\.\.[A-Za-z0-9._~-])[A-Za-z0-9._~-]*$",
        min_length = 1,
        max_length = 512
    )]
    pub cursor: Option<String>,
    /// Page size: 1 to `storage.limits.max_page_size` (1,000 by default); 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Raw bytes: a record's value, documented as a binary string.
#[derive(Debug)]
pub struct RawBytes;

impl utoipa::PartialSchema for RawBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for RawBytes {}

/// Records in id order, a page at a time.
#[utoipa::path(get, path = "/v1/collections/{collection}/records", tag = "v1", security(("api_key" = []), ()),
    params(("collection" = String, Path, description = "The collection, `[a-z0-9][a-z0-9_-]{0,50}`", pattern = r"^[a-z0-9][a-z0-9_-]{0,50}$", min_length = 1, max_length = 51), RecordsQuery),
    responses(
        (status = 200, description = "`{records: [{id, value_base64}], next_cursor, degraded, unavailable_sources, partial_results}`", body = Object),
        (status = 403, description = "The organisation was erased (`type` ends in `/organisation-erased`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "With `storage.encryption`, a stored value that does not authenticate (`type` ends in `/damaged-record`, naming the collection and id)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such collection", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid prefix, cursor or page size", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_records(
    storage: Storage,
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OrgCollection(name): OrgCollection,
    Query(query): Query<RecordsQuery>,
) -> Response {
    // The cursor the caller sees is the id the listing continues after, which the document can
    // describe (an opaque encoding could not say which strings are valid).
    let list = ListQuery {
        prefix: query.prefix,
        cursor: query
            .cursor
            .as_deref()
            .map(mainstay_storage_tiering::encode_cursor),
        limit: query.limit,
    };
    match storage.store.list(&name, &list).await {
        Ok(page) => {
            let mut records = Vec::with_capacity(page.records.len());
            for record in &page.records {
                let value =
                    match open(&state, &caller, &name, &record.id, record.value.clone()).await {
                        Ok(value) => value,
                        Err(response) => return response,
                    };
                records.push(BatchRecord {
                    id: record.id.clone(),
                    value_base64: base64::engine::general_purpose::STANDARD.encode(&value),
                });
            }
            Json(serde_json::json!({
                "records": records,
                "next_cursor": page
                    .next_cursor
                    .as_deref()
                    .and_then(mainstay_storage_tiering::decode_cursor),
                "degraded": page.degraded,
                "unavailable_sources": page.unavailable_sources,
                "partial_results": page.partial_results(),
            }))
            .into_response()
        }
        Err(error) => read_error(error),
    }
}
