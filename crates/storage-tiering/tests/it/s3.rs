//! Over real sockets: the in-process S3 server (s3s + s3s-fs, with a lock that makes conditional
//! puts atomic and a switch that makes writes fail with 500) and object_store's S3 client.

use std::time::Duration;

use crate::common::{count_objects, fast_uploads, open_on, value};
use crate::s3_server::S3Server;
use bytes::Bytes;
use mainstay_storage_tiering::{ListQuery, MaintenanceError, StoreConfig, TieringPolicy};

fn fast(dir: &std::path::Path) -> StoreConfig {
    fast_uploads(dir, 1000, Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_cached_reads_over_real_sockets() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = server.client();
    let store = open_on(fast(dir.path()), client.clone(), "svc").await;
    store
        .create_collection("hot", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store
        .create_collection("cold", TieringPolicy::S3Only)
        .await
        .unwrap();
    for i in 0..200 {
        store
            .put("hot", &format!("h{i:03}"), value(i))
            .await
            .unwrap();
        store
            .put("cold", &format!("c{i:03}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert!(count_objects(&*client, "svc/segments/hot").await >= 1);
    assert!(count_objects(&*client, "svc/manifest").await >= 2);
    assert_eq!(store.get("cold", "c150").await.unwrap(), Some(value(150)));
    let page = store
        .list(
            "cold",
            &ListQuery {
                prefix: Some("c1".into()),
                limit: Some(500),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 100);
    store.close(Duration::from_secs(5)).await.unwrap();

    let fresh = open_on(fast(&dir.path().join("fresh")), client.clone(), "svc").await;
    assert_eq!(fresh.get("hot", "h007").await.unwrap(), Some(value(7)));
    assert_eq!(fresh.get("cold", "c199").await.unwrap(), Some(value(199)));
    fresh.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_fenced_over_real_sockets() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = open_on(fast(&dir.path().join("a")), server.client(), "svc").await;
    first
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    let second = open_on(fast(&dir.path().join("b")), server.client(), "svc").await;
    first.put("c", "k", Bytes::from_static(b"v")).await.unwrap();
    first.flush().await.unwrap();
    assert!(matches!(
        first.wait_uploaded(Duration::from_secs(10)).await,
        Err(MaintenanceError::Fenced(_))
    ));
    second.close(Duration::from_secs(5)).await.unwrap();
    first.close(Duration::from_secs(1)).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_outage_with_millisecond_settings_loses_nothing() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = server.client();
    let store = open_on(fast(dir.path()), client.clone(), "svc").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    server.set_failing(true);
    for i in 0..300 {
        store.put("c", &format!("k{i:03}"), value(i)).await.unwrap();
        if i % 60 == 0 {
            store.flush().await.unwrap();
        }
    }
    store.flush().await.unwrap();
    assert!(store.backlog_bytes() > 0);
    server.set_failing(false);
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(5)).await.unwrap();
    let fresh = open_on(fast(&dir.path().join("fresh")), client.clone(), "svc").await;
    for i in 0..300 {
        assert_eq!(
            fresh.get("c", &format!("k{i:03}")).await.unwrap(),
            Some(value(i)),
            "record {i}"
        );
    }
    fresh.close(Duration::from_secs(5)).await.unwrap();
}
