//! The real clocks: monotonic, and moving with real time. These read real time, so they spin for
//! a few milliseconds; every rule built on a clock is tested on a manual or paused one instead.

use std::time::{Duration, Instant, SystemTime};

use mainstay_clock::{FastClock, RealClock, SharedClock};

fn real_clocks() -> [(&'static str, SharedClock); 2] {
    [
        ("RealClock", RealClock::new().shared()),
        ("FastClock", FastClock::new().shared()),
    ]
}

#[test]
fn readings_never_go_backwards() {
    for (name, clock) in real_clocks() {
        let (mut now, mut coarse) = (clock.now(), clock.coarse_now());
        for _ in 0..100_000 {
            let (next_now, next_coarse) = (clock.now(), clock.coarse_now());
            assert!(next_now >= now, "{name}: now went back");
            assert!(next_coarse >= coarse, "{name}: coarse_now went back");
            (now, coarse) = (next_now, next_coarse);
        }
    }
}

/// Over 30 ms of real time, `now` moves by 30 ms (less 1 ms for the fast clock's calibrated scale)
/// and `coarse_now` by at least 30 ms less one scheduler tick (at most 10 ms, at 100 Hz): a clock
/// that stood still, or read a fraction of real time, fails.
#[test]
fn readings_move_with_real_time() {
    const SPAN: Duration = Duration::from_millis(30);
    const TICK: Duration = Duration::from_millis(10);
    const SCALE_ERROR: Duration = Duration::from_millis(1);
    for (name, clock) in real_clocks() {
        // Each clock is read before the reference at the start and after it at the end, so its
        // deltas are at least the reference's less a tick, however the thread is scheduled.
        let (coarse_start, now_start) = (clock.coarse_now(), clock.now());
        let reference = Instant::now();
        while reference.elapsed() < SPAN {
            std::hint::spin_loop();
        }
        let elapsed = reference.elapsed();
        let (now_end, coarse_end) = (clock.now(), clock.coarse_now());
        assert!(
            now_end - now_start + SCALE_ERROR >= elapsed,
            "{name}: now moved {:?} in {elapsed:?}",
            now_end - now_start
        );
        assert!(
            coarse_end - coarse_start + TICK >= elapsed,
            "{name}: coarse_now moved {:?} in {elapsed:?}",
            coarse_end - coarse_start
        );
    }
}

#[test]
fn wall_clock_time_is_the_systems() {
    for (name, clock) in real_clocks() {
        let before = SystemTime::now();
        let read = clock.system_time();
        let after = SystemTime::now();
        assert!(before <= read && read <= after, "{name}: {read:?}");
    }
}

#[tokio::test]
async fn a_zero_sleep_ends() {
    for (_, clock) in real_clocks() {
        clock.sleep(Duration::ZERO).await;
    }
}
