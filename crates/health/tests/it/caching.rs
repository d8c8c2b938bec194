//! Caching for `cache_interval`, coalescing of concurrent probes and background refresh.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use mainstay_clock::ManualClock;
use mainstay_health::{CheckOutcome, Criticality, Status, View};

use crate::support::{Mode, TestCheck, config, settle, started, until};

#[tokio::test]
async fn results_are_reused_for_the_cache_interval() {
    let clock = ManualClock::new();
    let check = TestCheck::healthy("db", &clock);
    let registry = started(config(), &clock, &[&check]);

    registry.readiness(View::Public).await;
    registry.readiness(View::Public).await;
    registry.deps(View::Admin).await;
    assert_eq!(check.calls(), 1);
    clock.advance(Duration::from_millis(999));
    registry.readiness(View::Public).await;
    assert_eq!(check.calls(), 1);
    clock.advance(Duration::from_millis(1));
    registry.readiness(View::Public).await;
    assert_eq!(check.calls(), 2);
}

#[tokio::test]
async fn cached_results_change_only_when_refreshed() {
    let clock = ManualClock::new();
    let check = TestCheck::healthy("db", &clock);
    let registry = started(config(), &clock, &[&check]);
    assert_eq!(registry.readiness(View::Public).await.status_code, 200);

    check.set_mode(Mode::Return(CheckOutcome::unhealthy("down")));
    assert_eq!(
        registry.readiness(View::Public).await.status_code,
        200,
        "cached"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        registry.readiness(View::Public).await.status_code,
        503,
        "refreshed"
    );

    // Recovery needs no restart: the next interval's run sees it.
    check.set_mode(Mode::Return(CheckOutcome::healthy()));
    clock.advance(Duration::from_secs(1));
    assert_eq!(registry.readiness(View::Public).await.status_code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_probes_make_one_call_per_check() {
    let clock = ManualClock::new();
    let wait = Mode::Wait(Duration::from_millis(10), CheckOutcome::healthy());
    let checks: Vec<TestCheck> = ["redis", "store", "dlq"]
        .into_iter()
        .map(|name| TestCheck::new(name, Criticality::Critical, &clock, wait.clone()))
        .collect();
    let refs: Vec<&TestCheck> = checks.iter().collect();
    let registry = started(config(), &clock, &refs);

    let probes: Vec<_> = (0..100)
        .map(|index| {
            let registry = registry.clone();
            tokio::spawn(async move {
                if index % 2 == 0 {
                    registry.readiness(View::Public).await
                } else {
                    registry.deps(View::Admin).await
                }
            })
        })
        .collect();
    // Three check waits plus three timeouts: the run is in flight and every probe shares it.
    until("the run to start", || clock.pending_sleeps() == 6).await;
    settle().await;
    clock.advance(Duration::from_millis(10));
    for probe in probes {
        let response = probe.await.expect("probe task");
        assert_eq!(
            (response.report.status, response.status_code),
            (Status::Healthy, 200)
        );
        assert_eq!(response.report.checks.len(), 3);
    }
    let calls: Vec<usize> = checks.iter().map(TestCheck::calls).collect();
    assert_eq!(calls, [1, 1, 1]);

    // A second burst within the interval is answered from the cache.
    let burst: Vec<_> = (0..100)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.readiness(View::Public).await })
        })
        .collect();
    for probe in burst {
        assert_eq!(probe.await.expect("probe task").status_code, 200);
    }
    let calls: Vec<usize> = checks.iter().map(TestCheck::calls).collect();
    assert_eq!(calls, [1, 1, 1]);
}

#[tokio::test]
async fn a_probe_that_gives_up_does_not_waste_the_run() {
    let clock = ManualClock::new();
    let slow = TestCheck::new(
        "slow",
        Criticality::Critical,
        &clock,
        Mode::Wait(Duration::from_millis(100), CheckOutcome::healthy()),
    );
    let registry = started(config(), &clock, &[&slow]);
    let impatient = tokio::spawn({
        let registry = registry.clone();
        async move { registry.readiness(View::Public).await }
    });
    until("the check to run", || slow.calls() == 1).await;
    impatient.abort();
    clock.advance(Duration::from_millis(100));
    settle().await;
    let ready = registry.readiness(View::Public).await;
    assert_eq!(ready.status_code, 200);
    assert_eq!(slow.calls(), 1, "the abandoned run's results were cached");
}

#[tokio::test]
async fn registering_a_check_drops_cached_results() {
    let clock = ManualClock::new();
    let first = TestCheck::healthy("first", &clock);
    let registry = started(config(), &clock, &[&first]);
    registry.readiness(View::Public).await;

    let second = TestCheck::healthy("second", &clock);
    registry
        .register(Arc::new(second.clone()))
        .expect("unique name");
    let ready = registry.readiness(View::Public).await;
    assert_eq!(ready.report.checks.len(), 2);
    assert_eq!((first.calls(), second.calls()), (2, 1));
}

#[tokio::test]
async fn background_refresh_keeps_results_fresh_without_probes() {
    let clock = ManualClock::new();
    let check = TestCheck::healthy("db", &clock);
    let mut config = config();
    config.background_refresh = true;
    let registry = started(config, &clock, &[&check]);

    until("the first background run", || check.calls() == 1).await;
    until("the refresh to wait for the interval", || {
        clock.pending_sleeps() == 1
    })
    .await;
    clock.advance(Duration::from_secs(1));
    until("the second background run", || check.calls() == 2).await;
    let ready = registry.readiness(View::Public).await;
    assert_eq!(ready.status_code, 200);
    assert_eq!(
        check.calls(),
        2,
        "the probe was answered from the refreshed cache"
    );

    registry.begin_shutdown();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        settle().await;
    }
    assert_eq!(check.calls(), 2, "shutdown stops the refresh");
}

#[tokio::test]
async fn background_refresh_serves_previous_results_while_a_run_is_in_flight() {
    let clock = ManualClock::new();
    let slow = TestCheck::new(
        "slow",
        Criticality::Critical,
        &clock,
        Mode::Wait(Duration::from_millis(100), CheckOutcome::healthy()),
    );
    let mut config = config();
    config.background_refresh = true;
    let registry = started(config, &clock, &[&slow]);

    until("the first background run", || slow.calls() == 1).await;
    settle().await;
    clock.advance(Duration::from_millis(100));
    settle().await;
    let first = registry.readiness(View::Public).await;
    assert_eq!(
        first.report.checks["slow"].observed_at,
        "2026-01-01T00:00:00.000Z"
    );

    // At 1 s the refresh starts a run that takes 100 ms; probes do not wait for it.
    clock.advance(Duration::from_millis(900));
    until("the second background run", || slow.calls() == 2).await;
    let during = registry
        .readiness(View::Public)
        .now_or_never()
        .expect("answered without waiting for the run");
    assert_eq!(
        during.report.checks["slow"].observed_at,
        "2026-01-01T00:00:00.000Z"
    );

    settle().await;
    clock.advance(Duration::from_millis(100));
    settle().await;
    let after = registry.readiness(View::Public).await;
    assert_eq!(
        after.report.checks["slow"].observed_at,
        "2026-01-01T00:00:01.000Z"
    );
    assert_eq!(slow.calls(), 2);
}

#[tokio::test]
async fn background_refresh_ends_with_the_registry() {
    let clock = ManualClock::new();
    let check = TestCheck::healthy("db", &clock);
    let mut config = config();
    config.background_refresh = true;
    let registry = started(config, &clock, &[&check]);
    until("the first background run", || check.calls() == 1).await;
    drop(registry);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        settle().await;
    }
    assert_eq!(check.calls(), 1);
}
