//! Shared helpers: an in-process check whose behaviour and call count the test controls, and a
//! registry on a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mainstay_clock::{Clock, ManualClock};
use mainstay_health::{
    Check, CheckOutcome, Criticality, HealthConfig, HealthRegistry, Status, async_trait,
};
use parking_lot::Mutex;

/// What a [`TestCheck`] does when run.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// Returns this outcome at once.
    Return(CheckOutcome),
    /// Waits this long on the manual clock, then returns the outcome.
    Wait(Duration, CheckOutcome),
    /// Never completes.
    Hang,
    /// Panics with the message "boom".
    Panic,
}

/// A check that counts its calls and notices when its future is dropped unfinished.
#[derive(Clone)]
pub(crate) struct TestCheck {
    name: &'static str,
    criticality: Criticality,
    timeout: Option<Duration>,
    clock: ManualClock,
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicUsize>,
    cancelled: Arc<AtomicBool>,
}

impl TestCheck {
    pub(crate) fn new(
        name: &'static str,
        criticality: Criticality,
        clock: &ManualClock,
        mode: Mode,
    ) -> Self {
        Self {
            name,
            criticality,
            timeout: None,
            clock: clock.clone(),
            mode: Arc::new(Mutex::new(mode)),
            calls: Arc::new(AtomicUsize::new(0)),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn healthy(name: &'static str, clock: &ManualClock) -> Self {
        Self::new(
            name,
            Criticality::Critical,
            clock,
            Mode::Return(CheckOutcome::healthy()),
        )
    }

    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Whether a run's future was dropped before it completed (an aborted hang).
    pub(crate) fn was_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Sets a flag when dropped before being disarmed.
struct DropFlag(Arc<AtomicBool>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Check for TestCheck {
    fn name(&self) -> &str {
        self.name
    }

    fn criticality(&self) -> Criticality {
        self.criticality
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn check(&self) -> CheckOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropFlag(Arc::clone(&self.cancelled), true);
        let mode = self.mode.lock().clone();
        let outcome = match mode {
            Mode::Return(outcome) => outcome,
            Mode::Wait(duration, outcome) => {
                self.clock.sleep(duration).await;
                outcome
            }
            Mode::Hang => std::future::pending().await,
            Mode::Panic => panic!("boom"),
        };
        guard.1 = false;
        outcome
    }
}

/// A config without the built-in disk and memory checks, so tests see only their own checks.
pub(crate) fn config() -> HealthConfig {
    let mut config = HealthConfig::default();
    config.disk.enabled = false;
    config.memory.enabled = false;
    config
}

/// A registry on `clock` with `checks` registered and startup marked complete.
pub(crate) fn started(
    config: HealthConfig,
    clock: &ManualClock,
    checks: &[&TestCheck],
) -> HealthRegistry {
    let registry = HealthRegistry::builder(config, "1.2.3")
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid config");
    for check in checks {
        registry
            .register(Arc::new((*check).clone()))
            .expect("unique name");
    }
    registry.mark_started();
    registry
}

/// Lets spawned tasks run until `condition` holds (bounded, so a broken rule fails instead of
/// hanging the test). Yielding is enough on a current-thread runtime; the workers of a
/// multi-threaded one may need real time to be scheduled on a loaded machine, so after a while it
/// naps for a millisecond between looks. No rule under test depends on that real time: they all
/// run on the manual clock.
pub(crate) async fn until(what: &str, condition: impl Fn() -> bool) {
    for attempt in 0..6_000 {
        if condition() {
            return;
        }
        if attempt < 1_000 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    panic!("gave up waiting for {what}");
}

/// Lets every ready task run for a while (used where the thing to wait for is not observable).
pub(crate) async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// The status of `name` in a report.
pub(crate) fn status_of(report: &mainstay_health::Report, name: &str) -> Status {
    report
        .checks
        .get(name)
        .map(|check| check.status)
        .expect("check in report")
}
