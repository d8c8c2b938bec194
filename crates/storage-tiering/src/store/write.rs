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
        // Queued under the log's lock, so that writes are published in LSN order.
        let (lsn, ()) = shared.wal.append(&body, |lsn| {
            shared.unpublished.lock().push_back(Unpublished {
                lsn,
                collection: Arc::clone(&collection),
                entries,
            });
        })?;
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
