//! Event limits ([`RateLimiter::event_limit`]): counted in process without Redis, together on Redis
//! across limiters, and in process while Redis is down.

use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_ratelimit::{Backend, FallbackMode, LimitSpec, RateLimitConfig, RateLimiter};

use crate::support::{RedisServer, redis_config};

fn three_a_minute() -> LimitSpec {
    LimitSpec::new(3, Duration::from_secs(60))
}

#[tokio::test]
async fn in_process_events_are_limited_per_key_and_the_bucket_refills_with_time() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(RateLimitConfig::default())
        .clock(clock.shared())
        .build()
        .unwrap();
    let events = limiter
        .event_limit("login", "auth.failure_limit", &three_a_minute())
        .unwrap();
    let key = limiter.hasher().pseudonym(b"test", b"one");
    let other = limiter.hasher().pseudonym(b"test", b"two");
    for remaining in [2, 1, 0] {
        let decision = events.hit(&key).await;
        assert!(decision.allowed);
        assert_eq!(decision.remaining, remaining);
        assert_eq!(decision.backend, Backend::Memory);
    }
    let denied = events.hit(&key).await;
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, Duration::from_secs(20));
    assert_eq!(denied.policy.as_ref().unwrap().name.as_ref(), "event:login");
    // Another key has its own budget; a denial does not fill the bucket further.
    assert!(events.hit(&other).await.allowed);
    clock.advance(Duration::from_secs(20));
    assert!(events.hit(&key).await.allowed);
    assert!(!events.hit(&key).await.allowed);
}

#[tokio::test]
async fn limiters_sharing_redis_count_events_together_and_count_in_process_while_it_is_down() {
    let mut redis = RedisServer::start();
    // `deny` as the request fallback: an event limit still counts in process, not deny all.
    let config = RateLimitConfig {
        fallback: FallbackMode::Deny,
        ..redis_config()
    };
    let build = || {
        RateLimiter::builder(config.clone())
            .redis_url(redis.url())
            .build()
            .unwrap()
    };
    let (first, second) = (build(), build());
    let events = [&first, &second].map(|limiter| {
        limiter
            .event_limit("login", "auth.failure_limit", &three_a_minute())
            .unwrap()
    });
    let key = first.hasher().pseudonym(b"test", b"shared");
    let mut allowed = Vec::new();
    for index in 0..6 {
        let decision = events[index % 2].hit(&key).await;
        assert_eq!(decision.backend, Backend::Redis);
        allowed.push(decision.allowed);
    }
    assert_eq!(allowed, [true, true, true, false, false, false]);
    // The field `e:login` of the key's hash (decision 0093).
    let hash = format!("rl:{{{}}}", key.to_hex());
    assert!(redis.scan_keys().contains(&hash), "{:?}", redis.scan_keys());
    let fields = redis
        .command(&format!("HKEYS {hash}"))
        .expect("HKEYS answers");
    assert!(fields.contains("\r\ne:login\r\n"), "{fields:?}");

    redis.kill();
    let fresh = first.hasher().pseudonym(b"test", b"during-the-outage");
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let decision = events[0].hit(&fresh).await;
        assert_eq!(decision.backend, Backend::Fallback);
        outcomes.push(decision.allowed);
    }
    assert_eq!(outcomes, [true, true, true, false, false]);
}

#[test]
fn an_event_name_outside_the_allowed_characters_is_a_config_error() {
    let limiter = RateLimiter::builder(RateLimitConfig::default())
        .build()
        .unwrap();
    for name in ["", "Login", "a b", &"x".repeat(65)] {
        let error = limiter
            .event_limit(name, "auth.failure_limit", &three_a_minute())
            .unwrap_err();
        assert_eq!(error.key, "auth.failure_limit");
    }
    let error = limiter
        .event_limit(
            "login",
            "auth.failure_limit",
            &LimitSpec::new(0, Duration::from_secs(60)),
        )
        .unwrap_err();
    assert_eq!(error.key, "auth.failure_limit.requests");
}
