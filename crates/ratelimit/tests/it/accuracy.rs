//! Accuracy across processes: 4 OS processes (this test binary re-executed in a child mode) share
//! one limit on one private Redis for 10 s of traffic. The expected count comes from Redis `TIME`
//! at the first and last request: burst + (last - first) / emission interval, within max(1%, 2).
//!
//! This is the crate's only long test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mainstay_ratelimit::{
    Backend, CallerIdentity, FallbackMode, LimitRequest, LimitSpec, RateLimitConfig, RateLimiter,
};
use mainstay_resilience::BreakerConfig;

use crate::support::{RedisServer, huge, limits, redis_config};

/// Set in a child process: the Redis URL to hammer.
const CHILD_REDIS: &str = "MAINSTAY_RATELIMIT_ACCURACY_REDIS";
const PROCESSES: usize = 4;
const TRAFFIC: Duration = Duration::from_secs(10);
/// 200 per second (one per 5 ms), with a burst of 10.
const REQUESTS_PER_SECOND: u32 = 200;
const BURST: u32 = 10;

fn config() -> RateLimitConfig {
    RateLimitConfig {
        // Fail closed and slow to trip: a fallback decision would make the count meaningless, so the
        // child counts them and the parent requires none.
        fallback: FallbackMode::Deny,
        redis_timeout: Duration::from_secs(2),
        redis_response_timeout: Duration::from_secs(2),
        breaker: BreakerConfig::consecutive(1_000, Duration::from_secs(1)),
        ..limits(
            redis_config(),
            LimitSpec::new(REQUESTS_PER_SECOND, Duration::from_secs(1)).with_burst(BURST),
            huge(),
            huge(),
        )
    }
}

/// The child mode: when run by the parent (with `CHILD_REDIS` set) it sends requests for 10 s and
/// prints one `ACCURACY allowed denied other first_us last_us` line; otherwise it does nothing.
#[test]
fn accuracy_child_process() {
    let Ok(url) = std::env::var(CHILD_REDIS) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let limiter = RateLimiter::builder(config())
            .redis_url(url)
            .build()
            .unwrap();
        let caller = CallerIdentity::new("accuracy", "api-key", "free", "shared-principal");
        let deadline = Instant::now() + TRAFFIC;
        let mut tasks = Vec::new();
        for _ in 0..4 {
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
        let (mut allowed, mut denied, mut other) = (0, 0, 0);
        let (mut first, mut last) = (u64::MAX, 0);
        for task in tasks {
            let (a, d, o, f, l) = task.await.unwrap();
            allowed += a;
            denied += d;
            other += o;
            first = first.min(f);
            last = last.max(l);
        }
        println!("ACCURACY {allowed} {denied} {other} {first} {last}");
    });
}

#[test]
fn four_processes_sharing_one_limit_get_the_exact_count() {
    if std::env::var(CHILD_REDIS).is_ok() {
        return;
    }
    let redis = RedisServer::start();
    let binary = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&binary)
                .args([
                    "--exact",
                    "accuracy::accuracy_child_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_REDIS, redis.url())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut allowed, mut denied) = (0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0u64);
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        let line = stdout
            .lines()
            // libtest prints the test's name on the same line before its output.
            .find_map(|line| line.split_once("ACCURACY ").map(|(_, report)| report))
            .unwrap_or_else(|| panic!("a child reported no result: {stdout}"));
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|field| field.parse().unwrap())
            .collect();
        let [child_allowed, child_denied, other, child_first, child_last] = fields[..] else {
            panic!("malformed child report: {line}");
        };
        assert_eq!(other, 0, "a child decided without Redis");
        assert!(child_allowed + child_denied > 0);
        allowed += child_allowed;
        denied += child_denied;
        first = first.min(child_first);
        last = last.max(child_last);
    }
    let emission_us = 1_000_000 / u64::from(REQUESTS_PER_SECOND);
    let expected = u64::from(BURST) + (last - first) / emission_us;
    let tolerance = (expected / 100).max(2);
    assert!(
        allowed.abs_diff(expected) <= tolerance,
        "allowed {allowed}, expected {expected} ± {tolerance} over {} ms ({denied} denied)",
        (last - first) / 1_000
    );
    // The traffic really exceeded the limit, or the test proves nothing.
    assert!(denied > allowed, "{denied} denied, {allowed} allowed");
}
