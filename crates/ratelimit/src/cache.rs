//! The local over-limit cache: a Redis key known to be denied until time T is denied locally until
//! T, without a round trip (as lyft/ratelimit does), so abusive traffic costs Redis nothing.
//!
//! The cache is exact, never stale in the permissive direction: Redis consumes nothing from a
//! denied key, and other instances can only push its TAT later, so the key stays denied at least
//! until the time Redis gave. Entries are sharded by key hash; a full shard first drops its expired
//! entries and otherwise skips the insertion (the next request of that key asks Redis, as without a
//! cache).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// One cached denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Denied {
    /// Local time (nanoseconds, see `local_now`) until which the key is denied.
    pub(crate) until: u64,
    /// The policy (index) of the key.
    pub(crate) policy: usize,
}

#[derive(Debug)]
pub(crate) struct OverLimitCache {
    shards: Vec<Mutex<HashMap<String, Denied>>>,
    per_shard: usize,
    hasher: RandomState,
}

/// What Redis last said an organisation's quota had left, so that the fallback continues from it
/// instead of a full bucket. Sharded like the over-limit cache; a full shard skips new keys.
#[derive(Debug)]
pub(crate) struct QuotaMemory {
    shards: Vec<Mutex<HashMap<crate::identity::Pseudonym, Left>>>,
    per_shard: usize,
    hasher: RandomState,
}

/// One quota's last known state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Left {
    /// The quota's policy (index).
    pub(crate) policy: usize,
    /// Requests it let through at `at`.
    pub(crate) remaining: u32,
    /// Local time (nanoseconds, see `local_now`) of the Redis answer.
    pub(crate) at: u64,
}

impl QuotaMemory {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(
        &self,
        key: &crate::identity::Pseudonym,
    ) -> &Mutex<HashMap<crate::identity::Pseudonym, Left>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    pub(crate) fn get(&self, key: &crate::identity::Pseudonym) -> Option<Left> {
        self.shard(key).lock().get(key).copied()
    }

    pub(crate) fn insert(&self, key: crate::identity::Pseudonym, left: Left) {
        let mut shard = self.shard(&key).lock();
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            return;
        }
        shard.insert(key, left);
    }
}

impl OverLimitCache {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Denied>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The denial of `key` still in force at `now`.
    pub(crate) fn get(&self, key: &str, now: u64) -> Option<Denied> {
        let shard = self.shard(key).lock();
        shard.get(key).copied().filter(|denied| denied.until > now)
    }

    /// Remembers that `key` is denied until `denied.until`.
    pub(crate) fn insert(&self, key: &str, denied: Denied, now: u64) {
        let mut shard = self.shard(key).lock();
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.retain(|_, entry| entry.until > now);
            if shard.len() >= self.per_shard {
                return;
            }
        }
        shard.insert(key.to_owned(), denied);
    }

    /// Drops expired entries; returns the entries left.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock();
                shard.retain(|_, entry| entry.until > now);
                shard.shrink_to_fit();
                shard.len()
            })
            .sum()
    }
}
