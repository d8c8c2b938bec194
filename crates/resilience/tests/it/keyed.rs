//! Keyed breakers: one per key on demand, capped, idle ones evicted, metrics under the set's name.

use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_resilience::{BreakerConfig, KeyedBreakerConfig, KeyedBreakers, ResilienceMetrics};
use prometheus_client::registry::Registry;

use crate::support::{Closed, Open, exposition, failure};

fn set(max_keys: usize) -> (KeyedBreakers<String>, ManualClock, Registry) {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let clock = ManualClock::new();
    let config = KeyedBreakerConfig {
        breaker: BreakerConfig::consecutive(2, Duration::from_secs(30)),
        max_keys,
        idle_timeout: Duration::from_secs(60),
    };
    let set = KeyedBreakers::with_clock("upstream-hosts", config, clock.shared(), metrics.clone())
        .expect("a valid configuration");
    (set, clock, registry)
}

#[test]
fn each_key_has_its_own_breaker() {
    let (set, _clock, _registry) = set(10);
    let bad = set.get(&"bad.example".to_owned());
    for _ in 0..2 {
        let _ = bad.call(&failure, || Err::<(), _>("refused"));
    }
    assert_eq!(set.get(&"bad.example".to_owned()).state(), Open);
    assert_eq!(set.get(&"good.example".to_owned()).state(), Closed);
    assert_eq!(set.len(), 2);
}

#[test]
fn idle_breakers_are_evicted() {
    let (set, clock, _registry) = set(10);
    let _ = set.get(&"a".to_owned());
    clock.advance(Duration::from_secs(30));
    let _ = set.get(&"b".to_owned());
    clock.advance(Duration::from_secs(30));
    assert_eq!(set.evict_idle(), 1, "a has been idle for 60 s, b for 30 s");
    assert!(set.peek(&"a".to_owned()).is_none());
    assert!(set.peek(&"b".to_owned()).is_some());
    // Creating a key sweeps on its own once an idle timeout has passed since the last sweep.
    clock.advance(Duration::from_secs(60));
    let _ = set.get(&"c".to_owned());
    assert_eq!(set.len(), 1);
}

#[test]
fn the_set_never_holds_more_than_its_cap() {
    let (set, clock, _registry) = set(3);
    for key in ["a", "b", "c"] {
        let _ = set.get(&key.to_owned());
        clock.advance(Duration::from_secs(1));
    }
    let _ = set.get(&"a".to_owned());
    let _ = set.get(&"d".to_owned());
    assert_eq!(set.len(), 3);
    assert!(
        set.peek(&"b".to_owned()).is_none(),
        "b was the least recently used"
    );
    for key in 0..100 {
        let _ = set.get(&format!("key-{key}"));
    }
    assert_eq!(set.len(), 3);
}

#[test]
fn metrics_report_under_the_set_name_never_per_key() {
    let (set, _clock, registry) = set(100);
    for key in 0..20 {
        let breaker = set.get(&format!("tenant-{key}"));
        for _ in 0..2 {
            let _ = breaker.call(&failure, || Err::<(), _>("down"));
        }
    }
    let text = exposition(&registry);
    assert!(
        !text.contains("tenant-"),
        "a key leaked into a label:\n{text}"
    );
    assert!(
        text.contains(
            r#"circuit_breaker_calls_total{breaker="upstream-hosts",outcome="failure"} 40"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"circuit_breaker_transitions_total{breaker="upstream-hosts",from="closed",to="open"} 20"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"circuit_breaker_state{breaker="upstream-hosts"}"#),
        "{text}"
    );
}

#[test]
fn a_breaker_someone_holds_is_never_evicted() {
    let (set, clock, _registry) = set(2);
    let held = set.get(&"held".to_owned());
    for _ in 0..2 {
        let _ = held.call(&failure, || Err::<(), _>("down"));
    }
    clock.advance(Duration::from_secs(1));
    let _ = set.get(&"b".to_owned());
    clock.advance(Duration::from_secs(1));
    // "held" is the least recently used, but its holder may still report into it.
    let _ = set.get(&"c".to_owned());
    assert_eq!(set.len(), 2);
    assert!(set.peek(&"b".to_owned()).is_none(), "b was evicted instead");
    let kept = set.peek(&"held".to_owned()).expect("held is kept");
    assert_eq!(kept.state(), Open, "with its state");

    // Nor by the idle sweep.
    clock.advance(Duration::from_secs(600));
    assert_eq!(set.evict_idle(), 1, "c, idle and not held");
    assert!(set.peek(&"held".to_owned()).is_some());

    // Once dropped, it is evicted like any other.
    drop(kept);
    drop(held);
    clock.advance(Duration::from_secs(600));
    assert_eq!(set.evict_idle(), 1);
    assert!(set.is_empty());
}

#[test]
fn a_set_whose_breakers_are_all_held_grows_past_its_cap_rather_than_evict_one() {
    let (set, _clock, _registry) = set(2);
    let held: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|key| set.get(&(*key).to_owned()))
        .collect();
    assert_eq!(set.len(), 3, "every breaker is held by a caller");
    drop(held);
    let _ = set.get(&"d".to_owned());
    assert_eq!(set.len(), 2, "back under the cap once they are released");
    assert!(set.peek(&"d".to_owned()).is_some());
    assert!(
        set.peek(&"c".to_owned()).is_some(),
        "the most recent of the released"
    );
}

#[test]
fn eviction_follows_use_not_creation() {
    let (set, clock, _registry) = set(3);
    for key in ["a", "b", "c"] {
        let _ = set.get(&key.to_owned());
        clock.advance(Duration::from_secs(1));
    }
    // Used in the order b, a, c: b is now the least recently used.
    for key in ["b", "a", "c"] {
        let _ = set.get(&key.to_owned());
        clock.advance(Duration::from_secs(1));
    }
    let _ = set.get(&"d".to_owned());
    assert!(set.peek(&"b".to_owned()).is_none());
    let _ = set.get(&"e".to_owned());
    assert!(set.peek(&"a".to_owned()).is_none());
    assert!(set.peek(&"c".to_owned()).is_some());
    assert_eq!(set.len(), 3);
}
