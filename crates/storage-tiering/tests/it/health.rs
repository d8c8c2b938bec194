//! The store's health checks (feature `health`): the object store, the WAL and the writer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mainstay_health::{Check as _, Criticality, Status};
use mainstay_storage_tiering::health::{ObjectStoreCheck, WalCheck, WriterCheck};
use mainstay_storage_tiering::{StorageMetrics, Store, TieringPolicy};
use object_store::memory::InMemory;

use crate::common::{FaultStore, Mode, config, open_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_follows_the_object_store_and_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(config(dir.path()), fault.clone(), "h").await;
    let check = ObjectStoreCheck::new(&store);
    assert_eq!(check.name(), "object-store");
    assert_eq!(check.criticality(), Criticality::NonCritical);
    assert_eq!(check.check().await.status, Status::Healthy);
    fault.set(Mode::Unavailable);
    let outcome = check.check().await;
    assert_eq!(outcome.status, Status::Unhealthy);
    assert!(outcome.message.unwrap_or_default().contains("unreachable"));
    fault.set(Mode::Healthy);
    store.breaker().force_open();
    assert_eq!(check.check().await.status, Status::Degraded);
    store.breaker().reset();
    store.close(Duration::from_secs(1)).await.unwrap();
}

fn exposition(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_check_turns_critical_once_another_writer_fences_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let mut registry = prometheus_client::registry::Registry::default();
    let first = Store::builder(config(&dir.path().join("a")))
        .object_store(inner.clone(), "p")
        .metrics(StorageMetrics::register(&mut registry))
        .open()
        .await
        .unwrap();
    let (writer, wal) = (WriterCheck::new(&first), WalCheck::new(&first));
    assert_eq!(
        (writer.name(), writer.criticality()),
        ("storage-writer", Criticality::Critical)
    );
    assert_eq!(
        (wal.name(), wal.criticality()),
        ("storage-wal", Criticality::Critical)
    );
    assert_eq!(writer.check().await.status, Status::Healthy);
    first.update_state_gauges();
    assert!(exposition(&registry).contains("storage_fenced{store=\"storage\"} 0"));

    first
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    let second = open_on(config(&dir.path().join("b")), inner, "p").await;
    first.put("c", "k", Bytes::from_static(b"1")).await.unwrap();
    first.flush().await.unwrap();
    assert!(first.wait_uploaded(Duration::from_secs(10)).await.is_err());

    let outcome = writer.check().await;
    assert_eq!(outcome.status, Status::Unhealthy);
    let message = outcome.message.unwrap_or_default();
    assert!(
        message.starts_with("fenced by another writer (manifest v"),
        "{message}"
    );
    let text = exposition(&registry);
    assert!(
        text.contains("storage_fenced{store=\"storage\"} 1"),
        "{text}"
    );
    assert_eq!(wal.check().await.status, Status::Healthy);
    assert!(
        text.contains("storage_wal_failed{store=\"storage\"} 0"),
        "{text}"
    );
    second.close(Duration::from_secs(1)).await.unwrap();
    first.close(Duration::from_secs(1)).await.ok();
}
