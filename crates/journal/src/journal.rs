//! [`Journal`]: appends, leader/follower group commit, rotation, poisoning and trimming.
//!
//! A writer appends its frame to an in-memory buffer under a short lock and gets its LSN. Whoever
//! then commits and finds no sync in flight becomes the leader: off the runtime's worker threads
//! (tokio's blocking pool, or the caller's own thread in [`Journal::commit_blocking`]) it takes
//! the whole buffer, writes it, `fdatasync`s once and wakes every writer whose LSN it covered.
//! It keeps leading while writers appended during that sync, letting the next group fill first
//! for at most half the last sync and never more than `max_group_wait` (decision 0067). A writer
//! waits for its own LSN only, never for the leader's later rounds.
//!
//! When the active segment is full, the leader creates the next one after publishing its round,
//! without the lock: appends go on into the buffer meanwhile, and the next round writes them to
//! the new segment.
//!
//! A failed write or sync poisons the journal: it is never retried (after a failed `fsync` the
//! kernel may have dropped the pages and report the next `fsync` as a success), no later write is
//! accepted, and the LSNs that were not yet durable are recorded in `poisoned` before any waiting
//! writer hears of the failure, so that replay never returns a write its writer was told failed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

use crate::config::JournalConfig;
use crate::durable::create_dir_durable;
use crate::error::{OpenError, TrimError, WriteError};
use crate::frame::{self, HEADER_LEN, MAX_PAYLOAD};
use crate::fs::{FileHandle, FileSystem, OpenMode, RealFs, SyncSite};
use crate::lock::DirLock;
use crate::lsn::Lsn;
use crate::poisoned;
use crate::replay::{self, Replay};
use crate::segment::{self, SegmentInfo};

/// An append-only, segmented, CRC-framed log with group commit. Cheap to clone: clones share one
/// journal, which closes (releasing its directory lock) when the last clone and the last sync in
/// flight are gone.
///
/// ```
/// use mainstay_journal::{Journal, JournalConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let (journal, replay) = Journal::open(dir.path().join("journal"), JournalConfig::default())?;
/// assert!(replay.entries.is_empty());
/// let first = journal.write(b"hello").await?; // durable once it returns
/// let second = journal.append(b"world")?; // buffered ...
/// journal.commit(second).await?; // ... and durable
/// drop(journal);
///
/// let (_journal, replay) = Journal::open(dir.path().join("journal"), JournalConfig::default())?;
/// let payloads: Vec<&[u8]> = replay.entries.iter().map(|e| e.payload.as_slice()).collect();
/// assert_eq!(payloads, [b"hello".as_slice(), b"world"]);
/// assert_eq!(replay.entries[0].lsn, first);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        formatter
            .debug_struct("Journal")
            .field("dir", &self.inner.dir)
            .field("durable_lsn", &state.durable_lsn)
            .field("last_lsn", &state.appended_lsn)
            .field("segments", &state.segments.len())
            .field("health", &state.health)
            .finish_non_exhaustive()
    }
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    config: JournalConfig,
    state: Mutex<State>,
    /// Signalled when the pending entries reach `State::group_target`.
    refilled: Condvar,
    /// Signalled when the durable LSN, the leader role or the health changes (blocking waiters).
    changed: Condvar,
    /// The same, for async waiters.
    durable: watch::Sender<u64>,
    /// Zeros to fill ahead of the frames with.
    zeros: Vec<u8>,
    /// Successful group syncs of segment data, for callers' metrics.
    syncs: AtomicU64,
    /// The directory lock; [`Journal::close`] releases it early.
    lock: Mutex<Option<DirLock>>,
}

#[derive(Debug)]
enum Health {
    Healthy,
    /// A write or sync failed and the failed LSNs are being recorded; appends are refused, and
    /// waiters hear of the failure once the record is durable.
    Poisoning(String),
    Failed(String),
}

#[derive(Debug)]
struct State {
    buffer: Vec<u8>,
    /// The previous buffer, kept for its capacity.
    spare: Vec<u8>,
    next_lsn: u64,
    appended_lsn: u64,
    durable_lsn: u64,
    /// A leader is writing or syncing (or waiting for a group to fill).
    leading: bool,
    /// While the leader waits for a group to fill: the pending entries that end the wait.
    group_target: u64,
    health: Health,
    /// The active segment's file; the leader holds it while it writes.
    active: Option<Box<dyn FileHandle>>,
    /// Every segment on disk, oldest first; the last is the active one.
    segments: Vec<SegmentInfo>,
    /// The LSN ranges of failed writes, as on disk.
    poisoned: Vec<(u64, u64)>,
}

/// What one group sync saw.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// The entries it carried plus those appended while it ran: about how many writers are
    /// active, as each waits for its entry before appending the next.
    writers: u64,
    took: Duration,
}

/// What a committer does next.
enum Step {
    Done,
    Wait,
    Lead,
}

impl Journal {
    /// Opens (creating) the journal in `dir` on the real file system. Blocking: from async code,
    /// call it inside `spawn_blocking`.
    ///
    /// Locks the directory, replays every segment (a torn tail is truncated; corruption is
    /// handled as `config.recovery` says) and makes what it returns durable.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] when another process holds the directory, [`OpenError::Corrupt`]
    /// for corruption in [`RecoveryMode::Refuse`](crate::RecoveryMode::Refuse),
    /// [`OpenError::Config`], [`OpenError::Io`], [`OpenError::PoisonedList`].
    pub fn open(
        dir: impl Into<PathBuf>,
        config: JournalConfig,
    ) -> Result<(Journal, Replay), OpenError> {
        Self::open_with(Arc::new(RealFs), dir, config)
    }

    /// [`open`](Self::open) on another file system (such as [`SimFs`](crate::fs::SimFs)).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: impl Into<PathBuf>,
        config: JournalConfig,
    ) -> Result<(Journal, Replay), OpenError> {
        Self::open_with_floor(fs, dir, config, Lsn::ZERO)
    }

    /// [`open_with`](Self::open_with), handing out new LSNs above `floor` as well as above
    /// every LSN the directory holds. For a caller that keeps entries elsewhere after trimming
    /// them (a snapshot, an uploaded segment) and must never see an LSN again, even when the
    /// directory was trimmed empty or deleted.
    ///
    /// The floor is not written down: a later open learns it from the frames appended above it,
    /// or from the caller again, so a caller passes it on every open.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mainstay_journal::{Journal, JournalConfig, Lsn, fs::RealFs};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let (journal, _) =
    ///     Journal::open_with_floor(Arc::new(RealFs), dir.path(), JournalConfig::default(), Lsn::new(41))?;
    /// assert_eq!(journal.write(b"after the floor").await?, Lsn::new(42));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with_floor(
        fs: Arc<dyn FileSystem>,
        dir: impl Into<PathBuf>,
        config: JournalConfig,
        floor: Lsn,
    ) -> Result<(Journal, Replay), OpenError> {
        let dir = dir.into();
        config.validate()?;
        create_dir_durable(&*fs, &dir)?;
        let lock = DirLock::acquire_with(&*fs, &dir).map_err(|error| match error {
            crate::LockError::Held { dir } => OpenError::Locked { dir },
            crate::LockError::Io { path, source } => OpenError::Io { path, source },
        })?;
        let failed = poisoned::read(&*fs, &dir)?;
        let recovered = replay::recover(&*fs, &dir, &config, &failed)?;
        let next_lsn = recovered.next_lsn.max(floor.get().saturating_add(1));
        let durable_lsn = next_lsn - 1;
        let zeros = vec![0; usize::try_from(config.preallocate_bytes).unwrap_or(0)];
        let journal = Journal {
            inner: Arc::new(Inner {
                fs,
                dir,
                config,
                state: Mutex::new(State {
                    buffer: Vec::new(),
                    spare: Vec::new(),
                    next_lsn,
                    appended_lsn: durable_lsn,
                    durable_lsn,
                    leading: false,
                    group_target: 0,
                    health: Health::Healthy,
                    active: Some(recovered.active),
                    segments: recovered.segments,
                    poisoned: failed,
                }),
                refilled: Condvar::new(),
                changed: Condvar::new(),
                durable: watch::channel(durable_lsn).0,
                zeros,
                syncs: AtomicU64::new(0),
                lock: Mutex::new(Some(lock)),
            }),
        };
        Ok((journal, recovered.replay))
    }

    /// Appends an entry to the buffer and returns its LSN. It is not durable yet: see
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    ///
    /// [`WriteError::TooLarge`] for a payload over [`MAX_PAYLOAD`], [`WriteError::Failed`] once
    /// a write or sync failed.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WriteError> {
        self.append_with(payload, |_| ()).map(|(lsn, ())| lsn)
    }

    /// [`append`](Self::append), running `apply` with the new LSN under the journal's lock, so
    /// that whatever `apply` records is in LSN order.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append); `apply` does not run then.
    pub fn append_with<T>(
        &self,
        payload: &[u8],
        apply: impl FnOnce(Lsn) -> T,
    ) -> Result<(Lsn, T), WriteError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WriteError::TooLarge {
                size: payload.len(),
                limit: MAX_PAYLOAD,
            });
        }
        let crc = frame::payload_crc(payload);
        let mut state = self.inner.state.lock();
        if let Health::Poisoning(reason) | Health::Failed(reason) = &state.health {
            return Err(WriteError::Failed {
                reason: reason.clone(),
            });
        }
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        frame::encode(&mut state.buffer, lsn, payload, crc);
        state.appended_lsn = lsn;
        if state.group_target != 0 && lsn - state.durable_lsn >= state.group_target {
            self.inner.refilled.notify_one();
        }
        let applied = apply(Lsn::new(lsn));
        Ok((Lsn::new(lsn), applied))
    }

    /// Waits until `lsn` is durable. The `fdatasync` runs on tokio's blocking pool (or a thread
    /// of its own outside a tokio runtime), never on the caller's task; concurrent commits share
    /// it. Dropping the future does not stop the sync.
    ///
    /// # Errors
    ///
    /// [`WriteError::Failed`] when the write or sync of `lsn` failed (or had failed before),
    /// [`WriteError::NotAppended`] for an LSN never handed out.
    pub async fn commit(&self, lsn: Lsn) -> Result<(), WriteError> {
        let mut durable = self.inner.durable.subscribe();
        loop {
            let step = {
                let mut state = self.inner.state.lock();
                next_step(&mut state, lsn)?
            };
            match step {
                Step::Done => return Ok(()),
                Step::Lead => {
                    let (done, finished) = oneshot::channel();
                    spawn_leader(Leader {
                        inner: Some(Arc::clone(&self.inner)),
                        done: Some(done),
                    });
                    // The leader goes on leading rounds after this writer's LSN is durable:
                    // stop waiting for it then.
                    tokio::select! {
                        _ = finished => {}
                        _ = durable.changed() => {}
                    }
                }
                Step::Wait => {
                    // The sender lives as long as `inner`, which `self` holds.
                    let _ = durable.changed().await;
                }
            }
        }
    }

    /// [`commit`](Self::commit) for threads that may block: when no sync is in flight, this
    /// thread leads one. Never call it on an async runtime's worker thread.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    pub fn commit_blocking(&self, lsn: Lsn) -> Result<(), WriteError> {
        let mut state = self.inner.state.lock();
        loop {
            match next_step(&mut state, lsn)? {
                Step::Done => return Ok(()),
                Step::Lead => {
                    MutexGuard::unlocked(&mut state, || self.inner.lead(Some(lsn.get())));
                }
                Step::Wait => self.inner.changed.wait(&mut state),
            }
        }
    }

    /// Appends an entry and waits until it is durable.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append) and [`commit`](Self::commit).
    pub async fn write(&self, payload: &[u8]) -> Result<Lsn, WriteError> {
        let lsn = self.append(payload)?;
        self.commit(lsn).await?;
        Ok(lsn)
    }

    /// How many group syncs (`fdatasync`s of segment data) have succeeded since open: for a
    /// caller's metrics, such as the syncs its writers shared.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::Relaxed)
    }

    /// Closes the journal before its last clone is dropped: later appends and commits of
    /// entries not yet durable fail with [`WriteError::Failed`], and the directory lock is
    /// released, so that the directory may be opened again (by this process or another) while
    /// clones of this journal still exist. Entries already durable stay so. Call it once no
    /// commit is waiting (a sync in flight finishes writing after the lock was released).
    pub fn close(&self) {
        {
            let mut state = self.inner.state.lock();
            if matches!(state.health, Health::Healthy) {
                state.health = Health::Failed("the journal was closed".to_owned());
            }
            self.inner.notify(state.durable_lsn);
        }
        self.inner.lock.lock().take();
    }

    /// Makes the next append's LSN at least `next`, leaving the LSNs in between unused: for a
    /// caller that copies entries in with their LSNs kept, gaps included (such as a migration
    /// from another log). A lower `next` changes nothing. The jump is not written down until an
    /// entry above it is durable: after a restart before that, LSNs go on from the last entry.
    ///
    /// ```
    /// use mainstay_journal::{Journal, JournalConfig, Lsn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let (journal, _) = Journal::open(dir.path(), JournalConfig::default())?;
    /// assert_eq!(journal.write(b"first").await?, Lsn::new(1));
    /// journal.skip_to(Lsn::new(7));
    /// assert_eq!(journal.write(b"seventh").await?, Lsn::new(7));
    /// # Ok(())
    /// # }
    /// ```
    pub fn skip_to(&self, next: Lsn) {
        let mut state = self.inner.state.lock();
        state.next_lsn = state.next_lsn.max(next.get());
    }

    /// The highest LSN known durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        Lsn::new(self.inner.state.lock().durable_lsn)
    }

    /// The highest LSN handed out.
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        Lsn::new(self.inner.state.lock().appended_lsn)
    }

    /// Why the journal refuses writes, once a write or sync failed.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        match &self.inner.state.lock().health {
            Health::Healthy => None,
            Health::Poisoning(reason) | Health::Failed(reason) => Some(reason.clone()),
        }
    }

    /// Deletes every closed segment whose entries all have an LSN at most `covered` (typically
    /// what a snapshot written with [`write_atomic`](crate::write_atomic) holds), and returns
    /// how many. Blocking.
    ///
    /// The directory is not synced after the deletions: a segment that comes back after a power
    /// cut holds only entries at or below `covered`, which the caller skips on replay as it does
    /// any covered entry, and the next trim deletes it again.
    ///
    /// # Errors
    ///
    /// [`TrimError::Io`] when a segment could not be deleted (it stays on disk).
    pub fn trim(&self, covered: Lsn) -> Result<usize, TrimError> {
        let doomed: Vec<SegmentInfo> = {
            let mut state = self.inner.state.lock();
            let closed = state.segments.len().saturating_sub(1);
            let count = state
                .segments
                .iter()
                .take(closed)
                .take_while(|segment| segment.last_lsn <= covered.get())
                .count();
            state.segments.drain(..count).collect()
        };
        for segment in &doomed {
            self.inner
                .fs
                .remove_file(&segment.path)
                .map_err(|source| TrimError::Io {
                    path: segment.path.clone(),
                    source,
                })?;
            tracing::debug!(seq = segment.seq, "deleted a covered journal segment");
        }
        Ok(doomed.len())
    }

    /// Closes the active segment and starts a new one, so that the next [`trim`](Self::trim)
    /// may delete every entry written so far once they are covered (an erasure that must leave
    /// no byte of them on disk). Returns whether a segment was closed: an active segment that
    /// holds no entry is kept. Entries appended but not yet durable go to the new segment.
    /// Blocking: it waits for a sync in flight.
    ///
    /// # Errors
    ///
    /// [`WriteError::Failed`] once a write or sync failed, or when the new segment cannot be
    /// created (the journal is poisoned then, as after a failed rotation).
    pub fn roll(&self) -> Result<bool, WriteError> {
        let (file, next_seq, durable) = {
            let mut state = self.inner.state.lock();
            loop {
                if let Health::Poisoning(reason) | Health::Failed(reason) = &state.health {
                    return Err(WriteError::Failed {
                        reason: reason.clone(),
                    });
                }
                if !state.leading {
                    break;
                }
                self.inner.changed.wait(&mut state);
            }
            let Some(active) = state.segments.last() else {
                return Ok(false);
            };
            if active.end <= HEADER_LEN as u64 {
                return Ok(false);
            }
            let next_seq = active.seq + 1;
            // The leader role keeps every sync out until the new segment is in place.
            state.leading = true;
            (state.active.take(), next_seq, state.durable_lsn)
        };
        drop(file);
        let path = segment::path(&self.inner.dir, next_seq);
        match segment::create(
            &*self.inner.fs,
            &path,
            durable + 1,
            self.inner.config.preallocate_bytes,
            OpenMode::CreateNew,
        ) {
            Ok((new, allocated)) => {
                let mut state = self.inner.state.lock();
                state.active = Some(new);
                state.segments.push(SegmentInfo {
                    seq: next_seq,
                    path,
                    last_lsn: durable,
                    end: HEADER_LEN as u64,
                    allocated,
                });
                self.inner.resign(&mut state);
                Ok(true)
            }
            Err(error) => {
                let reason = format!("journal rotation failed: {error}");
                self.inner.poison(reason.clone());
                Err(WriteError::Failed { reason })
            }
        }
    }

    /// The journal's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Segment files on disk now.
    #[must_use]
    pub fn segments(&self) -> usize {
        self.inner.state.lock().segments.len()
    }

    /// Counters and sizes for metrics: syncs so far, and the segments on disk now.
    #[must_use]
    pub fn stats(&self) -> JournalStats {
        let state = self.inner.state.lock();
        JournalStats {
            syncs: self.inner.syncs.load(Ordering::Relaxed),
            segments: state.segments.len(),
            disk_bytes: state
                .segments
                .iter()
                .map(|segment| segment.allocated.max(segment.end))
                .sum(),
        }
    }
}

/// What [`Journal::stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalStats {
    /// Group syncs (`fdatasync`s of segment data) that succeeded since the journal was opened:
    /// one per group commit, however many writers it carried.
    pub syncs: u64,
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes of the segment files on disk, zero-filled space included.
    pub disk_bytes: u64,
}

/// Whether `lsn` is durable, failed, or waits for a sync (led by the caller when none runs).
fn next_step(state: &mut State, lsn: Lsn) -> Result<Step, WriteError> {
    let lsn = lsn.get();
    if lsn <= state.durable_lsn {
        return Ok(Step::Done);
    }
    if lsn > state.appended_lsn {
        return Err(WriteError::NotAppended { lsn: Lsn::new(lsn) });
    }
    match &state.health {
        Health::Failed(reason) => Err(WriteError::Failed {
            reason: reason.clone(),
        }),
        Health::Poisoning(_) => Ok(Step::Wait),
        Health::Healthy if state.leading => Ok(Step::Wait),
        Health::Healthy => {
            state.leading = true;
            Ok(Step::Lead)
        }
    }
}

/// The leader role handed to a thread off the runtime; if that thread never runs (a runtime
/// shutting down drops the task), dropping it gives the role back so a waiter can take it.
struct Leader {
    inner: Option<Arc<Inner>>,
    done: Option<oneshot::Sender<()>>,
}

impl Leader {
    fn run(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.lead(None);
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut state = inner.state.lock();
            inner.resign(&mut state);
        }
    }
}

fn spawn_leader(leader: Leader) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || leader.run())),
        Err(_) => {
            // Outside tokio: a thread of its own. If none can be started, the leader is dropped
            // and gives its role back; the caller then leads again and tries again.
            let _ = std::thread::Builder::new()
                .name("journal-sync".to_owned())
                .spawn(move || leader.run());
        }
    }
}

impl Inner {
    /// Leads group syncs (the caller claimed the role): until nothing is pending, or, with
    /// `until`, until that LSN is durable.
    fn lead(&self, until: Option<u64>) {
        while let Some(round) = self.sync_once() {
            if let Some(until) = until {
                let mut state = self.state.lock();
                if state.durable_lsn >= until {
                    self.resign(&mut state);
                    return;
                }
            }
            self.await_group(round);
        }
    }

    /// Ends the leader role and wakes the waiters, one of which leads next if entries are
    /// pending.
    fn resign(&self, state: &mut State) {
        state.leading = false;
        self.notify(state.durable_lsn);
    }

    fn notify(&self, durable_lsn: u64) {
        self.changed.notify_all();
        self.durable.send_replace(durable_lsn);
    }

    /// Waits until an entry is pending for each writer `last` saw, at most half its sync time
    /// (capped at `max_group_wait`).
    fn await_group(&self, last: Round) {
        if last.writers < 2 {
            return;
        }
        let deadline = Instant::now() + (last.took / 2).min(self.config.max_group_wait);
        let mut state = self.state.lock();
        state.group_target = last.writers;
        while matches!(state.health, Health::Healthy)
            && state.appended_lsn - state.durable_lsn < last.writers
        {
            if self.refilled.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.group_target = 0;
    }

    /// One write + `fdatasync` of everything appended, then a rotation if the segment is full.
    /// `None` when there was nothing to do or it failed: the leader role has ended then, in the
    /// same critical section that saw nothing pending, so a writer appending later finds no
    /// leader and becomes one.
    fn sync_once(&self) -> Option<Round> {
        let started = Instant::now();
        let (buffer, file, offset, allocated, target, records) = {
            let mut state = self.state.lock();
            if !matches!(state.health, Health::Healthy) || state.durable_lsn >= state.appended_lsn {
                self.resign(&mut state);
                return None;
            }
            let Some(file) = state.active.take() else {
                drop(state);
                self.poison("the journal has no active segment".to_owned());
                return None;
            };
            let spare = std::mem::take(&mut state.spare);
            let (offset, allocated) = state
                .segments
                .last()
                .map_or((HEADER_LEN as u64, 0), |segment| {
                    (segment.end, segment.allocated)
                });
            (
                std::mem::replace(&mut state.buffer, spare),
                file,
                offset,
                allocated,
                state.appended_lsn,
                state.appended_lsn - state.durable_lsn,
            )
        };
        let end = offset + buffer.len() as u64;
        let mut grown = allocated;
        let written = (|| {
            // Grow the zero-filled space in whole stretches before writing the frames into it:
            // only the syncs that grow it pay for the file's size.
            if !self.zeros.is_empty() {
                while grown < end {
                    file.write_at(grown, &self.zeros)?;
                    grown += self.zeros.len() as u64;
                }
            }
            file.write_at(offset, &buffer)?;
            file.sync(SyncSite::SegmentData)
        })();
        if let Err(error) = written {
            drop(file);
            self.poison(format!("journal write or fsync failed: {error}"));
            return None;
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        state.durable_lsn = target;
        let rotate = match state.segments.last_mut() {
            Some(active) => {
                active.last_lsn = target;
                active.end = end;
                active.allocated = grown.max(end);
                end >= self.config.segment_bytes
            }
            None => false,
        };
        let next_seq = state.segments.last().map_or(1, |segment| segment.seq + 1);
        if !rotate {
            state.active = Some(file);
        }
        let mut buffer = buffer;
        buffer.clear();
        state.spare = buffer;
        let writers = records + (state.appended_lsn - target);
        drop(state);
        self.notify(target);
        if rotate {
            // The new segment is created without the lock, so appends go on meanwhile; the
            // leader role keeps any other sync from starting until it is in place.
            let path = segment::path(&self.dir, next_seq);
            match segment::create(
                &*self.fs,
                &path,
                target + 1,
                self.config.preallocate_bytes,
                OpenMode::CreateNew,
            ) {
                Ok((new, allocated)) => {
                    let mut state = self.state.lock();
                    state.active = Some(new);
                    state.segments.push(SegmentInfo {
                        seq: next_seq,
                        path,
                        last_lsn: target,
                        end: HEADER_LEN as u64,
                        allocated,
                    });
                }
                Err(error) => {
                    self.poison(format!("journal rotation failed: {error}"));
                    return None;
                }
            }
        }
        Some(Round {
            writers,
            took: started.elapsed(),
        })
    }

    /// Poisons the journal (the caller is the leader): refuses appends, records the LSNs that
    /// were not durable, then fails their writers and gives up the leader role.
    fn poison(&self, reason: String) {
        let (range, mut ranges) = {
            let mut state = self.state.lock();
            state.health = Health::Poisoning(reason.clone());
            state.active = None;
            (
                (state.durable_lsn + 1, state.appended_lsn),
                state.poisoned.clone(),
            )
        };
        tracing::error!(%reason, first = range.0, last = range.1, "journal write or fsync failed; the journal refuses writes until reopened");
        if range.0 <= range.1 {
            ranges.push(range);
            if let Err(error) = poisoned::write(&*self.fs, &self.dir, &ranges) {
                tracing::error!(%error, first = range.0, last = range.1, "could not record the lsns of failed journal writes; if the disk kept them they would come back after a restart");
            }
        }
        let mut state = self.state.lock();
        state.poisoned = ranges;
        state.health = Health::Failed(reason);
        self.resign(&mut state);
    }
}
