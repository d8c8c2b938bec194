//! Each preset's exact transitions on a manual clock (requirements: resilience).

use std::time::Duration;

use mainstay_resilience::BreakerConfig;

use crate::support::Step::{Fail, Rejected, Succeed, Wait};
use crate::support::{Closed, HalfOpen, Open, check};

#[test]
fn critical_dependency_opens_after_five_consecutive_failures_for_thirty_seconds() {
    check(
        BreakerConfig::critical_dependency(),
        &[
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Closed),
            // A success breaks the run: four more failures do not trip it.
            (Succeed, Closed),
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Open),
            (Rejected, Open),
            (Wait(29), Open),
            (Rejected, Open),
            (Wait(1), Open),
            // One probe; its success closes the breaker.
            (Succeed, Closed),
            (Succeed, Closed),
        ],
    );
}

#[test]
fn critical_dependency_reopens_when_its_probe_fails() {
    check(
        BreakerConfig::critical_dependency(),
        &[
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Open),
            (Wait(30), Open),
            (Fail, Open),
            (Rejected, Open),
            (Wait(29), Open),
            (Rejected, Open),
            (Wait(1), Open),
            (Succeed, Closed),
        ],
    );
}

#[test]
fn optional_dependency_opens_after_three_failures_for_sixty_seconds() {
    check(
        BreakerConfig::optional_dependency(),
        &[
            (Fail, Closed),
            (Fail, Closed),
            (Fail, Open),
            (Wait(59), Open),
            (Rejected, Open),
            (Wait(1), Open),
            (Succeed, Closed),
        ],
    );
}

#[test]
fn object_store_uploads_needs_ten_successes_to_close() {
    let mut script = vec![
        // Fewer than the 5 minimum calls never trip it, however many fail.
        (Fail, Closed),
        (Fail, Closed),
        (Fail, Closed),
        (Fail, Closed),
        (Fail, Open),
        (Rejected, Open),
        (Wait(299), Open),
        (Rejected, Open),
        (Wait(1), Open),
    ];
    script.extend([(Succeed, HalfOpen); 9]);
    script.push((Succeed, Closed));
    check(BreakerConfig::object_store_uploads(), &script);
}

#[test]
fn object_store_uploads_reopens_on_the_first_half_open_failure() {
    let mut script = vec![
        (Fail, Closed),
        (Fail, Closed),
        (Fail, Closed),
        (Fail, Closed),
    ];
    script.extend([(Fail, Open), (Wait(300), Open)]);
    script.extend([(Succeed, HalfOpen); 9]);
    // Nine successes, then one failure: open again for another 300 s, successes forgotten.
    script.extend([
        (Fail, Open),
        (Rejected, Open),
        (Wait(299), Open),
        (Rejected, Open),
    ]);
    script.push((Wait(1), Open));
    script.extend([(Succeed, HalfOpen); 9]);
    script.push((Succeed, Closed));
    check(BreakerConfig::object_store_uploads(), &script);
}

#[test]
fn object_store_uploads_trips_only_above_half_failures() {
    let mut script = Vec::new();
    script.extend([(Succeed, Closed); 5]);
    script.extend([(Fail, Closed); 5]);
    // 5 of 10 is 50%, not more: still closed. One more failure makes 6 of 11.
    script.push((Fail, Open));
    check(BreakerConfig::object_store_uploads(), &script);
}

#[test]
fn object_store_uploads_window_slides_over_sixty_seconds() {
    // Failures 59 s apart are in one window...
    let mut inside = vec![(Fail, Closed); 4];
    inside.extend([(Wait(59), Closed), (Fail, Open)]);
    check(BreakerConfig::object_store_uploads(), &inside);
    // ...failures 60 s apart are not: only one call is left in the window.
    let mut outside = vec![(Fail, Closed); 4];
    outside.extend([(Wait(60), Closed), (Fail, Closed)]);
    check(BreakerConfig::object_store_uploads(), &outside);
}

#[test]
fn preset_fields_match_the_requirements() {
    let critical = BreakerConfig::critical_dependency();
    assert_eq!(
        (
            critical.consecutive_failures,
            critical.open_duration,
            critical.half_open_max_calls
        ),
        (5, Duration::from_secs(30), 1)
    );
    assert_eq!(BreakerConfig::default(), critical);
    let optional = BreakerConfig::optional_dependency();
    assert_eq!(
        (optional.consecutive_failures, optional.open_duration),
        (3, Duration::from_secs(60))
    );
    let uploads = BreakerConfig::object_store_uploads();
    assert_eq!(
        (
            uploads.failure_rate,
            uploads.window,
            uploads.open_duration,
            uploads.half_open_successes
        ),
        (0.5, Duration::from_secs(60), Duration::from_secs(300), 10)
    );
}
