//! The manual clock: time moves only on `advance`, which wakes due sleeps, earliest first. The
//! sleeps are polled by hand with recording wakers, so no runtime decides the order.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use mainstay_clock::{Clock, ManualClock, Sleep};

/// A waker that appends its id to a shared list when woken.
struct Recorder {
    id: usize,
    woken: Arc<Mutex<Vec<usize>>>,
}

impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        self.woken.lock().unwrap().push(self.id);
    }
}

fn recorder(id: usize, woken: &Arc<Mutex<Vec<usize>>>) -> Waker {
    Waker::from(Arc::new(Recorder {
        id,
        woken: Arc::clone(woken),
    }))
}

fn poll(sleep: &mut Sleep, waker: &Waker) -> Poll<()> {
    Pin::new(sleep).poll(&mut Context::from_waker(waker))
}

fn ready(sleep: &mut Sleep) -> bool {
    poll(sleep, Waker::noop()).is_ready()
}

#[test]
fn advance_completes_exactly_the_sleeps_that_are_due() {
    let clock = ManualClock::new();
    let mut sleeps: Vec<Sleep> = [1, 2, 3]
        .map(|seconds| clock.sleep(Duration::from_secs(seconds)))
        .into();
    assert!(sleeps.iter_mut().all(|sleep| !ready(sleep)));
    assert_eq!(clock.pending_sleeps(), 3);

    clock.advance(Duration::from_millis(1_999));
    let done: Vec<bool> = sleeps.iter_mut().map(ready).collect();
    assert_eq!(done, [true, false, false]);
    assert_eq!(clock.pending_sleeps(), 2);

    clock.advance(Duration::from_millis(1));
    let done: Vec<bool> = sleeps.iter_mut().map(ready).collect();
    assert_eq!(done, [true, true, false], "a sleep is due at its deadline");
    assert_eq!(clock.pending_sleeps(), 1);
}

#[test]
fn advance_wakes_due_sleeps_earliest_deadline_first() {
    let clock = ManualClock::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    // Made in the order 3 s, 1 s, 2 s, 1 s: woken by deadline, ties in the order they were made.
    let mut sleeps: Vec<(usize, Sleep)> = [(0, 3), (1, 1), (2, 2), (3, 1)]
        .map(|(id, seconds)| (id, clock.sleep(Duration::from_secs(seconds))))
        .into();
    for (id, sleep) in &mut sleeps {
        assert!(poll(sleep, &recorder(*id, &woken)).is_pending());
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(*woken.lock().unwrap(), [1, 3, 2]);
    clock.advance(Duration::from_secs(5));
    assert_eq!(*woken.lock().unwrap(), [1, 3, 2, 0]);
}

#[test]
fn a_sleep_is_woken_through_its_latest_waker() {
    let clock = ManualClock::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let mut sleep = clock.sleep(Duration::from_secs(1));
    assert!(poll(&mut sleep, &recorder(1, &woken)).is_pending());
    // Moved to another task: only the new waker may be woken.
    assert!(poll(&mut sleep, &recorder(2, &woken)).is_pending());
    clock.advance(Duration::from_secs(1));
    assert_eq!(*woken.lock().unwrap(), [2]);
    assert!(ready(&mut sleep));
}

#[test]
fn a_sleep_counts_from_the_time_it_was_made() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(10));
    let mut sleep = clock.sleep(Duration::from_secs(5));
    clock.advance(Duration::from_secs(4));
    assert!(!ready(&mut sleep));
    clock.advance(Duration::from_secs(1));
    assert!(ready(&mut sleep));
    assert_eq!(clock.now(), Duration::from_secs(15));
}

#[test]
fn a_zero_sleep_is_due_at_once_and_counted_as_started() {
    let clock = ManualClock::new();
    let mut sleep = clock.sleep(Duration::ZERO);
    assert!(ready(&mut sleep));
    assert_eq!(clock.pending_sleeps(), 0);
    assert_eq!(clock.sleeps_started(), 1);
}

#[test]
fn a_dropped_sleep_is_no_longer_pending_and_others_still_wake() {
    let clock = ManualClock::new();
    let early = clock.sleep(Duration::from_secs(1));
    let mut late = clock.sleep(Duration::from_secs(2));
    assert_eq!(clock.pending_sleeps(), 2);
    drop(early);
    assert_eq!(clock.pending_sleeps(), 1);
    assert_eq!(clock.sleeps_started(), 2);
    clock.advance(Duration::from_secs(2));
    assert!(ready(&mut late));
    assert_eq!(clock.pending_sleeps(), 0);
}

#[test]
fn handles_share_one_time_and_wall_clock_time_follows_it() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let clock = ManualClock::starting_at(start);
    let shared = clock.shared();
    assert_eq!(shared.now(), Duration::ZERO);
    assert_eq!(shared.system_time(), start);
    clock.clone().advance(Duration::from_millis(1_500));
    assert_eq!(shared.now(), Duration::from_millis(1_500));
    assert_eq!(shared.coarse_now(), Duration::from_millis(1_500));
    assert_eq!(shared.system_time(), start + Duration::from_millis(1_500));
}

#[test]
fn a_new_clock_starts_on_the_first_day_of_2026() {
    let since_epoch = ManualClock::new()
        .system_time()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(since_epoch, Duration::from_secs(1_767_225_600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advance_wakes_a_task_sleeping_on_another_thread() {
    let clock = ManualClock::new();
    let sleeper = tokio::spawn(clock.sleep(Duration::from_secs(60)));
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(60));
    sleeper.await.unwrap();
    assert_eq!(clock.pending_sleeps(), 0);
}

#[test]
fn advance_jumps_over_the_periods_of_a_periodic_sleeper_at_once() {
    let clock = ManualClock::new();
    let mut first = clock.sleep(Duration::from_secs(1));
    clock.advance(Duration::from_secs(3));
    assert!(ready(&mut first));
    // The next period counts from the new time: due at 4 s, not at 2 s.
    let mut second = clock.sleep(Duration::from_secs(1));
    assert!(!ready(&mut second));
    clock.advance(Duration::from_secs(1));
    assert!(ready(&mut second));
}
