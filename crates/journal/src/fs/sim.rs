//! [`SimFs`]: an in-memory file system that separates what was written from what is durable,
//! for power-loss tests.
//!
//! Every file has the bytes reads see (the page cache) and the bytes that survive a power cut
//! (the disk); every directory likewise has its visible entries and its durable ones. A file sync
//! copies the file's bytes to its durable bytes; a directory sync copies the directory's entries.
//! A power cut keeps only what is durable and reachable from the root through durable entries,
//! optionally with a prefix of the last unsynced write torn onto the disk. A process crash keeps
//! everything (the page cache survives a killed process) but invalidates every open handle and
//! lock, as a new process would see them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileHandle, FileSystem, HeldLock, OpenMode, SyncSite};

const ROOT: u64 = 0;

/// What an injected sync failure leaves on the disk (see [`SimFs::fail_next_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFailure {
    /// The sync fails and nothing it should have written reached the disk.
    DataLost,
    /// The sync fails although the data did reach the disk: the worst case for a log, whose
    /// writers are told of a failure while the bytes may come back after a restart.
    DataWritten,
}

/// An in-memory file system with simulated power cuts, process crashes, failing and skipped
/// syncs and bit rot, deterministic for a seed. Cheap to clone: clones share one file system.
///
/// ```
/// use std::path::Path;
/// use mainstay_journal::fs::{FileSystem, OpenMode, SimFs, SyncSite};
///
/// let sim = SimFs::new(7);
/// let file = sim.open(Path::new("/data"), OpenMode::CreateNew)?;
/// file.write_at(0, b"kept")?;
/// file.sync(SyncSite::SegmentData)?;
/// sim.sync_dir(Path::new("/"), SyncSite::SegmentCreateDir)?;
/// file.write_at(4, b" and lost")?;
/// sim.power_cut();
/// assert_eq!(sim.read(Path::new("/data"))?, b"kept");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct SimFs {
    sim: Arc<Mutex<Sim>>,
    /// For a view made by [`SimFs::process`]: the process (epoch) it belongs to. Its calls fail
    /// once that process died, as a dead process's threads cannot touch the disk.
    process: Option<u64>,
}

#[derive(Debug)]
enum Node {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug)]
struct LastWrite {
    node: u64,
    offset: u64,
    bytes: Vec<u8>,
}

enum Decision {
    Persist,
    Skip,
    Fail(SyncFailure),
}

#[derive(Debug)]
struct Sim {
    nodes: HashMap<u64, Node>,
    next_node: u64,
    /// Bumped by every crash and power cut: handles and locks of an older epoch are dead.
    epoch: u64,
    crash_after: Option<u64>,
    crashed: bool,
    failing: Vec<(SyncSite, SyncFailure)>,
    skipped: Option<SyncSite>,
    syncs: Vec<u64>,
    /// The most recent write not yet made durable by a sync of its file.
    last_write: Option<LastWrite>,
    locks: HashSet<u64>,
    rng: u64,
    ops: u64,
}

fn stale() -> io::Error {
    io::Error::other("simulated process crashed: this handle belongs to a dead process")
}

fn crashed() -> io::Error {
    io::Error::other("simulated process crashed")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

impl SimFs {
    /// An empty file system (only the root directory `/`, durable), whose random choices (where
    /// a torn write ends) follow `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        Self {
            sim: Arc::new(Mutex::new(Sim {
                nodes,
                next_node: ROOT + 1,
                epoch: 0,
                crash_after: None,
                crashed: false,
                failing: Vec::new(),
                skipped: None,
                syncs: vec![0; SyncSite::ALL.len()],
                last_write: None,
                locks: HashSet::new(),
                rng: seed ^ 0x9E37_79B9_7F4A_7C15,
                ops: 0,
            })),
            process: None,
        }
    }

    /// A view of this file system for the process running now: once that process dies (a
    /// crash, a power cut or [`crash_after`](Self::crash_after) and a restart), every call made
    /// through the view fails, as for a stale handle. Give each simulated process its own view,
    /// so that a thread the dead process left behind (a group-commit leader, a compaction on a
    /// blocking thread) cannot create or delete files in the file system of the next boot.
    #[must_use]
    pub fn process(&self) -> Self {
        Self {
            sim: Arc::clone(&self.sim),
            process: Some(self.sim.lock().epoch),
        }
    }

    /// Cuts the power: every byte and directory entry not yet synced is lost, files no longer
    /// reachable through durable entries disappear, and every handle and lock dies. The file
    /// system then serves a new boot.
    pub fn power_cut(&self) {
        self.sim.lock().power_cut(false);
    }

    /// [`power_cut`](Self::power_cut), but the last unsynced write reaches the disk up to a
    /// random boundary (possibly none or all of it), as a write interrupted by the power cut.
    pub fn power_cut_tearing_last_write(&self) {
        self.sim.lock().power_cut(true);
    }

    /// The process dies: nothing is lost (the page cache lives on), but every open handle and
    /// lock dies; later calls are those of a new process.
    pub fn crash(&self) {
        let mut sim = self.sim.lock();
        sim.new_epoch();
    }

    /// The process will die after `ops` more calls: the next `ops` calls work, every later one
    /// fails until [`crash`](Self::crash) or a power cut starts a new process.
    pub fn crash_after(&self, ops: u64) {
        self.sim.lock().crash_after = Some(ops);
    }

    /// Whether the process died from [`crash_after`](Self::crash_after) and was not restarted.
    #[must_use]
    pub fn has_crashed(&self) -> bool {
        self.sim.lock().crashed
    }

    /// Makes the next sync at `site` fail, leaving the disk as `failure` says.
    pub fn fail_next_sync(&self, site: SyncSite, failure: SyncFailure) {
        self.sim.lock().failing.push((site, failure));
    }

    /// Makes every sync at `site` report success without syncing anything, as if the call had
    /// been removed from the code (`None` restores them).
    pub fn skip_syncs(&self, site: Option<SyncSite>) {
        self.sim.lock().skipped = site;
    }

    /// How many syncs were called at `site` (skipped and failed ones included).
    #[must_use]
    pub fn syncs(&self, site: SyncSite) -> u64 {
        self.sim.lock().syncs[site.index()]
    }

    /// How many calls the file system served.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.sim.lock().ops
    }

    /// What a read of the file at `path` returns now, seen from outside the simulated process:
    /// the call is not counted and works after the process died.
    ///
    /// # Errors
    ///
    /// When there is no file at `path`.
    pub fn peek(&self, path: &Path) -> io::Result<Vec<u8>> {
        let sim = self.sim.lock();
        let node = sim.resolve(path)?;
        match sim.nodes.get(&node) {
            Some(Node::File { data, .. }) => Ok(data.clone()),
            _ => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
        }
    }

    /// The names in the directory at `path` now, seen from outside the simulated process (see
    /// [`peek`](Self::peek)), sorted.
    ///
    /// # Errors
    ///
    /// When there is no directory at `path`.
    pub fn peek_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let sim = self.sim.lock();
        let node = sim.resolve(path)?;
        match sim.nodes.get(&node) {
            Some(Node::Dir { entries, .. }) => Ok(entries.keys().cloned().collect()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            )),
        }
    }

    /// Bit rot: flips bit `bit` (0-7) of the byte at `offset` of a file, both on the disk and in
    /// the page cache.
    ///
    /// # Errors
    ///
    /// When the file does not exist or is shorter than `offset`.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut sim = self.sim.lock();
        let node = sim.resolve(path)?;
        let Some(Node::File { data, durable }) = sim.nodes.get_mut(&node) else {
            return Err(io::Error::other(format!(
                "{} is not a file",
                path.display()
            )));
        };
        let index = usize::try_from(offset).map_err(io::Error::other)?;
        let mask = 1u8 << (bit % 8);
        let mut flipped = false;
        for bytes in [data, durable] {
            if let Some(byte) = bytes.get_mut(index) {
                *byte ^= mask;
                flipped = true;
            }
        }
        if flipped {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} has no byte at offset {offset}", path.display()),
            ))
        }
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sim = self.sim.lock();
        formatter
            .debug_struct("SimFs")
            .field("nodes", &sim.nodes.len())
            .field("epoch", &sim.epoch)
            .field("crashed", &sim.crashed)
            .finish_non_exhaustive()
    }
}

impl Sim {
    fn next_random(&mut self) -> u64 {
        // splitmix64: small, and enough to pick where a write tears.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.crashed = false;
        self.crash_after = None;
        self.locks.clear();
    }

    /// Counts a call and fails it when the process is dead or the handle is stale.
    fn op(&mut self, epoch: Option<u64>) -> io::Result<()> {
        if epoch.is_some_and(|epoch| epoch != self.epoch) {
            return Err(stale());
        }
        if self.crashed {
            return Err(crashed());
        }
        if let Some(left) = self.crash_after {
            if left == 0 {
                self.crashed = true;
                return Err(crashed());
            }
            self.crash_after = Some(left - 1);
        }
        self.ops += 1;
        Ok(())
    }

    fn decide(&mut self, site: SyncSite) -> Decision {
        self.syncs[site.index()] += 1;
        if self.skipped == Some(site) {
            return Decision::Skip;
        }
        if let Some(position) = self
            .failing
            .iter()
            .position(|(failing, _)| *failing == site)
        {
            return Decision::Fail(self.failing.remove(position).1);
        }
        Decision::Persist
    }

    fn power_cut(&mut self, tear: bool) {
        if tear && let Some(write) = self.last_write.take() {
            let keep =
                usize::try_from(self.next_random() % (write.bytes.len() as u64 + 1)).unwrap_or(0);
            if let (Some(Node::File { durable, .. }), Ok(offset)) = (
                self.nodes.get_mut(&write.node),
                usize::try_from(write.offset),
            ) {
                let end = offset + keep;
                if durable.len() < end {
                    durable.resize(end, 0);
                }
                durable[offset..end].copy_from_slice(&write.bytes[..keep]);
            }
        }
        let mut kept = HashMap::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if kept.contains_key(&id) {
                continue;
            }
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            let rebooted = match node {
                Node::File { durable, .. } => Node::File {
                    data: durable.clone(),
                    durable: durable.clone(),
                },
                Node::Dir { durable, .. } => {
                    stack.extend(durable.values().copied());
                    Node::Dir {
                        entries: durable.clone(),
                        durable: durable.clone(),
                    }
                }
            };
            kept.insert(id, rebooted);
        }
        self.nodes = kept;
        self.last_write = None;
        self.new_epoch();
    }

    /// The node at an absolute path.
    fn resolve(&self, path: &Path) -> io::Result<u64> {
        let mut node = ROOT;
        let mut components = path.components();
        if components.next() != Some(Component::RootDir) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: the simulated file system takes absolute paths",
                    path.display()
                ),
            ));
        }
        for component in components {
            match component {
                Component::Normal(name) => {
                    let Some(Node::Dir { entries, .. }) = self.nodes.get(&node) else {
                        return Err(io::Error::new(
                            io::ErrorKind::NotADirectory,
                            format!(
                                "{} has a file where a directory is expected",
                                path.display()
                            ),
                        ));
                    };
                    node = *entries.get(name).ok_or_else(|| not_found(path))?;
                }
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: `..` is not supported", path.display()),
                    ));
                }
            }
        }
        Ok(node)
    }

    /// The directory holding `path` and the name of `path` in it.
    fn parent(&self, path: &Path) -> io::Result<(u64, OsString)> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        let parent = path.parent().ok_or_else(|| not_found(path))?;
        let dir = self.resolve(parent)?;
        match self.nodes.get(&dir) {
            Some(Node::Dir { .. }) => Ok((dir, name.to_owned())),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", parent.display()),
            )),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> io::Result<&mut BTreeMap<OsString, u64>> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the parent is not a directory",
            )),
        }
    }

    fn new_node(&mut self, node: Node) -> u64 {
        let id = self.next_node;
        self.next_node += 1;
        self.nodes.insert(id, node);
        id
    }

    fn file_mut(&mut self, node: u64) -> io::Result<&mut Vec<u8>> {
        match self.nodes.get_mut(&node) {
            Some(Node::File { data, .. }) => Ok(data),
            _ => Err(stale()),
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let (parent, name) = sim.parent(path)?;
        if sim.entries_mut(parent)?.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let dir = sim.new_node(Node::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        });
        sim.entries_mut(parent)?.insert(name, dir);
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let node = sim.resolve(path)?;
        match sim.nodes.get(&node) {
            Some(Node::Dir { entries, .. }) => Ok(entries.keys().cloned().collect()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            )),
        }
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let node = sim.resolve(path)?;
        match sim.nodes.get(&node) {
            Some(Node::File { data, .. }) => Ok(data.clone()),
            _ => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
        }
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let (parent, name) = sim.parent(path)?;
        let existing = sim.entries_mut(parent)?.get(&name).copied();
        let node = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (Some(node), OpenMode::Existing | OpenMode::Truncate) => {
                let Some(Node::File { data, .. }) = sim.nodes.get_mut(&node) else {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        format!("{} is a directory", path.display()),
                    ));
                };
                if mode == OpenMode::Truncate {
                    data.clear();
                    if sim
                        .last_write
                        .as_ref()
                        .is_some_and(|write| write.node == node)
                    {
                        sim.last_write = None;
                    }
                }
                node
            }
            (None, OpenMode::CreateNew | OpenMode::Truncate) => {
                let node = sim.new_node(Node::File {
                    data: Vec::new(),
                    durable: Vec::new(),
                });
                sim.entries_mut(parent)?.insert(name, node);
                node
            }
        };
        Ok(Box::new(SimFile {
            sim: Arc::clone(&self.sim),
            node,
            epoch: sim.epoch,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let (from_dir, from_name) = sim.parent(from)?;
        let (to_dir, to_name) = sim.parent(to)?;
        let node = *sim
            .entries_mut(from_dir)?
            .get(&from_name)
            .ok_or_else(|| not_found(from))?;
        if let Some(target) = sim.entries_mut(to_dir)?.get(&to_name).copied()
            && matches!(sim.nodes.get(&target), Some(Node::Dir { .. }))
        {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        sim.entries_mut(from_dir)?.remove(&from_name);
        sim.entries_mut(to_dir)?.insert(to_name, node);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let (parent, name) = sim.parent(path)?;
        let node = *sim
            .entries_mut(parent)?
            .get(&name)
            .ok_or_else(|| not_found(path))?;
        if matches!(sim.nodes.get(&node), Some(Node::Dir { .. })) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        sim.entries_mut(parent)?.remove(&name);
        Ok(())
    }

    fn sync_dir(&self, path: &Path, site: SyncSite) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let node = sim.resolve(path)?;
        if !matches!(sim.nodes.get(&node), Some(Node::Dir { .. })) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ));
        }
        let decision = sim.decide(site);
        let Some(Node::Dir { entries, durable }) = sim.nodes.get_mut(&node) else {
            return Err(stale());
        };
        match decision {
            Decision::Skip => Ok(()),
            Decision::Persist => {
                durable.clone_from(entries);
                Ok(())
            }
            Decision::Fail(failure) => {
                if failure == SyncFailure::DataWritten {
                    durable.clone_from(entries);
                }
                Err(io::Error::other(format!(
                    "injected fsync failure of {} at {site}",
                    path.display()
                )))
            }
        }
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn HeldLock>>> {
        let mut sim = self.sim.lock();
        sim.op(self.process)?;
        let (parent, name) = sim.parent(path)?;
        let node = match sim.entries_mut(parent)?.get(&name).copied() {
            Some(node) => node,
            None => {
                let node = sim.new_node(Node::File {
                    data: Vec::new(),
                    durable: Vec::new(),
                });
                sim.entries_mut(parent)?.insert(name, node);
                node
            }
        };
        if !sim.locks.insert(node) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            sim: Arc::clone(&self.sim),
            node,
            epoch: sim.epoch,
        })))
    }
}

struct SimFile {
    sim: Arc<Mutex<Sim>>,
    node: u64,
    epoch: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimFile")
            .field("node", &self.node)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl FileHandle for SimFile {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(Some(self.epoch))?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let data = sim.file_mut(self.node)?;
        let end = start + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        sim.last_write = Some(LastWrite {
            node: self.node,
            offset,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(Some(self.epoch))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        sim.file_mut(self.node)?.resize(len, 0);
        if sim
            .last_write
            .as_ref()
            .is_some_and(|write| write.node == self.node)
        {
            sim.last_write = None;
        }
        Ok(())
    }

    fn sync(&self, site: SyncSite) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.op(Some(self.epoch))?;
        let decision = sim.decide(site);
        let persisted = match decision {
            Decision::Skip => return Ok(()),
            Decision::Persist | Decision::Fail(SyncFailure::DataWritten) => true,
            Decision::Fail(SyncFailure::DataLost) => false,
        };
        if persisted {
            let Some(Node::File { data, durable }) = sim.nodes.get_mut(&self.node) else {
                return Err(stale());
            };
            durable.clone_from(data);
            if sim
                .last_write
                .as_ref()
                .is_some_and(|write| write.node == self.node)
            {
                sim.last_write = None;
            }
        }
        match decision {
            Decision::Fail(_) => Err(io::Error::other(format!(
                "injected fsync failure at {site}"
            ))),
            _ => Ok(()),
        }
    }
}

struct SimLock {
    sim: Arc<Mutex<Sim>>,
    node: u64,
    epoch: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimLock")
            .field("node", &self.node)
            .finish()
    }
}

impl HeldLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut sim = self.sim.lock();
        if sim.epoch == self.epoch {
            sim.locks.remove(&self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn path(text: &str) -> &Path {
        Path::new(text)
    }

    #[test]
    fn a_dead_process_view_cannot_touch_the_next_boot() {
        let sim = SimFs::new(1);
        let first = sim.process();
        first.open(path("/a"), OpenMode::CreateNew).unwrap();
        sim.power_cut();
        // A thread the dead process left behind: every path call fails, nothing is created.
        assert!(first.open(path("/b"), OpenMode::CreateNew).is_err());
        assert!(first.read_dir(path("/")).is_err());
        let second = sim.process();
        assert!(second.read_dir(path("/")).unwrap().is_empty());
        second.open(path("/b"), OpenMode::CreateNew).unwrap();
        sim.crash();
        assert!(second.remove_file(path("/b")).is_err());
        assert_eq!(sim.process().read_dir(path("/")).unwrap(), ["b"]);
        // The unbound file system stays usable across boots, as before.
        assert!(sim.open(path("/c"), OpenMode::CreateNew).is_ok());
    }

    #[test]
    fn a_power_cut_keeps_synced_bytes_and_entries_only() {
        let sim = SimFs::new(1);
        sim.create_dir(path("/d")).unwrap();
        sim.sync_dir(path("/"), SyncSite::CreateDir).unwrap();
        let synced = sim.open(path("/d/synced"), OpenMode::CreateNew).unwrap();
        synced.write_at(0, b"abc").unwrap();
        synced.sync(SyncSite::SegmentData).unwrap();
        sim.sync_dir(path("/d"), SyncSite::SegmentCreateDir)
            .unwrap();
        synced.write_at(3, b"def").unwrap();
        let unlisted = sim.open(path("/d/unlisted"), OpenMode::CreateNew).unwrap();
        unlisted.write_at(0, b"xyz").unwrap();
        unlisted.sync(SyncSite::SegmentData).unwrap();
        assert_eq!(sim.read(path("/d/synced")).unwrap(), b"abcdef");

        sim.power_cut();
        assert_eq!(sim.read(path("/d/synced")).unwrap(), b"abc");
        assert_eq!(
            sim.read(path("/d/unlisted")).unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "an entry of a directory never synced is lost"
        );
        assert!(
            synced.write_at(0, b"x").is_err(),
            "handles of the old boot are dead"
        );
    }

    #[test]
    fn a_rename_is_durable_only_with_its_directory() {
        let sim = SimFs::new(2);
        for name in ["/old", "/tmp"] {
            let file = sim.open(path(name), OpenMode::CreateNew).unwrap();
            file.write_at(0, name.as_bytes()).unwrap();
            file.sync(SyncSite::ReplaceFile).unwrap();
        }
        sim.sync_dir(path("/"), SyncSite::ReplaceDir).unwrap();
        sim.rename(path("/tmp"), path("/old")).unwrap();
        assert_eq!(sim.read(path("/old")).unwrap(), b"/tmp");
        sim.power_cut();
        assert_eq!(sim.read(path("/old")).unwrap(), b"/old");
        assert_eq!(sim.read(path("/tmp")).unwrap(), b"/tmp");
    }

    #[test]
    fn a_crash_keeps_the_page_cache_and_frees_locks() {
        let sim = SimFs::new(3);
        let lock = sim.try_lock(path("/LOCK")).unwrap();
        assert!(lock.is_some());
        assert!(sim.try_lock(path("/LOCK")).unwrap().is_none());
        let file = sim.open(path("/f"), OpenMode::CreateNew).unwrap();
        file.write_at(0, b"cached").unwrap();
        sim.crash_after(0);
        assert!(file.write_at(0, b"x").is_err());
        assert!(sim.has_crashed());
        sim.crash();
        assert_eq!(sim.read(path("/f")).unwrap(), b"cached");
        assert!(
            sim.try_lock(path("/LOCK")).unwrap().is_some(),
            "a dead process holds no lock"
        );
        drop(lock);
    }

    #[test]
    fn a_torn_write_leaves_a_prefix() {
        let mut prefixes = HashSet::new();
        for seed in 0..64 {
            let sim = SimFs::new(seed);
            let file = sim.open(path("/f"), OpenMode::CreateNew).unwrap();
            file.sync(SyncSite::SegmentData).unwrap();
            sim.sync_dir(path("/"), SyncSite::SegmentCreateDir).unwrap();
            file.write_at(0, b"0123456789").unwrap();
            sim.power_cut_tearing_last_write();
            let kept = sim.read(path("/f")).unwrap();
            assert!(b"0123456789".starts_with(&kept), "{kept:?} is no prefix");
            prefixes.insert(kept.len());
        }
        assert!(prefixes.len() > 3, "tears land at varied boundaries");
    }

    #[test]
    fn skipped_and_failed_syncs_persist_nothing_or_everything() {
        let sim = SimFs::new(4);
        let file = sim.open(path("/f"), OpenMode::CreateNew).unwrap();
        sim.sync_dir(path("/"), SyncSite::CreateDir).unwrap();
        file.write_at(0, b"a").unwrap();
        sim.skip_syncs(Some(SyncSite::SegmentData));
        file.sync(SyncSite::SegmentData).unwrap();
        sim.skip_syncs(None);
        sim.fail_next_sync(SyncSite::SegmentData, SyncFailure::DataLost);
        assert!(file.sync(SyncSite::SegmentData).is_err());
        sim.power_cut();
        assert_eq!(sim.read(path("/f")).unwrap(), b"");

        let file = sim.open(path("/f"), OpenMode::Existing).unwrap();
        file.write_at(0, b"b").unwrap();
        sim.fail_next_sync(SyncSite::SegmentData, SyncFailure::DataWritten);
        assert!(file.sync(SyncSite::SegmentData).is_err());
        sim.power_cut();
        assert_eq!(sim.read(path("/f")).unwrap(), b"b");
        assert_eq!(sim.syncs(SyncSite::SegmentData), 3);
    }
}
