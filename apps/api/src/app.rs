//! The application: shared state, the routes, and the layers every request passes through.
//!
//! From the outside in: request id (accepted or made, echoed) → trace span and access log →
//! problem+json for every error → the router, whose routes each run inside the HTTP metrics layer
//! (so the route template is known), the request timeout and the body limit.

use std::sync::Arc;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath};
use axum::http::StatusCode;
use mainstay_telemetry::http::{HttpMetrics, HttpMetricsLayer, RequestIdLayer, TraceLayer};
use prometheus_client::registry::Registry;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use mainstay_dlq::{CleanupTask, Dlq, DlqMetrics, OpenError};
use mainstay_health::{Criticality, HealthMetrics, HealthRegistry, ThresholdCheck, Thresholds};
use mainstay_ratelimit::health::RedisCheck;
use mainstay_ratelimit::layer::RateLimitLayer;
use mainstay_ratelimit::{CallerIdentity, FallbackMode, RateLimitMetrics, RateLimiter};
use mainstay_resilience::{BreakerRegistry, BreakerState, ResilienceMetrics};
use mainstay_storage_tiering::health::{ObjectStoreCheck, WalCheck, WriterCheck};
use mainstay_storage_tiering::keyring::{Keyring, KeyringMetrics, KeyringOpenError};
use mainstay_storage_tiering::{StorageMetrics, Store, StoreConfig};

use crate::auth::{Authenticator, Caller};
use crate::config::{Config, ConfigError, Tier};
use crate::routes::admin::AdminToken;
use crate::routes::{self, Routes};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The effective configuration.
    pub config: Arc<Config>,
    /// The metrics registry `/metrics` encodes.
    pub registry: Arc<Registry>,
    /// The admin token's digest, when the admin API is on.
    pub admin_token: Option<AdminToken>,
    /// Authentication of `/v1` callers.
    pub authenticator: Authenticator,
    /// The record store and what goes with it; `None` in the stateless mode
    /// (`storage.enabled = false`).
    pub storage: Option<Storage>,
    /// The health checks and probes.
    pub health: HealthRegistry,
    /// Every circuit breaker of the process, for the admin API.
    pub breakers: BreakerRegistry,
    /// Fenced and failed-WAL answers, their log lines and gauges.
    pub faults: Arc<crate::faults::Faults>,
    /// The keyring that seals record values, with `storage.encryption` on; `None` otherwise.
    /// Erasing an organisation calls its `destroy`.
    pub keyring: Option<Keyring>,
    /// The erasures of organisations and their ledger; `None` in the stateless mode.
    pub erasures: Option<crate::erasure::Erasures>,
}

/// The record store with its dead-letter queue and the state of the routes that write to it.
///
/// A handler of the records API takes it as an extractor; without a store (the stateless mode)
/// the extractor answers 404 problem+json of type `.../storage-disabled`, though those routes are
/// not mounted then in the first place.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The record store of the data API.
    pub store: Store,
    /// The dead-letter queue.
    pub dlq: Dlq,
    /// Batches answered recently, by idempotency key.
    pub idempotency: Arc<routes::collections::IdempotencyKeys>,
    /// The store's last LSN when it opened: records it holds with a higher one were written by
    /// this instance, which a handover never overwrites.
    pub takeover_lsn: u64,
    /// Record writes hold it shared; a handover batch holds it alone, so that no client write
    /// lands between the check of an id and its replay.
    pub write_gate: Arc<tokio::sync::RwLock<()>>,
}

impl axum::extract::FromRequestParts<AppState> for Storage {
    type Rejection = crate::problem::Problem;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.storage.clone().ok_or_else(storage_disabled)
    }
}

/// The problem a stateless instance answers for what needs the record store: 404 of type
/// `.../storage-disabled` (4xx: the resource does not exist on this instance, and retrying the
/// same instance will not change that).
#[must_use]
pub fn storage_disabled() -> crate::problem::Problem {
    crate::problem::Problem::typed(
        StatusCode::NOT_FOUND,
        "storage-disabled",
        "Storage is disabled",
        "this instance runs without the record store (`storage.enabled = false`, the stateless mode): the records API, the dead-letter queue and the store's admin routes are not served here; send this request to an instance with storage",
    )
}

/// The assembled application.
#[derive(Debug)]
pub struct App {
    /// The router with every layer, ready to serve.
    pub router: Router,
    /// The method and path of every route served.
    pub served: Vec<(&'static str, String)>,
    /// The health registry, which the server marks started and shutting down.
    pub health: HealthRegistry,
    /// Every circuit breaker of the process.
    pub breakers: BreakerRegistry,
    /// The rate limiter of the `/v1` routes.
    pub limiter: RateLimiter,
    /// The record store and its dead-letter queue; `None` in the stateless mode.
    pub storage: Option<Storage>,
    /// The keyring of `storage.encryption`, as [`AppState::keyring`].
    pub keyring: Option<Keyring>,
    /// The periodic TTL cleanup of the dead-letter queue; stops when dropped.
    pub dlq_cleanup: Option<CleanupTask>,
    /// Feeds the `dlq` and `circuit-breakers` threshold checks; stops when dropped.
    pub health_feeder: AbortOnDrop,
    /// Reads the backup root's status for the `backup_*` metrics (with `backup.url` and a
    /// store); stops when dropped.
    pub backup_status: Option<AbortOnDrop>,
    /// Finishes unfinished erasures before their deadline; stops when dropped.
    pub erasure_task: Option<AbortOnDrop>,
}

/// A background task that ends when its owner is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `task` on the runtime; it ends when the handle is dropped.
    pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }

    /// Owns `task`: it is aborted when this is dropped.
    #[must_use]
    pub fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is not acceptable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The dead-letter queue could not be opened (locked by another process, unreadable).
    #[error("could not open the dead-letter queue: {0}")]
    Dlq(#[from] OpenError),
    /// The record store could not be opened (locked, corrupt, object store unreadable or fenced).
    #[error("could not open the record store: {0}")]
    Store(#[from] mainstay_storage_tiering::OpenError),
    /// The keyring of `storage.encryption` could not be opened: its check object is damaged, or
    /// the key store is unavailable (a wrong master key is a [`BuildError::Config`]).
    #[error("could not open the keyring: {0}")]
    Keyring(KeyringOpenError),
    /// The data directory could not be prepared.
    #[error("could not prepare the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the application from a validated configuration.
///
/// # Errors
///
/// A health override names a check that does not exist, `redis.url` cannot make a pool, or the
/// dead-letter queue cannot be opened.
pub async fn build(config: Config) -> Result<App, BuildError> {
    if config.storage.enabled {
        tracing::info!(
            mode = "stateful",
            data_dir = %config.storage.data_dir.display(),
            "mode: stateful (storage.enabled = true): record store, records API and dead-letter queue on"
        );
    } else {
        tracing::info!(
            mode = "stateless",
            "mode: stateless (storage.enabled = false): no record store, records API or dead-letter queue; the storage.* and dlq.* keys are ignored"
        );
    }
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    mainstay_telemetry::process::register_process_collector(&mut registry);
    let breakers = BreakerRegistry::new();
    let resilience_metrics = ResilienceMetrics::register(&mut registry);
    let limiter = rate_limiter(&config, &mut registry, &resilience_metrics)?;
    breakers
        .register(limiter.breaker())
        .map_err(|error| ConfigError::Invalid(error.to_string()))?;
    // The sweeper ends by itself when the limiter is dropped.
    let _sweeper = limiter.spawn_sweeper();
    let health = health_registry(
        &config,
        &mut registry,
        limiter.uses_redis().then(|| limiter.clone()),
    )?;
    let (storage, dlq_cleanup, keyring) = if config.storage.enabled {
        let (storage, dlq_cleanup) = open_storage(
            &config,
            &mut registry,
            &resilience_metrics,
            &health,
            &breakers,
        )
        .await?;
        let keyring = open_keyring(&config, &mut registry).await?;
        (Some(storage), Some(dlq_cleanup), keyring)
    } else {
        (None, None, None)
    };
    let health_feeder = feed_threshold_checks(
        &config,
        &health,
        storage.as_ref().map(|storage| &storage.dlq),
        &breakers,
    )?;
    // Only now is every check registered, so `health.checks.<name>` may name any of them.
    health
        .validate_check_names()
        .map_err(|error| ConfigError::Invalid(format!("key `health.{}`: {error}", error.key())))?;
    // The `dlq_journal_failed` gauge belongs to the DLQ: without one it is not registered.
    let faults = Arc::new(if storage.is_some() {
        crate::faults::Faults::register(&mut registry)
    } else {
        crate::faults::Faults::default()
    });
    let authenticator = Authenticator::new(&config.auth, &limiter, &mut registry)?;
    // Backups are of the store: without one the `backup_*` families are not registered.
    let backup_status_metrics = storage
        .is_some()
        .then(|| crate::backup_status::BackupStatusMetrics::register(&mut registry));
    let backup_status = match (&backup_status_metrics, &config.backup.url) {
        (Some(metrics), Some(url)) => Some(crate::backup_status::spawn(
            url.clone(),
            config.backup.status_interval,
            metrics.clone(),
            std::sync::Arc::new(|url| Box::pin(crate::backup_status::read_root(url))),
        )),
        _ => None,
    };
    let erasures = match &storage {
        Some(_) => {
            let erasures = open_erasures(&config, &mut registry, keyring.clone()).await?;
            // The keys of erased organisations are refused from the first request on.
            authenticator.block_keys(erasures.blocked_keys());
            Some(erasures)
        }
        None => None,
    };

    let state = AppState {
        authenticator,
        admin_token: config.admin.token.as_deref().map(AdminToken::new),
        health: health.clone(),
        breakers: breakers.clone(),
        storage: storage.clone(),
        faults,
        keyring: keyring.clone(),
        erasures: erasures.clone(),
        registry: Arc::new(registry),
        config: Arc::new(config),
    };

    let mut routes = Routes::new()
        .merge(routes::health::routes())
        .merge(routes::metrics::routes())
        .merge(routes::openapi::routes());
    // Authentication runs first (the outer layer), so the limiter sees the caller.
    let limit_layer = rate_limit_layer(limiter.clone());
    // Without a store its routes are not served; their paths answer one clear problem instead of
    // a bare 404 (decision 0105).
    let with_storage = state.storage.is_some();
    let v1 = if with_storage {
        routes::v1::routes().merge(routes::collections::routes())
    } else {
        routes::v1::routes()
            .storage_disabled("/collections")
            .storage_disabled("/collections/{*rest}")
    };
    routes = routes.nest("/v1", v1, |router| {
        router
            .route_layer(limit_layer)
            .route_layer(axum::middleware::from_fn_with_state(
                state.authenticator.clone(),
                crate::auth::require_caller,
            ))
    });
    if state.admin_token.is_some() {
        let admin = routes::admin::routes()
            .merge(routes::health::admin_routes())
            .merge(routes::breakers::routes())
            .merge(routes::runtime_config::routes())
            .merge(routes::backups::routes());
        let admin = if with_storage {
            admin
                .merge(routes::dlq::routes())
                .merge(routes::collections::admin_routes())
                .merge(routes::handover::routes())
                .merge(routes::wal_damage::routes())
                .merge(routes::organisations::routes())
        } else {
            admin
                .storage_disabled("/dlq")
                .storage_disabled("/dlq/{*rest}")
                .storage_disabled("/collections/{*rest}")
                .storage_disabled("/store/{*rest}")
                .storage_disabled("/organisations/{*rest}")
        };
        routes = routes.nest("/admin", admin, |router| {
            router.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                routes::admin::require_admin,
            ))
        });
    }
    let served = routes.served().to_vec();

    let request_timeout = state.config.server.request_timeout;
    let body_limit = state.config.server.body_limit_bytes;
    let router = routes
        .into_router()
        .layer(
            ServiceBuilder::new()
                .layer(HttpMetricsLayer::new(http_metrics, route_template))
                // Inside the metrics layer, so that a 413 for a declared length over the limit is
                // counted with its route like every other answer (any route, whatever its method).
                .layer(RequestBodyLimitLayer::new(body_limit))
                .map_request(|request: axum::http::Request<_>| request.map(axum::body::Body::new))
                // 504, not 503: a write cut short may still be applied (its WAL record may be in
                // the group commit under way), so the client must not take it for refused.
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::GATEWAY_TIMEOUT,
                    request_timeout,
                ))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(RequestIdLayer::new())
                .layer(TraceLayer::new())
                .layer(axum::middleware::from_fn(crate::problem::problem_layer)),
        );
    let erasure_task = match (&erasures, &storage) {
        (Some(erasures), Some(storage)) => {
            Some(erasures.spawn(storage.clone(), ERASURE_PURGE_TIMEOUT))
        }
        _ => None,
    };
    Ok(App {
        erasure_task,
        router,
        served,
        health,
        breakers,
        storage,
        keyring,
        dlq_cleanup,
        limiter,
        health_feeder,
        backup_status,
    })
}

/// How long a background erasure waits for uploads before it tries again later.
const ERASURE_PURGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the erasure ledger (`storage.data_dir/erasure` and `_erasure/ledger/` in the object
/// store) and registers the erasure metrics.
async fn open_erasures(
    config: &Config,
    registry: &mut Registry,
    keyring: Option<Keyring>,
) -> Result<crate::erasure::Erasures, BuildError> {
    let local = config.storage.data_dir.join("erasure");
    let mut urls = vec![object_store_url(&config.storage)?];
    if let Some(backups) = &config.backup.url {
        urls.push(backup_root_url(backups)?);
    }
    let ledger = crate::erasure::ErasureLedger::open(&local, &urls)
        .await
        .map_err(|error| ConfigError::Invalid(format!("the erasure ledger: {error}")))?;
    Ok(crate::erasure::Erasures::new(
        ledger,
        config.erasure.clone(),
        crate::erasure::ErasureMetrics::register(registry),
    )
    .with_keyring(keyring))
}

/// Opens the dead-letter queue and the record store in `storage.data_dir`, registers their
/// metrics, the store's breaker and their health checks (`object-store`, `storage-wal`,
/// `storage-writer`, `dlq-journal`), and starts the queue's TTL cleanup.
async fn open_storage(
    config: &Config,
    registry: &mut Registry,
    resilience_metrics: &ResilienceMetrics,
    health: &HealthRegistry,
    breakers: &BreakerRegistry,
) -> Result<(Storage, CleanupTask), BuildError> {
    let dlq = Dlq::builder(config.storage.data_dir.join("dlq"))
        .config(config.dlq.clone())
        .metrics(DlqMetrics::register(registry))
        .open()
        .await?;
    let dlq_cleanup = dlq.spawn_cleanup();
    let store = open_store(config, registry, resilience_metrics, &dlq).await?;
    // Nothing has written since the open: this is where this instance took over.
    let takeover_lsn = store.last_lsn();
    breakers
        .register(store.breaker())
        .map_err(|error| ConfigError::Invalid(error.to_string()))?;
    let checks: [Arc<dyn mainstay_health::Check>; 4] = [
        Arc::new(ObjectStoreCheck::new(&store)),
        Arc::new(WalCheck::new(&store)),
        Arc::new(WriterCheck::new(&store)),
        Arc::new(crate::faults::DlqJournalCheck::new(dlq.clone())),
    ];
    for check in checks {
        health
            .register(check)
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
    }
    let storage = Storage {
        store,
        dlq,
        idempotency: Arc::default(),
        takeover_lsn,
        write_gate: Arc::default(),
    };
    Ok((storage, dlq_cleanup))
}

/// Opens the record store in `storage.data_dir`, with its failed segments in the app's dead-letter
/// queue. Without `storage.object_store_url` objects go to `data_dir/objects` on the local file
/// system, so every tiering policy works on the embedded defaults.
async fn open_store(
    config: &Config,
    registry: &mut Registry,
    resilience_metrics: &ResilienceMetrics,
    dlq: &Dlq,
) -> Result<Store, BuildError> {
    let mut store_config = config.storage.clone();
    store_config.object_store_url = Some(object_store_url(&config.storage)?);
    if store_config.encryption {
        // Sealed values are bigger than what callers send by the seal's overhead; the routes
        // check the configured limits against the plaintext.
        let overhead = mainstay_storage_tiering::keyring::SEAL_OVERHEAD;
        let limits = &mut store_config.limits;
        limits.max_value_bytes = limits.max_value_bytes.saturating_add(overhead);
        limits.max_batch_bytes = limits
            .max_batch_bytes
            .saturating_add(overhead.saturating_mul(limits.max_batch_records));
    }
    let store = Store::builder(store_config)
        .name("storage")
        .metrics(StorageMetrics::register(registry))
        .resilience_metrics(resilience_metrics.clone())
        .dlq(dlq.clone())
        .open()
        .await?;
    Ok(store)
}

/// The object store the service uses: `storage.object_store_url`, or (the embedded default)
/// `file://` of `objects/` inside the data directory, created if missing and named by its
/// canonical path. The store, the keyring's default `_keys` and the erasure ledger all use this
/// one, and `mainstay-api backup` does too.
pub(crate) fn object_store_url(storage: &StoreConfig) -> Result<String, BuildError> {
    if let Some(url) = &storage.object_store_url {
        return Ok(url.clone());
    }
    local_dir_url(&storage.data_dir.join("objects"))
}

/// The backup location `url` (a directory path, `file://` or `s3://`, as `backup.url` takes
/// it) as an object-store URL: a path becomes `file://` of its canonical form, created if
/// missing (as a backup to it would create it).
pub(crate) fn backup_root_url(url: &str) -> Result<String, BuildError> {
    if url.contains("://") {
        return Ok(url.to_owned());
    }
    local_dir_url(std::path::Path::new(url))
}

/// `file://` of the canonical form of `dir`, created if missing.
fn local_dir_url(dir: &std::path::Path) -> Result<String, BuildError> {
    let prepared = std::fs::create_dir_all(dir).and_then(|()| std::fs::canonicalize(dir));
    let dir = prepared.map_err(|source| BuildError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(format!("file://{}", dir.display()))
}

/// Registers the keyring's metric families (with the store, whether or not encryption is on) and,
/// with `storage.encryption`, opens the keyring on `storage.keys_url` (default: `_keys` under the
/// store's object store) and checks the master key against it.
async fn open_keyring(
    config: &Config,
    registry: &mut Registry,
) -> Result<Option<Keyring>, BuildError> {
    let metrics = KeyringMetrics::register(registry);
    metrics.start_up_series("storage");
    if !config.storage.encryption {
        return Ok(None);
    }
    let master_key = config.storage.master_key.clone().ok_or_else(|| {
        ConfigError::Invalid(
            "key `storage.master_key`: required when `storage.encryption` is on".into(),
        )
    })?;
    let url = match (&config.storage.keys_url, &config.storage.object_store_url) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => format!("{}/_keys", url.trim_end_matches('/')),
        (None, None) => format!("{}/_keys", object_store_url(&config.storage)?),
    };
    let opened = match Keyring::builder_from_url(&url, master_key) {
        Ok(builder) => builder.name("storage").metrics(metrics).open().await,
        Err(error) => Err(error),
    };
    match opened {
        Ok(keyring) => {
            tracing::info!(keys = %crate::config::mask_url(&url), "keyring open: record values are sealed");
            Ok(Some(keyring))
        }
        Err(error @ (KeyringOpenError::WrongMasterKey { .. } | KeyringOpenError::Url { .. })) => {
            let key = if matches!(error, KeyringOpenError::Url { .. }) {
                "storage.keys_url"
            } else {
                "storage.master_key"
            };
            Err(ConfigError::Invalid(format!("key `{key}`: {error}")).into())
        }
        Err(error) => Err(BuildError::Keyring(error)),
    }
}

/// Registers the threshold checks other components feed, and the task that feeds them every cache
/// interval: `dlq` (percent of `dlq.total_capacity` in use: degraded from 80, unhealthy at 100;
/// only with a dead-letter queue) and `circuit-breakers` (breakers not closed: degraded from 1).
/// Both are non-critical.
fn feed_threshold_checks(
    config: &Config,
    health: &HealthRegistry,
    dlq: Option<&Dlq>,
    breakers: &BreakerRegistry,
) -> Result<AbortOnDrop, ConfigError> {
    let invalid = |error: &dyn std::fmt::Display| ConfigError::Invalid(error.to_string());
    let dlq_fill = match dlq {
        Some(dlq) => {
            let check = ThresholdCheck::new(
                "dlq",
                Criticality::NonCritical,
                Thresholds {
                    degraded_at: Some(80.0),
                    unhealthy_at: Some(100.0),
                },
            )
            .map_err(|error| invalid(&error))?;
            health
                .register(Arc::new(check.clone()))
                .map_err(|error| invalid(&error))?;
            Some((check, dlq.clone()))
        }
        None => None,
    };
    let not_closed = ThresholdCheck::new(
        "circuit-breakers",
        Criticality::NonCritical,
        Thresholds {
            degraded_at: Some(1.0),
            unhealthy_at: None,
        },
    )
    .map_err(|error| invalid(&error))?;
    health
        .register(Arc::new(not_closed.clone()))
        .map_err(|error| invalid(&error))?;
    let capacity = config.dlq.total_capacity.max(1) as f64;
    let breakers = breakers.clone();
    let interval = config.health.cache_interval;
    Ok(AbortOnDrop(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Some((check, dlq)) = &dlq_fill {
                check.set(dlq.len() as f64 * 100.0 / capacity);
            }
            let open = breakers
                .snapshots()
                .iter()
                .filter(|breaker| breaker.state != BreakerState::Closed)
                .count();
            not_closed.set(open as f64);
        }
    })))
}

/// The rate limiter: Redis when `redis.url` is set, in-process otherwise.
fn rate_limiter(
    config: &Config,
    registry: &mut Registry,
    resilience_metrics: &ResilienceMetrics,
) -> Result<RateLimiter, ConfigError> {
    let mut builder = RateLimiter::builder(config.ratelimit.clone())
        .metrics(RateLimitMetrics::register(registry))
        .resilience_metrics(resilience_metrics.clone());
    if let Some(url) = &config.redis.url {
        builder = builder.redis_url(url.clone());
        if config.redis.cluster {
            builder = builder.redis_cluster(config.redis.cluster_seeds.iter().cloned());
        }
        if let Some(path) = &config.redis.tls_ca_file {
            builder = builder.redis_tls_ca_file(path.clone());
        }
    }
    builder
        .build()
        .map_err(|error| ConfigError::Invalid(error.to_string()))
}

/// The route template axum matched (`/v1/collections/{collection}`), for metrics labels and rate
/// limit classes; `None` when no route matched.
fn route_template(extensions: &axum::http::Extensions) -> Option<String> {
    extensions
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
}

/// The rate-limit layer: route templates from axum, callers from [`crate::auth`], peers from the
/// connection; a rejection is a 429 problem with `Retry-After`.
fn rate_limit_layer(limiter: RateLimiter) -> RateLimitLayer<axum::body::Body> {
    RateLimitLayer::builder(limiter)
        .route_template(route_template)
        .identity(|extensions| {
            extensions.get::<Caller>().map(|caller| CallerIdentity {
                organisation: caller.organisation.clone(),
                tier: caller.tier.as_str().to_owned(),
                plan: caller.plan.as_str().to_owned(),
                principal: (caller.tier != Tier::Anonymous).then(|| caller.principal.clone()),
            })
        })
        .peer_address(|extensions| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip())
        })
        .build()
}

/// The health registry with the built-in checks and the checks of the clients this binary owns.
fn health_registry(
    config: &Config,
    registry: &mut Registry,
    redis: Option<RateLimiter>,
) -> Result<HealthRegistry, ConfigError> {
    let invalid = |error: &dyn std::fmt::Display| ConfigError::Invalid(error.to_string());
    let mut health_config = config.health.clone();
    if config.storage.enabled {
        // The `disk` check watches the disk the WAL is on unless told otherwise.
        if health_config.disk.path == std::path::Path::new(".") {
            health_config.disk.path = config.storage.data_dir.clone();
        }
    } else {
        // Stateless: `.` stays the working directory (there is no WAL), and overrides of the
        // checks only a store registers are ignored like the other storage keys, so that one
        // file serves both modes.
        health_config
            .checks
            .retain(|name, _| !crate::config::STORAGE_CHECKS.contains(&name.as_str()));
    }
    // Redis is critical only when the rate limiter may not fall back without it.
    if redis.is_some() && config.ratelimit.fallback == FallbackMode::Deny {
        health_config
            .checks
            .entry("redis".into())
            .or_default()
            .critical
            .get_or_insert(true);
    }
    let health = HealthRegistry::builder(health_config, env!("CARGO_PKG_VERSION"))
        .metrics(HealthMetrics::register(registry))
        .build()
        .map_err(|error| invalid(&format_args!("key `health.{}`: {error}", error.key())))?;
    if let Some(limiter) = redis {
        health
            .register(Arc::new(RedisCheck::new(limiter)))
            .map_err(|error| invalid(&error))?;
    }
    Ok(health)
}
