//! Background tasks: the flush timer and compaction.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::collection::Collection;

use super::*;

/// Freezes memtables older than `flush_interval`, and the oldest ones while the WAL is past
/// `max_wal_bytes`; publishes writes whose writers went away before doing it themselves.
pub(super) async fn flush_task(shared: Weak<Shared>) {
    let Some(tick) = shared.upgrade().map(|s| {
        (s.config.flush_interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }) else {
        return;
    };
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.is_closed() {
            return;
        }
        shared.publish();
        let now = tokio::time::Instant::now();
        let due: Vec<Arc<Collection>> = shared
            .collections
            .read()
            .values()
            .filter(|c| {
                c.data.read().memtable_since.is_some_and(|since| {
                    now.saturating_duration_since(since) >= shared.config.flush_interval
                })
            })
            .cloned()
            .collect();
        for collection in due {
            if let Err(error) = shared.flush_collection(&collection).await {
                tracing::error!(%error, collection = %collection.name, "could not write a segment of an old memtable; records stay in the wal");
            }
        }
        // Past the WAL bound: freeze the memtables holding the oldest records, oldest first,
        // until the covered files are gone or no memtable is left to freeze.
        while shared.wal.disk_bytes() > shared.config.max_wal_bytes {
            let oldest = shared
                .collections
                .read()
                .values()
                .filter_map(|c| {
                    c.data
                        .read()
                        .memtable_min_lsn
                        .map(|lsn| (lsn, Arc::clone(c)))
                })
                .min_by_key(|(lsn, _)| *lsn)
                .map(|(_, c)| c);
            let Some(collection) = oldest else { break };
            tracing::info!(collection = %collection.name, wal_bytes = shared.wal.disk_bytes(), limit = shared.config.max_wal_bytes, "freezing a memtable to bound the wal");
            if let Err(error) = shared.flush_collection(&collection).await {
                tracing::error!(%error, collection = %collection.name, "could not write a segment to bound the wal");
                break;
            }
            shared.trim_wal().await;
        }
    }
}

pub(super) async fn compaction_task(shared: Weak<Shared>) {
    loop {
        // The interval in force now: a live change applies from the next pass.
        let Some(interval) = shared.upgrade().map(|s| s.compaction.read().interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let enabled = shared.compaction.read().enabled;
        if enabled {
            let collections: Vec<_> = shared.collections.read().values().cloned().collect();
            for collection in collections {
                if collection.policy.uses_object_store() && !shared.is_claimed() {
                    // Its merge would need the object store it cannot commit to yet.
                    continue;
                }
                if let Err(error) = shared.compact(&collection, false).await {
                    tracing::warn!(%error, collection = %collection.name, "background compaction failed");
                }
            }
        }
        if shared.collects_orphans() {
            // Counted and logged inside; a failed pass is retried on the next interval.
            let _ = shared.collect_orphans(None).await;
        }
    }
}
