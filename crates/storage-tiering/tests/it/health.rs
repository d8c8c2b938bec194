//! The object-store health check (feature `health`).

use std::sync::Arc;
use std::time::Duration;

use mainstay_health::{Check as _, Criticality, Status};
use mainstay_storage_tiering::health::ObjectStoreCheck;
use object_store::memory::InMemory;

use crate::common::{FaultStore, Mode, config, open_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_follows_the_object_store_and_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(config(dir.path()), fault.clone(), "h").await;
    let check = ObjectStoreCheck::new(&store);
    assert_eq!(check.name(), "object_store");
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
