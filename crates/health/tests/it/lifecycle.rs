//! Liveness, startup and shutdown, and check registration rules.

use std::sync::Arc;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_health::{CheckOutcome, Criticality, HealthRegistry, RegisterError, Status, View};

use crate::support::{Mode, TestCheck, config, started, until};

#[tokio::test]
async fn liveness_never_touches_a_dependency() {
    let clock = ManualClock::new();
    let failing = TestCheck::new(
        "db",
        Criticality::Critical,
        &clock,
        Mode::Return(CheckOutcome::unhealthy("down")),
    );
    let registry = HealthRegistry::builder(config(), "1.2.3")
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid config");
    registry
        .register(Arc::new(failing.clone()))
        .expect("unique name");

    let mut answers = Vec::new();
    answers.push(registry.liveness().await);
    registry.mark_started();
    for _ in 0..100 {
        answers.push(registry.liveness().await);
    }
    registry.begin_shutdown();
    answers.push(registry.liveness().await);
    for live in answers {
        assert_eq!(
            (live.status_code, live.report.status),
            (200, Status::Healthy)
        );
        assert!(live.report.checks.is_empty());
        assert_eq!(live.report.version, "1.2.3");
    }
    assert_eq!(failing.calls(), 0);
}

#[tokio::test]
async fn liveness_answers_while_a_check_hangs() {
    let clock = ManualClock::new();
    let hanging = TestCheck::new("db", Criticality::Critical, &clock, Mode::Hang);
    let registry = started(config(), &clock, &[&hanging]);
    let stuck = tokio::spawn({
        let registry = registry.clone();
        async move { registry.readiness(View::Public).await }
    });
    until("the check to run", || hanging.calls() == 1).await;
    let live = registry.liveness().await;
    assert_eq!(live.status_code, 200);
    assert!(!stuck.is_finished());
    stuck.abort();
}

#[tokio::test]
async fn uptime_counts_from_the_registry_build() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(100));
    let registry = started(config(), &clock, &[]);
    clock.advance(Duration::from_millis(42_900));
    assert_eq!(registry.liveness().await.report.uptime_seconds, 42);
}

#[tokio::test]
async fn startup_is_unhealthy_until_marked_complete() {
    let clock = ManualClock::new();
    let check = TestCheck::healthy("db", &clock);
    let registry = HealthRegistry::builder(config(), "1.2.3")
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid config");
    registry
        .register(Arc::new(check.clone()))
        .expect("unique name");

    let before = registry.startup().await;
    assert_eq!(
        (before.status_code, before.report.status),
        (503, Status::Unhealthy)
    );
    let entry = &before.report.checks["startup"];
    assert_eq!(entry.message.as_deref(), Some("startup not complete"));
    assert!(entry.critical);
    let ready = registry.readiness(View::Public).await;
    assert_eq!(ready.status_code, 503);
    assert!(ready.report.checks.contains_key("startup"));
    assert!(!registry.is_started());

    registry.mark_started();
    registry.mark_started();
    let after = registry.startup().await;
    assert_eq!(
        (after.status_code, after.report.status),
        (200, Status::Healthy)
    );
    assert!(after.report.checks.is_empty());
    assert_eq!(
        check.calls(),
        0,
        "startup and unready readiness run no check"
    );
    assert_eq!(registry.readiness(View::Public).await.status_code, 200);
    assert_eq!(check.calls(), 1);
}

#[tokio::test]
async fn readiness_fails_as_soon_as_shutdown_begins() {
    let clock = ManualClock::new();
    let check = TestCheck::healthy("db", &clock);
    let registry = started(config(), &clock, &[&check]);
    assert_eq!(registry.readiness(View::Public).await.status_code, 200);

    registry.begin_shutdown();
    assert!(registry.is_shutting_down());
    // The cached results are still fresh and healthy: shutdown wins over them.
    let ready = registry.readiness(View::Admin).await;
    assert_eq!(
        (ready.status_code, ready.report.status),
        (503, Status::Unhealthy)
    );
    let entry = &ready.report.checks["shutdown"];
    assert_eq!(entry.message.as_deref(), Some("shutdown in progress"));
    assert_eq!(ready.report.checks.len(), 1);
    // Deps still reports the dependencies for operators.
    let deps = registry.deps(View::Public).await;
    assert_eq!((deps.status_code, deps.report.checks.len()), (200, 1));
    assert_eq!(check.calls(), 1);
}

#[tokio::test]
async fn registration_rejects_bad_reserved_and_duplicate_names() {
    let clock = ManualClock::new();
    let registry = started(config(), &clock, &[]);
    let register =
        |name: &'static str| registry.register(Arc::new(TestCheck::healthy(name, &clock)));

    assert_eq!(register("redis"), Ok(()));
    assert_eq!(
        register("redis"),
        Err(RegisterError::Duplicate {
            name: "redis".to_owned()
        })
    );
    for reserved in ["startup", "shutdown"] {
        assert_eq!(
            register(reserved),
            Err(RegisterError::ReservedName {
                name: reserved.to_owned()
            })
        );
    }
    let too_long: &'static str = Box::leak("a".repeat(65).into_boxed_str());
    for invalid in ["", "Redis", "-redis", "redis cache", "user/42", too_long] {
        assert_eq!(
            register(invalid),
            Err(RegisterError::InvalidName {
                name: invalid.to_owned()
            }),
            "{invalid:?}"
        );
    }
    for valid in ["object_store", "dlq-2", "breaker.redis", "a"] {
        assert_eq!(register(valid), Ok(()), "{valid:?}");
    }
    assert_eq!(
        registry.check_names(),
        ["redis", "object_store", "dlq-2", "breaker.redis", "a"]
    );
    let message = RegisterError::Duplicate {
        name: "redis".to_owned(),
    }
    .to_string();
    assert!(
        message.starts_with("a check named \"redis\" is already registered"),
        "{message}"
    );
}
