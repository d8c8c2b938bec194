//! Per-check timeouts, hanging and panicking checks, on the manual clock.

use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_health::{CheckOutcome, CheckOverride, Criticality, Status, View};

use crate::support::{Mode, TestCheck, config, settle, started, status_of, until};

#[tokio::test]
async fn hanging_check_is_cut_off_at_its_timeout() {
    let clock = ManualClock::new();
    let hanging = TestCheck::new("hangs", Criticality::Critical, &clock, Mode::Hang);
    let fast = TestCheck::healthy("fast", &clock);
    let registry = started(config(), &clock, &[&hanging, &fast]);

    let probe = tokio::spawn({
        let registry = registry.clone();
        async move { registry.readiness(View::Public).await }
    });
    until("the timeout to be armed", || clock.pending_sleeps() == 1).await;
    clock.advance(Duration::from_millis(1_999));
    settle().await;
    assert!(
        !probe.is_finished(),
        "the report must wait for the check's timeout"
    );
    clock.advance(Duration::from_millis(1));
    until("the report", || probe.is_finished()).await;

    let ready = probe.await.expect("probe task");
    assert_eq!(
        (ready.report.status, ready.status_code),
        (Status::Unhealthy, 503)
    );
    let entry = &ready.report.checks["hangs"];
    assert_eq!(entry.status, Status::Unhealthy);
    assert_eq!(entry.message.as_deref(), Some("check timed out after 2s"));
    assert!((entry.latency_ms - 2_000.0).abs() < f64::EPSILON);
    assert_eq!(status_of(&ready.report, "fast"), Status::Healthy);
    until("the hanging check to be aborted", || {
        hanging.was_cancelled()
    })
    .await;
}

#[tokio::test]
async fn non_critical_hang_only_degrades() {
    let clock = ManualClock::new();
    let hanging = TestCheck::new("hangs", Criticality::NonCritical, &clock, Mode::Hang)
        .with_timeout(Duration::from_millis(100));
    let registry = started(config(), &clock, &[&hanging]);
    let probe = tokio::spawn({
        let registry = registry.clone();
        async move { registry.readiness(View::Public).await }
    });
    until("the timeout to be armed", || clock.pending_sleeps() == 1).await;
    clock.advance(Duration::from_millis(100));
    let ready = probe.await.expect("probe task");
    assert_eq!(
        (ready.report.status, ready.status_code),
        (Status::Degraded, 200)
    );
    assert_eq!(
        ready.report.checks["hangs"].message.as_deref(),
        Some("check timed out after 100ms")
    );
}

#[tokio::test]
async fn timeouts_come_from_config_override_then_check_then_default() {
    let clock = ManualClock::new();
    let by_default = TestCheck::new("by-default", Criticality::Critical, &clock, Mode::Hang);
    let by_check = TestCheck::new("by-check", Criticality::Critical, &clock, Mode::Hang)
        .with_timeout(Duration::from_millis(300));
    let by_config = TestCheck::new("by-config", Criticality::Critical, &clock, Mode::Hang)
        .with_timeout(Duration::from_millis(300));
    let mut config = config();
    config.default_timeout = Duration::from_secs(1);
    config.checks.insert(
        "by-config".to_owned(),
        CheckOverride {
            timeout: Some(Duration::from_millis(50)),
            critical: None,
        },
    );
    let registry = started(config, &clock, &[&by_default, &by_check, &by_config]);

    let probe = tokio::spawn({
        let registry = registry.clone();
        async move { registry.deps(View::Public).await }
    });
    until("three timeouts to be armed", || clock.pending_sleeps() == 3).await;
    for step in [50, 250, 700] {
        clock.advance(Duration::from_millis(step));
        settle().await;
    }
    let deps = probe.await.expect("probe task");
    let latency = |name: &str| deps.report.checks[name].latency_ms;
    assert!(
        (latency("by-config") - 50.0).abs() < f64::EPSILON,
        "{deps:?}"
    );
    assert!(
        (latency("by-check") - 300.0).abs() < f64::EPSILON,
        "{deps:?}"
    );
    assert!(
        (latency("by-default") - 1_000.0).abs() < f64::EPSILON,
        "{deps:?}"
    );
}

#[tokio::test]
async fn latency_is_measured_per_check() {
    let clock = ManualClock::new();
    let slow = TestCheck::new(
        "slow",
        Criticality::Critical,
        &clock,
        Mode::Wait(Duration::from_micros(1_500), CheckOutcome::healthy()),
    );
    let registry = started(config(), &clock, &[&slow]);
    let probe = tokio::spawn({
        let registry = registry.clone();
        async move { registry.readiness(View::Public).await }
    });
    // The check's own wait and the registry's timeout.
    until("the check to wait", || clock.pending_sleeps() == 2).await;
    clock.advance(Duration::from_micros(1_500));
    let ready = probe.await.expect("probe task");
    assert_eq!(ready.report.checks["slow"].status, Status::Healthy);
    assert!((ready.report.checks["slow"].latency_ms - 1.5).abs() < f64::EPSILON);
}

#[tokio::test]
async fn panicking_check_is_unhealthy_and_the_registry_carries_on() {
    let clock = ManualClock::new();
    let panicking = TestCheck::new("panics", Criticality::Critical, &clock, Mode::Panic);
    let other = TestCheck::healthy("other", &clock);
    let registry = started(config(), &clock, &[&panicking, &other]);

    let ready = registry.readiness(View::Public).await;
    assert_eq!(
        (ready.report.status, ready.status_code),
        (Status::Unhealthy, 503)
    );
    assert_eq!(
        ready.report.checks["panics"].message.as_deref(),
        Some("check panicked")
    );
    assert_eq!(status_of(&ready.report, "other"), Status::Healthy);
    let admin = registry.deps(View::Admin).await;
    assert_eq!(
        admin.report.checks["panics"].message.as_deref(),
        Some("check panicked: boom")
    );

    panicking.set_mode(Mode::Return(CheckOutcome::healthy()));
    clock.advance(Duration::from_secs(1));
    let ready = registry.readiness(View::Public).await;
    assert_eq!(
        (ready.report.status, ready.status_code),
        (Status::Healthy, 200)
    );
    assert_eq!(panicking.calls(), 2);
}
