//! A load generator: several tasks send requests of one caller through a limiter on Redis for a
//! while, then one line reports what was decided. The crate's multi-process tests run it as their
//! child processes (a binary of its own, so that no test of the test binary passes by doing
//! nothing); it is also a quick way to watch a limit hold across processes.
//!
//! ```text
//! cargo run -p mainstay-ratelimit --example load -- \
//!     redis://127.0.0.1:6379 REQUESTS PERIOD_MS BURST SECONDS [anonymous]
//! ```
//!
//! It prints `LOAD allowed denied other first_us last_us`: decisions Redis allowed and denied, the
//! decisions not made on Redis, and the Redis time of the first and last Redis decision. With
//! `anonymous`, the limit is the anonymous tier's, the caller one anonymous client, the fallback
//! `local` (with `instance_count` left at 1: the live count of instances divides the limit), and
//! a second line `FALLBACK admitted` counts what the fallback admitted within one period of its
//! first decision (the window after Redis went away); the run then ends, SECONDS being at most.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mainstay_ratelimit::{
    Backend, CallerIdentity, FallbackMode, LimitRequest, LimitSpec, RateLimitConfig, RateLimiter,
    Secret, TierConfig,
};
use mainstay_resilience::BreakerConfig;

/// Tasks sending requests at once.
const TASKS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, requests, period_ms, burst, seconds, anonymous) = match &args[..] {
        [url, requests, period_ms, burst, seconds] => {
            (url, requests, period_ms, burst, seconds, false)
        }
        [url, requests, period_ms, burst, seconds, mode] if mode == "anonymous" => {
            (url, requests, period_ms, burst, seconds, true)
        }
        _ => {
            return Err(
                "usage: load REDIS_URL REQUESTS PERIOD_MS BURST SECONDS [anonymous]".into(),
            );
        }
    };
    let period = Duration::from_millis(period_ms.parse()?);
    let limit = LimitSpec::new(requests.parse()?, period).with_burst(burst.parse()?);
    let traffic = Duration::from_secs(seconds.parse()?);
    let huge = LimitSpec::new(1_000_000, Duration::from_secs(1));
    let mut config = RateLimitConfig {
        secret: Some(Secret::new("load-secret-of-32-bytes-length!!")),
        // Fail closed and slow to trip: a decision not made on Redis is counted as `other`.
        fallback: FallbackMode::Deny,
        redis_timeout: Duration::from_secs(2),
        redis_response_timeout: Duration::from_secs(2),
        breaker: BreakerConfig::consecutive(1_000, Duration::from_secs(1)),
        over_limit_cache: false,
        ..RateLimitConfig::default()
    };
    if anonymous {
        config.fallback = FallbackMode::Local;
        config.redis_timeout = Duration::from_millis(200);
        config.redis_response_timeout = Duration::from_millis(500);
        config.redis_connect_timeout = Duration::from_millis(200);
        config.heartbeat_interval = Duration::from_millis(100);
        config.breaker = BreakerConfig::consecutive(1, Duration::from_secs(60));
        config
            .tiers
            .insert("anonymous".into(), TierConfig::limited(limit.clone()));
    }
    config
        .tiers
        .insert("api-key".into(), TierConfig::limited(limit));
    config.routes.clear();
    config.route_classes.clear();
    config.route_classes.insert("default".into(), huge.clone());
    config.plans.insert("free".into(), huge);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (allowed, denied, other, first, last, fallback) = runtime.block_on(async move {
        let limiter = RateLimiter::builder(config)
            .redis_url(url.clone())
            .build()?;
        let caller = CallerIdentity::new("load", "api-key", "free", "shared-principal");
        let client = Some(IpAddr::from([198, 51, 100, 7]));
        // When the fallback first decided, shared by the tasks.
        let first_fallback: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let deadline = Instant::now() + traffic;
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let limiter = limiter.clone();
            let caller = caller.clone();
            let first_fallback = first_fallback.clone();
            tasks.push(tokio::spawn(async move {
                let (mut allowed, mut denied, mut other) = (0u64, 0u64, 0u64);
                let (mut first, mut last) = (u64::MAX, 0u64);
                let mut fallback = 0u64;
                // With `anonymous`, SECONDS is at most: the run ends once the window after the
                // first fallback decision is over.
                let window_over = || {
                    anonymous
                        && first_fallback
                            .get()
                            .is_some_and(|since| since.elapsed() >= period)
                };
                while Instant::now() < deadline && !window_over() {
                    let decision = limiter
                        .check(&LimitRequest {
                            caller: (!anonymous).then_some(&caller),
                            client,
                            route: None,
                        })
                        .await;
                    if decision.backend == Backend::Fallback {
                        let since = *first_fallback.get_or_init(Instant::now);
                        if decision.allowed && since.elapsed() < period {
                            fallback += 1;
                        }
                    }
                    if anonymous {
                        // A steady stream, not a busy loop: the fallback answers in nanoseconds.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    match (decision.backend, decision.redis_time_micros) {
                        (Backend::Redis, Some(time)) => {
                            first = first.min(time);
                            last = last.max(time);
                            if decision.allowed {
                                allowed += 1;
                            } else {
                                denied += 1;
                            }
                        }
                        _ => other += 1,
                    }
                }
                (allowed, denied, other, first, last, fallback)
            }));
        }
        let mut total = (0, 0, 0, u64::MAX, 0, 0);
        for task in tasks {
            let (allowed, denied, other, first, last, fallback) = task.await?;
            total.0 += allowed;
            total.1 += denied;
            total.2 += other;
            total.3 = total.3.min(first);
            total.4 = total.4.max(last);
            total.5 += fallback;
        }
        Ok::<_, Box<dyn std::error::Error>>(total)
    })?;
    println!("LOAD {allowed} {denied} {other} {first} {last}");
    if anonymous {
        println!("FALLBACK {fallback}");
    }
    Ok(())
}
