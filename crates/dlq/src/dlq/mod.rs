//! The [`Dlq`] handle: in-memory state over the journal, group commit, bounds, TTL and redrive.
//!
//! Every mutation changes the in-memory state and appends its journal record under one lock, so
//! the journal's order is the state's order; the caller then waits until a leader has written
//! and `fdatasync`'d a batch that contains its record. The leader is whichever waiter finds no
//! sync in flight: it runs the write on tokio's blocking pool and keeps taking batches until
//! the buffer is empty, so concurrent pushes share one sync without any timer.
//!
//! One responsibility per file: `open` (lock, snapshot and journal replay), `state` (the
//! in-memory state, admission, eviction and removal), `commit` (group commit and compaction),
//! `redrive` (handlers and redrive) and `ttl` (expiry); this file holds the handle's queries and
//! settings.

mod commit;
mod open;
mod redrive;
mod state;
mod ttl;

pub use self::ttl::CleanupTask;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mainstay_clock::{RealClock, SharedClock};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use tokio::sync::Notify;
use ulid::Ulid;

use crate::config::{ConfigError, DlqConfig, QueueConfig, valid_queue_name};
use crate::entry::{
    Entry, EntryId, MAX_KEY_BYTES, MAX_PATH_BYTES, NewEntry, Payload, SCHEMA_VERSION, clip_message,
    to_millis,
};
use crate::error::{ListError, OpenError, PushError, WriteError};
use crate::journal::RecoveryReport;
use crate::metrics::DlqMetrics;
use crate::query::{DEFAULT_PAGE_SIZE, Filter, MAX_PAGE_SIZE, Page, QueueStats, RedriveHandler};
/// Opens a [`Dlq`]: directory, configuration, metrics and clock.
#[derive(Debug)]
pub struct DlqBuilder {
    dir: PathBuf,
    config: DlqConfig,
    metrics: Option<DlqMetrics>,
    clock: SharedClock,
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

/// Held by every [`Dlq`] clone (not by the leader): when the last one goes, the directory lock
/// is released, after any leader still writing has finished, so no write follows the release.
struct LockGuard {
    shared: Arc<Shared>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut state = self.shared.state.lock();
        state.closed = true;
        while state.leader_active {
            if self
                .shared
                .idle
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                tracing::warn!(dir = %self.shared.dir.display(), "dlq dropped while its journal writer was still busy");
                break;
            }
        }
        drop(state);
        self.shared.lock_file.lock().take();
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
    state: Mutex<State>,
    /// Woken whenever a batch became durable, a leader stepped down or the journal failed.
    synced: Notify,
    /// Signalled (for blocking waiters) when a leader steps down.
    idle: Condvar,
    /// Signalled when the records waiting for the leader reach `State::group_target`.
    refilled: Condvar,
    /// Serialises mutations in per-push sync mode, so every batch holds one record.
    serial: tokio::sync::Mutex<()>,
    /// Only the leader touches the files.
    files: Mutex<Files>,
    handlers: RwLock<HashMap<String, Arc<dyn RedriveHandler>>>,
    lock_file: Mutex<Option<File>>,
    report: RecoveryReport,
}

struct Files {
    journal: File,
    archive: Option<File>,
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
    journal_buf: Vec<u8>,
    archive_buf: Vec<u8>,
    /// Sequence number of the last mutation appended to the buffers.
    appended: u64,
    /// Sequence number up to which everything is durable.
    synced: u64,
    leader_active: bool,
    /// While the leader waits for its next batch to fill: the waiting records that end the wait
    /// (0 otherwise).
    group_target: u64,
    compact_requested: bool,
    failed: Option<String>,
    closed: bool,
    journal_len: u64,
    generation: u64,
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

enum Step {
    Write {
        journal: Vec<u8>,
        archive: Vec<u8>,
        /// Durable before this batch.
        from: u64,
        /// Durable after it.
        seq: u64,
    },
    Compact,
    Done,
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
    pub fn recovery(&self) -> &RecoveryReport {
        &self.shared.report
    }

    /// Why the journal refuses writes, once a write or fsync of it failed (it is never retried:
    /// reopen the queue to recover from what reached the disk); `None` while it is healthy.
    #[must_use]
    pub fn journal_failure(&self) -> Option<String> {
        self.shared.state.lock().failed.clone()
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
            (id, state.bump())
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
            state.bump()
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
            (ids.len(), state.bump())
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
            state.bump()
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
    /// and at [`Dlq::close`]).
    ///
    /// # Errors
    ///
    /// [`WriteError`] when writing failed or the queue is closed.
    pub async fn compact(&self) -> Result<(), WriteError> {
        let _serial = self.shared.serial().await;
        {
            let mut state = self.shared.state.lock();
            state.writable()?;
            state.compact_requested = true;
            if !state.leader_active {
                state.leader_active = true;
                drop(state);
                self.shared.start_leader();
            }
        }
        self.wait_idle().await
    }

    async fn wait_idle(&self) -> Result<(), WriteError> {
        loop {
            let notified = self.shared.synced.notified();
            tokio::pin!(notified);
            {
                let state = self.shared.state.lock();
                if let Some(message) = &state.failed {
                    return Err(WriteError::Journal {
                        message: message.clone(),
                    });
                }
                if !state.leader_active && !state.compact_requested {
                    return Ok(());
                }
                notified.as_mut().enable();
            }
            notified.await;
        }
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
        {
            let mut state = self.shared.state.lock();
            if state.closed {
                return Ok(());
            }
            state.closed = true;
            if state.failed.is_none() {
                state.compact_requested = true;
                if !state.leader_active {
                    state.leader_active = true;
                    drop(state);
                    self.shared.start_leader();
                }
            }
        }
        let result = self.wait_idle().await;
        self.shared.lock_file.lock().take();
        tracing::info!(dir = %self.shared.dir.display(), "dlq closed");
        result
    }
}
