//! The [`Dlq`] handle: in-memory state over the journal, group commit, bounds, TTL and redrive.
//!
//! Every mutation changes the in-memory state and appends its journal record under one lock, so
//! the journal's order is the state's order; the caller then waits until a leader has written
//! and `fdatasync`'d a batch that contains its record. The leader is whichever waiter finds no
//! sync in flight: it runs the write on tokio's blocking pool and keeps taking batches until
//! the buffer is empty, so concurrent pushes share one sync without any timer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use mainstay_clock::{RealClock, SharedClock};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use crate::codec;
use crate::config::{
    ConfigError, DlqConfig, OverflowPolicy, QueueConfig, SyncMode, valid_queue_name,
};
use crate::entry::{
    Entry, EntryId, MAX_KEY_BYTES, MAX_PATH_BYTES, NewEntry, Payload, SCHEMA_VERSION, clip_message,
    to_millis,
};
use crate::error::{ListError, OpenError, PushError, RedriveError, WriteError};
use crate::journal::{self, HEADER_LEN, LOCK_FILE, RecoveryReport};
use crate::metrics::{DlqMetrics, OldestAges, PushedLabels, RedrivenLabels};
use crate::query::{
    DEFAULT_PAGE_SIZE, Filter, HandlerError, MAX_PAGE_SIZE, Page, QueueStats, RedriveHandler,
    RedriveReport,
};

/// The longest the leader waits for its next batch to fill.
const MAX_GROUP_WAIT: Duration = Duration::from_micros(500);

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

    /// Locks the directory, replays the snapshot and journal (truncating a torn or corrupt tail)
    /// and returns the handle. Blocking I/O runs on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] when another process holds the directory, [`OpenError::Config`]
    /// for invalid configuration, [`OpenError::Io`] and [`OpenError::CorruptSnapshot`] for files
    /// that cannot be used.
    pub async fn open(self) -> Result<Dlq, OpenError> {
        self.config.validate()?;
        let dir = self.dir.clone();
        let (lock, loaded) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(journal::io_err(&dir))?;
            let lock_path = dir.join(LOCK_FILE);
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(journal::io_err(&lock_path))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(OpenError::Locked { dir }),
                Err(TryLockError::Error(source)) => {
                    return Err(OpenError::Io {
                        path: lock_path,
                        source,
                    });
                }
            }
            let loaded = journal::load(&dir)?;
            Ok((lock, loaded))
        })
        .await
        .map_err(|join| OpenError::Io {
            path: self.dir.clone(),
            source: io::Error::other(join.to_string()),
        })??;

        let metrics = self.metrics.unwrap_or_else(DlqMetrics::unregistered);
        let report = loaded.report;
        if report.torn_tail || report.corrupt_tail {
            metrics.truncations.inc();
        }
        metrics.corrupt_records.inc_by(report.corrupt_records);
        metrics
            .journal_bytes
            .set(i64::try_from(loaded.journal_len).unwrap_or(i64::MAX));

        let mut state = State {
            entries: BTreeMap::new(),
            queues: BTreeMap::new(),
            configs: self.config.queues.clone(),
            defaults: self.config.defaults.clone(),
            payload_bytes: 0,
            last_id: Ulid::nil(),
            journal_buf: Vec::new(),
            archive_buf: Vec::new(),
            appended: 0,
            synced: 0,
            leader_active: false,
            group_target: 0,
            compact_requested: false,
            failed: None,
            closed: false,
            journal_len: loaded.journal_len,
            generation: loaded.generation,
            in_flight: HashSet::new(),
        };
        for (_, entry) in loaded.entries {
            state.last_id = state.last_id.max(entry.id.ulid());
            state.insert(Arc::new(entry));
        }
        for (queue, queue_state) in &state.queues {
            metrics
                .size
                .get_or_create(&DlqMetrics::queue(queue))
                .set(len_i64(queue_state.ids.len()));
        }
        tracing::info!(
            dir = %self.dir.display(),
            entries = report.entries,
            journal_records = report.journal_records,
            torn_tail = report.torn_tail,
            corrupt_tail = report.corrupt_tail,
            corrupt_records = report.corrupt_records,
            "dlq opened"
        );

        let shared = Arc::new(Shared {
            dir: self.dir,
            config: self.config,
            clock: self.clock,
            metrics,
            state: Mutex::new(state),
            synced: Notify::new(),
            idle: Condvar::new(),
            refilled: Condvar::new(),
            serial: tokio::sync::Mutex::new(()),
            files: Mutex::new(Files {
                journal: loaded.journal,
                archive: None,
            }),
            handlers: RwLock::new(HashMap::new()),
            lock_file: Mutex::new(Some(lock)),
            report,
        });
        let weak: Weak<dyn OldestAges> = Arc::downgrade(&shared) as Weak<dyn OldestAges>;
        shared.metrics.attach(weak);
        let guard = Arc::new(LockGuard {
            shared: Arc::clone(&shared),
        });
        Ok(Dlq { shared, guard })
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

impl State {
    fn config_for(&self, queue: &str) -> &QueueConfig {
        self.configs.get(queue).unwrap_or(&self.defaults)
    }

    fn insert(&mut self, entry: Arc<Entry>) {
        self.payload_bytes += entry.payload.inline_len();
        self.queues
            .entry(entry.queue.clone())
            .or_default()
            .ids
            .insert(entry.id);
        if let Some(old) = self.entries.insert(entry.id, entry) {
            self.payload_bytes -= old.payload.inline_len();
        }
    }

    fn take(&mut self, id: EntryId) -> Option<Arc<Entry>> {
        let entry = self.entries.remove(&id)?;
        self.payload_bytes -= entry.payload.inline_len();
        if let Some(queue) = self.queues.get_mut(&entry.queue) {
            queue.ids.remove(&id);
        }
        Some(entry)
    }

    fn writable(&self) -> Result<(), WriteError> {
        if self.closed {
            return Err(WriteError::Closed);
        }
        if let Some(message) = &self.failed {
            return Err(WriteError::Journal {
                message: message.clone(),
            });
        }
        Ok(())
    }

    fn next_id(&mut self, now: SystemTime) -> EntryId {
        let mut id = Ulid::from_datetime(now);
        if id <= self.last_id {
            id = self.last_id.increment().unwrap_or_else(|next| next);
        }
        self.last_id = id;
        EntryId::from_ulid(id)
    }

    fn bump(&mut self) -> u64 {
        self.appended += 1;
        self.appended
    }

    fn queue_len(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, |q| q.ids.len())
    }
}

impl OldestAges for Shared {
    fn oldest_ages(&self) -> Vec<(String, f64)> {
        let now = self.clock.system_time();
        let state = self.state.lock();
        state
            .queues
            .iter()
            .map(|(queue, queue_state)| {
                let age = queue_state.ids.first().map_or(0.0, |id| {
                    now.duration_since(id.created_at())
                        .unwrap_or(Duration::ZERO)
                        .as_secs_f64()
                });
                (queue.clone(), age)
            })
            .collect()
    }
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

impl Shared {
    fn set_size(&self, state: &State, queue: &str) {
        self.metrics
            .size
            .get_or_create(&DlqMetrics::queue(queue))
            .set(len_i64(state.queue_len(queue)));
    }

    /// Removes `id`, appends its remove record and, for evictions and expiries in queues that
    /// archive, its archive line.
    fn remove_logged(
        &self,
        state: &mut State,
        id: EntryId,
        removal: Removal,
        now: SystemTime,
    ) -> Option<Arc<Entry>> {
        let entry = state.take(id)?;
        codec::encode_remove(id, &mut state.journal_buf);
        let reason = match removal {
            Removal::Evicted => Some("evicted"),
            Removal::Expired => Some("expired"),
            Removal::Plain => None,
        };
        if let Some(reason) = reason
            && state.config_for(&entry.queue).archive
        {
            let view = entry.view();
            let line = ArchiveLine {
                archived_at: humantime::format_rfc3339_millis(now).to_string(),
                reason,
                entry: &view,
            };
            if serde_json::to_writer(&mut state.archive_buf, &line).is_ok() {
                state.archive_buf.push(b'\n');
            }
        }
        self.set_size(state, &entry.queue);
        Some(entry)
    }

    fn evict(&self, state: &mut State, id: EntryId, now: SystemTime) {
        let Some(entry) = self.remove_logged(state, id, Removal::Evicted, now) else {
            return;
        };
        self.metrics
            .evictions
            .get_or_create(&DlqMetrics::queue(&entry.queue))
            .inc();
        if let Some(queue) = state.queues.get_mut(&entry.queue) {
            if !queue.evicting {
                queue.evicting = true;
                tracing::warn!(queue = %entry.queue, "dlq queue is full: evicting its oldest entries");
            }
            queue.burst_evictions += 1;
        }
    }

    /// Admits `entry` under the queue's and the DLQ's bounds, evicting or rejecting, and appends
    /// its push record.
    fn admit(&self, state: &mut State, entry: Entry, now: SystemTime) -> Result<(), PushError> {
        let config = state.config_for(&entry.queue).clone();
        let queue_len = state.queue_len(&entry.queue);
        let reject = |what: PushError| {
            self.metrics
                .rejected
                .get_or_create(&DlqMetrics::queue(&entry.queue))
                .inc();
            Err(what)
        };
        let mut victims: Vec<EntryId> = Vec::new();
        if queue_len >= config.capacity {
            if config.overflow == OverflowPolicy::Reject {
                return reject(PushError::QueueFull {
                    queue: entry.queue.clone(),
                    capacity: config.capacity,
                });
            }
            if let Some(queue) = state.queues.get(&entry.queue) {
                victims.extend(
                    queue
                        .ids
                        .iter()
                        .take(queue_len + 1 - config.capacity)
                        .copied(),
                );
            }
        }
        let freed: u64 = victims
            .iter()
            .filter_map(|id| state.entries.get(id))
            .map(|e| e.payload.inline_len())
            .sum();
        let mut count_after = state.entries.len() + 1 - victims.len();
        let mut bytes_after = state.payload_bytes + entry.payload.inline_len() - freed;
        let over = |count: usize, bytes: u64| {
            count > self.config.total_capacity || bytes > self.config.max_total_payload_bytes
        };
        if over(count_after, bytes_after) {
            // The DLQ as a whole is full: the oldest entries of `evict` queues go first, so a
            // `reject` queue holding user data is never evicted by general queues.
            let chosen: HashSet<EntryId> = victims.iter().copied().collect();
            for (id, other) in &state.entries {
                if !over(count_after, bytes_after) {
                    break;
                }
                if chosen.contains(id)
                    || state.config_for(&other.queue).overflow != OverflowPolicy::Evict
                {
                    continue;
                }
                victims.push(*id);
                count_after -= 1;
                bytes_after -= other.payload.inline_len();
            }
            if over(count_after, bytes_after) {
                let what = if count_after > self.config.total_capacity {
                    "total_capacity"
                } else {
                    "max_total_payload_bytes"
                };
                return reject(PushError::TotalFull { what });
            }
        }
        let evicted_here = !victims.is_empty();
        for id in victims {
            self.evict(state, id, now);
        }
        if !evicted_here
            && let Some(queue) = state.queues.get_mut(&entry.queue)
            && queue.evicting
        {
            tracing::info!(queue = %entry.queue, evicted = queue.burst_evictions, "dlq eviction burst ended");
            queue.evicting = false;
            queue.burst_evictions = 0;
        }
        codec::encode_push(&entry, &mut state.journal_buf);
        self.metrics
            .pushed
            .get_or_create(&PushedLabels {
                queue: entry.queue.clone(),
                error_class: entry.error_class.as_str(),
            })
            .inc();
        let queue = entry.queue.clone();
        state.insert(Arc::new(entry));
        self.set_size(state, &queue);
        Ok(())
    }

    /// Waits until everything up to `seq` is durable, leading a batch when no one is.
    async fn commit(self: &Arc<Self>, seq: u64) -> Result<(), WriteError> {
        loop {
            let notified = self.synced.notified();
            tokio::pin!(notified);
            {
                let mut state = self.state.lock();
                if state.synced >= seq {
                    return Ok(());
                }
                if state.group_target != 0 && state.appended - state.synced >= state.group_target {
                    self.refilled.notify_one();
                }
                if let Some(message) = &state.failed {
                    return Err(WriteError::Journal {
                        message: message.clone(),
                    });
                }
                if state.leader_active {
                    // Registered under the lock: the leader's wake-up cannot be missed.
                    notified.as_mut().enable();
                } else {
                    state.leader_active = true;
                    drop(state);
                    self.start_leader();
                    continue;
                }
            }
            notified.await;
        }
    }

    fn start_leader(self: &Arc<Self>) {
        let shared = Arc::clone(self);
        // A detached task, so a dropped push future cannot strand the leader role. It yields
        // once before taking the first batch; between batches the leader waits for the next to
        // fill (`await_group`).
        // All bookkeeping lives inside the blocking closure, which runs to completion.
        drop(tokio::spawn(async move {
            tokio::task::yield_now().await;
            drop(tokio::task::spawn_blocking(move || shared.lead()));
        }));
    }

    /// The leader loop: write and sync batches until the buffers are empty, compacting when
    /// asked to.
    fn lead(&self) {
        let mut files = self.files.lock();
        loop {
            let step = {
                let mut state = self.state.lock();
                if state.failed.is_some() {
                    state.leader_active = false;
                    Step::Done
                } else if state.compact_requested {
                    state.compact_requested = false;
                    Step::Compact
                } else if state.journal_buf.is_empty() && state.archive_buf.is_empty() {
                    // Nothing buffered: everything appended so far was written (or compacted).
                    state.synced = state.appended;
                    state.leader_active = false;
                    Step::Done
                } else {
                    Step::Write {
                        journal: std::mem::take(&mut state.journal_buf),
                        archive: std::mem::take(&mut state.archive_buf),
                        from: state.synced,
                        seq: state.appended,
                    }
                }
            };
            let result = match step {
                Step::Done => {
                    self.synced.notify_waiters();
                    self.idle.notify_all();
                    return;
                }
                Step::Write {
                    journal,
                    archive,
                    from,
                    seq,
                } => {
                    let started = Instant::now();
                    let written = self.write_batch(&mut files, &journal, &archive, seq);
                    if written.is_ok() {
                        self.await_group(seq - from, seq, started.elapsed());
                    }
                    written
                }
                Step::Compact => self.compact(&mut files),
            };
            if let Err(err) = result {
                tracing::error!(dir = %self.dir.display(), error = %err, "dlq journal write failed; refusing writes until reopened");
                let mut state = self.state.lock();
                state.failed = Some(err.to_string());
                state.leader_active = false;
                drop(state);
                self.synced.notify_waiters();
                self.idle.notify_all();
                return;
            }
        }
    }

    /// Lets the next batch fill before the leader writes it: waits until a record waits for each
    /// pusher the last batch saw (the records it carried plus those appended while it was
    /// written), at most half the time that batch took and never more than [`MAX_GROUP_WAIT`].
    /// Without it, batches alternate between the few pushers that came back at once and everyone
    /// else.
    fn await_group(&self, carried: u64, seq: u64, took: Duration) {
        let mut state = self.state.lock();
        let pushers = carried + state.appended.saturating_sub(seq);
        if pushers < 2 {
            return;
        }
        let deadline = Instant::now() + (took / 2).min(MAX_GROUP_WAIT);
        state.group_target = pushers;
        while state.failed.is_none()
            && !state.closed
            && !state.compact_requested
            && state.appended - state.synced < pushers
        {
            if self.refilled.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.group_target = 0;
    }

    fn write_archive(&self, files: &mut Files, archive: &[u8]) -> io::Result<()> {
        if archive.is_empty() {
            return Ok(());
        }
        let file = match &mut files.archive {
            Some(file) => file,
            slot @ None => slot.insert(journal::open_archive(&self.dir)?),
        };
        file.write_all(archive)?;
        file.sync_data()
    }

    fn write_batch(
        &self,
        files: &mut Files,
        journal: &[u8],
        archive: &[u8],
        seq: u64,
    ) -> io::Result<()> {
        // The archive is durable before the removals that sent entries there.
        self.write_archive(files, archive)?;
        if !journal.is_empty() {
            files.journal.write_all(journal)?;
            files.journal.sync_data()?;
            self.metrics.fsyncs.inc();
        }
        let mut state = self.state.lock();
        state.synced = seq;
        state.journal_len += journal.len() as u64;
        self.metrics
            .journal_bytes
            .set(i64::try_from(state.journal_len).unwrap_or(i64::MAX));
        if state.journal_len > self.config.compact_after_bytes {
            state.compact_requested = true;
        }
        drop(state);
        self.synced.notify_waiters();
        Ok(())
    }

    /// Writes a snapshot of the whole state (which includes every buffered record) and starts
    /// an empty journal of the next generation.
    fn compact(&self, files: &mut Files) -> io::Result<()> {
        let (entries, archive, seq, generation) = {
            let mut state = self.state.lock();
            // Buffered records are reflected in the entries the snapshot is written from.
            state.journal_buf.clear();
            let entries: Vec<Arc<Entry>> = state.entries.values().cloned().collect();
            (
                entries,
                std::mem::take(&mut state.archive_buf),
                state.appended,
                state.generation,
            )
        };
        self.write_archive(files, &archive)?;
        journal::write_snapshot(&self.dir, &entries, generation)?;
        files.journal = journal::new_journal(&self.dir, generation + 1)?;
        self.metrics.fsyncs.inc();
        let mut state = self.state.lock();
        state.generation = generation + 1;
        state.journal_len = HEADER_LEN as u64;
        state.synced = seq;
        self.metrics.journal_bytes.set(HEADER_LEN as i64);
        drop(state);
        self.synced.notify_waiters();
        tracing::info!(dir = %self.dir.display(), entries = entries.len(), generation = generation + 1, "dlq journal compacted into a snapshot");
        Ok(())
    }

    async fn serial(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.config.sync_mode {
            SyncMode::PerPush => Some(self.serial.lock().await),
            SyncMode::Grouped => None,
        }
    }
}

/// Removes an entry from the in-flight set when a redrive of it ends, however it ends.
struct InFlight<'a> {
    shared: &'a Shared,
    id: EntryId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().in_flight.remove(&self.id);
    }
}

/// The task started by [`Dlq::spawn_cleanup`]; dropping it stops the cleanup.
#[derive(Debug)]
pub struct CleanupTask {
    handle: tokio::task::JoinHandle<()>,
}

impl CleanupTask {
    /// Stops the cleanup.
    pub fn abort(&self) {
        self.handle.abort();
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
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

    /// Archives and removes every entry whose TTL has passed; returns how many.
    ///
    /// # Errors
    ///
    /// [`WriteError`] when the journal failed or the queue is closed.
    pub async fn cleanup_expired(&self) -> Result<usize, WriteError> {
        let _serial = self.shared.serial().await;
        let (count, seq) = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            let now_ms = to_millis(now);
            let expired: Vec<EntryId> = state
                .entries
                .values()
                .filter(|e| e.expires_at_ms.is_some_and(|at| at <= now_ms))
                .map(|e| e.id)
                .collect();
            for id in &expired {
                if let Some(entry) =
                    self.shared
                        .remove_logged(&mut state, *id, Removal::Expired, now)
                {
                    self.shared
                        .metrics
                        .expired
                        .get_or_create(&DlqMetrics::queue(&entry.queue))
                        .inc();
                }
            }
            if expired.is_empty() {
                return Ok(0);
            }
            (expired.len(), state.bump())
        };
        self.shared.commit(seq).await?;
        tracing::info!(expired = count, "dlq cleanup archived expired entries");
        Ok(count)
    }

    /// Starts a task that runs [`Dlq::cleanup_expired`] every `cleanup_interval` on the
    /// configured clock; it stops when the returned handle is dropped or the DLQ is closed.
    #[must_use = "dropping the handle stops the cleanup"]
    pub fn spawn_cleanup(&self) -> CleanupTask {
        let weak = Arc::downgrade(&self.guard);
        let clock = Arc::clone(&self.shared.clock);
        let interval = self.shared.config.cleanup_interval;
        let handle = tokio::spawn(async move {
            loop {
                clock.sleep(interval).await;
                let Some(guard) = weak.upgrade() else {
                    return;
                };
                let shared = Arc::clone(&guard.shared);
                match (Self { shared, guard }).cleanup_expired().await {
                    Ok(_) => {}
                    Err(WriteError::Closed) => return,
                    Err(err) => tracing::error!(error = %err, "dlq cleanup failed"),
                }
            }
        });
        CleanupTask { handle }
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

    /// Registers the handler that redrives `queue`'s entries, replacing any earlier one.
    pub fn register_handler(&self, queue: impl Into<String>, handler: Arc<dyn RedriveHandler>) {
        self.shared.handlers.write().insert(queue.into(), handler);
    }

    /// Removes `queue`'s handler; `true` when there was one.
    #[must_use = "false means no handler was registered"]
    pub fn unregister_handler(&self, queue: &str) -> bool {
        self.shared.handlers.write().remove(queue).is_some()
    }

    /// Whether `queue` has a registered handler.
    #[must_use]
    pub fn has_handler(&self, queue: &str) -> bool {
        self.shared.handlers.read().contains_key(queue)
    }

    /// Redrives the entries matching `filter` through their queues' handlers, at most
    /// `redrive_rate_per_second`.
    ///
    /// # Errors
    ///
    /// As [`Dlq::redrive_with`].
    pub async fn redrive(&self, filter: &Filter) -> Result<RedriveReport, RedriveError> {
        self.redrive_with(filter, &CancellationToken::new()).await
    }

    /// Redrives the entries matching `filter`, stopping between entries once `cancel` fires.
    ///
    /// An entry is removed only after its handler succeeded; one whose handler fails stays with
    /// attempts, last failure and redrive count updated. Entries already being redriven by
    /// another call are skipped.
    ///
    /// # Errors
    ///
    /// [`RedriveError::NoHandler`] before anything is redriven when the filter's queue or a
    /// matching entry's queue has no handler; [`RedriveError::Write`] when the journal failed.
    pub async fn redrive_with(
        &self,
        filter: &Filter,
        cancel: &CancellationToken,
    ) -> Result<RedriveReport, RedriveError> {
        let now = self.shared.clock.system_time();
        let targets: Vec<(EntryId, String)> = {
            let state = self.shared.state.lock();
            state.writable()?;
            state
                .entries
                .values()
                .filter(|e| filter.matches(e, now))
                .map(|e| (e.id, e.queue.clone()))
                .collect()
        };
        let handlers: HashMap<String, Arc<dyn RedriveHandler>> = {
            let registered = self.shared.handlers.read();
            let mut handlers = HashMap::new();
            for queue in filter.queue.iter().chain(targets.iter().map(|(_, q)| q)) {
                if handlers.contains_key(queue) {
                    continue;
                }
                let Some(handler) = registered.get(queue) else {
                    return Err(RedriveError::NoHandler {
                        queue: queue.clone(),
                    });
                };
                handlers.insert(queue.clone(), Arc::clone(handler));
            }
            handlers
        };
        let gap = match self.shared.config.redrive_rate_per_second {
            0 => None,
            rate => Some(Duration::from_secs(1) / rate),
        };
        let mut report = RedriveReport {
            matched: targets.len(),
            ..RedriveReport::default()
        };
        for (index, (id, queue)) in targets.iter().enumerate() {
            if cancel.is_cancelled() {
                report.cancelled = true;
                break;
            }
            if index > 0
                && let Some(gap) = gap
            {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        report.cancelled = true;
                        break;
                    }
                    () = self.shared.clock.sleep(gap) => {}
                }
            }
            let entry = {
                let mut state = self.shared.state.lock();
                match state.entries.get(id).map(|e| (**e).clone()) {
                    Some(entry) if state.in_flight.insert(*id) => entry,
                    _ => {
                        report.skipped += 1;
                        continue;
                    }
                }
            };
            let _in_flight = InFlight {
                shared: &self.shared,
                id: *id,
            };
            let Some(handler) = handlers.get(queue) else {
                report.skipped += 1;
                continue;
            };
            let outcome = handler.redrive(&entry).await;
            let label = match &outcome {
                Ok(()) => "succeeded",
                Err(_) => "failed",
            };
            match outcome {
                Ok(()) => {
                    self.remove_redriven(*id).await?;
                    report.succeeded += 1;
                }
                Err(err) => {
                    self.record_failure(*id, &err).await?;
                    report.failed += 1;
                }
            }
            self.shared
                .metrics
                .redriven
                .get_or_create(&RedrivenLabels {
                    queue: queue.clone(),
                    outcome: label,
                })
                .inc();
        }
        tracing::info!(
            matched = report.matched,
            succeeded = report.succeeded,
            failed = report.failed,
            skipped = report.skipped,
            cancelled = report.cancelled,
            "dlq redrive finished"
        );
        Ok(report)
    }

    async fn remove_redriven(&self, id: EntryId) -> Result<(), WriteError> {
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
                return Ok(());
            }
            state.bump()
        };
        self.shared.commit(seq).await
    }

    async fn record_failure(&self, id: EntryId, err: &HandlerError) -> Result<(), WriteError> {
        let _serial = self.shared.serial().await;
        let seq = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now_ms = to_millis(self.shared.clock.system_time());
            let Some(current) = state.entries.get(&id) else {
                return Ok(());
            };
            let mut updated = (**current).clone();
            updated.attempts = updated.attempts.saturating_add(1);
            updated.redrive_count = updated.redrive_count.saturating_add(1);
            updated.last_failure_ms = now_ms;
            updated.message = clip_message(err.message().to_owned());
            if let Some(class) = err.class() {
                updated.error_class = class;
            }
            codec::encode_update(&updated, &mut state.journal_buf);
            state.entries.insert(id, Arc::new(updated));
            state.bump()
        };
        self.shared.commit(seq).await
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
