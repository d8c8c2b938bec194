//! Freezing memtables into segments, and trimming the WAL behind them.

use std::fs::{self};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::collection::{Collection, Durability, Frozen, Residency, Segment, SegmentState};
use crate::config::TieringPolicy;
use crate::error::MaintenanceError;
use crate::segment::{self, Entry, FOOTER_LEN, SegmentMeta};

use super::*;

impl Shared {
    pub(super) fn maybe_schedule_flush(self: &Arc<Self>, collection: &Arc<Collection>) {
        if collection.data.read().memtable_bytes < self.config.memtable_bytes {
            return;
        }
        if collection.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(self);
        let collection = Arc::clone(collection);
        tokio::spawn(async move {
            if let Err(error) = shared.flush_collection(&collection).await {
                tracing::error!(%error, collection = %collection.name, "could not write a segment; records stay in the wal");
            }
        });
    }

    /// Freezes the collection's memtable and writes it as a segment file.
    pub(crate) async fn flush_collection(
        &self,
        collection: &Arc<Collection>,
    ) -> Result<(), MaintenanceError> {
        let _guard = collection.flush_lock.lock().await;
        collection.flush_scheduled.store(false, Ordering::Release);
        if collection.dropped.load(Ordering::Acquire) {
            return Ok(());
        }
        let (frozen, since) = {
            let mut data = collection.data.write();
            let Some(min_lsn) = data.memtable_min_lsn.take() else {
                return Ok(());
            };
            let since = data.memtable_since.take();
            let frozen = Arc::new(Frozen {
                entries: std::mem::take(&mut data.memtable),
                bytes: std::mem::take(&mut data.memtable_bytes),
                min_lsn,
            });
            data.frozen.push(Arc::clone(&frozen));
            (frozen, since)
        };
        // Copying a full memtable costs thousands of allocations: keep it off the runtime workers.
        let entries: Vec<(String, Entry)> = {
            let frozen = Arc::clone(&frozen);
            blocking(move || {
                frozen
                    .entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .await
        };
        let written = self.write_segment(collection, entries, None).await;
        let segment = match written {
            Ok(segment) => segment,
            Err(error) => {
                // Put the records back so that they are served and retried; the WAL holds them.
                let mut data = collection.data.write();
                data.frozen.retain(|f| !Arc::ptr_eq(f, &frozen));
                for (id, entry) in &frozen.entries {
                    if data.memtable.get(id).is_none_or(|e| e.lsn < entry.lsn) {
                        data.memtable_bytes += entry.size(id);
                        data.memtable.insert(id.clone(), entry.clone());
                    }
                }
                data.memtable_since = data.memtable_since.min(since).or(since);
                data.memtable_min_lsn = Some(
                    data.memtable_min_lsn
                        .map_or(frozen.min_lsn, |m| m.min(frozen.min_lsn)),
                );
                return Err(error);
            }
        };
        let durability = segment.durability();
        {
            let mut data = collection.data.write();
            data.frozen.retain(|f| !Arc::ptr_eq(f, &frozen));
            data.insert_segment(Arc::clone(&segment));
        }
        if durability == Durability::Pending {
            self.queue.lock().push(Arc::clone(collection), segment);
            self.upload_notify.notify_one();
        }
        self.update_gauges();
        if durability == Durability::Local {
            self.trim_wal().await;
        }
        Ok(())
    }

    /// Encodes and durably writes a segment file for the collection.
    pub(crate) async fn write_segment(
        &self,
        collection: &Collection,
        entries: Vec<(String, Entry)>,
        lsn_range: Option<(u64, u64)>,
    ) -> Result<Arc<Segment>, MaintenanceError> {
        // The writer's epoch in the id tells orphan collection whose object it is.
        let epoch = self.remote.as_ref().map_or(0, |remote| remote.epoch());
        let id = format!("{}-e{epoch}", ulid::Ulid::generate());
        let write_id = ulid::Ulid::generate();
        let dir = self.segments_dir.join(&collection.name);
        let path = dir.join(format!("{}-{id}.seg", collection.incarnation));
        let block_bytes = self.config.block_bytes;
        let codec = self.config.compression;
        let (path, bytes_len, crc, footer, entries, index) = {
            let path = path.clone();
            blocking(move || {
                let (bytes, index) = segment::encode(
                    &entries,
                    block_bytes,
                    u128::from(write_id),
                    lsn_range,
                    codec,
                );
                fs::create_dir_all(&dir)
                    .and_then(|()| write_atomic(&path, &bytes))
                    .map_err(|source| MaintenanceError::Io {
                        path: path.clone(),
                        source,
                    })?;
                let footer_at = bytes.len() - FOOTER_LEN;
                let footer = segment::decode_footer(bytes.get(footer_at..).unwrap_or_default())?;
                Ok::<_, MaintenanceError>((
                    path,
                    bytes.len() as u64,
                    crc32c::crc32c(&bytes),
                    footer,
                    entries,
                    index,
                ))
            })
            .await?
        };
        let meta = SegmentMeta {
            id,
            size: bytes_len,
            crc32c: crc,
            min_lsn: footer.min_lsn,
            max_lsn: footer.max_lsn,
            records: footer.records,
            write_id: write_id.to_string(),
        };
        let durability = if collection.policy.uses_object_store() {
            Durability::Pending
        } else {
            Durability::Local
        };
        Ok(Arc::new(Segment {
            meta,
            local_path: path,
            state: Mutex::new(SegmentState {
                // An `s3_only` segment is served from its file until the object store has it,
                // so that a backlog of them is bounded by the disk, not by memory.
                residency: if collection.policy == TieringPolicy::S3Only {
                    Residency::LocalFile(Arc::new(index))
                } else {
                    Residency::Resident(Arc::new(entries))
                },
                durability,
                has_local_file: true,
            }),
        }))
    }

    /// Deletes WAL files whose records are all covered by durable segments.
    pub(crate) async fn trim_wal(&self) {
        if self.lock.lock().is_none() {
            // Closed: the directory may belong to another store now.
            return;
        }
        let covered = self.wal_covered();
        let wal = self.wal.clone();
        if let Err(error) = blocking(move || wal.trim(covered)).await {
            tracing::warn!(%error, "could not delete covered wal files");
        }
    }

    /// The highest LSN below which every WAL record is covered by a durable segment.
    pub(crate) fn wal_covered(&self) -> u64 {
        let last = self.wal.last_lsn();
        // Unpublished writes first: a write leaves that queue only once it is in a memtable.
        let unpublished = self.unpublished.lock().front().map(|w| w.lsn);
        let lowest = self
            .collections
            .read()
            .values()
            .filter_map(|c| c.data.read().lowest_uncovered())
            .chain(unpublished)
            .min();
        let covered = lowest.map_or(last, |lowest| last.min(lowest.saturating_sub(1)));
        // Read after the collections: a backup's lease taken meanwhile is seen here, and a
        // purge waits for the backup that holds the files it would delete.
        self.leases
            .wal_floor()
            .map_or(covered, |floor| covered.min(floor.saturating_sub(1)))
    }
}
