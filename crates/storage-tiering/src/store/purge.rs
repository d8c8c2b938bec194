//! Physical purge of dropped collections: what an erasure needs to prove that nothing of them is
//! left in any tier, now rather than after the next compaction, WAL rotation and orphan grace
//! period.

use std::fs;
use std::time::Duration;

use crate::error::MaintenanceError;

use super::*;

/// What [`Store::purge_dropped`] did, and what still holds data of the dropped collections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Objects of dropped collections deleted from the object store.
    pub deleted_objects: u64,
    /// WAL files deleted.
    pub trimmed_wal_files: usize,
    /// Local directories of dropped collections removed.
    pub removed_dirs: usize,
    /// What still holds data of the dropped collections, in words (`wal`, `object_store`,
    /// `local_segments`); empty when the purge is complete. A later call finishes it.
    pub remaining: Vec<String>,
}

impl PurgeReport {
    /// Whether nothing of the dropped collections is left in any tier.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.remaining.is_empty()
    }
}

impl Store {
    /// Purges every dropped collection whose name starts with `prefix` from every tier now:
    /// rolls the WAL (so the file holding their records is closed, with every record appended
    /// before the roll in it, and writes to them refused from then on), freezes every memtable and
    /// waits up to `timeout` for the uploads (so that the closed WAL files are covered by
    /// durable segments and the manifest no longer lists a dropped collection), deletes the
    /// covered WAL files, compacts the DLQ journal, removes the collections' local directories
    /// and deletes their objects without waiting for `compaction.grace_period` (only objects of
    /// collections with no live collection of that name). Live collections are untouched, their
    /// records only move from the WAL into segments.
    ///
    /// A purge that could not finish (an upload still pending at the deadline, an object store
    /// that fails) says what is left in [`PurgeReport::remaining`]; call it again later.
    ///
    /// # Errors
    ///
    /// [`MaintenanceError::Fenced`] when another writer holds the prefix, or the error of the
    /// flush (a segment that cannot be written).
    pub async fn purge_dropped(
        &self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<PurgeReport, MaintenanceError> {
        let mut report = PurgeReport::default();
        let shared = &self.shared;
        // 1. Close the WAL file the dropped records are in; later writes go to a new one. The
        // roll syncs every record appended before it into the file it closes, and no write to
        // a collection dropped before the roll is appended after it (`Wal::roll`, decision 0116).
        let wal = shared.wal.clone();
        let mut files_before = shared.wal.file_count();
        match blocking(move || wal.roll()).await {
            Ok(rolled) => files_before += usize::from(rolled),
            Err(error) => report
                .remaining
                .push(format!("wal: could not roll: {error}")),
        }
        let roll_point = shared.wal.synced_lsn();
        // 2. Everything written before the roll into durable segments (uploaded, for the
        // object-store policies), and the manifest without the dropped collections. Writes
        // after the roll do not hold this back: only LSNs up to the roll point must be covered.
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let progress = shared.progress.notified();
            if let Some(fenced) = shared.fenced.lock().clone() {
                return Err(fenced.into());
            }
            let covered = shared.wal_covered() >= roll_point;
            let behind = shared.remote.is_some() && shared.manifest_behind(false).await;
            if covered && !behind {
                break;
            }
            if behind && let Err(error) = shared.commit_manifest(|_| {}).await {
                tracing::debug!(%error, "purge: the manifest still lists a dropped collection; retrying");
            }
            let poll = tokio::time::Instant::now() + shared.config.upload.breaker_poll_interval;
            if tokio::time::timeout_at(poll.min(deadline), progress)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                report.remaining.push(format!(
                    "wal: records written before the purge still wait for upload after {} ms",
                    timeout.as_millis()
                ));
                break;
            }
        }
        // 3. The covered WAL files.
        shared.trim_wal().await;
        // Counted from before the roll: flushes and upload commits trim too.
        report.trimmed_wal_files = files_before.saturating_sub(shared.wal.file_count());
        if shared.wal_covered() < roll_point && report.remaining.is_empty() {
            report.remaining.push(
                "wal: a file holding records written before the purge is not covered yet"
                    .to_owned(),
            );
        }
        // 4. The DLQ journal: deleted entries leave its files.
        if let Err(error) = shared.dlq.compact().await {
            report
                .remaining
                .push(format!("dlq: could not compact the journal: {error}"));
        }
        // 5. Local directories of dropped collections.
        let live: HashSet<String> = shared.collections.read().keys().cloned().collect();
        let dir = shared.segments_dir.clone();
        let names: Vec<String> = blocking(move || {
            fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default()
        })
        .await;
        for name in names
            .into_iter()
            .filter(|name| name.starts_with(prefix) && !live.contains(name))
        {
            let path = shared.segments_dir.join(&name);
            match blocking(move || fs::remove_dir_all(&path)).await {
                Ok(()) => report.removed_dirs += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => report
                    .remaining
                    .push(format!("local_segments: {name}: {error}")),
            }
        }
        // 6. Objects, deleted now, then listed again: an upload in flight may land after.
        if let Some(remote) = &shared.remote {
            if let Some(fenced) = shared.fenced.lock().clone() {
                return Err(fenced.into());
            }
            let root = remote.segments_root();
            for pass in 0..2 {
                let objects = match shared.list_objects(remote, &root).await {
                    Ok(objects) => objects,
                    Err(error) => {
                        report
                            .remaining
                            .push(format!("object_store: listing failed: {}", error.message));
                        break;
                    }
                };
                let doomed: Vec<_> = objects
                    .into_iter()
                    .filter(|meta| {
                        meta.location
                            .prefix_match(&root)
                            .and_then(|mut parts| parts.next())
                            .is_some_and(|name| {
                                let name = name.as_ref();
                                name.starts_with(prefix) && !live.contains(name)
                            })
                    })
                    .collect();
                if pass == 1 {
                    if !doomed.is_empty() {
                        report.remaining.push(format!(
                            "object_store: {} objects of dropped collections are left",
                            doomed.len()
                        ));
                    }
                    break;
                }
                for meta in doomed {
                    let limit = shared.config.upload.attempt_timeout;
                    match tokio::time::timeout(limit, remote.delete(&meta.location)).await {
                        Ok(Ok(())) => report.deleted_objects += 1,
                        Ok(Err(error)) => {
                            tracing::warn!(object = %meta.location, error = %error.message, "purge: could not delete an object; the purge is retried")
                        }
                        Err(_) => {
                            tracing::warn!(object = %meta.location, "purge: deleting an object timed out; the purge is retried")
                        }
                    }
                }
            }
        }
        tracing::info!(
            prefix,
            deleted_objects = report.deleted_objects,
            trimmed_wal_files = report.trimmed_wal_files,
            removed_dirs = report.removed_dirs,
            complete = report.is_complete(),
            "purged dropped collections"
        );
        Ok(report)
    }
}
