//! Orphan collection: objects a crash left in the object store (an upload that landed but was
//! never committed, compaction inputs whose delayed deletion died with the process, a dropped
//! collection's leftovers) are deleted once older than the grace period, and nothing else is.
//!
//! A crash is a store run on its own runtime that is dropped without `close`: every task dies
//! with it (the pending deletion of compaction inputs included), and only what reached the data
//! directory and the object store remains. Time is paused tokio time (or a manual clock over real
//! sockets), which the store's clock follows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt as _;
use mainstay_clock::ManualClock;
use mainstay_storage_tiering::{
    MaintenanceError, StorageMetrics, Store, StoreConfig, TieringPolicy,
};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use prometheus_client::registry::Registry;

use crate::common::{FaultStore, Mode, config, list_all, open_on, value};
use crate::s3_server::S3Server;

const GRACE: Duration = Duration::from_secs(300);

/// The sum of the series of a metric family.
fn metric(registry: &Registry, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The objects under `prefix` and their sizes.
async fn objects(store: &dyn ObjectStore, prefix: &str) -> BTreeMap<Path, u64> {
    store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
        .unwrap()
}

async fn exists(store: &dyn ObjectStore, path: &Path) -> bool {
    match store.head(path).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(other) => panic!("{other}"),
    }
}

/// What a crashed upload leaves: a whole segment object (a copy of one under `dir`, or a few bytes
/// when there is none) at a segment path no manifest lists. Returns its path and size.
async fn plant_orphan(store: &dyn ObjectStore, dir: &str) -> (Path, u64) {
    let bytes = match objects(store, dir).await.into_keys().next() {
        Some(existing) => store.get(&existing).await.unwrap().bytes().await.unwrap(),
        None => Bytes::from_static(b"a segment whose upload landed"),
    };
    let path = Path::from(format!("{dir}/{}.seg", ulid::Ulid::generate()));
    store
        .put(&path, PutPayload::from(bytes.clone()))
        .await
        .unwrap();
    (path, bytes.len() as u64)
}

/// Polls (in paused time) until `done` holds; false if it never did.
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A configuration whose background pass runs only once an hour (so that a test's own passes are
/// the only ones after the pass that follows open), with `grace` as the grace period.
fn quiet_config(dir: &std::path::Path, grace: Duration) -> StoreConfig {
    let mut cfg = config(dir);
    cfg.compaction.interval = Duration::from_secs(3600);
    cfg.compaction.grace_period = grace;
    cfg
}

/// Opens a store on `object_store` under `prefix` with metrics and waits for the pass that
/// follows open, so that objects planted afterwards are the test's business.
async fn open_settled(
    cfg: StoreConfig,
    object_store: Arc<dyn ObjectStore>,
    prefix: &str,
) -> (Store, Registry) {
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let store = Store::builder(cfg)
        .metrics(metrics)
        .object_store(object_store, prefix)
        .open()
        .await
        .unwrap();
    assert!(
        eventually(async || metric(&registry, "storage_orphan_collections_total") >= 1).await,
        "the pass after open ran"
    );
    (store, registry)
}

/// Writes `n` records to `collection` and waits until they are uploaded and committed.
async fn write_uploaded(store: &Store, collection: &str, n: usize) {
    for i in 0..n {
        store
            .put(collection, &format!("k{i:03}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
}

async fn assert_readable(store: &Store, collection: &str, n: usize) {
    for i in 0..n {
        assert_eq!(
            store.get(collection, &format!("k{i:03}")).await.unwrap(),
            Some(value(i)),
            "{collection}/k{i:03}"
        );
    }
}

/// The first run of the crash test: uploads, a compaction whose inputs wait out the grace period,
/// a compaction whose output landed but whose commit failed, and a planted crashed upload; then
/// the runtime is dropped without `close`. Returns the orphans it left.
fn run_and_crash(
    cfg: StoreConfig,
    fault: &Arc<FaultStore>,
    inner: &Arc<dyn ObjectStore>,
) -> Vec<(Path, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let orphans = runtime.block_on(async {
        let store = open_on(cfg, fault.clone(), "o").await;
        store
            .create_collection("cold", TieringPolicy::S3Only)
            .await
            .unwrap();
        store
            .create_collection("hot", TieringPolicy::MemoryS3)
            .await
            .unwrap();
        for round in 0..3 {
            for i in 0..40 {
                let id = format!("k{i:03}");
                let written = Bytes::from(format!("{round}-{i}"));
                store.put("cold", &id, written).await.unwrap();
                store.put("hot", &id, value(i)).await.unwrap();
            }
            store.flush().await.unwrap();
        }
        store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
        let mut orphans = Vec::new();

        // (b) Compaction commits; deleting its three inputs waits out the grace period.
        let cold_inputs = objects(&*inner, "o/segments/cold").await;
        assert_eq!(cold_inputs.len(), 3);
        assert_eq!(store.compact("cold").await.unwrap(), 3);
        assert_eq!(objects(&*inner, "o/segments/cold").await.len(), 4);
        orphans.extend(cold_inputs);

        // (a) An upload that landed but was never committed: a compaction output whose manifest
        // commit failed.
        let hot_before = objects(&*inner, "o/segments/hot").await;
        fault.fail_manifest_puts.store(true, Ordering::SeqCst);
        assert!(store.compact("hot").await.is_err());
        fault.fail_manifest_puts.store(false, Ordering::SeqCst);
        let hot_after = objects(&*inner, "o/segments/hot").await;
        let landed: Vec<_> = hot_after
            .into_iter()
            .filter(|(path, _)| !hot_before.contains_key(path))
            .collect();
        assert_eq!(landed.len(), 1, "the output landed");
        orphans.extend(landed);

        // (a) What a segment upload cut off by the crash before its commit leaves.
        orphans.push(plant_orphan(&*inner, "o/segments/hot").await);
        orphans
    });
    // The crash: the pending deletion of the compaction inputs and every task die here.
    drop(runtime);
    orphans
}

#[tokio::test(start_paused = true)]
async fn orphans_left_by_a_crash_are_collected_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    let mut cfg = config(dir.path());
    cfg.compaction.grace_period = GRACE;
    let orphans = {
        let (cfg, fault, inner) = (cfg.clone(), fault.clone(), inner.clone());
        std::thread::spawn(move || run_and_crash(cfg, &fault, &inner))
            .join()
            .unwrap()
    };
    assert_eq!(orphans.len(), 5);

    let (store, registry) = open_settled(cfg.clone(), fault.clone(), "o").await;
    let before = objects(&*inner, "o").await;
    for (path, _) in &orphans {
        assert!(before.contains_key(path), "{path} is there after the crash");
    }
    // Younger than the grace period: kept, by the pass after open and by this one.
    let report = store.collect_orphans().await.unwrap();
    assert_eq!((report.deleted_objects, report.young_objects), (0, 5));
    for (path, _) in &orphans {
        assert!(exists(&*inner, path).await, "{path} kept while young");
    }

    // Past the grace period, the pass on the compaction interval (60 s) deletes them.
    tokio::time::sleep(GRACE + Duration::from_secs(60)).await;
    assert!(
        eventually(async || {
            for (path, _) in &orphans {
                if exists(&*inner, path).await {
                    return false;
                }
            }
            true
        })
        .await,
        "the orphans were collected"
    );
    let after = objects(&*inner, "o").await;
    let mut expected = before.clone();
    for (path, _) in &orphans {
        expected.remove(path);
    }
    assert_eq!(after, expected, "every other object stays");
    assert_eq!(metric(&registry, "storage_orphan_objects_deleted_total"), 5);
    assert_eq!(
        metric(&registry, "storage_orphan_deleted_bytes_total"),
        orphans.iter().map(|(_, size)| size).sum::<u64>()
    );
    for i in 0..40 {
        let id = format!("k{i:03}");
        assert_eq!(
            store.get("cold", &id).await.unwrap(),
            Some(Bytes::from(format!("2-{i}")))
        );
    }
    assert_readable(&store, "hot", 40).await;
    store.close(Duration::from_secs(1)).await.unwrap();

    // A store with an empty data directory reads everything from the objects that stayed.
    let fresh = open_on(config(&dir.path().join("fresh")), fault.clone(), "o").await;
    let cold = list_all(&fresh, "cold").await;
    assert_eq!(cold.records.len(), 40);
    assert!(!cold.degraded);
    assert_readable(&fresh, "hot", 40).await;
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_orphan_younger_than_the_grace_period_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (store, _) = open_settled(quiet_config(dir.path(), GRACE), inner.clone(), "y").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    write_uploaded(&store, "c", 30).await;
    let committed = objects(&*inner, "y/segments/c").await;
    let (orphan, size) = plant_orphan(&*inner, "y/segments/c").await;

    tokio::time::sleep(GRACE - Duration::from_secs(10)).await;
    let report = store.collect_orphans().await.unwrap();
    assert_eq!((report.deleted_objects, report.young_objects), (0, 1));
    assert!(exists(&*inner, &orphan).await, "ten seconds short: kept");

    tokio::time::sleep(Duration::from_secs(20)).await;
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(
        (
            report.deleted_objects,
            report.deleted_bytes,
            report.young_objects
        ),
        (1, size, 0)
    );
    assert!(!exists(&*inner, &orphan).await);
    assert_eq!(objects(&*inner, "y/segments/c").await, committed);
    assert_readable(&store, "c", 30).await;
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_listing_or_manifest_read_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    let (store, registry) =
        open_settled(quiet_config(dir.path(), Duration::ZERO), fault.clone(), "l").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    write_uploaded(&store, "c", 30).await;
    let (orphan, _) = plant_orphan(&*inner, "l/segments/c").await;

    fault.fail_lists.store(true, Ordering::SeqCst);
    assert!(matches!(
        store.collect_orphans().await,
        Err(MaintenanceError::ObjectStore(_))
    ));
    assert!(
        exists(&*inner, &orphan).await,
        "a failed listing deletes nothing"
    );
    fault.fail_lists.store(false, Ordering::SeqCst);

    // The listings pass, the newest manifest cannot be read.
    fault.set(Mode::Unavailable);
    assert!(matches!(
        store.collect_orphans().await,
        Err(MaintenanceError::ObjectStore(_))
    ));
    fault.set(Mode::Healthy);
    assert!(
        exists(&*inner, &orphan).await,
        "a failed manifest read deletes nothing"
    );

    // An open upload breaker: no object-store call at all.
    store.breaker().force_open();
    assert!(store.collect_orphans().await.is_err());
    assert!(exists(&*inner, &orphan).await);
    store.breaker().reset();
    assert_eq!(metric(&registry, "storage_orphan_objects_deleted_total"), 0);

    let report = store.collect_orphans().await.unwrap();
    assert_eq!(report.deleted_objects, 1);
    assert!(!exists(&*inner, &orphan).await);
    assert_readable(&store, "c", 30).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let passes = |outcome: &str| {
        text.lines()
            .filter(|l| l.starts_with("storage_orphan_collections_total"))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!((passes("failure"), passes("skipped")), (2, 1));
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_is_retried_and_a_dropped_collection_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    let (store, _) = open_settled(quiet_config(dir.path(), GRACE), fault.clone(), "d").await;
    store
        .create_collection("gone", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store
        .create_collection("kept", TieringPolicy::S3Only)
        .await
        .unwrap();
    write_uploaded(&store, "gone", 30).await;
    write_uploaded(&store, "kept", 30).await;

    // Deletes fail: the drop is committed to the manifest but its objects stay (as after a
    // crash part-way through it), and replaced manifests pile up.
    fault.fail_deletes.store(true, Ordering::SeqCst);
    let leftovers = objects(&*inner, "d/segments/gone").await;
    assert!(!leftovers.is_empty());
    assert!(store.drop_collection("gone").await.unwrap());
    assert_eq!(objects(&*inner, "d/segments/gone").await, leftovers);
    for round in 0..12 {
        store
            .put("kept", &format!("later-{round:02}"), value(round))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    }
    let manifests = objects(&*inner, "d/manifest").await.len();
    assert!(manifests > 12, "{manifests} manifests");
    let kept = objects(&*inner, "d/segments/kept").await;

    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    let expected = u64::try_from(leftovers.len() + manifests - 10).unwrap();
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(
        (report.deleted_objects, report.failed_deletes),
        (0, expected)
    );
    assert_eq!(objects(&*inner, "d/segments/gone").await, leftovers);

    fault.fail_deletes.store(false, Ordering::SeqCst);
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(
        (report.deleted_objects, report.failed_deletes),
        (expected, 0)
    );
    assert!(objects(&*inner, "d/segments/gone").await.is_empty());
    assert_eq!(objects(&*inner, "d/manifest").await.len(), 10);
    assert_eq!(objects(&*inner, "d/segments/kept").await, kept);
    store.close(Duration::from_secs(1)).await.unwrap();

    let fresh = open_on(config(&dir.path().join("fresh")), fault.clone(), "d").await;
    assert_eq!(fresh.collections().len(), 1);
    assert_readable(&fresh, "kept", 30).await;
    for round in 0..12 {
        assert_eq!(
            fresh
                .get("kept", &format!("later-{round:02}"))
                .await
                .unwrap(),
            Some(value(round))
        );
    }
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_segment_waiting_for_its_commit_is_never_collected() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    // No grace period at all: only what the process knows protects the segment.
    let (store, _) =
        open_settled(quiet_config(dir.path(), Duration::ZERO), fault.clone(), "w").await;
    store.breaker().disable(); // failing commits must not open it (which would skip the pass)
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    write_uploaded(&store, "c", 30).await;

    fault.fail_manifest_puts.store(true, Ordering::SeqCst);
    for i in 30..60 {
        store.put("c", &format!("k{i:03}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    assert!(
        eventually(async || objects(&*inner, "w/segments/c").await.len() == 2).await,
        "the second segment landed"
    );
    assert!(store.backlog_bytes() > 0, "but it is not committed");
    let waiting = objects(&*inner, "w/segments/c").await;
    // Beside it, an object no one knows: the same pass deletes that one.
    let (orphan, _) = plant_orphan(&*inner, "w/segments/c").await;
    let report = store.collect_orphans().await.unwrap();
    assert_eq!((report.deleted_objects, report.failed_deletes), (1, 0));
    assert!(!exists(&*inner, &orphan).await);
    assert_eq!(objects(&*inner, "w/segments/c").await, waiting);

    fault.fail_manifest_puts.store(false, Ordering::SeqCst);
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(report.deleted_objects, 0);
    store.close(Duration::from_secs(1)).await.unwrap();
    let fresh = open_on(config(&dir.path().join("fresh")), fault.clone(), "w").await;
    assert_readable(&fresh, "c", 60).await;
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn orphans_present_at_open_are_collected_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cfg = quiet_config(dir.path(), Duration::ZERO);
    let store = open_on(cfg.clone(), inner.clone(), "b").await;
    store
        .create_collection("c", TieringPolicy::S3Only)
        .await
        .unwrap();
    write_uploaded(&store, "c", 30).await;
    store.close(Duration::from_secs(1)).await.unwrap();
    let committed = objects(&*inner, "b/segments/c").await;
    let (orphan, size) = plant_orphan(&*inner, "b/segments/c").await;

    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let opened_at = tokio::time::Instant::now();
    let store = Store::builder(cfg)
        .metrics(metrics)
        .object_store(inner.clone(), "b")
        .open()
        .await
        .unwrap();
    assert!(
        eventually(async || !exists(&*inner, &orphan).await).await,
        "collected after open"
    );
    assert!(
        opened_at.elapsed() < Duration::from_secs(3600),
        "by the pass after open, not the hourly one"
    );
    assert_eq!(
        metric(&registry, "storage_orphan_deleted_bytes_total"),
        size
    );
    assert_eq!(objects(&*inner, "b/segments/c").await, committed);
    assert_readable(&store, "c", 30).await;
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_writer_fenced_by_another_collects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (first, _) = open_settled(
        quiet_config(&dir.path().join("a"), Duration::ZERO),
        inner.clone(),
        "f",
    )
    .await;
    first
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    write_uploaded(&first, "c", 30).await;
    // The new writer's upload, in flight: not yet in any manifest.
    let mut cfg = quiet_config(&dir.path().join("b"), GRACE);
    cfg.compaction.collect_orphans = false;
    let second = open_on(cfg, inner.clone(), "f").await;
    let (in_flight, _) = plant_orphan(&*inner, "f/segments/c").await;

    match first.collect_orphans().await {
        Err(MaintenanceError::Fenced(_)) => {}
        other => panic!("expected the fenced writer to stand back, got {other:?}"),
    }
    assert!(exists(&*inner, &in_flight).await);
    // The writer that holds the prefix keeps it for the grace period, then collects it (had its
    // commit happened, the manifest would reference it).
    assert_eq!(second.collect_orphans().await.unwrap().young_objects, 1);
    tokio::time::sleep(GRACE + Duration::from_secs(10)).await;
    assert_eq!(second.collect_orphans().await.unwrap().deleted_objects, 1);
    assert!(!exists(&*inner, &in_flight).await);
    assert_readable(&second, "c", 30).await;
    second.close(Duration::from_secs(1)).await.unwrap();
    first.close(Duration::from_secs(1)).await.ok();
}

#[tokio::test(start_paused = true)]
async fn compacting_on_demand_also_collects_that_collections_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (store, _) = open_settled(quiet_config(dir.path(), GRACE), inner.clone(), "c").await;
    for name in ["a", "b"] {
        store
            .create_collection(name, TieringPolicy::S3Only)
            .await
            .unwrap();
        write_uploaded(&store, name, 30).await;
        write_uploaded(&store, name, 10).await;
    }
    let inputs = objects(&*inner, "c/segments/a").await.len();
    let (orphan_a, _) = plant_orphan(&*inner, "c/segments/a").await;
    let (orphan_b, _) = plant_orphan(&*inner, "c/segments/b").await;
    tokio::time::sleep(GRACE + Duration::from_secs(10)).await;

    assert_eq!(store.compact("a").await.unwrap(), inputs);
    assert!(!exists(&*inner, &orphan_a).await, "a's orphan went");
    assert!(exists(&*inner, &orphan_b).await, "b was not compacted");
    // The compaction's own inputs wait out their grace period beside its output.
    assert_eq!(objects(&*inner, "c/segments/a").await.len(), inputs + 1);
    assert_readable(&store, "a", 30).await;
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(report.deleted_objects, 1);
    assert!(!exists(&*inner, &orphan_b).await);
    assert_eq!(objects(&*inner, "c/segments/a").await.len(), inputs + 1);
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn switched_off_only_an_explicit_pass_collects_and_switching_on_applies_live() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut cfg = config(dir.path());
    cfg.compaction.grace_period = Duration::ZERO;
    cfg.compaction.collect_orphans = false;
    let store = open_on(cfg.clone(), inner.clone(), "s").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    write_uploaded(&store, "c", 20).await;
    write_uploaded(&store, "c", 10).await;
    store.close(Duration::from_secs(1)).await.unwrap();
    let (orphan, _) = plant_orphan(&*inner, "s/segments/c").await;

    // Off: neither the open, nor three intervals, nor compaction delete it.
    let store = open_on(cfg, inner.clone(), "s").await;
    tokio::time::sleep(Duration::from_secs(3 * 60 + 1)).await;
    assert!(store.compact("c").await.unwrap() >= 2);
    assert!(exists(&*inner, &orphan).await);
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(report.deleted_objects, 1, "an explicit pass runs");

    // On, live: the next pass on the interval collects a new orphan.
    let (orphan, _) = plant_orphan(&*inner, "s/segments/c").await;
    let mut on = store.compaction_config();
    on.collect_orphans = true;
    store.set_compaction_config(on).unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(eventually(async || !exists(&*inner, &orphan).await).await);
    assert_readable(&store, "c", 20).await;
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_collected_over_real_sockets_on_a_manual_clock() {
    let server = S3Server::start().await;
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut cfg = quiet_config(dir.path(), GRACE);
    cfg.upload.attempt_timeout = Duration::from_secs(5);
    let store = Store::builder(cfg)
        .clock(clock.shared())
        .object_store(client.clone(), "svc")
        .open()
        .await
        .unwrap();
    store
        .create_collection("c", TieringPolicy::S3Only)
        .await
        .unwrap();
    write_uploaded(&store, "c", 30).await;
    let committed = objects(&*client, "svc/segments/c").await;
    let (orphan, size) = plant_orphan(&*client, "svc/segments/c").await;

    let report = store.collect_orphans().await.unwrap();
    assert_eq!((report.deleted_objects, report.young_objects), (0, 1));
    // Real time passes too (the object is dated by the server): a minute of margin.
    clock.advance(GRACE + Duration::from_secs(60));
    let report = store.collect_orphans().await.unwrap();
    assert_eq!((report.deleted_objects, report.deleted_bytes), (1, size));
    assert!(!exists(&*client, &orphan).await);
    assert_eq!(objects(&*client, "svc/segments/c").await, committed);
    store.close(Duration::from_secs(5)).await.unwrap();

    let fresh = open_on(config(&dir.path().join("fresh")), client.clone(), "svc").await;
    assert_readable(&fresh, "c", 30).await;
    fresh.close(Duration::from_secs(5)).await.unwrap();
}
