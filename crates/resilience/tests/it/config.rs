//! Configuration structs: serde defaults, humantime durations, unknown keys refused, validation
//! naming the key.

use std::time::Duration;

use mainstay_resilience::{
    BreakerConfig, BulkheadConfig, CircuitBreaker, KeyedBreakerConfig, RetryBudgetConfig,
    RetryConfig, TripPolicy,
};

#[test]
fn an_empty_document_gives_the_documented_defaults() {
    let breaker: BreakerConfig = serde_json::from_str("{}").expect("valid");
    assert_eq!(breaker, BreakerConfig::critical_dependency());
    let retry: RetryConfig = serde_json::from_str("{}").expect("valid");
    assert_eq!(
        (
            retry.max_attempts,
            retry.base_delay,
            retry.multiplier,
            retry.max_delay,
            retry.jitter
        ),
        (
            3,
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(10),
            true
        )
    );
    let budget: RetryBudgetConfig = serde_json::from_str("{}").expect("valid");
    assert_eq!((budget.ratio, budget.min_retries_per_second), (0.2, 10));
    let bulkhead: BulkheadConfig = serde_json::from_str("{}").expect("valid");
    assert_eq!(bulkhead, BulkheadConfig::default());
    let keyed: KeyedBreakerConfig = serde_json::from_str("{}").expect("valid");
    assert_eq!(
        (keyed.max_keys, keyed.idle_timeout),
        (10_000, Duration::from_secs(600))
    );
}

#[test]
fn durations_are_humantime_strings() {
    let config: BreakerConfig = serde_json::from_str(
        r#"{"trip": "failure_rate", "window": "1m", "open_duration": "5m", "slow_call_threshold": "250ms",
            "half_open_successes": 10}"#,
    )
    .expect("valid");
    assert_eq!(config.trip, TripPolicy::FailureRate);
    assert_eq!(config.window, Duration::from_secs(60));
    assert_eq!(config.open_duration, Duration::from_secs(300));
    assert_eq!(config.slow_call_threshold, Some(Duration::from_millis(250)));
    let json = serde_json::to_value(&config).expect("serialisable");
    assert_eq!(json["open_duration"], "5m");
    let again: BreakerConfig = serde_json::from_value(json).expect("round trip");
    assert_eq!(again, config);
}

#[test]
fn unknown_keys_are_refused() {
    let error =
        serde_json::from_str::<BreakerConfig>(r#"{"open_duraton": "5m"}"#).expect_err("typo");
    assert!(
        error.to_string().contains("unknown field `open_duraton`"),
        "{error}"
    );
}

#[test]
fn validation_names_the_key_the_value_and_what_is_allowed() {
    let cases: [(BreakerConfig, &str); 6] = [
        (
            BreakerConfig {
                consecutive_failures: 0,
                ..BreakerConfig::default()
            },
            "consecutive_failures",
        ),
        (
            BreakerConfig {
                failure_rate: 1.0,
                ..BreakerConfig::default()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                half_open_max_calls: 0,
                ..BreakerConfig::default()
            },
            "half_open_max_calls",
        ),
        (
            BreakerConfig {
                half_open_successes: 5_000,
                ..BreakerConfig::default()
            },
            "half_open_successes",
        ),
        (
            BreakerConfig {
                open_duration_jitter: 1.5,
                ..BreakerConfig::default()
            },
            "open_duration_jitter",
        ),
        (
            BreakerConfig {
                open_duration_multiplier: 2.0,
                max_open_duration: Duration::from_secs(1),
                ..BreakerConfig::default()
            },
            "max_open_duration",
        ),
    ];
    for (config, key) in cases {
        let error = CircuitBreaker::new("invalid", config).expect_err("invalid");
        assert_eq!(error.key, key);
    }
    let error = BreakerConfig {
        failure_rate: 1.0,
        ..BreakerConfig::default()
    }
    .validate()
    .expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "invalid value 1.0 for `failure_rate`: a ratio strictly between 0 and 1"
    );
    let error = RetryConfig {
        max_attempts: 0,
        ..RetryConfig::default()
    }
    .validate()
    .expect_err("invalid");
    assert_eq!(error.key, "max_attempts");
    let error = BulkheadConfig {
        max_concurrent: 0,
        ..BulkheadConfig::default()
    }
    .validate()
    .expect_err("invalid");
    assert_eq!(error.key, "max_concurrent");
}
