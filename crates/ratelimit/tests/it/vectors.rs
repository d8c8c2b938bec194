//! One table of GCRA test vectors, run against the in-process backend and the Redis script: both
//! must give the expected decisions, and the same decisions as each other.

use std::time::Duration;

use mainstay_ratelimit::{Backend, CallerIdentity, Decision, LimitRequest, LimitSpec, RateLimiter};

use crate::support::{RedisServer, huge, limits, redis_config};

/// One request of a vector: at `at_ms`, expect `allowed`, the speaking policy, `remaining`, and
/// reset and retry in milliseconds.
struct Step {
    at_ms: u64,
    allowed: bool,
    policy: &'static str,
    remaining: u32,
    reset_ms: u64,
    retry_ms: u64,
}

const fn step(
    at_ms: u64,
    allowed: bool,
    policy: &'static str,
    remaining: u32,
    reset_ms: u64,
    retry_ms: u64,
) -> Step {
    Step {
        at_ms,
        allowed,
        policy,
        remaining,
        reset_ms,
        retry_ms,
    }
}

struct Vector {
    name: &'static str,
    tier: LimitSpec,
    class: LimitSpec,
    plan: LimitSpec,
    steps: Vec<Step>,
}

fn vectors() -> Vec<Vector> {
    let minute = Duration::from_secs(60);
    vec![
        Vector {
            name: "burst, denial, refill, full again",
            tier: LimitSpec::new(60, minute).with_burst(3),
            class: huge(),
            plan: huge(),
            steps: vec![
                step(0, true, "tier:api-key", 2, 1_000, 0),
                step(0, true, "tier:api-key", 1, 2_000, 0),
                step(0, true, "tier:api-key", 0, 3_000, 0),
                step(0, false, "tier:api-key", 0, 3_000, 1_000),
                step(500, false, "tier:api-key", 0, 2_500, 500),
                step(1_000, true, "tier:api-key", 0, 3_000, 0),
                step(1_001, false, "tier:api-key", 0, 2_999, 999),
                step(9_000, true, "tier:api-key", 2, 1_000, 0),
            ],
        },
        Vector {
            name: "a denial by the route limit consumes none of the quota",
            tier: LimitSpec::new(1_000, minute),
            class: LimitSpec::new(60, minute).with_burst(2),
            plan: LimitSpec::new(5, Duration::from_secs(3_600)),
            steps: vec![
                step(0, true, "class:default", 1, 1_000, 0),
                step(0, true, "class:default", 0, 2_000, 0),
                step(0, false, "class:default", 0, 2_000, 1_000),
                step(0, false, "class:default", 0, 2_000, 1_000),
                step(0, false, "class:default", 0, 2_000, 1_000),
                step(1_000, true, "class:default", 0, 2_000, 0),
                step(2_000, true, "class:default", 0, 2_000, 0),
                // The fifth request drains the quota (5 per hour: one per 720 s).
                step(10_000, true, "plan:free", 0, 3_590_000, 0),
                step(20_000, false, "plan:free", 0, 3_580_000, 700_000),
            ],
        },
        Vector {
            name: "of two denials the longer wait speaks",
            tier: LimitSpec::new(60, minute).with_burst(1),
            class: LimitSpec::new(30, minute).with_burst(1),
            plan: huge(),
            steps: vec![
                step(0, true, "class:default", 0, 2_000, 0),
                step(0, false, "class:default", 0, 2_000, 2_000),
                step(1_000, false, "class:default", 0, 1_000, 1_000),
                step(2_000, true, "class:default", 0, 2_000, 0),
            ],
        },
        Vector {
            // Keys expire on Redis's real clock (PX), so every vector's intervals are long enough
            // for its steps to run before expiry on a loaded machine.
            name: "sub-second offsets",
            tier: LimitSpec::new(5, Duration::from_secs(10)).with_burst(3),
            class: huge(),
            plan: huge(),
            steps: vec![
                step(0, true, "tier:api-key", 2, 2_000, 0),
                step(0, true, "tier:api-key", 1, 4_000, 0),
                step(0, true, "tier:api-key", 0, 6_000, 0),
                step(1, false, "tier:api-key", 0, 5_999, 1_999),
                step(1_999, false, "tier:api-key", 0, 4_001, 1),
                step(2_000, true, "tier:api-key", 0, 6_000, 0),
                step(2_001, false, "tier:api-key", 0, 5_999, 1_999),
            ],
        },
    ]
}

/// What two backends must agree on.
fn essence(decision: &Decision) -> (bool, String, u32, Duration, Duration) {
    (
        decision.allowed,
        decision
            .policy
            .as_ref()
            .map(|policy| policy.name.to_string())
            .unwrap_or_default(),
        decision.remaining,
        decision.reset_after,
        decision.retry_after,
    )
}

async fn run(
    limiter: &RateLimiter,
    vector: &Vector,
    base: Duration,
    organisation: &str,
) -> Vec<Decision> {
    let caller = CallerIdentity::new(
        organisation,
        "api-key",
        "free",
        format!("{organisation}-key"),
    );
    let request = LimitRequest {
        caller: Some(&caller),
        client: None,
        route: None,
    };
    let mut decisions = Vec::new();
    for step in &vector.steps {
        let decision = limiter
            .check_at(&request, base + Duration::from_millis(step.at_ms))
            .await;
        let expected = (
            step.allowed,
            step.policy.to_owned(),
            step.remaining,
            Duration::from_millis(step.reset_ms),
            Duration::from_millis(step.retry_ms),
        );
        assert_eq!(
            essence(&decision),
            expected,
            "{}: step at {} ms on {:?}",
            vector.name,
            step.at_ms,
            decision.backend
        );
        decisions.push(decision);
    }
    decisions
}

#[tokio::test]
async fn both_backends_decide_every_vector_alike() {
    let redis = RedisServer::start();
    // A realistic epoch time: Redis computes in microseconds since 1970 as Lua doubles.
    let base = Duration::from_secs(1_763_900_000);
    for (index, vector) in vectors().iter().enumerate() {
        let config = limits(
            redis_config(),
            vector.tier.clone(),
            vector.class.clone(),
            vector.plan.clone(),
        );
        let local = RateLimiter::builder(config.clone()).build().unwrap();
        let remote = RateLimiter::builder(config)
            .redis_url(redis.url())
            .build()
            .unwrap();
        let organisation = format!("vector-{index}");
        let in_process = run(&local, vector, base, &organisation).await;
        let on_redis = run(&remote, vector, base, &organisation).await;
        assert!(
            in_process
                .iter()
                .all(|decision| decision.backend == Backend::Memory)
        );
        assert!(
            on_redis
                .iter()
                .all(|decision| decision.backend == Backend::Redis)
        );
        let left: Vec<_> = in_process.iter().map(essence).collect();
        let right: Vec<_> = on_redis.iter().map(essence).collect();
        assert_eq!(left, right, "{}", vector.name);
    }
}
