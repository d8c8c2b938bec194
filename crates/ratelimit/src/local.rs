//! The in-process backend: one GCRA limit over many keys, in a sharded store with a key cap and
//! least-recently-used eviction.
//!
//! The arithmetic is governor's ([`crate::gcra`]); the state is our own store rather than
//! governor's `DashMapStateStore`, because a request with several limits needs what governor's
//! keyed `RateLimiter` lacks (reading a TAT without consuming, and giving a consumed cell back when a
//! later limit denies, `docs/decisions/0050`), and a capped store needs eviction in O(1): each shard
//! is a hash map over an intrusive doubly linked list in recency order, under a mutex
//! (`docs/decisions/0087`). At the cap, a new key evicts its shard's least recently used key;
//! a key is used by every decision on it, allowed or denied, so a caller who keeps hitting its limit
//! stays resident and denied. An evicted key starts again with a full bucket: eviction fails open for
//! that key. Idle keys (full buckets) are reclaimed by [`InProcessLimiter::sweep`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use mainstay_clock::{FastClock, SharedClock};
use parking_lot::Mutex;

use crate::config::{ConfigError, LimitSpec};
use crate::gcra::{Gcra, Step};
use crate::identity::Pseudonym;

/// Stored TATs are nanoseconds since the clock's origin plus this offset, so that a stored value is
/// never 0.
const ORIGIN_OFFSET_NS: u64 = 1_000_000_000;

/// Keys per shard below which a store has a single shard (an exact LRU for small caps).
const KEYS_PER_SHARD: usize = 1_024;
/// The most shards a store has.
const MAX_SHARDS: usize = 64;
/// The end of a recency list.
const NIL: u32 = u32::MAX;

/// The in-process time of a clock reading, in nanoseconds.
#[inline]
pub(crate) fn local_now(reading: Duration) -> u64 {
    u64::try_from(reading.as_nanos())
        .unwrap_or(u64::MAX - ORIGIN_OFFSET_NS)
        .saturating_add(ORIGIN_OFFSET_NS)
}

/// The outcome of one [`InProcessLimiter::check_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDecision {
    /// Whether the request passes.
    pub allowed: bool,
    /// Requests that would still pass right after this one.
    pub remaining: u32,
    /// Time until the key's bucket is full again.
    pub reset_after: Duration,
    /// For a denial: time until a request would pass; zero when allowed.
    pub retry_after: Duration,
}

/// One GCRA limit kept in process memory, per key: what governor's keyed `RateLimiter` does, plus
/// reads without consumption, refunds, and a key cap past which the least recently used keys are
/// evicted (an evicted key starts again with a full bucket). Cheap to share behind an `Arc`.
///
/// ```
/// use std::time::Duration;
/// use mainstay_ratelimit::{InProcessLimiter, LimitSpec, Pseudonym};
/// use mainstay_clock::ManualClock;
///
/// let clock = ManualClock::new();
/// let limiter = InProcessLimiter::new(&LimitSpec::per_minute(60).with_burst(2), 1_000, clock.shared())?;
/// let key = Pseudonym([7; 16]);
/// assert!(limiter.check_key(&key).allowed);
/// assert!(limiter.check_key(&key).allowed);
/// let denied = limiter.check_key(&key);
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Duration::from_secs(1));
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check_key(&key).allowed);
/// # Ok::<(), mainstay_ratelimit::ConfigError>(())
/// ```
pub struct InProcessLimiter {
    /// The limit, in nanoseconds.
    gcra: Gcra,
    shards: Box<[Mutex<Shard>]>,
    hasher: KeyHasher,
    clock: SharedClock,
}

/// Hashes pseudonyms: they are HMAC outputs already (uniform, and unknown to whoever chooses the
/// identities), so a few multiplications with a per-store random seed spread them; SipHash would
/// cost more than the rest of a decision.
#[derive(Debug, Clone, Copy)]
struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    fn random() -> Self {
        Self {
            seed: rand::random(),
        }
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash { state: self.seed }
    }
}

/// The state of one [`KeyHasher`] hash.
#[derive(Debug)]
struct KeyHash {
    state: u64,
}

impl Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = (self.state ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
    }

    fn write_usize(&mut self, _length: usize) {
        // The length prefix of a fixed-size key says nothing.
    }

    fn finish(&self) -> u64 {
        let state = self.state ^ (self.state >> 32);
        state.wrapping_mul(0xD6E8_FEB8_6659_FD93)
    }
}

impl std::fmt::Debug for InProcessLimiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InProcessLimiter")
            .field("shards", &self.shards.len())
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// One key's state in a shard's recency list.
#[derive(Debug, Clone, Copy)]
struct Node {
    key: Pseudonym,
    tat: u64,
    /// Towards the most recently used end.
    newer: u32,
    /// Towards the least recently used end.
    older: u32,
}

/// A part of the store: its keys, in recency order.
#[derive(Debug)]
struct Shard {
    index: HashMap<Pseudonym, u32, KeyHasher>,
    nodes: Vec<Node>,
    /// Nodes no longer in use.
    free: Vec<u32>,
    /// Most recently used.
    newest: u32,
    /// Least recently used: evicted first.
    oldest: u32,
    capacity: usize,
}

impl Shard {
    fn new(capacity: usize, hasher: KeyHasher) -> Self {
        Self {
            index: HashMap::with_hasher(hasher),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity,
        }
    }

    fn unlink(&mut self, at: u32) {
        let Node { newer, older, .. } = self.nodes[at as usize];
        match newer {
            NIL => self.newest = older,
            newer => self.nodes[newer as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            older => self.nodes[older as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, at: u32) {
        let node = &mut self.nodes[at as usize];
        node.newer = NIL;
        node.older = self.newest;
        match self.newest {
            NIL => self.oldest = at,
            newest => self.nodes[newest as usize].newer = at,
        }
        self.newest = at;
    }

    /// Marks the node `at` as the most recently used.
    fn touch(&mut self, at: u32) {
        if self.newest != at {
            self.unlink(at);
            self.push_newest(at);
        }
    }

    /// Stores `tat` for a new `key`, evicting the least recently used key when the shard is full.
    fn insert(&mut self, key: Pseudonym, tat: u64) {
        let node = Node {
            key,
            tat,
            newer: NIL,
            older: NIL,
        };
        let at = if self.index.len() >= self.capacity && self.oldest != NIL {
            let oldest = self.oldest;
            self.unlink(oldest);
            self.index.remove(&self.nodes[oldest as usize].key);
            self.nodes[oldest as usize] = node;
            oldest
        } else if let Some(free) = self.free.pop() {
            self.nodes[free as usize] = node;
            free
        } else {
            // The capacity is far below u32::MAX (the cap is a `usize` of keys per shard, and a
            // node costs 40 bytes).
            let at = u32::try_from(self.nodes.len()).unwrap_or(NIL - 1);
            self.nodes.push(node);
            at
        };
        self.push_newest(at);
        self.index.insert(key, at);
    }

    /// Drops every key whose TAT is at or before `now` (a full bucket), and gives memory back when
    /// most of it is unused.
    fn sweep(&mut self, now: u64) -> usize {
        let mut at = self.oldest;
        while at != NIL {
            let node = self.nodes[at as usize];
            if node.tat <= now {
                self.unlink(at);
                self.index.remove(&node.key);
                self.free.push(at);
            }
            at = node.newer;
        }
        if self.index.is_empty() {
            self.nodes = Vec::new();
            self.free = Vec::new();
            self.index.shrink_to_fit();
        } else if self.free.len() > self.nodes.len() / 2 {
            // Compact: rebuild in recency order, oldest first.
            let mut kept = Vec::with_capacity(self.index.len());
            let mut at = self.oldest;
            while at != NIL {
                kept.push(self.nodes[at as usize]);
                at = self.nodes[at as usize].newer;
            }
            self.nodes.clear();
            self.free.clear();
            self.index.clear();
            self.newest = NIL;
            self.oldest = NIL;
            for node in kept {
                self.insert(node.key, node.tat);
            }
            self.nodes.shrink_to_fit();
            self.index.shrink_to_fit();
        }
        self.index.len()
    }
}

impl InProcessLimiter {
    /// A limiter of `spec` holding at most `max_keys` keys, reading time from `clock`.
    pub fn new(spec: &LimitSpec, max_keys: usize, clock: SharedClock) -> Result<Self, ConfigError> {
        spec.validate("limit")?;
        Ok(Self::from_gcra(Gcra::from_spec(spec, 1), max_keys, clock))
    }

    /// A limiter of `spec` on the real clock ([`FastClock`], `docs/decisions/0053`).
    pub fn with_real_clock(spec: &LimitSpec, max_keys: usize) -> Result<Self, ConfigError> {
        Self::new(spec, max_keys, FastClock::new().shared())
    }

    pub(crate) fn from_gcra(gcra: Gcra, max_keys: usize, clock: SharedClock) -> Self {
        let max_keys = max_keys.max(1);
        let shards = (max_keys / KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        // Every shard holds its share; together exactly `max_keys`.
        let (base, extra) = (max_keys / shards, max_keys % shards);
        let hasher = KeyHasher::random();
        Self {
            gcra: gcra.in_nanos(),
            shards: (0..shards)
                .map(|index| Mutex::new(Shard::new(base + usize::from(index < extra), hasher)))
                .collect(),
            hasher,
            clock,
        }
    }

    #[inline]
    fn shard(&self, key: &Pseudonym) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(key);
        // The high bits: the map inside the shard uses its own hasher.
        let index = usize::try_from(hash >> 32).unwrap_or(0) % self.shards.len();
        &self.shards[index]
    }

    /// Decides one request for `key` now, consuming from its bucket when it passes.
    #[inline]
    #[must_use]
    pub fn check_key(&self, key: &Pseudonym) -> LocalDecision {
        let step = self.consume(key, local_now(self.clock.now()));
        LocalDecision {
            allowed: step.allowed,
            remaining: step.remaining,
            reset_after: Duration::from_nanos(step.reset),
            retry_after: Duration::from_nanos(step.retry),
        }
    }

    /// Keys held now (at most the `max_keys` the limiter was made with).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().index.len())
            .sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key whose bucket is full again (indistinguishable from a fresh key, as governor's
    /// `retain_recent` does), gives memory back, and returns the keys left.
    // Called for its effect; the count it returns is a convenience.
    #[allow(clippy::must_use_candidate)]
    pub fn sweep(&self) -> usize {
        self.sweep_at(local_now(self.clock.now()))
    }

    pub(crate) fn sweep_at(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().sweep(now))
            .sum()
    }

    /// Decides and, when allowed, consumes one cell at `now` (nanoseconds, see [`local_now`]). The
    /// key becomes the most recently used of its shard either way.
    #[inline]
    pub(crate) fn consume(&self, key: &Pseudonym, now: u64) -> Step {
        let mut shard = self.shard(key).lock();
        match shard.index.get(key).copied() {
            Some(at) => {
                let step = self.gcra.step(Some(shard.nodes[at as usize].tat), now);
                if step.allowed {
                    shard.nodes[at as usize].tat = step.new_tat;
                }
                shard.touch(at);
                step
            }
            None => {
                let step = self.gcra.step(None, now);
                if step.allowed {
                    shard.insert(*key, step.new_tat);
                }
                step
            }
        }
    }

    /// What a request of `key` at `now` would get, without consuming, inserting or touching.
    pub(crate) fn peek(&self, key: &Pseudonym, now: u64) -> Step {
        let shard = self.shard(key).lock();
        let stored = shard.index.get(key).map(|at| shard.nodes[*at as usize].tat);
        self.gcra.step(stored, now)
    }

    /// Starts `key` (when the store does not hold it yet) with `remaining` requests that would pass
    /// at `at`: time since then has refilled it as usual.
    pub(crate) fn seed(&self, key: &Pseudonym, remaining: u32, at: u64) {
        // A backlog of `tolerance` lets one request through; each emission interval less, one more.
        let backlog = (self.gcra.tolerance + self.gcra.emission)
            .saturating_sub(u64::from(remaining).saturating_mul(self.gcra.emission));
        let mut shard = self.shard(key).lock();
        if !shard.index.contains_key(key) {
            shard.insert(*key, at.saturating_add(backlog).max(1));
        }
    }

    /// Gives back the cell an allowed [`InProcessLimiter::consume`] took (another limit of the same
    /// request denied it). The bucket ends where it would be without that request, or at `now`
    /// when it was full, which decides the same.
    pub(crate) fn refund(&self, key: &Pseudonym) {
        let emission = self.gcra.emission;
        let mut shard = self.shard(key).lock();
        if let Some(at) = shard.index.get(key).copied() {
            let node = &mut shard.nodes[at as usize];
            node.tat = node.tat.saturating_sub(emission).max(1);
        }
    }
}
