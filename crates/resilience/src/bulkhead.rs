//! A bulkhead: at most `max_concurrent` calls at once, at most `max_queue` callers waiting, each for
//! at most `max_wait`; everyone else is rejected at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ConfigError;
use crate::metrics::{BulkheadLabels, ResilienceMetrics};

/// The rules of a [`Bulkhead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed at once. Default 10.
    pub max_concurrent: usize,
    /// Callers allowed to wait for a slot; more are rejected at once. Default 10.
    pub max_queue: usize,
    /// How long a caller waits for a slot before it is rejected. Default 1 s; none waits forever.
    #[serde(with = "humantime_serde")]
    pub max_wait: Option<Duration>,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 10,
            max_queue: 10,
            max_wait: Some(Duration::from_secs(1)),
        }
    }
}

impl BulkheadConfig {
    /// Checks every field; the error names the first key that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 || self.max_concurrent > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "max_concurrent",
                self.max_concurrent,
                "at least 1 and at most tokio's Semaphore::MAX_PERMITS",
            ));
        }
        Ok(())
    }
}

/// A call refused by a bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadError {
    /// Every slot and every queue place was taken.
    #[error(
        "bulkhead full: {max_concurrent} calls in flight and {max_queue} waiting, try again later"
    )]
    Full {
        /// The concurrency limit.
        max_concurrent: usize,
        /// The queue limit.
        max_queue: usize,
    },
    /// The caller waited its longest without getting a slot.
    #[error("bulkhead full: no slot freed within {waited:?}, try again later")]
    WaitTimedOut {
        /// How long the caller waited.
        waited: Duration,
    },
}

#[derive(Debug)]
struct Inner {
    config: BulkheadConfig,
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
    rejections: Counter,
}

/// A bulkhead. Cheap to clone: clones share the same slots.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

/// A slot in a bulkhead, given back when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// A bulkhead named `name` (its metrics label) reporting into `metrics`, if given.
    pub fn new(
        name: &str,
        config: BulkheadConfig,
        metrics: Option<&ResilienceMetrics>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let rejections = match metrics {
            Some(metrics) => metrics
                .bulkhead_rejections
                .get_or_create(&BulkheadLabels {
                    bulkhead: name.to_owned(),
                })
                .clone(),
            None => Counter::default(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
                config,
                waiting: AtomicUsize::new(0),
                rejections,
            }),
        })
    }

    /// Calls in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.inner.config.max_concurrent - self.inner.semaphore.available_permits()
    }

    /// Callers waiting now.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Takes a slot: at once if one is free, after a bounded wait in the queue otherwise.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadError> {
        let inner = &*self.inner;
        if let Ok(permit) = Arc::clone(&inner.semaphore).try_acquire_owned() {
            return Ok(BulkheadPermit { _permit: permit });
        }
        let config = &inner.config;
        let full = BulkheadError::Full {
            max_concurrent: config.max_concurrent,
            max_queue: config.max_queue,
        };
        // The guard leaves the queue however this future ends, including when it is dropped.
        let queued = QueuePlace(&inner.waiting);
        if inner.waiting.fetch_add(1, Ordering::AcqRel) >= config.max_queue {
            drop(queued);
            inner.rejections.inc();
            return Err(full);
        }
        let wait = Arc::clone(&inner.semaphore).acquire_owned();
        let result = match config.max_wait {
            Some(max_wait) => match tokio::time::timeout(max_wait, wait).await {
                Ok(acquired) => acquired.map_err(|_| full),
                Err(_) => Err(BulkheadError::WaitTimedOut { waited: max_wait }),
            },
            None => wait.await.map_err(|_| full),
        };
        drop(queued);
        match result {
            Ok(permit) => Ok(BulkheadPermit { _permit: permit }),
            Err(error) => {
                inner.rejections.inc();
                Err(error)
            }
        }
    }

    /// Runs `operation` in a slot.
    pub async fn run<F: Future>(&self, operation: F) -> Result<F::Output, BulkheadError> {
        let _permit = self.acquire().await?;
        Ok(operation.await)
    }
}

/// A place in the bulkhead's queue, left when dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
