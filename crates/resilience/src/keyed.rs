//! A keyed set of circuit breakers (one per host, per tenant), created on demand, capped, with idle
//! ones evicted and the least recently used one evicted in O(1) when full (never one a caller
//! still holds). Metrics report under the set's name, never per key.

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
    /// The most breakers the set holds; creating one more evicts the least recently used one that
    /// no caller holds (the set grows past the cap only while every breaker is held). Default
    /// 10,000.
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

/// No slot: the end of the recency list.
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<K> {
    key: K,
    breaker: CircuitBreaker,
    last_used: u64,
    /// The slot used just after this one (towards the newest), or `NIL`.
    newer: usize,
    /// The slot used just before this one (towards the oldest), or `NIL`.
    older: usize,
}

/// The breakers by key, in a list by recency of use: a hash map to slots of a slab whose nodes
/// link to each other, so that a use moves a node to the newest end and an eviction takes the
/// oldest, each in O(1).
#[derive(Debug)]
struct Entries<K> {
    slots: HashMap<K, usize>,
    nodes: Vec<Option<Node<K>>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
}

impl<K: Hash + Eq + Clone> Entries<K> {
    fn new() -> Self {
        Self {
            slots: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn node(&self, slot: usize) -> Option<&Node<K>> {
        self.nodes.get(slot).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, slot: usize) -> Option<&mut Node<K>> {
        self.nodes.get_mut(slot).and_then(Option::as_mut)
    }

    fn unlink(&mut self, slot: usize) {
        let Some((newer, older)) = self.node(slot).map(|node| (node.newer, node.older)) else {
            return;
        };
        match self.node_mut(newer) {
            Some(node) => node.older = older,
            None => self.newest = older,
        }
        match self.node_mut(older) {
            Some(node) => node.newer = newer,
            None => self.oldest = newer,
        }
    }

    fn link_newest(&mut self, slot: usize) {
        let previous = self.newest;
        if let Some(node) = self.node_mut(slot) {
            node.newer = NIL;
            node.older = previous;
        }
        match self.node_mut(previous) {
            Some(node) => node.newer = slot,
            None => self.oldest = slot,
        }
        self.newest = slot;
    }

    /// The breaker for `key`, now the most recently used, if the set holds one.
    fn touch(&mut self, key: &K, now: u64) -> Option<CircuitBreaker> {
        let slot = *self.slots.get(key)?;
        self.unlink(slot);
        self.link_newest(slot);
        let node = self.node_mut(slot)?;
        node.last_used = now;
        Some(node.breaker.clone())
    }

    fn insert(&mut self, key: K, breaker: CircuitBreaker, now: u64) {
        let node = Node {
            key: key.clone(),
            breaker,
            last_used: now,
            newer: NIL,
            older: NIL,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(free) = self.nodes.get_mut(slot) {
                    *free = Some(node);
                }
                slot
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.slots.insert(key, slot);
        self.link_newest(slot);
    }

    fn remove(&mut self, slot: usize) {
        self.unlink(slot);
        if let Some(node) = self.nodes.get_mut(slot).and_then(Option::take) {
            self.slots.remove(&node.key);
            self.free.push(slot);
        }
    }

    /// Evicts the least recently used breaker that nobody holds; `false` when every breaker is
    /// held. A held breaker met on the way is in use: it moves to the newest end, so that each
    /// one is passed over once per turn of the list, not once per eviction.
    fn evict_least_recent(&mut self, now: u64) -> bool {
        for _ in 0..self.len() {
            let slot = self.oldest;
            let Some(node) = self.node_mut(slot) else {
                return false;
            };
            if node.breaker.is_held() {
                node.last_used = now;
                self.unlink(slot);
                self.link_newest(slot);
            } else {
                self.remove(slot);
                return true;
            }
        }
        false
    }

    /// Evicts the breakers unused for `idle` nanoseconds that nobody holds, oldest first: it stops
    /// at the first breaker used more recently. Returns how many.
    fn evict_idle(&mut self, now: u64, idle: u64) -> usize {
        let mut evicted = 0;
        for _ in 0..self.len() {
            let slot = self.oldest;
            let Some(node) = self.node_mut(slot) else {
                break;
            };
            if now.saturating_sub(node.last_used) < idle {
                break;
            }
            if node.breaker.is_held() {
                node.last_used = now;
                self.unlink(slot);
                self.link_newest(slot);
            } else {
                self.remove(slot);
                evicted += 1;
            }
        }
        evicted
    }
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
    entries: RwLock<Entries<K>>,
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
            ResilienceMetrics::unregistered(),
        )
    }

    /// A set with the given clock and metric families.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "metric handles are passed by value in every mainstay crate (decision 0120)"
    )]
    pub fn with_clock(
        name: &str,
        config: KeyedBreakerConfig,
        clock: SharedClock,
        metrics: ResilienceMetrics,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let last_sweep = AtomicU64::new(nanos(clock.coarse_now()));
        Ok(Self {
            config,
            clock,
            instruments: Instruments::new(name, &metrics, false),
            entries: RwLock::new(Entries::new()),
            last_sweep,
        })
    }

    /// The breaker for `key`, created closed if the set has none; it becomes the most recently
    /// used.
    ///
    /// Creating one in a full set evicts the least recently used breaker that nobody holds, in
    /// O(1) (plus one step per held breaker passed over); recency is kept to the resolution of the
    /// clock's coarse reading. A breaker that a caller still holds (a
    /// clone returned by `get` or `peek`, or an owned permit) is never evicted: its holder may
    /// still report into it. When every breaker is held, the set grows past `max_keys` until
    /// they are released.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let now = nanos(self.clock.coarse_now());
        {
            // A breaker already used at this reading of the coarse clock is already in its place
            // in the list (recency is kept to the clock's resolution): a shared lock is enough.
            let entries = self.entries.read();
            if let Some(node) = entries.slots.get(key).and_then(|slot| entries.node(*slot))
                && node.last_used == now
            {
                return node.breaker.clone();
            }
        }
        let mut entries = self.entries.write();
        if let Some(breaker) = entries.touch(key, now) {
            return breaker;
        }
        let idle = nanos(self.config.idle_timeout);
        let since_sweep = now.saturating_sub(self.last_sweep.load(Ordering::Relaxed));
        if since_sweep >= idle {
            entries.evict_idle(now, idle);
            self.last_sweep.store(now, Ordering::Relaxed);
        }
        while entries.len() >= self.config.max_keys && entries.evict_least_recent(now) {}
        // The configuration was validated when the set was built.
        let breaker = CircuitBreaker::from_validated(
            self.config.breaker.clone(),
            self.clock.clone(),
            self.instruments.clone(),
        );
        entries.insert(key.clone(), breaker.clone(), now);
        breaker
    }

    /// The breaker for `key` if the set holds one, without creating it or counting a use.
    pub fn peek(&self, key: &K) -> Option<CircuitBreaker> {
        let entries = self.entries.read();
        let slot = *entries.slots.get(key)?;
        entries.node(slot).map(|node| node.breaker.clone())
    }

    /// Evicts every breaker unused for the idle timeout that nobody holds; returns how many. `get`
    /// also does this when an idle timeout has passed since the last sweep.
    pub fn evict_idle(&self) -> usize {
        let now = nanos(self.clock.coarse_now());
        let evicted = self
            .entries
            .write()
            .evict_idle(now, nanos(self.config.idle_timeout));
        self.last_sweep.store(now, Ordering::Relaxed);
        evicted
    }

    /// How many breakers the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether the set holds no breaker.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.read().len() == 0
    }

    /// Resets every breaker in the set to closed.
    pub fn reset_all(&self) {
        let breakers: Vec<CircuitBreaker> = {
            let entries = self.entries.read();
            entries
                .nodes
                .iter()
                .flatten()
                .map(|node| node.breaker.clone())
                .collect()
        };
        // Outside the set's lock: a reset takes each breaker's transition lock and sends events.
        for breaker in breakers {
            breaker.reset();
        }
    }

    /// A receiver of the transitions of every breaker in the set (named after the set).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<TransitionEvent> {
        self.instruments.events.subscribe()
    }
}
