//! Redis killed, frozen and back: the breaker, the fallback modes, the switch-over and recovery,
//! and the health check.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use http::StatusCode;
use mainstay_clock::ManualClock;
use mainstay_health::{Check, Status};
use mainstay_ratelimit::health::RedisCheck;
use mainstay_ratelimit::layer::RateLimitLayer;
use mainstay_ratelimit::{
    Backend, CallerIdentity, FallbackMode, LimitRequest, LimitSpec, RateLimitConfig,
    RateLimitMetrics, RateLimiter,
};
use mainstay_resilience::{BreakerState, ResilienceMetrics};
use prometheus_client::registry::Registry;
use tower::ServiceExt;

use crate::support::{RedisServer, huge, limits, redis_config};

struct Setup {
    limiter: RateLimiter,
    clock: ManualClock,
    registry: Registry,
}

fn setup(config: RateLimitConfig, redis: &RedisServer) -> Setup {
    let mut registry = Registry::default();
    let metrics = RateLimitMetrics::register(&mut registry);
    let resilience = ResilienceMetrics::register(&mut registry);
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(config)
        .redis_url(redis.url())
        .clock(clock.shared())
        .metrics(metrics.clone())
        .resilience_metrics(resilience.clone())
        .build()
        .unwrap();
    Setup {
        limiter,
        clock,
        registry,
    }
}

fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn router(limiter: RateLimiter) -> Router {
    let layer = RateLimitLayer::builder(limiter)
        .identity(|extensions| extensions.get::<CallerIdentity>().cloned())
        .peer_address(|extensions| extensions.get::<SocketAddr>().map(SocketAddr::ip))
        .build::<Body>();
    Router::new()
        .route("/v1/whoami", get(|| async { "me" }))
        .route_layer(layer)
}

async fn send(router: &Router, caller: &CallerIdentity) -> StatusCode {
    let mut request = Request::builder()
        .uri("/v1/whoami")
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(caller.clone());
    router.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_falls_back_then_returns_after_one_probe() {
    let mut redis = RedisServer::start();
    let Setup {
        limiter,
        clock,
        registry,
    } = setup(redis_config(), &redis);
    let router = router(limiter.clone());
    let callers: Vec<CallerIdentity> = (0..8)
        .map(|index| CallerIdentity::new("load", "api-key", "pro", format!("key-{index}")))
        .collect();
    let load = |rounds: usize| {
        let router = router.clone();
        let callers = callers.clone();
        async move {
            let mut tasks = Vec::new();
            for caller in callers {
                let router = router.clone();
                tasks.push(tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _ in 0..rounds {
                        statuses.push(send(&router, &caller).await);
                    }
                    statuses
                }));
            }
            let mut statuses = Vec::new();
            for task in tasks {
                statuses.extend(task.await.unwrap());
            }
            statuses
        }
    };
    assert!(load(5).await.iter().all(|status| *status == StatusCode::OK));
    assert!(!limiter.fallback_active());

    let killed = Instant::now();
    redis.kill();
    let statuses = load(10).await;
    let failover = killed.elapsed();
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::OK || *status == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(limiter.fallback_active());
    assert_eq!(limiter.breaker().state(), BreakerState::Open);
    // 80 requests after the kill took the breaker open; bounded, not a speed assertion.
    assert!(failover < Duration::from_secs(1), "{failover:?}");
    let fallback = limiter
        .check(&LimitRequest {
            caller: callers.first(),
            client: None,
            route: None,
        })
        .await;
    assert_eq!(fallback.backend, Backend::Fallback);

    redis.restart();
    // Still open on the breaker's clock: the fallback decides, Redis is not asked.
    let before = limiter.breaker().snapshot();
    assert_eq!(send(&router, &callers[0]).await, StatusCode::OK);
    assert_eq!(limiter.breaker().snapshot().successes, before.successes);
    // After the open duration one half-open trial (the limiter's own, or a request's) goes to
    // Redis, succeeds and closes the breaker.
    clock.advance(Duration::from_secs(60));
    let waited = Instant::now();
    loop {
        let probe = limiter
            .check(&LimitRequest {
                caller: callers.first(),
                client: None,
                route: None,
            })
            .await;
        if probe.backend == Backend::Redis {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(5), "{probe:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(limiter.breaker().state(), BreakerState::Closed);
    assert!(!limiter.fallback_active());
    // One trial, then the request: two successes.
    assert!(limiter.breaker().snapshot().successes <= before.successes + 2);

    let text = exposition(&registry);
    assert!(text.contains("ratelimit_fallback_active 0"), "{text}");
    assert!(
        text.contains(r#"ratelimit_fallback_switches_total{to="fallback"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ratelimit_fallback_switches_total{to="redis"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ratelimit_backend_errors_total{error_type="connection"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"circuit_breaker_state{breaker="ratelimit-redis"} 0"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_still_gets_every_request_answered_within_the_timeout() {
    let redis = RedisServer::start();
    let config = RateLimitConfig {
        redis_timeout: Duration::from_millis(50),
        ..redis_config()
    };
    let Setup { limiter, .. } = setup(config, &redis);
    let caller = CallerIdentity::new("frozen", "api-key", "pro", "p");
    let request = LimitRequest {
        caller: Some(&caller),
        client: None,
        route: None,
    };
    assert_eq!(limiter.check(&request).await.backend, Backend::Redis);
    redis.freeze();
    for _ in 0..6 {
        let started = Instant::now();
        let decision = limiter.check(&request).await;
        let took = started.elapsed();
        assert_eq!(decision.backend, Backend::Fallback);
        assert!(decision.allowed);
        // The timeout bounds the wait (plus scheduling slack on a shared machine).
        assert!(took < Duration::from_millis(50 + 450), "{took:?}");
    }
    // The calls that waited past the timeout count as failures once they stay unanswered for
    // `redis_response_timeout` (500 ms here): then the breaker opens.
    let waited = Instant::now();
    while !limiter.fallback_active() && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        limiter.fallback_active(),
        "{:?}",
        limiter.breaker().snapshot()
    );
    redis.thaw();
}

#[tokio::test]
async fn the_local_fallback_divides_each_limit_by_the_instance_count() {
    let mut redis = RedisServer::start();
    let config = RateLimitConfig {
        instance_count: 4,
        ..limits(redis_config(), LimitSpec::per_minute(8), huge(), huge())
    };
    let Setup { limiter, .. } = setup(config, &redis);
    redis.kill();
    let caller = CallerIdentity::new("divided", "api-key", "free", "p");
    let request = LimitRequest {
        caller: Some(&caller),
        client: None,
        route: None,
    };
    let mut allowed = 0;
    for _ in 0..10 {
        let decision = limiter.check(&request).await;
        assert_eq!(decision.backend, Backend::Fallback);
        assert_eq!(decision.policy.as_ref().unwrap().requests, 2);
        allowed += usize::from(decision.allowed);
    }
    assert_eq!(allowed, 2);
}

#[tokio::test]
async fn fail_open_and_fail_closed_are_the_other_choices() {
    let mut redis = RedisServer::start();
    let tight = limits(redis_config(), LimitSpec::per_hour(1), huge(), huge());
    let open = setup(
        RateLimitConfig {
            fallback: FallbackMode::Allow,
            ..tight.clone()
        },
        &redis,
    );
    let closed = setup(
        RateLimitConfig {
            fallback: FallbackMode::Deny,
            ..tight
        },
        &redis,
    );
    redis.kill();
    let caller = CallerIdentity::new("modes", "api-key", "free", "p");
    let request = LimitRequest {
        caller: Some(&caller),
        client: None,
        route: None,
    };
    for _ in 0..5 {
        let passed = open.limiter.check(&request).await;
        assert!(passed.allowed && passed.policy.is_none());
        assert_eq!(passed.backend, Backend::Fallback);
    }
    let router = router(closed.limiter.clone());
    for _ in 0..5 {
        assert_eq!(send(&router, &caller).await, StatusCode::TOO_MANY_REQUESTS);
    }
    let refused = closed.limiter.check(&request).await;
    assert!(!refused.allowed);
    assert!(refused.retry_after_secs() >= 1);
}

#[tokio::test]
async fn the_redis_check_follows_redis_and_the_fallback() {
    let mut redis = RedisServer::start();
    let Setup { limiter, clock, .. } = setup(redis_config(), &redis);
    let check = RedisCheck::new(limiter.clone());
    assert_eq!(check.name(), "redis");
    let healthy = check.check().await;
    assert_eq!(healthy.status, Status::Healthy, "{healthy:?}");
    redis.kill();
    let caller = CallerIdentity::new("health", "api-key", "free", "p");
    let request = LimitRequest {
        caller: Some(&caller),
        client: None,
        route: None,
    };
    for _ in 0..3 {
        let _ = limiter.check(&request).await;
    }
    assert!(limiter.fallback_active());
    let down = check.check().await;
    assert_eq!(down.status, Status::Unhealthy, "{down:?}");
    assert_eq!(down.details["fallback_active"], true);
    redis.restart();
    // Redis answers again: the check says so at once, and that the fallback still decides until
    // the breaker's trial.
    let recovering = check.check().await;
    assert_eq!(recovering.status, Status::Healthy, "{recovering:?}");
    assert_eq!(recovering.details["fallback_active"], true);
    clock.advance(Duration::from_secs(60));
    let _ = limiter.check(&request).await;
    assert_eq!(check.check().await.status, Status::Healthy);
    // Without Redis there is nothing to check.
    let memory = RedisCheck::new(
        RateLimiter::builder(RateLimitConfig::default())
            .build()
            .unwrap(),
    );
    let outcome = memory.check().await;
    assert_eq!(
        (outcome.status, &outcome.details["backend"]),
        (Status::Healthy, &serde_json::json!("memory"))
    );
}

#[tokio::test]
async fn the_fallback_continues_an_hourly_quota_from_what_redis_left() {
    let mut redis = RedisServer::start();
    let config = limits(redis_config(), huge(), huge(), LimitSpec::per_hour(100));
    let Setup { limiter, .. } = setup(config, &redis);
    let caller = CallerIdentity::new("quota", "api-key", "free", "p");
    let other = CallerIdentity::new("fresh", "api-key", "free", "p");
    let request = |caller| LimitRequest {
        caller: Some(caller),
        client: None,
        route: None,
    };
    for _ in 0..90 {
        let decision = limiter.check(&request(&caller)).await;
        assert_eq!((decision.backend, decision.allowed), (Backend::Redis, true));
    }
    redis.kill();
    // The fallback goes on from the 10 requests Redis said were left, not from a full hour.
    let mut allowed = 0;
    for _ in 0..30 {
        let decision = limiter.check(&request(&caller)).await;
        assert_eq!(decision.backend, Backend::Fallback);
        allowed += usize::from(decision.allowed);
    }
    assert_eq!(allowed, 10);
    // An organisation Redis never reported on starts with its whole quota.
    let mut fresh = 0;
    for _ in 0..110 {
        fresh += usize::from(limiter.check(&request(&other)).await.allowed);
    }
    assert_eq!(fresh, 100);
}
