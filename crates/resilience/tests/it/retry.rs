//! Retry on paused tokio time: attempts, backoff, jitter bounds, transient-only, Retry-After,
//! deadlines and attempt timeouts.

use std::sync::Mutex;
use std::time::Duration;

use mainstay_resilience::{AttemptError, ErrorClass, Retry, RetryConfig, RetryError};
use tokio::time::Instant;

/// Runs `retry` over an operation that fails with `error` at every attempt (after `work` of
/// simulated time); returns the result and the start time of each attempt in seconds.
async fn attempts(
    config: RetryConfig,
    classify: impl Fn(&&'static str) -> ErrorClass,
    work: Duration,
    deadline: Option<Instant>,
) -> (Result<(), RetryError<AttemptError<&'static str>>>, Vec<f64>) {
    let retry = Retry::new("test", config).expect("valid");
    let start = Instant::now();
    let starts = Mutex::new(Vec::new());
    let result = retry
        .run_until(deadline, &classify, |_| {
            starts
                .lock()
                .expect("unpoisoned")
                .push((Instant::now() - start).as_secs_f64());
            async move {
                tokio::time::sleep(work).await;
                Err::<(), _>("503")
            }
        })
        .await;
    (result, starts.into_inner().expect("unpoisoned"))
}

fn no_jitter() -> RetryConfig {
    RetryConfig {
        jitter: false,
        ..RetryConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_exponential_backoff() {
    let config = RetryConfig {
        max_attempts: 5,
        ..no_jitter()
    };
    let (result, starts) = attempts(config, |_| ErrorClass::TRANSIENT, Duration::ZERO, None).await;
    // 1 s, 2 s, 4 s, then capped at 10 s... here 8 s is still under the cap.
    assert_eq!(starts, [0.0, 1.0, 3.0, 7.0, 15.0]);
    assert!(matches!(
        result,
        Err(RetryError::Failed {
            attempts: 5,
            last: AttemptError::Inner("503")
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_backoff_is_capped() {
    let config = RetryConfig {
        max_attempts: 7,
        ..no_jitter()
    };
    let (_, starts) = attempts(config, |_| ErrorClass::TRANSIENT, Duration::ZERO, None).await;
    let gaps: Vec<f64> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(gaps, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_between_zero_and_the_backoff() {
    for _ in 0..20 {
        let (_, starts) = attempts(
            RetryConfig::default(),
            |_| ErrorClass::TRANSIENT,
            Duration::ZERO,
            None,
        )
        .await;
        assert_eq!(starts.len(), 3);
        assert!((0.0..=1.0).contains(&(starts[1] - starts[0])), "{starts:?}");
        assert!((0.0..=2.0).contains(&(starts[2] - starts[1])), "{starts:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn only_transient_errors_are_retried() {
    for class in [ErrorClass::Failure, ErrorClass::Ignored] {
        let (result, starts) = attempts(no_jitter(), move |_| class, Duration::ZERO, None).await;
        assert_eq!(starts, [0.0], "{class:?}");
        assert!(matches!(
            result,
            Err(RetryError::Failed { attempts: 1, .. })
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_replaces_the_backoff() {
    let hinted = |_: &&str| ErrorClass::Transient {
        retry_after: Some(Duration::from_secs(7)),
    };
    let (_, starts) = attempts(no_jitter(), hinted, Duration::ZERO, None).await;
    assert_eq!(starts, [0.0, 7.0, 14.0]);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_that_cannot_finish_before_the_deadline() {
    // Attempts take 1 s at most; the deadline is 3.5 s away. Attempt 1 runs [0, 1), waits 1 s,
    // attempt 2 runs [2, 3); attempt 3 would start at 5 s: past the deadline, so it never starts and
    // the error comes at once, without waiting.
    let config = RetryConfig {
        attempt_timeout: Some(Duration::from_secs(1)),
        ..no_jitter()
    };
    let start = Instant::now();
    let deadline = start + Duration::from_millis(3_500);
    let (result, starts) = attempts(
        config,
        |_| ErrorClass::TRANSIENT,
        Duration::from_secs(1),
        Some(deadline),
    )
    .await;
    assert_eq!(starts, [0.0, 1.0 + 1.0]);
    assert!(
        matches!(
            result,
            Err(RetryError::DeadlineExceeded {
                attempts: 2,
                last: Some(_)
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        Instant::now() - start,
        Duration::from_secs(3),
        "gave up when attempt 2 failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_deadline_ends_the_retries() {
    let config = RetryConfig {
        deadline: Some(Duration::from_secs(5)),
        ..no_jitter()
    };
    let hinted = |_: &&str| ErrorClass::Transient {
        retry_after: Some(Duration::from_secs(60)),
    };
    let (result, starts) = attempts(config, hinted, Duration::ZERO, None).await;
    assert_eq!(starts, [0.0]);
    assert!(matches!(
        result,
        Err(RetryError::DeadlineExceeded { attempts: 1, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn attempts_never_run_past_the_deadline() {
    // Each attempt would hang for a minute; the configured deadline of 2 s cuts the first one.
    let config = RetryConfig {
        deadline: Some(Duration::from_secs(2)),
        ..no_jitter()
    };
    let start = Instant::now();
    let (result, starts) = attempts(
        config,
        |_| ErrorClass::TRANSIENT,
        Duration::from_secs(60),
        None,
    )
    .await;
    assert_eq!(starts, [0.0]);
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    assert!(matches!(
        result,
        Err(RetryError::DeadlineExceeded {
            attempts: 1,
            last: Some(AttemptError::TimedOut(_))
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn timed_out_attempts_are_retried() {
    let config = RetryConfig {
        attempt_timeout: Some(Duration::from_millis(500)),
        ..no_jitter()
    };
    let (result, starts) = attempts(
        config,
        |_| ErrorClass::Failure,
        Duration::from_secs(60),
        None,
    )
    .await;
    assert_eq!(starts, [0.0, 1.5, 4.0]);
    assert!(matches!(
        result,
        Err(RetryError::Failed {
            attempts: 3,
            last: AttemptError::TimedOut(_)
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_the_retries() {
    let retry = Retry::new("test", no_jitter()).expect("valid");
    let result = retry
        .run(&|_: &&str| ErrorClass::TRANSIENT, |attempt| async move {
            if attempt == 2 {
                Ok(attempt)
            } else {
                Err("503")
            }
        })
        .await;
    assert_eq!(result.ok(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_is_capped_by_the_maximum_delay() {
    // A server asking for an hour is not waited for an hour: the retry's `max_delay` (10 s) caps it.
    let hinted = |_: &&str| ErrorClass::Transient {
        retry_after: Some(Duration::from_secs(3_600)),
    };
    let (result, starts) = attempts(no_jitter(), hinted, Duration::ZERO, None).await;
    assert_eq!(starts, [0.0, 10.0, 20.0]);
    assert!(matches!(
        result,
        Err(RetryError::Failed { attempts: 3, .. })
    ));
}
