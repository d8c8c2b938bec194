//! Error enums, one per operation family.

use std::path::PathBuf;
use std::time::Duration;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another process holds the data directory.
    #[error("data directory {path} is locked by another process; stop it or use another data_dir")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The WAL could not be recovered.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A local segment file is corrupt.
    #[error(
        "local segment {path} is corrupt ({source}); move it aside after checking the object store"
    )]
    CorruptSegment {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: SegmentError,
    },
    /// The object store URL is not usable.
    #[error("invalid object_store_url {url:?}: {reason}")]
    ObjectStoreUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store could not be read at open (the manifest is needed to recover).
    #[error("could not read the object-store manifest: {0}; check the store and its credentials")]
    Manifest(String),
    /// The object store did not answer at open and the data directory holds no copy of a
    /// manifest from an earlier run to start from (a first start during an outage): nothing
    /// tells what the prefix holds, so the store does not open.
    #[error(
        "the object store cannot be read ({reason}) and data_dir holds no manifest copy from an earlier run; start again once the object store answers"
    )]
    ObjectStoreUnavailable {
        /// Why the manifest could not be read.
        reason: String,
    },
    /// Another writer holds the object-store prefix.
    #[error(transparent)]
    Fenced(#[from] Fenced),
    /// The store's DLQ could not open.
    #[error("could not open the upload dlq: {0}")]
    Dlq(#[from] mainstay_dlq::OpenError),
    /// The configuration (an `s3://` URL, a compression codec) or a local segment (compressed
    /// with a codec) needs a cargo feature this build leaves out. Nothing was changed.
    #[error(transparent)]
    MissingFeature(#[from] MissingFeature),
}

/// Something this build of the crate cannot do because the cargo feature that brings it is off:
/// opening an `s3://` store (`aws`), writing or reading gzip or zstd segment blocks (`gzip`,
/// `zstd`). Data that needs it is left untouched, never taken for corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{needed_for} needs the cargo feature `{feature}` of mainstay-storage-tiering, which this build leaves out; build with it (it is on by default), nothing was changed"
)]
pub struct MissingFeature {
    /// The feature: `aws`, `gzip` or `zstd`.
    pub feature: &'static str,
    /// What needs it, for instance `reading zstd-compressed segment blocks`.
    pub needed_for: String,
}

/// A newer writer claimed the object-store prefix: this store must stop writing to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "another writer committed manifest {version} on this object-store prefix; this store is fenced and no longer uploads (use one writer per prefix)"
)]
pub struct Fenced {
    /// The manifest version that someone else wrote (0 when the other writer was detected by a
    /// segment object carrying another write id).
    pub version: u64,
}

/// A WAL failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file-system operation failed.
    #[error("wal i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A WAL file is damaged in the middle: valid frames (acknowledged records) follow a bad
    /// one, in this file or in later files. Opening refuses under `wal_recovery = "refuse"`.
    #[error(
        "wal file {path} is damaged at offset {offset}: {valid_after} valid frames follow in it and {later_files} later wal files; acknowledged records sit behind the damage. Restore the file from a backup, or set storage.wal_recovery = \"skip_corrupt\" to keep a copy under corrupt/ and recover every valid frame (see docs/runbooks/storage-wal-damaged.md)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// Valid frames after the damage in the same file.
        valid_after: u64,
        /// WAL files after this one.
        later_files: usize,
    },
    /// A WAL side file (the list of failed LSNs) cannot be parsed.
    #[error("wal file {path} cannot be parsed; restore it or move it aside")]
    Unreadable {
        /// The file.
        path: PathBuf,
    },
    /// An earlier write or fsync failed; the log refuses writes until the store is reopened.
    #[error("{0}; reopen the store to recover")]
    Failed(String),
    /// A record is larger than a frame can hold.
    #[error("a wal record of {0} bytes is too large")]
    TooLarge(usize),
}

/// A segment that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// A checksum or structure check failed.
    #[error("segment {0} checksum or structure mismatch")]
    Corrupt(&'static str),
    /// The blocks are compressed with a codec this build leaves out; the bytes passed their
    /// checksum and are not corrupt.
    #[error(transparent)]
    MissingFeature(MissingFeature),
}

/// Why a write was refused. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The collection name does not match `[a-z0-9][a-z0-9_-]{0,63}`.
    #[error(
        "invalid collection name {0:?}: use 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
    )]
    InvalidCollection(String),
    /// No such collection.
    #[error("collection {0:?} does not exist; create it first")]
    UnknownCollection(String),
    /// A record id is not 1-512 bytes of URL-safe characters.
    #[error("invalid record id: use 1-512 characters of A-Z, a-z, 0-9, '-', '_', '.' or '~'")]
    InvalidId,
    /// A value is larger than `limits.max_value_bytes`.
    #[error(
        "value of {size} bytes is larger than the limit of {limit} bytes (limits.max_value_bytes)"
    )]
    ValueTooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch has more records than `limits.max_batch_records`.
    #[error(
        "batch of {records} records is larger than the limit of {limit} (limits.max_batch_records)"
    )]
    TooManyRecords {
        /// Records in the batch.
        records: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch has more value bytes than `limits.max_batch_bytes`.
    #[error(
        "batch of {bytes} bytes is larger than the limit of {limit} bytes (limits.max_batch_bytes)"
    )]
    BatchTooLarge {
        /// Value bytes in the batch.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch without records.
    #[error("empty batch: send at least one record")]
    EmptyBatch,
    /// The local backlog of data not yet uploaded passed `upload.max_backlog_bytes`.
    #[error(
        "upload backlog of {backlog_bytes} bytes is past the limit of {limit} bytes; retry after {retry_after:?}"
    )]
    Backpressure {
        /// Bytes waiting for upload.
        backlog_bytes: u64,
        /// The limit.
        limit: u64,
        /// When a retry is worth it.
        retry_after: Duration,
    },
    /// The WAL could not make the write durable; it was not acknowledged.
    #[error("write not durable: {0}")]
    Wal(#[from] WalError),
    /// Another writer claimed the object-store prefix: this store refuses writes (send them to
    /// the current writer). Nothing was acknowledged.
    #[error("write refused: {0}")]
    Fenced(#[from] Fenced),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The collection name does not match the pattern.
    #[error(
        "invalid collection name {0:?}: use 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
    )]
    InvalidCollection(String),
    /// No such collection.
    #[error("collection {0:?} does not exist")]
    UnknownCollection(String),
    /// A record id is not 1-512 bytes of URL-safe characters.
    #[error("invalid record id: use 1-512 characters of A-Z, a-z, 0-9, '-', '_', '.' or '~'")]
    InvalidId,
    /// The listing prefix is not made of id characters or is too long.
    #[error("invalid prefix: use up to 512 characters of A-Z, a-z, 0-9, '-', '_', '.' or '~'")]
    InvalidPrefix,
    /// The cursor was not made by this store.
    #[error("invalid cursor: pass the next_cursor of the previous page unchanged")]
    InvalidCursor,
    /// The page size is 0 or above `limits.max_page_size`.
    #[error("page size {asked} is outside 1 to {limit} (limits.max_page_size)")]
    PageTooLarge {
        /// The page size asked for.
        asked: usize,
        /// The limit.
        limit: usize,
    },
    /// The record lives only in the object store, which failed.
    #[error("the object store is unavailable ({0}); retry later")]
    Unavailable(String),
    /// Stored bytes failed their checksum; they are never served.
    #[error("stored data of collection {collection:?} is corrupt: {source}")]
    Corrupt {
        /// The collection.
        collection: String,
        /// What was wrong.
        source: SegmentError,
    },
    /// Stored data of the collection is compressed with a codec this build leaves out (it is
    /// not corrupt; nothing was changed).
    #[error("stored data of collection {collection:?} cannot be read: {source}")]
    MissingFeature {
        /// The collection.
        collection: String,
        /// The codec's feature.
        source: MissingFeature,
    },
}

/// Why a collection operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectionError {
    /// The name does not match `[a-z0-9][a-z0-9_-]{0,63}`.
    #[error(
        "invalid collection name {0:?}: use 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    /// A collection of that name exists.
    #[error("collection {0:?} already exists")]
    AlreadyExists(String),
    /// No such collection.
    #[error("collection {0:?} does not exist")]
    Unknown(String),
    /// The object store refused the manifest change; nothing was dropped. Retry later.
    #[error("could not update the object-store manifest ({0}); nothing was dropped, retry later")]
    ObjectStore(String),
    /// The policy needs an object store and none is configured.
    #[error("policy {0} needs an object store; set object_store_url or use the memory policy")]
    NoObjectStore(&'static str),
    /// A file-system operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why a flush or compaction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaintenanceError {
    /// No such collection.
    #[error("collection {0:?} does not exist")]
    UnknownCollection(String),
    /// A file-system operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("object store error: {0}")]
    ObjectStore(String),
    /// A segment to merge is corrupt.
    #[error(transparent)]
    Corrupt(#[from] SegmentError),
    /// A segment to merge is compressed with a codec this build leaves out; nothing was merged.
    #[error(transparent)]
    MissingFeature(#[from] MissingFeature),
    /// Another writer holds the prefix.
    #[error(transparent)]
    Fenced(#[from] Fenced),
    /// The deadline passed before everything was uploaded; the rest is safe in the WAL.
    #[error(
        "{0} bytes still wait for upload at the deadline; they are safe in the wal and upload after restart"
    )]
    Deadline(u64),
}
