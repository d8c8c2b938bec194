//! Creating and dropping a collection is all-or-nothing: a collection is live only once its
//! catalog entry is durable, a failed attempt leaves no trace and can be retried, and a dropped
//! collection never comes back (from the catalog or from the manifest) at the next open.
//!
//! A catalog write is made to fail by putting a directory where its temp file goes
//! (`data/catalog.json.tmp`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mainstay_storage_tiering::{
    CollectionError, MaintenanceError, Store, TieringPolicy, WriteError,
};
use object_store::ObjectStore;
use object_store::memory::InMemory;

use crate::common::{FaultStore, config, list_all, open_on, value};

/// Makes every catalog write fail until [`heal_catalog`].
fn break_catalog(dir: &Path) {
    std::fs::create_dir(dir.join("data").join("catalog.json.tmp")).unwrap();
}

fn heal_catalog(dir: &Path) {
    std::fs::remove_dir(dir.join("data").join("catalog.json.tmp")).unwrap();
}

fn names(store: &Store) -> Vec<String> {
    store.collections().into_iter().map(|c| c.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_leaves_no_trace_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    break_catalog(dir.path());
    match store.create_collection("c", TieringPolicy::Memory).await {
        Err(CollectionError::Io { .. }) => {}
        other => panic!("expected the catalog write to fail, got {other:?}"),
    }
    assert!(names(&store).is_empty(), "not live before it is durable");
    match store.put("c", "k", value(1)).await {
        Err(WriteError::UnknownCollection(_)) => {}
        other => panic!("a write to a collection that failed to be created: {other:?}"),
    }
    heal_catalog(dir.path());
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    store.put("c", "k", value(1)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();

    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.get("c", "k").await.unwrap(), Some(value(1)));
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_drop_leaves_the_collection_fully_usable() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = open_on(config(dir.path()), inner.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    for i in 0..20 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();

    break_catalog(dir.path());
    assert!(store.drop_collection("c").await.is_err());
    heal_catalog(dir.path());
    // Nothing was dropped: reads and writes go on, locally and through the object store.
    store.put("c", "k20", value(20)).await.unwrap();
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    assert_eq!(list_all(&store, "c").await.records.len(), 21);
    store.close(Duration::from_secs(1)).await.unwrap();

    // Neither the catalog nor the manifest lost it.
    let store = open_on(config(dir.path()), inner.clone(), "p").await;
    assert_eq!(names(&store), ["c"]);
    for i in 0..21 {
        assert_eq!(
            store.get("c", &format!("k{i:02}")).await.unwrap(),
            Some(value(i))
        );
    }
    store.close(Duration::from_secs(1)).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let store = open_on(config(other.path()), inner, "p").await;
    assert_eq!(list_all(&store, "c").await.records.len(), 21);
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_collection_never_comes_back_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    let store = open_on(config(dir.path()), fault.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    for i in 0..20 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();

    // The drop is durable in the catalog although the manifest cannot be committed.
    fault.fail_manifest_puts.store(true, Ordering::SeqCst);
    assert!(store.drop_collection("c").await.unwrap());
    assert!(names(&store).is_empty());
    assert!(matches!(
        store.put("c", "k", value(0)).await,
        Err(WriteError::UnknownCollection(_))
    ));
    // Closing waits for the manifest to catch up with the drop, and says it could not.
    assert!(matches!(
        store.close(Duration::from_secs(1)).await,
        Err(MaintenanceError::Deadline(_))
    ));
    fault.fail_manifest_puts.store(false, Ordering::SeqCst);

    // The manifest still listed it; the catalog's tombstone keeps it dropped, and the claim at
    // open commits a manifest without it.
    let store = open_on(config(dir.path()), fault.clone(), "p").await;
    assert!(names(&store).is_empty(), "came back: {:?}", names(&store));
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    assert_eq!(store.get("c", "k00").await.unwrap(), None);
    store.close(Duration::from_secs(1)).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let store = open_on(config(other.path()), inner, "p").await;
    assert!(names(&store).is_empty(), "a new writer adopted it");
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_and_drops_of_one_name_agree_with_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(config(dir.path())).await.unwrap();
    for round in 0..12 {
        let creates: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.create_collection("x", TieringPolicy::Memory).await },
                )
            })
            .collect();
        let mut created = 0;
        for create in creates {
            match create.await.unwrap() {
                Ok(()) => created += 1,
                Err(CollectionError::AlreadyExists(_)) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(created, 1, "round {round}: one create wins");
        store.put("x", "k", value(round)).await.unwrap();
        // What memory acknowledged is what the catalog holds.
        store.close(Duration::from_secs(1)).await.unwrap();
        store = Store::open(config(dir.path())).await.unwrap();
        assert_eq!(names(&store), ["x"], "round {round}");
        assert_eq!(store.get("x", "k").await.unwrap(), Some(value(round)));
        let drops: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.drop_collection("x").await })
            })
            .collect();
        let mut dropped = 0;
        for drop in drops {
            if drop.await.unwrap().unwrap() {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 1, "round {round}: one drop wins");
    }
    store.close(Duration::from_secs(1)).await.unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert!(names(&store).is_empty());
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_upload_in_flight_across_a_drop_and_create_never_joins_the_new_collection() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = FaultStore::new(inner.clone());
    let store = open_on(config(dir.path()), fault.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    // The first incarnation's segment upload is in flight while the name is dropped and
    // created again.
    fault.hold_segment_puts.store(true, Ordering::SeqCst);
    for i in 0..10 {
        store
            .put("c", &format!("old{i:02}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    for _ in 0..100 {
        if fault.segment_puts.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fault.segment_puts.load(Ordering::SeqCst), 1, "in flight");
    assert!(store.drop_collection("c").await.unwrap());
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store.put("c", "new", value(0)).await.unwrap();
    fault.release_segment_puts();
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();

    // Neither this data directory nor a new writer sees the dropped incarnation's records.
    let other = tempfile::tempdir().unwrap();
    for data in [dir.path(), other.path()] {
        let store = open_on(config(data), inner.clone(), "p").await;
        let ids: Vec<String> = list_all(&store, "c")
            .await
            .records
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["new"], "{}", data.display());
        store.close(Duration::from_secs(1)).await.unwrap();
    }
}

/// A collection is in the manifest from its creation, not from its first segment: a writer that
/// takes the prefix over sees it even while it is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_collection_is_committed_to_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = open_on(config(dir.path()), inner.clone(), "p").await;
    store
        .create_collection("empty", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let store = open_on(config(other.path()), inner, "p").await;
    assert_eq!(names(&store), ["empty"]);
    store.close(Duration::from_secs(1)).await.unwrap();
}
