//! Recovery without traffic and slowness that is not an outage: the `redis` check probes Redis on
//! its own connection, an open breaker tries Redis again by itself, and a burst of slow commands
//! makes only the calls inside it fall back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mainstay_clock::ManualClock;
use mainstay_health::{Check, HealthConfig, HealthRegistry, Status, View};
use mainstay_ratelimit::health::RedisCheck;
use mainstay_ratelimit::{Backend, CallerIdentity, LimitRequest, RateLimitConfig, RateLimiter};
use mainstay_resilience::{BreakerConfig, BreakerState};

use crate::support::{FlakyProxy, RedisServer, redis_config};

fn on_redis(config: RateLimitConfig, redis: &RedisServer, clock: &ManualClock) -> RateLimiter {
    RateLimiter::builder(config)
        .redis_url(redis.url())
        .clock(clock.shared())
        .build()
        .unwrap()
}

fn request(caller: &CallerIdentity) -> LimitRequest<'_> {
    LimitRequest {
        caller: Some(caller),
        client: None,
        route: None,
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` of wall time has passed; returns the
/// time it took, or `None`. For waits on real sockets and processes only.
async fn within(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_ready_again_within_one_cache_interval_and_one_check_timeout() {
    let mut redis = RedisServer::start();
    let clock = ManualClock::new();
    let limiter = on_redis(redis_config(), &redis, &clock);
    let caller = CallerIdentity::new("idle", "api-key", "free", "p");
    // One decision: the limiter holds a connection to this server.
    assert_eq!(
        limiter.check(&request(&caller)).await.backend,
        Backend::Redis
    );

    let cache_interval = Duration::from_millis(200);
    let check_timeout = Duration::from_millis(500);
    let health = HealthRegistry::builder(
        HealthConfig {
            cache_interval,
            default_timeout: check_timeout,
            ..HealthConfig::default()
        },
        "test",
    )
    .build()
    .unwrap();
    health
        .register(Arc::new(RedisCheck::new(limiter.clone())))
        .unwrap();
    health.mark_started();
    let redis_status = async || health.deps(View::Admin).await.report.checks["redis"].status;
    assert_eq!(redis_status().await, Status::Healthy);

    // Redis goes away while nobody sends a request, and comes back.
    redis.kill();
    assert!(
        within(Duration::from_secs(5), async || redis_status().await
            == Status::Unhealthy)
        .await
        .is_some()
    );
    redis.restart();
    let returned = Instant::now();
    let healthy = within(Duration::from_secs(10), async || {
        redis_status().await == Status::Healthy
    })
    .await;
    let took = returned.elapsed();
    // One cache interval + one check timeout, plus a second of slack for a loaded machine.
    let bound = cache_interval + check_timeout + Duration::from_secs(1);
    assert!(
        healthy.is_some() && took <= bound,
        "healthy again after {took:?} (bound {bound:?}), without a single request"
    );
    assert_eq!(limiter.breaker().snapshot().successes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_probes_redis_itself_whatever_the_breaker_says() {
    let mut redis = RedisServer::start();
    let clock = ManualClock::new();
    let limiter = on_redis(redis_config(), &redis, &clock);
    let check = RedisCheck::new(limiter.clone());
    let caller = CallerIdentity::new("probe", "api-key", "free", "p");
    redis.kill();
    for _ in 0..3 {
        assert_eq!(
            limiter.check(&request(&caller)).await.backend,
            Backend::Fallback
        );
    }
    assert_eq!(limiter.breaker().state(), BreakerState::Open);
    assert_eq!(check.check().await.status, Status::Unhealthy);
    redis.restart();
    // The breaker is open for another 60 s of its clock, yet the check reports Redis as it is.
    let outcome = check.check().await;
    assert_eq!(outcome.status, Status::Healthy, "{outcome:?}");
    assert_eq!(outcome.details["breaker"], "open");
    assert_eq!(outcome.details["fallback_active"], true);
    // And the check made no call through the breaker.
    assert_eq!(limiter.breaker().snapshot().successes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_tries_redis_by_itself_every_open_duration() {
    let mut redis = RedisServer::start();
    let clock = ManualClock::new();
    let open_duration = Duration::from_secs(60);
    let limiter = on_redis(redis_config(), &redis, &clock);
    let caller = CallerIdentity::new("trial", "api-key", "free", "p");
    redis.kill();
    for _ in 0..3 {
        let _ = limiter.check(&request(&caller)).await;
    }
    assert_eq!(limiter.breaker().state(), BreakerState::Open);
    // Redis still down: one open duration later the background trial fails and the breaker
    // opens again, without any request.
    let failures = limiter.breaker().snapshot().failures;
    clock.advance(open_duration);
    assert!(
        within(Duration::from_secs(5), async || {
            let snapshot = limiter.breaker().snapshot();
            snapshot.failures == failures + 1 && snapshot.state == BreakerState::Open
        })
        .await
        .is_some(),
        "{:?}",
        limiter.breaker().snapshot()
    );
    redis.restart();
    // Before the next open duration has passed nothing is tried...
    clock.advance(open_duration / 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(limiter.breaker().state(), BreakerState::Open);
    // ... and after it one trial closes the breaker: decisions are back on Redis.
    clock.advance(open_duration / 2);
    assert!(
        within(Duration::from_secs(5), async || {
            limiter.breaker().state() == BreakerState::Closed
        })
        .await
        .is_some(),
        "{:?}",
        limiter.breaker().snapshot()
    );
    assert!(!limiter.fallback_active());
    assert_eq!(
        limiter.check(&request(&caller)).await.backend,
        Backend::Redis
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_slow_commands_makes_only_the_calls_inside_it_fall_back() {
    let redis = RedisServer::start();
    let clock = ManualClock::new();
    let config = RateLimitConfig {
        redis_timeout: Duration::from_millis(25),
        breaker: BreakerConfig::consecutive(5, Duration::from_secs(60)),
        ..redis_config()
    };
    let limiter = on_redis(config, &redis, &clock);
    let caller = CallerIdentity::new("slow", "api-key", "pro", "p");
    for _ in 0..5 {
        assert_eq!(
            limiter.check(&request(&caller)).await.backend,
            Backend::Redis
        );
    }
    // Ten 50 ms `DEBUG SLEEP`s back to back, on a connection of their own: Redis is busy for half
    // a second and answers everything, late.
    let port = redis.port();
    let sleeper = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        for _ in 0..10 {
            stream.write_all(b"DEBUG SLEEP 0.05\r\n").unwrap();
            let mut reply = [0u8; 5];
            stream.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"+OK\r\n");
        }
        Instant::now()
    });
    let mut decisions = Vec::new();
    while !sleeper.is_finished() {
        let at = Instant::now();
        decisions.push((at, limiter.check(&request(&caller)).await.backend));
    }
    let ended = sleeper.join().unwrap();
    // Half a second of traffic after the burst.
    let slack = Duration::from_millis(100);
    while ended.elapsed() < slack + Duration::from_millis(400) {
        let at = Instant::now();
        decisions.push((at, limiter.check(&request(&caller)).await.backend));
    }
    let in_burst = decisions
        .iter()
        .filter(|(at, backend)| *at < ended && *backend == Backend::Fallback)
        .count();
    // A call that started just before the burst's end may still wait behind its last sleep, and
    // the machine may pause this task a little: 100 ms of slack (four command timeouts); every
    // later call must be decided on Redis.
    let after = decisions
        .iter()
        .filter(|(at, backend)| *at >= ended + slack && *backend != Backend::Redis)
        .count();
    assert!(
        in_burst > 0,
        "the burst slowed no call: the test proves nothing"
    );
    assert_eq!(
        after,
        0,
        "calls after the burst fell back ({in_burst} inside it): {:?}",
        limiter.breaker().snapshot()
    );
    assert_eq!(limiter.breaker().state(), BreakerState::Closed);
    assert!(!limiter.fallback_active());
    // The late answers counted as successes; nothing counted as a failure.
    assert_eq!(limiter.breaker().snapshot().failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_replaced_in_the_background_without_tripping_the_breaker() {
    let redis = RedisServer::start();
    let proxy = FlakyProxy::start(redis.port()).await;
    let clock = ManualClock::new();
    let config = RateLimitConfig {
        redis_timeout: Duration::from_millis(50),
        ..redis_config()
    };
    let limiter = RateLimiter::builder(config)
        .redis_url(proxy.url())
        .clock(clock.shared())
        .build()
        .unwrap();
    let caller = CallerIdentity::new("dropped", "api-key", "pro", "p");
    for _ in 0..20 {
        assert_eq!(
            limiter.check(&request(&caller)).await.backend,
            Backend::Redis
        );
    }
    // Every connection goes at once, and a new one takes 300 ms to come up: longer than any
    // decision waits, shorter than the connect timeout.
    let connect_delay = Duration::from_millis(300);
    proxy.slow_connects(connect_delay);
    proxy.drop_connections();
    let dropped = Instant::now();
    let mut waits = Vec::new();
    let back = loop {
        let started = Instant::now();
        let decision = limiter.check(&request(&caller)).await;
        waits.push(started.elapsed());
        if decision.backend == Backend::Redis {
            break dropped.elapsed();
        }
        assert!(dropped.elapsed() < Duration::from_secs(5), "{decision:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Back on Redis once a replacement is up (plus slack for a loaded machine), with no decision
    // waiting for it past its own timeout (plus the same slack), and the breaker never opened.
    assert!(back <= connect_delay + Duration::from_secs(1), "{back:?}");
    let longest = waits.iter().max().unwrap();
    assert!(*longest <= Duration::from_millis(50 + 450), "{longest:?}");
    assert_eq!(limiter.breaker().state(), BreakerState::Closed);
    assert_eq!(
        limiter.breaker().snapshot().failures,
        0,
        "{:?}",
        limiter.breaker().snapshot()
    );
}
