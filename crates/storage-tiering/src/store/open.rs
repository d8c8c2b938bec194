//! Opening a store: the steps of recovery, in order. [`Store::open_with`] names them; each step
//! is a function of its own below, in the order it runs.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use mainstay_clock::{SharedClock, TokioClock};
use mainstay_dlq::{Dlq, DlqConfig, QueueConfig};
use mainstay_journal::fs::FileSystem;
use mainstay_resilience::{CircuitBreaker, RetryBudget};
use object_store::ObjectStore;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::cache::BlockCache;
use crate::collection::{Collection, Data, Durability, Residency, Segment, SegmentState};
use crate::config::{StoreConfig, TieringPolicy};
use crate::error::{CollectionError, OpenError};
use crate::metrics::{Instruments, StorageMetrics};
use crate::names::valid_collection_name;
use crate::orphans;
use crate::remote::{self, Manifest, Remote};
use crate::segment::SegmentMeta;
use crate::upload::{self, UploadQueue};
use crate::wal::{self, Wal};

use super::*;

/// The collections recovered from the catalog, the manifest and the local segment files.
struct Loaded {
    collections: BTreeMap<String, Arc<Collection>>,
    /// Segments waiting for upload, in the order they are queued.
    pending: Vec<(String, Arc<Segment>)>,
    /// Damaged local segments to rebuild from the WAL once it is read.
    to_rebuild: Vec<(String, Damaged)>,
}

/// What the object store (or, during an outage, the local copy) says at open.
struct Claimed {
    manifest: Manifest,
    /// The prefix is claimed: uploads, commits and orphan collection may run.
    claimed: bool,
}

impl Store {
    pub(super) async fn open_with(builder: StoreBuilder) -> Result<Store, OpenError> {
        let config = builder.config;
        config.validate()?;
        config.check_features()?;
        let data_dir = config.data_dir.clone();
        let fs = builder.fs;
        let lock = lock_data_dir(&*fs, &data_dir)?;
        let instruments = builder
            .metrics
            .unwrap_or_else(StorageMetrics::unregistered)
            .instruments(&builder.name);
        instruments
            .backlog_limit_bytes
            .set(i64::try_from(config.upload.max_backlog_bytes).unwrap_or(i64::MAX));
        let clock = builder.clock.unwrap_or_else(|| TokioClock::new().shared());
        let mut report = StoreRecovery::default();

        let remote = open_remote(builder.object_store, &config, &instruments)?;
        let catalog_path = data_dir.join("catalog.json");
        let mut catalog = read_catalog(&*fs, &catalog_path)?;
        let manifest_copy_path = data_dir.join("manifest.json");
        let Claimed { manifest, claimed } = claim_prefix(
            remote.as_deref(),
            &mut catalog,
            &config,
            (&fs, &manifest_copy_path),
            &mut report,
        )
        .await?;
        adopt_manifest_collections(&manifest, &mut catalog);
        let dlq = open_dlq(builder.dlq, builder.dlq_metrics, &config, &fs).await?;
        let pinned_keys: HashSet<String> =
            dlq_entries(&dlq).into_iter().map(|(_, key)| key).collect();

        let segments_dir = data_dir.join("segments");
        fs::create_dir_all(&segments_dir).map_err(io_open(&segments_dir))?;
        let Loaded {
            collections,
            mut pending,
            to_rebuild,
        } = load_collections(
            &catalog,
            &manifest,
            &segments_dir,
            &pinned_keys,
            &mut report,
        )
        .await?;
        report.requeued_segments = pending.len();

        let quarantine_dir = data_dir.join("corrupt");
        let (wal, records, wal_report) = {
            let lsn_floor = lsn_floor(&collections, &manifest, catalog.lsn_floor);
            let (wal_dir, instruments) = (data_dir.join("wal"), instruments.clone());
            let (segment_bytes, mode) = (config.wal_segment_bytes, config.wal_recovery);
            let (quarantine, fs) = (quarantine_dir.clone(), Arc::clone(&fs));
            blocking(move || {
                Wal::open(
                    fs,
                    &wal_dir,
                    segment_bytes,
                    lsn_floor,
                    (mode, &quarantine),
                    instruments,
                )
            })
            .await?
        };
        instruments
            .wal_damage
            .set(i64::try_from(wal_report.damage.len()).unwrap_or(i64::MAX));
        let wal_damage = Mutex::new(wal_report.damage.clone());
        report.wal = wal_report;
        rebuild_from_wal(
            to_rebuild,
            &collections,
            &records,
            &pinned_keys,
            (&config, &quarantine_dir),
            &mut pending,
            &mut report,
        )
        .await?;
        replay(records, &collections, &mut report);

        let (breaker, budget) = upload_guards(
            &builder.name,
            &config,
            &clock,
            builder.resilience_metrics.as_ref(),
        )?;
        let (clock_origin, wall_origin) = (clock.now(), SystemTime::now());
        report.summary().log(&builder.name, &config.data_dir);
        tracing::debug!(store = %builder.name, recovery = ?report, "record store opened");
        let shared = Arc::new(Shared {
            recovery: report,
            compaction: RwLock::new(config.compaction.clone()),
            wal,
            wal_damage,
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
            cache: Mutex::new(BlockCache::new(config.cache_bytes)),
            fenced: Mutex::new(None),
            manifest_uncertain: AtomicBool::new(false),
            claimed: AtomicBool::new(claimed),
            manifest_copy_path,
            closed: AtomicBool::new(false),
            segments_dir,
            catalog_path,
            fs,
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
            leases: Arc::default(),
        });
        shared.persist_catalog().await.map_err(|e| match e {
            CollectionError::Io { path, source } => OpenError::Io { path, source },
            other => OpenError::Manifest(other.to_string()),
        })?;
        start(&shared, pending, claimed).await;
        let store = Store { shared };
        // Memtables replayed past the bound are frozen now rather than at the next write.
        for collection in store.shared.collections.read().values() {
            store.shared.maybe_schedule_flush(collection);
        }
        Ok(store)
    }
}

/// Takes the data directory's advisory lock (`LOCK`, `mainstay-journal`'s `DirLock`): one store
/// per directory; it dies with the process.
fn lock_data_dir(
    fs: &dyn FileSystem,
    data_dir: &Path,
) -> Result<mainstay_journal::DirLock, OpenError> {
    mainstay_journal::create_dir_durable(fs, data_dir).map_err(|error| OpenError::Io {
        path: error.path.clone(),
        source: std::io::Error::new(error.source.kind(), error),
    })?;
    mainstay_journal::DirLock::acquire_with(fs, data_dir).map_err(|error| match error {
        mainstay_journal::LockError::Io { path, source } => OpenError::Io { path, source },
        _ => OpenError::Locked {
            path: data_dir.join(mainstay_journal::LOCK_FILE),
        },
    })
}

/// The object store, given to the builder or opened from `object_store_url`.
fn open_remote(
    given: Option<(Arc<dyn ObjectStore>, String)>,
    config: &StoreConfig,
    instruments: &Instruments,
) -> Result<Option<Arc<Remote>>, OpenError> {
    let object_store = match given {
        Some(given) => Some(given),
        None => config
            .object_store_url
            .as_deref()
            .map(remote::open_url)
            .transpose()?,
    };
    Ok(object_store
        .map(|(store, prefix)| Arc::new(Remote::new(store, &prefix, instruments.clone()))))
}

/// The catalog: local collections, and tombstones of dropped ones (empty when there is none).
fn read_catalog(fs: &dyn FileSystem, catalog_path: &Path) -> Result<CatalogFile, OpenError> {
    Ok(read_json(fs, catalog_path)?.unwrap_or_default())
}

/// The JSON file at `path`, `None` when there is none; a file that does not parse is an
/// `InvalidData` error naming it.
fn read_json<T: serde::de::DeserializeOwned>(
    fs: &dyn FileSystem,
    path: &Path,
) -> Result<Option<T>, OpenError> {
    match fs.read(path) {
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

/// Claims the object-store prefix by committing the next manifest version, which fences any
/// older writer; saves the claimed manifest as the local copy. During an outage, resumes from
/// the local copy of the last committed manifest without claiming (refused without a copy).
async fn claim_prefix(
    remote: Option<&Remote>,
    catalog: &mut CatalogFile,
    config: &StoreConfig,
    (fs, manifest_copy_path): (&Arc<dyn FileSystem>, &Path),
    report: &mut StoreRecovery,
) -> Result<Claimed, OpenError> {
    let Some(remote) = remote else {
        return Ok(Claimed {
            manifest: Manifest::default(),
            claimed: true,
        });
    };
    let mut read = None;
    let claim = remote.claim(None, |newest| {
        read = (newest.version > 0).then_some(newest.version);
        leave_out_dropped(newest, &catalog.dropped);
    });
    let claim = tokio::time::timeout(config.upload.attempt_timeout, claim)
        .await
        .unwrap_or_else(|_| Err(remote::RemoteError::timeout().into()));
    match claim {
        Ok(manifest) => {
            report.manifest_version = read;
            // The claimed manifest lists no dropped incarnation: the tombstones have done their
            // job.
            catalog.dropped.clear();
            let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
            let (path, fs) = (manifest_copy_path.to_path_buf(), Arc::clone(fs));
            blocking(move || write_atomic_on(&*fs, &path, &bytes))
                .await
                .map_err(io_open(manifest_copy_path))?;
            Ok(Claimed {
                manifest,
                claimed: true,
            })
        }
        Err(remote::CommitError::Remote(error)) if error.kind == remote::ErrorKind::Transient => {
            // The object store is down: start from this directory's copy of the last committed
            // manifest, without claiming the prefix (no uploads, commits or orphan collection)
            // until the store answers. Without a copy nothing says what the prefix holds: refuse.
            let Some(mut manifest) = read_json::<Manifest>(&**fs, manifest_copy_path)? else {
                return Err(OpenError::ObjectStoreUnavailable {
                    reason: error.to_string(),
                });
            };
            tracing::warn!(%error, version = manifest.version, "the object store cannot be read; starting from the local manifest copy, uploads wait until it answers");
            leave_out_dropped(&mut manifest, &catalog.dropped);
            report.manifest_version = Some(manifest.version);
            report.awaiting_object_store = true;
            Ok(Claimed {
                manifest,
                claimed: false,
            })
        }
        Err(remote::CommitError::Fenced(fenced)) => Err(OpenError::Fenced(fenced)),
        Err(remote::CommitError::Remote(error)) => Err(OpenError::Manifest(error.to_string())),
    }
}

/// Adds to the catalog the object-store collections the manifest lists and it does not.
fn adopt_manifest_collections(manifest: &Manifest, catalog: &mut CatalogFile) {
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
}

/// The DLQ given to the builder (its segment queue configured), or one of its own under
/// `data_dir/dlq`.
async fn open_dlq(
    given: Option<Dlq>,
    metrics: Option<mainstay_dlq::DlqMetrics>,
    config: &StoreConfig,
    fs: &Arc<dyn FileSystem>,
) -> Result<Dlq, OpenError> {
    let retain_all = QueueConfig::retain_all(config.upload.dlq_capacity);
    if let Some(dlq) = given {
        dlq.set_queue_config(DLQ_QUEUE, retain_all)
            .map_err(|error| {
                crate::config::ConfigError::new("upload.dlq_capacity", error.value, error.allowed)
            })?;
        return Ok(dlq);
    }
    let mut dlq_config = DlqConfig::default();
    dlq_config.queues.insert(DLQ_QUEUE.to_owned(), retain_all);
    dlq_config.total_capacity = dlq_config.total_capacity.max(config.upload.dlq_capacity);
    let mut dlq_builder = Dlq::builder(config.data_dir.join("dlq"))
        .config(dlq_config)
        .file_system(Arc::clone(fs));
    if let Some(metrics) = metrics {
        dlq_builder = dlq_builder.metrics(metrics);
    }
    Ok(dlq_builder.open().await?)
}

/// Every collection of the catalog with its verified local segments and the manifest's
/// committed ones.
async fn load_collections(
    catalog: &CatalogFile,
    manifest: &Manifest,
    segments_dir: &Path,
    pinned_keys: &HashSet<String>,
    report: &mut StoreRecovery,
) -> Result<Loaded, OpenError> {
    let mut loaded = Loaded {
        collections: BTreeMap::new(),
        pending: Vec::new(),
        to_rebuild: Vec::new(),
    };
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
        let data = load_segments(entry, &committed, dir, pinned_keys, &mut loaded, report).await?;
        loaded.collections.insert(
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
    Ok(loaded)
}

/// One collection's segments: its local files (verified; damaged ones set apart in `loaded`
/// unless committed), the committed ones it has no file of, minus what a crashed compaction
/// left behind.
async fn load_segments(
    entry: &CatalogEntry,
    committed: &BTreeMap<String, SegmentMeta>,
    dir: PathBuf,
    pinned_keys: &HashSet<String>,
    loaded: &mut Loaded,
    report: &mut StoreRecovery,
) -> Result<Data, OpenError> {
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
            loaded.to_rebuild.push((entry.name.clone(), file));
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
            (TieringPolicy::S3Only, Durability::Committed) => Residency::Remote(None),
            (TieringPolicy::S3Only, _) => Residency::LocalFile(Arc::new(index)),
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
            loaded
                .pending
                .push((entry.name.clone(), Arc::clone(&segment)));
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
    // A compaction cut short by a crash leaves its output or its inputs behind: drop whichever
    // the other one holds in full, so that no two segments overlap.
    let stale: Vec<Arc<Segment>> = data
        .segments
        .iter()
        .filter(|s| superseded(&data.segments, s.meta.min_lsn, s.meta.max_lsn, Some(s)))
        .cloned()
        .collect();
    for segment in stale {
        tracing::info!(collection = %entry.name, segment = %segment.meta.id, "removing a segment a crashed compaction left behind");
        data.segments.retain(|s| !Arc::ptr_eq(s, &segment));
        loaded
            .pending
            .retain(|(_, p): &(String, Arc<Segment>)| !Arc::ptr_eq(p, &segment));
        if segment.state.lock().has_local_file {
            let doomed = segment.local_path.clone();
            blocking(move || fs::remove_file(doomed)).await.ok();
        }
    }
    Ok(data)
}

/// The floor of new LSNs: they must keep growing across restarts even when every WAL file was
/// trimmed, so they start above every LSN a segment holds (local or in the manifest, any
/// incarnation) and the catalog's floor.
fn lsn_floor(
    collections: &BTreeMap<String, Arc<Collection>>,
    manifest: &Manifest,
    catalog_floor: u64,
) -> u64 {
    collections
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
        .max(catalog_floor)
}

/// Rebuilds each damaged local segment from the WAL records of its range, or sets it aside when
/// a crashed compaction left it and another segment holds its data.
async fn rebuild_from_wal(
    to_rebuild: Vec<(String, Damaged)>,
    collections: &BTreeMap<String, Arc<Collection>>,
    records: &[wal::WalRecord],
    pinned_keys: &HashSet<String>,
    (config, quarantine_dir): (&StoreConfig, &Path),
    pending: &mut Vec<(String, Arc<Segment>)>,
    report: &mut StoreRecovery,
) -> Result<(), OpenError> {
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
            let quarantine = quarantine_dir.to_path_buf();
            blocking(move || quarantine_file(&file.path, &name, &quarantine))
                .await
                .map_err(io_open(quarantine_dir))?;
            continue;
        }
        let segment = {
            let blocks = (config.block_bytes, config.compression);
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
            let (collection, quarantine) = (Arc::clone(collection), quarantine_dir.to_path_buf());
            blocking(move || {
                rebuild_damaged(
                    &relevant,
                    &collection,
                    file,
                    (&valid, waiting),
                    blocks,
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
    Ok(())
}

/// Replays the WAL records above each collection's segments into its memtable.
fn replay(
    records: Vec<wal::WalRecord>,
    collections: &BTreeMap<String, Arc<Collection>>,
    report: &mut StoreRecovery,
) {
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
}

/// The upload circuit breaker and retry budget, named after the store.
fn upload_guards(
    name: &str,
    config: &StoreConfig,
    clock: &SharedClock,
    metrics: Option<&mainstay_resilience::ResilienceMetrics>,
) -> Result<(CircuitBreaker, RetryBudget), OpenError> {
    let mut breaker =
        CircuitBreaker::builder(&format!("{name}-uploads"), config.upload.breaker.clone())
            .clock(clock.clone());
    if let Some(metrics) = metrics {
        breaker = breaker.metrics(metrics.clone());
    }
    let breaker = breaker.build().map_err(|e| {
        OpenError::Config(crate::config::ConfigError {
            key: format!("upload.breaker.{}", e.key),
            value: e.value,
            allowed: e.allowed.to_owned(),
        })
    })?;
    let budget = RetryBudget::with_clock(config.upload.retry_budget.clone(), clock.clone())
        .map_err(|e| {
            OpenError::Config(crate::config::ConfigError {
                key: format!("upload.retry_budget.{}", e.key),
                value: e.value,
                allowed: e.allowed.to_owned(),
            })
        })?;
    Ok((breaker, budget))
}

/// Queues the pending segments, registers the DLQ's redrive handler and starts the background
/// tasks: the upload worker (or, after an open during an outage, the reconciling claim that
/// starts it), the flush timer, compaction and the orphan pass after open.
async fn start(shared: &Arc<Shared>, pending: Vec<(String, Arc<Segment>)>, claimed: bool) {
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
            shared: Arc::downgrade(shared),
        }),
    );
    let mut tasks = Vec::new();
    if shared.remote.is_some() {
        if claimed {
            tasks.push(tokio::spawn(upload::run_worker(Arc::downgrade(shared))));
        } else {
            // Starts the upload worker and the pass after open once it claimed the prefix.
            tasks.push(tokio::spawn(reconcile_task(Arc::downgrade(shared))));
        }
    }
    tasks.push(tokio::spawn(flush_task(Arc::downgrade(shared))));
    // The task runs even while compaction is disabled, so that enabling it live takes effect.
    tasks.push(tokio::spawn(compaction_task(Arc::downgrade(shared))));
    // Objects orphaned before this open (a crash between upload and commit, compaction inputs
    // whose deletion was pending): collected in the background, never delaying the open.
    if shared.collects_orphans() && claimed {
        tasks.push(tokio::spawn(orphans::after_open(Arc::downgrade(shared))));
    }
    *shared.tasks.lock() = tasks;
    // Replayed records may already be coverable (nothing to keep); trim what we can.
    shared.trim_wal().await;
}
