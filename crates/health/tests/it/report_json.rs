//! The JSON shape of reports, and what the public and admin views show.

use std::time::{Duration, SystemTime};

use mainstay_clock::ManualClock;
use mainstay_health::{CheckOutcome, Criticality, Report, View};
use serde_json::json;

use crate::support::{Mode, TestCheck, config, started, until};

#[tokio::test]
async fn report_json_has_exactly_the_documented_shape() {
    let clock = ManualClock::starting_at(SystemTime::UNIX_EPOCH);
    let redis = TestCheck::new(
        "redis",
        Criticality::Critical,
        &clock,
        Mode::Wait(
            Duration::from_micros(1_250),
            CheckOutcome::healthy().with_detail("pool_size", 8),
        ),
    );
    let replica = TestCheck::new(
        "replica",
        Criticality::NonCritical,
        &clock,
        Mode::Return(
            CheckOutcome::degraded("replica 10.0.3.7:5432 lags by 12 s")
                .with_detail("lag_seconds", 12),
        ),
    );
    clock.advance(Duration::from_secs(1_700_000_000));
    let registry = started(config(), &clock, &[&redis, &replica]);
    clock.advance(Duration::from_secs(42));

    let probe = tokio::spawn({
        let registry = registry.clone();
        async move { registry.readiness(View::Public).await }
    });
    until("the redis check to wait", || {
        redis.calls() == 1 && clock.pending_sleeps() == 2
    })
    .await;
    clock.advance(Duration::from_micros(1_250));
    let public = probe.await.expect("probe task");
    let observed_at = "2023-11-14T22:14:02.000Z";
    assert_eq!(
        serde_json::to_value(&public.report).expect("serializes"),
        json!({
            "status": "degraded",
            "version": "1.2.3",
            "uptime_seconds": 42,
            "checks": {
                "redis": {
                    "status": "healthy",
                    "critical": true,
                    "latency_ms": 1.25,
                    "message": null,
                    "observed_at": observed_at,
                },
                "replica": {
                    "status": "degraded",
                    "critical": false,
                    "latency_ms": 0.0,
                    "message": "degraded",
                    "observed_at": observed_at,
                },
            },
        })
    );

    // The admin view shows the checks' own messages and details, from the same cached run.
    let admin = registry.deps(View::Admin).await;
    assert_eq!(
        serde_json::to_value(&admin.report).expect("serializes"),
        json!({
            "status": "degraded",
            "version": "1.2.3",
            "uptime_seconds": 42,
            "checks": {
                "redis": {
                    "status": "healthy",
                    "critical": true,
                    "latency_ms": 1.25,
                    "message": null,
                    "observed_at": observed_at,
                    "details": {"pool_size": 8},
                },
                "replica": {
                    "status": "degraded",
                    "critical": false,
                    "latency_ms": 0.0,
                    "message": "replica 10.0.3.7:5432 lags by 12 s",
                    "observed_at": observed_at,
                    "details": {"lag_seconds": 12},
                },
            },
        })
    );
    assert_eq!(redis.calls(), 1);

    // Reports round-trip, so clients and tests can read them back.
    let text = serde_json::to_string(&admin.report).expect("serializes");
    let parsed: Report = serde_json::from_str(&text).expect("parses");
    assert_eq!(parsed, admin.report);
}

#[tokio::test]
async fn lifecycle_and_liveness_reports_keep_the_shape() {
    let clock = ManualClock::new();
    let registry = mainstay_health::HealthRegistry::builder(config(), "9.9.9")
        .clock(std::sync::Arc::new(clock.clone()))
        .build()
        .expect("valid config");
    let startup = registry.startup().await;
    assert_eq!(
        serde_json::to_value(&startup.report).expect("serializes"),
        json!({
            "status": "unhealthy",
            "version": "9.9.9",
            "uptime_seconds": 0,
            "checks": {
                "startup": {
                    "status": "unhealthy",
                    "critical": true,
                    "latency_ms": 0.0,
                    "message": "startup not complete",
                    "observed_at": "2026-01-01T00:00:00.000Z",
                },
            },
        })
    );
    assert_eq!(
        serde_json::to_value(&registry.liveness().await.report).expect("serializes"),
        json!({"status": "healthy", "version": "9.9.9", "uptime_seconds": 0, "checks": {}})
    );
}

/// Issue 15, point 2: a check that is not healthy always says why in the public view, with a
/// reason that names no host, port or path: the check's own public reason, or a class the
/// registry reads from its message; the admin view keeps the full text.
#[tokio::test]
async fn a_failing_check_always_says_why_without_naming_anything_internal() {
    let clock = ManualClock::starting_at(SystemTime::UNIX_EPOCH);
    let cases = [
        (
            "refused",
            "Connection refused (os error 111) connecting to 10.0.0.5:6379",
            "connection refused",
        ),
        (
            "slow",
            "i/o timeout after 1s talking to redis.internal:6379",
            "timeout",
        ),
        (
            "reset",
            "connection reset by peer: 10.0.0.5:6379",
            "connection lost",
        ),
        (
            "dns",
            "failed to lookup address information: redis.internal",
            "name resolution failed",
        ),
        ("other", "/var/lib/mainstay/wal: something odd", "failing"),
    ];
    let checks: Vec<TestCheck> = cases
        .iter()
        .map(|(name, message, _)| {
            TestCheck::new(
                name,
                Criticality::NonCritical,
                &clock,
                Mode::Return(CheckOutcome::unhealthy(*message)),
            )
        })
        .chain(std::iter::once(TestCheck::new(
            "disk-ish",
            Criticality::NonCritical,
            &clock,
            Mode::Return(
                CheckOutcome::degraded("/data: 8% free, below 10%")
                    .with_public_reason("8% free < 10%"),
            ),
        )))
        .collect();
    let refs: Vec<&TestCheck> = checks.iter().collect();
    let registry = started(config(), &clock, &refs);
    let public = serde_json::to_value(registry.readiness(View::Public).await.report).expect("json");
    let admin = serde_json::to_value(registry.deps(View::Admin).await.report).expect("json");
    for (name, message, class) in cases {
        assert_eq!(public["checks"][name]["message"], class, "{name}");
        assert_eq!(admin["checks"][name]["message"], message, "{name}");
    }
    assert_eq!(public["checks"]["disk-ish"]["message"], "8% free < 10%");
    let shown = public.to_string();
    for internal in ["10.0.0.5", "6379", "redis.internal", "/var/lib", "/data"] {
        assert!(
            !shown.contains(internal),
            "{internal} in the public view: {shown}"
        );
    }
}
