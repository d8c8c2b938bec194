//! The tower layers (feature `tower`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mainstay_resilience::layer::{BulkheadLayer, CircuitBreakerLayer, RetryLayer, TimeoutLayer};
use mainstay_resilience::{
    BreakerConfig, BreakerState, Bulkhead, BulkheadConfig, BulkheadError, CircuitBreaker,
    ErrorClass, Outcome, Rejected, Retry, RetryConfig, RetryError, TimedOut,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn the_breaker_layer_counts_failed_responses_and_rejects_when_open() {
    let breaker = CircuitBreaker::new(
        "http",
        BreakerConfig::consecutive(2, Duration::from_secs(30)),
    )
    .expect("valid");
    let classify = |result: Result<&u16, &Infallible>| match result {
        Ok(status) if *status >= 500 => Outcome::Failure,
        _ => Outcome::Success,
    };
    let service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone(), classify))
        .service(service_fn(|status: u16| async move {
            Ok::<_, Infallible>(status)
        }));
    assert_eq!(service.clone().oneshot(404).await.expect("answered"), 404);
    assert_eq!(service.clone().oneshot(503).await.expect("answered"), 503);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(service.clone().oneshot(503).await.expect("answered"), 503);
    assert_eq!(breaker.state(), BreakerState::Open);
    let error = service.oneshot(200).await.expect_err("rejected");
    assert!(error.downcast_ref::<Rejected>().is_some(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_timeout_layer_cancels_slow_requests() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .service(service_fn(|wait: u64| async move {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok::<_, Infallible>(wait)
        }));
    assert_eq!(service.clone().oneshot(10).await.expect("in time"), 10);
    let error = service.oneshot(100).await.expect_err("too slow");
    assert_eq!(
        error.downcast_ref::<TimedOut>(),
        Some(&TimedOut {
            after: Duration::from_millis(50)
        })
    );
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_layer_rejects_beyond_its_limit() {
    let config = BulkheadConfig {
        max_concurrent: 1,
        max_queue: 0,
        max_wait: None,
    };
    let bulkhead = Bulkhead::new("layer", config, None).expect("valid");
    let service = ServiceBuilder::new()
        .layer(BulkheadLayer::new(bulkhead))
        .service(service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(())
        }));
    let busy = tokio::spawn(service.clone().oneshot(()));
    tokio::task::yield_now().await;
    let error = service.oneshot(()).await.expect_err("full");
    assert!(
        matches!(
            error.downcast_ref::<BulkheadError>(),
            Some(BulkheadError::Full { .. })
        ),
        "{error}"
    );
    assert!(busy.await.expect("no panic").is_ok());
}

#[derive(Debug, thiserror::Error)]
#[error("service unavailable")]
struct Unavailable;

#[tokio::test(start_paused = true)]
async fn the_retry_layer_retries_transient_errors() {
    let calls = Arc::new(AtomicU32::new(0));
    let retry = Retry::new(
        "layer",
        RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        },
    )
    .expect("valid");
    let counted = calls.clone();
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(retry, |_: &Unavailable| {
            ErrorClass::TRANSIENT
        }))
        .service(service_fn(move |()| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            async move { if call < 2 { Err(Unavailable) } else { Ok(call) } }
        }));
    assert_eq!(service.clone().oneshot(()).await.expect("third attempt"), 2);
    calls.store(0, Ordering::SeqCst);
    let always_failing = ServiceBuilder::new()
        .layer(RetryLayer::new(
            Retry::new(
                "failing",
                RetryConfig {
                    jitter: false,
                    ..RetryConfig::default()
                },
            )
            .expect("valid"),
            |_: &Unavailable| ErrorClass::TRANSIENT,
        ))
        .service(service_fn(|()| async { Err::<(), _>(Unavailable) }));
    let error = always_failing.oneshot(()).await.expect_err("gave up");
    let retry_error =
        error.downcast_ref::<RetryError<mainstay_resilience::AttemptError<Unavailable>>>();
    assert!(
        matches!(retry_error, Some(RetryError::Failed { attempts: 3, .. })),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_fallback_layer_answers_every_refusal_of_the_stack() {
    use mainstay_resilience::layer::FallbackLayer;

    let breaker = CircuitBreaker::new(
        "upstream",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    )
    .expect("valid");
    let classify = |result: Result<&u16, &tower::BoxError>| match result {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    // A 503 for a refusal of the breaker, a 504 for a timeout, a 502 for anything else.
    let fallback = |error: tower::BoxError| {
        if error.downcast_ref::<Rejected>().is_some() {
            503_u16
        } else if error.downcast_ref::<TimedOut>().is_some() {
            504
        } else {
            502
        }
    };
    let service = ServiceBuilder::new()
        .layer(FallbackLayer::new(fallback))
        .layer(CircuitBreakerLayer::new(breaker.clone(), classify))
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .service(service_fn(|request: u16| async move {
            match request {
                0 => Err(Unavailable),
                1 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok(200)
                }
                _ => Ok(200),
            }
        }));
    assert_eq!(service.clone().oneshot(2).await.expect("answered"), 200);
    assert_eq!(service.clone().oneshot(1).await.expect("answered"), 504);
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "the timeout was a failure"
    );
    assert_eq!(service.clone().oneshot(2).await.expect("answered"), 503);
    breaker.reset();
    assert_eq!(service.oneshot(0).await.expect("answered"), 502);
}
