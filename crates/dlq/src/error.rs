//! Error types, one per operation family.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::entry::EntryId;

/// Why [`DlqBuilder::open`](crate::DlqBuilder::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another process (or another handle in this one) holds the directory.
    #[error("dlq directory {dir} is locked by another process: stop it or use another directory")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file could not be read, written or locked.
    #[error("dlq i/o failed on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The snapshot is unreadable: its header (always), or its records under
    /// `journal_recovery = "refuse"` (it is replaced atomically, so this is not a torn write but
    /// damage or a foreign file), or it covers journal entries the journal never had.
    #[error(
        "dlq snapshot {path} is unreadable ({reason}): restore it from backup or move it aside"
    )]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// The journal holds a damaged frame followed by valid frames, so acknowledged records are
    /// damaged (a torn tail, with nothing valid after it, is truncated instead). Returned under
    /// `journal_recovery = "refuse"`; nothing on disk was changed.
    #[error(
        "dlq journal segment {file} is damaged at offset {offset} and {valid_frames_after} valid frames follow: restore the directory from a backup, or open with dlq.journal_recovery = \"skip_corrupt\" to keep a copy in corrupt/ and recover every valid record"
    )]
    CorruptJournal {
        /// The damaged segment.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// Valid frames after the damage, in this segment and the later ones.
        valid_frames_after: u64,
    },
}

/// Why [`Dlq::erase_archived`](crate::Dlq::erase_archived) failed; the archive is then as it
/// was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive could not be read, or its new copy written, synced or renamed.
    #[error("dlq archive rewrite failed on {path}: {source}; the archive is unchanged, retry")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The queue was closed (its directory may belong to another process now).
    #[error("dlq is closed")]
    Closed,
}

/// Why a journal write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The journal failed to write or sync; the queue refuses writes until it is reopened.
    #[error("dlq journal write failed: {message}; reopen the dlq to recover from disk")]
    Journal {
        /// The i/o error.
        message: String,
    },
    /// The queue was closed.
    #[error("dlq is closed")]
    Closed,
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The inline payload is over the configured limit; it was not stored (never truncated).
    #[error(
        "dlq payload of {size} bytes exceeds max_payload_bytes {limit}: store it as a pinned file instead"
    )]
    PayloadTooLarge {
        /// The payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The queue is full and its policy is `reject`.
    #[error(
        "dlq queue {queue:?} is full ({capacity} entries) and rejects new entries: redrive or purge it"
    )]
    QueueFull {
        /// The queue.
        queue: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The DLQ as a whole is full and no `evict` queue has an entry to give up.
    #[error("dlq is full ({what}) and nothing can be evicted: redrive or purge entries")]
    TotalFull {
        /// Which bound was hit.
        what: &'static str,
    },
    /// The queue name is not `[a-z0-9][a-z0-9_-]{0,63}`.
    #[error("invalid dlq queue name {0:?}: expected [a-z0-9][a-z0-9_-]{{0,63}}")]
    InvalidQueue(String),
    /// The key is empty or longer than 1,024 bytes.
    #[error("invalid dlq key of {0} bytes: expected 1 to 1024 bytes")]
    InvalidKey(usize),
    /// The pinned file path is empty or longer than 4,096 bytes, or not UTF-8.
    #[error("invalid pinned file path: expected a UTF-8 path of 1 to 4096 bytes")]
    InvalidPath,
    /// The journal could not make the push durable.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why a listing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The cursor is not one this DLQ handed out.
    #[error("invalid dlq cursor {0:?}: pass the next_cursor of a previous page")]
    InvalidCursor(String),
}

/// Why a redrive failed before it started, or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedriveError {
    /// A matching entry's queue has no registered handler; nothing was redriven.
    #[error(
        "dlq queue {queue:?} has no registered redrive handler: the owning component must register one"
    )]
    NoHandler {
        /// The queue.
        queue: String,
    },
    /// The journal could not record an outcome.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The JSON could not be encoded (the encoder's error, boxed so that the JSON library is not
    /// part of this crate's API).
    #[error("dlq export could not encode json: {0}")]
    Json(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The export file could not be written.
    #[error("dlq export could not write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why an import failed; nothing was imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The document is not valid export JSON (the parser's error, boxed so that the JSON library
    /// is not part of this crate's API).
    #[error("dlq import is not a valid export document: {0}")]
    Json(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The document is of an unknown format or version.
    #[error(
        "dlq import has format {format:?} version {version}: expected \"mainstay-dlq\" version 1"
    )]
    Format {
        /// The format given.
        format: String,
        /// The version given.
        version: u32,
    },
    /// An entry is invalid.
    #[error("dlq import entry {id} is invalid: {reason}")]
    Entry {
        /// The entry.
        id: EntryId,
        /// What was wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("dlq import could not read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The journal could not record the import.
    #[error(transparent)]
    Write(#[from] WriteError),
}
