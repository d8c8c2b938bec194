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
    let bulkhead = Bulkhead::new("db", config, Some(&metrics)).expect("valid");
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
