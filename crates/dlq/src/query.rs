//! Filters, pages and redrive types: what callers pass to list and redrive, and what comes back.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, EntryId, FailureClass};

/// Selects entries for listing and redrive. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this entry.
    pub id: Option<EntryId>,
    /// Only this error class.
    pub error_class: Option<FailureClass>,
    /// Only entries whose first failure is at least this old.
    #[serde(with = "humantime_serde")]
    pub older_than: Option<Duration>,
    /// Only entries whose first failure is at most this old.
    #[serde(with = "humantime_serde")]
    pub newer_than: Option<Duration>,
}

impl Filter {
    /// A filter for one queue.
    #[must_use]
    pub fn queue(queue: impl Into<String>) -> Self {
        Self {
            queue: Some(queue.into()),
            ..Self::default()
        }
    }

    /// Whether `entry` matches at time `now`.
    #[must_use]
    pub fn matches(&self, entry: &Entry, now: SystemTime) -> bool {
        let age = now
            .duration_since(entry.first_failure())
            .unwrap_or(Duration::ZERO);
        self.queue.as_deref().is_none_or(|q| q == entry.queue())
            && self.id.is_none_or(|id| id == entry.id())
            && self.error_class.is_none_or(|c| c == entry.error_class())
            && self.older_than.is_none_or(|min| age >= min)
            && self.newer_than.is_none_or(|max| age <= max)
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// Entries in id order.
    pub entries: Vec<Entry>,
    /// Pass this to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Default page size of [`Dlq::list`](crate::Dlq::list).
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Largest page size; larger limits are clamped to it.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// The error a redrive handler returns; the entry stays with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    class: Option<FailureClass>,
}

impl HandlerError {
    /// A failure described by `message`; the entry keeps its error class.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            class: None,
        }
    }

    /// Also changes the entry's error class (say, to `permanent`).
    #[must_use]
    pub fn with_class(mut self, class: FailureClass) -> Self {
        self.class = Some(class);
        self
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The new error class, if any.
    #[must_use]
    pub fn class(&self) -> Option<FailureClass> {
        self.class
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

/// The owning component's way to process an entry again; registered per queue with
/// [`Dlq::register_handler`](crate::Dlq::register_handler).
///
/// An entry is removed only after `redrive` returned `Ok`; on `Err` it stays with its attempts
/// and last failure updated. Handlers must be idempotent: a crash between the handler's success
/// and the durable removal redrives the entry again.
#[async_trait]
pub trait RedriveHandler: Send + Sync + 'static {
    /// Processes `entry` again.
    async fn redrive(&self, entry: &Entry) -> Result<(), HandlerError>;
}

/// What a redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Entries that matched the filter when the redrive started.
    pub matched: usize,
    /// Entries whose handler succeeded (and were removed).
    pub succeeded: usize,
    /// Entries whose handler failed (and stayed, updated).
    pub failed: usize,
    /// Entries that were gone by the time their turn came.
    pub skipped: usize,
    /// The redrive was cancelled before it went through every match.
    pub cancelled: bool,
}

/// Counts of one import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Entries added.
    pub imported: usize,
    /// Entries already present (same id), left as they were.
    pub already_present: usize,
    /// Entries refused because a `reject` queue or the DLQ was full.
    pub rejected: usize,
}

/// Size and age of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Entries held.
    pub len: usize,
    /// Id of the oldest entry, if any.
    pub oldest: Option<EntryId>,
}
