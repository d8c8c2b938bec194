//! The Redis backend against a private redis-server: keys, TTLs, quotas, skew, the over-limit cache
//! and the script's reload.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use mainstay_clock::{Clock, ManualClock};
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
    let mut keys = redis.scan_keys();
    // The set of live instances (their random ids) expires three heartbeats after the last one.
    let instances = keys.iter().position(|key| key == "rl:{instances}");
    let instances = keys.remove(instances.expect("the instance set"));
    let ttl = redis.pttl(&instances);
    assert!(ttl > 0 && ttl <= 6_000, "{instances}: {ttl}");
    // One hash per hash tag (decision 0093): the organisation's, and the address's.
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        let fields = redis
            .command(&format!("HKEYS {key}"))
            .expect("HKEYS answers");
        // The three limits' TATs and the hash's expiry time.
        assert_eq!(fields.matches("\r\n$").count(), 4, "{key}: {fields:?}");
        for raw in [
            "org-visible-name",
            "principal-visible",
            "198.51.100.77",
            "198-51",
            "c633",
        ] {
            assert!(!key.contains(raw), "{key} holds {raw}");
            assert!(!fields.contains(raw), "{key}'s fields hold {raw}");
        }
        assert!(key.starts_with("rl:{") && key.ends_with('}'), "{key}");
        let ttl = redis.pttl(key);
        // Every hash expires once its buckets are full again: within one period (1 h for quotas).
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: {ttl}");
    }
}

/// The fields of principals that went idle do not stay in their organisation's hash while other
/// principals keep it alive: when the hash's expiry moves, fields whose TAT has passed go.
#[tokio::test]
async fn idle_principals_leave_their_organisations_hash() {
    let redis = RedisServer::start();
    // Periods of 1 s (route class) and 8 s (quota): a principal's fields are stale 100 ms after
    // its request, and the hash's expiry moves at each request when they come 2 s apart (the
    // script's time is given, as in the test vectors).
    let config = limits(
        redis_config(),
        huge(),
        LimitSpec::new(10, Duration::from_secs(1)),
        LimitSpec::new(1_000, Duration::from_secs(8)),
    );
    let limiter = on_redis(config, &redis);
    for index in 0..40u64 {
        let caller = CallerIdentity::new("busy", "api-key", "free", format!("key-{index}"));
        let at = Duration::from_secs(1_000 + 2 * index);
        let decision = limiter.check_at(&request(Some(&caller), None), at).await;
        assert!(
            decision.allowed && decision.backend == Backend::Redis,
            "{decision:?}"
        );
    }
    let keys = redis.scan_keys();
    let hash = keys
        .iter()
        .find(|key| key.as_str() != "rl:{instances}")
        .expect("the organisation's hash");
    let length = redis
        .command(&format!("HLEN {hash}"))
        .expect("HLEN answers");
    let length: usize = length.trim().trim_start_matches(':').parse().unwrap();
    // 40 principals' two fields each, the quota and the bookkeeping would be 83 fields.
    assert!(length <= 12, "{length} fields in {hash}");
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

/// Two limiters whose clocks are 30 s ahead of and 30 s behind the machine's, and stand still,
/// share one limit of one request per 100 ms: every decision is made on Redis `TIME`. Were either
/// client's clock used, the second client would wait a minute, the reported times would not be
/// Redis's, and nothing would pass again while the clients' clocks stand still.
#[tokio::test]
async fn decisions_follow_redis_time_whatever_the_clients_clocks_say() {
    let redis = RedisServer::start();
    let interval = Duration::from_millis(100);
    let config = limits(
        redis_config(),
        LimitSpec::new(10, Duration::from_secs(1)).with_burst(1),
        huge(),
        huge(),
    );
    let machine = SystemTime::now();
    let ahead = ManualClock::starting_at(machine + Duration::from_secs(30));
    let behind = ManualClock::starting_at(machine - Duration::from_secs(30));
    let build = |clock: &ManualClock| {
        RateLimiter::builder(config.clone())
            .redis_url(redis.url())
            .clock(clock.shared())
            .build()
            .unwrap()
    };
    let (fast, slow) = (build(&ahead), build(&behind));
    let caller = CallerIdentity::new("skew", "api-key", "free", "shared");
    let on_redis_clock = |decision: &mainstay_ratelimit::Decision, from: u64, to: u64| {
        let time = decision.redis_time_micros.expect("a redis decision");
        assert!(
            (from..=to).contains(&time),
            "decided at {time}, redis said {from}..={to}: {decision:?}"
        );
    };

    let before = redis.time_micros();
    let first = fast.check(&request(Some(&caller), None)).await;
    let second = slow.check(&request(Some(&caller), None)).await;
    let after = redis.time_micros();
    assert!(first.allowed, "{first:?}");
    assert!(!second.allowed, "{second:?}");
    // The wait is one interval on Redis's clock, not the 60 s between the clients' clocks.
    assert!(second.retry_after <= interval, "{second:?}");
    on_redis_clock(&first, before, after);
    on_redis_clock(&second, before, after);

    // Only Redis's clock moves: once it has moved one interval on, the slow client passes and
    // the fast one, right after, waits again.
    let ready =
        second.redis_time_micros.unwrap() + u64::try_from(second.retry_after.as_micros()).unwrap();
    let polling = std::time::Instant::now();
    while redis.time_micros() <= ready {
        assert!(
            polling.elapsed() < Duration::from_secs(5),
            "redis time stands still"
        );
        // Polling Redis's clock, not waiting for a rule.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = redis.time_micros();
    let third = slow.check(&request(Some(&caller), None)).await;
    let fourth = fast.check(&request(Some(&caller), None)).await;
    let after = redis.time_micros();
    assert!(third.allowed, "{third:?}");
    assert!(
        !fourth.allowed && fourth.retry_after <= interval,
        "{fourth:?}"
    );
    on_redis_clock(&third, before, after);
    on_redis_clock(&fourth, before, after);
    assert_eq!(ahead.now(), Duration::ZERO);
    assert_eq!(behind.now(), Duration::ZERO);
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
        .metrics(metrics.clone())
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
