//! Configuration defaults, parsing and validation errors that name the key.

use std::sync::Arc;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_health::{CheckOverride, ConfigError, HealthConfig, HealthRegistry};
use serde_json::json;

use crate::support::TestCheck;

#[test]
fn defaults_are_the_documented_ones() {
    let config = HealthConfig::default();
    assert_eq!(config.cache_interval, Duration::from_secs(1));
    assert_eq!(config.default_timeout, Duration::from_secs(2));
    assert!(!config.background_refresh);
    assert!(config.checks.is_empty());
    assert!(config.disk.enabled && config.memory.enabled);
    assert_eq!(config.disk.path, std::path::PathBuf::from("."));
    assert!((config.disk.degraded_below_free_percent - 10.0).abs() < f64::EPSILON);
    assert!((config.disk.unhealthy_below_free_percent - 5.0).abs() < f64::EPSILON);
    assert!((config.memory.degraded_above_used_percent - 85.0).abs() < f64::EPSILON);
    assert!((config.memory.unhealthy_above_used_percent - 95.0).abs() < f64::EPSILON);
    assert_eq!(config.validate(), Ok(()));
    // An empty section deserializes to the defaults.
    let empty: HealthConfig = serde_json::from_value(json!({})).expect("parses");
    assert_eq!(empty, config);
}

#[test]
fn parses_humantime_durations_and_overrides() {
    let config: HealthConfig = serde_json::from_value(json!({
        "cache_interval": "250ms",
        "background_refresh": true,
        "checks": {"redis": {"timeout": "500ms", "critical": false}},
        "disk": {"path": "/var/lib/mainstay"},
    }))
    .expect("parses");
    assert_eq!(config.cache_interval, Duration::from_millis(250));
    assert_eq!(
        config.checks["redis"],
        CheckOverride {
            timeout: Some(Duration::from_millis(500)),
            critical: Some(false)
        }
    );
    let written = serde_json::to_value(&config).expect("serializes");
    assert_eq!(written["cache_interval"], json!("250ms"));
    assert_eq!(written["default_timeout"], json!("2s"));

    let unknown = serde_json::from_value::<HealthConfig>(json!({"interval": "1s"}));
    let message = unknown.expect_err("unknown key refused").to_string();
    assert!(message.contains("unknown field `interval`"), "{message}");
}

/// Applies `change` to the defaults and checks that validation names `key`.
fn check(change: impl FnOnce(&mut HealthConfig), key: &str, message: &str) {
    let mut config = HealthConfig::default();
    change(&mut config);
    let error = config.validate().expect_err("invalid");
    assert_eq!(error.key(), key);
    assert_eq!(error.to_string(), message);
    let built = HealthRegistry::builder(config, "1.0.0").build();
    let built_error = built.expect_err("build validates too");
    assert_eq!(built_error.to_string(), error.to_string());
}

#[test]
fn zero_durations_are_refused() {
    check(
        |config| config.cache_interval = Duration::ZERO,
        "cache_interval",
        "`cache_interval` is 0s; set a duration above zero, such as \"2s\"",
    );
    check(
        |config| config.default_timeout = Duration::ZERO,
        "default_timeout",
        "`default_timeout` is 0s; set a duration above zero, such as \"2s\"",
    );
    check(
        |config| {
            config.checks.insert(
                "redis".to_owned(),
                CheckOverride {
                    timeout: Some(Duration::ZERO),
                    critical: None,
                },
            );
        },
        "checks.redis.timeout",
        "`checks.redis.timeout` is 0s; set a duration above zero, such as \"2s\"",
    );
}

#[test]
fn percentages_outside_0_to_100_are_refused() {
    check(
        |config| config.disk.degraded_below_free_percent = 101.0,
        "disk.degraded_below_free_percent",
        "`disk.degraded_below_free_percent` is 101; set a percentage from 0 to 100",
    );
    check(
        |config| config.disk.unhealthy_below_free_percent = -1.0,
        "disk.unhealthy_below_free_percent",
        "`disk.unhealthy_below_free_percent` is -1; set a percentage from 0 to 100",
    );
    check(
        |config| config.memory.degraded_above_used_percent = f64::NAN,
        "memory.degraded_above_used_percent",
        "`memory.degraded_above_used_percent` is NaN; set a percentage from 0 to 100",
    );
    check(
        |config| config.memory.unhealthy_above_used_percent = 150.0,
        "memory.unhealthy_above_used_percent",
        "`memory.unhealthy_above_used_percent` is 150; set a percentage from 0 to 100",
    );
    let mut edges = HealthConfig::default();
    edges.disk.unhealthy_below_free_percent = 0.0;
    edges.memory.unhealthy_above_used_percent = 100.0;
    assert_eq!(edges.validate(), Ok(()));
}

#[test]
fn thresholds_in_the_wrong_order_are_refused() {
    check(
        |config| config.disk.unhealthy_below_free_percent = 20.0,
        "disk.unhealthy_below_free_percent",
        "`disk.unhealthy_below_free_percent` (20) must be at most `disk.degraded_below_free_percent` (10)",
    );
    check(
        |config| config.memory.unhealthy_above_used_percent = 80.0,
        "memory.unhealthy_above_used_percent",
        "`memory.unhealthy_above_used_percent` (80) must be at least `memory.degraded_above_used_percent` (85)",
    );
}

#[test]
fn unknown_check_names_are_refused_with_the_known_ones() {
    let mut config = HealthConfig::default();
    config
        .checks
        .insert("redos".to_owned(), CheckOverride::default());
    assert_eq!(
        config.validate_check_names(&["redis", "disk"]),
        Err(ConfigError::UnknownCheck {
            key: "checks.redos".to_owned(),
            known: "disk, redis".to_owned(),
        })
    );
    assert_eq!(
        config
            .validate_check_names(&[])
            .expect_err("unknown")
            .to_string(),
        "`checks.redos` names no registered check; known checks: none"
    );

    let clock = ManualClock::new();
    let registry = HealthRegistry::builder(config, "1.0.0")
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("static values are valid");
    registry
        .register(Arc::new(TestCheck::healthy("redis", &clock)))
        .expect("unique");
    let error = registry.validate_check_names().expect_err("unknown");
    assert_eq!(error.key(), "checks.redos");
    assert_eq!(
        error.to_string(),
        "`checks.redos` names no registered check; known checks: disk, memory, redis"
    );
    registry
        .register(Arc::new(TestCheck::healthy("redos", &clock)))
        .expect("unique");
    assert_eq!(registry.validate_check_names(), Ok(()));
}
