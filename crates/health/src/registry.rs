//! The [`HealthRegistry`]: runs checks, caches and coalesces their results, answers the probes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use mainstay_clock::{RealClock, SharedClock};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::check::{Check, CheckOutcome, Status};
use crate::checks::{DiskSpaceCheck, MemoryCheck};
use crate::config::{ConfigError, HealthConfig};
use crate::metrics::HealthMetrics;
use crate::report::{CheckReport, ProbeResponse, Report, View};

/// Names the registry uses for its own lifecycle entries; checks may not take them.
const RESERVED_NAMES: [&str; 2] = ["startup", "shutdown"];

/// Why a check could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is not usable as a report key and metric label.
    #[error(
        "check name {name:?} is invalid; use 1 to 64 characters from a-z, 0-9, `_`, `-` and `.`, starting with a letter or digit"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The name is used by the registry's own lifecycle entries.
    #[error(
        "check name {name:?} is reserved for the registry's lifecycle entries; choose another name"
    )]
    ReservedName {
        /// The name given.
        name: String,
    },
    /// A check with this name is already registered.
    #[error("a check named {name:?} is already registered; give each check a distinct name")]
    Duplicate {
        /// The name given.
        name: String,
    },
}

/// Runs dependency checks and answers liveness, readiness, startup and deps probes.
///
/// Cloning is cheap: every clone shares the checks, the cache and the lifecycle flags. Probes
/// must run inside a Tokio runtime (each check runs on its own task).
///
/// * [`liveness`](Self::liveness) never runs a check: 200 whenever the process can answer.
/// * [`startup`](Self::startup): 503 until [`mark_started`](Self::mark_started).
/// * [`readiness`](Self::readiness): 503 before startup completes, as soon as
///   [`begin_shutdown`](Self::begin_shutdown) is called, and when a critical check is unhealthy;
///   200 (`healthy` or `degraded`) otherwise.
/// * [`deps`](Self::deps): every check, whatever the lifecycle state.
///
/// Results of one run answer every probe for `cache_interval`; probes that arrive while a run is
/// in flight wait for that run instead of starting another.
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

/// Builds a [`HealthRegistry`]; see [`HealthRegistry::builder`].
#[derive(Debug)]
pub struct HealthRegistryBuilder {
    config: HealthConfig,
    version: String,
    clock: Option<SharedClock>,
    metrics: Option<HealthMetrics>,
}

impl HealthRegistryBuilder {
    /// Uses `clock` for cache intervals, timeouts, latency (its precise `now`), sleeps and
    /// `observed_at` timestamps (its `system_time`). Default [`RealClock`]; tests pass a
    /// [`ManualClock`](mainstay_clock::ManualClock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Records every check run in `metrics` (default: no metrics).
    #[must_use]
    pub fn metrics(mut self, metrics: HealthMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Validates the configuration and builds the registry, with the built-in `disk` and
    /// `memory` checks registered when enabled.
    ///
    /// # Errors
    ///
    /// Whatever [`HealthConfig::validate`] finds.
    pub fn build(self) -> Result<HealthRegistry, ConfigError> {
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(|| RealClock::new().shared());
        let created_at = clock.now();
        let registry = HealthRegistry {
            inner: Arc::new(Inner {
                config: self.config,
                version: self.version,
                clock,
                metrics: self.metrics,
                created_at,
                checks: RwLock::new(Vec::new()),
                state: Mutex::new(CacheState::default()),
                started: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                refresher: Mutex::new(None),
            }),
        };
        let mut builtins: Vec<Arc<dyn Check>> = Vec::new();
        let metrics = registry.inner.metrics.as_ref();
        if registry.inner.config.disk.enabled {
            let mut disk = DiskSpaceCheck::new(registry.inner.config.disk.clone());
            if let Some(metrics) = metrics {
                disk = disk.with_free_ratio(metrics.disk_free_ratio());
            }
            builtins.push(Arc::new(disk));
        }
        if registry.inner.config.memory.enabled {
            let mut memory = MemoryCheck::new(registry.inner.config.memory.clone());
            if let Some(metrics) = metrics {
                memory = memory.with_used_ratio(metrics.memory_used_ratio());
            }
            builtins.push(Arc::new(memory));
        }
        for check in builtins {
            registry.insert(check);
        }
        Ok(registry)
    }
}

struct Inner {
    config: HealthConfig,
    version: String,
    clock: SharedClock,
    metrics: Option<HealthMetrics>,
    created_at: Duration,
    checks: RwLock<Vec<Entry>>,
    state: Mutex<CacheState>,
    started: AtomicBool,
    shutting_down: AtomicBool,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(refresher) = self.refresher.get_mut().take() {
            refresher.abort();
        }
    }
}

/// A registered check with its effective timeout and criticality.
#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    check: Arc<dyn Check>,
    timeout: Duration,
    critical: bool,
}

type SharedRun = Shared<BoxFuture<'static, Arc<Snapshot>>>;

#[derive(Default)]
struct CacheState {
    cached: Option<Arc<Snapshot>>,
    in_flight: Option<SharedRun>,
}

/// The results of one run, pre-rendered for both views.
struct Snapshot {
    /// Clock time at which the run started; the results are fresh for `cache_interval` after.
    taken_at: Duration,
    status: Status,
    public: BTreeMap<String, CheckReport>,
    admin: BTreeMap<String, CheckReport>,
}

/// What one check run produced.
struct Ran {
    name: Arc<str>,
    critical: bool,
    status: Status,
    latency: Duration,
    observed_at: String,
    /// A message the registry wrote (timeout, panic), safe for the public view.
    public_message: Option<String>,
    admin_message: Option<String>,
    details: BTreeMap<String, serde_json::Value>,
}

impl HealthRegistry {
    /// Starts building a registry that reports `version` (usually the application's
    /// `env!("CARGO_PKG_VERSION")`).
    #[must_use]
    pub fn builder(config: HealthConfig, version: impl Into<String>) -> HealthRegistryBuilder {
        HealthRegistryBuilder {
            config,
            version: version.into(),
            clock: None,
            metrics: None,
        }
    }

    /// Adds a check. Its timeout and criticality come from `checks.<name>` in the configuration
    /// when set there, else from the check. Cached results are dropped so the next probe
    /// includes it.
    ///
    /// # Errors
    ///
    /// An invalid, reserved or already registered name.
    pub fn register(&self, check: Arc<dyn Check>) -> Result<(), RegisterError> {
        let name = check.name();
        let valid = name.len() <= 64
            && name.bytes().enumerate().all(|(index, byte)| {
                byte.is_ascii_lowercase()
                    || byte.is_ascii_digit()
                    || (index > 0 && matches!(byte, b'_' | b'-' | b'.'))
            })
            && !name.is_empty();
        if !valid {
            return Err(RegisterError::InvalidName {
                name: name.to_owned(),
            });
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(RegisterError::ReservedName {
                name: name.to_owned(),
            });
        }
        if self
            .inner
            .checks
            .read()
            .iter()
            .any(|entry| &*entry.name == name)
        {
            return Err(RegisterError::Duplicate {
                name: name.to_owned(),
            });
        }
        self.insert(check);
        Ok(())
    }

    fn insert(&self, check: Arc<dyn Check>) {
        let config = &self.inner.config;
        let name: Arc<str> = Arc::from(check.name());
        let overrides = config.checks.get(&*name);
        let timeout = overrides
            .and_then(|overrides| overrides.timeout)
            .or_else(|| check.timeout())
            .unwrap_or(config.default_timeout);
        let critical = overrides
            .and_then(|overrides| overrides.critical)
            .unwrap_or_else(|| check.criticality().is_critical());
        if let Some(metrics) = &self.inner.metrics {
            metrics.declare(&name, critical);
        }
        self.inner.checks.write().push(Entry {
            name,
            check,
            timeout,
            critical,
        });
        self.inner.state.lock().cached = None;
    }

    /// The names of the registered checks, in registration order.
    #[must_use]
    pub fn check_names(&self) -> Vec<String> {
        let checks = self.inner.checks.read();
        checks.iter().map(|entry| entry.name.to_string()).collect()
    }

    /// Checks that every `checks.<name>` key of the configuration names a registered check.
    /// Call it once the application has registered all its checks.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownCheck`], listing the known names.
    pub fn validate_check_names(&self) -> Result<(), ConfigError> {
        let names = self.check_names();
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        self.inner.config.validate_check_names(&known)
    }

    /// The configuration the registry was built with.
    #[must_use]
    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    /// Marks startup complete: the startup probe answers 200 and readiness starts running
    /// checks. With `background_refresh` on, this also starts the refresh task (it needs a Tokio
    /// runtime; outside one a warning is logged and probes refresh on demand). Idempotent.
    pub fn mark_started(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        if !self.inner.config.background_refresh || self.is_shutting_down() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(refresh_loop(Arc::downgrade(&self.inner)));
                *self.inner.refresher.lock() = Some(task);
            }
            Err(_) => tracing::warn!(
                "health background refresh not started: mark_started was called outside a tokio runtime"
            ),
        }
    }

    /// Marks shutdown begun: readiness answers 503 from now on, without running checks, and the
    /// background refresh stops. Liveness keeps answering 200 so that the orchestrator lets the
    /// process drain instead of killing it. Idempotent.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        if let Some(metrics) = &self.inner.metrics {
            metrics.set_ready(false);
        }
        if let Some(refresher) = self.inner.refresher.lock().take() {
            refresher.abort();
        }
    }

    /// Whether [`mark_started`](Self::mark_started) has been called.
    #[must_use]
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) has been called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// The liveness probe: always 200 `healthy` with no checks. It never runs a dependency
    /// check; that it answers at all shows the runtime is turning.
    pub async fn liveness(&self) -> ProbeResponse {
        ProbeResponse {
            status_code: 200,
            report: self.report(Status::Healthy, BTreeMap::new()),
        }
    }

    /// The startup probe: 503 `unhealthy` (with a `startup` entry) until
    /// [`mark_started`](Self::mark_started), then 200 `healthy`. Runs no check.
    pub async fn startup(&self) -> ProbeResponse {
        if self.is_started() {
            ProbeResponse {
                status_code: 200,
                report: self.report(Status::Healthy, BTreeMap::new()),
            }
        } else {
            self.lifecycle("startup", "startup not complete", View::Public)
        }
    }

    /// The readiness probe: 503 with a `startup` or `shutdown` entry before startup completes or
    /// once shutdown begins; otherwise the (cached) checks, aggregated, answering 503 only when
    /// the status is `unhealthy`.
    pub async fn readiness(&self, view: View) -> ProbeResponse {
        if self.is_shutting_down() {
            return self.lifecycle("shutdown", "shutdown in progress", view);
        }
        if !self.is_started() {
            return self.lifecycle("startup", "startup not complete", view);
        }
        let allow_stale = self.inner.config.background_refresh;
        let snapshot = self.snapshot(allow_stale).await;
        self.respond(&snapshot, view)
    }

    /// Every check with its status and latency (cached like readiness), whatever the lifecycle
    /// state; 503 only when the aggregate is `unhealthy`.
    pub async fn deps(&self, view: View) -> ProbeResponse {
        let allow_stale = self.inner.config.background_refresh && self.is_started();
        let snapshot = self.snapshot(allow_stale).await;
        self.respond(&snapshot, view)
    }

    fn respond(&self, snapshot: &Snapshot, view: View) -> ProbeResponse {
        let checks = match view {
            View::Public => snapshot.public.clone(),
            View::Admin => snapshot.admin.clone(),
        };
        ProbeResponse {
            status_code: status_code(snapshot.status),
            report: self.report(snapshot.status, checks),
        }
    }

    fn report(&self, status: Status, checks: BTreeMap<String, CheckReport>) -> Report {
        let uptime = self.inner.clock.now().saturating_sub(self.inner.created_at);
        Report {
            status,
            version: self.inner.version.clone(),
            uptime_seconds: uptime.as_secs(),
            checks,
        }
    }

    fn lifecycle(&self, name: &str, message: &str, view: View) -> ProbeResponse {
        let entry = CheckReport {
            status: Status::Unhealthy,
            critical: true,
            latency_ms: 0.0,
            message: Some(message.to_owned()),
            observed_at: rfc3339(self.inner.clock.system_time()),
            details: (view == View::Admin).then(BTreeMap::new),
        };
        let checks = BTreeMap::from([(name.to_owned(), entry)]);
        ProbeResponse {
            status_code: 503,
            report: self.report(Status::Unhealthy, checks),
        }
    }

    /// Fresh cached results, the in-flight run's results, or a new run's. With `allow_stale`, a
    /// probe that finds a run in flight answers from the previous results instead of waiting.
    async fn snapshot(&self, allow_stale: bool) -> Arc<Snapshot> {
        let run = {
            let mut state = self.inner.state.lock();
            if let Some(cached) = &state.cached {
                let age = self.inner.clock.now().saturating_sub(cached.taken_at);
                if age < self.inner.config.cache_interval {
                    return Arc::clone(cached);
                }
            }
            if let Some(run) = &state.in_flight {
                if allow_stale && let Some(cached) = &state.cached {
                    return Arc::clone(cached);
                }
                run.clone()
            } else {
                let run = start_run(&self.inner);
                state.in_flight = Some(run.clone());
                run
            }
        };
        run.await
    }
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HealthRegistry")
            .field("version", &self.inner.version)
            .field("checks", &self.check_names())
            .field("started", &self.is_started())
            .field("shutting_down", &self.is_shutting_down())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn status_code(status: Status) -> u16 {
    if status == Status::Unhealthy {
        503
    } else {
        200
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Starts one run of every check on its own task. The task stores its results in the cache
/// whether or not any probe is still waiting, so a probe that gives up wastes nothing.
/// Called with the cache lock held, which the task takes only after the caller released it.
fn start_run(inner: &Arc<Inner>) -> SharedRun {
    let task_inner = Arc::clone(inner);
    let task = tokio::spawn(async move {
        let snapshot = Arc::new(run_all(&task_inner).await);
        let previous = {
            let mut state = task_inner.state.lock();
            state.in_flight = None;
            state.cached.replace(Arc::clone(&snapshot))
        };
        log_changes(previous.as_deref(), &snapshot);
        snapshot
    });
    let weak = Arc::downgrade(inner);
    task.map(move |joined| match joined {
        Ok(snapshot) => snapshot,
        Err(error) => {
            // Only runtime shutdown cancels the task, and `run_all` does not panic; either way
            // the next probe must start afresh rather than wait on this run forever.
            tracing::warn!(%error, "health check run did not complete");
            let taken_at = weak.upgrade().map_or(Duration::ZERO, |inner| {
                inner.state.lock().in_flight = None;
                inner.clock.now()
            });
            Arc::new(Snapshot {
                taken_at,
                status: Status::Unhealthy,
                public: BTreeMap::new(),
                admin: BTreeMap::new(),
            })
        }
    })
    .boxed()
    .shared()
}

/// Runs every registered check concurrently, each under its own timeout, records metrics and
/// renders both views.
async fn run_all(inner: &Inner) -> Snapshot {
    let entries: Vec<Entry> = inner.checks.read().clone();
    let taken_at = inner.clock.now();
    let results =
        futures::future::join_all(entries.iter().map(|entry| run_one(&inner.clock, entry))).await;
    if let Some(metrics) = &inner.metrics {
        for ran in &results {
            metrics.record(&ran.name, ran.status, ran.latency);
        }
    }
    let status = results
        .iter()
        .map(|ran| match ran.status {
            Status::Unhealthy if !ran.critical => Status::Degraded,
            status => status,
        })
        .max()
        .unwrap_or(Status::Healthy);
    if let Some(metrics) = &inner.metrics {
        metrics.set_ready(
            inner.started.load(Ordering::SeqCst)
                && !inner.shutting_down.load(Ordering::SeqCst)
                && status != Status::Unhealthy,
        );
    }
    let mut public = BTreeMap::new();
    let mut admin = BTreeMap::new();
    for ran in results {
        let latency_ms = ran.latency.as_micros() as f64 / 1000.0;
        let base = CheckReport {
            status: ran.status,
            critical: ran.critical,
            latency_ms,
            message: ran.public_message,
            observed_at: ran.observed_at,
            details: None,
        };
        let full = CheckReport {
            message: ran.admin_message,
            details: Some(ran.details),
            ..base.clone()
        };
        public.insert(ran.name.to_string(), base);
        admin.insert(ran.name.to_string(), full);
    }
    Snapshot {
        taken_at,
        status,
        public,
        admin,
    }
}

/// Runs one check on its own task, so that a panic is caught and a hang is cut off at the
/// timeout (the task is aborted).
async fn run_one(clock: &SharedClock, entry: &Entry) -> Ran {
    let started = clock.now();
    let observed_at = rfc3339(clock.system_time());
    let check = Arc::clone(&entry.check);
    let mut task = tokio::spawn(async move { check.check().await });
    let deadline = clock.sleep(entry.timeout);
    let (outcome, public_message) = tokio::select! {
        joined = &mut task => match joined {
            Ok(outcome) => (outcome, None),
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string payload".to_owned());
                let outcome = CheckOutcome::unhealthy(format!("check panicked: {text}"));
                (outcome, Some("check panicked".to_owned()))
            }
            Err(_) => {
                let message = "check was cancelled";
                (CheckOutcome::unhealthy(message), Some(message.to_owned()))
            }
        },
        () = deadline => {
            task.abort();
            let message = format!(
                "check timed out after {}",
                humantime::format_duration(entry.timeout)
            );
            (CheckOutcome::unhealthy(message.clone()), Some(message))
        }
    };
    let latency = clock.now().saturating_sub(started);
    // A check that is not healthy always says why, in words that name nothing internal.
    let public_message = match outcome.status {
        Status::Healthy => None,
        _ => public_message
            .or_else(|| outcome.public_reason.clone())
            .or_else(|| Some(reason_class(outcome.status, outcome.message.as_deref()).to_owned())),
    };
    tracing::debug!(
        dependency = %entry.name,
        status = %outcome.status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "health check ran"
    );
    Ran {
        name: Arc::clone(&entry.name),
        critical: entry.critical,
        status: outcome.status,
        latency,
        observed_at,
        public_message,
        admin_message: outcome.message,
        details: outcome.details,
    }
}

/// The public reason of a check that is not healthy and gave none: a class read from its own
/// message (which may name hosts, paths and error texts, and stays in the admin view).
pub(crate) fn reason_class(status: Status, message: Option<&str>) -> &'static str {
    let text = message.unwrap_or_default().to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|word| text.contains(word));
    if has(&["timed out", "timeout", "deadline"]) {
        "timeout"
    } else if has(&["connection refused", "refused"]) {
        "connection refused"
    } else if has(&[
        "connection reset",
        "broken pipe",
        "connection closed",
        "eof",
    ]) {
        "connection lost"
    } else if has(&["dns", "resolve", "lookup", "name or service"]) {
        "name resolution failed"
    } else if has(&["tls", "certificate", "handshake"]) {
        "tls error"
    } else if has(&[
        "permission denied",
        "forbidden",
        "unauthori",
        "noauth",
        "auth",
    ]) {
        "not authorised"
    } else if has(&["no space", "disk full", "quota"]) {
        "out of space"
    } else if has(&["fenced"]) {
        "fenced by another writer"
    } else if has(&["circuit", "breaker"]) {
        "circuit open"
    } else if has(&["unavailable", "unreachable", "down"]) {
        "unavailable"
    } else if status == Status::Degraded {
        "degraded"
    } else {
        "failing"
    }
}

/// Logs each check whose status changed since the previous run: a warning when it got worse.
fn log_changes(previous: Option<&Snapshot>, current: &Snapshot) {
    for (name, report) in &current.admin {
        let before = previous
            .and_then(|previous| previous.admin.get(name))
            .map_or(Status::Healthy, |report| report.status);
        if report.status > before {
            tracing::warn!(
                dependency = %name,
                from = %before,
                to = %report.status,
                reason = report.message.as_deref().unwrap_or(""),
                "dependency health got worse"
            );
        } else if report.status < before {
            tracing::info!(dependency = %name, from = %before, to = %report.status, "dependency health recovered");
        }
    }
}

/// Refreshes the cache every `cache_interval` until shutdown begins or the registry is dropped.
/// Holds only a weak reference between runs, so it never keeps the registry alive.
async fn refresh_loop(registry: Weak<Inner>) {
    loop {
        let sleep = {
            let Some(inner) = registry.upgrade() else {
                return;
            };
            if inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let handle = HealthRegistry { inner };
            let snapshot = handle.snapshot(false).await;
            let inner = &handle.inner;
            let fresh_until = snapshot
                .taken_at
                .saturating_add(inner.config.cache_interval);
            inner
                .clock
                .sleep(fresh_until.saturating_sub(inner.clock.now()))
        };
        sleep.await;
    }
}
