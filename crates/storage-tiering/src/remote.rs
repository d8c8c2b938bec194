//! The object-store tier: opening a store from a URL, segment uploads with a unique write id,
//! numbered manifests written with `PutMode::Create` (which fences a second writer), and the
//! classification of object_store's typed errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::Policy;
use crate::error::{Fenced, OpenError};
use crate::metrics::Instruments;
use crate::segment::{self, FOOTER_LEN, SegmentMeta};

/// How an object-store error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// A later attempt may succeed (5xx, throttling, timeouts, connection errors).
    Transient,
    /// Repeating does not help (403, 401, invalid path, unsupported operation).
    Permanent,
    /// The object does not exist.
    NotFound,
    /// A conditional create found the object there.
    AlreadyExists,
}

/// Classifies an error by its type, never by its text. `Generic` errors (server errors, throttling
/// and transport failures in the HTTP stores) are transient.
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

/// An object-store call that failed, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RemoteError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl RemoteError {
    fn new(error: &object_store::Error) -> Self {
        Self {
            kind: classify(error),
            message: error.to_string(),
        }
    }
    pub(crate) fn closed() -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: "the store is closed".to_owned(),
        }
    }
    pub(crate) fn timeout() -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: "object store call timed out".to_owned(),
        }
    }
}

/// One collection's entry in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestCollection {
    pub(crate) incarnation: u64,
    pub(crate) policy: Policy,
    pub(crate) segments: Vec<SegmentMeta>,
}

/// A manifest object: every object-store collection and its live segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) version: u64,
    pub(crate) writer: String,
    pub(crate) collections: BTreeMap<String, ManifestCollection>,
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
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        return Ok((Arc::new(store), prefix.trim_matches('/').to_owned()));
    }
    Err(invalid("use file://, memory:// or s3://".to_owned()))
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
            instruments,
        }
    }

    fn count(&self, error: &object_store::Error) -> RemoteError {
        let error = RemoteError::new(error);
        match error.kind {
            ErrorKind::Transient => self.instruments.errors_transient.inc(),
            ErrorKind::Permanent => self.instruments.errors_permanent.inc(),
            ErrorKind::NotFound => self.instruments.errors_not_found.inc(),
            ErrorKind::AlreadyExists => self.instruments.errors_already_exists.inc(),
        };
        error
    }

    pub(crate) fn segment_path(&self, collection: &str, id: &str) -> Path {
        join(&self.prefix, &format!("segments/{collection}/{id}.seg"))
    }

    fn manifest_path(&self, version: u64) -> Path {
        join(&self.prefix, &format!("manifest/{version:020}.json"))
    }

    /// Reads the newest manifest, if any.
    pub(crate) async fn latest_manifest(&self) -> Result<Option<Manifest>, RemoteError> {
        let dir = join(&self.prefix, "manifest");
        let objects: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.count(&e))?;
        let newest = objects
            .iter()
            .filter_map(|meta| {
                meta.location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max();
        let Some(version) = newest else {
            return Ok(None);
        };
        let bytes = self.get(&self.manifest_path(version)).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| RemoteError {
            kind: ErrorKind::Permanent,
            message: format!("manifest {version} is not valid: {e}"),
        })?;
        Ok(Some(manifest))
    }

    /// Writes `manifest` (whose version is the new one) with `PutMode::Create`. Someone else's
    /// manifest at that version means this writer is fenced.
    pub(crate) async fn commit(&self, manifest: &Manifest) -> Result<(), CommitError> {
        let path = self.manifest_path(manifest.version);
        let body = serde_json::to_vec(manifest).map_err(|e| RemoteError {
            kind: ErrorKind::Permanent,
            message: e.to_string(),
        })?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                let error = self.count(&error);
                if error.kind != ErrorKind::AlreadyExists {
                    return Err(error.into());
                }
                // An earlier attempt of ours may have landed (an ambiguous failure): read it back.
                let existing = self.get(&path).await?;
                match serde_json::from_slice::<Manifest>(&existing) {
                    Ok(theirs) if theirs == *manifest => Ok(()),
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
            .store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => {
                self.instruments.upload_bytes.inc_by(size);
                Ok(())
            }
            Err(error) => {
                let error = self.count(&error);
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
        match self.store.get_range(path, start..meta.size).await {
            Ok(tail) => {
                let ours = meta.write_id.parse::<ulid::Ulid>().map(u128::from).ok();
                Ok(segment::decode_footer(&tail)
                    .ok()
                    .map(|footer| footer.write_id)
                    == ours
                    && ours.is_some())
            }
            Err(error) => {
                let error = self.count(&error);
                match error.kind {
                    ErrorKind::NotFound => Ok(false),
                    // A range beyond a shorter object: someone else's object.
                    ErrorKind::Permanent | ErrorKind::AlreadyExists => Ok(false),
                    ErrorKind::Transient => Err(error),
                }
            }
        }
    }

    pub(crate) async fn get(&self, path: &Path) -> Result<Bytes, RemoteError> {
        let result = self.store.get(path).await.map_err(|e| self.count(&e))?;
        result.bytes().await.map_err(|e| self.count(&e))
    }

    pub(crate) async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        self.store
            .get_range(path, range)
            .await
            .map_err(|e| self.count(&e))
    }

    pub(crate) async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        match self.store.delete(path).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = self.count(&error);
                if error.kind == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// One cheap round trip, for the health check.
    #[cfg(feature = "health")]
    pub(crate) async fn ping(&self) -> Result<(), RemoteError> {
        self.store
            .list_with_delimiter(Some(&join(&self.prefix, "manifest")))
            .await
            .map(|_| ())
            .map_err(|e| self.count(&e))
    }
}
