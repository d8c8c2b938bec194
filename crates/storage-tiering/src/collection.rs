//! A collection's in-memory state: the memtable, frozen memtables on their way to a segment, and
//! its segments (resident in memory, or in the object store behind the block cache).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};

use crate::config::TieringPolicy;
use crate::segment::{BlockRef, Entry, SegmentMeta};

/// A collection and its data.
#[derive(Debug)]
pub(crate) struct Collection {
    pub(crate) name: String,
    pub(crate) policy: TieringPolicy,
    pub(crate) incarnation: u64,
    pub(crate) data: RwLock<Data>,
    /// Serialises freezes, so that a collection's segments complete in LSN order.
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// Serialises compactions.
    pub(crate) compact_lock: tokio::sync::Mutex<()>,
    pub(crate) flush_scheduled: AtomicBool,
    pub(crate) dropped: AtomicBool,
}

/// The mutable part of a collection.
#[derive(Debug, Default)]
pub(crate) struct Data {
    pub(crate) memtable: BTreeMap<String, Entry>,
    pub(crate) memtable_bytes: u64,
    pub(crate) memtable_min_lsn: Option<u64>,
    /// When the memtable got its first record (`storage.flush_interval` counts from here).
    pub(crate) memtable_since: Option<tokio::time::Instant>,
    /// Oldest first.
    pub(crate) frozen: Vec<Arc<Frozen>>,
    /// Ascending by `max_lsn`.
    pub(crate) segments: Vec<Arc<Segment>>,
}

/// A memtable being written out as a segment; still served.
#[derive(Debug)]
pub(crate) struct Frozen {
    pub(crate) entries: BTreeMap<String, Entry>,
    pub(crate) bytes: u64,
    pub(crate) min_lsn: u64,
}

/// Where a segment's records are.
#[derive(Debug, Clone)]
pub(crate) enum Residency {
    /// Decoded in memory, sorted by id.
    Resident(Arc<Vec<(String, Entry)>>),
    /// Only in the object store; the block index once loaded.
    Remote(Option<Arc<Vec<BlockRef>>>),
    /// In the local segment file, by its block index: an `s3_only` segment waiting for upload,
    /// read block by block through the cache rather than held in memory whole.
    LocalFile(Arc<Vec<BlockRef>>),
}

/// Where a segment stands on its way to the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Written locally, waiting for upload (or a `memory` collection's final state: `Local`).
    Pending,
    /// The final state of a `memory` collection's segment.
    Local,
    /// Uploaded and listed in a committed manifest.
    Committed,
    /// Upload failed for good: pinned locally and referenced by a DLQ entry.
    Pinned,
}

/// One immutable segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) meta: SegmentMeta,
    /// The local file, while there is one.
    pub(crate) local_path: PathBuf,
    pub(crate) state: Mutex<SegmentState>,
}

/// A segment's mutable state.
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub(crate) residency: Residency,
    pub(crate) durability: Durability,
    pub(crate) has_local_file: bool,
}

impl Segment {
    pub(crate) fn durability(&self) -> Durability {
        self.state.lock().durability
    }

    /// Whether the WAL no longer needs this segment's records.
    pub(crate) fn covers_wal(&self) -> bool {
        !matches!(self.durability(), Durability::Pending)
    }
}

impl Data {
    /// The lowest LSN of this collection whose record the WAL must keep.
    pub(crate) fn lowest_uncovered(&self) -> Option<u64> {
        let frozen = self.frozen.iter().map(|f| f.min_lsn);
        let segments = self
            .segments
            .iter()
            .filter(|s| !s.covers_wal())
            .map(|s| s.meta.min_lsn);
        self.memtable_min_lsn
            .into_iter()
            .chain(frozen)
            .chain(segments)
            .min()
    }

    /// Bytes not yet uploaded (for object-store collections).
    pub(crate) fn backlog(&self) -> u64 {
        let frozen: u64 = self.frozen.iter().map(|f| f.bytes).sum();
        let pending: u64 = self
            .segments
            .iter()
            .filter(|s| s.durability() == Durability::Pending)
            .map(|s| s.meta.size)
            .sum();
        self.memtable_bytes + frozen + pending
    }

    /// The highest LSN held by a segment (recovery replays only records above it).
    pub(crate) fn segment_max_lsn(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.meta.max_lsn)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn insert_segment(&mut self, segment: Arc<Segment>) {
        let at = self
            .segments
            .partition_point(|s| s.meta.max_lsn <= segment.meta.max_lsn);
        self.segments.insert(at, segment);
    }
}

/// A record found in memory, or the segments still to look at.
pub(crate) fn lookup_memory(data: &Data, id: &str) -> Option<Entry> {
    if let Some(entry) = data.memtable.get(id) {
        return Some(entry.clone());
    }
    data.frozen
        .iter()
        .rev()
        .find_map(|frozen| frozen.entries.get(id).cloned())
}

/// Looks `id` up in sorted resident entries.
pub(crate) fn lookup_resident(entries: &[(String, Entry)], id: &str) -> Option<Entry> {
    entries
        .binary_search_by(|(key, _)| key.as_str().cmp(id))
        .ok()
        .and_then(|at| entries.get(at))
        .map(|(_, entry)| entry.clone())
}
