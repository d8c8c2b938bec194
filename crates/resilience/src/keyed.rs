//! A keyed set of circuit breakers (one per host, per tenant), created on demand, capped, with idle
//! ones evicted. Metrics report under the set's name, never per key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mainstay_clock::{RealClock, SharedClock};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::breaker::{CircuitBreaker, Instruments, TransitionEvent};
use crate::config::{BreakerConfig, ConfigError};
use crate::metrics::ResilienceMetrics;
use crate::nanos;

/// The rules of a keyed set: the rules of each breaker, the cap and the idle timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyedBreakerConfig {
    /// The rules of every breaker in the set. Default [`BreakerConfig::default`].
    pub breaker: BreakerConfig,
    /// The most breakers the set holds; creating one more evicts idle ones first, then the least
    /// recently used. Default 10,000.
    pub max_keys: usize,
    /// A breaker unused this long is evicted (its state forgotten). Default 10 min.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for KeyedBreakerConfig {
    fn default() -> Self {
        Self {
            breaker: BreakerConfig::default(),
            max_keys: 10_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl KeyedBreakerConfig {
    /// Checks every field; the error names the first key that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.breaker.validate()?;
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", self.max_keys, "at least 1"));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "idle_timeout",
                self.idle_timeout,
                "a positive duration",
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Entry {
    breaker: CircuitBreaker,
    last_used: AtomicU64,
}

/// A set of circuit breakers, one per key, created on first use.
///
/// Every breaker in the set reports into the set's series (`breaker="<set name>"`) in
/// `circuit_breaker_calls_total` and `circuit_breaker_transitions_total`; the set exports no
/// `circuit_breaker_state` series, since a per-key state would need an unbounded label and an
/// aggregate of states has no meaning.
#[derive(Debug)]
pub struct KeyedBreakers<K> {
    config: KeyedBreakerConfig,
    clock: SharedClock,
    instruments: Instruments,
    entries: RwLock<HashMap<K, Entry>>,
    last_sweep: AtomicU64,
}

impl<K> KeyedBreakers<K>
where
    K: Hash + Eq + Clone,
{
    /// A set on the real clock, with no metrics.
    pub fn new(name: &str, config: KeyedBreakerConfig) -> Result<Self, ConfigError> {
        Self::with_clock(
            name,
            config,
            RealClock::new().shared(),
            &ResilienceMetrics::unregistered(),
        )
    }

    /// A set with the given clock and metric families.
    pub fn with_clock(
        name: &str,
        config: KeyedBreakerConfig,
        clock: SharedClock,
        metrics: &ResilienceMetrics,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let last_sweep = AtomicU64::new(nanos(clock.coarse_now()));
        Ok(Self {
            config,
            clock,
            instruments: Instruments::new(name, metrics, false),
            entries: RwLock::new(HashMap::new()),
            last_sweep,
        })
    }

    /// The breaker for `key`, created closed if the set has none.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let now = nanos(self.clock.coarse_now());
        if let Some(entry) = self.entries.read().get(key) {
            entry.last_used.store(now, Ordering::Relaxed);
            return entry.breaker.clone();
        }
        let mut entries = self.entries.write();
        if let Some(entry) = entries.get(key) {
            entry.last_used.store(now, Ordering::Relaxed);
            return entry.breaker.clone();
        }
        let idle = nanos(self.config.idle_timeout);
        let since_sweep = now.saturating_sub(self.last_sweep.load(Ordering::Relaxed));
        if entries.len() >= self.config.max_keys || since_sweep >= idle {
            evict_idle(&mut entries, now, idle);
            self.last_sweep.store(now, Ordering::Relaxed);
        }
        if entries.len() >= self.config.max_keys {
            let least_recent = entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            if let Some(least_recent) = least_recent {
                entries.remove(&least_recent);
            }
        }
        // The configuration was validated when the set was built.
        let breaker = CircuitBreaker::from_validated(
            self.config.breaker.clone(),
            self.clock.clone(),
            self.instruments.clone(),
        );
        entries.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        breaker
    }

    /// The breaker for `key` if the set holds one, without creating it.
    pub fn peek(&self, key: &K) -> Option<CircuitBreaker> {
        self.entries
            .read()
            .get(key)
            .map(|entry| entry.breaker.clone())
    }

    /// Evicts every breaker unused for the idle timeout; returns how many. `get` also does this
    /// when the set is full or an idle timeout has passed since the last sweep.
    pub fn evict_idle(&self) -> usize {
        let now = nanos(self.clock.coarse_now());
        let mut entries = self.entries.write();
        let before = entries.len();
        evict_idle(&mut entries, now, nanos(self.config.idle_timeout));
        self.last_sweep.store(now, Ordering::Relaxed);
        before - entries.len()
    }

    /// How many breakers the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether the set holds no breaker.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }

    /// Resets every breaker in the set to closed.
    pub fn reset_all(&self) {
        for entry in self.entries.read().values() {
            entry.breaker.reset();
        }
    }

    /// A receiver of the transitions of every breaker in the set (named after the set).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<TransitionEvent> {
        self.instruments.events.subscribe()
    }
}

fn evict_idle<K>(entries: &mut HashMap<K, Entry>, now: u64, idle: u64) {
    entries.retain(|_, entry| now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) < idle);
}
