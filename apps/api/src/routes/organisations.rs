//! Tenant operations under `/admin/organisations/{org}`: export (NDJSON, decision 0113) and
//! erasure (decision 0112, [`crate::erasure`]).
//!
//! The export streams one line per collection of the organisation, one per record and one per
//! dead-letter entry of its collections, then a summary with the counts and the SHA-256 of every
//! line before it. It reads the store a page at a time into a bounded channel, so memory stays
//! bounded whatever the size, and every line carries the cursor that resumes the export after
//! it. When the object store is unavailable the export stops at the last line it could produce
//! and ends with a summary `"complete": false` naming `unavailable_sources` and the cursor to
//! resume from: never a silently truncated export.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use mainstay_storage_tiering::{ListQuery, ReadError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Routes;
use crate::app::{AppState, Storage};
use crate::erasure::{ErasureRecord, organisation_hash};
use crate::problem::{Path, Problem, Query};

/// Records read from the store per page of an export.
pub const EXPORT_PAGE_SIZE: usize = 100;

/// Lines an export keeps ready for a slow client at most.
pub const EXPORT_BUFFERED_LINES: usize = 64;

/// Longest organisation name accepted in a path.
const MAX_ORGANISATION: usize = 256;

/// The tenant routes, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/organisations/{org}/export", get(export))
        .route(
            "delete",
            "/organisations/{org}",
            axum::routing::delete(erase),
        )
        .route("get", "/organisations/{org}/erasure", get(erasure_status))
}

fn invalid_organisation(org: &str) -> Option<Response> {
    (org.is_empty() || org.len() > MAX_ORGANISATION).then(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the organisation name must be 1-{MAX_ORGANISATION} bytes"),
        )
        .into_response()
    })
}

/// Where an export resumes: after the header of collection `c` (`a` none), after record `a`
/// of collection `c`, or after the dead-letter entry `d` (`d` empty: before the first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCursor {
    /// The collection, as the organisation names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<String>,
    /// The last record id exported of `c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// The last dead-letter entry exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
}

impl ExportCursor {
    /// The text form, readable and checked by a pattern in the OpenAPI document, so that every
    /// cursor the document allows is a position: `c.<collection>` (after its header),
    /// `c.<collection>.<record id>` (after that record), `d.<entry id>` (after that dead-letter
    /// entry) or `d.` (before the first). Collection names hold no `.`, so the first two dots
    /// split it.
    #[must_use]
    pub fn encode(&self) -> String {
        match (&self.c, &self.a, &self.d) {
            (Some(c), None, _) => format!("c.{c}"),
            (Some(c), Some(a), _) => format!("c.{c}.{a}"),
            (None, _, Some(d)) => format!("d.{d}"),
            (None, _, None) => "d.".to_owned(),
        }
    }

    /// Reads the text form; `None` for anything else.
    #[must_use]
    pub fn decode(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix("c.") {
            let (c, a) = match rest.split_once('.') {
                Some((c, a)) => (c, Some(a)),
                None => (rest, None),
            };
            let name_ok = !c.is_empty()
                && c.len() <= 51
                && c.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            let id_ok = a.is_none_or(|a| {
                !a.is_empty()
                    && a.len() <= 512
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
            });
            return (name_ok && id_ok).then(|| Self {
                c: Some(c.to_owned()),
                a: a.map(str::to_owned),
                d: None,
            });
        }
        let d = text.strip_prefix("d.")?;
        (d.len() <= 64 && d.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| Self {
            c: None,
            a: None,
            d: Some(d.to_owned()),
        })
    }
}

/// The query of an export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The `cursor` of the last line received: the export resumes after it.
    #[param(
        max_length = 4096,
        pattern = r"^(c\.[a-z0-9][a-z0-9_-]{0,50}(\.[A-Za-z0-9._~-]{1,512})?|d\.[A-Za-z0-9]{0,64})$"
    )]
    pub cursor: Option<String>,
}

/// How far an export has read the store (for tests of its memory bound).
#[derive(Debug, Default)]
pub struct ExportProgress {
    /// Records read from the store so far.
    pub records_read: AtomicUsize,
}

/// Streams every collection, record and dead-letter entry of an organisation as NDJSON
/// (`application/x-ndjson`), then a summary line.
///
/// Lines: `{"type":"collection","name","policy","cursor"}`,
/// `{"type":"record","collection","id","value_b64","cursor"}`,
/// `{"type":"dlq_entry", ...the entry's admin view..., "cursor"}` and last
/// `{"type":"summary","collections","records","dlq_entries","sha256","complete","resumed_from"}`
/// where `sha256` is the hex SHA-256 of every byte before the summary line. Pass a line's
/// `cursor` as `?cursor=` to resume after it; the summary then covers the resumed part only.
/// With the object store unavailable the summary says `"complete": false` with
/// `unavailable_sources` and `resume_cursor`. An organisation without data (or unknown) exports
/// only a summary with zero counts.
#[utoipa::path(get, path = "/admin/organisations/{org}/export", tag = "admin", security(("admin_token" = [])),
    params(("org" = String, Path, description = "The organisation", min_length = 1, max_length = 256), ExportQuery),
    responses(
        (status = 200, description = "NDJSON lines, the last a summary", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid organisation name or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export(
    storage: Storage,
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Response {
    if let Some(problem) = invalid_organisation(&org) {
        return problem;
    }
    let resume = match query
        .cursor
        .as_deref()
        .map(|text| (text, ExportCursor::decode(text)))
    {
        None => None,
        Some((text, Some(cursor))) => Some((text.to_owned(), cursor)),
        Some((_, None)) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the cursor was not handed out by an export; pass the `cursor` of the last line received",
            )
            .into_response();
        }
    };
    tracing::info!(target: "audit", org_hash = %organisation_hash(&org), resumed = resume.is_some(), "organisation export started");
    let (sender, mut receiver) = mpsc::channel::<Bytes>(EXPORT_BUFFERED_LINES);
    let tag = super::collections::tag(&org);
    tokio::spawn(produce(
        storage,
        tag,
        resume,
        EXPORT_PAGE_SIZE,
        sender,
        Arc::default(),
        state.keyring.clone().map(|keyring| Opener {
            keyring,
            organisation: org.clone(),
        }),
    ));
    let stream = futures::stream::poll_fn(move |context| {
        receiver
            .poll_recv(context)
            .map(|line| line.map(Ok::<_, std::convert::Infallible>))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// The lines sent so far and their digest.
struct Lines {
    sender: mpsc::Sender<Bytes>,
    digest: Sha256,
}

impl Lines {
    /// Sends one line; `false` when the client went away.
    async fn send(&mut self, value: &serde_json::Value) -> bool {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.digest.update(&line);
        self.sender.send(Bytes::from(line)).await.is_ok()
    }
}

/// Opens sealed values for an export (with `storage.encryption`): the keyring and the
/// organisation whose data key opens them.
#[derive(Debug, Clone)]
pub struct Opener {
    /// The keyring.
    pub keyring: mainstay_storage_tiering::keyring::Keyring,
    /// The organisation exported.
    pub organisation: String,
}

/// Produces the export of the organisation tagged `tag` into `sender`, a page of at most
/// `page_size` records at a time, values opened by `opener` when they are sealed; stops when the
/// receiver is dropped.
pub async fn produce(
    storage: Storage,
    tag: String,
    resume: Option<(String, ExportCursor)>,
    page_size: usize,
    sender: mpsc::Sender<Bytes>,
    progress: Arc<ExportProgress>,
    opener: Option<Opener>,
) {
    let mut unreadable = 0u64;
    let prefix = format!("{tag}-");
    let mut lines = Lines {
        sender,
        digest: Sha256::new(),
    };
    let (resumed_from, cursor) = match resume {
        Some((text, cursor)) => (Some(text), Some(cursor)),
        None => (None, None),
    };
    let mut collections: Vec<(String, String)> = storage
        .store
        .collections()
        .into_iter()
        .filter_map(|info| {
            let name = info.name.strip_prefix(&prefix)?.to_owned();
            Some((name, info.policy.as_str().to_owned()))
        })
        .collect();
    collections.sort();
    let (mut counts, mut unavailable, mut last_cursor) = ([0u64; 3], false, resumed_from.clone());
    let in_dlq = cursor.as_ref().is_some_and(|cursor| cursor.d.is_some());
    'collections: for (name, policy) in collections {
        if in_dlq {
            break;
        }
        let mut after: Option<String> = None;
        if let Some(ExportCursor {
            c: Some(from), a, ..
        }) = &cursor
        {
            if name < *from {
                continue;
            }
            if name == *from {
                after.clone_from(a);
            }
        }
        let resumed_here = cursor
            .as_ref()
            .is_some_and(|cursor| cursor.c.as_deref() == Some(name.as_str()));
        if !resumed_here {
            let position = ExportCursor {
                c: Some(name.clone()),
                ..ExportCursor::default()
            }
            .encode();
            let line = serde_json::json!({"type": "collection", "name": name, "policy": policy, "cursor": position});
            if !lines.send(&line).await {
                return;
            }
            counts[0] += 1;
            last_cursor = Some(position);
        }
        let internal = format!("{prefix}{name}");
        loop {
            let query = ListQuery {
                prefix: None,
                cursor: after
                    .as_deref()
                    .map(mainstay_storage_tiering::encode_cursor),
                limit: Some(page_size),
            };
            let page = match storage.store.list(&internal, &query).await {
                Ok(page) if !page.degraded => page,
                Ok(_) | Err(ReadError::Unavailable(_)) => {
                    unavailable = true;
                    break 'collections;
                }
                // Dropped while exported: nothing more of it.
                Err(ReadError::UnknownCollection(_)) => break,
                Err(error) => {
                    tracing::error!(%error, collection = %internal, "export: a collection could not be read");
                    unavailable = true;
                    break 'collections;
                }
            };
            progress
                .records_read
                .fetch_add(page.records.len(), Ordering::Relaxed);
            for record in &page.records {
                let position = ExportCursor {
                    c: Some(name.clone()),
                    a: Some(record.id.clone()),
                    d: None,
                }
                .encode();
                let value = match &opener {
                    None => Ok(record.value.clone()),
                    Some(opener) => opener
                        .keyring
                        .open(&opener.organisation, &internal, &record.id, &record.value)
                        .await
                        .map_err(|error| error.to_string()),
                };
                let line = match value {
                    Ok(value) => serde_json::json!({
                        "type": "record",
                        "collection": name,
                        "id": record.id,
                        "value_b64": base64::engine::general_purpose::STANDARD.encode(&value),
                        "cursor": position,
                    }),
                    // A value that does not open is named, never exported sealed or skipped.
                    Err(error) => {
                        unreadable += 1;
                        serde_json::json!({
                            "type": "record",
                            "collection": name,
                            "id": record.id,
                            "error": error,
                            "cursor": position,
                        })
                    }
                };
                if !lines.send(&line).await {
                    return;
                }
                counts[1] += 1;
                last_cursor = Some(position);
            }
            match (page.next_cursor, page.records.last()) {
                (Some(_), Some(last)) => after = Some(last.id.clone()),
                _ => break,
            }
        }
    }
    if !unavailable {
        let position = cursor.and_then(|cursor| cursor.d).filter(|d| !d.is_empty());
        // The DLQ refuses a cursor that is no entry id, and the cursor pattern allows any text:
        // such a position resumes after the ids that sort before it or equal it, rather than
        // ending the export empty and "complete".
        let (mut after, floor) = match position {
            Some(d) if d.parse::<mainstay_dlq::EntryId>().is_err() => (None, Some(d)),
            id => (id, None),
        };
        let filter = mainstay_dlq::Filter::default();
        loop {
            let Ok(page) = storage.dlq.list(&filter, after.as_deref(), page_size) else {
                break;
            };
            let after_floor = |entry: &&mainstay_dlq::Entry| {
                floor
                    .as_deref()
                    .is_none_or(|floor| entry.id().to_string().as_str() > floor)
            };
            for entry in page
                .entries
                .iter()
                .filter(|e| e.key().starts_with(&prefix))
                .filter(after_floor)
            {
                let position = ExportCursor {
                    d: Some(entry.id().to_string()),
                    ..ExportCursor::default()
                }
                .encode();
                let mut line = serde_json::to_value(entry.view()).unwrap_or_default();
                if let Some(object) = line.as_object_mut() {
                    object.insert("type".into(), "dlq_entry".into());
                    object.insert("cursor".into(), position.clone().into());
                }
                if !lines.send(&line).await {
                    return;
                }
                counts[2] += 1;
                last_cursor = Some(position);
            }
            match page.next_cursor {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let digest = hex::encode(lines.digest.clone().finalize());
    let mut summary = serde_json::json!({
        "type": "summary",
        "collections": counts[0],
        "records": counts[1],
        "dlq_entries": counts[2],
        "sha256": digest,
        "complete": !unavailable && unreadable == 0,
        "resumed_from": resumed_from,
    });
    if unreadable > 0
        && let Some(object) = summary.as_object_mut()
    {
        object.insert("unreadable_records".into(), serde_json::json!(unreadable));
    }
    if unavailable && let Some(object) = summary.as_object_mut() {
        object.insert(
            "unavailable_sources".into(),
            serde_json::json!(["object_store"]),
        );
        object.insert("resume_cursor".into(), serde_json::json!(last_cursor));
    }
    let _ = lines.send(&summary).await;
}

/// The query of an erasure.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EraseQuery {
    /// `now`: purge every tier physically before answering (200 when that finished).
    #[param(pattern = "^now$")]
    pub purge: Option<String>,
}

/// Erases an organisation: records the erasure in the ledger, blocks its API keys (403
/// `.../organisation-erased` from then on), drops its collections, dead-letter entries and
/// idempotency answers, and purges them from the WAL, local files and the object store (now
/// with `?purge=now`, otherwise by the background task before `erasure.deadline`).
#[utoipa::path(delete, path = "/admin/organisations/{org}", tag = "admin", security(("admin_token" = [])),
    params(("org" = String, Path, description = "The organisation", min_length = 1, max_length = 256), EraseQuery),
    responses(
        (status = 200, description = "Erased in every tier (`?purge=now`)", body = ErasureRecord),
        (status = 202, description = "Recorded and dropped; the physical purge goes on (see `GET .../erasure`)", body = ErasureRecord),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid organisation name or `purge` value", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The erasure ledger could not be written; nothing was erased", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn erase(
    storage: Storage,
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(query): Query<EraseQuery>,
) -> Response {
    if let Some(problem) = invalid_organisation(&org) {
        return problem;
    }
    let purge_now = match query.purge.as_deref() {
        None => false,
        Some("now") => true,
        Some(_) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "purge must be `now` (or left out for a purge in the background)",
            )
            .into_response();
        }
    };
    let Some(erasures) = &state.erasures else {
        return crate::app::storage_disabled().into_response();
    };
    let org_hash = organisation_hash(&org);
    let keys = state.authenticator.key_hashes_of(&org);
    let requested = erasures
        .request(org_hash.clone(), &keys, SystemTime::now())
        .await;
    if let Err(error) = requested {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the erasure could not be recorded, nothing was erased: {error}"),
        )
        .into_response();
    }
    state.authenticator.block_keys(keys);
    // Half the request budget for the uploads the purge waits for.
    let purge = purge_now.then(|| state.config.server.request_timeout / 2);
    match erasures
        .advance(&storage, &org_hash, purge, SystemTime::now)
        .await
    {
        Ok(Some(record)) => {
            if !purge_now {
                erasures.wake();
            }
            let status = if record.state == crate::erasure::ErasureState::Complete {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, Json(record)).into_response()
        }
        Ok(None) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "the erasure record vanished")
            .into_response(),
        Err(error) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the erasure is recorded but its progress could not be saved: {error}; the background task goes on"),
        )
        .into_response(),
    }
}

/// The progress of an organisation's erasure.
#[utoipa::path(get, path = "/admin/organisations/{org}/erasure", tag = "admin", security(("admin_token" = [])),
    params(("org" = String, Path, description = "The organisation", min_length = 1, max_length = 256)),
    responses(
        (status = 200, description = "The erasure: `state` is `pending`, `purging` or `complete`", body = ErasureRecord),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The organisation was never erased", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid organisation name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn erasure_status(
    _storage: Storage,
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> Response {
    if let Some(problem) = invalid_organisation(&org) {
        return problem;
    }
    let record = state
        .erasures
        .as_ref()
        .and_then(|erasures| erasures.ledger.get(&organisation_hash(&org)));
    match record {
        Some(record) => Json(record).into_response(),
        None => Problem::new(StatusCode::NOT_FOUND, "this organisation was never erased")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use mainstay_storage_tiering::TieringPolicy;
    use tokio::sync::mpsc;

    use super::{ExportProgress, produce};

    #[test]
    fn a_cursor_reads_back_as_itself_and_text_of_another_form_is_refused() {
        use super::ExportCursor;
        let cursors = [
            ExportCursor {
                c: Some("orders".into()),
                a: None,
                d: None,
            },
            ExportCursor {
                c: Some("orders".into()),
                a: Some("a.b~c-1".into()),
                d: None,
            },
            ExportCursor {
                c: None,
                a: None,
                d: Some("01M92A4VE9PCXPGWRADXYWXRR7".into()),
            },
            ExportCursor {
                c: None,
                a: None,
                d: Some(String::new()),
            },
        ];
        for cursor in cursors {
            assert_eq!(ExportCursor::decode(&cursor.encode()), Some(cursor));
        }
        for text in [
            "",
            "x.orders",
            "c.",
            "c.Orders",
            "c.orders.",
            "c.orders.a/b",
            "d.a-b",
            "0000",
        ] {
            assert_eq!(ExportCursor::decode(text), None, "{text}");
        }
    }

    #[tokio::test]
    async fn an_export_reads_the_store_a_page_at_a_time_while_the_client_reads() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::erasure::tests::storage(dir.path()).await;
        let tag = crate::routes::collections::tag("acme");
        let name = format!("{tag}-orders");
        storage
            .store
            .create_collection(&name, TieringPolicy::Memory)
            .await
            .unwrap();
        let records: Vec<_> = (0..1000)
            .map(|n| (format!("r{n:04}"), bytes::Bytes::from(format!("value {n}"))))
            .collect();
        storage.store.put_batch(&name, records).await.unwrap();
        let (sender, mut receiver) = mpsc::channel(4);
        let progress = Arc::new(ExportProgress::default());
        let producer = tokio::spawn(produce(
            storage.clone(),
            tag,
            None,
            10,
            sender,
            Arc::clone(&progress),
            None,
        ));
        let first = receiver.recv().await.unwrap();
        let first: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(first["type"], "collection");
        // The producer waits for the client: it has read the store only as far as the lines
        // the channel holds (4) need, never the whole collection.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let read = progress.records_read.load(Ordering::Relaxed);
        assert!(
            read <= 20,
            "{read} of 1000 records read before the client read on"
        );
        assert!(!producer.is_finished());
        let mut lines = 1;
        let mut last = serde_json::Value::Null;
        while let Some(line) = receiver.recv().await {
            last = serde_json::from_slice(&line).unwrap();
            lines += 1;
        }
        assert_eq!(lines, 1 + 1000 + 1);
        assert_eq!(last["type"], "summary");
        assert_eq!(last["records"], 1000);
        assert_eq!(last["complete"], true);
        assert_eq!(progress.records_read.load(Ordering::Relaxed), 1000);
    }
}
