//! Prometheus metric families, registered once per registry and shared by every limiter.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `ratelimit_decisions_total` | counter | `policy` (`tier:NAME`, `class:NAME`, `plan:NAME` from config, or `none`), `decision` (`allowed`, `denied`), `backend` (`memory`, `redis`, `fallback`, `cache`) |
//! | `ratelimit_backend_errors_total` | counter | `kind` (`timeout`, `connection`, `script`) |
//! | `ratelimit_fallback_active` | gauge (0 or 1) | none |
//! | `ratelimit_fallback_switches_total` | counter | `to` (`fallback`, `redis`) |
//! | `ratelimit_redis_duration_seconds` | histogram | none |
//! | `ratelimit_local_cache_hits_total` | counter | none |
//! | `ratelimit_local_keys` | gauge | none |
//!
//! Labels never carry identities: policies are names from the configuration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Labels of `ratelimit_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) policy: String,
    pub(crate) decision: &'static str,
    pub(crate) backend: &'static str,
}

/// Labels of `ratelimit_backend_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub(crate) error_type: &'static str,
}

/// Labels of `ratelimit_fallback_switches_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SwitchLabels {
    pub(crate) to: &'static str,
}

/// The handles to this crate's metric families. Cheap to clone; give the same handles to every
/// limiter of a registry.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    pub(crate) decisions: Family<DecisionLabels, Counter>,
    pub(crate) backend_errors: Family<ErrorLabels, Counter>,
    pub(crate) fallback_active: Gauge,
    pub(crate) fallback_switches: Family<SwitchLabels, Counter>,
    pub(crate) redis_duration: Histogram,
    pub(crate) local_cache_hits: Counter,
    pub(crate) local_keys: Gauge,
}

/// The buckets of `ratelimit_redis_duration_seconds`, in seconds: 25 µs (a local round trip) to
/// 100 ms.
pub(crate) const REDIS_BUCKETS: [f64; 12] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02, 0.05, 0.1,
];

impl RateLimitMetrics {
    /// Registers the families into `registry` and returns their handles. Call it once per registry.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "ratelimit_decisions",
            "Rate-limit decisions by the policy that decided, the decision and the backend",
            metrics.decisions.clone(),
        );
        registry.register(
            "ratelimit_backend_errors",
            "Redis calls of the rate limiter that failed, by error type",
            metrics.backend_errors.clone(),
        );
        registry.register(
            "ratelimit_fallback_active",
            "1 while rate limits are decided without Redis (its circuit breaker is not closed)",
            metrics.fallback_active.clone(),
        );
        registry.register(
            "ratelimit_fallback_switches",
            "Switches between Redis and the fallback, by the side switched to",
            metrics.fallback_switches.clone(),
        );
        registry.register_with_unit(
            "ratelimit_redis_duration",
            "Duration of the rate limiter's Redis decisions, pool checkout included",
            Unit::Seconds,
            metrics.redis_duration.clone(),
        );
        registry.register(
            "ratelimit_local_cache_hits",
            "Requests denied by the local over-limit cache without a Redis round trip",
            metrics.local_cache_hits.clone(),
        );
        registry.register(
            "ratelimit_local_keys",
            "Keys held by the in-process limit stores",
            metrics.local_keys.clone(),
        );
        metrics
    }

    /// Handles registered nowhere: what a limiter counts into when no metrics are given.
    #[must_use]
    pub fn unregistered() -> Self {
        Self {
            decisions: Family::default(),
            backend_errors: Family::default(),
            fallback_active: Gauge::default(),
            fallback_switches: Family::default(),
            redis_duration: Histogram::new(REDIS_BUCKETS),
            local_cache_hits: Counter::default(),
            local_keys: Gauge::default(),
        }
    }
}
