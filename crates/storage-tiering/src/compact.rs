//! Size-tiered compaction: merges a collection's settled segments, drops overwritten records
//! (and tombstones when no older segment remains), uploads the result, commits a manifest without
//! the inputs and deletes their objects after a grace period (orphan collection deletes them if
//! the process dies first).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::collection::{Collection, Durability, Segment};
use crate::error::MaintenanceError;
use crate::remote::{CommitError, UploadError};
use crate::segment::Entry;
use crate::store::{Shared, blocking};

/// The size tier of a segment: segments within a factor of 4 of each other share one.
fn tier(size: u64) -> u32 {
    size.max(1).ilog(4)
}

/// The segments to merge: LSN-adjacent settled segments only (neighbours in `segments`, which is
/// ordered by LSN, none of them waiting for upload), so that the output's LSN range overlaps no
/// other segment and a point read, which takes the newest segment holding a key, stays right.
/// `all` takes the longest such run; otherwise the first run of at least `min_segments`
/// neighbours of one size tier.
fn choose_inputs(segments: &[Arc<Segment>], all: bool, min_segments: usize) -> Vec<Arc<Segment>> {
    let settled =
        |s: &Arc<Segment>| matches!(s.durability(), Durability::Local | Durability::Committed);
    let runs = segments.split(|s| !settled(s));
    if all {
        return runs
            .max_by_key(|run| run.len())
            .map(<[Arc<Segment>]>::to_vec)
            .unwrap_or_default();
    }
    runs.flat_map(|run| run.chunk_by(|a, b| tier(a.meta.size) == tier(b.meta.size)))
        .find(|group| group.len() >= min_segments.max(2))
        .map(<[Arc<Segment>]>::to_vec)
        .unwrap_or_default()
}

impl Shared {
    /// Compacts `collection`; `all` merges every settled segment (on demand), otherwise only a
    /// tier with at least `compaction.min_segments` segments. Returns the segments merged.
    pub(crate) async fn compact(
        &self,
        collection: &Arc<Collection>,
        all: bool,
    ) -> Result<usize, MaintenanceError> {
        let _guard = collection.compact_lock.lock().await;
        let (inputs, droppable) = {
            let data = collection.data.read();
            let min_segments = self.compaction.read().min_segments;
            let inputs = choose_inputs(&data.segments, all, min_segments);
            let max = inputs.iter().map(|s| s.meta.max_lsn).max().unwrap_or(0);
            // Tombstones may go only when no segment outside the merge holds older records.
            let droppable = data
                .segments
                .iter()
                .filter(|s| !inputs.iter().any(|i| Arc::ptr_eq(i, s)))
                .all(|s| s.meta.min_lsn > max);
            (inputs, droppable)
        };
        if inputs.len() < 2 {
            return Ok(0);
        }
        let result = self.merge(collection, &inputs, droppable).await;
        match &result {
            Ok(_) => self.instruments.compactions_success.inc(),
            Err(_) => self.instruments.compactions_failure.inc(),
        };
        result
    }

    async fn merge(
        &self,
        collection: &Arc<Collection>,
        inputs: &[Arc<Segment>],
        drop_tombstones: bool,
    ) -> Result<usize, MaintenanceError> {
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        for segment in inputs {
            for (id, entry) in self.segment_entries(collection, segment).await?.iter() {
                if merged.get(id).is_none_or(|e| e.lsn < entry.lsn) {
                    merged.insert(id.clone(), entry.clone());
                }
            }
        }
        let entries: Vec<(String, Entry)> = merged
            .into_iter()
            .filter(|(_, e)| !drop_tombstones || e.value.is_some())
            .collect();
        let min = inputs.iter().map(|s| s.meta.min_lsn).min().unwrap_or(0);
        let max = inputs.iter().map(|s| s.meta.max_lsn).max().unwrap_or(0);
        let output = self
            .write_segment(collection, entries, Some((min, max)))
            .await?;
        if collection.policy.uses_object_store() {
            let remote = self
                .remote
                .as_ref()
                .ok_or_else(|| MaintenanceError::ObjectStore("no object store".to_owned()))?;
            let path = output.local_path.clone();
            let bytes = blocking(move || {
                std::fs::read(&path).map_err(|source| MaintenanceError::Io { path, source })
            })
            .await?;
            let uploaded = match self.breaker.try_acquire_owned() {
                Err(_) => Err("the upload circuit breaker is open".to_owned()),
                Ok(permit) => match remote
                    .upload_segment(&collection.name, &output.meta, bytes.into(), false)
                    .await
                {
                    Ok(()) => {
                        permit.success();
                        Ok(())
                    }
                    Err(UploadError::Conflict) => {
                        permit.failure();
                        Err("segment conflict".to_owned())
                    }
                    Err(UploadError::Remote(error)) => {
                        permit.failure();
                        Err(error.to_string())
                    }
                },
            };
            let committed = match uploaded {
                Ok(()) => {
                    let input_ids: Vec<String> = inputs.iter().map(|s| s.meta.id.clone()).collect();
                    self.commit_manifest(|manifest| {
                        // Only this incarnation's entry: a dropped and re-created collection of
                        // the same name is left alone (`add_to_manifest` skips it too).
                        if let Some(entry) = manifest.collections.get_mut(&collection.name)
                            && entry.incarnation == collection.incarnation
                            && !collection
                                .dropped
                                .load(std::sync::atomic::Ordering::Acquire)
                        {
                            entry.segments.retain(|s| !input_ids.contains(&s.id));
                        }
                        Shared::add_to_manifest(
                            manifest,
                            collection,
                            std::slice::from_ref(&output.meta),
                        );
                    })
                    .await
                    .map_err(|error| match error {
                        CommitError::Fenced(fenced) => MaintenanceError::Fenced(fenced),
                        CommitError::Remote(error) => {
                            MaintenanceError::ObjectStore(error.to_string())
                        }
                    })
                }
                Err(message) => Err(MaintenanceError::ObjectStore(message)),
            };
            if let Err(error) = committed {
                let path = output.local_path.clone();
                blocking(move || std::fs::remove_file(path)).await.ok();
                return Err(error);
            }
            self.after_commit(collection, std::slice::from_ref(&output))
                .await;
        }
        {
            let mut data = collection.data.write();
            data.segments
                .retain(|s| !inputs.iter().any(|i| Arc::ptr_eq(i, s)));
            data.insert_segment(Arc::clone(&output));
        }
        // Inputs go oldest first, so that a crash part-way never leaves a newer tombstone deleted
        // while an older value it hid remains.
        let mut ordered: Vec<&Arc<Segment>> = inputs.iter().collect();
        ordered.sort_by_key(|s| s.meta.max_lsn);
        let mut files = Vec::new();
        for segment in ordered {
            if std::mem::take(&mut segment.state.lock().has_local_file) {
                files.push((segment.meta.id.clone(), segment.local_path.clone()));
            }
            self.cache.lock().forget(&segment.meta.id);
        }
        // A running backup's lease keeps its inputs until it has copied them.
        let files = self.leases.files_to_delete(files);
        blocking(move || {
            for file in files {
                let _ = std::fs::remove_file(file);
            }
        })
        .await;
        if let Some(remote) = &self.remote
            && collection.policy.uses_object_store()
        {
            let paths: Vec<_> = inputs
                .iter()
                .map(|s| {
                    (
                        s.meta.id.clone(),
                        remote.segment_path(&collection.name, &s.meta.id),
                    )
                })
                .collect();
            let leases = Arc::clone(&self.leases);
            let remote = Arc::clone(remote);
            let grace = self.compaction.read().grace_period;
            // Readers of an older manifest may still fetch the inputs for a while; orphan
            // collection leaves them alone meanwhile. If the process dies first, or a delete
            // fails, they are orphans and orphan collection deletes them later.
            let ids: Vec<String> = inputs.iter().map(|s| s.meta.id.clone()).collect();
            self.retiring.lock().extend(ids.iter().cloned());
            let retiring = Arc::clone(&self.retiring);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                for path in leases.objects_to_delete(paths) {
                    if let Err(error) = remote.delete(&path).await {
                        tracing::warn!(%error, "could not delete a compacted segment object");
                    }
                }
                let mut retiring = retiring.lock();
                for id in &ids {
                    retiring.remove(id);
                }
            });
        }
        self.update_gauges();
        tracing::info!(collection = %collection.name, merged = inputs.len(), "compacted segments");
        Ok(inputs.len())
    }
}
