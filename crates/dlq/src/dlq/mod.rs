//! The [`Dlq`] handle: in-memory state over the journal, group commit, bounds, TTL and redrive.
//!
//! Every mutation changes the in-memory state and appends its records to the journal
//! (`mainstay_journal::Journal`, one record per entry) under one lock, so the journal's order is
//! the state's order; the caller then commits the last LSN it appended, and the journal's group
//! commit makes concurrent mutations share one `fdatasync` off the runtime's workers.
//!
//! One responsibility per file: `open` (lock, snapshot and journal replay, migration of
//! pre-journal directories), `state` (the in-memory state, admission, eviction and removal),
//! `commit` (commits, the archive and compaction), `archive` (the archive's rewrite for erasures),
//! `redrive` (handlers and redrive) and `ttl` (expiry); this file holds the handle's queries and
//! settings.

mod archive;
mod backup;
mod commit;
mod open;
mod redrive;
mod state;
mod ttl;

pub use self::archive::{ArchiveRewrite, UnreadableLine};
pub use self::backup::{
    BACKUP_PAYLOADS_DIR, BACKUP_SNAPSHOT_FILE, BackupError, DlqBackup, restore_backup,
};
pub use self::ttl::CleanupTask;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use mainstay_clock::{RealClock, SharedClock};
use mainstay_journal::fs::{FileSystem, RealFs};
use mainstay_journal::{DirLock, Journal};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use ulid::Ulid;

use crate::config::{ConfigError, DlqConfig, QueueConfig, valid_queue_name};
use crate::entry::{
    Entry, EntryId, MAX_KEY_BYTES, MAX_PATH_BYTES, NewEntry, Payload, SCHEMA_VERSION, clip_message,
    to_millis,
};
use crate::error::{ListError, OpenError, PushError, WriteError};
use crate::files::DlqRecovery;
use crate::metrics::DlqMetrics;
use crate::query::{DEFAULT_PAGE_SIZE, Filter, MAX_PAGE_SIZE, Page, QueueStats, RedriveHandler};
/// Opens a [`Dlq`]: directory, configuration, metrics and clock.
#[derive(Debug)]
pub struct DlqBuilder {
    dir: PathBuf,
    config: DlqConfig,
    metrics: Option<DlqMetrics>,
    clock: SharedClock,
    fs: Arc<dyn FileSystem>,
}

impl DlqBuilder {
    /// A builder for the DLQ held in `dir` (created if missing), with default configuration,
    /// unregistered metrics and the system clock.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            config: DlqConfig::default(),
            metrics: None,
            clock: RealClock::new().shared(),
            fs: Arc::new(RealFs),
        }
    }

    /// Sets the configuration.
    #[must_use]
    pub fn config(mut self, config: DlqConfig) -> Self {
        self.config = config;
        self
    }

    /// Reports into `metrics` (from [`DlqMetrics::register`]).
    #[must_use]
    pub fn metrics(mut self, metrics: DlqMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Uses `clock` for timestamps, TTLs, cleanup and the redrive rate: its wall-clock
    /// `system_time` (timestamps are stored and compared across restarts) and its sleeps. Default
    /// [`RealClock`]; tests pass a [`ManualClock`](mainstay_clock::ManualClock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Does the journal's and the snapshot's file I/O (and the directory lock) on `fs` instead
    /// of the real file system: for power-loss tests on
    /// [`SimFs`](mainstay_journal::fs::SimFs). The archive (`archive.jsonl`) is always written
    /// with std's file system, so a DLQ on another file system should set `archive = false` on
    /// its queues.
    #[doc(hidden)]
    #[must_use]
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }
}

/// A durable, bounded dead-letter queue. Cheap to clone: clones share one queue.
///
/// Dropping the last clone releases the directory lock once no journal write is in flight;
/// call [`Dlq::close`] to also compact and flush.
#[derive(Clone)]
pub struct Dlq {
    shared: Arc<Shared>,
    guard: Arc<LockGuard>,
}

/// Held by every [`Dlq`] clone: when the last one goes, the journal is released (it closes once
/// a sync still in flight has finished) and then the directory lock.
struct LockGuard {
    shared: Arc<Shared>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl fmt::Debug for Dlq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dlq")
            .field("dir", &self.shared.dir)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    dir: PathBuf,
    config: DlqConfig,
    clock: SharedClock,
    metrics: DlqMetrics,
    fs: Arc<dyn FileSystem>,
    state: Mutex<State>,
    /// Serialises mutations in per-push sync mode, so every sync carries one mutation.
    serial: tokio::sync::Mutex<()>,
    /// One compaction at a time.
    compaction: tokio::sync::Mutex<()>,
    /// The archive file, opened at its first line; held by whoever writes buffered lines.
    archive: Mutex<Option<File>>,
    /// The journal syncs already counted in `dlq_journal_fsyncs_total`.
    syncs_counted: AtomicU64,
    handlers: RwLock<HashMap<String, Arc<dyn RedriveHandler>>>,
    lock: Mutex<Option<DirLock>>,
    report: DlqRecovery,
    /// Tests make the next archive rewrite stop, or pause, after its temp file is written and
    /// synced and before the rename.
    #[cfg(test)]
    before_rename: Mutex<Option<archive::BeforeRename>>,
    /// Tests count the archive writes that found the archive's lock held and waited for it.
    #[cfg(test)]
    archive_waits: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct QueueState {
    ids: BTreeSet<EntryId>,
    evicting: bool,
    burst_evictions: u64,
}

struct State {
    entries: BTreeMap<EntryId, Arc<Entry>>,
    queues: BTreeMap<String, QueueState>,
    configs: BTreeMap<String, QueueConfig>,
    defaults: QueueConfig,
    payload_bytes: u64,
    last_id: Ulid,
    /// The records of the mutation in progress, appended to the journal when it ends.
    records: Vec<Vec<u8>>,
    /// Archive lines not yet written.
    archive_buf: Vec<u8>,
    /// Archive lines are buffered or being written: a commit writes them first.
    archive_pending: bool,
    /// `None` once the DLQ is closed.
    journal: Option<Journal>,
    /// Bytes appended to the journal since the last snapshot (frames included).
    journal_bytes: u64,
    closed: bool,
    in_flight: HashSet<EntryId>,
}

#[derive(Serialize)]
struct ArchiveLine<'a> {
    archived_at: String,
    reason: &'static str,
    entry: &'a crate::entry::EntryView,
}

fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Why an entry leaves the queue (archive reason and metric).
#[derive(Clone, Copy)]
enum Removal {
    Evicted,
    Expired,
    Plain,
}

impl Dlq {
    /// A builder for the DLQ in `dir`.
    #[must_use]
    pub fn builder(dir: impl Into<PathBuf>) -> DlqBuilder {
        DlqBuilder::new(dir)
    }

    /// Opens the DLQ in `dir` with `config`, unregistered metrics and the system clock.
    ///
    /// # Errors
    ///
    /// As [`DlqBuilder::open`].
    pub async fn open(dir: impl Into<PathBuf>, config: DlqConfig) -> Result<Self, OpenError> {
        DlqBuilder::new(dir).config(config).open().await
    }

    /// The directory that holds the queue.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// What recovery found when the queue was opened.
    #[must_use]
    pub fn recovery(&self) -> &DlqRecovery {
        &self.shared.report
    }

    /// Why the journal refuses writes, once a write or fsync of it failed (it is never retried:
    /// reopen the queue to recover from what reached the disk); `None` while it is healthy.
    #[must_use]
    pub fn journal_failure(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .journal
            .as_ref()
            .and_then(Journal::failure)
    }

    /// Pushes an entry; returns once its record is durable (fdatasync'd).
    ///
    /// # Errors
    ///
    /// [`PushError::PayloadTooLarge`] over `max_payload_bytes` (never truncated),
    /// [`PushError::QueueFull`] / [`PushError::TotalFull`] when a bound is hit and nothing may be
    /// evicted, [`PushError::InvalidQueue`], [`PushError::InvalidKey`],
    /// [`PushError::InvalidPath`] for bad input, [`PushError::Write`] when the journal failed.
    pub async fn push(&self, new: NewEntry) -> Result<EntryId, PushError> {
        if !valid_queue_name(&new.queue) {
            return Err(PushError::InvalidQueue(
                new.queue.chars().take(80).collect(),
            ));
        }
        if new.key.is_empty() || new.key.len() > MAX_KEY_BYTES {
            return Err(PushError::InvalidKey(new.key.len()));
        }
        match &new.payload {
            Payload::Inline(inline)
                if inline.data().len() > self.shared.config.max_payload_bytes =>
            {
                return Err(PushError::PayloadTooLarge {
                    size: inline.data().len(),
                    limit: self.shared.config.max_payload_bytes,
                });
            }
            Payload::File(file) => {
                let len = file.path.to_str().map_or(0, str::len);
                if len == 0 || len > MAX_PATH_BYTES {
                    return Err(PushError::InvalidPath);
                }
            }
            Payload::Inline(_) => {}
        }
        let _serial = self.shared.serial().await;
        let (id, seq) = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            let now_ms = to_millis(now);
            let id = state.next_id(now);
            let expires_at_ms = state
                .config_for(&new.queue)
                .ttl
                .map(|ttl| to_millis(now + ttl));
            let entry = Entry {
                id,
                queue: new.queue,
                key: new.key,
                payload: new.payload,
                error_class: new.error_class,
                message: clip_message(new.message),
                attempts: new.attempts,
                first_failure_ms: new.first_failure.map_or(now_ms, to_millis),
                last_failure_ms: now_ms,
                expires_at_ms,
                redrive_count: 0,
                schema_version: SCHEMA_VERSION,
            };
            self.shared.admit(&mut state, entry, now)?;
            (id, self.shared.log(&mut state)?)
        };
        self.shared.commit(seq).await?;
        Ok(id)
    }

    /// The entry with `id`.
    #[must_use]
    pub fn get(&self, id: EntryId) -> Option<Entry> {
        self.shared
            .state
            .lock()
            .entries
            .get(&id)
            .map(|e| (**e).clone())
    }

    /// Whether the entry with `id` is still held (for owners of pinned files).
    #[must_use]
    pub fn contains(&self, id: EntryId) -> bool {
        self.shared.state.lock().entries.contains_key(&id)
    }

    /// The oldest entry of `queue`.
    #[must_use]
    pub fn peek(&self, queue: &str) -> Option<Entry> {
        let state = self.shared.state.lock();
        let id = state.queues.get(queue)?.ids.first()?;
        state.entries.get(id).map(|e| (**e).clone())
    }

    /// Entries across all queues.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.state.lock().entries.len()
    }

    /// Whether no queue holds an entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size and oldest entry of every queue that ever held an entry.
    #[must_use]
    pub fn stats(&self) -> Vec<QueueStats> {
        let state = self.shared.state.lock();
        state
            .queues
            .iter()
            .map(|(queue, q)| QueueStats {
                queue: queue.clone(),
                len: q.ids.len(),
                oldest: q.ids.first().copied(),
            })
            .collect()
    }

    /// One page of the entries matching `filter`, in id order, after `cursor` (the
    /// `next_cursor` of the previous page). `limit` 0 means the default (100); it is clamped
    /// to 1,000.
    ///
    /// # Errors
    ///
    /// [`ListError::InvalidCursor`] for a cursor this DLQ did not hand out.
    pub fn list(
        &self,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, ListError> {
        let after = cursor
            .map(|c| {
                c.parse::<EntryId>()
                    .map_err(|_| ListError::InvalidCursor(c.chars().take(64).collect()))
            })
            .transpose()?;
        let limit = match limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let now = self.shared.clock.system_time();
        let state = self.shared.state.lock();
        let candidates: Box<dyn Iterator<Item = &Arc<Entry>>> = match (&filter.id, &filter.queue) {
            (Some(id), _) => Box::new(
                state
                    .entries
                    .get(id)
                    .filter(|_| after.is_none_or(|a| *id > a))
                    .into_iter(),
            ),
            (None, Some(queue)) => match state.queues.get(queue) {
                Some(q) => Box::new(
                    q.ids
                        .range((lower, Bound::Unbounded))
                        .filter_map(|id| state.entries.get(id)),
                ),
                None => Box::new(std::iter::empty()),
            },
            (None, None) => Box::new(
                state
                    .entries
                    .range((lower, Bound::Unbounded))
                    .map(|(_, e)| e),
            ),
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut more = false;
        for entry in candidates.filter(|e| filter.matches(e, now)) {
            if entries.len() == limit {
                more = true;
                break;
            }
            entries.push((**entry).clone());
        }
        let next_cursor = if more {
            entries.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(Page {
            entries,
            next_cursor,
        })
    }

    /// Removes the entry with `id`; `false` when there was none.
    ///
    /// # Errors
    ///
    /// [`WriteError`] when the journal failed or the queue is closed.
    pub async fn delete(&self, id: EntryId) -> Result<bool, WriteError> {
        let _serial = self.shared.serial().await;
        let seq = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            if self
                .shared
                .remove_logged(&mut state, id, Removal::Plain, now)
                .is_none()
            {
                return Ok(false);
            }
            self.shared.log(&mut state)?
        };
        self.shared.commit(seq).await?;
        Ok(true)
    }

    /// Removes every entry of `queue`; returns how many.
    ///
    /// # Errors
    ///
    /// [`WriteError`] when the journal failed or the queue is closed.
    pub async fn purge(&self, queue: &str) -> Result<usize, WriteError> {
        let _serial = self.shared.serial().await;
        let (count, seq) = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            let ids: Vec<EntryId> = state
                .queues
                .get(queue)
                .map(|q| q.ids.iter().copied().collect())
                .unwrap_or_default();
            for id in &ids {
                self.shared
                    .remove_logged(&mut state, *id, Removal::Plain, now);
            }
            if ids.is_empty() {
                return Ok(0);
            }
            (ids.len(), self.shared.log(&mut state)?)
        };
        self.shared.commit(seq).await?;
        tracing::info!(queue, purged = count, "dlq queue purged");
        Ok(count)
    }

    /// Sets the bounds and lifetime of `queue` from now on (existing entries keep their
    /// expiry; a smaller capacity is enforced at the next push).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an invalid name or value.
    pub fn set_queue_config(&self, queue: &str, config: QueueConfig) -> Result<(), ConfigError> {
        let mut check = DlqConfig::default();
        check.queues.insert(queue.to_owned(), config.clone());
        check.validate()?;
        self.shared
            .state
            .lock()
            .configs
            .insert(queue.to_owned(), config);
        Ok(())
    }

    /// The default queue settings and the settings of every queue configured by name, in force now.
    #[must_use]
    pub fn queue_policies(&self) -> (QueueConfig, BTreeMap<String, QueueConfig>) {
        let state = self.shared.state.lock();
        (state.defaults.clone(), state.configs.clone())
    }

    /// Replaces the default queue settings and sets those of the named queues, from now on
    /// (as [`set_queue_config`](Self::set_queue_config) does for one); queues not named keep
    /// theirs, so a component's own queue is never dropped.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key (`defaults.capacity`, `queues.NAME.ttl`, ...); nothing
    /// changes then.
    pub fn set_queue_policies(
        &self,
        defaults: QueueConfig,
        queues: &BTreeMap<String, QueueConfig>,
    ) -> Result<(), ConfigError> {
        let check = DlqConfig {
            defaults: defaults.clone(),
            queues: queues.clone(),
            ..DlqConfig::default()
        };
        check.validate()?;
        let mut state = self.shared.state.lock();
        state.defaults = defaults;
        for (queue, config) in queues {
            state.configs.insert(queue.clone(), config.clone());
        }
        Ok(())
    }

    /// Admits already-built entries (import); entries whose id is present are left alone.
    pub(crate) async fn admit_all(
        &self,
        entries: Vec<Entry>,
    ) -> Result<crate::ImportReport, WriteError> {
        let _serial = self.shared.serial().await;
        let mut report = crate::ImportReport::default();
        let seq = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            for entry in entries {
                if state.entries.contains_key(&entry.id) {
                    report.already_present += 1;
                    continue;
                }
                state.last_id = state.last_id.max(entry.id.ulid());
                match self.shared.admit(&mut state, entry, now) {
                    Ok(()) => report.imported += 1,
                    Err(_) => report.rejected += 1,
                }
            }
            self.shared.log(&mut state)?
        };
        self.shared.commit(seq).await?;
        Ok(report)
    }

    pub(crate) fn entries_of(&self, queue: &str) -> Vec<Arc<Entry>> {
        let state = self.shared.state.lock();
        state
            .queues
            .get(queue)
            .map(|q| {
                q.ids
                    .iter()
                    .filter_map(|id| state.entries.get(id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.shared.clock.system_time()
    }

    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.shared.config.max_payload_bytes
    }

    /// Compacts the journal into a snapshot now (it also happens past `compact_after_bytes`
    /// and at [`Dlq::close`]). The active journal segment is closed first, so that no byte of
    /// a deleted entry stays in the journal's files (an erasure relies on it).
    ///
    /// # Errors
    ///
    /// [`WriteError`] when writing failed or the queue is closed.
    pub async fn compact(&self) -> Result<(), WriteError> {
        let _serial = self.shared.serial().await;
        self.shared.state.lock().writable()?;
        self.shared.compact(commit::Compaction::NowRolled).await
    }

    /// Compacts and flushes, refuses further writes and releases the directory lock. Later
    /// calls return `Ok`.
    ///
    /// # Errors
    ///
    /// [`WriteError::Journal`] when the final compaction failed (the journal on disk is still
    /// replayable).
    pub async fn close(&self) -> Result<(), WriteError> {
        let _serial = self.shared.serial().await;
        let healthy = {
            let mut state = self.shared.state.lock();
            if state.closed {
                return Ok(());
            }
            state.closed = true;
            state
                .journal
                .as_ref()
                .is_some_and(|journal| journal.failure().is_none())
        };
        let result = if healthy {
            self.shared.compact(commit::Compaction::Now).await
        } else {
            Ok(())
        };
        self.shared.release();
        tracing::info!(dir = %self.shared.dir.display(), "dlq closed");
        result
    }
}
