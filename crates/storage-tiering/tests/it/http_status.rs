//! Over real sockets: upload failures that object_store reports only as `Error::Generic` are
//! classified by the HTTP status the in-process S3 server answered: 400, 405, 411, 416 and 501
//! send the segment to the DLQ as permanent after one attempt, 503 is retried as transient.

use std::time::Duration;

use mainstay_dlq::{Entry, FailureClass, Filter};
use mainstay_storage_tiering::{DLQ_QUEUE, StorageMetrics, Store, StoreConfig, TieringPolicy};
use prometheus_client::registry::Registry;
use s3s::S3ErrorCode;

use crate::common::{fast_uploads, open_on, put_and_flush, upload_attempts as attempts, value};
use crate::s3_server::S3Server;

/// Millisecond backoff and breaker timings, and room for several attempts per segment.
fn fast(dir: &std::path::Path) -> StoreConfig {
    fast_uploads(dir, 4, Duration::from_secs(5))
}

fn dead_letters(store: &Store) -> Vec<Entry> {
    store
        .dlq()
        .list(&Filter::queue(DLQ_QUEUE), None, 10)
        .unwrap()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_or_501_sends_the_segment_to_the_dlq_as_permanent_after_one_attempt() {
    for (code, status) in [
        (S3ErrorCode::InvalidRequest, 400),
        (S3ErrorCode::MethodNotAllowed, 405),
        (S3ErrorCode::MissingContentLength, 411),
        (S3ErrorCode::InvalidRange, 416),
        (S3ErrorCode::NotImplemented, 501),
    ] {
        let server = S3Server::start().await;
        // The server would answer every attempt the same way.
        server.script_segment_puts("c", std::iter::repeat_n(code.clone(), 4));
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let store = Store::builder(fast(dir.path()))
            .metrics(StorageMetrics::register(&mut registry))
            .object_store(server.client(), "svc")
            .open()
            .await
            .unwrap();
        store
            .create_collection("c", TieringPolicy::MemoryS3)
            .await
            .unwrap();
        put_and_flush(&store, "c", 20).await;
        // A pinned segment is no longer backlog.
        store.wait_uploaded(Duration::from_secs(20)).await.unwrap();

        assert_eq!(server.segment_puts("c"), 1, "{status}: one request");
        assert_eq!(
            (
                attempts(&registry, "permanent"),
                attempts(&registry, "transient")
            ),
            (1, 0),
            "{status}: one attempt, counted as permanent"
        );
        let entries = dead_letters(&store);
        assert_eq!(entries.len(), 1, "{status}");
        assert!(entries[0].key().starts_with("c/"), "{status}");
        assert_eq!(
            entries[0].error_class(),
            FailureClass::Permanent,
            "{status}"
        );
        assert_eq!(entries[0].attempts(), 1, "{status}");
        assert_eq!(store.get("c", "k07").await.unwrap(), Some(value(7)));
        store.close(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_flight_together_are_each_classified_by_their_own_response() {
    let server = S3Server::start().await;
    server.script_segment_puts("bad", std::iter::repeat_n(S3ErrorCode::InvalidRequest, 4));
    server.script_segment_puts(
        "flaky",
        [S3ErrorCode::SlowDown, S3ErrorCode::ServiceUnavailable],
    );
    // The first PUT of each collection waits for the other: a 400 and a 503 answered together.
    server.hold_segment_puts(2);
    let dir = tempfile::tempdir().unwrap();
    let client = server.client();
    let mut registry = Registry::default();
    let store = Store::builder(fast(dir.path()))
        .metrics(StorageMetrics::register(&mut registry))
        .object_store(client.clone(), "svc")
        .open()
        .await
        .unwrap();
    for name in ["bad", "flaky"] {
        store
            .create_collection(name, TieringPolicy::MemoryS3)
            .await
            .unwrap();
        for i in 0..20 {
            store
                .put(name, &format!("k{i:02}"), value(i))
                .await
                .unwrap();
        }
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(20)).await.unwrap();

    assert_eq!(server.segment_puts("bad"), 1, "the 400 is not retried");
    assert_eq!(server.segment_puts("flaky"), 3, "503, 503, then the upload");
    assert_eq!(attempts(&registry, "transient"), 2, "each 503 once");
    assert_eq!(attempts(&registry, "permanent"), 1, "the 400");
    assert_eq!(attempts(&registry, "success"), 1);
    let entries = dead_letters(&store);
    assert_eq!(entries.len(), 1, "only the 400 is dead-lettered");
    assert!(entries[0].key().starts_with("bad/"), "{}", entries[0].key());
    assert_eq!(entries[0].error_class(), FailureClass::Permanent);
    assert_eq!(entries[0].attempts(), 1);
    store.close(Duration::from_secs(5)).await.unwrap();

    // The segment that was retried is committed: a fresh store reads it from the server.
    let fresh = open_on(fast(&dir.path().join("fresh")), client, "svc").await;
    assert_eq!(fresh.get("flaky", "k07").await.unwrap(), Some(value(7)));
    fresh.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_back_after_a_conflict_dead_letters_the_segment_without_fencing_the_store() {
    let server = S3Server::start().await;
    // The PUT finds "an object already there" (412), and reading it back is refused (400): that
    // proves nothing about whose object it is.
    server.script_segment_puts("c", [S3ErrorCode::PreconditionFailed]);
    server.script_segment_gets("c", [S3ErrorCode::InvalidRequest]);
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let store = Store::builder(fast(dir.path()))
        .metrics(StorageMetrics::register(&mut registry))
        .object_store(server.client(), "svc")
        .open()
        .await
        .unwrap();
    for name in ["c", "d"] {
        store
            .create_collection(name, TieringPolicy::MemoryS3)
            .await
            .unwrap();
    }
    put_and_flush(&store, "c", 20).await;
    store.wait_uploaded(Duration::from_secs(20)).await.unwrap();
    let entries = dead_letters(&store);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].error_class(), FailureClass::Permanent);
    assert_eq!(attempts(&registry, "permanent"), 1);

    // Not fenced: the worker goes on uploading and committing.
    put_and_flush(&store, "d", 20).await;
    store.wait_uploaded(Duration::from_secs(20)).await.unwrap();
    assert_eq!(attempts(&registry, "success"), 1);
    assert_eq!(server.segment_puts("d"), 1);
    store.close(Duration::from_secs(5)).await.unwrap();
    let fresh = open_on(fast(&dir.path().join("fresh")), server.client(), "svc").await;
    assert_eq!(fresh.get("d", "k07").await.unwrap(), Some(value(7)));
    fresh.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_request_timeout_is_retried_like_a_408() {
    let server = S3Server::start().await;
    server.script_segment_puts("c", [S3ErrorCode::RequestTimeout]);
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let store = Store::builder(fast(dir.path()))
        .metrics(StorageMetrics::register(&mut registry))
        .object_store(server.client(), "svc")
        .open()
        .await
        .unwrap();
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    put_and_flush(&store, "c", 20).await;
    store.wait_uploaded(Duration::from_secs(20)).await.unwrap();
    assert_eq!(server.segment_puts("c"), 2, "the timeout, then the upload");
    assert_eq!(
        (
            attempts(&registry, "transient"),
            attempts(&registry, "permanent"),
            attempts(&registry, "success")
        ),
        (1, 0, 1)
    );
    assert!(dead_letters(&store).is_empty());
    store.close(Duration::from_secs(5)).await.unwrap();
}
