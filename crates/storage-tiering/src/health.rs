//! A `mainstay-health` check for the object store (feature `health`).

use std::sync::Weak;

use async_trait::async_trait;
use mainstay_health::{Check, CheckOutcome, Criticality};
use mainstay_resilience::BreakerState;

use crate::store::{Shared, Store};

/// Checks the store's object store with one listing round trip, and reports the upload breaker
/// and backlog. Non-critical: writes keep succeeding locally while the store is down.
#[derive(Debug)]
pub struct ObjectStoreCheck {
    shared: Weak<Shared>,
    name: String,
}

impl ObjectStoreCheck {
    /// A check named `object_store` for `store`.
    #[must_use]
    pub fn new(store: &Store) -> Self {
        Self {
            shared: store.downgrade(),
            name: "object_store".to_owned(),
        }
    }
}

#[async_trait]
impl Check for ObjectStoreCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn criticality(&self) -> Criticality {
        Criticality::NonCritical
    }

    async fn check(&self) -> CheckOutcome {
        let Some(shared) = self.shared.upgrade() else {
            return CheckOutcome::unhealthy("the store is closed");
        };
        let Some(remote) = shared.remote.clone() else {
            return CheckOutcome::healthy().with_detail("configured", false);
        };
        let backlog = shared.instruments.backlog_bytes.get();
        let breaker = shared.breaker.state();
        let claimed = shared.is_claimed();
        drop(shared);
        let outcome = match remote.ping().await {
            Err(error) => CheckOutcome::unhealthy(format!("object store unreachable: {error}")),
            Ok(()) if !claimed => CheckOutcome::degraded(
                "started during an object-store outage; claiming the prefix before uploads resume",
            ),
            Ok(()) if matches!(breaker, BreakerState::Open | BreakerState::ForcedOpen) => {
                CheckOutcome::degraded("the upload circuit breaker is open")
            }
            Ok(()) => CheckOutcome::healthy(),
        };
        outcome
            .with_detail("backlog_bytes", backlog)
            .with_detail("upload_breaker", breaker.as_str())
            .with_detail("prefix_claimed", claimed)
    }
}
