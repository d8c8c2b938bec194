//! Error types, one per operation family.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::lsn::Lsn;

/// Why [`Journal::open`](crate::Journal::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another process (or another journal in this one) holds the directory.
    #[error(
        "journal directory {dir} is locked by another process: stop that process or use another directory"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file or directory could not be read, written or synced.
    #[error("journal i/o failed on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A damaged frame is followed by valid frames: acknowledged data is damaged (a torn tail,
    /// with nothing valid after it, is truncated instead). Returned in
    /// [`RecoveryMode::Refuse`](crate::RecoveryMode::Refuse).
    #[error(
        "journal segment {file} is damaged at offset {offset} and {valid_frames_after} valid frames follow, so acknowledged data is damaged: restore the directory from a backup, or open with recovery `skip_corrupt` to keep a copy in corrupt/ and recover every valid frame"
    )]
    Corrupt {
        /// The damaged segment.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// Valid frames after the damage, in this segment and the later ones.
        valid_frames_after: u64,
    },
    /// The list of LSNs whose writes failed is unreadable; without it those writes, which their
    /// writers were told had failed, could come back.
    #[error(
        "journal list of failed writes {path} is unreadable at line {line}: restore it from a backup"
    )]
    PoisonedList {
        /// The file.
        path: PathBuf,
        /// The first bad line (from 1).
        line: usize,
    },
}

/// Why [`read_entries`](crate::read_entries) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A file or directory could not be read.
    #[error("journal i/o failed on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The list of LSNs whose writes failed is unreadable, so the entries of failed writes
    /// cannot be told apart.
    #[error(
        "journal list of failed writes {path} is unreadable at line {line}: restore it from a backup"
    )]
    PoisonedList {
        /// The file.
        path: PathBuf,
        /// The first bad line (from 1).
        line: usize,
    },
}

/// Why an append or a commit failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The payload is larger than a frame may carry; nothing was appended.
    #[error("journal entry of {size} bytes exceeds the limit of {limit} bytes: split it")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The largest payload.
        limit: usize,
    },
    /// A write or sync failed, so the journal refuses writes: a failed fsync is never retried
    /// (the kernel may have dropped the data and would report the next one as a success).
    #[error(
        "{reason}; the journal refuses writes until it is reopened, which recovers from what reached the disk"
    )]
    Failed {
        /// The I/O error.
        reason: String,
    },
    /// A commit named an LSN this journal never handed out.
    #[error("lsn {lsn} was never appended to this journal")]
    NotAppended {
        /// The LSN.
        lsn: Lsn,
    },
}

/// Why [`Journal::trim`](crate::Journal::trim) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrimError {
    /// A segment could not be deleted; it stays on disk and replay returns its entries again.
    #[error("journal could not delete {path}: {source}")]
    Io {
        /// The segment.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A durable file operation ([`write_atomic`](crate::write_atomic),
/// [`create_dir_durable`](crate::create_dir_durable)) failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {path} failed: {source}")]
pub struct FileError {
    /// What was being done (`"writing"`, `"syncing"`, `"renaming into"`, ...).
    pub operation: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl From<FileError> for OpenError {
    fn from(error: FileError) -> Self {
        OpenError::Io {
            path: error.path,
            source: error.source,
        }
    }
}

/// Why [`DirLock::acquire`](crate::DirLock::acquire) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process (or another lock in this one) holds the directory.
    #[error(
        "directory {dir} is locked by another process: stop that process or use another directory"
    )]
    Held {
        /// The directory.
        dir: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("could not lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
