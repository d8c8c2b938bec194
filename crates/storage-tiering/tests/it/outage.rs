//! Exact upload rules without sockets: a fault-injecting object store over `InMemory` and paused
//! tokio time (the breaker and budget follow it through `TokioClock`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use mainstay_dlq::{Filter, Payload};
use mainstay_resilience::{BreakerState, TransitionReason};
use mainstay_storage_tiering::{
    DLQ_QUEUE, StorageMetrics, Store, StoreConfig, TieringPolicy, WriteError,
};
use object_store::memory::InMemory;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::common::{
    FaultStore, Mode, config, count_objects, open_on, upload_attempts as attempts, value,
};

fn outage_config(dir: &std::path::Path) -> StoreConfig {
    let mut cfg = config(dir);
    cfg.upload.max_attempts = 20;
    cfg
}

#[tokio::test(start_paused = true)]
async fn a_two_minute_outage_loses_nothing_and_follows_the_breaker_rule() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let store = Store::builder(outage_config(dir.path()))
        .metrics(metrics)
        .object_store(fault.clone(), "p")
        .open()
        .await
        .unwrap();
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    let mut events = store.breaker().subscribe();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                seen.lock().push((Instant::now(), event));
            }
        })
    };

    // Healthy traffic, then a quiet minute so that the breaker's window holds only the outage.
    let mut acked = Vec::new();
    for i in 0..40 {
        store.put("c", &format!("k{i:05}"), value(i)).await.unwrap();
        acked.push(i);
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;

    // Two minutes of outage while writes continue.
    fault.set(Mode::Unavailable);
    let outage_start = Instant::now();
    let mut i = 40;
    while outage_start.elapsed() < Duration::from_secs(120) {
        for _ in 0..10 {
            store.put("c", &format!("k{i:05}"), value(i)).await.unwrap();
            acked.push(i);
            i += 1;
        }
        store.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(store.breaker().state(), BreakerState::Open);
    // More than 50% of at least 5 calls failed: exactly 5 attempts, then none while open.
    assert_eq!(attempts(&registry, "transient"), 5);
    assert!(store.backlog_bytes() > 0);
    fault.set(Mode::Healthy);
    let outage_end = Instant::now();

    // Writes keep succeeding; the breaker stays open for its 300 s, then 10 trial successes close it.
    for _ in 0..5 {
        store.put("c", &format!("k{i:05}"), value(i)).await.unwrap();
        acked.push(i);
        i += 1;
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(900)).await.unwrap();
    assert_eq!(
        store.backlog_bytes(),
        0,
        "the backlog drained after recovery"
    );
    assert_eq!(store.breaker().state(), BreakerState::Closed);
    assert_eq!(
        attempts(&registry, "transient"),
        5,
        "no attempt while the breaker was open"
    );

    let closed = store.close(Duration::from_secs(10)).await;
    closed.unwrap();
    let reopened = open_on(outage_config(&dir.path().join("fresh")), fault.clone(), "p").await;
    for id in &acked {
        assert_eq!(
            reopened.get("c", &format!("k{id:05}")).await.unwrap(),
            Some(value(*id)),
            "record {id} read back from the object store"
        );
    }
    reopened.close(Duration::from_secs(1)).await.unwrap();

    log.abort();
    let seen = seen.lock().clone();
    let opened = seen
        .iter()
        .find(|(_, e)| e.to == BreakerState::Open)
        .expect("the breaker opened");
    assert_eq!(opened.1.reason, TransitionReason::FailureRate);
    assert!(opened.0 >= outage_start && opened.0 < outage_end);
    let half_open = seen
        .iter()
        .find(|(_, e)| e.to == BreakerState::HalfOpen)
        .expect("half-open");
    assert!(
        half_open.0.duration_since(opened.0) >= Duration::from_secs(300),
        "open for 300 s"
    );
    let closed = seen
        .iter()
        .find(|(_, e)| e.to == BreakerState::Closed)
        .expect("closed");
    assert_eq!(closed.1.reason, TransitionReason::TrialsSucceeded);
    assert!(
        !seen
            .iter()
            .any(|(_, e)| e.reason == TransitionReason::TrialFailed)
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stay_within_the_retry_budget() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut cfg = outage_config(dir.path());
    cfg.upload.retry_budget.ratio = 0.5;
    cfg.upload.retry_budget.min_retries_per_second = 0;
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let store = Store::builder(cfg)
        .metrics(metrics)
        .object_store(fault.clone(), "p")
        .open()
        .await
        .unwrap();
    store.breaker().disable(); // only the budget limits retries here
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    fault.set(Mode::Unavailable);
    for s in 0..10 {
        for i in 0..5 {
            store
                .put("c", &format!("s{s}-{i}"), value(i))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    let failed = attempts(&registry, "transient");
    // 10 first attempts earn 5 retries; deposits expire after the budget's 10 s ttl.
    assert!(
        (11..=15).contains(&failed),
        "{failed} attempts for 10 segments"
    );
    assert!(attempts(&registry, "budget_exhausted") > 0);
    assert!(store.backlog_bytes() > 0, "nothing was dropped");
    fault.set(Mode::Healthy);
    store.close(Duration::from_secs(1)).await.ok();
}

#[tokio::test(start_paused = true)]
async fn a_permanent_403_dead_letters_the_segment_and_redrive_uploads_it() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(outage_config(dir.path()), fault.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    fault.set(Mode::Forbidden);
    for i in 0..30 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap(); // pinned segments are not backlog
    assert_eq!(
        fault.segment_puts.load(Ordering::SeqCst),
        1,
        "a 403 is not retried"
    );
    let page = store
        .dlq()
        .list(&Filter::queue(DLQ_QUEUE), None, 10)
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    let Payload::File(pinned) = page.entries[0].payload() else {
        panic!("a pinned file")
    };
    assert!(
        pinned.path.exists(),
        "the segment stays pinned on local disk"
    );
    assert_eq!(store.get("c", "k05").await.unwrap(), Some(value(5)));
    store.close(Duration::from_secs(1)).await.unwrap();

    // After a restart (which needs the manifest) the segment is still pinned, not re-queued, and
    // redrive uploads it once access returns.
    fault.set(Mode::Healthy);
    let store = Store::builder(outage_config(dir.path()))
        .object_store(fault.clone(), "p")
        .open()
        .await
        .unwrap();
    let report = store.recovery().clone();
    assert_eq!(
        (report.pinned_segments, report.requeued_segments),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(store.get("c", "k05").await.unwrap(), Some(value(5)));
    fault.set(Mode::Forbidden);
    let report = store
        .dlq()
        .redrive(&Filter::queue(DLQ_QUEUE))
        .await
        .unwrap();
    assert_eq!(report.failed, 1, "still forbidden");
    fault.set(Mode::Healthy);
    let report = store
        .dlq()
        .redrive(&Filter::queue(DLQ_QUEUE))
        .await
        .unwrap();
    assert_eq!((report.succeeded, report.failed), (1, 0));
    assert!(store.dlq().is_empty());
    assert!(
        !pinned.path.exists(),
        "the pinned file is released once committed"
    );
    assert_eq!(count_objects(&*fault, "p/segments/c").await, 1);
    store.close(Duration::from_secs(1)).await.unwrap();
    let fresh = open_on(outage_config(&dir.path().join("fresh")), fault.clone(), "p").await;
    for i in 0..30 {
        assert_eq!(
            fresh.get("c", &format!("k{i:02}")).await.unwrap(),
            Some(value(i))
        );
    }
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn writes_past_the_backlog_bound_are_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut cfg = outage_config(dir.path());
    cfg.upload.max_backlog_bytes = 20 * 1024;
    let store = open_on(cfg, fault.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store
        .create_collection("local", TieringPolicy::Memory)
        .await
        .unwrap();
    fault.set(Mode::Unavailable);
    let mut acked = 0;
    let refused = loop {
        match store.put("c", &format!("k{acked:05}"), value(acked)).await {
            Ok(()) => acked += 1,
            Err(error) => break error,
        }
        assert!(acked < 10_000, "the bound never applied");
    };
    let WriteError::Backpressure {
        backlog_bytes,
        limit,
        retry_after,
    } = refused
    else {
        panic!("{refused:?}")
    };
    assert!(backlog_bytes > limit && retry_after > Duration::ZERO);
    // Memory collections need no upload and keep accepting writes.
    store
        .put("local", "x", Bytes::from_static(b"1"))
        .await
        .unwrap();
    for i in 0..acked {
        assert_eq!(
            store.get("c", &format!("k{i:05}")).await.unwrap(),
            Some(value(i))
        );
    }
    fault.set(Mode::Healthy);
    store.flush().await.unwrap();
    store
        .wait_uploaded(Duration::from_secs(1200))
        .await
        .unwrap();
    store
        .put("c", "after", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    store.close(Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_shared_dlq_given_to_the_builder_holds_the_dead_lettered_segment() {
    let dir = tempfile::tempdir().unwrap();
    let shared = mainstay_dlq::Dlq::open(
        dir.path().join("app-dlq"),
        mainstay_dlq::DlqConfig::default(),
    )
    .await
    .unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = Store::builder(outage_config(&dir.path().join("store")))
        .object_store(fault.clone(), "p")
        .dlq(shared.clone())
        .open()
        .await
        .unwrap();
    assert!(
        !dir.path().join("store").join("dlq").exists(),
        "the store opens no dead-letter queue of its own"
    );
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    fault.set(Mode::Forbidden);
    store.put("c", "k", value(1)).await.unwrap();
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    let page = shared.list(&Filter::queue(DLQ_QUEUE), None, 10).unwrap();
    assert_eq!(
        page.entries.len(),
        1,
        "the segment is in the application's queue"
    );
    assert!(
        shared.has_handler(DLQ_QUEUE),
        "with the store's redrive handler"
    );
    fault.set(Mode::Healthy);
    let report = shared.redrive(&Filter::queue(DLQ_QUEUE)).await.unwrap();
    assert_eq!((report.succeeded, report.failed), (1, 0));
    store.close(Duration::from_secs(1)).await.unwrap();
}

/// The sum of the samples of `family` whose line contains `needle`.
fn samples(registry: &Registry, family: &str, needle: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")) && line.contains(needle))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Every object-store call counts in `storage_object_store_requests_total`, failed ones too, so
/// that the failure ratio the `ObjectStoreFailures` alert watches is errors over requests.
#[tokio::test(start_paused = true)]
async fn object_store_requests_count_every_call_failed_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let store = Store::builder(outage_config(dir.path()))
        .metrics(metrics)
        .object_store(fault.clone(), "p")
        .open()
        .await
        .unwrap();
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    let requests = || samples(&registry, "storage_object_store_requests_total", "");
    let failures = || {
        samples(
            &registry,
            "storage_object_store_errors_total",
            "error_type=\"transient\"",
        )
    };
    for i in 0..40 {
        store.put("c", &format!("k{i:05}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(60)).await.unwrap();
    let healthy = requests();
    assert!(healthy >= 2, "uploads and a manifest commit: {healthy}");
    assert_eq!(failures(), 0);

    fault.set(Mode::Unavailable);
    for i in 40..60 {
        store.put("c", &format!("k{i:05}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let failed = failures();
    assert!(failed >= 1, "the outage failed calls");
    assert!(
        requests() >= healthy + failed,
        "every failed call is a request: {} requests, {healthy} before the outage, {failed} failed",
        requests()
    );
    fault.set(Mode::Healthy);
    store.wait_uploaded(Duration::from_secs(900)).await.unwrap();
    store.close(Duration::from_secs(10)).await.unwrap();
}
