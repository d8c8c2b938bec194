//! Uploads and compactions belong to one incarnation of a collection: dropping and re-creating a
//! collection while its segment is being uploaded never commits the old segment under the new
//! collection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::Policy;
use object_store::memory::InMemory;

use crate::common::{FaultStore, config, list_all, open_on};

#[tokio::test]
async fn a_segment_uploaded_across_a_drop_and_re_create_never_joins_the_new_collection() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let objects = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(config(dir.path()), objects.clone(), "p").await;
    store
        .create_collection("c", Policy::MemoryS3)
        .await
        .expect("created");
    store
        .put("c", "old", Bytes::from_static(b"old"))
        .await
        .expect("put");
    let gate = objects.segment_put_gate.write().await;
    store.flush().await.expect("flushed");
    // The old incarnation's segment is in flight now, held by the gate.
    for _ in 0..10_000 {
        if objects.segment_puts.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(objects.segment_puts.load(Ordering::SeqCst), 1);
    assert!(store.drop_collection("c").await.expect("dropped"));
    store
        .create_collection("c", Policy::MemoryS3)
        .await
        .expect("re-created");
    store
        .put("c", "new", Bytes::from_static(b"new"))
        .await
        .expect("put");
    drop(gate);
    for _ in 0..10_000 {
        if store.upload_queue_depth() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(store.upload_queue_depth(), 0, "the old upload settled");
    let ids = |page: mainstay_storage_tiering::Page| -> Vec<String> {
        page.records.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(list_all(&store, "c").await), ["new"]);
    store.close(Duration::from_secs(5)).await.expect("closes");

    let store = open_on(config(dir.path()), objects.clone(), "p").await;
    assert_eq!(ids(list_all(&store, "c").await), ["new"]);
    // A fresh data directory sees only what the manifest says.
    let fresh = tempfile::tempdir().expect("a temp dir");
    store.close(Duration::from_secs(5)).await.expect("closes");
    let store = open_on(config(fresh.path()), objects, "p").await;
    assert_eq!(ids(list_all(&store, "c").await), ["new"]);
}
