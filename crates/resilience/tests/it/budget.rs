//! The retry budget: a dependency failing 100% for a simulated minute never receives more retries
//! than the budget allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mainstay_clock::{ManualClock, TokioClock};
use mainstay_resilience::{
    ErrorClass, ResilienceMetrics, Retry, RetryBudget, RetryBudgetConfig, RetryConfig, RetryError,
};
use prometheus_client::registry::Registry;

use crate::support::{exposition, sample};

#[tokio::test(start_paused = true)]
async fn a_failing_dependency_gets_at_most_the_budgeted_retries() {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let budget = RetryBudget::with_clock(RetryBudgetConfig::default(), TokioClock::new().shared())
        .expect("valid");
    let retry = Retry::builder(
        "flaky",
        RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        },
    )
    .budget(budget)
    .metrics(metrics.clone())
    .build()
    .expect("valid");
    let attempts = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // 100 requests a second for a minute, every attempt failing.
    let requests: u64 = 6_000;
    for _ in 0..requests {
        let (retry, attempts, exhausted) = (retry.clone(), attempts.clone(), exhausted.clone());
        tasks.push(tokio::spawn(async move {
            let result = retry
                .run(&|_: &&str| ErrorClass::TRANSIENT, |_| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    async { Err::<(), _>("503") }
                })
                .await;
            if matches!(result, Err(RetryError::BudgetExhausted { .. })) {
                exhausted.fetch_add(1, Ordering::Relaxed);
            }
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in tasks {
        task.await.expect("no panic");
    }
    let retries = attempts.load(Ordering::Relaxed) - requests;
    // Without a budget: 2 retries per request, 12,000. With it: 20% of the requests plus the
    // reserve of 10 retries a second (over the minute and the last window).
    let allowed = 0.2 * requests as f64 + 10.0 * (60.0 + 10.0);
    assert!(
        (retries as f64) <= allowed,
        "{retries} retries, {allowed} allowed"
    );
    assert!(
        retries > 1_000,
        "the budget must still allow retries: {retries}"
    );
    let exhausted = exhausted.load(Ordering::Relaxed);
    assert!(exhausted > 4_000, "{exhausted}");
    let text = exposition(&registry);
    assert_eq!(
        sample(&text, r#"retry_budget_exhausted_total{operation="flaky"}"#),
        Some(exhausted as f64)
    );
}

#[test]
fn the_budget_earns_a_fraction_of_requests_plus_a_reserve() {
    let clock = ManualClock::new();
    let config = RetryBudgetConfig {
        ratio: 0.5,
        min_retries_per_second: 1,
        ttl: Duration::from_secs(2),
    };
    let budget = RetryBudget::with_clock(config, clock.shared()).expect("valid");
    // Reserve: 1 per second over a 2 s window.
    assert_eq!(budget.available(), 2);
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 7);
    let granted = (0..100).filter(|_| budget.try_withdraw()).count();
    assert_eq!(granted, 7);
    // Deposits and withdrawals expire with the window.
    clock.advance(Duration::from_secs(3));
    assert_eq!(budget.available(), 2);
}

#[test]
fn an_invalid_budget_names_its_key() {
    let config = RetryBudgetConfig {
        ttl: Duration::ZERO,
        ..RetryBudgetConfig::default()
    };
    let error = RetryBudget::new(config).expect_err("invalid");
    assert_eq!(error.key, "ttl");
}
