//! Bounds: eviction with archive, archive off, reject, and the DLQ-wide capacity.

use std::fs;

use mainstay_clock::ManualClock;
use mainstay_dlq::{DlqConfig, OverflowPolicy, PushError, QueueConfig};

use crate::{config, entry, evicting, metric, open_with};

fn archive_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("archive.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_full_evict_queue_archives_its_oldest_entry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = config();
    config.queues.insert("orders".into(), evicting(3));
    let h = open_with(dir.path(), config.clone(), &clock).await;
    for key in ["a", "b", "c", "d", "e"] {
        h.dlq.push(entry("orders", key)).await.unwrap();
    }
    let keys: Vec<_> = h
        .dlq
        .list(&Default::default(), None, 10)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.key().to_owned())
        .collect();
    assert_eq!(keys, ["c", "d", "e"]);
    assert_eq!(
        metric(&h.registry, "dlq_evictions_total{queue=\"orders\"}"),
        2.0
    );
    assert_eq!(metric(&h.registry, "dlq_size{queue=\"orders\"}"), 3.0);
    let archived = archive_lines(dir.path());
    assert_eq!(archived.len(), 2);
    assert_eq!(archived[0]["reason"], "evicted");
    assert_eq!(archived[0]["entry"]["key"], "a");
    assert_eq!(archived[1]["entry"]["key"], "b");
    // The archive keeps the payload.
    assert!(archived[0]["entry"]["payload"]["base64"].is_string());
    drop(h);
    let h = open_with(dir.path(), config, &clock).await;
    assert_eq!(h.dlq.len(), 3);
}

#[tokio::test]
async fn eviction_without_archive_writes_no_archive() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = config();
    config.queues.insert(
        "orders".into(),
        QueueConfig {
            archive: false,
            ..evicting(1)
        },
    );
    let h = open_with(dir.path(), config, &clock).await;
    h.dlq.push(entry("orders", "a")).await.unwrap();
    h.dlq.push(entry("orders", "b")).await.unwrap();
    assert_eq!(h.dlq.peek("orders").unwrap().key(), "b");
    assert_eq!(
        metric(&h.registry, "dlq_evictions_total{queue=\"orders\"}"),
        1.0
    );
    assert!(archive_lines(dir.path()).is_empty());
}

#[tokio::test]
async fn a_full_reject_queue_refuses_with_a_typed_error_and_keeps_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = config();
    config
        .queues
        .insert("tiering".into(), QueueConfig::retain_all(2));
    let h = open_with(dir.path(), config, &clock).await;
    let a = h.dlq.push(entry("tiering", "a")).await.unwrap();
    h.dlq.push(entry("tiering", "b")).await.unwrap();
    let refused = h.dlq.push(entry("tiering", "c")).await;
    assert_eq!(
        refused,
        Err(PushError::QueueFull {
            queue: "tiering".into(),
            capacity: 2
        })
    );
    assert!(h.dlq.contains(a));
    assert_eq!(h.dlq.len(), 2);
    assert_eq!(
        metric(&h.registry, "dlq_rejected_total{queue=\"tiering\"}"),
        1.0
    );
    assert_eq!(
        metric(&h.registry, "dlq_evictions_total{queue=\"tiering\"}"),
        0.0
    );
    // No TTL: the entry never expires.
    assert_eq!(h.dlq.get(a).unwrap().expires_at(), None);
}

#[tokio::test]
async fn the_dlq_wide_bound_evicts_from_evict_queues_never_from_reject_queues() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = DlqConfig {
        total_capacity: 3,
        ..config()
    };
    config
        .queues
        .insert("tiering".into(), QueueConfig::retain_all(10));
    config.queues.insert("emails".into(), evicting(10));
    let h = open_with(dir.path(), config, &clock).await;
    h.dlq.push(entry("tiering", "t1")).await.unwrap();
    h.dlq.push(entry("emails", "e1")).await.unwrap();
    h.dlq.push(entry("tiering", "t2")).await.unwrap();
    // Full: the oldest evict-queue entry (e1) goes, although t1 is older.
    h.dlq.push(entry("tiering", "t3")).await.unwrap();
    assert_eq!(h.dlq.peek("emails"), None);
    assert_eq!(h.dlq.len(), 3);
    assert_eq!(
        metric(&h.registry, "dlq_evictions_total{queue=\"emails\"}"),
        1.0
    );
    // Nothing evictable is left: the push is refused.
    assert_eq!(
        h.dlq.push(entry("emails", "e2")).await,
        Err(PushError::TotalFull {
            what: "total_capacity"
        })
    );
    assert_eq!(h.dlq.len(), 3);
    let _ = OverflowPolicy::Evict;
}

#[test]
fn config_validation_names_the_key() {
    let mut config = DlqConfig::default();
    config
        .queues
        .insert("Bad Name".into(), QueueConfig::default());
    let err = config.validate().unwrap_err();
    assert_eq!(err.key, "queues");
    let mut config = DlqConfig::default();
    config.queues.insert(
        "orders".into(),
        QueueConfig {
            capacity: 0,
            ..QueueConfig::default()
        },
    );
    let err = config.validate().unwrap_err();
    assert_eq!(err.key, "queues.orders.capacity");
    assert!(err.to_string().contains("at least 1"), "{err}");
    DlqConfig::default().validate().unwrap();
    let defaults: DlqConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults, DlqConfig::default());
    assert_eq!(defaults.defaults.capacity, 1000);
    assert_eq!(
        defaults.defaults.ttl,
        Some(std::time::Duration::from_secs(7 * 86_400))
    );
    assert!(serde_json::from_str::<DlqConfig>(r#"{"nope": 1}"#).is_err());
}

#[tokio::test]
async fn queue_policies_change_on_the_running_queue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut config = config();
    config.queues.insert("orders".into(), evicting(10));
    let h = open_with(dir.path(), config, &clock).await;
    h.dlq.push(entry("orders", "a")).await.unwrap();
    h.dlq.push(entry("orders", "b")).await.unwrap();

    // An invalid policy names its key and changes nothing.
    let mut bad = std::collections::BTreeMap::new();
    bad.insert(
        "orders".to_owned(),
        QueueConfig {
            capacity: 0,
            ..QueueConfig::retain_all(1)
        },
    );
    let error = h
        .dlq
        .set_queue_policies(QueueConfig::default(), &bad)
        .unwrap_err();
    assert_eq!(error.key, "queues.orders.capacity");
    assert_eq!(
        h.dlq.queue_policies().1["orders"].overflow,
        OverflowPolicy::Evict
    );

    // Now `orders` rejects at 2 entries, and the new defaults govern queues not named.
    let mut queues = std::collections::BTreeMap::new();
    queues.insert("orders".to_owned(), QueueConfig::retain_all(2));
    let defaults = QueueConfig {
        capacity: 1,
        ..QueueConfig::default()
    };
    h.dlq.set_queue_policies(defaults, &queues).unwrap();
    assert!(matches!(
        h.dlq.push(entry("orders", "c")).await,
        Err(PushError::QueueFull { .. })
    ));
    h.dlq.push(entry("emails", "x")).await.unwrap();
    h.dlq.push(entry("emails", "y")).await.unwrap();
    let emails = h
        .dlq
        .list(&mainstay_dlq::Filter::queue("emails"), None, 10)
        .unwrap();
    assert_eq!(
        emails.entries.len(),
        1,
        "the new default capacity of 1 evicts"
    );
    assert_eq!(h.dlq.queue_policies().0.capacity, 1);
}

#[test]
fn a_ttl_of_none_is_written_and_read_as_a_string() {
    let never: QueueConfig = serde_json::from_str(r#"{"ttl": "none"}"#).unwrap();
    assert_eq!(never.ttl, None);
    let null: QueueConfig = serde_json::from_str(r#"{"ttl": null}"#).unwrap();
    assert_eq!(null.ttl, None);
    let two_hours: QueueConfig = serde_json::from_str(r#"{"ttl": "2h"}"#).unwrap();
    assert_eq!(two_hours.ttl, Some(std::time::Duration::from_secs(7200)));
    let written = serde_json::to_value(QueueConfig::retain_all(5)).unwrap();
    assert_eq!(written["ttl"], "none");
    let error = serde_json::from_str::<QueueConfig>(r#"{"ttl": "soon"}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("soon") && error.contains("none"), "{error}");
}
