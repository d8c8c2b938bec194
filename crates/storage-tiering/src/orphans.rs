//! Collection of objects orphaned by a crash: segment objects the newest manifest does not
//! reference (an upload that landed but was never committed, compaction inputs whose delayed
//! deletion died with the process, the leftovers of an interrupted collection drop) and manifests
//! below the newest [`MANIFESTS_KEPT`].
//!
//! A pass lists first, then reads the newest manifest, then, per collection and under its
//! compaction lock (so that no compaction is between its upload and its commit), takes what this
//! process still references. An object is deleted only when
//!
//! 1. the newest manifest does not reference it, and that manifest is this writer's, of its epoch
//!    (another writer's means this store is being fenced: the pass deletes nothing, and a newer
//!    epoch fences the store at once), and the object's name does not carry a newer epoch than
//!    this writer's (segment ids end in `-e<epoch>`; ids without one are of epoch 0);
//! 2. it is not one of the newest [`MANIFESTS_KEPT`] manifests (nor a newer one);
//! 3. no segment of this process references it: pending upload, uploaded but not yet committed,
//!    pinned for the DLQ, or a compaction input still in its grace period;
//! 4. its `last_modified` is at least `compaction.grace_period` old by the store's clock, so that
//!    an upload in flight (ours or a writer about to be fenced) is never touched.
//!
//! A failed listing or manifest read deletes nothing; a failed delete is logged and retried by the
//! next pass. Only names the store writes are considered (`segments/<collection>/<id>.seg`,
//! `manifest/<version>.json`); anything else under the prefix is left alone.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use mainstay_resilience::BreakerState;
use object_store::ObjectMeta;
use object_store::path::Path;

use crate::error::{Fenced, MaintenanceError};
use crate::remote::{Remote, RemoteError, manifest_version, segment_epoch};
use crate::store::{Shared, dlq_entries};

/// Manifest versions kept, the newest included. Recovery and fencing need only the newest (`open`
/// reads it and commits the next version with `PutMode::Create`); the older ones are kept for
/// inspection and for a reader that listed just before a commit.
pub(crate) const MANIFESTS_KEPT: u64 = 10;

/// What one pass of orphan collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// Objects deleted: segments no manifest references and manifests below the kept ones.
    pub deleted_objects: u64,
    /// Bytes of the deleted objects.
    pub deleted_bytes: u64,
    /// Unreferenced objects kept because they are younger than `compaction.grace_period`.
    pub young_objects: u64,
    /// Deletes that failed; the next pass tries again.
    pub failed_deletes: u64,
}

/// Why a pass ended without looking at every object.
enum Stop {
    /// Nothing may be deleted now (breaker not closed, fenced, closed); not a failure.
    Skipped(MaintenanceError),
    /// A listing or the manifest read failed: nothing was deleted.
    Failed(MaintenanceError),
}

/// A segment object under `segments/<collection>/<id>.seg`.
struct SegmentObject {
    id: String,
    meta: ObjectMeta,
}

fn object_store_error(error: &RemoteError) -> MaintenanceError {
    MaintenanceError::ObjectStore(error.message.clone())
}

impl Shared {
    /// The store's wall-clock time: the system time at open advanced by the store's (monotonic,
    /// possibly paused or manual) clock since then. Not the clock's own `system_time`: a manual
    /// clock's starts on a fixed date, while objects carry the object store's real time.
    pub(crate) fn wall_now(&self) -> SystemTime {
        let elapsed = self.clock.now().saturating_sub(self.clock_origin);
        // Past the end of `SystemTime` (never in practice) objects only look younger: kept.
        self.wall_origin
            .checked_add(elapsed)
            .unwrap_or(self.wall_origin)
    }

    /// One pass of orphan collection over the whole prefix (`collection` `None`, manifests
    /// included) or over one collection's segments; counted in the metrics and logged.
    pub(crate) async fn collect_orphans(
        &self,
        collection: Option<&str>,
    ) -> Result<OrphanReport, MaintenanceError> {
        let _pass = self.orphan_lock.lock().await;
        let scope = collection.unwrap_or("*");
        match self.orphan_pass(collection).await {
            Ok(report) => {
                self.instruments
                    .orphan_objects
                    .inc_by(report.deleted_objects);
                self.instruments.orphan_bytes.inc_by(report.deleted_bytes);
                if report.failed_deletes > 0 {
                    self.instruments.orphan_passes_failure.inc();
                } else {
                    self.instruments.orphan_passes_success.inc();
                }
                if report.deleted_objects > 0 || report.failed_deletes > 0 {
                    tracing::info!(
                        scope,
                        deleted = report.deleted_objects,
                        bytes = report.deleted_bytes,
                        young = report.young_objects,
                        failed = report.failed_deletes,
                        "collected orphaned objects"
                    );
                } else {
                    tracing::debug!(
                        scope,
                        young = report.young_objects,
                        "no orphaned object to collect"
                    );
                }
                Ok(report)
            }
            Err(Stop::Skipped(reason)) => {
                self.instruments.orphan_passes_skipped.inc();
                tracing::debug!(scope, %reason, "orphan collection skipped");
                Err(reason)
            }
            Err(Stop::Failed(error)) => {
                self.instruments.orphan_passes_failure.inc();
                tracing::warn!(scope, %error, "orphan collection failed; nothing was deleted");
                Err(error)
            }
        }
    }

    /// Why nothing may be deleted now, if so.
    fn orphan_stop(&self) -> Option<Stop> {
        if self.is_closed() {
            return Some(Stop::Skipped(MaintenanceError::ObjectStore(
                "the store is closed".to_owned(),
            )));
        }
        if let Some(fenced) = self.fenced.lock().clone() {
            return Some(Stop::Skipped(fenced.into()));
        }
        if !self.is_claimed() {
            return Some(Stop::Skipped(MaintenanceError::ObjectStore(
                "the object-store prefix is not claimed yet".to_owned(),
            )));
        }
        if !matches!(
            self.breaker.state(),
            BreakerState::Closed | BreakerState::Disabled
        ) {
            return Some(Stop::Skipped(MaintenanceError::ObjectStore(
                "the upload circuit breaker is not closed".to_owned(),
            )));
        }
        None
    }

    #[allow(clippy::too_many_lines)] // One pass in the order that makes it safe; see the module.
    async fn orphan_pass(&self, collection: Option<&str>) -> Result<OrphanReport, Stop> {
        let mut report = OrphanReport::default();
        let Some(remote) = self.remote.as_ref() else {
            return Ok(report);
        };
        if let Some(stop) = self.orphan_stop() {
            return Err(stop);
        }
        let (segments_root, manifest_root) = (remote.segments_root(), remote.manifest_root());
        let listed = match collection {
            Some(name) => segments_root.clone().join(name),
            None => segments_root.clone(),
        };

        // 1. The listings, in full, before anything is decided.
        let segment_objects = self
            .list_objects(remote, &listed)
            .await
            .map_err(|e| Stop::Failed(object_store_error(&e)))?;
        let manifest_objects = self
            .list_objects(remote, &manifest_root)
            .await
            .map_err(|e| Stop::Failed(object_store_error(&e)))?;

        // 2. The newest manifest, read back: it must be ours.
        let manifests: Vec<(u64, ObjectMeta)> = manifest_objects
            .into_iter()
            .filter_map(|meta| Some((manifest_version(&meta)?, meta)))
            .collect();
        let Some(newest) = manifests.iter().map(|(version, _)| *version).max() else {
            return Err(Stop::Failed(MaintenanceError::ObjectStore(
                "no manifest under the prefix".to_owned(),
            )));
        };
        let limit = self.config.upload.attempt_timeout;
        let manifest = tokio::time::timeout(limit, remote.read_manifest(newest))
            .await
            .unwrap_or_else(|_| Err(RemoteError::timeout()))
            .map_err(|e| Stop::Failed(object_store_error(&e)))?;
        let epoch = remote.epoch();
        if manifest.writer != remote.writer || manifest.epoch != epoch {
            // Another writer claimed the prefix: its uploads are none of our business, and this
            // store is fenced now rather than at its next commit.
            let fenced = Fenced { version: newest };
            if manifest.epoch > epoch {
                self.fence(fenced.clone());
            }
            return Err(Stop::Skipped(fenced.into()));
        }
        let mut referenced: HashSet<String> = manifest
            .collections
            .values()
            .flat_map(|c| c.segments.iter().map(|s| s.id.clone()))
            .collect();
        referenced.extend(
            dlq_entries(&self.dlq)
                .into_iter()
                .filter_map(|(_, key)| Some(key.split_once('/')?.1.to_owned())),
        );

        // 3. Per collection: what this process references, then the deletes.
        let mut by_collection: BTreeMap<String, Vec<SegmentObject>> = BTreeMap::new();
        for meta in segment_objects {
            let parts: Vec<String> = match meta.location.prefix_match(&segments_root) {
                Some(parts) => parts.map(|p| p.as_ref().to_owned()).collect(),
                None => continue,
            };
            let [name, file] = parts.as_slice() else {
                continue;
            };
            let Some(id) = file.strip_suffix(".seg") else {
                continue;
            };
            let id = id.to_owned();
            by_collection
                .entry(name.clone())
                .or_default()
                .push(SegmentObject { id, meta });
        }
        let grace = self.compaction.read().grace_period;
        for (name, objects) in by_collection {
            let mut keep = referenced.clone();
            {
                // A compaction holds this lock from its upload to its commit: once we have it, an
                // uploaded output is either committed (and listed below) or abandoned.
                let live = self.collection(&name);
                let _compacting = match &live {
                    Some(live) => Some(live.compact_lock.lock().await),
                    None => None,
                };
                if let Some(live) = &live {
                    keep.extend(live.data.read().segments.iter().map(|s| s.meta.id.clone()));
                }
                if let Some(entry) = self.manifest.lock().await.collections.get(&name) {
                    keep.extend(entry.segments.iter().map(|s| s.id.clone()));
                }
                keep.extend(self.retiring.lock().iter().cloned());
                keep.extend(self.leases.leased_segments());
            }
            let now = self.wall_now();
            // An object of a newer epoch is a newer writer's, whatever our manifest says.
            for object in objects
                .into_iter()
                .filter(|o| !keep.contains(&o.id) && segment_epoch(&o.id) <= epoch)
            {
                if let Some(stop) = self.orphan_stop() {
                    return stopped(report, stop);
                }
                self.delete_if_old(remote, &object.meta, now, grace, &mut report)
                    .await;
            }
        }

        // 4. Manifests below the kept ones (only on a pass over the whole prefix).
        if collection.is_none() {
            let now = self.wall_now();
            for (version, meta) in &manifests {
                if version.saturating_add(MANIFESTS_KEPT) > newest {
                    continue;
                }
                if let Some(stop) = self.orphan_stop() {
                    return stopped(report, stop);
                }
                self.delete_if_old(remote, meta, now, grace, &mut report)
                    .await;
            }
        }
        Ok(report)
    }

    /// Deletes `meta`'s object if it is at least `grace` old at `now`; counts what happened.
    async fn delete_if_old(
        &self,
        remote: &Remote,
        meta: &ObjectMeta,
        now: SystemTime,
        grace: Duration,
        report: &mut OrphanReport,
    ) {
        let modified = SystemTime::from(meta.last_modified);
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age < grace {
            report.young_objects += 1;
            return;
        }
        let limit = self.config.upload.attempt_timeout;
        match tokio::time::timeout(limit, remote.delete(&meta.location))
            .await
            .unwrap_or_else(|_| Err(RemoteError::timeout()))
        {
            Ok(()) => {
                report.deleted_objects += 1;
                report.deleted_bytes += meta.size;
                tracing::debug!(object = %meta.location, bytes = meta.size, ?age, "deleted an orphaned object");
            }
            Err(error) => {
                report.failed_deletes += 1;
                tracing::warn!(object = %meta.location, %error, "could not delete an orphaned object; the next pass tries again");
            }
        }
    }

    /// Every object under `prefix`, or the first error (each page within the attempt timeout,
    /// classified and counted like every object-store call).
    pub(crate) async fn list_objects(
        &self,
        remote: &Remote,
        prefix: &Path,
    ) -> Result<Vec<ObjectMeta>, RemoteError> {
        let limit = self.config.upload.attempt_timeout;
        let mut stream = remote.store.list(Some(prefix));
        let mut out = Vec::new();
        // One listing is one request, however many items it streams.
        remote.count_request();
        loop {
            let page = remote.call_within(async { stream.next().await.transpose() });
            match tokio::time::timeout(limit, page).await {
                Err(_) => return Err(RemoteError::timeout()),
                Ok(Ok(None)) => return Ok(out),
                Ok(Ok(Some(meta))) => out.push(meta),
                Ok(Err(mut error)) => {
                    error.message = format!("listing {prefix} failed: {}", error.message);
                    return Err(error);
                }
            }
        }
    }
}

/// A pass interrupted part-way (the store closed or was fenced): what it did counts.
fn stopped(report: OrphanReport, stop: Stop) -> Result<OrphanReport, Stop> {
    if report == OrphanReport::default() {
        Err(stop)
    } else {
        Ok(report)
    }
}

/// The pass that follows recovery on open, in the background.
pub(crate) async fn after_open(shared: std::sync::Weak<Shared>) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    // Counted and logged inside; the next pass on the interval tries again.
    let _ = shared.collect_orphans(None).await;
}
