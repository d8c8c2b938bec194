//! A registry of circuit breakers by name, for admin endpoints: list, reset, force open, disable.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::breaker::{BreakerSnapshot, CircuitBreaker};

/// A breaker was registered under a name already taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a circuit breaker named {name:?} is already registered: give each breaker a unique name")]
pub struct DuplicateBreaker {
    /// The name.
    pub name: String,
}

/// No breaker is registered under a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no circuit breaker named {name:?}: list the registered breakers for their names")]
pub struct UnknownBreaker {
    /// The name asked for.
    pub name: String,
}

/// Breakers by name. Cheap to clone: clones share the same set, so the app hands one to each
/// component that creates breakers and one to its admin API.
#[derive(Debug, Clone, Default)]
pub struct BreakerRegistry {
    breakers: Arc<RwLock<BTreeMap<String, CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `breaker` under its name.
    pub fn register(&self, breaker: &CircuitBreaker) -> Result<(), DuplicateBreaker> {
        let mut breakers = self.breakers.write();
        if breakers.contains_key(breaker.name()) {
            return Err(DuplicateBreaker {
                name: breaker.name().to_owned(),
            });
        }
        breakers.insert(breaker.name().to_owned(), breaker.clone());
        Ok(())
    }

    /// Removes the breaker named `name`, returning it.
    #[must_use]
    pub fn remove(&self, name: &str) -> Option<CircuitBreaker> {
        self.breakers.write().remove(name)
    }

    /// The breaker named `name`.
    pub fn get(&self, name: &str) -> Result<CircuitBreaker, UnknownBreaker> {
        self.breakers
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownBreaker {
                name: name.to_owned(),
            })
    }

    /// A snapshot of every breaker, sorted by name.
    #[must_use]
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        self.breakers
            .read()
            .values()
            .map(CircuitBreaker::snapshot)
            .collect()
    }

    /// Resets the breaker named `name` to closed; returns its snapshot afterwards.
    pub fn reset(&self, name: &str) -> Result<BreakerSnapshot, UnknownBreaker> {
        let breaker = self.get(name)?;
        breaker.reset();
        Ok(breaker.snapshot())
    }

    /// Forces the breaker named `name` open; returns its snapshot afterwards.
    pub fn force_open(&self, name: &str) -> Result<BreakerSnapshot, UnknownBreaker> {
        let breaker = self.get(name)?;
        breaker.force_open();
        Ok(breaker.snapshot())
    }

    /// Disables the breaker named `name`; returns its snapshot afterwards.
    pub fn disable(&self, name: &str) -> Result<BreakerSnapshot, UnknownBreaker> {
        let breaker = self.get(name)?;
        breaker.disable();
        Ok(breaker.snapshot())
    }
}
