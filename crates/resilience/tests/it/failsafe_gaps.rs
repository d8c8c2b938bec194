//! What `failsafe` 1.3 cannot express of issue 5's breaker rules, asserted so that the comparison
//! in docs/decisions/0010 stays true for the pinned version.

use std::time::Duration;

use failsafe::{Config, StateMachine, backoff, clock, failure_policy};

fn opened_failsafe() -> StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, ()> {
    let breaker = Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            1,
            backoff::constant(Duration::from_secs(30)),
        ))
        .build();
    breaker.on_error();
    breaker
}

#[test]
fn failsafe_half_open_admits_every_caller() {
    clock::freeze(|time| {
        let breaker = opened_failsafe();
        assert!(!breaker.is_call_permitted());
        time.advance(Duration::from_secs(31));
        // No single probe: every caller is a trial call.
        let admitted = (0..64).filter(|_| breaker.is_call_permitted()).count();
        assert_eq!(admitted, 64);
    });
}

#[test]
fn failsafe_closes_on_the_first_success() {
    clock::freeze(|time| {
        let breaker = opened_failsafe();
        time.advance(Duration::from_secs(31));
        assert!(breaker.is_call_permitted());
        breaker.on_success();
        // One success closed it: a 10-successes rule cannot be expressed. A failure now needs the
        // whole consecutive-failures run again (here 1) rather than reopening a half-open breaker.
        let format = format!("{breaker:?}");
        assert!(format.contains("closed"), "{format}");
    });
}
