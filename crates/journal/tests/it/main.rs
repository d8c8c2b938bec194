//! Integration tests of mainstay-journal, one module per area.

mod additions;
mod api;
mod group_commit;
mod poison;
mod power_loss;
mod replay;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use mainstay_journal::fs::{FileHandle, FileSystem, HeldLock, OpenMode, SimFs, SyncSite};
use mainstay_journal::{Journal, JournalConfig, Lsn, Replay};

/// A config with small segments, so that tests rotate.
pub(crate) fn small_segments() -> JournalConfig {
    JournalConfig {
        segment_bytes: 1024,
        preallocate_bytes: 512,
        ..JournalConfig::default()
    }
}

/// Opens the journal at `/journal` of a simulated file system.
pub(crate) fn open_sim(sim: &SimFs, config: JournalConfig) -> (Journal, Replay) {
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    Journal::open_with(fs, "/journal", config).expect("open the journal")
}

/// The payload of the `n`th test entry.
pub(crate) fn payload(n: u64) -> Vec<u8> {
    format!("entry {n:04} {}", "x".repeat((n % 7) as usize * 5)).into_bytes()
}

/// Appends and commits `count` entries one by one (so that small segments rotate); returns
/// their LSNs.
pub(crate) fn write_blocking(journal: &Journal, first: u64, count: u64) -> Vec<Lsn> {
    (first..first + count)
        .map(|n| {
            let lsn = journal.append(&payload(n)).expect("append");
            journal.commit_blocking(lsn).expect("commit");
            lsn
        })
        .collect()
}

/// Writes entries from `next` on, one by one, until a rotation leaves the active segment empty;
/// returns the number of the next entry.
pub(crate) fn write_until_rotation(journal: &Journal, mut next: u64) -> u64 {
    let segments = journal.segments();
    while journal.segments() == segments {
        write_blocking(journal, next, 1);
        next += 1;
    }
    next
}

/// The payloads of a replay.
pub(crate) fn payloads(replay: &Replay) -> Vec<Vec<u8>> {
    replay
        .entries
        .iter()
        .map(|entry| entry.payload.clone())
        .collect()
}

/// The segment files of a journal directory on the real file system, oldest first.
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the journal directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// A file system that calls a hook before every file sync, then delegates.
pub(crate) struct HookFs {
    inner: SimFs,
    hook: Arc<dyn Fn(SyncSite) + Send + Sync>,
}

impl std::fmt::Debug for HookFs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HookFs")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl HookFs {
    pub(crate) fn new(inner: SimFs, hook: impl Fn(SyncSite) + Send + Sync + 'static) -> Self {
        Self {
            inner,
            hook: Arc::new(hook),
        }
    }
}

struct HookFile {
    inner: Box<dyn FileHandle>,
    hook: Arc<dyn Fn(SyncSite) + Send + Sync>,
}

impl std::fmt::Debug for HookFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HookFile")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl FileHandle for HookFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, bytes)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync(&self, site: SyncSite) -> io::Result<()> {
        (self.hook)(site);
        self.inner.sync(site)
    }
}

impl FileSystem for HookFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.inner.read_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        Ok(Box::new(HookFile {
            inner: self.inner.open(path, mode)?,
            hook: Arc::clone(&self.hook),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path, site: SyncSite) -> io::Result<()> {
        self.inner.sync_dir(path, site)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn HeldLock>>> {
        self.inner.try_lock(path)
    }
}

/// A gate syncs pass through: closed, it lets through only the permits it was given.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// `None`: open.
    permits: Option<usize>,
    waiting: usize,
    passed: usize,
}

impl Gate {
    pub(crate) fn closed() -> Arc<Self> {
        let gate = Self::default();
        gate.state.lock().unwrap().permits = Some(0);
        Arc::new(gate)
    }

    /// Called by a sync: waits for a permit.
    pub(crate) fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.waiting += 1;
        self.changed.notify_all();
        while state.permits == Some(0) {
            state = self.changed.wait(state).unwrap();
        }
        if let Some(permits) = &mut state.permits {
            *permits -= 1;
        }
        state.waiting -= 1;
        state.passed += 1;
        self.changed.notify_all();
    }

    /// Blocks until `count` syncs wait at the gate; false if none came within 20 s (a guard
    /// against a hang, never a timing rule).
    pub(crate) fn await_waiting(&self, count: usize) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut state = self.state.lock().unwrap();
        while state.waiting < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        true
    }

    pub(crate) fn release(&self, permits: usize) {
        let mut state = self.state.lock().unwrap();
        if let Some(left) = &mut state.permits {
            *left += permits;
        }
        self.changed.notify_all();
    }

    /// Opens the gate when dropped, so that a failing test does not leave a sync blocked (and
    /// its runtime waiting for it forever).
    pub(crate) fn open_on_drop(self: &Arc<Self>) -> OpenOnDrop {
        OpenOnDrop(Arc::clone(self))
    }

    pub(crate) fn open(&self) {
        self.state.lock().unwrap().permits = None;
        self.changed.notify_all();
    }

    /// Syncs that went through.
    pub(crate) fn passed(&self) -> usize {
        self.state.lock().unwrap().passed
    }
}

/// See [`Gate::open_on_drop`].
pub(crate) struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}
