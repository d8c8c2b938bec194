//! The composed policy: bulkhead -> retry -> breaker -> timeout -> operation, and fallbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mainstay_resilience::{
    BreakerConfig, BreakerState, Bulkhead, BulkheadConfig, BulkheadError, CallError,
    CircuitBreaker, ErrorClass, Policy, PolicyError, Retry, RetryConfig, RetryError, with_fallback,
};

use crate::support::failure;

fn retry(attempts: u32) -> Retry {
    Retry::new(
        "op",
        RetryConfig {
            max_attempts: attempts,
            jitter: false,
            ..RetryConfig::default()
        },
    )
    .expect("valid")
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_the_retries() {
    let breaker = CircuitBreaker::new(
        "dep",
        BreakerConfig::consecutive(2, Duration::from_secs(30)),
    )
    .expect("valid");
    let policy = Policy::new()
        .with_retry(retry(5))
        .with_breaker(breaker.clone());
    let calls = AtomicU32::new(0);
    let result = policy
        .run(&failure, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("503") }
        })
        .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the third attempt is rejected, not made"
    );
    assert!(
        matches!(
            result,
            Err(PolicyError::Call(RetryError::Failed {
                attempts: 3,
                last: CallError::Rejected(_)
            }))
        ),
        "{result:?}"
    );
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_counts_as_a_breaker_failure() {
    let breaker = CircuitBreaker::new(
        "slow",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    )
    .expect("valid");
    let policy = Policy::new()
        .with_breaker(breaker.clone())
        .with_timeout(Duration::from_millis(100));
    let result = policy
        .run(&|_: &&str| ErrorClass::Ignored, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(
        result,
        Err(PolicyError::Call(RetryError::Failed {
            attempts: 1,
            last: CallError::TimedOut(_)
        }))
    ));
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_transient_error_is_retried_through_the_breaker_until_it_succeeds() {
    let breaker = CircuitBreaker::new("dep", BreakerConfig::default()).expect("valid");
    let policy = Policy::new()
        .with_retry(retry(3))
        .with_breaker(breaker.clone());
    let calls = AtomicU32::new(0);
    let result = policy
        .run(&failure, || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move { if call < 2 { Err("503") } else { Ok(call) } }
        })
        .await;
    assert_eq!(result.ok(), Some(2));
    assert_eq!(breaker.snapshot().failures, 2);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_bounds_the_whole_call() {
    let config = BulkheadConfig {
        max_concurrent: 1,
        max_queue: 0,
        max_wait: None,
    };
    let bulkhead = Bulkhead::new("one", config, None).expect("valid");
    let policy = Arc::new(Policy::new().with_bulkhead(bulkhead));
    let busy = {
        let policy = policy.clone();
        tokio::spawn(async move {
            policy
                .run(&failure, || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, &str>(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let result = policy.run(&failure, || async { Ok::<_, &str>(()) }).await;
    assert!(matches!(
        result,
        Err(PolicyError::Bulkhead(BulkheadError::Full { .. }))
    ));
    assert!(busy.await.expect("no panic").is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_fallback_answers_degraded() {
    let policy = Policy::new().with_retry(retry(2));
    let answer = with_fallback(
        policy.run(&failure, || async { Err::<Vec<u32>, _>("503") }),
        |_| Vec::new(),
    )
    .await;
    assert!(answer.degraded);
    assert!(answer.value.is_empty());
    let answer = with_fallback(
        policy.run(&failure, || async { Ok::<_, &str>(vec![1]) }),
        |_| Vec::new(),
    )
    .await;
    assert!(!answer.degraded);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_bounds_a_single_attempt() {
    let policy = Policy::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let result = policy
        .run_until(Some(deadline), &failure, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(
        result,
        Err(PolicyError::Call(RetryError::DeadlineExceeded {
            attempts: 1,
            ..
        }))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_policy_falls_back_on_whatever_its_parts_end_in() {
    let breaker = CircuitBreaker::new(
        "search",
        BreakerConfig::consecutive(2, Duration::from_secs(30)),
    )
    .expect("valid");
    let bulkhead = Bulkhead::new(
        "search",
        BulkheadConfig {
            max_concurrent: 1,
            max_queue: 0,
            max_wait: None,
        },
        None,
    )
    .expect("valid");
    let policy = Arc::new(
        Policy::new()
            .with_bulkhead(bulkhead)
            .with_retry(retry(2))
            .with_breaker(breaker.clone())
            .with_timeout(Duration::from_millis(100)),
    );
    let cached = |error: PolicyError<&str>| format!("cached ({error})");

    // The call answers: not degraded.
    let answer = policy
        .run_with_fallback(
            &failure,
            || async { Ok::<_, &str>("fresh".to_owned()) },
            cached,
        )
        .await;
    assert_eq!((answer.value.as_str(), answer.degraded), ("fresh", false));

    // Two slow attempts time out, are retried, and open the breaker: the fallback answers.
    let answer = policy
        .run_with_fallback(
            &failure,
            || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, &str>("late".to_owned())
            },
            cached,
        )
        .await;
    assert!(answer.degraded);
    assert!(answer.value.contains("timed out"), "{}", answer.value);
    assert_eq!(breaker.state(), BreakerState::Open);

    // The open breaker: the operation is never called, the fallback answers.
    let calls = AtomicU32::new(0);
    let answer = policy
        .run_with_fallback(
            &failure,
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, &str>("fresh".to_owned()) }
            },
            cached,
        )
        .await;
    assert!(answer.degraded);
    assert!(
        answer.value.contains("circuit breaker is open"),
        "{}",
        answer.value
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // A full bulkhead: the fallback answers too.
    breaker.reset();
    let busy = {
        let policy = policy.clone();
        tokio::spawn(async move {
            policy
                .run(&failure, || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, &str>(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let answer = policy
        .run_with_fallback(
            &failure,
            || async { Ok::<_, &str>("fresh".to_owned()) },
            cached,
        )
        .await;
    assert!(answer.degraded);
    assert!(answer.value.contains("bulkhead full"), "{}", answer.value);
    assert!(busy.await.expect("no panic").is_ok());
}
