//! The registry the admin API lists and drives breakers through.

use std::time::Duration;

use mainstay_resilience::{
    BreakerConfig, BreakerRegistry, BreakerState, DuplicateBreaker, UnknownBreaker,
};

use crate::support::{breaker, failure};

#[test]
fn lists_resets_forces_open_and_disables_by_name() {
    let registry = BreakerRegistry::new();
    let (redis, _clock) = breaker(
        "redis",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let (s3, _clock) = breaker("s3", BreakerConfig::object_store_uploads());
    registry.register(&s3).expect("unique");
    registry.register(&redis).expect("unique");
    let _ = redis.call(&failure, || Err::<(), _>("down"));

    let listed: Vec<_> = registry
        .snapshots()
        .into_iter()
        .map(|snapshot| (snapshot.name, snapshot.state))
        .collect();
    assert_eq!(
        listed,
        [
            ("redis".to_owned(), BreakerState::Open),
            ("s3".to_owned(), BreakerState::Closed)
        ]
    );
    assert_eq!(
        registry.snapshots()[0].time_until_half_open_ms,
        Some(30_000)
    );

    assert_eq!(
        registry.reset("redis").expect("known").state,
        BreakerState::Closed
    );
    assert_eq!(
        registry.force_open("s3").expect("known").state,
        BreakerState::ForcedOpen
    );
    assert_eq!(
        s3.state(),
        BreakerState::ForcedOpen,
        "the registry drives the same breaker"
    );
    assert_eq!(
        registry.disable("s3").expect("known").state,
        BreakerState::Disabled
    );
}

#[test]
fn unknown_and_duplicate_names_are_errors() {
    let registry = BreakerRegistry::new();
    let (redis, _clock) = breaker("redis", BreakerConfig::default());
    registry.register(&redis).expect("unique");
    assert_eq!(
        registry.register(&redis),
        Err(DuplicateBreaker {
            name: "redis".to_owned()
        })
    );
    let unknown = registry.reset("nope").expect_err("unknown");
    assert_eq!(
        unknown,
        UnknownBreaker {
            name: "nope".to_owned()
        }
    );
    assert_eq!(
        unknown.to_string(),
        r#"no circuit breaker named "nope": list the registered breakers for their names"#
    );
    assert!(registry.remove("redis").is_some());
    assert!(registry.get("redis").is_err());
}
