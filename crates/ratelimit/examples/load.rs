//! A load generator: several tasks send requests of one caller through a limiter on Redis for a
//! while, then one line reports what was decided. The crate's multi-process tests run it as their
//! child processes (a binary of its own, so that no test of the test binary passes by doing
//! nothing); it is also a quick way to watch a limit hold across processes.
//!
//! ```text
//! cargo run -p mainstay-ratelimit --example load -- \
//!     redis://127.0.0.1:6379 REQUESTS PERIOD_MS BURST SECONDS
//! ```
//!
//! It prints `LOAD allowed denied other first_us last_us`: decisions Redis allowed and denied, the
//! decisions not made on Redis, and the Redis time of the first and last Redis decision.

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
    let [url, requests, period_ms, burst, seconds] = &args[..] else {
        return Err("usage: load REDIS_URL REQUESTS PERIOD_MS BURST SECONDS".into());
    };
    let limit = LimitSpec::new(requests.parse()?, Duration::from_millis(period_ms.parse()?))
        .with_burst(burst.parse()?);
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
    let (allowed, denied, other, first, last) = runtime.block_on(async move {
        let limiter = RateLimiter::builder(config)
            .redis_url(url.clone())
            .build()?;
        let caller = CallerIdentity::new("load", "api-key", "free", "shared-principal");
        let deadline = Instant::now() + traffic;
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let limiter = limiter.clone();
            let caller = caller.clone();
            tasks.push(tokio::spawn(async move {
                let (mut allowed, mut denied, mut other) = (0u64, 0u64, 0u64);
                let (mut first, mut last) = (u64::MAX, 0u64);
                while Instant::now() < deadline {
                    let decision = limiter
                        .check(&LimitRequest {
                            caller: Some(&caller),
                            client: None,
                            route: None,
                        })
                        .await;
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
                (allowed, denied, other, first, last)
            }));
        }
        let mut total = (0, 0, 0, u64::MAX, 0);
        for task in tasks {
            let (allowed, denied, other, first, last) = task.await?;
            total.0 += allowed;
            total.1 += denied;
            total.2 += other;
            total.3 = total.3.min(first);
            total.4 = total.4.max(last);
        }
        Ok::<_, Box<dyn std::error::Error>>(total)
    })?;
    println!("LOAD {allowed} {denied} {other} {first} {last}");
    Ok(())
}
