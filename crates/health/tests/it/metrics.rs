//! Metric families: registered once per registry, values read back from the text encoding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_health::{CheckOutcome, Criticality, HealthMetrics, HealthRegistry, View};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use crate::support::{Mode, TestCheck, config, until};

/// Parses the samples of an OpenMetrics text into `series -> value`, failing on a family that
/// is declared twice.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let family = declaration
                .split_whitespace()
                .next()
                .expect("family name")
                .to_owned();
            assert!(
                !families.contains(&family),
                "family {family} declared twice:\n{text}"
            );
            families.push(family);
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            samples.insert(series.to_owned(), value.parse().expect("sample value"));
        }
    }
    assert_eq!(
        families,
        [
            "dependency_health",
            "health_check_duration_seconds",
            "health_check_failures",
            "health_disk_free_ratio",
            "health_memory_used_ratio",
            "health_ready",
            "health_check_critical"
        ]
    );
    samples
}

fn scrape(registry: &Registry) -> BTreeMap<String, f64> {
    let mut text = String::new();
    encode(&mut text, registry).expect("encodes");
    parse(&text)
}

#[tokio::test]
async fn metrics_follow_each_run_and_are_registered_once() {
    let clock = ManualClock::new();
    let mut prometheus = Registry::default();
    let metrics = HealthMetrics::register(&mut prometheus);
    let build = || {
        HealthRegistry::builder(config(), "1.2.3")
            .clock(Arc::new(clock.clone()))
            .metrics(metrics.clone())
            .build()
            .expect("valid config")
    };
    // Two registries share the families: each registers its own dependencies' series.
    let first = build();
    let second = build();
    let redis = TestCheck::healthy("redis", &clock);
    let store = TestCheck::new(
        "store",
        Criticality::NonCritical,
        &clock,
        Mode::Return(CheckOutcome::degraded("slow")),
    );
    let hanging = TestCheck::new("queue", Criticality::Critical, &clock, Mode::Hang)
        .with_timeout(Duration::from_millis(20));
    first.register(Arc::new(redis.clone())).expect("unique");
    first.register(Arc::new(store.clone())).expect("unique");
    second.register(Arc::new(hanging.clone())).expect("unique");
    first.mark_started();
    second.mark_started();

    first.readiness(View::Public).await;
    let probe = tokio::spawn({
        let second = second.clone();
        async move { second.readiness(View::Public).await }
    });
    until("the timeout to be armed", || clock.pending_sleeps() == 1).await;
    clock.advance(Duration::from_millis(20));
    assert_eq!(probe.await.expect("probe").status_code, 503);

    let samples = scrape(&prometheus);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} in {samples:?}"))
    };
    assert!((value(r#"dependency_health{dependency="redis"}"#) - 1.0).abs() < f64::EPSILON);
    assert!((value(r#"dependency_health{dependency="store"}"#) - 0.5).abs() < f64::EPSILON);
    assert!(value(r#"dependency_health{dependency="queue"}"#).abs() < f64::EPSILON);
    // Which checks are critical, from registration on: the "critical dependency down" alert
    // joins this with `dependency_health`.
    assert!((value(r#"health_check_critical{dependency="queue"}"#) - 1.0).abs() < f64::EPSILON);
    assert!(value(r#"health_check_critical{dependency="store"}"#).abs() < f64::EPSILON);
    assert!(
        (value(r#"health_check_failures_total{dependency="queue"}"#) - 1.0).abs() < f64::EPSILON
    );
    // Every registered check has its failure series from registration on, zero until it fails.
    assert!(value(r#"health_check_failures_total{dependency="store"}"#).abs() < f64::EPSILON);
    assert!(value(r#"health_check_failures_total{dependency="redis"}"#).abs() < f64::EPSILON);
    assert!(
        (value(r#"health_check_duration_seconds_count{dependency="redis"}"#) - 1.0).abs()
            < f64::EPSILON
    );
    assert!(
        (value(r#"health_check_duration_seconds_sum{dependency="queue"}"#) - 0.02).abs() < 1e-9
    );

    // Cached probes record nothing; the next run does.
    first.readiness(View::Public).await;
    let samples = scrape(&prometheus);
    assert!(
        (samples[r#"health_check_duration_seconds_count{dependency="redis"}"#] - 1.0).abs()
            < f64::EPSILON
    );
    redis.set_mode(Mode::Return(CheckOutcome::unhealthy("down")));
    clock.advance(Duration::from_secs(1));
    first.readiness(View::Public).await;
    let samples = scrape(&prometheus);
    assert!(samples[r#"dependency_health{dependency="redis"}"#].abs() < f64::EPSILON);
    assert!(
        (samples[r#"health_check_failures_total{dependency="redis"}"#] - 1.0).abs() < f64::EPSILON
    );
    assert!(
        (samples[r#"health_check_duration_seconds_count{dependency="redis"}"#] - 2.0).abs()
            < f64::EPSILON
    );
}

/// `health_ready` is what the readiness probe answers: 0 before start-up completes, 1 once the
/// checks pass, 0 while a critical check is unhealthy, 1 again after it recovers, 0 from the
/// beginning of shutdown.
#[tokio::test]
async fn the_ready_gauge_follows_the_readiness_probe() {
    let clock = ManualClock::new();
    let mut prometheus = Registry::default();
    let metrics = HealthMetrics::register(&mut prometheus);
    let registry = HealthRegistry::builder(config(), "1.2.3")
        .clock(Arc::new(clock.clone()))
        .metrics(metrics)
        .build()
        .expect("valid config");
    let redis = TestCheck::healthy("redis", &clock);
    registry.register(Arc::new(redis.clone())).expect("unique");
    let ready = || scrape(&prometheus)["health_ready"];

    assert!(
        ready().abs() < f64::EPSILON,
        "exported, at 0, before start-up"
    );
    registry.mark_started();
    assert_eq!(registry.readiness(View::Public).await.status_code, 200);
    assert!((ready() - 1.0).abs() < f64::EPSILON);

    redis.set_mode(Mode::Return(CheckOutcome::unhealthy("down")));
    clock.advance(Duration::from_secs(1));
    assert_eq!(registry.readiness(View::Public).await.status_code, 503);
    assert!(ready().abs() < f64::EPSILON);

    redis.set_mode(Mode::Return(CheckOutcome::healthy()));
    clock.advance(Duration::from_secs(1));
    assert_eq!(registry.readiness(View::Public).await.status_code, 200);
    assert!((ready() - 1.0).abs() < f64::EPSILON);

    registry.begin_shutdown();
    assert_eq!(registry.readiness(View::Public).await.status_code, 503);
    assert!(ready().abs() < f64::EPSILON);
}

/// The built-in `disk` and `memory` checks export the ratios they judge: NaN before their first
/// run, then the figures of the run (the report's percentages, unrounded).
#[tokio::test]
async fn the_builtin_checks_export_their_ratios() {
    let clock = ManualClock::new();
    let mut prometheus = Registry::default();
    let metrics = HealthMetrics::register(&mut prometheus);
    let mut enabled = config();
    enabled.disk.enabled = true;
    enabled.disk.path = std::env::temp_dir();
    enabled.memory.enabled = true;
    let registry = HealthRegistry::builder(enabled, "1.2.3")
        .clock(Arc::new(clock.clone()))
        .metrics(metrics)
        .build()
        .expect("valid config");
    let series = [
        "health_disk_free_ratio",
        r#"health_memory_used_ratio{scope="system"}"#,
        r#"health_memory_used_ratio{scope="process"}"#,
    ];
    let before = scrape(&prometheus);
    for name in series {
        assert!(
            before[name].is_nan(),
            "{name} before the first run: {before:?}"
        );
    }

    registry.mark_started();
    let report = registry.readiness(View::Admin).await.report;
    let percent = |check: &str, detail: &str| -> f64 {
        report.checks[check]
            .details
            .as_ref()
            .expect("admin details")[detail]
            .as_f64()
            .expect("a number")
    };
    let after = scrape(&prometheus);
    for (name, check, detail) in [
        (series[0], "disk", "free_percent"),
        (series[1], "memory", "system_used_percent"),
        (series[2], "memory", "process_used_percent"),
    ] {
        let ratio = after[name];
        assert!(ratio > 0.0 && ratio <= 1.0, "{name} = {ratio}");
        // The report rounds to two decimals of a percent.
        assert!(
            (ratio * 100.0 - percent(check, detail)).abs() <= 0.005 + 1e-9,
            "{name} = {ratio}, {detail} = {}",
            percent(check, detail)
        );
    }
}
