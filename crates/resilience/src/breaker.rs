//! The circuit breaker: a lock-free state machine over one packed atomic word.
//!
//! The state word holds the state kind, a generation that every transition, reset and
//! reconfiguration increments, and 32 bits whose meaning depends on the kind: the run of
//! consecutive failures when closed, the trial calls in flight and the trial successes when
//! half-open. A permit remembers the generation it was granted in, and every outcome is counted
//! by one compare-and-swap of the word that fails when the generation moved on, so a result that
//! arrives after a reset, a transition or a reconfiguration never counts and never tears the
//! state. The failure-rate window is separate: an outcome reads the window's epoch before it checks
//! the generation, and a transition bumps the generation before it clears the window (a new
//! epoch), so a stale outcome lands in an epoch nobody counts (see `window`). Transitions (rare)
//! are serialised by a small lock so that their side effects (open deadline, metrics, events)
//! happen in order; admission and recording never take it on the closed path.
//!
//! The rules live in atomics beside the state word, so [`CircuitBreaker::reconfigure`] changes
//! them on a running breaker without a lock on the call path; the trip rule is published last
//! (release) and read first (acquire), so a caller that sees a new rule sees its thresholds too.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mainstay_clock::{RealClock, SharedClock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::classify::Classify;
use crate::config::{BreakerConfig, ConfigError, TripPolicy};
use crate::metrics::{
    BreakerLabels, CallCount, CallLabels, ResilienceMetrics, StateLabels, TransitionLabels,
};
use crate::nanos;
use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Mutex, Ordering};
use crate::window::Window;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; failures are counted.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of trial calls pass; the others are rejected.
    HalfOpen,
    /// Manually disabled: every call passes and nothing is counted against the dependency.
    Disabled,
    /// Manually forced open: every call is rejected until [`CircuitBreaker::reset`].
    ForcedOpen,
}

impl BreakerState {
    /// Every state, in the order of their gauge values.
    pub const ALL: [Self; 5] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::ForcedOpen,
    ];

    /// The state's name as used in metrics labels and JSON (`half_open`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Disabled => "disabled",
            Self::ForcedOpen => "forced_open",
        }
    }

    /// The value of the `circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open, 3 disabled,
    /// 4 forced open.
    #[must_use]
    pub fn gauge_value(self) -> i64 {
        self as i64
    }

    fn from_bits(bits: u64) -> Self {
        match bits & KIND_MASK {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::Disabled,
            _ => Self::ForcedOpen,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// The consecutive-failures threshold was reached.
    ConsecutiveFailures,
    /// The failure rate over the window exceeded the threshold.
    FailureRate,
    /// The open duration passed; trial calls are admitted.
    OpenDurationElapsed,
    /// A half-open trial call failed.
    TrialFailed,
    /// Enough half-open trial calls succeeded in a row.
    TrialsSucceeded,
    /// [`CircuitBreaker::reset`] was called.
    Reset,
    /// [`CircuitBreaker::force_open`] was called.
    ForcedOpen,
    /// [`CircuitBreaker::disable`] was called.
    Disabled,
}

/// One state change, as sent to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionEvent {
    /// The breaker's name (a keyed set's name for its members).
    pub breaker: Arc<str>,
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// For a transition to `open`: how long it stays open.
    #[serde(with = "humantime_serde")]
    pub open_for: Option<Duration>,
}

/// A call refused by the breaker without reaching the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}: call rejected without reaching the dependency, retry later")]
pub struct Rejected {
    /// The state that rejected the call (`open`, `half_open` with every trial slot taken, or
    /// `forced_open`).
    pub state: BreakerState,
    /// When the state is `open`: the time left until trial calls are admitted.
    pub retry_after: Option<Duration>,
}

/// The error of a call made through a breaker: rejected by it, or the call's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker refused the call; the dependency was not called.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The dependency was called and returned this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The call's own error, if the call was made.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Rejected(_) => None,
            Self::Inner(error) => Some(error),
        }
    }
}

/// What a call made under a permit ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency answered (including answers that are the caller's error, like a 404).
    Success,
    /// The dependency failed.
    Failure,
}

/// A point-in-time view of a breaker, for admin endpoints and health reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// Successful calls since creation.
    pub successes: u64,
    /// Failed calls since creation.
    pub failures: u64,
    /// Successful calls slower than the slow-call threshold since creation (counted as failures).
    pub slow: u64,
    /// Rejected calls since creation.
    pub rejected: u64,
    /// The current run of failures (`consecutive` policy; 0 otherwise).
    pub consecutive_failures: u32,
    /// Calls in the current window (`failure_rate` policy; 0 otherwise).
    pub window_calls: u64,
    /// Failures in the current window (`failure_rate` policy; 0 otherwise).
    pub window_failures: u64,
    /// Trial calls in flight (half-open only).
    pub half_open_in_flight: u32,
    /// Trial successes so far (half-open only).
    pub half_open_successes: u32,
    /// Milliseconds until trial calls are admitted (open only; 0 when the next call will be one).
    pub time_until_half_open_ms: Option<u64>,
}

// The packed state word: kind (3 bits) | trials in flight (16) | trial successes (16) | generation
// (29). When closed, the 32 bits of the two trial counters hold the run of consecutive failures.
const KIND_MASK: u64 = 0b111;
const IN_FLIGHT_SHIFT: u32 = 3;
const SUCCESSES_SHIFT: u32 = 19;
const GENERATION_SHIFT: u32 = 35;
const COUNT_MASK: u64 = 0xFFFF;
const IN_FLIGHT_ONE: u64 = 1 << IN_FLIGHT_SHIFT;
const SUCCESSES_ONE: u64 = 1 << SUCCESSES_SHIFT;
const RUN_SHIFT: u32 = IN_FLIGHT_SHIFT;
const RUN_FIELD: u64 = 0xFFFF_FFFF << RUN_SHIFT;

const CLOSED: u64 = BreakerState::Closed as u64;
const DISABLED: u64 = BreakerState::Disabled as u64;

#[inline]
fn generation(word: u64) -> u64 {
    word >> GENERATION_SHIFT
}

#[inline]
fn in_flight(word: u64) -> u64 {
    (word >> IN_FLIGHT_SHIFT) & COUNT_MASK
}

#[inline]
fn trial_successes(word: u64) -> u64 {
    (word >> SUCCESSES_SHIFT) & COUNT_MASK
}

/// The run of consecutive failures of a closed breaker.
#[inline]
fn failure_run(word: u64) -> u32 {
    // The field is 32 bits wide: the cast keeps all of it.
    ((word & RUN_FIELD) >> RUN_SHIFT) as u32
}

#[inline]
fn with_failure_run(word: u64, run: u32) -> u64 {
    (word & !RUN_FIELD) | (u64::from(run) << RUN_SHIFT)
}

#[inline]
fn pack(state: BreakerState, generation: u64) -> u64 {
    (generation << GENERATION_SHIFT) | state as u64
}

/// How a permit was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Closed,
    Trial,
    Disabled,
}

/// What a permit remembers: plain data, so that it can live in a future or a tower service.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
    admission: Admission,
    /// The clock's precise reading (`now`) at admission, taken only when slow calls are detected.
    started: Option<Duration>,
}

const TRIP_CONSECUTIVE: u8 = 0;
const TRIP_FAILURE_RATE: u8 = 1;

/// The rules the call path reads, one atomic each so that they can change on a running breaker.
#[derive(Debug)]
struct Rules {
    trip: AtomicU8,
    consecutive_failures: AtomicU32,
    /// The `failure_rate` as `f64` bits.
    failure_rate: AtomicU64,
    minimum_calls: AtomicU64,
    /// The slow-call threshold in nanoseconds; 0 when slow calls are not measured.
    slow_call_nanos: AtomicU64,
    half_open_max_calls: AtomicU32,
    half_open_successes: AtomicU32,
}

impl Rules {
    fn new(config: &BreakerConfig) -> Self {
        let rules = Self {
            trip: AtomicU8::new(TRIP_CONSECUTIVE),
            consecutive_failures: AtomicU32::new(0),
            failure_rate: AtomicU64::new(0),
            minimum_calls: AtomicU64::new(0),
            slow_call_nanos: AtomicU64::new(0),
            half_open_max_calls: AtomicU32::new(0),
            half_open_successes: AtomicU32::new(0),
        };
        rules.store(config);
        rules
    }

    /// Stores every rule of `config`, the trip rule last.
    fn store(&self, config: &BreakerConfig) {
        let relaxed = Ordering::Relaxed;
        self.consecutive_failures
            .store(config.consecutive_failures, relaxed);
        self.failure_rate
            .store(config.failure_rate.to_bits(), relaxed);
        self.minimum_calls
            .store(u64::from(config.minimum_calls), relaxed);
        self.slow_call_nanos.store(
            config
                .slow_call_threshold
                .map_or(0, |threshold| nanos(threshold).max(1)),
            relaxed,
        );
        self.half_open_max_calls
            .store(config.half_open_max_calls, relaxed);
        self.half_open_successes
            .store(config.half_open_successes, relaxed);
        let trip = match config.trip {
            TripPolicy::Consecutive => TRIP_CONSECUTIVE,
            TripPolicy::FailureRate => TRIP_FAILURE_RATE,
        };
        self.trip.store(trip, Ordering::Release);
    }

    /// Whether the trip rule is `consecutive`. Acquire: pairs with the release in
    /// [`Rules::store`], so the thresholds read after it are the ones stored with this rule.
    #[inline]
    fn consecutive(&self) -> bool {
        self.trip.load(Ordering::Acquire) == TRIP_CONSECUTIVE
    }
}

/// The instruments one breaker (or one keyed set) writes to.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    name: Arc<str>,
    successes: Counter<u64, CallCount>,
    failures: Counter<u64, CallCount>,
    rejected: Counter<u64, CallCount>,
    slow: Counter<u64, CallCount>,
    /// `None` for keyed-set members: a per-key state has no bounded label, and an aggregate state
    /// has no meaning.
    state: Option<Gauge>,
    /// `circuit_breaker_state_active`, one gauge per state of [`BreakerState::ALL`]; `None` when
    /// `state` is.
    state_active: Option<[Gauge; 5]>,
    transitions: Family<TransitionLabels, Counter>,
    pub(crate) events: broadcast::Sender<TransitionEvent>,
}

impl Instruments {
    pub(crate) fn new(name: &str, metrics: &ResilienceMetrics, with_state_gauge: bool) -> Self {
        let call = |outcome| {
            metrics
                .breaker_calls
                .get_or_create(&CallLabels {
                    breaker: name.to_owned(),
                    outcome,
                })
                .clone()
        };
        let state = with_state_gauge.then(|| {
            metrics
                .breaker_state
                .get_or_create(&BreakerLabels {
                    breaker: name.to_owned(),
                })
                .clone()
        });
        if let Some(gauge) = &state {
            gauge.set(BreakerState::Closed.gauge_value());
        }
        let state_active = with_state_gauge.then(|| {
            BreakerState::ALL.map(|each| {
                let gauge = metrics
                    .breaker_state_active
                    .get_or_create(&StateLabels {
                        breaker: name.to_owned(),
                        state: each.as_str(),
                    })
                    .clone();
                gauge.set(i64::from(each == BreakerState::Closed));
                gauge
            })
        });
        // The usual transitions exist from the start, at zero, so that `increase()` sees the
        // first one (docs/decisions/0097).
        for (from, to) in [
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Open),
            (BreakerState::HalfOpen, BreakerState::Closed),
        ] {
            let _ = metrics
                .breaker_transitions
                .get_or_create(&TransitionLabels {
                    breaker: name.to_owned(),
                    from: from.as_str(),
                    to: to.as_str(),
                });
        }
        Self {
            name: Arc::from(name),
            successes: call("success"),
            failures: call("failure"),
            rejected: call("rejected"),
            slow: call("slow"),
            state,
            state_active,
            transitions: metrics.breaker_transitions.clone(),
            events: broadcast::channel(64).0,
        }
    }
}

#[derive(Debug)]
struct Shared {
    word: AtomicU64,
    rules: Rules,
    /// The sliding window (`failure_rate` rule), made when the breaker first uses that rule.
    window: OnceLock<Window>,
    open_until: AtomicU64,
    /// Reopenings since the breaker last closed; grows the open duration. Written under `transition`.
    reopenings: AtomicU32,
    transition: Mutex<()>,
    /// The whole configuration, for the open-duration rules (read under `transition`) and for
    /// [`CircuitBreaker::config`]. Written under `transition`.
    config: Mutex<BreakerConfig>,
    clock: SharedClock,
    instruments: Instruments,
}

/// A circuit breaker. Cheap to clone: clones share the same state.
///
/// ```
/// use mainstay_resilience::{BreakerConfig, BreakerError, CircuitBreaker, ErrorClass};
///
/// let breaker = CircuitBreaker::new("payments", BreakerConfig::consecutive(2, std::time::Duration::from_secs(30)))?;
/// let every_error_fails = |_: &&str| ErrorClass::Failure;
/// for _ in 0..2 {
///     let _ = breaker.call(&every_error_fails, || Err::<(), _>("connection refused"));
/// }
/// assert!(matches!(breaker.call(&every_error_fails, || Ok::<_, &str>(1)), Err(BreakerError::Rejected(_))));
/// # Ok::<(), mainstay_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// Builds a [`CircuitBreaker`] with a clock or metrics other than the defaults.
#[derive(Debug)]
#[must_use]
pub struct BreakerBuilder {
    name: String,
    config: BreakerConfig,
    clock: Option<SharedClock>,
    metrics: Option<ResilienceMetrics>,
}

impl BreakerBuilder {
    /// The clock: its coarse reading for the open duration and the window, its precise reading for
    /// slow calls. Default [`RealClock`].
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The metric families to report into, labelled with the breaker's name. Default: none.
    pub fn metrics(mut self, metrics: ResilienceMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Validates the configuration and builds the breaker, closed.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let metrics = self.metrics.unwrap_or_else(ResilienceMetrics::unregistered);
        let instruments = Instruments::new(&self.name, &metrics, true);
        CircuitBreaker::with_parts(
            self.config,
            self.clock.unwrap_or_else(|| RealClock::new().shared()),
            instruments,
        )
    }
}

impl CircuitBreaker {
    /// A closed breaker on the real clock, with no metrics.
    pub fn new(name: &str, config: BreakerConfig) -> Result<Self, ConfigError> {
        Self::builder(name, config).build()
    }

    /// A builder, to give a clock or metrics.
    pub fn builder(name: &str, config: BreakerConfig) -> BreakerBuilder {
        BreakerBuilder {
            name: name.to_owned(),
            config,
            clock: None,
            metrics: None,
        }
    }

    pub(crate) fn with_parts(
        config: BreakerConfig,
        clock: SharedClock,
        instruments: Instruments,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::from_validated(config, clock, instruments))
    }

    /// Builds a breaker from a configuration that [`BreakerConfig::validate`] accepted.
    pub(crate) fn from_validated(
        config: BreakerConfig,
        clock: SharedClock,
        instruments: Instruments,
    ) -> Self {
        let window = OnceLock::new();
        if config.trip == TripPolicy::FailureRate {
            let _ = window.set(Window::new(config.window, config.window_buckets));
        }
        Self {
            shared: Arc::new(Shared {
                word: AtomicU64::new(pack(BreakerState::Closed, 0)),
                rules: Rules::new(&config),
                window,
                open_until: AtomicU64::new(0),
                reopenings: AtomicU32::new(0),
                transition: Mutex::new(()),
                config: Mutex::new(config),
                clock,
                instruments,
            }),
        }
    }

    /// Whether a handle other than this one exists (a clone, an owned permit): a keyed set never
    /// evicts a breaker someone holds.
    pub(crate) fn is_held(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.instruments.name
    }

    /// The breaker's configuration in force.
    #[must_use]
    pub fn config(&self) -> BreakerConfig {
        self.shared.config.lock().clone()
    }

    /// Gives the running breaker new rules, keeping its state:
    ///
    /// - thresholds, the failure rate, minimum calls, the slow-call threshold and the half-open
    ///   limits apply to the next call;
    /// - a change of the trip rule or of the window's length starts counting afresh (the counts
    ///   were made under the old rule);
    /// - the open-duration rules apply from the next opening, and an open breaker's remaining
    ///   time is cut to the new longest open duration when that is shorter;
    /// - `window_buckets` cannot change once the window exists (its buckets are allocated once):
    ///   that is refused with an error naming the key, and nothing changes;
    /// - permits granted before the change report into nothing (a new generation): a half-open
    ///   breaker keeps its trial successes and frees the slots of its trials in flight.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mainstay_resilience::{BreakerConfig, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new("search", BreakerConfig::consecutive(5, Duration::from_secs(30)))?;
    /// breaker.reconfigure(BreakerConfig::consecutive(2, Duration::from_secs(10)))?;
    /// assert_eq!(breaker.config().consecutive_failures, 2);
    /// # Ok::<(), mainstay_resilience::ConfigError>(())
    /// ```
    pub fn reconfigure(&self, config: BreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.shared.reconfigure(config)
    }

    /// The current state. An `open` breaker whose open duration has passed reports `open` until the
    /// next call makes it `half_open`; [`CircuitBreaker::snapshot`] shows 0 ms left then.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        BreakerState::from_bits(self.shared.word.load(Ordering::Acquire))
    }

    /// A receiver of every later transition. Slow receivers lose the oldest events (they get
    /// `RecvError::Lagged`); transitions never wait for receivers.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<TransitionEvent> {
        self.shared.instruments.events.subscribe()
    }

    /// Asks to make one call. On success, report the call's outcome through the permit; dropping
    /// the permit without an outcome gives a trial slot back and counts nothing.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.admit()?;
        Ok(Permit {
            breaker: self,
            ticket: Some(ticket),
        })
    }

    /// Like [`CircuitBreaker::try_acquire`], with a permit that owns a handle to the breaker (for
    /// futures and services that outlive a borrow).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.admit()?;
        Ok(OwnedPermit {
            breaker: self.clone(),
            ticket: Some(ticket),
        })
    }

    /// Runs `operation` under the breaker: rejected at once when the breaker refuses, otherwise
    /// called, and its error classified by `classify` (an [`crate::ErrorClass::Ignored`] error
    /// counts as a success of the dependency).
    #[inline]
    pub fn call<T, E>(
        &self,
        classify: &impl Classify<E>,
        operation: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        let ticket = self.admit()?;
        if ticket.admission == Admission::Trial {
            // A trial slot must come back even if `operation` panics: hold it in a permit.
            let permit = Permit {
                breaker: self,
                ticket: Some(ticket),
            };
            return match operation() {
                Ok(value) => {
                    permit.success();
                    Ok(value)
                }
                Err(error) => {
                    permit.record(outcome_of(classify, &error));
                    Err(BreakerError::Inner(error))
                }
            };
        }
        // Closed or disabled: nothing to give back, so no guard on the hot path.
        match operation() {
            Ok(value) => {
                self.shared.complete(ticket, Outcome::Success);
                Ok(value)
            }
            Err(error) => {
                self.shared.complete(ticket, outcome_of(classify, &error));
                Err(BreakerError::Inner(error))
            }
        }
    }

    /// The async form of [`CircuitBreaker::call`]. If the returned future is dropped before the
    /// call ends, nothing is counted and a trial slot is given back.
    pub async fn run<T, E, F>(
        &self,
        classify: &impl Classify<E>,
        operation: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        match operation.await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(error) => {
                permit.record(outcome_of(classify, &error));
                Err(BreakerError::Inner(error))
            }
        }
    }

    /// Closes the breaker and forgets every failure count, whatever its state. Permits granted
    /// before the reset report into nothing, even when the breaker was closed already.
    pub fn reset(&self) {
        self.shared
            .force(BreakerState::Closed, TransitionReason::Reset);
    }

    /// Opens the breaker until [`CircuitBreaker::reset`]: every call is rejected.
    pub fn force_open(&self) {
        self.shared
            .force(BreakerState::ForcedOpen, TransitionReason::ForcedOpen);
    }

    /// Disables the breaker until [`CircuitBreaker::reset`]: every call passes, nothing trips it.
    pub fn disable(&self) {
        self.shared
            .force(BreakerState::Disabled, TransitionReason::Disabled);
    }

    /// The breaker's state and counts now.
    #[must_use]
    pub fn snapshot(&self) -> BreakerSnapshot {
        let shared = &*self.shared;
        let word = shared.word.load(Ordering::Acquire);
        let state = BreakerState::from_bits(word);
        let now = shared.clock.coarse_now();
        let (consecutive_failures, window) = if shared.rules.consecutive() {
            let run = if state == BreakerState::Closed {
                failure_run(word)
            } else {
                0
            };
            (run, Default::default())
        } else {
            (
                0,
                shared
                    .window
                    .get()
                    .map(|window| window.sums(now))
                    .unwrap_or_default(),
            )
        };
        let half_open = state == BreakerState::HalfOpen;
        let time_until_half_open_ms = (state == BreakerState::Open).then(|| {
            let until = Duration::from_nanos(shared.open_until.load(Ordering::Acquire));
            u64::try_from(until.saturating_sub(now).as_millis()).unwrap_or(u64::MAX)
        });
        let instruments = &shared.instruments;
        BreakerSnapshot {
            name: instruments.name.to_string(),
            state,
            successes: instruments.successes.get(),
            failures: instruments.failures.get(),
            slow: instruments.slow.get(),
            rejected: instruments.rejected.get(),
            consecutive_failures,
            window_calls: window.first,
            window_failures: window.second,
            half_open_in_flight: if half_open { in_flight(word) as u32 } else { 0 },
            half_open_successes: if half_open {
                trial_successes(word) as u32
            } else {
                0
            },
            time_until_half_open_ms,
        }
    }

    #[inline]
    fn admit(&self) -> Result<Ticket, Rejected> {
        let shared = &*self.shared;
        let word = shared.word.load(Ordering::Acquire);
        let kind = word & KIND_MASK;
        if kind == CLOSED || kind == DISABLED {
            let admission = if kind == CLOSED {
                Admission::Closed
            } else {
                Admission::Disabled
            };
            return Ok(Ticket {
                generation: generation(word),
                admission,
                started: shared.started(),
            });
        }
        shared.admit_not_closed(word)
    }
}

#[inline]
fn outcome_of<E>(classify: &impl Classify<E>, error: &E) -> Outcome {
    if classify.classify(error).is_failure() {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

impl Shared {
    #[inline]
    fn started(&self) -> Option<Duration> {
        (self.rules.slow_call_nanos.load(Ordering::Relaxed) != 0).then(|| self.clock.now())
    }

    fn reconfigure(&self, config: BreakerConfig) -> Result<(), ConfigError> {
        let _transition = self.transition.lock();
        let mut current = self.config.lock();
        if let Some(window) = self.window.get()
            && Window::bucket_count_for(config.window_buckets) != window.bucket_count()
        {
            return Err(ConfigError::new(
                "window_buckets",
                config.window_buckets,
                "the running breaker's own bucket count (rounded up to a power of two): buckets are allocated once; change it in the configuration and restart",
            ));
        }
        let rule_changed = config.trip != current.trip
            || (config.trip == TripPolicy::FailureRate && config.window != current.window);
        if config.trip == TripPolicy::FailureRate {
            let _ = self
                .window
                .get_or_init(|| Window::new(config.window, config.window_buckets));
        }
        self.rules.store(&config);
        // Every permit granted under the old rules is void from here: a new generation. A closed
        // breaker keeps its run of failures when the rule stays (the new threshold applies to it);
        // a half-open one keeps its trial successes and frees the slots of the trials in flight
        // (their permits are void and can no longer give them back).
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let next_generation = generation(word).wrapping_add(1);
            let next = match BreakerState::from_bits(word) {
                BreakerState::Closed if !rule_changed => with_failure_run(
                    pack(BreakerState::Closed, next_generation),
                    failure_run(word),
                ),
                // The trial successes stay (they were real); the trials in flight are void.
                BreakerState::HalfOpen => {
                    pack(BreakerState::HalfOpen, next_generation)
                        | (word & (COUNT_MASK << SUCCESSES_SHIFT))
                }
                state => pack(state, next_generation),
            };
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::SeqCst, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        if rule_changed && let Some(window) = self.window.get() {
            // After the new generation: see `window` on why the order matters.
            window.set_length(config.window);
        }
        if BreakerState::from_bits(word) == BreakerState::Open {
            let longest = if config.open_duration_varies() {
                config.max_open_duration
            } else {
                config.open_duration
            };
            let cap = nanos(self.clock.coarse_now()).saturating_add(nanos(longest));
            self.open_until.fetch_min(cap, Ordering::AcqRel);
        }
        tracing::info!(breaker = %self.instruments.name, ?config, "circuit breaker reconfigured");
        *current = config;
        Ok(())
    }

    fn admit_not_closed(&self, mut word: u64) -> Result<Ticket, Rejected> {
        loop {
            match BreakerState::from_bits(word) {
                BreakerState::Closed | BreakerState::Disabled => {
                    let admission = if word & KIND_MASK == CLOSED {
                        Admission::Closed
                    } else {
                        Admission::Disabled
                    };
                    return Ok(Ticket {
                        generation: generation(word),
                        admission,
                        started: self.started(),
                    });
                }
                BreakerState::ForcedOpen => {
                    return Err(self.reject(BreakerState::ForcedOpen, None));
                }
                BreakerState::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    let now = nanos(self.clock.coarse_now());
                    if now < until {
                        let left = Duration::from_nanos(until - now);
                        return Err(self.reject(BreakerState::Open, Some(left)));
                    }
                    self.transition(
                        word,
                        BreakerState::Open,
                        BreakerState::HalfOpen,
                        TransitionReason::OpenDurationElapsed,
                    );
                    word = self.word.load(Ordering::Acquire);
                }
                BreakerState::HalfOpen => {
                    let max_calls = self.rules.half_open_max_calls.load(Ordering::Relaxed);
                    if in_flight(word) >= u64::from(max_calls) {
                        return Err(self.reject(BreakerState::HalfOpen, None));
                    }
                    match self.word.compare_exchange_weak(
                        word,
                        word + IN_FLIGHT_ONE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            return Ok(Ticket {
                                generation: generation(word),
                                admission: Admission::Trial,
                                started: self.started(),
                            });
                        }
                        Err(actual) => word = actual,
                    }
                }
            }
        }
    }

    fn reject(&self, state: BreakerState, retry_after: Option<Duration>) -> Rejected {
        // Striped: see `CallCount`.
        self.instruments.rejected.inner().inc_striped();
        Rejected { state, retry_after }
    }

    /// Records a call's outcome. The common case (a success in the closed state, slow calls not
    /// measured) is inlined into the caller; everything else is out of line.
    #[inline(always)]
    fn complete(&self, ticket: Ticket, outcome: Outcome) {
        if outcome == Outcome::Success
            && ticket.admission == Admission::Closed
            && ticket.started.is_none()
        {
            self.instruments.successes.inc();
            if !self.rules.consecutive() || failure_run(self.word.load(Ordering::Relaxed)) != 0 {
                self.record_closed(ticket.generation, false);
            }
            return;
        }
        self.complete_general(ticket, outcome);
    }

    #[inline(never)]
    fn complete_general(&self, ticket: Ticket, outcome: Outcome) {
        let mut failed = outcome == Outcome::Failure;
        if failed {
            self.instruments.failures.inc();
        } else if let (Some(started), threshold @ 1..) = (
            ticket.started,
            self.rules.slow_call_nanos.load(Ordering::Relaxed),
        ) {
            if nanos(self.clock.now().saturating_sub(started)) >= threshold {
                failed = true;
                self.instruments.slow.inc();
            } else {
                self.instruments.successes.inc();
            }
        } else {
            self.instruments.successes.inc();
        }
        match ticket.admission {
            Admission::Disabled => {}
            Admission::Closed => self.record_closed(ticket.generation, failed),
            Admission::Trial => self.record_trial(ticket.generation, failed),
        }
    }

    fn record_closed(&self, ticket_generation: u64, failed: bool) {
        if self.rules.consecutive() {
            self.record_run(ticket_generation, failed);
            return;
        }
        let Some(window) = self.window.get() else {
            return;
        };
        // The epoch before the generation: a transition bumps the generation before it moves the
        // window to a new epoch, so an outcome that sees the current generation here adds to an
        // epoch that was current then, and a stale one adds to an epoch nobody counts.
        let epoch = window.epoch();
        if generation(self.word.load(Ordering::SeqCst)) != ticket_generation {
            return;
        }
        let now = self.clock.coarse_now();
        if window.add(now, epoch, 1, u64::from(failed)) && failed {
            let rules = &self.rules;
            let sums = window.sums(now);
            let rate = f64::from_bits(rules.failure_rate.load(Ordering::Relaxed));
            if sums.first >= rules.minimum_calls.load(Ordering::Relaxed)
                && sums.second as f64 > rate * sums.first as f64
            {
                self.trip(ticket_generation, TransitionReason::FailureRate);
            }
        }
    }

    /// Counts an outcome in the run of consecutive failures: the generation check and the count
    /// are one compare-and-swap of the state word.
    fn record_run(&self, ticket_generation: u64, failed: bool) {
        let mut word = self.word.load(Ordering::Acquire);
        let run = loop {
            if generation(word) != ticket_generation || word & KIND_MASK != CLOSED {
                return;
            }
            let run = if failed {
                failure_run(word).saturating_add(1)
            } else if failure_run(word) == 0 {
                return;
            } else {
                0
            };
            match self.word.compare_exchange_weak(
                word,
                with_failure_run(word, run),
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => break run,
                Err(actual) => word = actual,
            }
        };
        if failed && run >= self.rules.consecutive_failures.load(Ordering::Relaxed) {
            self.trip(ticket_generation, TransitionReason::ConsecutiveFailures);
        }
    }

    #[cold]
    fn trip(&self, ticket_generation: u64, reason: TransitionReason) {
        let word = self.word.load(Ordering::Acquire);
        if generation(word) == ticket_generation && word & KIND_MASK == CLOSED {
            self.transition(word, BreakerState::Closed, BreakerState::Open, reason);
        }
    }

    fn record_trial(&self, ticket_generation: u64, failed: bool) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if generation(word) != ticket_generation
                || BreakerState::from_bits(word) != BreakerState::HalfOpen
            {
                return;
            }
            if failed {
                self.transition(
                    word,
                    BreakerState::HalfOpen,
                    BreakerState::Open,
                    TransitionReason::TrialFailed,
                );
                return;
            }
            let needed = self.rules.half_open_successes.load(Ordering::Relaxed);
            if trial_successes(word) + 1 >= u64::from(needed) {
                self.transition(
                    word,
                    BreakerState::HalfOpen,
                    BreakerState::Closed,
                    TransitionReason::TrialsSucceeded,
                );
                return;
            }
            // Count the success and give the trial slot back, in one step.
            let next = word + SUCCESSES_ONE - IN_FLIGHT_ONE;
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives back the trial slot of a permit dropped without an outcome.
    fn release(&self, ticket: Ticket) {
        if ticket.admission != Admission::Trial {
            return;
        }
        let mut word = self.word.load(Ordering::Acquire);
        while generation(word) == ticket.generation
            && BreakerState::from_bits(word) == BreakerState::HalfOpen
            && in_flight(word) > 0
        {
            match self.word.compare_exchange_weak(
                word,
                word - IN_FLIGHT_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Moves from `from` (as seen in `seen`) to `to`, unless another caller moved first. Exactly one
    /// caller performs each transition: the generation in the word changes with it.
    fn transition(
        &self,
        seen: u64,
        from: BreakerState,
        to: BreakerState,
        reason: TransitionReason,
    ) {
        let _transition = self.transition.lock();
        let word = self.word.load(Ordering::Acquire);
        if generation(word) != generation(seen) || BreakerState::from_bits(word) != from {
            return;
        }
        let open_for = self.prepare(to);
        self.advance(word, to);
        self.announce(from, to, reason, open_for);
    }

    /// Moves the state word to `to` in a new generation (from `word` as last seen), then forgets
    /// the window's counts when `to` is closed. Runs under the transition lock.
    fn advance(&self, seen: u64, to: BreakerState) {
        let mut word = seen;
        let next = pack(to, generation(word).wrapping_add(1));
        // Under the lock only the counters can change (the generation cannot), so this loop ends
        // at once.
        while let Err(actual) =
            self.word
                .compare_exchange_weak(word, next, Ordering::SeqCst, Ordering::Acquire)
        {
            word = actual;
        }
        if to == BreakerState::Closed
            && let Some(window) = self.window.get()
        {
            // After the new generation: see `window` on why the order matters.
            window.clear();
        }
    }

    /// A manual transition: from any state.
    fn force(&self, to: BreakerState, reason: TransitionReason) {
        let _transition = self.transition.lock();
        let word = self.word.load(Ordering::Acquire);
        let from = BreakerState::from_bits(word);
        let open_for = self.prepare(to);
        if from == to && to != BreakerState::Closed {
            return;
        }
        // A reset of a closed breaker is a new generation too: the permits granted before it
        // report into nothing, and its counts are forgotten.
        self.advance(word, to);
        if from != to {
            self.announce(from, to, reason, open_for);
        }
    }

    /// The side effects that must be in place before the state word says `to`. Runs under the
    /// transition lock. Returns the open duration for a transition to `open`.
    fn prepare(&self, to: BreakerState) -> Option<Duration> {
        match to {
            BreakerState::Open => {
                let open_for = self.open_duration();
                let until = nanos(self.clock.coarse_now()).saturating_add(nanos(open_for));
                self.open_until.store(until, Ordering::Release);
                self.reopenings.fetch_add(1, Ordering::Relaxed);
                Some(open_for)
            }
            BreakerState::Closed => {
                // The run of failures starts at zero in the new word; the window is cleared once
                // the word is in place (`advance`).
                self.reopenings.store(0, Ordering::Relaxed);
                None
            }
            BreakerState::HalfOpen | BreakerState::Disabled | BreakerState::ForcedOpen => None,
        }
    }

    /// Runs under the transition lock.
    fn open_duration(&self) -> Duration {
        let config = self.config.lock();
        let reopenings = self.reopenings.load(Ordering::Relaxed);
        let mut seconds = config.open_duration.as_secs_f64();
        if config.open_duration_multiplier > 1.0 && reopenings > 0 {
            let exponent = i32::try_from(reopenings).unwrap_or(i32::MAX);
            seconds = (seconds * config.open_duration_multiplier.powi(exponent))
                .min(config.max_open_duration.as_secs_f64());
        }
        if config.open_duration_jitter > 0.0 {
            let spread = config.open_duration_jitter;
            seconds *= 1.0 + rand::rng().random_range(-spread..=spread);
        }
        let open_for = Duration::try_from_secs_f64(seconds).unwrap_or(config.max_open_duration);
        if config.open_duration_varies() {
            // Jitter spreads the openings below the cap, never above it.
            open_for.min(config.max_open_duration)
        } else {
            open_for
        }
    }

    fn announce(
        &self,
        from: BreakerState,
        to: BreakerState,
        reason: TransitionReason,
        open_for: Option<Duration>,
    ) {
        let instruments = &self.instruments;
        if let Some(gauge) = &instruments.state {
            gauge.set(to.gauge_value());
        }
        if let Some(gauges) = &instruments.state_active {
            for (each, gauge) in BreakerState::ALL.iter().zip(gauges) {
                gauge.set(i64::from(*each == to));
            }
        }
        instruments
            .transitions
            .get_or_create(&TransitionLabels {
                breaker: instruments.name.to_string(),
                from: from.as_str(),
                to: to.as_str(),
            })
            .inc();
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => tracing::warn!(
                breaker = %instruments.name, %from, %to, ?reason, ?open_for,
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                breaker = %instruments.name, %from, %to, ?reason,
                "circuit breaker changed state"
            ),
        }
        // No receivers is not an error: events are optional.
        let _ = instruments.events.send(TransitionEvent {
            breaker: instruments.name.clone(),
            from,
            to,
            reason,
            open_for,
        });
    }
}

/// Permission for one call, borrowed from a [`CircuitBreaker`]. Report the outcome with
/// [`Permit::success`], [`Permit::failure`] or [`Permit::record`].
#[derive(Debug)]
#[must_use = "report the call's outcome through the permit"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Option<Ticket>,
}

impl Permit<'_> {
    /// The dependency answered.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The dependency failed.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Reports `outcome`.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.shared.complete(ticket, outcome);
        }
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.shared.release(ticket);
        }
    }
}

/// Permission for one call that owns a handle to its [`CircuitBreaker`].
#[derive(Debug)]
#[must_use = "report the call's outcome through the permit"]
pub struct OwnedPermit {
    breaker: CircuitBreaker,
    ticket: Option<Ticket>,
}

impl OwnedPermit {
    /// The dependency answered.
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The dependency failed.
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Reports `outcome`.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.shared.complete(ticket, outcome);
        }
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.shared.release(ticket);
        }
    }
}
