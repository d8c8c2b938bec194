//! Aggregation of check statuses into the service status and the readiness status code.

use mainstay_clock::ManualClock;
use mainstay_health::{CheckOutcome, Criticality, Status, View};

use crate::support::{Mode, TestCheck, config, started, status_of};

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Registers one check per `(status, critical)` pair and checks readiness and deps.
async fn check(case: &[(Status, bool)], expected: Status, expected_code: u16) {
    let clock = ManualClock::new();
    let checks: Vec<TestCheck> = case
        .iter()
        .zip(NAMES)
        .map(|((status, critical), name)| {
            let criticality = if *critical {
                Criticality::Critical
            } else {
                Criticality::NonCritical
            };
            TestCheck::new(
                name,
                criticality,
                &clock,
                Mode::Return(CheckOutcome::new(*status, None)),
            )
        })
        .collect();
    let refs: Vec<&TestCheck> = checks.iter().collect();
    let registry = started(config(), &clock, &refs);

    let ready = registry.readiness(View::Public).await;
    assert_eq!(ready.report.status, expected, "case {case:?}");
    assert_eq!(ready.status_code, expected_code, "case {case:?}");
    // Each check keeps its own status; only the aggregate maps non-critical failures.
    for ((status, critical), name) in case.iter().zip(NAMES) {
        assert_eq!(status_of(&ready.report, name), *status);
        assert_eq!(ready.report.checks[name].critical, *critical);
    }
    let deps = registry.deps(View::Public).await;
    assert_eq!(
        (deps.report.status, deps.status_code),
        (expected, expected_code),
        "case {case:?}"
    );
}

#[tokio::test]
async fn no_checks_is_healthy() {
    check(&[], Status::Healthy, 200).await;
}

#[tokio::test]
async fn all_healthy_is_healthy() {
    check(
        &[(Status::Healthy, true), (Status::Healthy, false)],
        Status::Healthy,
        200,
    )
    .await;
}

#[tokio::test]
async fn any_degraded_check_degrades() {
    check(
        &[(Status::Degraded, true), (Status::Healthy, true)],
        Status::Degraded,
        200,
    )
    .await;
    check(
        &[(Status::Degraded, false), (Status::Healthy, true)],
        Status::Degraded,
        200,
    )
    .await;
}

#[tokio::test]
async fn unhealthy_non_critical_check_only_degrades() {
    check(
        &[(Status::Unhealthy, false), (Status::Healthy, true)],
        Status::Degraded,
        200,
    )
    .await;
}

#[tokio::test]
async fn unhealthy_critical_check_fails_readiness() {
    check(
        &[(Status::Unhealthy, true), (Status::Healthy, true)],
        Status::Unhealthy,
        503,
    )
    .await;
    check(
        &[
            (Status::Degraded, false),
            (Status::Unhealthy, false),
            (Status::Unhealthy, true),
        ],
        Status::Unhealthy,
        503,
    )
    .await;
}

#[tokio::test]
async fn config_override_changes_criticality() {
    let clock = ManualClock::new();
    let failing = TestCheck::new(
        "alpha",
        Criticality::NonCritical,
        &clock,
        Mode::Return(CheckOutcome::unhealthy("down")),
    );
    let mut config = config();
    config.checks.insert(
        "alpha".to_owned(),
        mainstay_health::CheckOverride {
            timeout: None,
            critical: Some(true),
        },
    );
    let registry = started(config, &clock, &[&failing]);
    let ready = registry.readiness(View::Public).await;
    assert_eq!(
        (ready.report.status, ready.status_code),
        (Status::Unhealthy, 503)
    );
    assert!(ready.report.checks["alpha"].critical);
}
