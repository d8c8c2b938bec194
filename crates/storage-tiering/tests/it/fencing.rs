//! Fencing by writer epoch: every open claims an epoch one above the newest manifest's and
//! records it in every manifest it writes; a failed manifest commit never lets an older writer
//! land a version above a newer writer's claim, a writer that sees a newer epoch is fenced at
//! once, and orphan collection never deletes a newer writer's objects.
//!
//! Two writers share one in-memory object store, each through its own fault-injecting wrapper,
//! on paused time.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{MaintenanceError, Store, StoreConfig, TieringPolicy, WriteError};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::common::{FaultStore, config, list_all, open_on, value};

/// No background pass but the one after open; `grace` as the grace period.
fn quiet(dir: &FsPath, grace: Duration) -> StoreConfig {
    let mut cfg = config(dir);
    cfg.compaction.interval = Duration::from_secs(3600);
    cfg.compaction.grace_period = grace;
    cfg
}

async fn put_all(store: &Store, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .put("c", &format!("{prefix}{i:03}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
}

/// The newest manifest under `prefix`, as JSON.
async fn newest_manifest(store: &dyn ObjectStore, prefix: &str) -> serde_json::Value {
    use futures::TryStreamExt as _;
    let listed: Vec<_> = store
        .list(Some(&Path::from(format!("{prefix}/manifest"))))
        .try_collect()
        .await
        .unwrap();
    let newest = listed.iter().map(|m| m.location.clone()).max().unwrap();
    let bytes = store.get(&newest).await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// How writer A's manifest commit fails once.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The put never reaches the store.
    Lost,
    /// The put lands but A sees a 503.
    Landed,
}

/// A's commit fails once; while A waits to try again, a new writer B claims the prefix and
/// uploads (its commit held back); then A retries, then B commits. Every record of B must be
/// readable by a third writer afterwards, and A must stand back.
async fn check_single_failure(failure: Failure) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (fault_a, fault_b) = (
        FaultStore::new(inner.clone()),
        FaultStore::new(inner.clone()),
    );
    let a = open_on(
        quiet(&dir.path().join("a"), Duration::ZERO),
        fault_a.clone(),
        "p",
    )
    .await;
    a.create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    put_all(&a, "a", 20).await;
    a.wait_uploaded(Duration::from_secs(60)).await.unwrap();

    match failure {
        Failure::Lost => fault_a.fail_manifest_puts.store(true, Ordering::SeqCst),
        Failure::Landed => fault_a.ambiguous_manifest_puts.store(1, Ordering::SeqCst),
    }
    put_all(&a, "late", 5).await;
    // The commit failed once; A's next try comes after `upload.breaker_poll_interval` (1 s).
    assert!(matches!(
        a.wait_uploaded(Duration::from_millis(500)).await,
        Err(MaintenanceError::Deadline(_))
    ));
    assert_eq!(fault_a.ambiguous_manifest_puts.load(Ordering::SeqCst), 0);
    fault_a.fail_manifest_puts.store(true, Ordering::SeqCst);

    // B claims the prefix and uploads; its commit waits.
    let b = open_on(
        quiet(&dir.path().join("b"), Duration::ZERO),
        fault_b.clone(),
        "p",
    )
    .await;
    fault_b.fail_manifest_puts.store(true, Ordering::SeqCst);
    put_all(&b, "b", 20).await;
    assert!(matches!(
        b.wait_uploaded(Duration::from_millis(500)).await,
        Err(MaintenanceError::Deadline(_))
    ));

    // A tries again: it must find B's claim, not land a version above it.
    fault_a.fail_manifest_puts.store(false, Ordering::SeqCst);
    match a.wait_uploaded(Duration::from_secs(10)).await {
        Err(MaintenanceError::Fenced(_)) => {}
        other => panic!("{failure:?}: writer A was not fenced: {other:?}"),
    }
    assert!(matches!(
        a.collect_orphans().await,
        Err(MaintenanceError::Fenced(_))
    ));
    assert!(matches!(
        a.put("c", "after", value(0)).await,
        Err(WriteError::Fenced(_))
    ));

    fault_b.fail_manifest_puts.store(false, Ordering::SeqCst);
    b.wait_uploaded(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{failure:?}: writer B could not commit: {e}"));
    b.close(Duration::from_secs(1)).await.unwrap();
    a.close(Duration::from_secs(1)).await.ok();

    // A third writer, from the object store alone, reads every record of B (and A's committed
    // ones before the failure).
    let c = open_on(
        quiet(&dir.path().join("c"), Duration::ZERO),
        inner.clone(),
        "p",
    )
    .await;
    for (prefix, n) in [("b", 20), ("a", 20)] {
        for i in 0..n {
            assert_eq!(
                c.get("c", &format!("{prefix}{i:03}")).await.unwrap(),
                Some(value(i)),
                "{failure:?}: {prefix}{i:03}"
            );
        }
    }
    c.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_failed_commit_never_lets_an_older_writer_land_above_a_newer_claim() {
    check_single_failure(Failure::Lost).await;
    check_single_failure(Failure::Landed).await;
}

#[tokio::test(start_paused = true)]
async fn a_writer_recovers_from_its_own_failed_commits() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    let store = open_on(quiet(dir.path(), Duration::ZERO), fault.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    for (round, ambiguous) in [(0, true), (1, false), (2, true)] {
        if ambiguous {
            fault.ambiguous_manifest_puts.store(1, Ordering::SeqCst);
        } else {
            fault.fail_manifest_puts.store(true, Ordering::SeqCst);
        }
        put_all(&store, &format!("r{round}-"), 10).await;
        let _ = store.wait_uploaded(Duration::from_millis(500)).await;
        // The commit that succeeds carries more than the failed one.
        fault.fail_manifest_puts.store(true, Ordering::SeqCst);
        put_all(&store, &format!("s{round}-"), 5).await;
        let _ = store.wait_uploaded(Duration::from_millis(500)).await;
        fault.fail_manifest_puts.store(false, Ordering::SeqCst);
        store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(list_all(&store, "c").await.records.len(), 45);
    store.close(Duration::from_secs(1)).await.unwrap();
    let other = open_on(quiet(&dir.path().join("o"), Duration::ZERO), inner, "p").await;
    assert_eq!(list_all(&other, "c").await.records.len(), 45);
    other.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_manifest_carries_its_writers_epoch_and_each_open_claims_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut epochs = Vec::new();
    for run in 0..3 {
        let store = open_on(quiet(dir.path(), Duration::ZERO), inner.clone(), "p").await;
        if run == 0 {
            store
                .create_collection("c", TieringPolicy::MemoryS3)
                .await
                .unwrap();
        }
        let claim = newest_manifest(&*inner, "p").await;
        put_all(&store, &format!("r{run}-"), 5).await;
        store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
        let commit = newest_manifest(&*inner, "p").await;
        assert_eq!(claim["epoch"], commit["epoch"], "run {run}");
        epochs.push(commit["epoch"].as_u64().unwrap());
        store.close(Duration::from_secs(1)).await.unwrap();
    }
    assert_eq!(epochs, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_sees_a_newer_epoch_is_fenced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = open_on(
        quiet(&dir.path().join("a"), Duration::ZERO),
        inner.clone(),
        "p",
    )
    .await;
    a.create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    let b = open_on(
        quiet(&dir.path().join("b"), Duration::ZERO),
        inner.clone(),
        "p",
    )
    .await;
    // A has nothing to commit; its orphan pass reads B's manifest.
    assert!(matches!(
        a.collect_orphans().await,
        Err(MaintenanceError::Fenced(_))
    ));
    assert!(a.fenced().is_some());
    assert!(matches!(
        a.put("c", "k", value(0)).await,
        Err(WriteError::Fenced(_))
    ));
    b.close(Duration::from_secs(1)).await.unwrap();
    a.close(Duration::from_secs(1)).await.ok();
}

#[tokio::test(start_paused = true)]
async fn orphan_collection_never_deletes_an_object_of_a_newer_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = open_on(quiet(dir.path(), Duration::ZERO), inner.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    put_all(&store, "k", 5).await;
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    let epoch = newest_manifest(&*inner, "p").await["epoch"]
        .as_u64()
        .unwrap();
    // Unreferenced objects as a crashed upload of this epoch, of an older writer (no epoch in
    // the name) and of a newer writer (whose manifest this pass has not seen yet) leave them.
    let plant = async |name: String| {
        let path = Path::from(format!("p/segments/c/{name}.seg"));
        inner
            .put(&path, PutPayload::from(Bytes::from_static(b"landed")))
            .await
            .unwrap();
        path
    };
    let ours = plant(format!("{}-e{epoch}", ulid::Ulid::generate())).await;
    let older = plant(ulid::Ulid::generate().to_string()).await;
    let newer = plant(format!("{}-e{}", ulid::Ulid::generate(), epoch + 1)).await;
    let report = store.collect_orphans().await.unwrap();
    assert_eq!(report.deleted_objects, 2);
    for (path, kept) in [(ours, false), (older, false), (newer, true)] {
        assert_eq!(inner.head(&path).await.is_ok(), kept, "{path}");
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_manifest_written_before_epochs_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fixtures = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/legacy-prefix");
    for relative in [
        "manifest/00000000000000000002.json",
        "segments/orders/01M90YKJGMRVDDWAKKJ4BXD1AM.seg",
    ] {
        let bytes = std::fs::read(fixtures.join(relative)).unwrap();
        inner
            .put(
                &Path::from(format!("p/{relative}")),
                PutPayload::from(bytes),
            )
            .await
            .unwrap();
    }
    let store = open_on(quiet(dir.path(), Duration::ZERO), inner.clone(), "p").await;
    for i in 1..=5 {
        assert_eq!(
            store.get("orders", &format!("o-{i}")).await.unwrap(),
            Some(Bytes::from(format!("{{\"n\":{i}}}")))
        );
    }
    // The claim treats the old manifest as epoch 0; the old object is referenced, so kept.
    let claim = newest_manifest(&*inner, "p").await;
    assert_eq!(
        (claim["version"].as_u64(), claim["epoch"].as_u64()),
        (Some(3), Some(1))
    );
    store.collect_orphans().await.unwrap();
    assert!(
        inner
            .head(&Path::from(
                "p/segments/orders/01M90YKJGMRVDDWAKKJ4BXD1AM.seg"
            ))
            .await
            .is_ok()
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}

/// A small deterministic generator for the seeded test (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One writer of the seeded test: its records acknowledged, and those it saw committed.
struct Writer {
    store: Store,
    fault: Arc<FaultStore>,
    _dir: tempfile::TempDir,
    acked: Vec<String>,
    committed: Vec<String>,
}

async fn open_writer(inner: &Arc<dyn ObjectStore>) -> Writer {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(inner.clone());
    let store = open_on(quiet(dir.path(), Duration::ZERO), fault.clone(), "p").await;
    Writer {
        store,
        fault,
        _dir: dir,
        acked: Vec::new(),
        committed: Vec::new(),
    }
}

fn heal(writer: &Writer) {
    writer
        .fault
        .fail_manifest_puts
        .store(false, Ordering::SeqCst);
    writer
        .fault
        .ambiguous_manifest_puts
        .store(0, Ordering::SeqCst);
}

/// Random hand-overs between writers of one prefix, with lost and landed-but-failed manifest
/// commits and orphan passes (grace period zero) by every writer, stale ones included. At the
/// end the newest writer must commit everything it acknowledged (never fenced by an older one),
/// and every record a writer saw committed must be readable from the object store alone.
#[tokio::test(start_paused = true)]
async fn seeded_hand_overs_with_failed_commits_never_fence_the_newest_writer_or_lose_a_commit() {
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut writers = vec![open_writer(&inner).await];
        writers[0]
            .store
            .create_collection("c", TieringPolicy::MemoryS3)
            .await
            .unwrap();
        // The collection enters the manifest with its first segment: then every writer has it.
        put_all(&writers[0].store, "first", 1).await;
        writers[0]
            .store
            .wait_uploaded(Duration::from_secs(10))
            .await
            .unwrap();
        let mut log = Vec::new();
        for step in 0..40 {
            let index = rng.below(writers.len());
            let op = rng.below(7);
            log.push((op, index));
            if op == 5 && writers.len() < 4 {
                writers.push(open_writer(&inner).await);
                continue;
            }
            let writer = &mut writers[index];
            match op {
                0 | 1 => {
                    for n in 0..3 {
                        let id = format!("w{index}-s{step}-{n}");
                        match writer.store.put("c", &id, value(n)).await {
                            Ok(()) => writer.acked.push(id),
                            Err(WriteError::Fenced(_)) => {}
                            Err(other) => panic!("seed {seed}: {other}"),
                        }
                    }
                    let _ = writer.store.flush().await;
                }
                2 => writer
                    .fault
                    .fail_manifest_puts
                    .store(true, Ordering::SeqCst),
                3 => writer
                    .fault
                    .ambiguous_manifest_puts
                    .store(1, Ordering::SeqCst),
                4 => {
                    heal(writer);
                    let acked = writer.acked.clone();
                    if writer
                        .store
                        .wait_uploaded(Duration::from_secs(2))
                        .await
                        .is_ok()
                    {
                        writer.committed = acked;
                    }
                }
                _ => {
                    let _ = writer.store.collect_orphans().await;
                }
            }
        }
        for writer in &writers {
            heal(writer);
        }
        let newest = writers.last_mut().unwrap();
        newest
            .store
            .wait_uploaded(Duration::from_secs(900))
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the newest writer: {e} (steps {log:?})"));
        newest.committed = newest.acked.clone();
        for writer in &writers {
            writer.store.close(Duration::from_secs(1)).await.ok();
        }
        let reader = open_writer(&inner).await;
        for writer in &writers {
            for id in &writer.committed {
                let n: usize = id.rsplit('-').next().unwrap().parse().unwrap();
                assert_eq!(
                    reader.store.get("c", id).await.unwrap(),
                    Some(value(n)),
                    "seed {seed}: {id} (steps {log:?})"
                );
            }
        }
        reader.store.close(Duration::from_secs(1)).await.ok();
    }
}
