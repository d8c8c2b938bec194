//! Starting while the object store is down: the store opens from its local copy of the last
//! committed manifest (`data_dir/manifest.json`), serves what it holds locally, acknowledges
//! writes through the WAL, answers reads that need the store as unavailable, and claims the prefix
//! (fencing check first) once the store answers; a first start during an outage is refused.
//!
//! The outage is the fault store failing every call (503s), on paused time.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mainstay_storage_tiering::{
    MaintenanceError, OpenError, ReadError, Store, StoreConfig, TieringPolicy, WriteError,
};
use object_store::ObjectStore;
use object_store::memory::InMemory;

use crate::common::{FaultStore, Mode, config, list_all, open_on, value};

fn quiet(dir: &FsPath) -> StoreConfig {
    let mut cfg = config(dir);
    cfg.compaction.interval = Duration::from_secs(3600);
    cfg
}

async fn put_range(store: &Store, collection: &str, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .put(collection, &format!("{prefix}{i:03}"), value(i))
            .await
            .unwrap();
    }
}

/// A first run: `hot` (memory_s3) with 20 uploaded records, `local` (memory) with 5.
async fn first_run(dir: &FsPath, object_store: Arc<dyn ObjectStore>) {
    let store = open_on(quiet(dir), object_store, "p").await;
    store
        .create_collection("hot", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store
        .create_collection("local", TieringPolicy::Memory)
        .await
        .unwrap();
    put_range(&store, "hot", "k", 20).await;
    put_range(&store, "local", "m", 5).await;
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
}

async fn open_during_outage(dir: &FsPath, fault: Arc<FaultStore>) -> Result<Store, OpenError> {
    Store::builder(quiet(dir))
        .object_store(fault, "p")
        .open()
        .await
        .inspect(|store| assert!(store.recovery().awaiting_object_store))
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_an_outage_serves_what_it_holds_and_reconciles_when_the_store_returns() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    first_run(dir.path(), fault.clone()).await;

    fault.set(Mode::Unavailable);
    let store = open_during_outage(dir.path(), fault.clone())
        .await
        .expect("opens from the local manifest copy");
    assert!(store.awaiting_object_store());
    let puts = fault.segment_puts.load(Ordering::SeqCst);
    // Local data is served; a record only the object store holds is unavailable, never absent.
    assert_eq!(store.get("local", "m003").await.unwrap(), Some(value(3)));
    assert!(matches!(
        store.get("hot", "k003").await,
        Err(ReadError::Unavailable(_))
    ));
    assert!(list_all(&store, "hot").await.degraded);
    // Writes to every policy are acknowledged through the WAL; a collection can be created.
    put_range(&store, "hot", "outage-", 10).await;
    put_range(&store, "local", "outage-", 3).await;
    store
        .create_collection("fresh", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    put_range(&store, "fresh", "f", 4).await;
    store
        .create_collection("empty", TieringPolicy::S3Only)
        .await
        .unwrap();
    store.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        fault.segment_puts.load(Ordering::SeqCst),
        puts,
        "no upload before the prefix is claimed"
    );
    assert!(matches!(
        store.collect_orphans().await,
        Err(MaintenanceError::ObjectStore(_))
    ));

    // The store returns: the prefix is claimed, the outage's writes are uploaded and committed.
    fault.set(Mode::Healthy);
    store.wait_uploaded(Duration::from_secs(300)).await.unwrap();
    assert!(!store.awaiting_object_store());
    assert_eq!(store.get("hot", "k003").await.unwrap(), Some(value(3)));
    store.close(Duration::from_secs(1)).await.unwrap();

    // Another writer sees everything from the object store alone.
    let other = tempfile::tempdir().unwrap();
    let store = open_on(quiet(other.path()), inner, "p").await;
    assert_eq!(list_all(&store, "hot").await.records.len(), 30);
    assert_eq!(list_all(&store, "fresh").await.records.len(), 4);
    assert!(
        store.collections().iter().any(|c| c.name == "empty"),
        "a collection created empty during the outage is committed"
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_first_start_during_an_outage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    fault.set(Mode::Unavailable);
    match Store::builder(quiet(dir.path()))
        .object_store(fault, "p")
        .open()
        .await
    {
        Err(error @ OpenError::ObjectStoreUnavailable { .. }) => {
            let message = error.to_string();
            assert!(message.contains("no manifest copy"), "{message}");
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|store| store.recovery().clone())
        ),
    }
}

#[tokio::test(start_paused = true)]
async fn a_writer_another_one_replaced_during_the_outage_is_fenced_when_it_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    first_run(&dir.path().join("a"), fault.clone()).await;

    // A restarts while its own path to the store is down; B (elsewhere) claims the prefix.
    fault.set(Mode::Unavailable);
    let a = open_during_outage(&dir.path().join("a"), fault.clone())
        .await
        .unwrap();
    put_range(&a, "hot", "a-outage-", 5).await;
    let b = open_on(quiet(&dir.path().join("b")), inner.clone(), "p").await;
    put_range(&b, "hot", "b", 5).await;
    b.flush().await.unwrap();
    b.wait_uploaded(Duration::from_secs(10)).await.unwrap();

    fault.set(Mode::Healthy);
    match a.wait_uploaded(Duration::from_secs(300)).await {
        Err(MaintenanceError::Fenced(_)) => {}
        other => panic!("A reconciled over B's claim: {other:?}"),
    }
    assert!(matches!(
        a.put("hot", "late", value(0)).await,
        Err(WriteError::Fenced(_))
    ));
    a.close(Duration::from_secs(1)).await.ok();
    // B's records are intact.
    for i in 0..5 {
        assert_eq!(
            b.get("hot", &format!("b{i:03}")).await.unwrap(),
            Some(value(i))
        );
    }
    b.close(Duration::from_secs(1)).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let c = open_on(quiet(other.path()), inner, "p").await;
    assert_eq!(list_all(&c, "hot").await.records.len(), 25);
    c.close(Duration::from_secs(1)).await.unwrap();
}
