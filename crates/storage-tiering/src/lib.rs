//! A durable record store: WAL, memory tier and object-storage tier that never loses an
//! acknowledged write.
//!
//! Records (raw bytes under URL-safe ids) live in named collections, each with a tiering
//! [`Policy`]. A write returns once it is fsync'd to the write-ahead log (concurrent writers share
//! one fsync); memtables are frozen into checksummed segment files; object-store collections upload
//! their segments in the background behind a circuit breaker and a retry budget, listing them in
//! numbered manifests that fence a second writer. A segment that cannot be uploaded is pinned and
//! referenced from a DLQ entry whose redrive uploads it. Objects a crash leaves unreferenced are
//! deleted once older than a grace period ([`Store::collect_orphans`]). A writer fenced by a newer
//! one refuses writes; once it is stopped, [`HandoverSource`] and [`Store::accept_handover`] give
//! its acknowledged but never uploaded records to the current writer. The [`keyring`] seals
//! values with per-organisation data keys whose destruction makes an organisation's values
//! unreadable everywhere.
//!
//! ```
//! use bytes::Bytes;
//! use mainstay_storage_tiering::{ListQuery, Policy, Store, StoreConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = StoreConfig {
//!     data_dir: dir.path().join("data"),
//!     object_store_url: Some("memory://".to_owned()),
//!     ..StoreConfig::default()
//! };
//! let (store, _recovery) = Store::open(config).await?;
//! store.create_collection("orders", Policy::MemoryS3).await?;
//! store.put("orders", "o-1", Bytes::from_static(b"{\"total\":42}")).await?; // durable here
//! assert_eq!(store.get("orders", "o-1").await?, Some(Bytes::from_static(b"{\"total\":42}")));
//!
//! store.flush().await?; // freeze the memtable into a segment, queued for upload
//! store.wait_uploaded(std::time::Duration::from_secs(5)).await?;
//! let page = store.list("orders", &ListQuery { prefix: Some("o-".into()), ..ListQuery::default() }).await?;
//! assert_eq!(page.records.len(), 1);
//! store.close(std::time::Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `aws` | yes | `s3://` object stores (object_store's S3 client; builds `aws-lc-sys` with `cmake`) and `HttpStatusConnector` |
//! | `gzip` | yes | gzip-compressed segment blocks ([`Compression::Gzip`]) |
//! | `zstd` | yes | zstd-compressed segment blocks ([`Compression::Zstd`]; the bundled libzstd) |
//! | `health` | no | `mainstay-health` checks: `health::ObjectStoreCheck` (`object_store`), `health::WalCheck` (`storage-wal`), `health::WriterCheck` (`storage-writer`) |
//!
//!
//! Without `aws`, `file://` and `memory://` stores work. Whatever needs a left-out feature fails
//! with a [`MissingFeature`] error naming it (an `s3://` URL or a codec at open, a segment
//! compressed with the codec when it is read), and leaves the data untouched.
//!
//! # Metrics
//!
//! See [`StorageMetrics`] and, for encryption at rest, [`keyring::KeyringMetrics`]. The upload breaker reports through `mainstay-resilience`
//! (`circuit_breaker_state{breaker="<name>-uploads"}`) and the upload DLQ through `mainstay-dlq`.
//!
//! # MSRV
//!
//! Rust 1.95.

mod backup;
mod cache;
mod catalogue;
mod collection;
mod compact;
mod config;
mod error;
mod handover;
#[cfg(feature = "health")]
pub mod health;
mod http_status;
pub mod keyring;
mod metrics;
mod names;
mod orphans;
mod remote;
mod segment;
mod store;
mod upload;
mod wal;

pub use backup::{
    BackupCounts, BackupError, BackupFile, BackupManifest, BackupStatus, BackupTarget,
    ConsistentPoint, FileKind, LAST_SUCCESS_FILE, LAST_VERIFICATION_FILE, Problem,
    RecordedVerification, RestoreError, RestoreOptions, RestorePoint, RestoreReport, Verification,
    VerifyOptions, VerifyReport, restore, status as backup_status, verify, verify_and_record,
};
pub use catalogue::METRICS;
pub use config::{
    CompactionConfig, Compression, ConfigError, Limits, Policy, StoreConfig, UploadConfig,
    WalRecoveryMode,
};
pub use error::{
    CollectionError, Fenced, MaintenanceError, MissingFeature, OpenError, ReadError, SegmentError,
    WalError, WriteError,
};
pub use handover::{
    AcceptError, HandoverError, HandoverReport, HandoverSource, StrandedCollection, StrandedRecord,
};
#[cfg(feature = "aws")]
pub use http_status::HttpStatusConnector;
pub use metrics::StorageMetrics;
pub use names::{
    MAX_ID_BYTES, decode_cursor, encode_cursor, valid_collection_name, valid_record_id,
};
pub use orphans::OrphanReport;
pub use store::{
    CollectionInfo, DLQ_QUEUE, ListQuery, Page, PurgeReport, Record, RecoveryReport, Store,
    StoreBuilder,
};
pub use wal::{WalDamage, WalRecovery};

/// Opens the object store an `object_store_url` names (`file:///dir`, `memory://`,
/// `s3://bucket/prefix`, with the S3 settings from the standard `AWS_*` variables) as the store
/// does, and returns it with the prefix the URL names: for a caller that keeps objects of its own
/// beside the store's (an erasure ledger), outside `<prefix>/segments` and `<prefix>/manifest`.
///
/// # Errors
///
/// [`OpenError::ObjectStoreUrl`] for a URL that names no usable store.
pub fn open_object_store(
    url: &str,
) -> Result<(std::sync::Arc<dyn object_store::ObjectStore>, String), OpenError> {
    remote::open_url(url)
}
