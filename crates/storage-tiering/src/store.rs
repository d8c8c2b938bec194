//! The store: opening and recovery, collections, the write path, reads and listings.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mainstay_clock::{SharedClock, TokioClock};
use mainstay_dlq::{Dlq, DlqConfig, DlqMetrics, QueueConfig};
use mainstay_resilience::{CircuitBreaker, ResilienceMetrics, RetryBudget};
use object_store::ObjectStore;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::cache::BlockCache;
use crate::collection::{
    Collection, Data, Durability, Frozen, Residency, Segment, SegmentState, lookup_memory,
    lookup_resident,
};
use crate::config::{CompactionConfig, Policy, StoreConfig};
use crate::error::{
    CollectionError, Fenced, MaintenanceError, OpenError, ReadError, SegmentError, WriteError,
};
use crate::metrics::{Instruments, StorageMetrics};
use crate::names::{decode_cursor, encode_cursor, valid_collection_name, valid_record_id};
use crate::orphans::{self, MANIFESTS_KEPT, OrphanReport};
use crate::remote::{self, Manifest, ManifestCollection, Remote};
use crate::segment::{self, Entry, FOOTER_LEN, SegmentMeta};
use crate::upload::{self, UploadQueue};
use crate::wal::{self, Wal, WalRecovery};

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
    pub policy: Policy,
    /// Segments it has now.
    pub segments: usize,
}

/// What [`Store::open`] recovered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
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
    policy: Policy,
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
    /// The compaction settings in force; [`Store::set_compaction_config`] replaces them live.
    pub(crate) compaction: RwLock<CompactionConfig>,
    pub(crate) wal: Wal,
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
    /// Held for every catalog write, and by `create_collection` and `drop_collection` from their
    /// check of the name to the end of the change, so that one name's changes never interleave.
    catalog_write: tokio::sync::Mutex<()>,
    /// The tombstones of the catalog (see [`CatalogFile::dropped`]).
    dropped: Mutex<Vec<CatalogEntry>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The data directory's advisory lock; released by `close` (or with the process).
    lock: Mutex<Option<File>>,
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
}

impl StoreBuilder {
    /// Keeps failed segments in this dead-letter queue (the application's one) instead of one the
    /// store opens under `data_dir/dlq`. The store sets its queue, [`DLQ_QUEUE`], to reject on
    /// overflow and never expire, and registers its redrive handler there.
    pub fn dlq(mut self, dlq: Dlq) -> Self {
        self.dlq = Some(dlq);
        self
    }

    /// The name that labels this store's metrics and its breaker. Default `storage`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Uses this object store under `prefix` instead of `object_store_url` (for a store the caller
    /// builds, such as a fault-injecting wrapper in tests). Build an HTTP store with
    /// [`crate::HttpStatusConnector`] (`with_http_connector`), or failures that object_store
    /// reports only as `Error::Generic` (a 400, 405, ...) are all retried as transient.
    pub fn object_store(mut self, store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        self.object_store = Some((store, prefix.into()));
        self
    }

    /// The clock of the upload breaker and retry budget. Orphan collection dates objects by it too:
    /// the store's time is the system time at open advanced by this clock. Default: a
    /// [`TokioClock`], which follows paused tokio time in tests.
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
    pub async fn open(self) -> Result<(Store, RecoveryReport), OpenError> {
        Store::open_with(self).await
    }
}

fn io_open(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` by temp file + fsync + rename + fsync(dir) (blocking).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    wal::sync_dir(dir)
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
        }
    }

    /// Opens a store with default metrics and clock; see [`StoreBuilder::open`].
    ///
    /// # Errors
    ///
    /// See [`StoreBuilder::open`].
    pub async fn open(config: StoreConfig) -> Result<(Store, RecoveryReport), OpenError> {
        Self::builder(config).open().await
    }

    #[allow(clippy::too_many_lines)] // Recovery is one sequence of steps; splitting it hides the order.
    async fn open_with(builder: StoreBuilder) -> Result<(Store, RecoveryReport), OpenError> {
        let config = builder.config;
        config.validate()?;
        let data_dir = config.data_dir.clone();
        fs::create_dir_all(&data_dir).map_err(io_open(&data_dir))?;
        let lock_path = data_dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_open(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked { path: lock_path });
        }
        let instruments = builder
            .metrics
            .unwrap_or_else(StorageMetrics::unregistered)
            .instruments(&builder.name);
        let clock = builder.clock.unwrap_or_else(|| TokioClock::new().shared());
        let mut report = RecoveryReport::default();

        // The object store and its newest manifest; committing the next version claims the prefix
        // and fences any older writer.
        let object_store = match builder.object_store {
            Some(given) => Some(given),
            None => config
                .object_store_url
                .as_deref()
                .map(remote::open_url)
                .transpose()?,
        };
        let remote = object_store.map(|(store, prefix): (Arc<dyn ObjectStore>, String)| {
            Arc::new(Remote::new(store, &prefix, instruments.clone()))
        });
        // The catalog: local collections, and tombstones of dropped ones.
        let catalog_path = data_dir.join("catalog.json");
        let mut catalog: CatalogFile = match fs::read(&catalog_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| OpenError::Io {
                path: catalog_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => CatalogFile::default(),
            Err(error) => return Err(io_open(&catalog_path)(error)),
        };
        let manifest_copy_path = data_dir.join("manifest.json");
        let mut manifest = Manifest::default();
        let mut claimed = true;
        if let Some(remote) = &remote {
            let mut read = None;
            let claim = remote.claim(None, |newest| {
                read = (newest.version > 0).then_some(newest.version);
                leave_out_dropped(newest, &catalog.dropped);
            });
            let claim = tokio::time::timeout(config.upload.attempt_timeout, claim)
                .await
                .unwrap_or_else(|_| Err(remote::RemoteError::timeout().into()));
            match claim {
                Ok(claimed_manifest) => {
                    manifest = claimed_manifest;
                    report.manifest_version = read;
                    // The claimed manifest lists no dropped incarnation: the tombstones have done
                    // their job.
                    catalog.dropped.clear();
                    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
                    let path = manifest_copy_path.clone();
                    blocking(move || write_atomic(&path, &bytes))
                        .await
                        .map_err(io_open(&manifest_copy_path))?;
                }
                Err(remote::CommitError::Remote(error))
                    if error.kind == remote::ErrorKind::Transient =>
                {
                    // The object store is down: start from this directory's copy of the last
                    // committed manifest, without claiming the prefix (no uploads, commits or
                    // orphan collection) until the store answers. Without a copy nothing says
                    // what the prefix holds: refuse.
                    let Some(copy) = read_manifest_copy(&manifest_copy_path)? else {
                        return Err(OpenError::ObjectStoreUnavailable {
                            reason: error.to_string(),
                        });
                    };
                    tracing::warn!(%error, version = copy.version, "the object store cannot be read; starting from the local manifest copy, uploads wait until it answers");
                    manifest = copy;
                    leave_out_dropped(&mut manifest, &catalog.dropped);
                    report.manifest_version = Some(manifest.version);
                    report.awaiting_object_store = true;
                    claimed = false;
                }
                Err(remote::CommitError::Fenced(fenced)) => return Err(OpenError::Fenced(fenced)),
                Err(remote::CommitError::Remote(error)) => {
                    return Err(OpenError::Manifest(error.to_string()));
                }
            }
        }

        // Object-store collections the manifest lists and the catalog does not.
        for (name, entry) in &manifest.collections {
            if !catalog.collections.iter().any(|c| c.name == *name) && valid_collection_name(name) {
                catalog.collections.push(CatalogEntry {
                    name: name.clone(),
                    policy: entry.policy,
                    incarnation: entry.incarnation,
                });
                catalog.next_incarnation = catalog.next_incarnation.max(entry.incarnation + 1);
            }
        }

        let retain_all = QueueConfig::retain_all(config.upload.dlq_capacity);
        let dlq = if let Some(dlq) = builder.dlq {
            dlq.set_queue_config(DLQ_QUEUE, retain_all)
                .map_err(|error| {
                    crate::config::ConfigError::new(
                        "upload.dlq_capacity",
                        error.value,
                        error.allowed,
                    )
                })?;
            dlq
        } else {
            let dlq_dir = data_dir.join("dlq");
            let mut dlq_config = DlqConfig::default();
            dlq_config.queues.insert(DLQ_QUEUE.to_owned(), retain_all);
            dlq_config.total_capacity = dlq_config.total_capacity.max(config.upload.dlq_capacity);
            let mut dlq_builder = Dlq::builder(dlq_dir).config(dlq_config);
            if let Some(metrics) = builder.dlq_metrics {
                dlq_builder = dlq_builder.metrics(metrics);
            }
            dlq_builder.open().await?
        };
        let pinned_keys: HashSet<String> =
            dlq_entries(&dlq).into_iter().map(|(_, key)| key).collect();

        // Local segments, verified; the manifest's segments; then the WAL beyond them.
        let segments_dir = data_dir.join("segments");
        fs::create_dir_all(&segments_dir).map_err(io_open(&segments_dir))?;
        let mut collections = BTreeMap::new();
        let mut pending = Vec::new();
        let mut to_rebuild: Vec<(String, Damaged)> = Vec::new();
        for entry in &catalog.collections {
            let committed: BTreeMap<String, SegmentMeta> = manifest
                .collections
                .get(&entry.name)
                .filter(|m| m.incarnation == entry.incarnation)
                .map(|m| {
                    m.segments
                        .iter()
                        .map(|s| (s.id.clone(), s.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let dir = segments_dir.join(&entry.name);
            let (scanned, damaged) = {
                let dir = dir.clone();
                let incarnation = entry.incarnation;
                blocking(move || scan_segments(&dir, incarnation)).await?
            };
            for file in damaged {
                if committed.contains_key(&file.id) {
                    // The object store holds the committed copy; the local one is not needed.
                    tracing::warn!(path = %file.path.display(), error = %file.error, "deleting a damaged local copy of a committed segment");
                    let doomed = file.path.clone();
                    blocking(move || fs::remove_file(doomed)).await.ok();
                } else {
                    to_rebuild.push((entry.name.clone(), file));
                }
            }
            let mut data = Data::default();
            let mut seen = HashSet::new();
            for (path, meta, entries, index) in scanned {
                seen.insert(meta.id.clone());
                let key = format!("{}/{}", entry.name, meta.id);
                let durability = if !entry.policy.uses_object_store() {
                    Durability::Local
                } else if committed.contains_key(&meta.id) {
                    Durability::Committed
                } else if pinned_keys.contains(&key) {
                    report.pinned_segments += 1;
                    Durability::Pinned
                } else {
                    Durability::Pending
                };
                let keep_file = durability != Durability::Committed;
                if !keep_file {
                    // Uploaded and committed before the crash; the local copy is no longer needed.
                    let doomed = path.clone();
                    blocking(move || fs::remove_file(doomed)).await.ok();
                }
                let residency = match (entry.policy, durability) {
                    (Policy::S3Only, Durability::Committed) => Residency::Remote(None),
                    (Policy::S3Only, _) => Residency::LocalFile(Arc::new(index)),
                    _ => Residency::Resident(Arc::new(entries)),
                };
                let segment = Arc::new(Segment {
                    meta,
                    local_path: path,
                    state: Mutex::new(SegmentState {
                        residency,
                        durability,
                        has_local_file: keep_file,
                    }),
                });
                if durability == Durability::Pending {
                    pending.push((entry.name.clone(), Arc::clone(&segment)));
                }
                data.insert_segment(segment);
            }
            for meta in committed.values().filter(|m| !seen.contains(&m.id)) {
                let path = dir.join(format!("{}-{}.seg", entry.incarnation, meta.id));
                data.insert_segment(Arc::new(Segment {
                    meta: meta.clone(),
                    local_path: path,
                    state: Mutex::new(SegmentState {
                        residency: Residency::Remote(None),
                        durability: Durability::Committed,
                        has_local_file: false,
                    }),
                }));
            }
            // A compaction cut short by a crash leaves its output or its inputs behind: drop
            // whichever the other one holds in full, so that no two segments overlap.
            let stale: Vec<Arc<Segment>> = data
                .segments
                .iter()
                .filter(|s| superseded(&data.segments, s.meta.min_lsn, s.meta.max_lsn, Some(s)))
                .cloned()
                .collect();
            for segment in stale {
                tracing::info!(collection = %entry.name, segment = %segment.meta.id, "removing a segment a crashed compaction left behind");
                data.segments.retain(|s| !Arc::ptr_eq(s, &segment));
                pending.retain(|(_, p): &(String, Arc<Segment>)| !Arc::ptr_eq(p, &segment));
                if segment.state.lock().has_local_file {
                    let doomed = segment.local_path.clone();
                    blocking(move || fs::remove_file(doomed)).await.ok();
                }
            }
            collections.insert(
                entry.name.clone(),
                Arc::new(Collection {
                    name: entry.name.clone(),
                    policy: entry.policy,
                    incarnation: entry.incarnation,
                    data: RwLock::new(data),
                    flush_lock: tokio::sync::Mutex::new(()),
                    compact_lock: tokio::sync::Mutex::new(()),
                    flush_scheduled: AtomicBool::new(false),
                    dropped: AtomicBool::new(false),
                }),
            );
        }
        report.requeued_segments = pending.len();

        // LSNs must keep growing across restarts even when every WAL file was trimmed: start
        // above every LSN a segment holds (local or in the manifest, any incarnation).
        let lsn_floor = collections
            .values()
            .map(|c| c.data.read().segment_max_lsn())
            .chain(
                manifest
                    .collections
                    .values()
                    .flat_map(|c| c.segments.iter().map(|s| s.max_lsn)),
            )
            .max()
            .unwrap_or(0)
            .max(catalog.lsn_floor);
        let wal_dir = data_dir.join("wal");
        let quarantine_dir = data_dir.join("corrupt");
        let (wal, records, wal_report) = {
            let instruments = instruments.clone();
            let segment_bytes = config.wal_segment_bytes;
            blocking(move || Wal::open(&wal_dir, segment_bytes, lsn_floor, instruments)).await?
        };
        report.wal = wal_report;
        for (name, file) in to_rebuild {
            let Some(collection) = collections.get(&name) else {
                continue;
            };
            let key = format!("{name}/{}", file.id);
            let leftover = file.footer.as_ref().is_some_and(|footer| {
                superseded(
                    &collection.data.read().segments,
                    footer.min_lsn,
                    footer.max_lsn,
                    None,
                )
            });
            if leftover {
                // A crashed compaction's output or input whose data another segment holds: the
                // damage costs nothing; keep the file for inspection.
                tracing::warn!(path = %file.path.display(), error = %file.error, "a damaged segment left by a crashed compaction is set aside");
                let quarantine = quarantine_dir.clone();
                blocking(move || quarantine_file(&file.path, &name, &quarantine))
                    .await
                    .map_err(io_open(&quarantine_dir))?;
                continue;
            }
            let segment = {
                let config = (config.block_bytes, config.compression);
                let relevant: Vec<wal::WalRecord> = records
                    .iter()
                    .filter(|r| r.collection == name)
                    .cloned()
                    .collect();
                let valid: Vec<(u64, u64)> = collection
                    .data
                    .read()
                    .segments
                    .iter()
                    .map(|s| (s.meta.min_lsn, s.meta.max_lsn))
                    .collect();
                // Waiting for upload when the crash came: the WAL kept all of its records.
                let waiting = collection.policy.uses_object_store() && !pinned_keys.contains(&key);
                let (collection, quarantine) = (Arc::clone(collection), quarantine_dir.clone());
                blocking(move || {
                    rebuild_damaged(
                        &relevant,
                        &collection,
                        file,
                        (&valid, waiting),
                        config,
                        &quarantine,
                    )
                })
                .await?
            };
            let Some(segment) = segment else {
                continue;
            };
            report.rebuilt_segments += 1;
            let durability = if !collection.policy.uses_object_store() {
                Durability::Local
            } else if pinned_keys.contains(&key) {
                Durability::Pinned
            } else {
                Durability::Pending
            };
            segment.state.lock().durability = durability;
            if durability == Durability::Pending {
                pending.push((name.clone(), Arc::clone(&segment)));
                report.requeued_segments += 1;
            }
            collection.data.write().insert_segment(segment);
        }
        for record in records {
            let Some(collection) = collections.get(&record.collection) else {
                continue;
            };
            if collection.incarnation != record.incarnation {
                continue;
            }
            let mut data = collection.data.write();
            if record.lsn <= data.segment_max_lsn() {
                continue;
            }
            report.replayed_records += 1;
            apply(&mut data, record.lsn, record.entries);
        }

        let breaker = {
            let mut breaker = CircuitBreaker::builder(
                &format!("{}-uploads", builder.name),
                config.upload.breaker.clone(),
            )
            .clock(clock.clone());
            if let Some(metrics) = &builder.resilience_metrics {
                breaker = breaker.metrics(metrics);
            }
            breaker.build().map_err(|e| {
                OpenError::Config(crate::config::ConfigError {
                    key: format!("upload.breaker.{}", e.key),
                    value: e.value,
                    allowed: e.allowed.to_owned(),
                })
            })?
        };
        let budget = RetryBudget::with_clock(config.upload.retry_budget.clone(), clock.clone())
            .map_err(|e| {
                OpenError::Config(crate::config::ConfigError {
                    key: format!("upload.retry_budget.{}", e.key),
                    value: e.value,
                    allowed: e.allowed.to_owned(),
                })
            })?;

        let cache_bytes = config.cache_bytes;
        let compaction = RwLock::new(config.compaction.clone());
        let (clock_origin, wall_origin) = (clock.now(), SystemTime::now());
        let shared = Arc::new(Shared {
            compaction,
            wal,
            remote,
            dlq,
            breaker,
            budget,
            instruments,
            collections: RwLock::new(collections),
            unpublished: Mutex::new(VecDeque::new()),
            published_lsn: std::sync::atomic::AtomicU64::new(0),
            next_incarnation: Mutex::new(catalog.next_incarnation.max(1)),
            queue: Mutex::new(UploadQueue::default()),
            upload_notify: Arc::new(Notify::new()),
            progress: Notify::new(),
            manifest: tokio::sync::Mutex::new(manifest),
            cache: Mutex::new(BlockCache::new(cache_bytes)),
            fenced: Mutex::new(None),
            manifest_uncertain: AtomicBool::new(false),
            claimed: AtomicBool::new(claimed),
            manifest_copy_path,
            closed: AtomicBool::new(false),
            segments_dir,
            catalog_path,
            catalog_write: tokio::sync::Mutex::new(()),
            dropped: Mutex::new(catalog.dropped),
            tasks: Mutex::new(Vec::new()),
            config,
            lock: Mutex::new(Some(lock)),
            clock,
            wall_origin,
            clock_origin,
            retiring: Arc::new(Mutex::new(HashSet::new())),
            orphan_lock: tokio::sync::Mutex::new(()),
        });
        shared.persist_catalog().await.map_err(|e| match e {
            CollectionError::Io { path, source } => OpenError::Io { path, source },
            other => OpenError::Manifest(other.to_string()),
        })?;
        {
            let mut queue = shared.queue.lock();
            let collections = shared.collections.read();
            for (name, segment) in pending {
                if let Some(collection) = collections.get(&name) {
                    queue.push(Arc::clone(collection), segment);
                }
            }
        }
        shared.update_gauges();
        shared.dlq.register_handler(
            DLQ_QUEUE,
            Arc::new(upload::Redrive {
                shared: Arc::downgrade(&shared),
            }),
        );
        let mut tasks = Vec::new();
        if shared.remote.is_some() {
            if claimed {
                tasks.push(tokio::spawn(upload::run_worker(Arc::downgrade(&shared))));
            } else {
                // Starts the upload worker and the pass after open once it claimed the prefix.
                tasks.push(tokio::spawn(reconcile_task(Arc::downgrade(&shared))));
            }
        }
        tasks.push(tokio::spawn(flush_task(Arc::downgrade(&shared))));
        // The task runs even while compaction is disabled, so that enabling it live takes effect.
        tasks.push(tokio::spawn(compaction_task(Arc::downgrade(&shared))));
        // Objects orphaned before this open (a crash between upload and commit, compaction inputs
        // whose deletion was pending): collected in the background, never delaying the open.
        if shared.collects_orphans() && claimed {
            tasks.push(tokio::spawn(orphans::after_open(Arc::downgrade(&shared))));
        }
        *shared.tasks.lock() = tasks;
        // Replayed records may already be coverable (nothing to keep); trim what we can.
        shared.trim_wal().await;
        let store = Store { shared };
        // Memtables replayed past the bound are frozen now rather than at the next write.
        for collection in store.shared.collections.read().values() {
            store.shared.maybe_schedule_flush(collection);
        }
        Ok((store, report))
    }

    /// Creates a collection with a tiering policy.
    ///
    /// # Errors
    ///
    /// [`CollectionError`] for an invalid or taken name, an object-store policy without a store,
    /// or a failed catalog write (then the collection does not exist and the create can be
    /// retried).
    pub async fn create_collection(
        &self,
        name: &str,
        policy: Policy,
    ) -> Result<(), CollectionError> {
        if !valid_collection_name(name) {
            return Err(CollectionError::InvalidName(name.to_owned()));
        }
        if policy.uses_object_store() && self.shared.remote.is_none() {
            return Err(CollectionError::NoObjectStore(policy.as_str()));
        }
        // The collection is live only once its catalog entry is durable: a failed write leaves
        // nothing behind (the incarnation number it took is simply never used).
        let _catalog = self.shared.catalog_write.lock().await;
        if self.shared.collections.read().contains_key(name) {
            return Err(CollectionError::AlreadyExists(name.to_owned()));
        }
        let incarnation = {
            let mut next = self.shared.next_incarnation.lock();
            let value = *next;
            *next += 1;
            value
        };
        let mut entries = self.shared.catalog_entries();
        entries.push(CatalogEntry {
            name: name.to_owned(),
            policy,
            incarnation,
        });
        let dropped = self.shared.dropped.lock().clone();
        self.shared.write_catalog(entries, dropped).await?;
        self.shared.collections.write().insert(
            name.to_owned(),
            Arc::new(Collection {
                name: name.to_owned(),
                policy,
                incarnation,
                data: RwLock::new(Data::default()),
                flush_lock: tokio::sync::Mutex::new(()),
                compact_lock: tokio::sync::Mutex::new(()),
                flush_scheduled: AtomicBool::new(false),
                dropped: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    /// Drops a collection: its records, local files, objects and DLQ entries. Returns whether it
    /// existed. The drop is durable once the catalog is; the manifest catches up on its next
    /// commit when it cannot be committed now (objects are deleted only once no manifest of this
    /// store lists them, else by orphan collection).
    ///
    /// # Errors
    ///
    /// [`CollectionError`] for an invalid name or a failed catalog write (then nothing was
    /// dropped and the collection stays usable).
    pub async fn drop_collection(&self, name: &str) -> Result<bool, CollectionError> {
        if !valid_collection_name(name) {
            return Err(CollectionError::InvalidName(name.to_owned()));
        }
        // The catalog is the local truth and goes first: once it is durable without the
        // collection (and with a tombstone of its incarnation, which keeps the manifest's entry
        // from bringing it back at the next open), the drop has happened; before, nothing has
        // changed and the collection stays fully usable. The manifest catches up on its next
        // commit, which leaves out tombstoned incarnations.
        let catalog = self.shared.catalog_write.lock().await;
        let Some(collection) = self.shared.collection(name) else {
            return Ok(false);
        };
        let uses_manifest = self.shared.remote.is_some() && collection.policy.uses_object_store();
        let mut dropped = self.shared.dropped.lock().clone();
        if uses_manifest {
            dropped.push(CatalogEntry {
                name: name.to_owned(),
                policy: collection.policy,
                incarnation: collection.incarnation,
            });
        }
        let entries = self
            .shared
            .catalog_entries()
            .into_iter()
            .filter(|entry| entry.name != name)
            .collect();
        self.shared.write_catalog(entries, dropped.clone()).await?;
        *self.shared.dropped.lock() = dropped;
        self.shared.collections.write().remove(name);
        collection.dropped.store(true, Ordering::SeqCst);
        let _flush = collection.flush_lock.lock().await;
        let _compact = collection.compact_lock.lock().await;
        self.shared.queue.lock().remove_collection(&collection);
        let segments = std::mem::take(&mut collection.data.write().segments);
        let dir = self.shared.segments_dir.join(name);
        let _ = blocking(move || fs::remove_dir_all(&dir)).await;
        // A new collection of this name may be created from here on: its queue entries and files
        // are its own.
        drop(catalog);
        let listed = uses_manifest
            && self
                .shared
                .manifest
                .lock()
                .await
                .collections
                .get(name)
                .is_some_and(|entry| entry.incarnation <= collection.incarnation);
        let committed = if listed {
            match self.shared.commit_manifest(|_| {}).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, collection = name, "the manifest still lists a dropped collection; its next commit leaves it out");
                    false
                }
            }
        } else {
            true
        };
        // Objects go only once no manifest of ours references them; otherwise orphan collection
        // deletes them after the manifest caught up.
        if let Some(remote) = &self.shared.remote
            && committed
        {
            for segment in &segments {
                let _ = remote
                    .delete(&remote.segment_path(name, &segment.meta.id))
                    .await;
                self.shared.cache.lock().forget(&segment.meta.id);
            }
        }
        let prefix = format!("{name}/");
        for (id, _) in dlq_entries(&self.shared.dlq)
            .into_iter()
            .filter(|(_, key)| key.starts_with(&prefix))
        {
            let _ = self.shared.dlq.delete(id).await;
        }
        self.shared.update_gauges();
        self.shared.trim_wal().await;
        Ok(true)
    }

    /// The collections, by name.
    #[must_use]
    pub fn collections(&self) -> Vec<CollectionInfo> {
        self.shared
            .collections
            .read()
            .values()
            .map(|c| CollectionInfo {
                name: c.name.clone(),
                policy: c.policy,
                segments: c.data.read().segments.len(),
            })
            .collect()
    }

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

    async fn write(
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

    /// The value of `id`, `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`ReadError::Unavailable`] when only the object store has the answer and it failed;
    /// [`ReadError::Corrupt`] when stored bytes fail their checksum.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<Bytes>, ReadError> {
        if !valid_collection_name(collection) {
            return Err(ReadError::InvalidCollection(collection.to_owned()));
        }
        if !valid_record_id(id) {
            return Err(ReadError::InvalidId);
        }
        let coll = self
            .shared
            .collection(collection)
            .ok_or_else(|| ReadError::UnknownCollection(collection.to_owned()))?;
        let segments = {
            let data = coll.data.read();
            if let Some(entry) = lookup_memory(&data, id) {
                return Ok(entry.value);
            }
            data.segments.clone()
        };
        for segment in segments.iter().rev() {
            if let Some(entry) = self.shared.segment_lookup(&coll, segment, id).await? {
                return Ok(entry.value);
            }
        }
        Ok(None)
    }

    /// One page of records in id order, optionally under a prefix. When the object store fails,
    /// the page holds what memory and the cache have, with `degraded` set.
    ///
    /// # Errors
    ///
    /// [`ReadError`] for invalid input or corrupt data.
    pub async fn list(&self, collection: &str, query: &ListQuery) -> Result<Page, ReadError> {
        if !valid_collection_name(collection) {
            return Err(ReadError::InvalidCollection(collection.to_owned()));
        }
        let limits = &self.shared.config.limits;
        let limit = query.limit.unwrap_or(limits.default_page_size);
        if limit == 0 || limit > limits.max_page_size {
            return Err(ReadError::PageTooLarge {
                asked: limit,
                limit: limits.max_page_size,
            });
        }
        let prefix = query.prefix.clone().unwrap_or_default();
        if prefix.len() > crate::names::MAX_ID_BYTES
            || !(prefix.is_empty()
                || prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')))
        {
            return Err(ReadError::InvalidPrefix);
        }
        let after = match &query.cursor {
            Some(cursor) => Some(decode_cursor(cursor).ok_or(ReadError::InvalidCursor)?),
            None => None,
        };
        let coll = self
            .shared
            .collection(collection)
            .ok_or_else(|| ReadError::UnknownCollection(collection.to_owned()))?;
        let take = limit + 1;
        let in_range =
            |id: &str| id.starts_with(prefix.as_str()) && after.as_deref().is_none_or(|a| id > a);
        let start = match &after {
            Some(a) if a.as_str() >= prefix.as_str() => a.clone(),
            _ => prefix.clone(),
        };
        // Each source gives up to `take` entries in range, and whether it had more.
        let mut sources: Vec<(Vec<(String, Entry)>, bool)> = Vec::new();
        let segments = {
            let data = coll.data.read();
            let mut maps: Vec<&BTreeMap<String, Entry>> = vec![&data.memtable];
            maps.extend(data.frozen.iter().map(|f| &f.entries));
            for map in maps {
                let mut out = Vec::new();
                let mut more = false;
                for (id, entry) in map.range(start.clone()..) {
                    if !id.starts_with(prefix.as_str()) {
                        break;
                    }
                    if !in_range(id) {
                        continue;
                    }
                    if out.len() == take {
                        more = true;
                        break;
                    }
                    out.push((id.clone(), entry.clone()));
                }
                sources.push((out, more));
            }
            data.segments.clone()
        };
        let mut degraded = false;
        // A segment that could not be read may hold a newer version of any key that an older
        // source has: entries older than it are left out (the page is partial), never shown stale.
        let mut shadowed_below = 0u64;
        let range = ListRange {
            start: &start,
            prefix: &prefix,
            after: after.as_deref(),
            take,
        };
        for segment in &segments {
            match self
                .shared
                .segment_range(&coll, segment, &range, &mut degraded)
                .await
            {
                Ok(source) => sources.push(source),
                Err(ReadError::Unavailable(reason)) => {
                    tracing::debug!(%reason, "listing without an object-store segment");
                    degraded = true;
                    shadowed_below = shadowed_below.max(segment.meta.max_lsn);
                }
                Err(other) => return Err(other),
            }
        }
        // Keys up to the smallest last key of a truncated source are complete in every source.
        let boundary: Option<String> = sources
            .iter()
            .filter(|(_, more)| *more)
            .filter_map(|(entries, _)| entries.last().map(|(id, _)| id.clone()))
            .min();
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        for (entries, _) in sources {
            for (id, entry) in entries {
                if boundary.as_ref().is_some_and(|b| id > *b) || entry.lsn < shadowed_below {
                    continue;
                }
                match merged.get(&id) {
                    Some(existing) if existing.lsn >= entry.lsn => {}
                    _ => {
                        merged.insert(id, entry);
                    }
                }
            }
        }
        let mut records = Vec::new();
        let mut next_cursor = None;
        for (id, entry) in merged {
            let Some(value) = entry.value else { continue };
            if records.len() == limit {
                next_cursor = records.last().map(|r: &Record| encode_cursor(&r.id));
                break;
            }
            records.push(Record { id, value });
        }
        if next_cursor.is_none()
            && let Some(boundary) = boundary
        {
            next_cursor = Some(encode_cursor(
                records
                    .last()
                    .map_or(boundary.as_str(), |r| r.id.as_str())
                    .max(boundary.as_str()),
            ));
        }
        Ok(Page {
            records,
            next_cursor,
            degraded,
            unavailable_sources: if degraded {
                vec!["object_store".to_owned()]
            } else {
                Vec::new()
            },
        })
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

    /// Whether the store opened during an object-store outage and has not claimed its prefix
    /// yet: it serves what it holds locally and acknowledges writes through the WAL, while
    /// uploads, manifest commits and orphan collection wait; reads that need the object store
    /// fail with [`ReadError::Unavailable`]. A background task claims the prefix once the store
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

    /// Sets the `storage_wal_failed` and `storage_fenced` gauges from [`Store::wal_failure`] and
    /// [`Store::fenced`]: cheap, meant to run before each metrics scrape.
    pub fn update_state_gauges(&self) {
        let instruments = &self.shared.instruments;
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
        self.shared.lock.lock().take();
        flushed.and(uploaded)
    }

    #[cfg(feature = "health")]
    pub(crate) fn downgrade(&self) -> Weak<Shared> {
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

/// The local copy of the last committed manifest, if there is one.
fn read_manifest_copy(path: &Path) -> Result<Option<Manifest>, OpenError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| OpenError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_open(path)(error)),
    }
}

/// After an open during an outage: claims the prefix once the object store answers (based on
/// the local manifest copy, if the newest manifest is that copy's writer's or older; else this
/// store is fenced), then starts the upload worker and the orphan pass that follows an open.
/// Retries with the upload backoff meanwhile.
async fn reconcile_task(weak: Weak<Shared>) {
    let mut attempt = 0;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let Some(remote) = shared.remote.clone() else {
            return;
        };
        if shared.is_closed() {
            return;
        }
        attempt += 1;
        let local = shared.manifest.lock().await.clone();
        let claim = remote.claim(Some(&local), |manifest| {
            leave_out_dropped(manifest, &shared.dropped.lock());
            // Collections created during the outage are committed with the claim.
            shared.include_live_collections(manifest);
        });
        let limit = shared.config.upload.attempt_timeout;
        match tokio::time::timeout(limit, claim)
            .await
            .unwrap_or_else(|_| Err(remote::RemoteError::timeout().into()))
        {
            Ok(claimed) => {
                let version = claimed.version;
                {
                    let mut current = shared.manifest.lock().await;
                    *current = claimed;
                    shared.save_manifest_copy(&current).await;
                }
                shared.claimed.store(true, Ordering::Release);
                let mut tasks = vec![tokio::spawn(upload::run_worker(Arc::downgrade(&shared)))];
                if shared.collects_orphans() {
                    tasks.push(tokio::spawn(orphans::after_open(Arc::downgrade(&shared))));
                }
                shared.tasks.lock().extend(tasks);
                shared.upload_notify.notify_one();
                shared.progress.notify_waiters();
                tracing::info!(
                    version,
                    "the object store answers: prefix claimed, uploads resume"
                );
                return;
            }
            Err(remote::CommitError::Fenced(fenced)) => {
                shared.fence(fenced);
                return;
            }
            Err(remote::CommitError::Remote(error)) => {
                tracing::debug!(%error, attempt, "the object store still cannot be claimed");
            }
        }
        let delay = shared.config.upload.backoff(attempt);
        drop(shared);
        tokio::time::sleep(delay).await;
    }
}

/// Removes from `manifest` every collection entry of an incarnation a tombstone names.
fn leave_out_dropped(manifest: &mut Manifest, dropped: &[CatalogEntry]) {
    for tombstone in dropped {
        if manifest
            .collections
            .get(&tombstone.name)
            .is_some_and(|entry| entry.incarnation <= tombstone.incarnation)
        {
            manifest.collections.remove(&tombstone.name);
        }
    }
}

/// Applies a logged operation to a memtable.
fn apply(data: &mut Data, lsn: u64, entries: Vec<(String, Option<Bytes>)>) {
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

type Scanned = Vec<(
    PathBuf,
    SegmentMeta,
    Vec<(String, Entry)>,
    Vec<segment::BlockRef>,
)>;

/// A local segment file that failed verification.
#[derive(Debug)]
struct Damaged {
    path: PathBuf,
    id: String,
    /// The footer, when it (and its own checksum) survived: it gives the LSN range to rebuild.
    footer: Option<segment::Footer>,
    error: SegmentError,
}

/// Reads and verifies the collection's local segment files (blocking); deletes temp files and
/// files of an older incarnation. Files that fail verification are returned apart.
fn scan_segments(dir: &Path, incarnation: u64) -> Result<(Scanned, Vec<Damaged>), OpenError> {
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((out, damaged)),
        Err(error) => return Err(io_open(dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(io_open(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((file_incarnation, id)) =
            name.strip_suffix(".seg").and_then(|n| n.split_once('-'))
        else {
            let _ = fs::remove_file(&path);
            continue;
        };
        if file_incarnation.parse::<u64>().ok() != Some(incarnation) {
            let _ = fs::remove_file(&path);
            continue;
        }
        let bytes = fs::read(&path).map_err(io_open(&path))?;
        let (records, footer, index) = match segment::decode_all(&bytes) {
            Ok(decoded) => decoded,
            Err(error) => {
                let footer = bytes
                    .len()
                    .checked_sub(FOOTER_LEN)
                    .and_then(|at| segment::decode_footer(bytes.get(at..)?).ok());
                damaged.push(Damaged {
                    path,
                    id: id.to_owned(),
                    footer,
                    error,
                });
                continue;
            }
        };
        let meta = SegmentMeta {
            id: id.to_owned(),
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
            min_lsn: footer.min_lsn,
            max_lsn: footer.max_lsn,
            records: footer.records,
            write_id: ulid::Ulid::from(footer.write_id).to_string(),
        };
        out.push((path, meta, records, index));
    }
    Ok((out, damaged))
}

/// Whether the segment over `min..=max` (`itself`, when it is in `segments`) is a leftover of a
/// compaction a crash cut short, whose records another segment holds: an uncommitted segment
/// that overlaps a committed one (an output whose commit never happened: its inputs are still
/// committed), or a settled segment inside another's larger range (an input whose deletion never
/// happened: the output was written durably first).
fn superseded(
    segments: &[Arc<Segment>],
    min: u64,
    max: u64,
    itself: Option<&Arc<Segment>>,
) -> bool {
    let own = itself.map(|s| s.durability());
    segments
        .iter()
        .filter(|other| itself.is_none_or(|s| !Arc::ptr_eq(s, other)))
        .any(|other| {
            let (o_min, o_max) = (other.meta.min_lsn, other.meta.max_lsn);
            let overlaps = o_min <= max && min <= o_max;
            let contains = o_min <= min && max <= o_max && (o_min, o_max) != (min, max);
            match (own, other.durability()) {
                (Some(Durability::Pending) | None, Durability::Committed) => overlaps,
                (Some(Durability::Local) | None, Durability::Local) => contains,
                _ => false,
            }
        })
}

/// Moves a damaged file under `quarantine` (blocking).
fn quarantine_file(path: &Path, collection: &str, quarantine: &Path) -> std::io::Result<()> {
    let kept = quarantine.join(format!(
        "{collection}-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    fs::create_dir_all(quarantine)?;
    fs::rename(path, kept)?;
    wal::sync_dir(quarantine)
}

/// The entries of `collection`'s segment over `min..=max`, rebuilt from WAL records in LSN order
/// (the newest record of an id wins, as it did in the memtable).
pub(crate) fn rebuild_entries<'a>(
    records: impl IntoIterator<Item = &'a wal::WalRecord>,
    collection: &Collection,
    (min, max): (u64, u64),
) -> Vec<(String, Entry)> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for record in records {
        if record.collection != collection.name
            || record.incarnation != collection.incarnation
            || !(min..=max).contains(&record.lsn)
        {
            continue;
        }
        for (id, value) in &record.entries {
            entries.insert(
                id.clone(),
                Entry {
                    lsn: record.lsn,
                    value: value.clone(),
                },
            );
        }
    }
    entries.into_iter().collect()
}

/// Rebuilds a damaged local segment from the WAL records of its LSN range (blocking): keeps the
/// damaged file under `quarantine`, writes the rebuilt one in its place. When its footer (and so
/// its range) is lost too, a segment that was waiting for upload (`waiting`: the WAL keeps every
/// record from its first on) is rebuilt from the collection's WAL records that no segment in
/// `valid` (the LSN ranges of the others) covers, below the newest of them; the records above
/// are replayed into the memtable as usual (`None`). Refused (the open fails with
/// [`OpenError::CorruptSegment`]) when the WAL no longer holds all of its records, or cannot say.
fn rebuild_damaged(
    records: &[wal::WalRecord],
    collection: &Collection,
    file: Damaged,
    (valid, waiting): (&[(u64, u64)], bool),
    (block_bytes, codec): (usize, crate::config::Compression),
    quarantine: &Path,
) -> Result<Option<Arc<Segment>>, OpenError> {
    let refuse = |file: Damaged| OpenError::CorruptSegment {
        path: file.path,
        source: file.error,
    };
    let (range, expected, write_id) = match &file.footer {
        Some(footer) => (
            (footer.min_lsn, footer.max_lsn),
            Some(footer.records),
            footer.write_id,
        ),
        None if waiting => {
            let top = valid.iter().map(|(_, max)| *max).max().unwrap_or(0);
            let uncovered: Vec<u64> = records
                .iter()
                .filter(|r| {
                    r.collection == collection.name && r.incarnation == collection.incarnation
                })
                .map(|r| r.lsn)
                .filter(|lsn| *lsn < top && !valid.iter().any(|(a, b)| (*a..=*b).contains(lsn)))
                .collect();
            let (Some(&min), Some(&max)) = (uncovered.iter().min(), uncovered.iter().max()) else {
                // Everything it held is above the other segments: replay brings it back.
                tracing::warn!(path = %file.path.display(), error = %file.error, "a damaged segment's records are all in the wal beyond the other segments; replaying them");
                quarantine_file(&file.path, &collection.name, quarantine)
                    .map_err(io_open(&file.path))?;
                return Ok(None);
            };
            if valid.iter().any(|(a, b)| min < *a && *b < max) {
                // Records of two gaps: more than this one segment is missing.
                return Err(refuse(file));
            }
            ((min, max), None, u128::from(ulid::Ulid::generate()))
        }
        None => return Err(refuse(file)),
    };
    let entries = rebuild_entries(records, collection, range);
    if expected.is_some_and(|expected| entries.len() as u64 != expected) || entries.is_empty() {
        tracing::error!(path = %file.path.display(), ?expected, found = entries.len(), "a damaged segment cannot be rebuilt: the wal no longer holds all of its records");
        return Err(refuse(file));
    }
    let (bytes, _) = segment::encode(&entries, block_bytes, write_id, Some(range), codec);
    quarantine_file(&file.path, &collection.name, quarantine)
        .and_then(|()| write_atomic(&file.path, &bytes))
        .map_err(io_open(&file.path))?;
    tracing::warn!(path = %file.path.display(), kept = %quarantine.display(), error = %file.error, records = entries.len(), "rebuilt a damaged local segment from the wal");
    let meta = SegmentMeta {
        id: file.id,
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(&bytes),
        min_lsn: range.0,
        max_lsn: range.1,
        records: entries.len() as u64,
        write_id: ulid::Ulid::from(write_id).to_string(),
    };
    Ok(Some(Arc::new(Segment {
        meta,
        local_path: file.path,
        state: Mutex::new(SegmentState {
            residency: Residency::Resident(Arc::new(entries)),
            durability: Durability::Pending,
            has_local_file: true,
        }),
    })))
}

/// Freezes memtables older than `flush_interval`, and the oldest ones while the WAL is past
/// `max_wal_bytes`; publishes writes whose writers went away before doing it themselves.
async fn flush_task(shared: Weak<Shared>) {
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

async fn compaction_task(shared: Weak<Shared>) {
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

impl Shared {
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

    async fn persist_catalog(&self) -> Result<(), CollectionError> {
        let _guard = self.catalog_write.lock().await;
        let dropped = self.dropped.lock().clone();
        self.write_catalog(self.catalog_entries(), dropped).await
    }

    /// The catalog entries of the live collections.
    fn catalog_entries(&self) -> Vec<CatalogEntry> {
        self.collections
            .read()
            .values()
            .map(|c| CatalogEntry {
                name: c.name.clone(),
                policy: c.policy,
                incarnation: c.incarnation,
            })
            .collect()
    }

    /// Writes the catalog durably; the caller holds `catalog_write`.
    async fn write_catalog(
        &self,
        collections: Vec<CatalogEntry>,
        dropped: Vec<CatalogEntry>,
    ) -> Result<(), CollectionError> {
        let file = CatalogFile {
            next_incarnation: *self.next_incarnation.lock(),
            lsn_floor: self.wal.last_lsn(),
            collections,
            dropped,
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        let path = self.catalog_path.clone();
        blocking(move || {
            write_atomic(&path, &bytes).map_err(|source| CollectionError::Io { path, source })
        })
        .await
    }

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

    fn maybe_schedule_flush(self: &Arc<Self>, collection: &Arc<Collection>) {
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
                residency: if collection.policy == Policy::S3Only {
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
        let wal = self.wal.clone();
        if let Err(error) = blocking(move || wal.trim(covered)).await {
            tracing::warn!(%error, "could not delete covered wal files");
        }
    }

    /// Applies `change` to the current manifest and commits it as the next version.
    pub(crate) async fn commit_manifest(
        &self,
        change: impl FnOnce(&mut Manifest),
    ) -> Result<(), crate::remote::CommitError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        if let Some(fenced) = self.fenced.lock().clone() {
            return Err(fenced.into());
        }
        if self.lock.lock().is_none() {
            // Closed: the directory (and the prefix) may belong to another store now.
            return Err(crate::remote::RemoteError::closed().into());
        }
        if !self.claimed.load(Ordering::Acquire) {
            return Err(crate::remote::RemoteError::unclaimed().into());
        }
        let mut current = self.manifest.lock().await;
        let epoch = remote.epoch();
        if self.manifest_uncertain.load(Ordering::Acquire) {
            // An earlier commit failed: it may have landed after all, and another writer may
            // have claimed the prefix since (at the version we did not get). Read the newest
            // before writing: another epoch there fences us; our own landed attempt is skipped.
            let newest = remote
                .latest_manifest()
                .await
                .map_err(crate::remote::CommitError::Remote)?;
            match newest {
                Some(newest) if newest.epoch == epoch && newest.writer == remote.writer => {
                    current.version = current.version.max(newest.version);
                }
                newest => {
                    let version = newest.map_or(0, |m| m.version);
                    return Err(self.fence(Fenced { version }).into());
                }
            }
            self.manifest_uncertain.store(false, Ordering::Release);
        }
        let mut next = current.clone();
        change(&mut next);
        self.include_live_collections(&mut next);
        // A dropped incarnation never goes back into the manifest (an upload of it may finish
        // after the drop).
        leave_out_dropped(&mut next, &self.dropped.lock());
        next.version = current.version + 1;
        next.epoch = epoch;
        next.writer.clone_from(&remote.writer);
        match remote.commit(&next).await {
            Ok(()) => {
                let version = next.version;
                *current = next;
                // Before any caller deletes local files the commit made redundant.
                self.save_manifest_copy(&current).await;
                drop(current);
                // The newest MANIFESTS_KEPT stay; one whose delete fails is left to orphan
                // collection.
                if version > MANIFESTS_KEPT {
                    remote.delete_manifest(version - MANIFESTS_KEPT).await;
                }
                Ok(())
            }
            Err(crate::remote::CommitError::Fenced(fenced)) => Err(self.fence(fenced).into()),
            Err(other) => {
                // The put may have landed all the same (a lost response, a timeout), or not.
                // The version is not retired blindly (a new writer may claim it, and our next
                // version would then hide its claim): the next commit reads the newest first.
                self.manifest_uncertain.store(true, Ordering::Release);
                Err(other)
            }
        }
    }

    /// Writes `data_dir/manifest.json`, the copy of the last committed manifest an open during an
    /// outage starts from. On failure the copy is removed (a stale copy would miss segments whose
    /// local files the commit let go), so such an open is refused until a later commit writes it.
    pub(crate) async fn save_manifest_copy(&self, manifest: &Manifest) {
        let bytes = serde_json::to_vec(manifest).unwrap_or_default();
        let path = self.manifest_copy_path.clone();
        let saved = blocking(move || {
            write_atomic(&path, &bytes).inspect_err(|_| {
                let _ = fs::remove_file(&path);
            })
        })
        .await;
        if let Err(error) = saved {
            tracing::error!(%error, "could not write the local manifest copy; an open during an object-store outage is refused until the next commit writes it");
        }
    }

    /// Adds an empty entry for every live object-store collection the manifest lacks (or holds
    /// under an older incarnation), so that a collection is in the manifest from its creation,
    /// not from its first segment.
    fn include_live_collections(&self, manifest: &mut Manifest) {
        for collection in self.collections.read().values() {
            if collection.policy.uses_object_store() {
                Shared::add_to_manifest(manifest, collection, &[]);
            }
        }
    }

    /// Whether the manifest in force is behind the catalog: it lists a dropped incarnation, or,
    /// with `new_collections`, lacks a live object-store collection (or holds it under an older
    /// incarnation). Never while the prefix is unclaimed (nothing can be committed then; the
    /// claim reconciles).
    pub(crate) async fn manifest_behind(&self, new_collections: bool) -> bool {
        if self.remote.is_none() || !self.is_claimed() {
            return false;
        }
        let manifest = self.manifest.lock().await;
        let dropped = self.dropped.lock().clone();
        let lists_dropped = manifest.collections.iter().any(|(name, entry)| {
            dropped
                .iter()
                .any(|t| t.name == *name && t.incarnation == entry.incarnation)
        });
        lists_dropped
            || (new_collections
                && self.collections.read().values().any(|c| {
                    c.policy.uses_object_store()
                        && !c.dropped.load(Ordering::Acquire)
                        && manifest
                            .collections
                            .get(&c.name)
                            .is_none_or(|entry| entry.incarnation < c.incarnation)
                }))
    }

    /// Whether the store holds its object-store prefix (always, without an object store).
    pub(crate) fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Records that another writer claimed the prefix: uploads, commits and orphan collection
    /// stop, and writes are refused.
    pub(crate) fn fence(&self, fenced: Fenced) -> Fenced {
        tracing::error!(
            version = fenced.version,
            "fenced by another writer; uploads stop"
        );
        *self.fenced.lock() = Some(fenced.clone());
        self.instruments.fenced.set(1);
        self.progress.notify_waiters();
        fenced
    }

    /// Adds `segments` of `collection` to the manifest entry of the collection.
    pub(crate) fn add_to_manifest(
        manifest: &mut Manifest,
        collection: &Collection,
        segments: &[SegmentMeta],
    ) {
        // A dropped incarnation's segments never enter a manifest, and an older incarnation
        // never replaces a newer one's entry.
        if collection.dropped.load(Ordering::Acquire)
            || manifest
                .collections
                .get(&collection.name)
                .is_some_and(|entry| entry.incarnation > collection.incarnation)
        {
            return;
        }
        let entry = manifest
            .collections
            .entry(collection.name.clone())
            .or_insert_with(|| ManifestCollection {
                incarnation: collection.incarnation,
                policy: collection.policy,
                segments: Vec::new(),
            });
        if entry.incarnation != collection.incarnation {
            *entry = ManifestCollection {
                incarnation: collection.incarnation,
                policy: collection.policy,
                segments: Vec::new(),
            };
        }
        for meta in segments {
            if !entry.segments.iter().any(|s| s.id == meta.id) {
                entry.segments.push(meta.clone());
            }
        }
    }

    /// Marks segments committed: `s3_only` ones leave memory, local files go.
    pub(crate) async fn after_commit(&self, collection: &Collection, segments: &[Arc<Segment>]) {
        let mut files = Vec::new();
        for segment in segments {
            let mut state = segment.state.lock();
            if collection.policy == Policy::S3Only {
                // The object holds the same bytes as the file: its block index stays valid.
                state.residency = match &state.residency {
                    Residency::LocalFile(index) => Residency::Remote(Some(Arc::clone(index))),
                    _ => Residency::Remote(None),
                };
            }
            if state.has_local_file {
                state.has_local_file = false;
                files.push(segment.local_path.clone());
            }
        }
        if !files.is_empty() {
            blocking(move || {
                for file in files {
                    let _ = fs::remove_file(file);
                }
            })
            .await;
        }
        // Committed last: whoever sees the backlog at zero sees the local files gone too.
        for segment in segments {
            segment.state.lock().durability = Durability::Committed;
        }
    }

    /// Reads `range` (or all) of a segment from the object store, unless the upload breaker says
    /// the store is down: then reads answer from memory and the cache only, without waiting on a
    /// failing store. Once the breaker's open duration has passed, this read is its half-open
    /// trial (bounded by `upload.attempt_timeout`) and its outcome closes or reopens the breaker:
    /// a store with nothing to upload finds its way back too.
    async fn remote_read(
        &self,
        collection: &Collection,
        segment: &Segment,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, ReadError> {
        use mainstay_resilience::BreakerState;
        let remote = self
            .remote
            .as_ref()
            .ok_or_else(|| ReadError::Unavailable("no object store is configured".to_owned()))?;
        let open = || ReadError::Unavailable("the object-store circuit breaker is open".to_owned());
        let trial = match self.breaker.state() {
            BreakerState::ForcedOpen => return Err(open()),
            BreakerState::Open => Some(self.breaker.try_acquire().map_err(|_| open())?),
            _ => None,
        };
        let path = remote.segment_path(&collection.name, &segment.meta.id);
        let read = async {
            match range {
                Some(range) => remote.get_range(&path, range).await,
                None => remote.get(&path).await,
            }
        };
        let Some(trial) = trial else {
            return read
                .await
                .map_err(|e| ReadError::Unavailable(e.to_string()));
        };
        let limit = self.config.upload.attempt_timeout;
        match tokio::time::timeout(limit, read).await {
            Ok(Ok(bytes)) => {
                trial.success();
                Ok(bytes)
            }
            Ok(Err(error)) => {
                if error.kind == remote::ErrorKind::Transient {
                    trial.failure();
                } else {
                    // The store answered (a refusal is not an outage).
                    trial.success();
                }
                Err(ReadError::Unavailable(error.to_string()))
            }
            Err(_) => {
                trial.failure();
                Err(ReadError::Unavailable(format!(
                    "the object store did not answer within {limit:?}"
                )))
            }
        }
    }

    /// The residency of a segment, downloading a `memory_s3` segment whole on first use.
    async fn resident_or_index(
        &self,
        collection: &Collection,
        segment: &Segment,
    ) -> Result<Residency, ReadError> {
        let residency = segment.state.lock().residency.clone();
        match residency {
            Residency::Resident(_) | Residency::Remote(Some(_)) | Residency::LocalFile(_) => {
                Ok(residency)
            }
            Residency::Remote(None) => {
                let corrupt = |source: SegmentError| ReadError::Corrupt {
                    collection: collection.name.clone(),
                    source,
                };
                let residency = if collection.policy == Policy::S3Only {
                    let size = segment.meta.size;
                    let tail = self
                        .remote_read(
                            collection,
                            segment,
                            Some(size.saturating_sub(FOOTER_LEN as u64)..size),
                        )
                        .await?;
                    let footer = segment::decode_footer(&tail).map_err(corrupt)?;
                    let index = self
                        .remote_read(
                            collection,
                            segment,
                            Some(
                                footer.index_offset
                                    ..footer.index_offset + u64::from(footer.index_len),
                            ),
                        )
                        .await?;
                    Residency::Remote(Some(Arc::new(
                        segment::decode_index(&index, &footer).map_err(corrupt)?,
                    )))
                } else {
                    let bytes = self.remote_read(collection, segment, None).await?;
                    if crc32c::crc32c(&bytes) != segment.meta.crc32c {
                        return Err(corrupt(SegmentError::Corrupt("object")));
                    }
                    let (entries, _, _) = segment::decode_all(&bytes).map_err(corrupt)?;
                    Residency::Resident(Arc::new(entries))
                };
                segment.state.lock().residency = residency.clone();
                Ok(residency)
            }
        }
    }

    /// One block of a remote segment, through the cache.
    async fn block(
        &self,
        collection: &Collection,
        segment: &Segment,
        index: &[segment::BlockRef],
        number: usize,
    ) -> Result<Arc<Vec<(String, Entry)>>, ReadError> {
        if let Some(block) = self.cache.lock().get(&segment.meta.id, number) {
            self.instruments.cache_hits.inc();
            return Ok(block);
        }
        self.instruments.cache_misses.inc();
        let block = index.get(number).ok_or(ReadError::Corrupt {
            collection: collection.name.clone(),
            source: SegmentError::Corrupt("index"),
        })?;
        let bytes = match self.local_block(segment, block).await {
            Some(bytes) => bytes,
            None => {
                self.remote_read(
                    collection,
                    segment,
                    Some(block.offset..block.offset + u64::from(block.len)),
                )
                .await?
            }
        };
        let entries = Arc::new(segment::decode_block(&bytes, block).map_err(|source| {
            ReadError::Corrupt {
                collection: collection.name.clone(),
                source,
            }
        })?);
        // The cache holds decoded records: count what they occupy, not the stored size.
        let size = entries.iter().map(|(id, entry)| entry.size(id)).sum();
        self.cache
            .lock()
            .insert(&segment.meta.id, number, Arc::clone(&entries), size);
        Ok(entries)
    }

    /// A block read from the segment's local file while it has one (blocking pool); `None` when
    /// it has none or the read failed (the commit may have just deleted it: the object store has
    /// the same bytes then).
    async fn local_block(&self, segment: &Segment, block: &segment::BlockRef) -> Option<Bytes> {
        if !segment.state.lock().has_local_file {
            return None;
        }
        let path = segment.local_path.clone();
        let (offset, len) = (block.offset, block.len as usize);
        blocking(move || {
            use std::os::unix::fs::FileExt as _;
            let file = File::open(path).ok()?;
            let mut buffer = vec![0u8; len];
            file.read_exact_at(&mut buffer, offset).ok()?;
            Some(Bytes::from(buffer))
        })
        .await
    }

    pub(crate) async fn segment_lookup(
        &self,
        collection: &Collection,
        segment: &Segment,
        id: &str,
    ) -> Result<Option<Entry>, ReadError> {
        match self.resident_or_index(collection, segment).await? {
            Residency::Resident(entries) => Ok(lookup_resident(&entries, id)),
            Residency::Remote(None) => Ok(None),
            Residency::Remote(Some(index)) | Residency::LocalFile(index) => {
                let Some(number) = index
                    .iter()
                    .position(|b| b.first.as_str() <= id && id <= b.last.as_str())
                else {
                    return Ok(None);
                };
                let block = self.block(collection, segment, &index, number).await?;
                Ok(lookup_resident(&block, id))
            }
        }
    }

    /// Up to `take` entries of a segment in the listing's range, and whether it had more.
    async fn segment_range(
        &self,
        collection: &Collection,
        segment: &Segment,
        range: &ListRange<'_>,
        cut_short: &mut bool,
    ) -> Result<(Vec<(String, Entry)>, bool), ReadError> {
        let ListRange {
            start,
            prefix,
            after,
            take,
        } = *range;
        let mut out = Vec::new();
        let push = |id: &String, entry: &Entry, out: &mut Vec<(String, Entry)>| -> Option<bool> {
            if !id.starts_with(prefix) && id.as_str() > prefix {
                return Some(false);
            }
            if !id.starts_with(prefix) || after.is_some_and(|a| id.as_str() <= a) {
                return None;
            }
            if out.len() == take {
                return Some(true);
            }
            out.push((id.clone(), entry.clone()));
            None
        };
        match self.resident_or_index(collection, segment).await? {
            Residency::Resident(entries) => {
                let from = entries.partition_point(|(id, _)| id.as_str() < start);
                for (id, entry) in entries.iter().skip(from) {
                    if let Some(more) = push(id, entry, &mut out) {
                        return Ok((out, more));
                    }
                }
                Ok((out, false))
            }
            Residency::Remote(None) => Ok((out, false)),
            Residency::Remote(Some(index)) | Residency::LocalFile(index) => {
                let from = index.partition_point(|b| b.last.as_str() < start);
                for number in from..index.len() {
                    let block = match self.block(collection, segment, &index, number).await {
                        Ok(block) => block,
                        // What the cache gave so far is served, marked as cut short here, so
                        // the page stops at it; the listing reports itself degraded.
                        Err(ReadError::Unavailable(reason)) if !out.is_empty() => {
                            tracing::debug!(%reason, "listing a segment partly from the cache");
                            *cut_short = true;
                            return Ok((out, true));
                        }
                        Err(error) => return Err(error),
                    };
                    for (id, entry) in block.iter() {
                        if id.as_str() < start {
                            continue;
                        }
                        if let Some(more) = push(id, entry, &mut out) {
                            return Ok((out, more));
                        }
                    }
                }
                Ok((out, false))
            }
        }
    }

    /// All entries of a segment (for compaction).
    pub(crate) async fn segment_entries(
        &self,
        collection: &Collection,
        segment: &Segment,
    ) -> Result<Arc<Vec<(String, Entry)>>, MaintenanceError> {
        let to_error = |error: ReadError| match error {
            ReadError::Corrupt { source, .. } => MaintenanceError::Corrupt(source),
            other => MaintenanceError::ObjectStore(other.to_string()),
        };
        match self
            .resident_or_index(collection, segment)
            .await
            .map_err(to_error)?
        {
            Residency::Resident(entries) => Ok(entries),
            Residency::Remote(None) => Ok(Arc::new(Vec::new())),
            Residency::Remote(Some(index)) | Residency::LocalFile(index) => {
                let mut all = Vec::new();
                for number in 0..index.len() {
                    all.extend(
                        self.block(collection, segment, &index, number)
                            .await
                            .map_err(to_error)?
                            .iter()
                            .cloned(),
                    );
                }
                Ok(Arc::new(all))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> StoreConfig {
        let mut config = StoreConfig {
            data_dir: dir.join("data"),
            ..StoreConfig::default()
        };
        config.compaction.enabled = false;
        config
    }

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    /// A write whose fdatasync failed is refused, never served, and never replayed after a
    /// restart although its frame reached the file (as the page cache may carry it to disk).
    #[tokio::test]
    async fn a_write_whose_fsync_failed_is_never_served_nor_replayed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (store, _) = Store::open(config(dir.path())).await.expect("opens");
        store
            .create_collection("c", Policy::Memory)
            .await
            .expect("created");
        store
            .put("c", "k", bytes("v1"))
            .await
            .expect("acknowledged");
        store.shared.wal.fail_syncs();
        let failed = store.put("c", "k", bytes("v2")).await;
        assert!(matches!(failed, Err(WriteError::Wal(_))), "{failed:?}");
        let again = store.put("c", "other", bytes("v3")).await;
        assert!(matches!(again, Err(WriteError::Wal(_))), "{again:?}");
        assert!(store.wal_failure().is_some());
        assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v1")));
        assert_eq!(store.get("c", "other").await.expect("reads"), None);
        let page = store.list("c", &ListQuery::default()).await.expect("lists");
        assert_eq!(
            page.records,
            vec![Record {
                id: "k".to_owned(),
                value: bytes("v1")
            }]
        );
        assert!(store.flush().await.is_ok());
        drop(store);

        let (store, report) = Store::open(config(dir.path())).await.expect("reopens");
        assert_eq!(report.wal.poisoned_records, 1, "{report:?}");
        assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v1")));
        assert_eq!(store.get("c", "other").await.expect("reads"), None);
        store
            .put("c", "k", bytes("v4"))
            .await
            .expect("writes again");
        drop(store);
        // The poisoned frame's file was trimmed (its one good record is in a segment now).
        let (store, _) = Store::open(config(dir.path())).await.expect("reopens");
        assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v4")));
        assert_eq!(store.get("c", "other").await.expect("reads"), None);
    }

    /// Background compaction merges only LSN-adjacent segments: two small segments of one size
    /// tier with a large one between them stay apart, so a point read still finds the newest
    /// value and agrees with the listing (issue 12, point 1).
    #[tokio::test]
    async fn compaction_never_merges_segments_with_a_newer_one_between_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cfg = config(dir.path());
        cfg.memtable_bytes = 65_536;
        cfg.compaction.min_segments = 2;
        let reopen = |cfg: StoreConfig| async move {
            let (store, _) = Store::open(cfg).await.expect("opens");
            store
        };
        let store = reopen(cfg.clone()).await;
        store
            .create_collection("c", Policy::Memory)
            .await
            .expect("created");
        store.put("c", "k", bytes("v1")).await.expect("put");
        store.close(Duration::from_secs(5)).await.expect("closes");
        let store = reopen(cfg.clone()).await;
        store.put("c", "k", bytes("v2")).await.expect("put");
        store.delete("c", "gone").await.expect("delete");
        for i in 0..200 {
            let value = Bytes::from(vec![b'x'; 1024]);
            store
                .put("c", &format!("big-{i:03}"), value)
                .await
                .expect("put");
        }
        store.close(Duration::from_secs(5)).await.expect("closes");
        let store = reopen(cfg.clone()).await;
        store.put("c", "x", bytes("x")).await.expect("put");
        store.close(Duration::from_secs(5)).await.expect("closes");
        let store = reopen(cfg).await;
        let collection = store.shared.collection("c").expect("exists");
        let sizes = |c: &Collection| {
            c.data
                .read()
                .segments
                .iter()
                .map(|s| (s.meta.size, s.meta.min_lsn, s.meta.max_lsn))
                .collect::<Vec<_>>()
        };
        let mut merged = 0;
        for _ in 0..4 {
            merged += store
                .shared
                .compact(&collection, false)
                .await
                .expect("compacts");
        }
        assert!(
            merged >= 2,
            "the adjacent segments of one tier were merged: {:?}",
            sizes(&collection)
        );
        assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v2")));
        let page = store
            .list(
                "c",
                &ListQuery {
                    prefix: Some("k".to_owned()),
                    ..ListQuery::default()
                },
            )
            .await
            .expect("lists");
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].value, bytes("v2"));
        let data = collection.data.read();
        let mut last_max = 0;
        for segment in &data.segments {
            assert!(
                segment.meta.min_lsn > last_max,
                "segment LSN ranges overlap: {:?}",
                data.segments
                    .iter()
                    .map(|s| (s.meta.min_lsn, s.meta.max_lsn))
                    .collect::<Vec<_>>()
            );
            last_max = segment.meta.max_lsn;
        }
    }

    /// `s3_only` segments waiting for upload are read from their files through the bounded
    /// block cache, never held in memory whole; reads stay right across the commit that deletes
    /// the files (issue 12, point 9).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_s3_only_segments_are_served_from_their_files() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cfg = config(dir.path());
        cfg.object_store_url = Some("memory://".to_owned());
        cfg.memtable_bytes = 4096;
        cfg.block_bytes = 512;
        cfg.cache_bytes = 2048;
        let (store, _) = Store::open(cfg).await.expect("opens");
        store
            .create_collection("cold", Policy::S3Only)
            .await
            .expect("created");
        // Uploads wait while the breaker is forced open.
        store.breaker().force_open();
        let value = |i: usize| Bytes::from(format!("value-{i:04}-{}", "y".repeat(40)));
        for i in 0..300 {
            store
                .put("cold", &format!("k{i:04}"), value(i))
                .await
                .expect("put");
        }
        store.flush().await.expect("flushed");
        let collection = store.shared.collection("cold").expect("exists");
        let segments = collection.data.read().segments.clone();
        assert!(segments.len() > 1, "several segments");
        for segment in &segments {
            let state = segment.state.lock();
            assert_eq!(state.durability, Durability::Pending);
            assert!(
                matches!(state.residency, Residency::LocalFile(_)),
                "{:?}",
                state.residency
            );
        }
        let check = |store: Store| async move {
            for i in (0..300).step_by(7) {
                assert_eq!(
                    store.get("cold", &format!("k{i:04}")).await.expect("reads"),
                    Some(value(i))
                );
            }
            let page = store
                .list(
                    "cold",
                    &ListQuery {
                        limit: Some(1000),
                        ..ListQuery::default()
                    },
                )
                .await
                .expect("lists");
            assert_eq!(page.records.len(), 300);
            assert!(!page.degraded);
            assert!(store.shared.cache.lock().bytes() <= 2048);
        };
        check(store.clone()).await;
        store.breaker().reset();
        store
            .wait_uploaded(Duration::from_secs(10))
            .await
            .expect("uploaded");
        for segment in &collection.data.read().segments {
            let state = segment.state.lock();
            assert_eq!(state.durability, Durability::Committed);
            assert!(!state.has_local_file);
        }
        check(store).await;
    }
}
