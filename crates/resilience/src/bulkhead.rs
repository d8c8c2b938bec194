//! A bulkhead: at most `max_concurrent` calls at once, at most `max_queue` callers waiting, each for
//! at most `max_wait`; everyone else is rejected at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::ConfigError;
use crate::metrics::{BulkheadLabels, ResilienceMetrics, wait_histogram};

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
#[non_exhaustive]
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
    in_flight_gauge: Gauge,
    waiting_gauge: Gauge,
    wait_seconds: Histogram,
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
    in_flight: Gauge,
}

impl BulkheadPermit {
    fn new(permit: OwnedSemaphorePermit, in_flight: &Gauge) -> Self {
        in_flight.inc();
        Self {
            _permit: permit,
            in_flight: in_flight.clone(),
        }
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl Bulkhead {
    /// A bulkhead named `name` (its metrics label) reporting into `metrics`, if given.
    pub fn new(
        name: &str,
        config: BulkheadConfig,
        metrics: Option<ResilienceMetrics>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let labels = BulkheadLabels {
            bulkhead: name.to_owned(),
        };
        let (rejections, in_flight_gauge, waiting_gauge, max_gauge, wait_seconds) = match metrics {
            Some(metrics) => (
                metrics.bulkhead_rejections.get_or_create(&labels).clone(),
                metrics.bulkhead_in_flight.get_or_create(&labels).clone(),
                metrics.bulkhead_waiting.get_or_create(&labels).clone(),
                metrics
                    .bulkhead_max_concurrent
                    .get_or_create(&labels)
                    .clone(),
                metrics.bulkhead_wait_seconds.get_or_create(&labels).clone(),
            ),
            None => (
                Counter::default(),
                Gauge::default(),
                Gauge::default(),
                Gauge::default(),
                wait_histogram(),
            ),
        };
        max_gauge.set(i64::try_from(config.max_concurrent).unwrap_or(i64::MAX));
        Ok(Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
                config,
                waiting: AtomicUsize::new(0),
                rejections,
                in_flight_gauge,
                waiting_gauge,
                wait_seconds,
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
            inner.wait_seconds.observe(0.0);
            return Ok(BulkheadPermit::new(permit, &inner.in_flight_gauge));
        }
        let config = &inner.config;
        let full = BulkheadError::Full {
            max_concurrent: config.max_concurrent,
            max_queue: config.max_queue,
        };
        // The guard leaves the queue however this future ends, including when it is dropped.
        let queued = QueuePlace::enter(&inner.waiting, &inner.waiting_gauge);
        if queued.ahead >= config.max_queue {
            drop(queued);
            inner.rejections.inc();
            return Err(full);
        }
        let started = Instant::now();
        let wait = Arc::clone(&inner.semaphore).acquire_owned();
        let result = match config.max_wait {
            Some(max_wait) => match tokio::time::timeout(max_wait, wait).await {
                Ok(acquired) => acquired.map_err(|_| full),
                Err(_) => Err(BulkheadError::WaitTimedOut { waited: max_wait }),
            },
            None => wait.await.map_err(|_| full),
        };
        drop(queued);
        inner.wait_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(permit) => Ok(BulkheadPermit::new(permit, &inner.in_flight_gauge)),
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
struct QueuePlace<'a> {
    waiting: &'a AtomicUsize,
    gauge: &'a Gauge,
    /// Callers that were in the queue before this one.
    ahead: usize,
}

impl<'a> QueuePlace<'a> {
    fn enter(waiting: &'a AtomicUsize, gauge: &'a Gauge) -> Self {
        let ahead = waiting.fetch_add(1, Ordering::AcqRel);
        gauge.inc();
        Self {
            waiting,
            gauge,
            ahead,
        }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}
