//! The Redis backend against a private redis-server: keys, TTLs, quotas, skew, the over-limit cache
//! and the script's reload.

use std::net::IpAddr;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_ratelimit::{
    Backend, CallerIdentity, LimitRequest, LimitSpec, RateLimitConfig, RateLimitMetrics,
    RateLimiter,
};
use prometheus_client::registry::Registry;

use crate::support::{RedisServer, huge, limits, redis_config};

fn on_redis(config: RateLimitConfig, redis: &RedisServer) -> RateLimiter {
    RateLimiter::builder(config)
        .redis_url(redis.url())
        .build()
        .unwrap()
}

fn request<'a>(caller: Option<&'a CallerIdentity>, client: Option<IpAddr>) -> LimitRequest<'a> {
    LimitRequest {
        caller,
        client,
        route: None,
    }
}

#[tokio::test]
async fn keys_hold_no_raw_identity_and_all_expire() {
    let redis = RedisServer::start();
    let limiter = on_redis(redis_config(), &redis);
    let caller = CallerIdentity::new("org-visible-name", "api-key", "pro", "principal-visible");
    let address: IpAddr = "198.51.100.77".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(
            limiter.check(&request(Some(&caller), None)).await.backend,
            Backend::Redis
        );
        assert!(limiter.check(&request(None, Some(address))).await.allowed);
    }
    let keys = redis.scan_keys();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for key in &keys {
        for raw in [
            "org-visible-name",
            "principal-visible",
            "198.51.100.77",
            "198-51",
            "c633",
        ] {
            assert!(!key.contains(raw), "{key} holds {raw}");
        }
        assert!(key.starts_with("rl:{"), "{key}");
        let ttl = redis.pttl(key);
        // Every key expires once its bucket is full again: within one period (1 h for quotas).
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: {ttl}");
    }
    // One hash tag per request: the organisation's keys share it, the address's share another.
    let tags: std::collections::BTreeSet<&str> = keys
        .iter()
        .map(|key| &key[key.find('{').unwrap()..=key.find('}').unwrap()])
        .collect();
    assert_eq!(tags.len(), 2, "{keys:?}");
}

#[tokio::test]
async fn keys_of_one_organisation_share_its_quota_and_route_denials_consume_none() {
    let redis = RedisServer::start();
    let config = limits(
        redis_config(),
        huge(),
        LimitSpec::per_minute(60).with_burst(1),
        LimitSpec::per_hour(3),
    );
    let limiter = on_redis(config, &redis);
    let first = CallerIdentity::new("acme", "api-key", "free", "key-1");
    let second = CallerIdentity::new("acme", "api-key", "free", "key-2");
    let other = CallerIdentity::new("globex", "api-key", "free", "key-3");
    // key-1: one request passes, the next ones are denied by the route class (burst 1) and take
    // nothing from the organisation's quota.
    assert!(limiter.check(&request(Some(&first), None)).await.allowed);
    for _ in 0..5 {
        let denied = limiter.check(&request(Some(&first), None)).await;
        assert!(!denied.allowed);
        assert_eq!(denied.policy.unwrap().name.as_ref(), "class:default");
    }
    // key-2 has its own route bucket but the same quota: had the denials taken from the quota
    // of 3, it would be refused.
    assert!(limiter.check(&request(Some(&second), None)).await.allowed);
    let third = CallerIdentity::new("acme", "api-key", "free", "key-4");
    assert!(limiter.check(&request(Some(&third), None)).await.allowed);
    let exhausted = limiter
        .check(&request(
            Some(&CallerIdentity::new("acme", "api-key", "free", "key-5")),
            None,
        ))
        .await;
    assert!(!exhausted.allowed);
    assert_eq!(exhausted.policy.unwrap().name.as_ref(), "plan:free");
    // Another organisation is untouched.
    assert!(limiter.check(&request(Some(&other), None)).await.allowed);
}

#[tokio::test]
async fn clients_with_clocks_30_seconds_apart_decide_alike() {
    let redis = RedisServer::start();
    let config = limits(redis_config(), LimitSpec::per_hour(4), huge(), huge());
    let early = ManualClock::new();
    let late = ManualClock::new();
    late.advance(Duration::from_secs(30));
    let build = |clock: &ManualClock| {
        RateLimiter::builder(config.clone())
            .redis_url(redis.url())
            .clock(clock.shared())
            .build()
            .unwrap()
    };
    let (one, two) = (build(&early), build(&late));
    let caller = CallerIdentity::new("skew", "api-key", "free", "shared");
    let mut decisions = Vec::new();
    for turn in 0..6 {
        let limiter = if turn % 2 == 0 { &one } else { &two };
        let decision = limiter.check(&request(Some(&caller), None)).await;
        decisions.push((decision.allowed, decision.remaining));
    }
    // One shared bucket of 4 on Redis's clock, whichever client asks.
    assert_eq!(
        decisions,
        [
            (true, 3),
            (true, 2),
            (true, 1),
            (true, 0),
            (false, 0),
            (false, 0)
        ]
    );
    // And separately, the same sequence from each client on its own key gives the same answers.
    let mut each = Vec::new();
    for (index, limiter) in [&one, &two].into_iter().enumerate() {
        let caller = CallerIdentity::new(format!("skew-{index}"), "api-key", "free", "p");
        let mut answers = Vec::new();
        for _ in 0..6 {
            let decision = limiter.check(&request(Some(&caller), None)).await;
            answers.push((decision.allowed, decision.remaining, decision.backend));
        }
        each.push(answers);
    }
    assert_eq!(each[0], each[1]);
}

#[tokio::test]
async fn denied_keys_are_denied_locally_until_their_retry_time() {
    let redis = RedisServer::start();
    let mut registry = Registry::default();
    let metrics = RateLimitMetrics::register(&mut registry);
    let clock = ManualClock::new();
    let config = RateLimitConfig {
        over_limit_cache: true,
        ..limits(redis_config(), LimitSpec::per_hour(1), huge(), huge())
    };
    let limiter = RateLimiter::builder(config)
        .redis_url(redis.url())
        .clock(clock.shared())
        .metrics(&metrics)
        .build()
        .unwrap();
    let caller = CallerIdentity::new("abuser", "api-key", "free", "p");
    assert!(limiter.check(&request(Some(&caller), None)).await.allowed);
    let denied = limiter.check(&request(Some(&caller), None)).await;
    assert_eq!((denied.allowed, denied.backend), (false, Backend::Redis));
    let calls_before = limiter.breaker().snapshot().successes;
    // Redis is gone, yet the known denial is served locally, without a Redis call.
    redis.freeze();
    for _ in 0..100 {
        let cached = limiter.check(&request(Some(&caller), None)).await;
        assert_eq!((cached.allowed, cached.backend), (false, Backend::Cache));
        assert!(cached.retry_after <= denied.retry_after);
    }
    redis.thaw();
    assert_eq!(limiter.breaker().snapshot().successes, calls_before);
    assert_eq!(limiter.breaker().snapshot().failures, 0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("ratelimit_local_cache_hits_total 100"),
        "{text}"
    );
    // Once the retry time has passed on the local clock, Redis is asked again.
    clock.advance(denied.retry_after + Duration::from_millis(1));
    let asked = limiter.check(&request(Some(&caller), None)).await;
    assert_eq!(asked.backend, Backend::Redis);
}

#[tokio::test]
async fn the_script_is_reloaded_after_a_flush() {
    let redis = RedisServer::start();
    let limiter = on_redis(redis_config(), &redis);
    let caller = CallerIdentity::new("flush", "api-key", "free", "p");
    assert_eq!(
        limiter.check(&request(Some(&caller), None)).await.backend,
        Backend::Redis
    );
    assert!(redis.command("SCRIPT FLUSH").unwrap().starts_with("+OK"));
    let decision = limiter.check(&request(Some(&caller), None)).await;
    assert_eq!((decision.backend, decision.allowed), (Backend::Redis, true));
    assert_eq!(limiter.breaker().snapshot().failures, 0);
}
