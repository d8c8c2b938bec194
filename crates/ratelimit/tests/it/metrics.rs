//! The exposition: every family once, policy labels from configuration, never an identity.

use std::collections::BTreeSet;

use mainstay_ratelimit::{
    CallerIdentity, LimitRequest, RateLimitConfig, RateLimitMetrics, RateLimiter,
};
use mainstay_resilience::ResilienceMetrics;
use prometheus_client::registry::Registry;

#[tokio::test]
async fn every_family_is_exported_once_and_labels_carry_no_identity() {
    let mut registry = Registry::default();
    let metrics = RateLimitMetrics::register(&mut registry);
    let resilience = ResilienceMetrics::register(&mut registry);
    // Two limiters share one registry through the same handles.
    let limiters: Vec<RateLimiter> = (0..2)
        .map(|_| {
            RateLimiter::builder(RateLimitConfig::default())
                .metrics(metrics.clone())
                .resilience_metrics(resilience.clone())
                .build()
                .unwrap()
        })
        .collect();
    let caller = CallerIdentity::new("secret-org", "api-key", "free", "secret-principal");
    for limiter in &limiters {
        for _ in 0..25 {
            let _ = limiter
                .check(&LimitRequest {
                    caller: Some(&caller),
                    client: Some("203.0.113.99".parse().unwrap()),
                    route: Some("PUT /v1/collections/{collection}/records/{id}"),
                })
                .await;
        }
        limiter.sweep();
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let mut families = BTreeSet::new();
    for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap().to_owned();
        assert!(families.insert(name.clone()), "duplicate family {name}");
    }
    for family in [
        "ratelimit_decisions",
        "ratelimit_backend_errors",
        "ratelimit_fallback_active",
        "ratelimit_fallback_switches",
        "ratelimit_redis_duration_seconds",
        "ratelimit_local_cache_hits",
        "ratelimit_local_keys",
    ] {
        assert!(families.contains(family), "{family} missing:\n{text}");
    }
    assert!(
        text.contains(
            r#"ratelimit_decisions_total{policy="class:writes",decision="allowed",backend="memory"} 40"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ratelimit_decisions_total{policy="class:writes",decision="denied",backend="memory"} 10"#
        ),
        "{text}"
    );
    for identity in ["secret-org", "secret-principal", "203.0.113.99"] {
        assert!(!text.contains(identity), "{identity} leaked");
    }
}
