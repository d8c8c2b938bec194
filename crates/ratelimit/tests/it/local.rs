//! The in-process backend through the limiter: policies, identities, bypass, the key cap, sweeping
//! and memory.

use std::net::IpAddr;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_ratelimit::{
    Backend, CallerIdentity, InProcessLimiter, LimitRequest, LimitSpec, Pseudonym, RateLimitConfig,
    RateLimitMetrics, RateLimiter,
};
use prometheus_client::registry::Registry;

use crate::support::{huge, limits};

fn in_process(config: RateLimitConfig, clock: &ManualClock) -> RateLimiter {
    RateLimiter::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap()
}

fn by(caller: &CallerIdentity) -> LimitRequest<'_> {
    LimitRequest {
        caller: Some(caller),
        client: None,
        route: None,
    }
}

fn from(address: &str) -> LimitRequest<'static> {
    LimitRequest {
        caller: None,
        client: Some(address.parse().unwrap()),
        route: None,
    }
}

#[tokio::test]
async fn keys_of_one_organisation_share_its_quota_and_route_denials_consume_none() {
    let clock = ManualClock::new();
    let config = limits(
        RateLimitConfig::default(),
        huge(),
        LimitSpec::per_minute(60).with_burst(1),
        LimitSpec::per_hour(3),
    );
    let limiter = in_process(config, &clock);
    let key = |principal: &str| CallerIdentity::new("acme", "api-key", "free", principal);
    assert!(limiter.check(&by(&key("k1"))).await.allowed);
    for _ in 0..10 {
        let denied = limiter.check(&by(&key("k1"))).await;
        assert_eq!(denied.policy.unwrap().name.as_ref(), "class:default");
    }
    // Had the denials taken from the quota of 3, k2 would be refused.
    assert!(limiter.check(&by(&key("k2"))).await.allowed);
    assert!(limiter.check(&by(&key("k3"))).await.allowed);
    let exhausted = limiter.check(&by(&key("k4"))).await;
    assert!(!exhausted.allowed);
    assert_eq!(exhausted.policy.unwrap().name.as_ref(), "plan:free");
    assert!(
        limiter
            .check(&by(&CallerIdentity::new("globex", "api-key", "free", "k1")))
            .await
            .allowed
    );
}

#[tokio::test]
async fn anonymous_callers_are_counted_by_address_quota_included() {
    let clock = ManualClock::new();
    let config = limits(
        RateLimitConfig::default(),
        huge(),
        huge(),
        LimitSpec::per_hour(2),
    );
    let limiter = in_process(config, &clock);
    for _ in 0..2 {
        assert!(limiter.check(&from("198.51.100.1")).await.allowed);
    }
    assert!(!limiter.check(&from("198.51.100.1")).await.allowed);
    assert!(limiter.check(&from("198.51.100.2")).await.allowed);
    // An anonymous CallerIdentity is counted by address too, not by its (empty) organisation.
    let anonymous = CallerIdentity::anonymous("anonymous", "free");
    let request = LimitRequest {
        caller: Some(&anonymous),
        client: Some("198.51.100.3".parse::<IpAddr>().unwrap()),
        route: None,
    };
    assert!(limiter.check(&request).await.allowed);
}

#[tokio::test]
async fn unknown_tiers_and_plans_get_the_anonymous_limits_and_admin_bypasses() {
    let clock = ManualClock::new();
    let mut config = RateLimitConfig::default();
    config.tiers.insert(
        "anonymous".into(),
        mainstay_ratelimit::TierConfig::limited(LimitSpec::per_minute(1)),
    );
    let limiter = in_process(config, &clock);
    let stranger = CallerIdentity::new("acme", "platinum", "galactic", "p");
    let first = limiter.check(&by(&stranger)).await;
    assert_eq!(first.policy.unwrap().name.as_ref(), "tier:anonymous");
    assert!(!limiter.check(&by(&stranger)).await.allowed);
    let admin = CallerIdentity::new("acme", "admin", "free", "root");
    for _ in 0..100 {
        let decision = limiter.check(&by(&admin)).await;
        assert_eq!(
            (decision.allowed, decision.backend),
            (true, Backend::Bypass)
        );
        assert!(decision.policy.is_none());
    }
    assert!(limiter.is_bypass_tier("admin"));
}

#[tokio::test]
async fn past_the_key_cap_the_least_recently_used_keys_are_evicted() {
    let clock = ManualClock::new();
    let mut registry = Registry::default();
    let metrics = RateLimitMetrics::register(&mut registry);
    let config = RateLimitConfig {
        max_local_keys: 10,
        ..limits(
            RateLimitConfig::default(),
            LimitSpec::per_minute(2),
            huge(),
            huge(),
        )
    };
    let limiter = RateLimiter::builder(config)
        .clock(clock.shared())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    for index in 0..10 {
        assert!(
            limiter
                .check(&from(&format!("10.0.0.{index}")))
                .await
                .allowed
        );
    }
    // 10.0.0.0 spends its bucket and is denied: it is the most recently used key.
    assert!(limiter.check(&from("10.0.0.0")).await.allowed);
    assert!(!limiter.check(&from("10.0.0.0")).await.allowed);
    // The store is full: each new address evicts the least recently used key (10.0.0.1, then
    // 10.0.0.2, ...) and gets a bucket of its own, not a share of one overflow bucket.
    for index in 10..14 {
        let address = format!("10.0.0.{index}");
        assert!(limiter.check(&from(&address)).await.allowed, "{address}");
        assert!(limiter.check(&from(&address)).await.allowed, "{address}");
        assert!(!limiter.check(&from(&address)).await.allowed, "{address}");
    }
    // The busy key was not evicted: still denied.
    assert!(!limiter.check(&from("10.0.0.0")).await.allowed);
    // An evicted key starts again with a full bucket: 10.0.0.1 had one request left, now two
    // (the documented fail-open of eviction).
    assert!(limiter.check(&from("10.0.0.1")).await.allowed);
    assert!(limiter.check(&from("10.0.0.1")).await.allowed);
    assert!(!limiter.check(&from("10.0.0.1")).await.allowed);
    // Three stores (tier, class, plan), each at its cap.
    assert_eq!(limiter.local_keys(), 30);
    // Idle keys are reclaimed by the sweep.
    clock.advance(Duration::from_secs(60));
    limiter.sweep();
    assert_eq!(limiter.local_keys(), 0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("ratelimit_local_keys 0"), "{text}");
}

#[tokio::test]
async fn anonymous_callers_are_counted_per_network_prefix() {
    let clock = ManualClock::new();
    let config = limits(
        RateLimitConfig::default(),
        LimitSpec::per_minute(3),
        huge(),
        huge(),
    );
    let limiter = in_process(config.clone(), &clock);
    // 300 addresses of one IPv6 /64 are one caller.
    let mut allowed = 0;
    for index in 0..300u32 {
        let address = format!("2001:db8:1:2:{:x}:{:x}::1", index >> 8, index & 0xff);
        allowed += usize::from(limiter.check(&from(&address)).await.allowed);
    }
    assert_eq!(allowed, 3);
    // Another /64 is another caller; IPv4 addresses are their own /32 by default.
    assert!(limiter.check(&from("2001:db8:1:3::1")).await.allowed);
    for address in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..3 {
            assert!(limiter.check(&from(address)).await.allowed);
        }
    }
    // An IPv4-mapped IPv6 address is the IPv4 address.
    assert!(!limiter.check(&from("::ffff:198.51.100.1")).await.allowed);
    assert_eq!(
        limiter.client_identity("::ffff:198.51.100.1".parse().unwrap()),
        limiter.client_identity("198.51.100.1".parse().unwrap())
    );
    assert_eq!(
        limiter
            .client_network("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap())
            .to_string(),
        "2001:db8:1:2::/64"
    );

    // Both prefix lengths are configurable.
    let wide = in_process(
        RateLimitConfig {
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 48,
            ..config
        },
        &clock,
    );
    for address in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert!(wide.check(&from(address)).await.allowed);
    }
    assert!(!wide.check(&from("203.0.113.200")).await.allowed);
    assert!(wide.check(&from("203.0.114.1")).await.allowed);
    assert_eq!(
        wide.client_identity("2001:db8:1:2::1".parse().unwrap()),
        wide.client_identity("2001:db8:1:ffff::1".parse().unwrap())
    );
    assert_eq!(
        wide.client_network("203.0.113.77".parse().unwrap())
            .to_string(),
        "203.0.113.0/24"
    );
}

#[tokio::test]
async fn the_sweep_keeps_busy_keys_and_drops_idle_ones() {
    let clock = ManualClock::new();
    let config = limits(
        RateLimitConfig::default(),
        LimitSpec::per_minute(60),
        huge(),
        huge(),
    );
    let limiter = in_process(config, &clock);
    for _ in 0..30 {
        assert!(limiter.check(&from("192.0.2.1")).await.allowed);
    }
    assert!(limiter.check(&from("192.0.2.2")).await.allowed);
    // Three stores (tier, class, plan) hold each address's key.
    assert_eq!(limiter.local_keys(), 6);
    clock.advance(Duration::from_secs(2));
    // 192.0.2.2's buckets are full again: indistinguishable from fresh, dropped. 192.0.2.1's tier
    // bucket is still 28 s from full and stays, with its state.
    limiter.sweep();
    assert_eq!(limiter.local_keys(), 1);
    let next = limiter.check(&from("192.0.2.1")).await;
    assert_eq!(next.remaining, 60 - 30 + 2 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_task_ends_with_the_limiter() {
    let config = RateLimitConfig {
        sweep_interval: Duration::from_millis(1),
        ..RateLimitConfig::default()
    };
    let limiter = RateLimiter::builder(config).build().unwrap();
    let sweeper = limiter.spawn_sweeper();
    drop(limiter);
    tokio::time::timeout(Duration::from_secs(10), sweeper)
        .await
        .expect("the sweeper stops once the limiter is gone")
        .unwrap();
}

/// Resident set size of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4_096
}

/// The stated bound: one million distinct addresses through a store capped at 100,000 keys keep
/// the store at its cap and the process's growth under 64 MiB (a key costs about 100 bytes).
#[test]
fn a_million_distinct_addresses_stay_within_the_memory_bound() {
    const BOUND: u64 = 64 * 1024 * 1024;
    let clock = ManualClock::new();
    let limiter =
        InProcessLimiter::new(&LimitSpec::per_minute(100), 100_000, clock.shared()).unwrap();
    let before = resident_bytes();
    for index in 0..1_000_000u32 {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&index.to_le_bytes());
        let _ = limiter.check_key(&Pseudonym(key));
    }
    let after = resident_bytes();
    // The cap: past it the least recently used keys were evicted.
    assert_eq!(limiter.len(), 100_000);
    assert!(
        after.saturating_sub(before) < BOUND,
        "grew by {} MiB",
        after.saturating_sub(before) / (1024 * 1024)
    );
    // Idle keys go at the sweep, and the map gives its memory back.
    clock.advance(Duration::from_secs(60));
    assert_eq!(limiter.sweep(), 0);
}
