//! Backups: a consistent online copy of a store and its DLQ ([`Store::backup`]), a verification
//! that restores it ([`verify`]), and a restore into an empty data directory ([`restore`]).
//! One responsibility per file: `location` (where backups live: a directory, `file://` or
//! `s3://`), `manifest` (`backup.json`), `lease` (what compaction, orphan collection and WAL
//! trimming keep while a backup copies), `create` (the copy), `restore` (restore and verify)
//! and `tail` (the WAL tail file).
//!
//! A backup is a directory (or object prefix) `<root>/<backup id>/`:
//!
//! ```text
//! catalog.json                  collections, their segments and the LSN window of the backup
//! segments/<collection>/<id>.seg  every segment the collections referenced, as written
//! wal-tail.bin                  the WAL records not in those segments, up to the consistent LSN
//! dlq/snapshot, dlq/payloads/*  the DLQ's entries and their pinned payload files
//! settings/<file>               the runtime admin settings file, when there is one
//! backup.json                   written last: every file's size and SHA-256, the point, counts
//! ```
//!
//! [`Store::backup`]: crate::Store::backup

mod create;
mod lease;
mod location;
mod manifest;
mod restore;
mod status;
mod tail;

pub(crate) use self::lease::Leases;
pub use self::location::BackupTarget;
pub use self::manifest::{BackupCounts, BackupFile, BackupManifest, ConsistentPoint, FileKind};
pub use self::restore::{
    Problem, RestoreOptions, RestorePoint, RestoreReport, Verification, VerifyOptions,
    VerifyReport, restore, verify, verify_and_record,
};
pub use self::status::{BackupStatus, RecordedVerification, status};

use std::path::PathBuf;

/// The file in a backup root where [`verify_and_record`] keeps its newest report.
pub const LAST_VERIFICATION_FILE: &str = "last-verification.json";

/// The file in a backup root where [`verify_and_record`] keeps its newest report whose outcome
/// was `ok`.
pub const LAST_SUCCESS_FILE: &str = "last-success.json";

/// Why a backup could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination is not a usable location.
    #[error("invalid backup destination {url:?}: {reason}")]
    InvalidDestination {
        /// The destination as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination lies inside the live data directory or the store's own object-store
    /// prefix, where the store (its orphan collection, a restore) would treat it as its own.
    #[error("backup destination {url:?} is inside the live {inside}; choose a location outside it")]
    InsideLive {
        /// The destination as given.
        url: String,
        /// What it is inside of (`data directory /var/lib/mainstay`, `object-store prefix ...`).
        inside: String,
    },
    /// The store cannot be backed up now.
    #[error("the store cannot be backed up: {0}")]
    Unavailable(String),
    /// A collection was dropped while the backup copied it.
    #[error("collection {0} was dropped while the backup ran; run the backup again")]
    CollectionDropped(String),
    /// A file of the store could not be read.
    #[error("could not read {path}: {reason}")]
    Source {
        /// The file or object.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Writing to the destination failed.
    #[error("could not write {path} to the backup destination: {reason}")]
    Destination {
        /// The object or file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The DLQ could not be backed up.
    #[error(transparent)]
    Dlq(#[from] mainstay_dlq::BackupError),
}

/// Why a backup could not be restored (or verified at all).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The location is not usable.
    #[error("invalid backup location {url:?}: {reason}")]
    InvalidLocation {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The location holds no complete backup (none with a `backup.json`).
    #[error("no complete backup at {0}: a backup is complete once its backup.json is written")]
    NoBackup(String),
    /// The target data directory is not empty.
    #[error("target data directory {0} is not empty: restore into an empty or new directory")]
    TargetNotEmpty(PathBuf),
    /// The object store the restored store uses already holds collections.
    #[error(
        "the target object store already holds collections ({0}): restore into an empty prefix"
    )]
    ObjectStoreNotEmpty(String),
    /// The point asked for is not covered by the backups at the location.
    #[error("{point} is outside what the backups cover: {window}")]
    OutsideWindow {
        /// The point asked for.
        point: String,
        /// What the backups cover.
        window: String,
    },
    /// The backup is damaged: a file is missing or does not match `backup.json`.
    #[error("backup {backup} is damaged: {}", problems.iter().map(|p| format!("{}: {}", p.file, p.problem)).collect::<Vec<_>>().join("; "))]
    Damaged {
        /// The backup.
        backup: String,
        /// What is wrong, file by file.
        problems: Vec<Problem>,
    },
    /// Reading the backup or writing the restored directory failed.
    #[error("restore failed on {path}: {reason}")]
    Io {
        /// The file, object or directory.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The restored store could not be opened or written.
    #[error("the restored store failed: {0}")]
    Store(String),
}
