//! The write path: WAL append, group commit and publishing to the memtables.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::collection::{Collection, Data};
use crate::error::WriteError;
use crate::names::{valid_collection_name, valid_record_id};
use crate::segment::Entry;
use crate::wal::{self};

use super::*;

impl Store {
    /// Stores `value` under `id`; returns once it is fsync'd to the WAL.
    ///
    /// # Errors
    ///
    /// [`WriteError`] for invalid input, backpressure or a WAL failure; nothing was acknowledged.
    pub async fn put(&self, collection: &str, id: &str, value: Bytes) -> Result<(), WriteError> {
        self.write(collection, vec![(id.to_owned(), Some(value))])
            .await
    }

    /// Stores every record of `records` atomically (all or none after a crash); returns once the
    /// batch is fsync'd. A later id in the batch wins over an earlier equal one.
    ///
    /// # Errors
    ///
    /// [`WriteError`] for invalid input, backpressure or a WAL failure; nothing was acknowledged.
    pub async fn put_batch(
        &self,
        collection: &str,
        records: Vec<(String, Bytes)>,
    ) -> Result<(), WriteError> {
        if records.is_empty() {
            return Err(WriteError::EmptyBatch);
        }
        let limits = &self.shared.config.limits;
        if records.len() > limits.max_batch_records {
            return Err(WriteError::TooManyRecords {
                records: records.len(),
                limit: limits.max_batch_records,
            });
        }
        let bytes: usize = records.iter().map(|(_, v)| v.len()).sum();
        if bytes > limits.max_batch_bytes {
            return Err(WriteError::BatchTooLarge {
                bytes,
                limit: limits.max_batch_bytes,
            });
        }
        self.write(
            collection,
            records
                .into_iter()
                .map(|(id, value)| (id, Some(value)))
                .collect(),
        )
        .await
    }

    /// Deletes `id` (a tombstone until compaction); returns once it is fsync'd.
    ///
    /// # Errors
    ///
    /// [`WriteError`] for invalid input, backpressure or a WAL failure.
    pub async fn delete(&self, collection: &str, id: &str) -> Result<(), WriteError> {
        self.write(collection, vec![(id.to_owned(), None)]).await
    }

    pub(crate) async fn write(
        &self,
        name: &str,
        entries: Vec<(String, Option<Bytes>)>,
    ) -> Result<(), WriteError> {
        let started = std::time::Instant::now();
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed);
        }
        if !valid_collection_name(name) {
            return Err(WriteError::InvalidCollection(name.to_owned()));
        }
        let limit = shared.config.limits.max_value_bytes;
        for (id, value) in &entries {
            if !valid_record_id(id) {
                return Err(WriteError::InvalidId);
            }
            if let Some(value) = value
                && value.len() > limit
            {
                return Err(WriteError::ValueTooLarge {
                    size: value.len(),
                    limit,
                });
            }
        }
        let collection = shared
            .collection(name)
            .ok_or_else(|| WriteError::UnknownCollection(name.to_owned()))?;
        if let Some(fenced) = shared.fenced.lock().clone() {
            return Err(WriteError::Fenced(fenced));
        }
        if collection.policy.uses_object_store() {
            let backlog = u64::try_from(shared.instruments.backlog_bytes.get()).unwrap_or(0);
            let limit = shared.config.upload.max_backlog_bytes;
            if backlog > limit {
                return Err(WriteError::Backpressure {
                    backlog_bytes: backlog,
                    limit,
                    retry_after: shared.config.upload.backpressure_retry_after,
                });
            }
        }
        let count = entries.len() as u64;
        let body = wal::encode_body(name, collection.incarnation, &entries);
        #[cfg(test)]
        pause::at(name, pause::Point::BeforeAppend).await;
        // A collection dropped since the lookup above takes no more records: `dropped` is checked
        // under the WAL's append gate, which `purge_dropped`'s roll takes after the drop set it
        // (see `Wal::roll`), so no record of it lands in a WAL file after the roll that the purge
        // trims up to. Without the check such a record would stay on disk after an erasure
        // reported it complete. The load is `Acquire` against the drop's `SeqCst` store; the
        // gate's release and acquire are what order the two across threads.
        let admit = || {
            if collection.dropped.load(Ordering::Acquire) {
                Err(WriteError::UnknownCollection(name.to_owned()))
            } else {
                Ok(())
            }
        };
        // Queued under the log's lock, so that writes are published in LSN order.
        let (lsn, ()) = shared.wal.append(&body, admit, |lsn| {
            shared.unpublished.lock().push_back(Unpublished {
                lsn,
                collection: Arc::clone(&collection),
                entries,
            });
        })?;
        #[cfg(test)]
        pause::at(name, pause::Point::BeforeCommit).await;
        if let Err(error) = shared.wal.commit(lsn).await {
            // Every write not yet durable failed: none of them may ever become visible.
            shared.publish();
            shared.unpublished.lock().clear();
            return Err(error.into());
        }
        if shared.published_lsn.load(Ordering::Acquire) < lsn {
            shared.publish();
        }
        shared.instruments.inserts.inc_by(count);
        shared
            .instruments
            .insert_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Applies a logged operation to a memtable.
pub(super) fn apply(data: &mut Data, lsn: u64, entries: Vec<(String, Option<Bytes>)>) {
    if data.memtable_min_lsn.is_none() {
        data.memtable_min_lsn = Some(lsn);
        data.memtable_since = Some(tokio::time::Instant::now());
    }
    for (id, value) in entries {
        let entry = Entry { lsn, value };
        let size = entry.size(&id);
        if let Some(old) = data.memtable.insert(id.clone(), entry) {
            data.memtable_bytes = data.memtable_bytes.saturating_sub(old.size(&id));
        }
        data.memtable_bytes += size;
    }
}

impl Shared {
    /// Applies every queued write the WAL has made durable to its memtable, in LSN order, and
    /// schedules flushes of memtables that reached their bound. Writers call it after their
    /// commit; a write whose writer went away before that is published by the next one (or the
    /// next flush).
    pub(crate) fn publish(self: &Arc<Self>) {
        let synced = self.wal.synced_lsn();
        let mut over_bound: Vec<Arc<Collection>> = Vec::new();
        {
            let mut unpublished = self.unpublished.lock();
            if unpublished.front().is_none_or(|w| w.lsn > synced) {
                self.published_lsn.fetch_max(synced, Ordering::AcqRel);
                return;
            }
            let (mut memtable_added, mut backlog_added) = (0u64, 0u64);
            while let Some(write) = unpublished.pop_front_if(|w| w.lsn <= synced) {
                if write.collection.dropped.load(Ordering::Acquire) {
                    continue;
                }
                let mut data = write.collection.data.write();
                let before = data.memtable_bytes;
                apply(&mut data, write.lsn, write.entries);
                let added = data.memtable_bytes.saturating_sub(before);
                memtable_added += added;
                if write.collection.policy.uses_object_store() {
                    backlog_added += added;
                }
                if data.memtable_bytes >= self.config.memtable_bytes
                    && !over_bound.iter().any(|c| Arc::ptr_eq(c, &write.collection))
                {
                    over_bound.push(Arc::clone(&write.collection));
                }
            }
            self.published_lsn.fetch_max(synced, Ordering::AcqRel);
            // Inside the lock: a gauge update never sees a write counted twice or not at all.
            self.instruments
                .memtable_bytes
                .inc_by(i64::try_from(memtable_added).unwrap_or(i64::MAX));
            self.instruments
                .backlog_bytes
                .inc_by(i64::try_from(backlog_added).unwrap_or(i64::MAX));
        }
        for collection in &over_bound {
            self.maybe_schedule_flush(collection);
        }
    }
}

/// Pause points of the write path for the tests of this crate (compiled only under `cfg(test)`):
/// a test arms a point for a collection name of its own, and the next write to that collection
/// stops there until the test lets it go on.
#[cfg(test)]
pub(crate) mod pause {
    use std::collections::HashMap;
    use std::sync::LazyLock;

    use parking_lot::Mutex;
    use tokio::sync::oneshot;

    /// Where a write stops.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(crate) enum Point {
        /// After the collection was looked up, before the record is appended to the WAL.
        BeforeAppend,
        /// After the record was appended, before its commit (fsync).
        BeforeCommit,
    }

    type Armed = (oneshot::Sender<()>, oneshot::Receiver<()>);

    static ARMED: LazyLock<Mutex<HashMap<(String, Point), Armed>>> = LazyLock::new(Mutex::default);

    /// Arms `point` for the next write to `collection`: the first receiver fires once the write
    /// got there; the write goes on once the sender is used or dropped.
    pub(crate) fn arm(
        collection: &str,
        point: Point,
    ) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached, reached_rx) = oneshot::channel();
        let (resume, resume_rx) = oneshot::channel();
        ARMED
            .lock()
            .insert((collection.to_owned(), point), (reached, resume_rx));
        (reached_rx, resume)
    }

    /// Stops here if a test armed `point` for `collection`.
    pub(crate) async fn at(collection: &str, point: Point) {
        let armed = ARMED.lock().remove(&(collection.to_owned(), point));
        if let Some((reached, resume)) = armed {
            let _ = reached.send(());
            let _ = resume.await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! A write racing with a drop and a purge: no record of a dropped collection may be left in
    //! a WAL file once `purge_dropped` reports the purge complete (issue 18, point 6).

    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use bytes::Bytes;

    use super::pause::{self, Point};
    use crate::config::{StoreConfig, TieringPolicy};
    use crate::error::WriteError;
    use crate::store::Store;

    const MARKER: &str = "zqMARKERwalrace4k";

    /// Every WAL file under `dir` that holds the marker.
    fn wal_files_with_marker(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir.join("data/wal"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                std::fs::read(path).is_ok_and(|bytes| {
                    bytes
                        .windows(MARKER.len())
                        .any(|window| window == MARKER.as_bytes())
                })
            })
            .collect()
    }

    /// Drops and purges `collection` while a write to it is stopped at `point`, then lets the
    /// write go on; returns its result, once the purge reported itself complete.
    async fn race(dir: &Path, collection: &str, point: Point) -> Result<(), WriteError> {
        let mut config = StoreConfig {
            data_dir: dir.join("data"),
            ..StoreConfig::default()
        };
        config.compaction.enabled = false;
        let store = Store::open(config).await.expect("opens");
        store
            .create_collection(collection, TieringPolicy::Memory)
            .await
            .expect("created");
        store
            .create_collection("race-kept", TieringPolicy::Memory)
            .await
            .expect("created");
        let (reached, resume) = pause::arm(collection, point);
        let writer = {
            let (store, collection) = (store.clone(), collection.to_owned());
            tokio::spawn(async move {
                store
                    .put(&collection, "r1", Bytes::from(format!("value {MARKER}")))
                    .await
            })
        };
        reached.await.expect("the write reached the pause point");
        assert!(store.drop_collection(collection).await.expect("dropped"));
        let report = store
            .purge_dropped(collection, Duration::from_secs(10))
            .await
            .expect("purges");
        assert!(report.is_complete(), "{report:?}");
        resume.send(()).expect("the write waits");
        let written = writer.await.expect("the writer ran");
        // Writes to other collections go on, and their WAL file too.
        store
            .put("race-kept", "k", Bytes::from_static(b"kept"))
            .await
            .expect("a live collection takes writes");
        store.close(Duration::from_secs(5)).await.expect("closes");
        written
    }

    /// A write that looked its collection up before the drop and appends after the purge's
    /// roll: refused as to an unknown collection, and nothing of it is in any WAL file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_appending_after_its_collection_was_dropped_and_purged_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let written = race(dir.path(), "race-append", Point::BeforeAppend).await;
        let left = wal_files_with_marker(dir.path());
        assert!(
            left.is_empty(),
            "the purge reported itself complete, yet the record is in {left:?}"
        );
        assert!(
            matches!(&written, Err(WriteError::UnknownCollection(name)) if name == "race-append"),
            "{written:?}"
        );
    }

    /// A write appended before the drop but not yet synced when the purge rolls the WAL: the
    /// roll syncs it into the file it closes, which the purge deletes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_appended_before_the_drop_but_not_synced_leaves_no_byte_after_the_purge() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let written = race(dir.path(), "race-commit", Point::BeforeCommit).await;
        let left = wal_files_with_marker(dir.path());
        assert!(
            left.is_empty(),
            "the purge reported itself complete, yet the record is in {left:?}"
        );
        // Appended before the drop: it was durable, and went with its collection.
        assert!(written.is_ok(), "{written:?}");
    }
}
