//! Configuration: documented defaults, serde shape, and errors that name the key.

use std::time::Duration;

use mainstay_ratelimit::{
    BuildError, FallbackMode, LimitSpec, RateLimitConfig, RateLimiter, Secret, TierConfig,
};

#[test]
fn defaults_are_the_documented_ones() {
    let config = RateLimitConfig::default();
    config.validate().unwrap();
    assert!(config.enabled);
    assert_eq!(config.redis_timeout, Duration::from_millis(20));
    assert_eq!(config.fallback, FallbackMode::Local);
    assert_eq!(config.instance_count, 1);
    let tier = |name: &str| config.tiers[name].clone();
    assert_eq!(
        tier("anonymous"),
        TierConfig::limited(LimitSpec::per_minute(100))
    );
    assert_eq!(
        tier("api-key"),
        TierConfig::limited(LimitSpec::per_minute(1_000))
    );
    assert_eq!(
        tier("premium"),
        TierConfig::limited(LimitSpec::per_minute(5_000))
    );
    assert!(tier("admin").bypass);
    assert_eq!(
        config.route_classes["writes"],
        LimitSpec::per_minute(60).with_burst(20)
    );
    assert_eq!(
        config.route_classes["queries"],
        LimitSpec::per_minute(30).with_burst(20)
    );
    assert_eq!(
        config.route_classes["default"],
        LimitSpec::per_minute(100).with_burst(20)
    );
    assert_eq!(config.plans["free"], LimitSpec::per_hour(1_000));
    assert_eq!(config.plans["pro"], LimitSpec::per_hour(10_000));
    assert_eq!(config.plans["enterprise"], LimitSpec::per_hour(100_000));
    assert_eq!(
        config.routes["PUT /v1/collections/{collection}/records/{id}"],
        "writes"
    );
    assert_eq!(
        config.routes["GET /v1/collections/{collection}/records"],
        "queries"
    );
}

#[test]
fn configuration_reads_humantime_and_refuses_unknown_keys() {
    let config: RateLimitConfig = serde_json::from_value(serde_json::json!({
        "secret": "0123456789abcdef0123",
        "redis_timeout": "15ms",
        "fallback": "deny",
        "tiers": {
            "anonymous": { "limit": { "requests": 10, "period": "1s", "burst": 5 } },
            "admin": { "bypass": true }
        },
        "plans": { "free": { "requests": 50, "period": "1h" } }
    }))
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.redis_timeout, Duration::from_millis(15));
    assert_eq!(config.fallback, FallbackMode::Deny);
    assert_eq!(
        config.tiers["anonymous"].limit,
        Some(LimitSpec::new(10, Duration::from_secs(1)).with_burst(5))
    );
    assert!(!format!("{config:?}").contains("0123456789abcdef0123"));
    let unknown = serde_json::from_value::<RateLimitConfig>(serde_json::json!({ "enabeld": true }))
        .unwrap_err();
    assert!(unknown.to_string().contains("enabeld"), "{unknown}");
}

#[test]
fn every_error_names_its_key() {
    let zero_period = LimitSpec::new(10, Duration::ZERO);
    type Change = Box<dyn Fn(&mut RateLimitConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "ratelimit.anonymous_tier",
            Box::new(|config| config.anonymous_tier = "ghost".into()),
        ),
        (
            "ratelimit.default_class",
            Box::new(|config| config.default_class = "ghost".into()),
        ),
        (
            "ratelimit.routes.\"GET /v1/x\"",
            Box::new(|config| {
                config.routes.insert("GET /v1/x".into(), "ghost".into());
            }),
        ),
        (
            "ratelimit.anonymous_plan",
            Box::new(|config| config.anonymous_plan = "ghost".into()),
        ),
        (
            "ratelimit.plans.free.period",
            Box::new(move |config| {
                config.plans.insert("free".into(), zero_period.clone());
            }),
        ),
        (
            "ratelimit.tiers.premium.limit.requests",
            Box::new(|config| {
                config.tiers.insert(
                    "premium".into(),
                    TierConfig::limited(LimitSpec::per_minute(0).with_burst(5)),
                );
            }),
        ),
        (
            "ratelimit.route_classes.writes.burst",
            Box::new(|config| {
                config
                    .route_classes
                    .insert("writes".into(), LimitSpec::per_minute(5).with_burst(0));
            }),
        ),
        (
            "ratelimit.tiers.anonymous.limit",
            Box::new(|config| {
                config.tiers.insert(
                    "anonymous".into(),
                    TierConfig {
                        bypass: false,
                        limit: None,
                    },
                );
            }),
        ),
        (
            "ratelimit.tiers.bad name",
            Box::new(|config| {
                config
                    .tiers
                    .insert("bad name".into(), TierConfig::default());
            }),
        ),
        (
            "ratelimit.instance_count",
            Box::new(|config| config.instance_count = 0),
        ),
        (
            "ratelimit.redis_timeout",
            Box::new(|config| config.redis_timeout = Duration::ZERO),
        ),
        (
            "ratelimit.secret",
            Box::new(|config| config.secret = Some(Secret::new("short"))),
        ),
        (
            "ratelimit.trusted_proxies[0]",
            Box::new(|config| config.trusted_proxies = vec!["10.0.0.0/99".into()]),
        ),
        (
            "ratelimit.breaker.consecutive_failures",
            Box::new(|config| config.breaker.consecutive_failures = 0),
        ),
        (
            "ratelimit.max_local_keys",
            Box::new(|config| config.max_local_keys = 0),
        ),
        (
            "ratelimit.ipv4_prefix_len",
            Box::new(|config| config.ipv4_prefix_len = 33),
        ),
        (
            "ratelimit.ipv4_prefix_len",
            Box::new(|config| config.ipv4_prefix_len = 0),
        ),
        (
            "ratelimit.ipv6_prefix_len",
            Box::new(|config| config.ipv6_prefix_len = 129),
        ),
        (
            "ratelimit.redis_connect_timeout",
            Box::new(|config| config.redis_connect_timeout = Duration::ZERO),
        ),
        (
            "ratelimit.redis_response_timeout",
            Box::new(|config| config.redis_response_timeout = Duration::from_millis(5)),
        ),
        (
            "ratelimit.redis_pool_size",
            Box::new(|config| config.redis_pool_size = 0),
        ),
        (
            "ratelimit.heartbeat_interval",
            Box::new(|config| config.heartbeat_interval = Duration::ZERO),
        ),
    ];
    for (key, change) in cases {
        let mut config = RateLimitConfig::default();
        change(&mut config);
        let error = config.validate().unwrap_err();
        assert_eq!(error.key, key, "{error}");
        let message = error.to_string();
        assert!(message.starts_with("invalid value"), "{message}");
        // The builder refuses the same configuration with the same error.
        match RateLimiter::builder(config).build() {
            Err(BuildError::Config(built)) => assert_eq!(built.key, key),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn redis_requires_the_secret() {
    let config = RateLimitConfig::default();
    config.validate_with_redis(None).unwrap();
    let error = config
        .validate_with_redis(Some("redis://127.0.0.1:1"))
        .unwrap_err();
    assert_eq!(error.key, "ratelimit.secret");
    assert!(
        error
            .to_string()
            .contains("required when `redis.url` is set")
    );
    let built = RateLimiter::builder(config.clone())
        .redis_url("redis://127.0.0.1:1")
        .build();
    assert!(matches!(built, Err(BuildError::Config(error)) if error.key == "ratelimit.secret"));
    // Without Redis a random secret is used: the limiter builds.
    RateLimiter::builder(config).build().unwrap();
    let malformed = RateLimiter::builder(RateLimitConfig {
        secret: Some(Secret::new("0123456789abcdef")),
        ..RateLimitConfig::default()
    })
    .redis_url("not a url")
    .build();
    assert!(
        matches!(malformed, Err(BuildError::RedisUrl(_))),
        "{malformed:?}"
    );
}
