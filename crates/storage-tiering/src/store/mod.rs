//! The store: its handle, shared state and maintenance calls. One responsibility per file:
//! `open` (the steps of recovery), `recovery` (local segment files at open), `catalog`
//! (collections), `write` (WAL append and publish), `read` (point reads, listings, segment
//! reads), `flush` (memtables into segments, WAL trimming), `manifest` (object-store commits,
//! fencing, the claim after an outage) and `tasks` (the flush timer and compaction).

mod catalog;
mod flush;
mod manifest;
mod open;
mod purge;
mod read;
mod recovery;
mod tasks;
#[cfg(test)]
mod tests;
mod write;

pub use self::purge::PurgeReport;
pub(crate) use self::recovery::rebuild_entries;
use self::{manifest::*, recovery::*, tasks::*, write::*};

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mainstay_clock::SharedClock;
use mainstay_dlq::{Dlq, DlqMetrics};
use mainstay_journal::RecoverySummary;
use mainstay_journal::fs::{FileSystem, RealFs};
use mainstay_resilience::{CircuitBreaker, ResilienceMetrics, RetryBudget};
use object_store::ObjectStore;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::cache::BlockCache;
use crate::collection::Collection;
use crate::config::{CompactionConfig, StoreConfig, TieringPolicy};
use crate::error::{Fenced, MaintenanceError, OpenError};
use crate::metrics::{Instruments, StorageMetrics};
use crate::orphans::OrphanReport;
use crate::remote::{self, Manifest, Remote};
use crate::upload::UploadQueue;
use crate::wal::{Wal, WalDamage, WalRecovery};

/// The DLQ queue that holds segments whose upload failed for good.
pub const DLQ_QUEUE: &str = "storage-segments";

/// A record returned by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record id.
    pub id: String,
    /// The value.
    pub value: Bytes,
}

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only ids starting with this.
    pub prefix: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size; `limits.default_page_size` when unset.
    pub limit: Option<usize>,
}

/// One page of a listing, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The records.
    pub records: Vec<Record>,
    /// Pass this to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Some sources could not be read: the page holds what memory and the cache had.
    pub degraded: bool,
    /// The sources that could not be read (`object_store`).
    pub unavailable_sources: Vec<String>,
}

impl Page {
    /// Whether results may be missing (same as `degraded`).
    #[must_use]
    pub fn partial_results(&self) -> bool {
        self.degraded
    }
}

/// A collection as listed by [`Store::collections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    /// The name.
    pub name: String,
    /// Its tiering policy.
    pub policy: TieringPolicy,
    /// Segments it has now.
    pub segments: usize,
}

/// What opening the store recovered ([`Store::recovery`]); [`StoreRecovery::summary`] gives it in
/// the terms every mainstay store uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreRecovery {
    /// The WAL's recovery.
    pub wal: WalRecovery,
    /// WAL records applied to memtables (the others were already in segments).
    pub replayed_records: u64,
    /// The manifest version read, if any.
    pub manifest_version: Option<u64>,
    /// Local segments not committed to the manifest, queued for upload again.
    pub requeued_segments: usize,
    /// Local segments pinned by a DLQ entry.
    pub pinned_segments: usize,
    /// Local segments that failed verification and were rebuilt from the WAL (the damaged files
    /// are kept under `data_dir/corrupt/`).
    pub rebuilt_segments: usize,
    /// The object store could not be read: the store opened from its local copy of the last
    /// committed manifest (`manifest_version` is that copy's) and claims the prefix once the
    /// object store answers ([`Store::awaiting_object_store`]).
    pub awaiting_object_store: bool,
}

impl StoreRecovery {
    /// The recovery in the terms every mainstay store reports it (the DLQ's
    /// `DlqRecovery::summary` gives the same): records read back from the WAL, records lost to
    /// WAL damage skipped under `wal_recovery = "skip_corrupt"`, bytes of a torn tail cut, the
    /// copies of the damaged WAL files. Segments rebuilt from the WAL lose nothing and are not
    /// counted here ([`StoreRecovery::rebuilt_segments`]).
    #[must_use]
    pub fn summary(&self) -> RecoverySummary {
        let mut summary = RecoverySummary::default();
        summary.recovered_records = self.wal.records;
        summary.lost_records = self
            .wal
            .damage
            .iter()
            .map(|damage| damage.lost_records)
            .sum();
        summary.truncated_bytes = self.wal.truncated_bytes;
        summary
            .preserved
            .extend(self.wal.damage.iter().map(|damage| damage.copy.clone()));
        summary
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CatalogFile {
    next_incarnation: u64,
    /// The last LSN handed out when the catalog was written: a floor for new LSNs even when the
    /// segments that held higher ones were dropped with their collection.
    #[serde(default)]
    lsn_floor: u64,
    collections: Vec<CatalogEntry>,
    /// Tombstones of dropped object-store collections: the manifest may still list them until
    /// its next commit, which leaves out every entry of an incarnation listed here. Absent in
    /// catalogs written before tombstones existed.
    #[serde(default)]
    dropped: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CatalogEntry {
    name: String,
    policy: TieringPolicy,
    incarnation: u64,
}

/// A write in the WAL's buffer or sync, not yet visible.
#[derive(Debug)]
struct Unpublished {
    lsn: u64,
    collection: Arc<Collection>,
    entries: Vec<(String, Option<Bytes>)>,
}

/// The state every handle and task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: StoreConfig,
    /// What recovery found at open.
    pub(crate) recovery: StoreRecovery,
    /// The compaction settings in force; [`Store::set_compaction_config`] replaces them live.
    pub(crate) compaction: RwLock<CompactionConfig>,
    pub(crate) wal: Wal,
    /// Damage the WAL's recovery skipped, until an operator acknowledges it.
    pub(crate) wal_damage: Mutex<Vec<WalDamage>>,
    pub(crate) remote: Option<Arc<Remote>>,
    pub(crate) dlq: Dlq,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) budget: RetryBudget,
    pub(crate) instruments: Instruments,
    pub(crate) collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Writes appended to the WAL but not yet known durable, in LSN order. They reach the
    /// memtables only once their sync succeeded ([`Shared::publish`]), so that a write whose
    /// fsync failed is never served, flushed or uploaded.
    unpublished: Mutex<VecDeque<Unpublished>>,
    /// Every write up to this LSN is in its memtable (or was discarded): a writer whose LSN is
    /// at most this returns without taking the queue's lock, so that the writers one group
    /// commit wakes do not queue up behind the one that publishes them all.
    published_lsn: std::sync::atomic::AtomicU64,
    next_incarnation: Mutex<u64>,
    pub(crate) queue: Mutex<UploadQueue>,
    pub(crate) upload_notify: Arc<Notify>,
    pub(crate) progress: Notify,
    pub(crate) manifest: tokio::sync::Mutex<Manifest>,
    pub(crate) cache: Mutex<BlockCache>,
    pub(crate) fenced: Mutex<Option<Fenced>>,
    /// A manifest commit failed without an answer on whether it landed: the next one reads the
    /// newest manifest first.
    manifest_uncertain: AtomicBool,
    /// Whether this store claimed its object-store prefix (false after an open during an outage
    /// until the reconcile task claims it: no uploads, commits or orphan collection meanwhile).
    claimed: AtomicBool,
    /// `data_dir/manifest.json`: a copy of the last committed manifest, to start from when the
    /// object store is down at open.
    manifest_copy_path: PathBuf,
    pub(crate) closed: AtomicBool,
    pub(crate) segments_dir: PathBuf,
    catalog_path: PathBuf,
    /// The file system of the WAL, the catalog and the manifest copy (std's outside tests).
    fs: Arc<dyn FileSystem>,
    /// Held for every catalog write, and by `create_collection` and `drop_collection` from their
    /// check of the name to the end of the change, so that one name's changes never interleave.
    catalog_write: tokio::sync::Mutex<()>,
    /// The tombstones of the catalog (see [`CatalogFile::dropped`]).
    dropped: Mutex<Vec<CatalogEntry>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The data directory's advisory lock; released by `close` (or with the process).
    lock: Mutex<Option<mainstay_journal::DirLock>>,
    /// The clock of the breaker and budget; with `wall_origin` it dates objects for orphan
    /// collection ([`Shared::wall_now`]).
    pub(crate) clock: SharedClock,
    /// The system time when the store opened, and the clock's reading then.
    pub(crate) wall_origin: SystemTime,
    pub(crate) clock_origin: Duration,
    /// Ids of compaction inputs waiting out their grace period before their delayed deletion:
    /// readers of an older manifest may still fetch them, so orphan collection keeps them.
    pub(crate) retiring: Arc<Mutex<HashSet<String>>>,
    /// Serialises orphan collection passes.
    pub(crate) orphan_lock: tokio::sync::Mutex<()>,
    /// Retention leases of running backups: compaction, orphan collection and WAL trimming keep
    /// what they hold.
    pub(crate) leases: Arc<crate::backup::Leases>,
}

/// A durable record store with a WAL, a memory tier and an object-storage tier. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// Builds a [`Store`] with an object store, clock or metrics of the caller's choosing.
#[derive(Debug)]
#[must_use]
pub struct StoreBuilder {
    config: StoreConfig,
    name: String,
    object_store: Option<(Arc<dyn ObjectStore>, String)>,
    clock: Option<SharedClock>,
    metrics: Option<StorageMetrics>,
    resilience_metrics: Option<ResilienceMetrics>,
    dlq_metrics: Option<DlqMetrics>,
    dlq: Option<Dlq>,
    fs: Arc<dyn FileSystem>,
}

impl StoreBuilder {
    /// Keeps failed segments in this dead-letter queue (the application's one) instead of one the
    /// store opens under `data_dir/dlq`. The store sets its queue, [`DLQ_QUEUE`], to reject on
    /// overflow and never expire, and registers its redrive handler there.
    pub fn dlq(mut self, dlq: Dlq) -> Self {
        self.dlq = Some(dlq);
        self
    }

    /// Does the file I/O of the WAL, the catalog, the local manifest copy, the data-directory
    /// lock and the store's own DLQ journal on `fs` instead of the real file system: for
    /// power-loss tests on [`SimFs`](mainstay_journal::fs::SimFs). Segment files (written and
    /// synced before anything refers to them) and the DLQ's archive always use std's file
    /// system, so `data_dir` must also exist on the real one.
    #[doc(hidden)]
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }

    /// The name that labels this store's metrics and its breaker. Default `storage`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Uses this object store under `prefix` instead of `object_store_url` (for a store the caller
    /// builds, such as a fault-injecting wrapper in tests). Build an HTTP store with
    /// `HttpStatusConnector` (feature `aws`; `with_http_connector`), or failures that object_store
    /// reports only as `Error::Generic` (a 400, 405, ...) are all retried as transient.
    pub fn object_store(mut self, store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        self.object_store = Some((store, prefix.into()));
        self
    }

    /// The clock of the upload breaker and retry budget. Orphan collection dates objects by it too:
    /// the store's time is the system time at open advanced by this clock. Default: a
    /// [`TokioClock`](mainstay_clock::TokioClock), which follows paused tokio time in tests.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The store's metric families.
    pub fn metrics(mut self, metrics: StorageMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The families the upload breaker reports into.
    pub fn resilience_metrics(mut self, metrics: ResilienceMetrics) -> Self {
        self.resilience_metrics = Some(metrics);
        self
    }

    /// The families the upload DLQ reports into.
    pub fn dlq_metrics(mut self, metrics: DlqMetrics) -> Self {
        self.dlq_metrics = Some(metrics);
        self
    }

    /// Opens the store: locks the data directory, reads the newest manifest (and claims the prefix
    /// by committing the next version), recovers local segments and replays the WAL beyond them,
    /// re-queues segments written but not committed, and starts the upload and compaction tasks.
    ///
    /// # Errors
    ///
    /// [`OpenError`] when the configuration is invalid, the directory is locked, local data is
    /// corrupt beyond a torn WAL tail, or the object store cannot be read.
    pub async fn open(self) -> Result<Store, OpenError> {
        Store::open_with(self).await
    }
}

fn io_open(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` by temp file + fsync + rename + fsync(dir) (blocking), through
/// `mainstay-journal`'s one implementation of it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_on(&RealFs, path, bytes)
}

/// [`write_atomic`] on the given file system.
pub(crate) fn write_atomic_on(
    fs: &dyn FileSystem,
    path: &Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    mainstay_journal::write_atomic(fs, path, bytes)
        .map_err(|error| std::io::Error::new(error.source.kind(), error))
}

pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

impl Store {
    /// A builder for a store with this configuration.
    pub fn builder(config: StoreConfig) -> StoreBuilder {
        StoreBuilder {
            config,
            name: "storage".to_owned(),
            object_store: None,
            clock: None,
            metrics: None,
            resilience_metrics: None,
            dlq_metrics: None,
            dlq: None,
            fs: Arc::new(RealFs),
        }
    }

    /// Opens a store with default metrics and clock; see [`StoreBuilder::open`].
    ///
    /// # Errors
    ///
    /// See [`StoreBuilder::open`].
    pub async fn open(config: StoreConfig) -> Result<Store, OpenError> {
        Self::builder(config).open().await
    }

    /// Freezes every memtable into a segment now (segments of object-store collections are then
    /// queued for upload).
    ///
    /// # Errors
    ///
    /// [`MaintenanceError`] when a segment file cannot be written.
    pub async fn flush(&self) -> Result<(), MaintenanceError> {
        self.shared.publish();
        let collections: Vec<_> = self.shared.collections.read().values().cloned().collect();
        for collection in collections {
            self.shared.flush_collection(&collection).await?;
        }
        Ok(())
    }

    /// Waits until nothing waits for upload, or `timeout` passes. Memtables count as waiting:
    /// call [`Store::flush`] first to queue them. So do a dropped collection the manifest still
    /// lists (its commit is retried here) and, after an open during an outage, the claim of the
    /// prefix.
    ///
    /// # Errors
    ///
    /// [`MaintenanceError::Deadline`] with the bytes still waiting (safe in the WAL), or
    /// [`MaintenanceError::Fenced`].
    pub async fn wait_uploaded(&self, timeout: Duration) -> Result<(), MaintenanceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let progress = self.shared.progress.notified();
            if let Some(fenced) = self.shared.fenced.lock().clone() {
                return Err(fenced.into());
            }
            let backlog = self.backlog_bytes();
            // After an open during an outage nothing is uploaded or committed until the prefix
            // is claimed (a drop meanwhile is not in the manifest yet): wait for the claim.
            let unclaimed = self.shared.remote.is_some() && !self.shared.is_claimed();
            if backlog == 0 && !unclaimed {
                if !self.shared.manifest_behind(false).await {
                    return Ok(());
                }
                // The data is uploaded, but the manifest still lists a dropped collection (a
                // writer taking the prefix over would bring it back): commit it (a failure is
                // retried until the deadline).
                match self.shared.commit_manifest(|_| {}).await {
                    Ok(()) => continue,
                    Err(crate::remote::CommitError::Fenced(fenced)) => return Err(fenced.into()),
                    Err(crate::remote::CommitError::Remote(error)) => {
                        tracing::debug!(%error, "the manifest is behind the catalog; retrying");
                        let retry = tokio::time::Instant::now()
                            + self.shared.config.upload.breaker_poll_interval;
                        if retry >= deadline {
                            tokio::time::sleep_until(deadline).await;
                            return Err(MaintenanceError::Deadline(0));
                        }
                        tokio::time::sleep_until(retry).await;
                        continue;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return Err(MaintenanceError::Deadline(self.backlog_bytes()));
            }
        }
    }

    /// Bytes not yet uploaded (memtables, frozen memtables and pending segments of object-store
    /// collections).
    #[must_use]
    pub fn backlog_bytes(&self) -> u64 {
        u64::try_from(self.shared.instruments.backlog_bytes.get()).unwrap_or(0)
    }

    /// Segments waiting for upload.
    #[must_use]
    pub fn upload_queue_depth(&self) -> usize {
        self.shared.queue.lock().len()
    }

    /// The compaction settings in force.
    #[must_use]
    pub fn compaction_config(&self) -> CompactionConfig {
        self.shared.compaction.read().clone()
    }

    /// Replaces the compaction settings of the running store: the next background pass uses
    /// them (a new interval applies from the pass after the current wait).
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::ConfigError) naming the key (`compaction.min_segments`, ...) when a
    /// value is not allowed; the settings in force stay.
    pub fn set_compaction_config(
        &self,
        compaction: CompactionConfig,
    ) -> Result<(), crate::config::ConfigError> {
        let mut check = self.shared.config.clone();
        check.compaction = compaction.clone();
        check.validate()?;
        *self.shared.compaction.write() = compaction;
        tracing::info!("compaction settings replaced");
        Ok(())
    }

    /// The upload circuit breaker (for admin endpoints and registries).
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.shared.breaker
    }

    /// The store's DLQ; queue [`DLQ_QUEUE`] holds segments whose upload failed for good, and its
    /// registered redrive handler uploads them.
    #[must_use]
    pub fn dlq(&self) -> &Dlq {
        &self.shared.dlq
    }

    /// What recovery found when the store was opened (the same for every handle of it).
    #[must_use]
    pub fn recovery(&self) -> &StoreRecovery {
        &self.shared.recovery
    }

    /// Whether the store opened during an object-store outage and has not claimed its prefix
    /// yet: it serves what it holds locally and acknowledges writes through the WAL, while
    /// uploads, manifest commits and orphan collection wait; reads that need the object store
    /// fail with [`ReadError::Unavailable`](crate::ReadError::Unavailable). A background task claims the prefix once the store
    /// answers (or finds the store fenced by a newer writer).
    #[must_use]
    pub fn awaiting_object_store(&self) -> bool {
        !self.shared.is_claimed()
    }

    /// The error that fenced this store, if another writer claimed the prefix.
    #[must_use]
    pub fn fenced(&self) -> Option<Fenced> {
        self.shared.fenced.lock().clone()
    }

    /// Reads the newest manifest now and fences this store if a newer writer claimed the prefix
    /// since (a store learns of it by itself at its next manifest commit or orphan pass; from
    /// then on it refuses writes). For operators and health checks that want to know sooner.
    ///
    /// # Errors
    ///
    /// [`MaintenanceError::Fenced`] when this store is fenced (now or before);
    /// [`MaintenanceError::ObjectStore`] when the manifest could not be read.
    pub async fn check_fencing(&self) -> Result<(), MaintenanceError> {
        if let Some(fenced) = self.shared.fenced.lock().clone() {
            return Err(fenced.into());
        }
        let Some(remote) = self.shared.remote.clone() else {
            return Ok(());
        };
        if !self.shared.is_claimed() {
            // The claim itself checks, once the object store answers.
            return Ok(());
        }
        let limit = self.shared.config.upload.attempt_timeout;
        let newest = tokio::time::timeout(limit, remote.latest_manifest())
            .await
            .unwrap_or_else(|_| Err(remote::RemoteError::timeout()))
            .map_err(|e| MaintenanceError::ObjectStore(e.to_string()))?;
        match newest {
            Some(manifest) if manifest.epoch > remote.epoch() => Err(self
                .shared
                .fence(Fenced {
                    version: manifest.version,
                })
                .into()),
            _ => Ok(()),
        }
    }

    /// Why the WAL refuses writes, once a write or fsync of it failed (never retried: reopen the
    /// store to recover from what reached the disk); `None` while it is healthy.
    #[must_use]
    pub fn wal_failure(&self) -> Option<String> {
        self.shared.wal.failure()
    }

    /// The damaged WAL stretches skipped at open (`wal_recovery = "skip_corrupt"`) that no
    /// operator has acknowledged yet: the `storage-wal` check is degraded while there are any.
    #[must_use]
    pub fn wal_damage(&self) -> Vec<WalDamage> {
        self.shared.wal_damage.lock().clone()
    }

    /// Acknowledges the damage [`Store::wal_damage`] lists (after an operator has looked at the
    /// copies under `data_dir/corrupt/`); returns how many stretches it listed.
    pub fn acknowledge_wal_damage(&self) -> usize {
        let acknowledged = std::mem::take(&mut *self.shared.wal_damage.lock()).len();
        if acknowledged > 0 {
            tracing::info!(
                stretches = acknowledged,
                "the damaged wal stretches skipped at open were acknowledged"
            );
        }
        self.shared.instruments.wal_damage.set(0);
        acknowledged
    }

    /// Sets the `storage_wal_failed`, `storage_fenced` and `storage_wal_damage` gauges from
    /// [`Store::wal_failure`], [`Store::fenced`] and [`Store::wal_damage`]: cheap, meant to run
    /// before each metrics scrape.
    pub fn update_state_gauges(&self) {
        let instruments = &self.shared.instruments;
        instruments
            .wal_damage
            .set(i64::try_from(self.shared.wal_damage.lock().len()).unwrap_or(i64::MAX));
        instruments
            .wal_failed
            .set(i64::from(self.shared.wal.failure().is_some()));
        instruments
            .fenced
            .set(i64::from(self.shared.fenced.lock().is_some()));
    }

    /// The highest LSN handed out so far. Right after [`Store::open`], before any write, it is
    /// the point where this store took over: every record it acknowledges later has a higher LSN.
    #[must_use]
    pub fn last_lsn(&self) -> u64 {
        self.shared.wal.last_lsn()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// WAL files on disk (a closed file is deleted once every record in it is covered).
    #[must_use]
    pub fn wal_files(&self) -> usize {
        self.shared.wal.file_count()
    }

    /// Merges the collection's segments now; returns how many segments were merged (0 when there
    /// was nothing to merge). Then, unless `compaction.collect_orphans` is off, collects the
    /// collection's orphaned objects as [`Store::collect_orphans`] does (a failure there is
    /// logged and counted, not returned).
    ///
    /// # Errors
    ///
    /// [`MaintenanceError`] when the merge, upload or manifest commit fails.
    pub async fn compact(&self, collection: &str) -> Result<usize, MaintenanceError> {
        let coll = self
            .shared
            .collection(collection)
            .ok_or_else(|| MaintenanceError::UnknownCollection(collection.to_owned()))?;
        let merged = self.shared.compact(&coll, true).await?;
        if self.shared.collects_orphans() {
            // Counted and logged inside; the compaction itself succeeded.
            let _ = self.shared.collect_orphans(Some(collection)).await;
        }
        Ok(merged)
    }

    /// Deletes objects under the store's prefix that crashes left behind, now: segment objects the
    /// newest manifest does not reference (an upload that landed but was never committed,
    /// compaction inputs whose deletion was pending, a dropped collection's leftovers) and
    /// manifests below the newest ten. An object is kept while a segment of this process still
    /// needs it (pending upload, waiting for its commit, pinned for the DLQ, a compaction input
    /// in its grace period) and while its `last_modified` is younger than
    /// `compaction.grace_period` by the store's clock. The store also runs this after open and
    /// every `compaction.interval` while `compaction.collect_orphans` is on.
    ///
    /// # Errors
    ///
    /// [`MaintenanceError::ObjectStore`] when a listing or the manifest read failed (nothing was
    /// deleted), the upload breaker is not closed or the store is closed;
    /// [`MaintenanceError::Fenced`] when another writer holds the prefix. Failed deletes are not
    /// errors: they are counted in the report and retried by the next pass.
    pub async fn collect_orphans(&self) -> Result<OrphanReport, MaintenanceError> {
        self.shared.collect_orphans(None).await
    }

    /// Shuts down in design order: freezes memtables, waits for uploads up to `timeout`, stops the
    /// background tasks and closes the DLQ. What is not uploaded stays safe in the WAL and local
    /// segments and is uploaded after the next open.
    ///
    /// # Errors
    ///
    /// [`MaintenanceError`] when flushing fails or the deadline passed with data waiting.
    pub async fn close(&self, timeout: Duration) -> Result<(), MaintenanceError> {
        let flushed = self.flush().await;
        let uploaded = if self.shared.remote.is_some() {
            self.wait_uploaded(timeout).await
        } else {
            Ok(())
        };
        if uploaded.is_ok() && self.shared.manifest_behind(true).await {
            // Collections created since the last commit, empty ones included, are committed
            // before the prefix is left to the next writer (best effort: the next open's claim
            // commits them too).
            if let Err(error) = self.shared.commit_manifest(|_| {}).await {
                tracing::warn!(%error, "could not commit the new collections before closing");
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.upload_notify.notify_waiters();
        for task in self.shared.tasks.lock().drain(..) {
            task.abort();
        }
        if let Err(error) = self.shared.dlq.close().await {
            tracing::warn!(%error, "could not close the upload dlq");
        }
        // Releases the directory: another store may open it now; this one refuses writes.
        self.shared.wal.close();
        self.shared.lock.lock().take();
        flushed.and(uploaded)
    }

    #[cfg(feature = "health")]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }
}

/// Every entry of the segment queue of the DLQ: id and key (`collection/segment`).
pub(crate) fn dlq_entries(dlq: &Dlq) -> Vec<(mainstay_dlq::EntryId, String)> {
    let filter = mainstay_dlq::Filter::queue(DLQ_QUEUE);
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    while let Ok(page) = dlq.list(&filter, cursor.as_deref(), mainstay_dlq::MAX_PAGE_SIZE) {
        out.extend(page.entries.iter().map(|e| (e.id(), e.key().to_owned())));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out
}

/// The part of a collection a listing page reads.
#[derive(Clone, Copy)]
struct ListRange<'a> {
    /// Where to seek to (the cursor, or the prefix).
    start: &'a str,
    prefix: &'a str,
    /// Only ids after this one.
    after: Option<&'a str>,
    /// Most entries to take from one source.
    take: usize,
}

impl Shared {
    /// Runs `capture` with the last published LSN while no write is published: every memtable
    /// holds exactly the writes up to that LSN (a backup's consistent point).
    pub(crate) fn with_writes_paused<T>(&self, capture: impl FnOnce(u64) -> T) -> T {
        let _unpublished = self.unpublished.lock();
        capture(self.published_lsn.load(Ordering::Acquire))
    }

    pub(crate) fn collection(&self, name: &str) -> Option<Arc<Collection>> {
        self.collections.read().get(name).cloned()
    }

    /// Whether orphan collection runs by itself (after open, on the interval, after an on-demand
    /// compaction): an object store is configured and `compaction.collect_orphans` is on.
    pub(crate) fn collects_orphans(&self) -> bool {
        self.remote.is_some() && self.compaction.read().collect_orphans
    }

    /// Whether `close` ran (the directory, and the prefix, may belong to another store now).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.lock.lock().is_none()
    }

    /// Recomputes the memtable, backlog and queue gauges from the collections.
    pub(crate) fn update_gauges(&self) {
        let (mut memtable, mut backlog) = (0u64, 0u64);
        for collection in self.collections.read().values() {
            let data = collection.data.read();
            memtable += data.memtable_bytes + data.frozen.iter().map(|f| f.bytes).sum::<u64>();
            if collection.policy.uses_object_store() {
                backlog += data.backlog();
            }
        }
        self.instruments
            .memtable_bytes
            .set(i64::try_from(memtable).unwrap_or(i64::MAX));
        self.instruments
            .backlog_bytes
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        self.instruments
            .upload_queue
            .set(i64::try_from(self.queue.lock().len()).unwrap_or(i64::MAX));
        self.progress.notify_waiters();
    }
}
