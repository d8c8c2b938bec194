//! The metric families: registered once, shared by instances, labelled by instance name.

use std::collections::BTreeMap;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_resilience::{
    BreakerConfig, Bulkhead, BulkheadConfig, CircuitBreaker, ErrorClass, ResilienceMetrics, Retry,
    RetryConfig,
};
use prometheus_client::registry::Registry;

use crate::support::{exposition, failure, sample};

#[tokio::test(start_paused = true)]
async fn every_family_appears_once_with_bounded_labels() {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let clock = ManualClock::new();
    let build = |name| {
        CircuitBreaker::builder(name, BreakerConfig::consecutive(1, Duration::from_secs(30)))
            .clock(clock.shared())
            .metrics(metrics.clone())
            .build()
            .expect("valid")
    };
    let redis = build("ratelimit-redis");
    let s3 = build("object-store");
    let _ = redis.call(&failure, || Ok::<_, &str>(()));
    let _ = redis.call(&failure, || Err::<(), _>("timeout"));
    let _ = redis.call(&failure, || Ok::<_, &str>(()));
    s3.disable();
    let retry = Retry::builder(
        "fetch",
        RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        },
    )
    .metrics(metrics.clone())
    .build()
    .expect("valid");
    let _ = retry
        .run(&|_: &&str| ErrorClass::TRANSIENT, |_| async {
            Err::<(), _>("503")
        })
        .await;
    let _bulkhead =
        Bulkhead::new("db", BulkheadConfig::default(), Some(metrics.clone())).expect("valid");

    let text = exposition(&registry);
    let mut families = BTreeMap::new();
    for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
        *families
            .entry(line.split(' ').nth(2).unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    assert!(
        families.values().all(|count| *count == 1),
        "duplicate family: {families:?}"
    );
    assert_eq!(
        families.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "bulkhead_in_flight",
            "bulkhead_max_concurrent",
            "bulkhead_rejections",
            "bulkhead_wait_seconds",
            "bulkhead_waiting",
            "circuit_breaker_calls",
            "circuit_breaker_state",
            "circuit_breaker_state_active",
            "circuit_breaker_transitions",
            "retry_attempts",
            "retry_budget_exhausted",
        ]
    );
    let check = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}")
    };
    check(r#"circuit_breaker_state{breaker="ratelimit-redis"}"#, 1.0);
    check(r#"circuit_breaker_state{breaker="object-store"}"#, 3.0);
    check(
        r#"circuit_breaker_calls_total{breaker="ratelimit-redis",outcome="success"}"#,
        1.0,
    );
    check(
        r#"circuit_breaker_calls_total{breaker="ratelimit-redis",outcome="failure"}"#,
        1.0,
    );
    check(
        r#"circuit_breaker_calls_total{breaker="ratelimit-redis",outcome="rejected"}"#,
        1.0,
    );
    check(
        r#"circuit_breaker_calls_total{breaker="ratelimit-redis",outcome="slow"}"#,
        0.0,
    );
    check(
        r#"circuit_breaker_transitions_total{breaker="ratelimit-redis",from="closed",to="open"}"#,
        1.0,
    );
    check(
        r#"circuit_breaker_transitions_total{breaker="object-store",from="closed",to="disabled"}"#,
        1.0,
    );
    check(
        r#"retry_attempts_total{operation="fetch",outcome="transient"}"#,
        3.0,
    );
    check(
        r#"retry_attempts_total{operation="fetch",outcome="success"}"#,
        0.0,
    );
    check(r#"bulkhead_rejections_total{bulkhead="db"}"#, 0.0);
    // The usual transitions are there at zero before they first happen.
    check(
        r#"circuit_breaker_transitions_total{breaker="object-store",from="half_open",to="open"}"#,
        0.0,
    );
    check_gauge(&registry, "object-store", 3.0);
    check_gauge(&registry, "ratelimit-redis", 1.0);

    // Half-open and forced open have their gauge values too.
    clock.advance(Duration::from_secs(30));
    let trial = redis.try_acquire().expect("trial");
    check_gauge(&registry, "ratelimit-redis", 2.0);
    drop(trial);
    redis.force_open();
    check_gauge(&registry, "ratelimit-redis", 4.0);
    redis.reset();
    check_gauge(&registry, "ratelimit-redis", 0.0);
}

/// `circuit_breaker_state` is `value`, and `circuit_breaker_state_active` is 1 for that state
/// only.
fn check_gauge(registry: &Registry, breaker: &str, value: f64) {
    let text = exposition(registry);
    let series = format!(r#"circuit_breaker_state{{breaker="{breaker}"}}"#);
    assert_eq!(sample(&text, &series), Some(value));
    for (state, state_value) in [
        ("closed", 0.0),
        ("open", 1.0),
        ("half_open", 2.0),
        ("disabled", 3.0),
        ("forced_open", 4.0),
    ] {
        let series =
            format!(r#"circuit_breaker_state_active{{breaker="{breaker}",state="{state}"}}"#);
        let active = if (state_value - value).abs() < f64::EPSILON {
            1.0
        } else {
            0.0
        };
        assert_eq!(sample(&text, &series), Some(active), "{series}\n{text}");
    }
}

/// Rejections are counted per thread (no shared cache line while an open breaker rejects every
/// call at once, decision 0094) and summed when read: the snapshot and the exported series hold
/// every one, from more threads than there are stripes.
#[test]
fn rejections_from_many_threads_are_all_counted() {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let breaker = CircuitBreaker::builder(
        "striped",
        BreakerConfig::consecutive(1, Duration::from_secs(3_600)),
    )
    .clock(ManualClock::new().shared())
    .metrics(metrics.clone())
    .build()
    .expect("valid");
    let _ = breaker.call(&failure, || Err::<(), _>("timeout"));
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let breaker = breaker.clone();
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    assert!(breaker.call(&failure, || Ok::<_, &str>(())).is_err());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    let _ = breaker.call(&failure, || Ok::<_, &str>(()));
    assert_eq!(breaker.snapshot().rejected, 12_001);
    assert_eq!(breaker.snapshot().failures, 1);
    let text = exposition(&registry);
    assert_eq!(
        sample(
            &text,
            r#"circuit_breaker_calls_total{breaker="striped",outcome="rejected"}"#
        ),
        Some(12_001.0),
        "{text}"
    );
}
