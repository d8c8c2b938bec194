//! `mainstay-health` checks of the store (feature `health`): the object store (`object_store`,
//! non-critical), the WAL (`storage-wal`, critical) and the writer's claim on the object-store
//! prefix (`storage-writer`, critical).

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
    /// A check named `object-store` for `store`.
    #[must_use]
    pub fn new(store: &Store) -> Self {
        Self {
            shared: store.downgrade(),
            name: "object-store".to_owned(),
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

/// Checks that the WAL accepts writes. Critical: after a failed write or fsync the WAL refuses
/// every write until the store is reopened (a failed fsync cannot be retried safely), so the
/// instance must leave the load balancer. Unhealthy with the reason from
/// [`Store::wal_failure`]; sets `storage_wal_failed` when it runs. Degraded while damaged WAL
/// stretches skipped at open are not acknowledged ([`Store::wal_damage`]).
#[derive(Debug)]
pub struct WalCheck {
    shared: Weak<Shared>,
    name: String,
}

impl WalCheck {
    /// A check named `storage-wal` for `store`.
    #[must_use]
    pub fn new(store: &Store) -> Self {
        Self {
            shared: store.downgrade(),
            name: "storage-wal".to_owned(),
        }
    }
}

#[async_trait]
impl Check for WalCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn criticality(&self) -> Criticality {
        Criticality::Critical
    }

    async fn check(&self) -> CheckOutcome {
        let Some(shared) = self.shared.upgrade() else {
            return CheckOutcome::unhealthy("the store is closed");
        };
        let failure = shared.wal.failure();
        shared
            .instruments
            .wal_failed
            .set(i64::from(failure.is_some()));
        let damage = shared.wal_damage.lock().len();
        match failure {
            Some(reason) => CheckOutcome::unhealthy(format!(
                "the wal refuses writes: {reason}; restart the instance to recover from what reached the disk"
            )),
            None if damage > 0 => CheckOutcome::degraded(format!(
                "{damage} damaged wal stretches were skipped at open and their records lost (storage.wal_recovery = \"skip_corrupt\"); acknowledge after checking data_dir/corrupt/"
            ))
            .with_detail("damaged_stretches", damage),
            None => CheckOutcome::healthy(),
        }
    }
}

/// Checks that this store is still the writer of its object-store prefix. Critical: once
/// another writer committed a newer manifest, this store refuses writes (clients must go to the
/// current writer), so the instance must leave the load balancer. Unhealthy "fenced by another
/// writer (manifest v…)" from [`Store::fenced`]; sets `storage_fenced` when it runs.
#[derive(Debug)]
pub struct WriterCheck {
    shared: Weak<Shared>,
    name: String,
}

impl WriterCheck {
    /// A check named `storage-writer` for `store`.
    #[must_use]
    pub fn new(store: &Store) -> Self {
        Self {
            shared: store.downgrade(),
            name: "storage-writer".to_owned(),
        }
    }
}

#[async_trait]
impl Check for WriterCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn criticality(&self) -> Criticality {
        Criticality::Critical
    }

    async fn check(&self) -> CheckOutcome {
        let Some(shared) = self.shared.upgrade() else {
            return CheckOutcome::unhealthy("the store is closed");
        };
        let fenced = shared.fenced.lock().clone();
        shared.instruments.fenced.set(i64::from(fenced.is_some()));
        match fenced {
            Some(fenced) => CheckOutcome::unhealthy(format!(
                "fenced by another writer (manifest v{}); writes are refused: send them to the current writer and hand this data directory over (runbook storage-handover)",
                fenced.version
            ))
            .with_detail("manifest_version", fenced.version),
            None => CheckOutcome::healthy(),
        }
    }
}
