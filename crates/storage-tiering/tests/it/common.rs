//! Shared helpers: configurations in temp dirs and a fault-injecting object store.

use std::fmt;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::time::Duration;

use mainstay_resilience::BreakerConfig;
use mainstay_storage_tiering::{ListQuery, Page, Store, StoreConfig};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

/// A configuration whose data directory is `dir/data`, with small memtables and blocks.
pub(crate) fn config(dir: &FsPath) -> StoreConfig {
    let mut config = StoreConfig {
        data_dir: dir.join("data"),
        memtable_bytes: 4 * 1024,
        block_bytes: 1024,
        ..StoreConfig::default()
    };
    config.compaction.enabled = false;
    config
}

/// [`config`] with millisecond upload backoff and breaker timings, for tests over sockets: a
/// segment gets at most `max_attempts` attempts of at most `attempt_timeout` each.
pub(crate) fn fast_uploads(
    dir: &FsPath,
    max_attempts: u32,
    attempt_timeout: Duration,
) -> StoreConfig {
    let mut cfg = config(dir);
    cfg.upload.breaker = BreakerConfig {
        half_open_successes: 2,
        minimum_calls: 3,
        ..BreakerConfig::failure_rate(0.5, Duration::from_millis(500), Duration::from_millis(200))
    };
    cfg.upload.base_delay = Duration::from_millis(10);
    cfg.upload.max_delay = Duration::from_millis(50);
    cfg.upload.breaker_poll_interval = Duration::from_millis(20);
    cfg.upload.attempt_timeout = attempt_timeout;
    cfg.upload.max_attempts = max_attempts;
    cfg
}

/// `storage_upload_attempts_total` for one `outcome`.
pub(crate) fn upload_attempts(registry: &Registry, outcome: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    let needle = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("storage_upload_attempts_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Opens a store on `object_store` under `prefix`.
pub(crate) async fn open_on(
    config: StoreConfig,
    object_store: Arc<dyn ObjectStore>,
    prefix: &str,
) -> Store {
    Store::builder(config)
        .object_store(object_store, prefix)
        .open()
        .await
        .expect("the store opens")
}

/// Puts records `k00`.. with [`value`]s into `collection`, then flushes the memtables.
pub(crate) async fn put_and_flush(store: &Store, collection: &str, records: usize) {
    for i in 0..records {
        store
            .put(collection, &format!("k{i:02}"), value(i))
            .await
            .expect("an acknowledged put");
    }
    store.flush().await.expect("a flush");
}

/// Up to 1,000 records of `collection`, in id order.
pub(crate) async fn list_all(store: &Store, collection: &str) -> Page {
    store
        .list(
            collection,
            &ListQuery {
                limit: Some(1000),
                ..ListQuery::default()
            },
        )
        .await
        .expect("a listing")
}

pub(crate) fn value(i: usize) -> Bytes {
    Bytes::from(format!("value-{i:06}-{}", "x".repeat(i % 50)))
}

/// What the fault store does with calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Healthy = 0,
    /// Every call fails like a 503 (`Generic`).
    Unavailable = 1,
    /// Every write fails like a 403 (`PermissionDenied`).
    Forbidden = 2,
    /// Segment puts land in the store but the caller sees a 503 (an ambiguous failure).
    Ambiguous = 3,
    /// Every call waits until the mode changes, then behaves as the new mode says (the store's
    /// `upload.attempt_timeout` cuts uploads short).
    Hang = 4,
    /// Every call is delayed by `slow_delay` (tokio time), then served.
    Slow = 5,
}

/// Wraps a real store (`InMemory`) and injects failures; counts segment upload calls.
#[derive(Debug)]
pub(crate) struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    mode: Arc<AtomicU8>,
    /// Woken at every mode change, for calls held by [`Mode::Hang`].
    changed: Arc<Notify>,
    /// The delay of every call in [`Mode::Slow`], in microseconds (default 3 ms).
    pub(crate) slow_delay_micros: Arc<AtomicU64>,
    pub(crate) segment_puts: AtomicU64,
    pub(crate) failed_puts: AtomicU64,
    /// Listings fail like a 503 (besides `mode`).
    pub(crate) fail_lists: AtomicBool,
    /// Deletes fail like a 503 (besides `mode`).
    pub(crate) fail_deletes: AtomicBool,
    /// Manifest puts (commits) fail like a 503 while segment puts pass (besides `mode`).
    pub(crate) fail_manifest_puts: AtomicBool,
    /// The next this many manifest puts land in the store but the caller sees a 503.
    pub(crate) ambiguous_manifest_puts: AtomicU64,
    /// Segment puts wait (in flight) while this is set, until it is cleared and `resume` told.
    pub(crate) hold_segment_puts: AtomicBool,
    pub(crate) resume: tokio::sync::Notify,
    /// `HEAD`s of a backup's `backup.json`.
    pub(crate) backup_manifest_heads: AtomicU64,
}

impl FaultStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            mode: Arc::new(AtomicU8::new(0)),
            changed: Arc::new(Notify::new()),
            slow_delay_micros: Arc::new(AtomicU64::new(3_000)),
            segment_puts: AtomicU64::new(0),
            failed_puts: AtomicU64::new(0),
            fail_lists: AtomicBool::new(false),
            fail_deletes: AtomicBool::new(false),
            fail_manifest_puts: AtomicBool::new(false),
            ambiguous_manifest_puts: AtomicU64::new(0),
            hold_segment_puts: AtomicBool::new(false),
            resume: tokio::sync::Notify::new(),
            backup_manifest_heads: AtomicU64::new(0),
        })
    }

    /// Lets held segment puts go on.
    pub(crate) fn release_segment_puts(&self) {
        self.hold_segment_puts.store(false, Ordering::SeqCst);
        self.resume.notify_waiters();
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// What holds a call back in [`Mode::Hang`] and [`Mode::Slow`]; owned, for streams.
    fn gate(&self) -> Gate {
        Gate {
            mode: Arc::clone(&self.mode),
            changed: Arc::clone(&self.changed),
            slow_delay_micros: Arc::clone(&self.slow_delay_micros),
        }
    }

    fn unavailable() -> object_store::Error {
        object_store::Error::Generic {
            store: "fault",
            source: "503 service unavailable".into(),
        }
    }

    fn fault(&self, location: &Path, write: bool) -> Option<object_store::Error> {
        match self.mode.load(Ordering::SeqCst) {
            1 => Some(object_store::Error::Generic {
                store: "fault",
                source: "503 service unavailable".into(),
            }),
            2 if write => Some(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "403 forbidden".into(),
            }),
            _ => None,
        }
    }
}

/// Holds a call while the mode is [`Mode::Hang`] and delays it in [`Mode::Slow`].
#[derive(Debug, Clone)]
struct Gate {
    mode: Arc<AtomicU8>,
    changed: Arc<Notify>,
    slow_delay_micros: Arc<AtomicU64>,
}

impl Gate {
    async fn pass(&self) {
        loop {
            // Registered before the mode is read, so that a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.mode.load(Ordering::SeqCst) {
                4 => changed.await,
                5 => {
                    let micros = self.slow_delay_micros.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                    return;
                }
                _ => return,
            }
        }
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.gate().pass().await;
        let segment = location.as_ref().contains("segments/");
        if segment {
            self.segment_puts.fetch_add(1, Ordering::SeqCst);
            loop {
                let resumed = self.resume.notified();
                if !self.hold_segment_puts.load(Ordering::SeqCst) {
                    break;
                }
                resumed.await;
            }
        }
        if let Some(error) = self.fault(location, true) {
            if segment {
                self.failed_puts.fetch_add(1, Ordering::SeqCst);
            }
            return Err(error);
        }
        if location.as_ref().contains("manifest/") && self.fail_manifest_puts.load(Ordering::SeqCst)
        {
            return Err(Self::unavailable());
        }
        let result = self.inner.put_opts(location, payload, opts).await;
        if location.as_ref().contains("manifest/")
            && result.is_ok()
            && self
                .ambiguous_manifest_puts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(Self::unavailable());
        }
        if segment && self.mode.load(Ordering::SeqCst) == Mode::Ambiguous as u8 {
            self.failed_puts.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "fault",
                source: "connection reset after the request was sent".into(),
            });
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.gate().pass().await;
        if let Some(error) = self.fault(location, true) {
            return Err(error);
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gate().pass().await;
        if options.head && location.as_ref().ends_with("backup.json") {
            self.backup_manifest_heads.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(error) = self.fault(location, false) {
            return Err(error);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.gate().pass().await;
        if let Some(error) = self.fault(location, false) {
            return Err(error);
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        use futures::StreamExt as _;
        if self.fail_deletes.load(Ordering::SeqCst) {
            return locations.map(|_| Err(Self::unavailable())).boxed();
        }
        let (gate, inner) = (self.gate(), Arc::clone(&self.inner));
        futures::stream::once(async move {
            gate.pass().await;
            inner.delete_stream(locations)
        })
        .flatten()
        .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        use futures::StreamExt as _;
        if self.fail_lists.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(Self::unavailable()) }).boxed();
        }
        let (gate, inner) = (self.gate(), Arc::clone(&self.inner));
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            gate.pass().await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.gate().pass().await;
        if let Some(error) = self.fault(&Path::from("list"), false) {
            return Err(error);
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.gate().pass().await;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Counts the objects under `prefix`.
pub(crate) async fn count_objects(store: &dyn ObjectStore, prefix: &str) -> usize {
    use futures::TryStreamExt as _;
    let prefix = Path::from(prefix);
    store
        .list(Some(&prefix))
        .try_collect::<Vec<_>>()
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}
