//! The object-store tier: opening a store from a URL, segment uploads with a unique write id,
//! numbered manifests written with `PutMode::Create` (which fences a second writer), and the
//! classification of failed calls from object_store's typed errors and the HTTP status of the
//! response (never from their text).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt as _;
#[cfg(feature = "aws")]
use object_store::client::HttpError;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::TieringPolicy;
use crate::error::{Fenced, OpenError};
#[cfg(feature = "aws")]
use crate::http_status::HttpStatusConnector;
use crate::http_status::observe;
use crate::metrics::Instruments;
use crate::segment::{self, FOOTER_LEN, SegmentMeta};

/// How an object-store error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// A later attempt may succeed (408, 429, 5xx but 501/505, timeouts, connection errors).
    Transient,
    /// Repeating does not help (403, 401, 400 and other 4xx, 501, 505, invalid path, unsupported
    /// operation).
    Permanent,
    /// The object does not exist.
    NotFound,
    /// A conditional create found the object there.
    AlreadyExists,
}

/// Classifies an error by its type alone, never by its text: `Generic` errors (server errors,
/// throttling and transport failures in the HTTP stores, and statuses object_store does not type)
/// are transient. Prefer [`classify_with_status`] when the call ran under
/// [`observe`](crate::http_status::observe).
pub(crate) fn classify(error: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// Classifies an error by its type and, for a `Generic` error, by the HTTP status of the call's
/// last response (`status`, recorded by [`HttpStatusConnector`]); never by its text.
///
/// A `Generic` error caused by an [`HttpError`] is a transport failure and transient whatever
/// status a response had (a body that could not be read): connecting, sending, timing out and
/// being interrupted may pass on a later attempt by definition, and decoding or unknown failures (a
/// body cut short, TLS, a proxy) say nothing wrong about the request, so they end in the DLQ only
/// as `exhausted` after `upload.max_attempts`. One without a recorded status (a store not built
/// with the connector, a failure before any response) is transient as well.
pub(crate) fn classify_with_status(error: &object_store::Error, status: Option<u16>) -> ErrorKind {
    match (error, status) {
        (object_store::Error::Generic { .. }, Some(status)) if transport_error(error).is_none() => {
            status_kind(status)
        }
        _ => classify(error),
    }
}

/// The [`HttpError`] in an error's source chain: object_store's private `RetryError` and
/// `RequestError` name it as their source when a request failed without a usable response.
#[cfg(feature = "aws")]
fn transport_error(error: &object_store::Error) -> Option<&HttpError> {
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        if let Some(transport) = current.downcast_ref::<HttpError>() {
            return Some(transport);
        }
        source = current.source();
    }
    None
}

/// Without `aws` there is no HTTP client here, and no status is ever recorded (only
/// `HttpStatusConnector` records one): no transport error to tell apart.
#[cfg(not(feature = "aws"))]
fn transport_error(_error: &object_store::Error) -> Option<std::convert::Infallible> {
    None
}

/// A non-success status that object_store reports only as `Generic` (401, 403, 404, 409, 412 are
/// typed variants already).
fn status_kind(status: u16) -> ErrorKind {
    match status {
        // Request timeout and throttling: the same request may pass later.
        408 | 429 => ErrorKind::Transient,
        // Not implemented, HTTP version not supported: the server will not change its mind.
        501 | 505 => ErrorKind::Permanent,
        // The server refuses this request as it is (400, 405, 411, 413, 416, ...).
        400..=499 => ErrorKind::Permanent,
        500..=599 => ErrorKind::Transient,
        // Redirects (S3 answers 307 for a while after a bucket is created) and anything else.
        _ => ErrorKind::Transient,
    }
}

/// An object-store call that failed, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RemoteError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// The HTTP status of the response that failed the call, when there was one.
    pub(crate) status: Option<u16>,
}

impl RemoteError {
    fn new(error: &object_store::Error, status: Option<u16>) -> Self {
        Self {
            kind: classify_with_status(error, status),
            message: error.to_string(),
            status,
        }
    }
    pub(crate) fn closed() -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: "the store is closed".to_owned(),
            status: None,
        }
    }
    pub(crate) fn unclaimed() -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: "the object-store prefix is not claimed yet (the store opened from its local manifest copy during an outage); it is claimed once the object store answers".to_owned(),
            status: None,
        }
    }
    pub(crate) fn timeout() -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: "object store call timed out".to_owned(),
            status: None,
        }
    }
}

/// One collection's entry in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestCollection {
    pub(crate) incarnation: u64,
    pub(crate) policy: TieringPolicy,
    pub(crate) segments: Vec<SegmentMeta>,
}

/// A manifest object: every object-store collection and its live segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) version: u64,
    pub(crate) writer: String,
    /// The epoch of the writer that wrote it: claimed at open as one more than the newest
    /// manifest's, unique to that open. Manifests written before epochs existed have none: 0.
    #[serde(default)]
    pub(crate) epoch: u64,
    pub(crate) collections: BTreeMap<String, ManifestCollection>,
}

/// How many times `claim` reads the newest manifest again after another writer took the version
/// it tried to claim at the same moment.
const CLAIM_ATTEMPTS: u32 = 3;

/// The epoch of a segment object's id (`<ulid>-e<epoch>`); 0 for ids written before epochs.
pub(crate) fn segment_epoch(id: &str) -> u64 {
    id.split_once("-e")
        .and_then(|(_, epoch)| epoch.parse().ok())
        .unwrap_or(0)
}

/// Why a manifest commit failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CommitError {
    #[error(transparent)]
    Fenced(#[from] Fenced),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Why a segment upload failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("segment object exists with another write id: another writer uses this prefix")]
    Conflict,
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// An object store with the prefix the store owns.
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) store: Arc<dyn ObjectStore>,
    prefix: Path,
    pub(crate) writer: String,
    /// The epoch this writer claimed (0 until it has claimed the prefix).
    epoch: AtomicU64,
    instruments: Instruments,
}

/// Opens the object store a URL names: `memory://`, `file:///dir` or `s3://bucket/prefix`.
pub(crate) fn open_url(url: &str) -> Result<(Arc<dyn ObjectStore>, String), OpenError> {
    let invalid = |reason: String| OpenError::ObjectStoreUrl {
        url: url.to_owned(),
        reason,
    };
    if let Some(rest) = url.strip_prefix("memory://") {
        return Ok((Arc::new(InMemory::new()), rest.trim_matches('/').to_owned()));
    }
    if let Some(dir) = url.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(invalid("a file:// URL needs a directory path".to_owned()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| invalid(format!("cannot create the directory: {e}")))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| invalid(e.to_string()))?;
        return Ok((Arc::new(store), String::new()));
    }
    #[cfg(not(feature = "aws"))]
    if url.starts_with("s3://") {
        return Err(OpenError::MissingFeature(crate::MissingFeature {
            feature: "aws",
            needed_for: format!("object store URL {url:?}"),
        }));
    }
    #[cfg(feature = "aws")]
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("an s3:// URL needs a bucket".to_owned()));
        }
        // Our upload worker owns retries (with a budget and a breaker); the client only repeats
        // nothing, so one attempt is one request.
        let retry = object_store::RetryConfig {
            max_retries: 0,
            ..object_store::RetryConfig::default()
        };
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_http_connector(HttpStatusConnector::default())
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        return Ok((Arc::new(store), prefix.trim_matches('/').to_owned()));
    }
    Err(invalid("use file://, memory:// or s3://".to_owned()))
}

/// The version of a manifest object (`manifest/<version>.json`), `None` for any other name.
pub(crate) fn manifest_version(meta: &ObjectMeta) -> Option<u64> {
    meta.location
        .filename()?
        .strip_suffix(".json")?
        .parse::<u64>()
        .ok()
}

fn join(prefix: &Path, tail: &str) -> Path {
    let mut path = prefix.clone();
    for part in tail.split('/') {
        path = path.clone().join(part);
    }
    path
}

impl Remote {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, prefix: &str, instruments: Instruments) -> Self {
        let prefix = Path::from(prefix.trim_matches('/'));
        Self {
            store,
            prefix,
            writer: ulid::Ulid::generate().to_string(),
            epoch: AtomicU64::new(0),
            instruments,
        }
    }

    /// Runs one object-store call, counted in `storage_object_store_requests_total`; a failure
    /// is classified with the HTTP status of the call's last response and counted by class.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, RemoteError> {
        self.instruments.object_store_requests.inc();
        self.call_within(call).await
    }

    /// Runs one step of a call already counted with [`call`](Self::call)'s counter (the next
    /// item of a listing that [`count_request`](Self::count_request) counted once); a failure
    /// is classified and counted like [`call`](Self::call)'s.
    pub(crate) async fn call_within<T>(
        &self,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, RemoteError> {
        let (result, status) = observe(call).await;
        result.map_err(|error| self.count(&error, status))
    }

    /// Counts one object-store call in `storage_object_store_requests_total` whose steps run
    /// through [`call_within`](Self::call_within).
    pub(crate) fn count_request(&self) {
        self.instruments.object_store_requests.inc();
    }

    fn count(&self, error: &object_store::Error, status: Option<u16>) -> RemoteError {
        let error = RemoteError::new(error, status);
        match error.kind {
            ErrorKind::Transient => self.instruments.errors_transient.inc(),
            ErrorKind::Permanent => self.instruments.errors_permanent.inc(),
            ErrorKind::NotFound => self.instruments.errors_not_found.inc(),
            ErrorKind::AlreadyExists => self.instruments.errors_already_exists.inc(),
        };
        error
    }

    /// The prefix this store owns.
    pub(crate) fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub(crate) fn segment_path(&self, collection: &str, id: &str) -> Path {
        join(&self.prefix, &format!("segments/{collection}/{id}.seg"))
    }

    /// `<prefix>/segments`: every collection's segment objects are below it.
    pub(crate) fn segments_root(&self) -> Path {
        join(&self.prefix, "segments")
    }

    /// `<prefix>/manifest`: the numbered manifest objects.
    pub(crate) fn manifest_root(&self) -> Path {
        join(&self.prefix, "manifest")
    }

    fn manifest_path(&self, version: u64) -> Path {
        join(&self.prefix, &format!("manifest/{version:020}.json"))
    }

    /// Reads the newest manifest, if any.
    pub(crate) async fn latest_manifest(&self) -> Result<Option<Manifest>, RemoteError> {
        let dir = self.manifest_root();
        let objects: Vec<_> = self.call(self.store.list(Some(&dir)).try_collect()).await?;
        let Some(version) = objects.iter().filter_map(manifest_version).max() else {
            return Ok(None);
        };
        self.read_manifest(version).await.map(Some)
    }

    /// Reads and parses manifest `version`.
    pub(crate) async fn read_manifest(&self, version: u64) -> Result<Manifest, RemoteError> {
        let bytes = self.get(&self.manifest_path(version)).await?;
        serde_json::from_slice(&bytes).map_err(|e| RemoteError {
            kind: ErrorKind::Permanent,
            message: format!("manifest {version} is not valid: {e}"),
            status: None,
        })
    }

    /// The epoch this writer claimed; 0 until it claimed the prefix.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Claims the prefix: reads the newest manifest and commits the next version with the next
    /// epoch, so that every older writer is fenced at its next commit. The claimed manifest is
    /// the newest one's content (or, with `local`, this data directory's copy of its last
    /// committed manifest, when the newest one is that copy's epoch's, this process's or older:
    /// else another writer claimed the prefix since and this one is fenced), after `prepare`.
    pub(crate) async fn claim(
        &self,
        local: Option<&Manifest>,
        mut prepare: impl FnMut(&mut Manifest),
    ) -> Result<Manifest, CommitError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let newest = self.latest_manifest().await?;
            let mut next = match (newest, local) {
                (newest, None) => newest.unwrap_or_default(),
                (Some(newest), Some(local))
                    if newest.version > local.version
                        && newest.epoch != local.epoch
                        && newest.writer != self.writer =>
                {
                    return Err(Fenced {
                        version: newest.version,
                    }
                    .into());
                }
                (newest, Some(local)) => {
                    let mut base = local.clone();
                    if let Some(newest) = newest {
                        base.version = base.version.max(newest.version);
                        base.epoch = base.epoch.max(newest.epoch);
                    }
                    base
                }
            };
            prepare(&mut next);
            next.version += 1;
            next.epoch += 1;
            next.writer.clone_from(&self.writer);
            match self.commit(&next).await {
                Ok(()) => {
                    self.epoch.store(next.epoch, Ordering::Release);
                    return Ok(next);
                }
                // Another writer claimed this version at the same moment (or our own attempt
                // landed unseen): read the newest again.
                Err(CommitError::Fenced(_)) if attempt < CLAIM_ATTEMPTS => {}
                Err(CommitError::Remote(error))
                    if error.kind == ErrorKind::AlreadyExists && attempt < CLAIM_ATTEMPTS => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes `manifest` (whose version is the new one) with `PutMode::Create`. Another writer's
    /// manifest at that version means this writer is fenced; an earlier, different attempt of
    /// this writer at that version (a failure that landed after all) is an `AlreadyExists`
    /// error: the caller reads the newest manifest before its next commit.
    pub(crate) async fn commit(&self, manifest: &Manifest) -> Result<(), CommitError> {
        let path = self.manifest_path(manifest.version);
        let body = serde_json::to_vec(manifest).map_err(|e| RemoteError {
            kind: ErrorKind::Permanent,
            message: e.to_string(),
            status: None,
        })?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .call(self.store.put_opts(&path, PutPayload::from(body), options))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                if error.kind != ErrorKind::AlreadyExists {
                    return Err(error.into());
                }
                // An earlier attempt of ours may have landed (an ambiguous failure): read it back.
                let existing = self.get(&path).await?;
                match serde_json::from_slice::<Manifest>(&existing) {
                    Ok(theirs) if theirs == *manifest => Ok(()),
                    Ok(theirs)
                        if theirs.epoch == manifest.epoch && theirs.writer == manifest.writer =>
                    {
                        Err(RemoteError {
                            kind: ErrorKind::AlreadyExists,
                            message: format!(
                                "manifest {} holds an earlier attempt of this writer",
                                manifest.version
                            ),
                            status: None,
                        }
                        .into())
                    }
                    _ => Err(Fenced {
                        version: manifest.version,
                    }
                    .into()),
                }
            }
        }
    }

    /// Deletes the manifest `version` (an old one), ignoring a missing object.
    pub(crate) async fn delete_manifest(&self, version: u64) {
        let path = self.manifest_path(version);
        if let Err(error) = self.store.delete(&path).await {
            tracing::debug!(%error, version, "could not delete an old manifest");
        }
    }

    /// Uploads a segment with `PutMode::Create`; if the object is already there (an earlier
    /// ambiguous attempt landed), reads its footer back and accepts it only if the write id is ours.
    pub(crate) async fn upload_segment(
        &self,
        collection: &str,
        meta: &SegmentMeta,
        bytes: Bytes,
        check_first: bool,
    ) -> Result<(), UploadError> {
        let path = self.segment_path(collection, &meta.id);
        if check_first && self.written_by_us(&path, meta).await? {
            return Ok(());
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let size = bytes.len() as u64;
        match self
            .call(self.store.put_opts(&path, PutPayload::from(bytes), options))
            .await
        {
            Ok(_) => {
                self.instruments.upload_bytes.inc_by(size);
                Ok(())
            }
            Err(error) => {
                if error.kind == ErrorKind::AlreadyExists {
                    if self.written_by_us(&path, meta).await? {
                        return Ok(());
                    }
                    return Err(UploadError::Conflict);
                }
                Err(error.into())
            }
        }
    }

    /// Whether the object at `path` exists and carries the write id of `meta`.
    async fn written_by_us(&self, path: &Path, meta: &SegmentMeta) -> Result<bool, RemoteError> {
        let start = meta.size.saturating_sub(FOOTER_LEN as u64);
        match self
            .call(self.store.get_range(path, start..meta.size))
            .await
        {
            Ok(tail) => {
                let ours = meta.write_id.parse::<ulid::Ulid>().map(u128::from).ok();
                Ok(segment::decode_footer(&tail)
                    .ok()
                    .map(|footer| footer.write_id)
                    == ours
                    && ours.is_some())
            }
            Err(error) => match error.kind {
                ErrorKind::NotFound => Ok(false),
                // A range beyond a shorter object (416): someone else's object.
                ErrorKind::Permanent if error.status == Some(416) => Ok(false),
                ErrorKind::AlreadyExists => Ok(false),
                // Any other refusal (403, 400, ...) says nothing about whose object it is: it
                // fails this attempt (and sends the segment to the DLQ), it does not fence the
                // store.
                ErrorKind::Permanent | ErrorKind::Transient => Err(error),
            },
        }
    }

    pub(crate) async fn get(&self, path: &Path) -> Result<Bytes, RemoteError> {
        self.call(async { self.store.get(path).await?.bytes().await })
            .await
    }

    pub(crate) async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        self.call(self.store.get_range(path, range)).await
    }

    pub(crate) async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        match self.call(self.store.delete(path)).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// One cheap round trip, for the health check.
    #[cfg(feature = "health")]
    pub(crate) async fn ping(&self) -> Result<(), RemoteError> {
        let prefix = join(&self.prefix, "manifest");
        self.call(self.store.list_with_delimiter(Some(&prefix)))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "aws")]
    use object_store::client::HttpErrorKind;

    fn generic(source: Box<dyn std::error::Error + Send + Sync>) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source,
        }
    }

    #[test]
    fn generic_errors_follow_the_status_of_the_response() {
        let error = generic("Server returned non-2xx status code".into());
        for status in [400, 405, 411, 413, 416, 422, 501, 505] {
            assert_eq!(
                classify_with_status(&error, Some(status)),
                ErrorKind::Permanent,
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503, 504, 507, 307] {
            assert_eq!(
                classify_with_status(&error, Some(status)),
                ErrorKind::Transient,
                "{status}"
            );
        }
        assert_eq!(
            classify_with_status(&error, None),
            ErrorKind::Transient,
            "no response status"
        );
    }

    #[cfg(feature = "aws")]
    #[test]
    fn a_transport_error_in_the_source_chain_is_transient_whatever_the_status() {
        #[derive(Debug, thiserror::Error)]
        #[error("request failed")]
        struct Wrapper(#[source] HttpError);

        for kind in [
            HttpErrorKind::Connect,
            HttpErrorKind::Request,
            HttpErrorKind::Timeout,
            HttpErrorKind::Interrupted,
            HttpErrorKind::Decode,
            HttpErrorKind::Unknown,
        ] {
            let transport = HttpError::new(kind, std::io::Error::other("reset"));
            let error = generic(Box::new(Wrapper(transport)));
            // A 400 whose body could not be read is a transport failure.
            assert_eq!(
                classify_with_status(&error, Some(400)),
                ErrorKind::Transient,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn typed_variants_win_over_the_status() {
        let path = || "p".to_owned();
        let source = || "x".into();
        let cases = [
            (
                object_store::Error::NotFound {
                    path: path(),
                    source: source(),
                },
                ErrorKind::NotFound,
            ),
            (
                object_store::Error::Precondition {
                    path: path(),
                    source: source(),
                },
                ErrorKind::AlreadyExists,
            ),
            (
                object_store::Error::PermissionDenied {
                    path: path(),
                    source: source(),
                },
                ErrorKind::Permanent,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(classify_with_status(&error, Some(503)), kind, "{error}");
        }
    }
}
