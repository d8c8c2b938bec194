//! TTL and cleanup on a manual clock.

use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_dlq::{DlqConfig, QueueConfig};

use crate::{config, entry, evicting, metric, open_with};

#[tokio::test]
async fn cleanup_archives_expired_entries_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = config();
    config.queues.insert("orders".into(), evicting(100));
    config
        .queues
        .insert("tiering".into(), QueueConfig::retain_all(100));
    let h = open_with(dir.path(), config.clone(), &clock).await;
    let old = h.dlq.push(entry("orders", "old")).await.unwrap();
    let kept = h.dlq.push(entry("tiering", "kept")).await.unwrap();
    clock.advance(Duration::from_secs(1800));
    let young = h.dlq.push(entry("orders", "young")).await.unwrap();
    assert_eq!(
        h.dlq.get(old).unwrap().expires_at(),
        Some(h.dlq.get(old).unwrap().last_failure() + Duration::from_secs(3600))
    );

    clock.advance(Duration::from_secs(1799));
    assert_eq!(h.dlq.cleanup_expired().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(h.dlq.cleanup_expired().await.unwrap(), 1);
    assert!(!h.dlq.contains(old));
    assert!(h.dlq.contains(young));
    assert!(h.dlq.contains(kept));
    assert_eq!(
        metric(&h.registry, "dlq_expired_total{queue=\"orders\"}"),
        1.0
    );
    let archive = std::fs::read_to_string(dir.path().join("archive.jsonl")).unwrap();
    assert!(archive.contains("\"reason\":\"expired\""), "{archive}");
    assert!(archive.contains("\"key\":\"old\""), "{archive}");

    clock.advance(Duration::from_secs(365 * 86_400));
    assert_eq!(h.dlq.cleanup_expired().await.unwrap(), 1);
    assert!(
        h.dlq.contains(kept),
        "a queue without TTL keeps its entries"
    );
    drop(h);
    let h = open_with(dir.path(), config, &clock).await;
    assert_eq!(h.dlq.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_cleanup_runs_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = DlqConfig {
        cleanup_interval: Duration::from_secs(3600),
        ..config()
    };
    config.queues.insert("orders".into(), evicting(100));
    let h = open_with(dir.path(), config, &clock).await;
    h.dlq.push(entry("orders", "a")).await.unwrap();
    let task = h.dlq.spawn_cleanup();
    // Advance one interval for every sleep the cleanup task starts.
    let mut ticks = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while !h.dlq.is_empty() {
            if clock.sleeps_started() > ticks {
                clock.advance(Duration::from_secs(3600));
                ticks += 1;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cleanup task removes the expired entry");
    // The entry expires one hour after its push: the first tick removes it.
    assert_eq!(ticks, 1);
    drop(task);
}
