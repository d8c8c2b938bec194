//! The bulkhead never exceeds its limit, bounds its queue and its waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mainstay_resilience::{Bulkhead, BulkheadConfig, BulkheadError, ResilienceMetrics};
use prometheus_client::registry::Registry;

use crate::support::{exposition, sample};

#[tokio::test(start_paused = true)]
async fn never_more_than_its_limit_and_a_bounded_queue() {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let config = BulkheadConfig {
        max_concurrent: 3,
        max_queue: 2,
        max_wait: None,
    };
    let bulkhead = Bulkhead::new("db", config, Some(metrics.clone())).expect("valid");
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (bulkhead, running, most) = (bulkhead.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                bulkhead
                    .run(async {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            })
        })
        .collect();
    let mut admitted = 0;
    let mut full = 0;
    for task in tasks {
        match task.await.expect("no panic") {
            Ok(()) => admitted += 1,
            Err(BulkheadError::Full {
                max_concurrent: 3,
                max_queue: 2,
            }) => full += 1,
            Err(other) => unexpected(&other),
        }
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
    assert_eq!(
        (admitted, full),
        (5, 15),
        "3 running and 2 queued; the rest rejected at once"
    );
    assert_eq!(
        sample(
            &exposition(&registry),
            r#"bulkhead_rejections_total{bulkhead="db"}"#
        ),
        Some(15.0)
    );
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
}

fn unexpected(error: &BulkheadError) {
    assert!(
        matches!(error, BulkheadError::Full { .. }),
        "unexpected {error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queued_caller_waits_at_most_max_wait() {
    let config = BulkheadConfig {
        max_concurrent: 1,
        max_queue: 1,
        max_wait: Some(Duration::from_millis(100)),
    };
    let bulkhead = Bulkhead::new("slow", config, None).expect("valid");
    let holder = bulkhead.acquire().await.expect("free slot");
    let result = bulkhead.acquire().await;
    assert_eq!(
        result.err(),
        Some(BulkheadError::WaitTimedOut {
            waited: Duration::from_millis(100)
        })
    );
    assert_eq!(bulkhead.waiting(), 0, "a timed-out waiter leaves the queue");
    drop(holder);
    assert!(bulkhead.acquire().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let config = BulkheadConfig {
        max_concurrent: 1,
        max_queue: 1,
        max_wait: None,
    };
    let bulkhead = Bulkhead::new("cancel", config, None).expect("valid");
    let _holder = bulkhead.acquire().await.expect("free slot");
    let waited = tokio::time::timeout(Duration::from_millis(10), bulkhead.acquire()).await;
    assert!(waited.is_err());
    assert_eq!(bulkhead.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_exports_in_flight_waiting_maximum_and_wait_times() {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let config = BulkheadConfig {
        max_concurrent: 2,
        max_queue: 1,
        max_wait: Some(Duration::from_secs(5)),
    };
    let bulkhead = Bulkhead::new("db", config, Some(metrics.clone())).expect("valid");
    let gauge = |name: &str| {
        sample(
            &exposition(&registry),
            &format!(r#"{name}{{bulkhead="db"}}"#),
        )
    };
    assert_eq!(gauge("bulkhead_max_concurrent"), Some(2.0));
    assert_eq!(gauge("bulkhead_in_flight"), Some(0.0));

    let first = bulkhead.acquire().await.expect("free");
    let second = bulkhead.acquire().await.expect("free");
    assert_eq!(gauge("bulkhead_in_flight"), Some(2.0));
    let waiter = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move { bulkhead.acquire().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert_eq!(gauge("bulkhead_waiting"), Some(1.0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(first);
    waiter.await.expect("no panic").expect("a slot after 2 s");
    assert_eq!(gauge("bulkhead_waiting"), Some(0.0));
    assert_eq!(gauge("bulkhead_in_flight"), Some(1.0));
    drop(second);
    assert_eq!(gauge("bulkhead_in_flight"), Some(0.0));

    // Two immediate slots and one after 2 s: three waits, 2 s in all, one above a second.
    let text = exposition(&registry);
    let series = |suffix: &str| sample(&text, &format!("bulkhead_wait_seconds_{suffix}"));
    assert_eq!(series(r#"count{bulkhead="db"}"#), Some(3.0), "{text}");
    assert_eq!(series(r#"sum{bulkhead="db"}"#), Some(2.0), "{text}");
    assert_eq!(
        series(r#"bucket{le="0.0",bulkhead="db"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(r#"bucket{le="1.0",bulkhead="db"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(r#"bucket{le="2.5",bulkhead="db"}"#),
        Some(3.0),
        "{text}"
    );
}
