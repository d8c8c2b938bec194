//! Retention leases: while a backup copies a store's files, the segments it captured and the WAL
//! records from its tail's first LSN on are kept. Compaction defers the deletion of a leased
//! input (its local file and its object) until the last lease on it is released, orphan
//! collection keeps leased objects, and WAL trimming keeps the leased records.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::remote::Remote;

/// The leases of one store.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Lease id to what it holds.
    held: BTreeMap<u64, Held>,
    /// Local files whose deletion waits for the release of a lease on their segment.
    deferred_files: Vec<(String, PathBuf)>,
    /// Objects whose deletion waits likewise.
    deferred_objects: Vec<(String, object_store::path::Path)>,
}

#[derive(Debug, Default)]
struct Held {
    segments: HashSet<String>,
    /// The first WAL LSN the lease keeps.
    wal_from: u64,
}

/// Deletions a release allowed.
#[derive(Debug, Default)]
pub(crate) struct Released {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) objects: Vec<object_store::path::Path>,
}

impl Leases {
    /// Takes a lease keeping the WAL from `wal_from` on; returns its id.
    pub(crate) fn acquire(&self, wal_from: u64) -> u64 {
        let mut state = self.state.lock();
        state.next += 1;
        let id = state.next;
        state.held.insert(
            id,
            Held {
                segments: HashSet::new(),
                wal_from,
            },
        );
        id
    }

    /// Adds segments to lease `id`.
    pub(crate) fn hold_segments(&self, id: u64, segments: impl IntoIterator<Item = String>) {
        if let Some(held) = self.state.lock().held.get_mut(&id) {
            held.segments.extend(segments);
        }
    }

    /// Moves the WAL floor of lease `id` to `wal_from`.
    pub(crate) fn set_wal_from(&self, id: u64, wal_from: u64) {
        if let Some(held) = self.state.lock().held.get_mut(&id) {
            held.wal_from = wal_from;
        }
    }

    /// Every leased segment id (orphan collection keeps their objects).
    pub(crate) fn leased_segments(&self) -> HashSet<String> {
        let state = self.state.lock();
        state
            .held
            .values()
            .flat_map(|held| held.segments.iter().cloned())
            .collect()
    }

    /// The lowest WAL LSN a lease keeps, if any.
    pub(crate) fn wal_floor(&self) -> Option<u64> {
        self.state.lock().held.values().map(|h| h.wal_from).min()
    }

    fn is_leased(state: &State, segment: &str) -> bool {
        state.held.values().any(|h| h.segments.contains(segment))
    }

    /// Of the local files of segments (`(segment id, path)`) a caller wants to delete, returns
    /// those it may delete now; the others are deleted at the release of their last lease.
    pub(crate) fn files_to_delete(&self, files: Vec<(String, PathBuf)>) -> Vec<PathBuf> {
        let mut state = self.state.lock();
        let mut now = Vec::new();
        for (segment, path) in files {
            if Self::is_leased(&state, &segment) {
                state.deferred_files.push((segment, path));
            } else {
                now.push(path);
            }
        }
        now
    }

    /// Like [`files_to_delete`](Self::files_to_delete), for objects.
    pub(crate) fn objects_to_delete(
        &self,
        objects: Vec<(String, object_store::path::Path)>,
    ) -> Vec<object_store::path::Path> {
        let mut state = self.state.lock();
        let mut now = Vec::new();
        for (segment, path) in objects {
            if Self::is_leased(&state, &segment) {
                state.deferred_objects.push((segment, path));
            } else {
                now.push(path);
            }
        }
        now
    }

    /// Releases lease `id`; returns the deferred deletions no lease holds back any more.
    pub(crate) fn release(&self, id: u64) -> Released {
        let mut state = self.state.lock();
        state.held.remove(&id);
        let state = &mut *state;
        let mut released = Released::default();
        let held = &state.held;
        let leased = |segment: &String| held.values().any(|h| h.segments.contains(segment));
        state.deferred_files.retain(|(segment, path)| {
            let keep = leased(segment);
            if !keep {
                released.files.push(path.clone());
            }
            keep
        });
        state.deferred_objects.retain(|(segment, path)| {
            let keep = leased(segment);
            if !keep {
                released.objects.push(path.clone());
            }
            keep
        });
        released
    }
}

/// A lease held by a running backup: released (and the deletions it held back done, in the
/// background) when dropped.
#[derive(Debug)]
pub(crate) struct LeaseGuard {
    pub(crate) leases: Arc<Leases>,
    pub(crate) id: u64,
    pub(crate) remote: Option<Arc<Remote>>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let released = self.leases.release(self.id);
        if released.files.is_empty() && released.objects.is_empty() {
            return;
        }
        let remote = self.remote.clone();
        let work = async move {
            let files = released.files;
            let _ = tokio::task::spawn_blocking(move || {
                for file in files {
                    let _ = std::fs::remove_file(file);
                }
            })
            .await;
            if let Some(remote) = remote {
                for object in released.objects {
                    if let Err(error) = remote.delete(&object).await {
                        tracing::warn!(%error, "could not delete a compacted segment object after a backup released it; orphan collection deletes it later");
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(work);
            }
            // Without a runtime the objects stay: orphan collection deletes them later.
            Err(_) => tracing::debug!("no runtime to delete what a released backup lease held"),
        }
    }
}
