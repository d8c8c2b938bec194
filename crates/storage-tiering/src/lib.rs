#![doc = include_str!("../README.md")]

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
    CompactionConfig, Compression, ConfigError, Limits, StoreConfig, TieringPolicy, UploadConfig,
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
    CollectionInfo, DLQ_QUEUE, ListQuery, Page, PurgeReport, Record, Store, StoreBuilder,
    StoreRecovery,
};
pub use wal::{WalDamage, WalRecovery};

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
pub use bytes;
pub use object_store;
pub use prometheus_client;
pub use serde;

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
