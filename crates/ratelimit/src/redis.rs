//! The Redis backend: one Lua script (`gcra.lua`) checks every limit of a request in one round trip,
//! loaded once and called with EVALSHA (reloaded on NOSCRIPT), over a small set of multiplexed
//! connections (`docs/decisions/0085`).
//!
//! Each connection pipelines the requests of every caller that uses it, and a request that times
//! out on the caller's side leaves its connection usable (its late answer is read and dropped).
//! Calls take the connections in turn. A connection is dropped only when it fails (an I/O error, a
//! closed socket); its slot is filled again by a background task with its own connect timeout, so
//! no decision ever waits for a reconnect longer than its own command timeout, and the other
//! connections keep serving meanwhile. The health check's `PING` has a connection of its own.
//!
//! With Redis Cluster (`docs/decisions/0089`) every connection of the set is a cluster-aware
//! connection (redis-rs `cluster_async`) that knows the slot map, routes each script call by its
//! keys (which share one hash tag, so one slot) and follows `MOVED` and `ASK`. `rediss://` URLs
//! connect over rustls, verified against the system's roots or the CA given in `redis.tls_ca_file`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    Script, TlsCertificates, Value,
};
use tokio::sync::Notify;

use crate::config::RateLimitConfig;
use crate::limiter::BuildError;
use crate::reply::ScriptReply;

/// The script's source.
pub(crate) const GCRA_SCRIPT: &str = include_str!("gcra.lua");

/// The heartbeat: announces `ARGV[1]` in the sorted set `KEYS[1]` at Redis time (milliseconds),
/// drops the instances not heard from within `ARGV[2]` ms, lets the set expire after as long, and
/// returns how many are live.
const HEARTBEAT_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local expiry = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - expiry)
redis.call('PEXPIRE', KEYS[1], expiry)
return redis.call('ZCARD', KEYS[1])
";

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisCallError {
    /// No connection is up, and none came up while the call waited.
    #[error("no redis connection: {0}")]
    Connect(String),
    /// The command failed.
    #[error("redis command failed: {0}")]
    Command(#[from] RedisError),
    /// The script answered something else than six integers.
    #[error("redis gave an unexpected reply to the rate-limit script")]
    Reply,
}

impl RedisCallError {
    /// The `error_type` label of `ratelimit_backend_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connection",
            Self::Command(error) if error.is_timeout() => "timeout",
            Self::Command(error) if is_connection_error(error) => "connection",
            Self::Command(_) | Self::Reply => "script",
        }
    }
}

/// Whether `error` means the connection is unusable (as opposed to a reply of Redis, or a late one).
fn is_connection_error(error: &RedisError) -> bool {
    !error.is_timeout()
        && (error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error())
}

/// A limit's Redis key split into its hash (up to and with the hash tag) and its field in it.
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.find("}:")
        .map(|close| (&key[..=close], &key[close + 2..]))
}

impl ScriptReply {
    /// The decision from the script's answer: whether the request passed, Redis time, and the TAT of
    /// each limit (the new ones when it passed, the current ones otherwise), all in microseconds;
    /// the same arithmetic as `Gcra::step`. `None` for an answer no script run can give.
    pub(crate) fn from_tats(
        allowed: bool,
        now: i64,
        tats: [i64; 3],
        limits: &[(u64, u64); 3],
    ) -> Option<Self> {
        let now = u64::try_from(now).ok()?;
        let mut remaining_each = [0u32; 3];
        if allowed {
            // The limit with the fewest requests left speaks; among equals, the one that takes
            // longest to be full again.
            let mut best: Option<(usize, u32, u64)> = None;
            for (index, (tat, (emission, tolerance))) in tats.iter().zip(limits).enumerate() {
                let reset = u64::try_from(*tat).ok()?.checked_sub(now)?;
                let backlog = reset.checked_sub(*emission)?;
                let remaining =
                    u32::try_from(tolerance.checked_sub(backlog)? / (*emission).max(1)).ok()?;
                remaining_each[index] = remaining;
                if best.is_none_or(|(_, fewest, longest)| {
                    remaining < fewest || (remaining == fewest && reset > longest)
                }) {
                    best = Some((index, remaining, reset));
                }
            }
            let (index, remaining, reset_us) = best?;
            return Some(Self {
                allowed: true,
                index,
                remaining,
                reset_us,
                retry_us: 0,
                now_us: now,
                remaining_each,
            });
        }
        // The limit that makes the caller wait longest speaks.
        let mut denied: Option<(usize, u64, u64)> = None;
        for (index, (tat, (emission, tolerance))) in tats.iter().zip(limits).enumerate() {
            let backlog = u64::try_from(*tat).ok()?.checked_sub(now)?;
            match backlog.checked_sub(*tolerance) {
                Some(wait) if wait > 0 => {
                    if denied.is_none_or(|(_, _, longest)| wait > longest) {
                        denied = Some((index, backlog, wait));
                    }
                }
                // Requests that would pass now (nothing was consumed).
                _ => {
                    remaining_each[index] =
                        u32::try_from((tolerance - backlog) / (*emission).max(1) + 1).ok()?;
                }
            }
        }
        let (index, reset_us, retry_us) = denied?;
        Some(Self {
            allowed: false,
            index,
            remaining: 0,
            reset_us,
            retry_us,
            now_us: now,
            remaining_each,
        })
    }
}

/// Where and how the backend connects: the application's `redis.*` keys.
#[derive(Debug, Clone, Default)]
struct RedisTarget {
    /// `redis.url`.
    url: String,
    /// `redis.cluster`.
    cluster: bool,
    /// `redis.cluster_seeds`: more seed nodes besides `url` (cluster only).
    cluster_seeds: Vec<String>,
    /// The PEM contents of `redis.tls_ca_file`: the only roots `rediss://` trusts when set.
    tls_ca: Option<Vec<u8>>,
}

/// The PEM contents of `redis.tls_ca_file`, checked to hold a certificate and to go with
/// `rediss://` URLs only (a CA for a plain connection would be silently unused).
fn read_tls_ca(path: &std::path::Path, url: &str, seeds: &[String]) -> Result<Vec<u8>, BuildError> {
    let fail = |reason: String| BuildError::TlsCaFile {
        path: path.to_owned(),
        reason,
    };
    if let Some(plain) = std::iter::once(url)
        .chain(seeds.iter().map(String::as_str))
        .find(|url| !url.starts_with("rediss://"))
    {
        return Err(fail(format!(
            "set, but {plain:?} is not a rediss:// URL (TLS)"
        )));
    }
    let pem = std::fs::read(path).map_err(|error| fail(format!("cannot be read: {error}")))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|window| window == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(pem)
}

/// A client of one Redis server or of a Redis Cluster. Built once per limiter, so the size
/// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)] // One per limiter; see above.
enum RedisClient {
    Single(Client),
    Cluster(ClusterClient),
}

/// A multiplexed connection to one server, or a cluster connection (itself multiplexed over one
/// connection per node). Cheap to clone.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// One connection of the set: the connection while it is up, and whether a task is connecting it.
#[derive(Default)]
struct Slot {
    /// The connection, with the generation it was made in (so that a failure reported on an old
    /// connection does not drop its replacement).
    connection: RwLock<Option<(u64, Connection)>>,
    connecting: AtomicBool,
}

/// The Redis client, its connections and the script.
pub(crate) struct RedisBackend {
    client: RedisClient,
    /// Connect timeout, and the response timeout after which an unanswered command counts as a
    /// failure of Redis.
    connection_config: AsyncConnectionConfig,
    connect_timeout: Duration,
    slots: Box<[Slot]>,
    /// The next slot to use.
    next: AtomicUsize,
    /// Connections made so far: the generation of the next one.
    generation: AtomicU64,
    /// Woken after every connection attempt, for callers that found no connection up.
    attempted: Notify,
    /// The health check's own connection.
    probe: tokio::sync::Mutex<Option<Connection>>,
    script: Script,
    heartbeat: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let up = self
            .slots
            .iter()
            .filter(|slot| slot.connection.read().is_some())
            .count();
        formatter
            .debug_struct("RedisBackend")
            .field("connections", &self.slots.len())
            .field("up", &up)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for the application's `redis.url` (a seed node when `cluster`, with more
    /// `cluster_seeds`), trusting only the CA in `tls_ca_file` when set, with `config`'s pool
    /// size and timeouts. Nothing connects yet.
    pub(crate) fn new(
        url: &str,
        cluster: bool,
        cluster_seeds: &[String],
        tls_ca_file: Option<&std::path::Path>,
        config: &RateLimitConfig,
    ) -> Result<Self, BuildError> {
        let tls_ca = match tls_ca_file {
            Some(path) => Some(read_tls_ca(path, url, cluster_seeds)?),
            None => None,
        };
        let target = RedisTarget {
            url: url.to_owned(),
            cluster,
            cluster_seeds: cluster_seeds.to_vec(),
            tls_ca,
        };
        Self::with_target(
            &target,
            config.redis_pool_size,
            config.redis_connect_timeout,
            config.redis_response_timeout,
        )
        .map_err(|error| BuildError::RedisUrl(error.to_string()))
    }

    /// A backend for `target` with `connections` multiplexed (or cluster) connections. Nothing
    /// connects yet.
    fn with_target(
        target: &RedisTarget,
        connections: usize,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let certificates = target.tls_ca.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
        let client = if target.cluster {
            let mut seeds = Vec::with_capacity(1 + target.cluster_seeds.len());
            for url in std::iter::once(&target.url).chain(&target.cluster_seeds) {
                seeds.push(url.as_str().into_connection_info()?);
            }
            let mut builder = ClusterClientBuilder::new(seeds)
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                // A moved slot or a failover is retried a few times, quickly: the decision waits
                // at most `redis_timeout` anyway, and the breaker handles a longer outage.
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(100);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            RedisClient::Cluster(builder.build()?)
        } else {
            RedisClient::Single(match certificates {
                Some(certificates) => Client::build_with_tls(target.url.as_str(), certificates)?,
                None => Client::open(target.url.as_str())?,
            })
        };
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        Ok(Self {
            client,
            connection_config,
            connect_timeout,
            slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            attempted: Notify::new(),
            probe: tokio::sync::Mutex::new(None),
            script: Script::new(GCRA_SCRIPT),
            heartbeat: Script::new(HEARTBEAT_SCRIPT),
        })
    }

    /// The connect timeout.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether the backend talks to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.client, RedisClient::Cluster(_))
    }

    /// A new connection (for a cluster: to every master, with the slot map).
    async fn connect(&self) -> Result<Connection, RedisError> {
        match &self.client {
            RedisClient::Single(client) => client
                .get_multiplexed_async_connection_with_config(&self.connection_config)
                .await
                .map(Connection::Single),
            RedisClient::Cluster(client) => {
                client.get_async_connection().await.map(Connection::Cluster)
            }
        }
    }

    /// The next connection that is up, starting the connection of every empty slot it passes.
    fn pick(self: &Arc<Self>) -> Option<(usize, u64, Connection)> {
        let count = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..count {
            let index = (start + offset) % count;
            if let Some((generation, connection)) = self.slots[index].connection.read().as_ref() {
                return Some((index, *generation, connection.clone()));
            }
            self.reconnect(index);
        }
        None
    }

    /// A connection that is up; when none is, waits for the next connection attempt to end (the
    /// caller's timeout bounds the wait).
    async fn connection(self: &Arc<Self>) -> Result<(usize, u64, Connection), RedisCallError> {
        if let Some(found) = self.pick() {
            return Ok(found);
        }
        let attempted = self.attempted.notified();
        tokio::pin!(attempted);
        attempted.as_mut().enable();
        // Slots that were connected between the first look and `enable`.
        if let Some(found) = self.pick() {
            return Ok(found);
        }
        attempted.await;
        self.pick().ok_or_else(|| {
            RedisCallError::Connect("redis refused or did not answer a connection".into())
        })
    }

    /// Starts connecting slot `index` in the background, unless a task already does.
    fn reconnect(self: &Arc<Self>, index: usize) {
        let slot = &self.slots[index];
        if slot.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let backend = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = backend.connect().await;
            let slot = &backend.slots[index];
            match outcome {
                Ok(connection) => {
                    let generation = backend.generation.fetch_add(1, Ordering::Relaxed);
                    *slot.connection.write() = Some((generation, connection));
                }
                Err(error) => tracing::debug!(%error, "redis connection failed"),
            }
            slot.connecting.store(false, Ordering::Release);
            backend.attempted.notify_waiters();
        });
    }

    /// Drops the connection of slot `index` made in `generation` after it failed, and connects the
    /// slot again in the background.
    fn connection_failed(self: &Arc<Self>, index: usize, generation: u64) {
        {
            let mut connection = self.slots[index].connection.write();
            if connection
                .as_ref()
                .is_some_and(|(current, _)| *current == generation)
            {
                *connection = None;
            }
        }
        self.reconnect(index);
    }

    /// Drops every connection (Redis is considered down: none of them is to be trusted); the next
    /// call or trial connects afresh. Calls in flight keep theirs.
    pub(crate) fn drop_connections(&self) {
        for slot in &self.slots {
            *slot.connection.write() = None;
        }
    }

    /// Runs the script for the limits of one request (one to three), `keys` (which share one hash
    /// tag) with their `(emission, tolerance)` in microseconds, at Redis time (or at `at_us` for
    /// the test vectors). The limits live in one Redis hash per hash tag (`docs/decisions/0093`):
    /// the part of each key up to its hash tag names the hash, the rest is the limit's field. The
    /// script always takes three limits; fewer are sent with the last one repeated, which changes
    /// nothing (the same field, written with the same value, never the one that speaks).
    /// Unanswered, it fails after the response timeout; the caller decides how long it waits.
    pub(crate) async fn decide(
        self: &Arc<Self>,
        keys: &[String],
        limits: &[(u64, u64)],
        at_us: Option<u64>,
    ) -> Result<ScriptReply, RedisCallError> {
        let (Some(last_key), Some(last_limit)) = (keys.last(), limits.last()) else {
            return Err(RedisCallError::Reply);
        };
        if keys.len() > 3 || keys.len() != limits.len() {
            return Err(RedisCallError::Reply);
        }
        let Some((hash, _)) = split_key(last_key) else {
            return Err(RedisCallError::Reply);
        };
        let padded = |index: usize| {
            (
                keys.get(index).unwrap_or(last_key),
                *limits.get(index).unwrap_or(last_limit),
            )
        };
        let padded: [(&String, (u64, u64)); 3] = [padded(0), padded(1), padded(2)];
        let mut invocation = self.script.prepare_invoke();
        invocation.key(hash);
        match at_us {
            Some(at) => invocation.arg(at),
            None => invocation.arg(""),
        };
        for (key, (emission, tolerance)) in &padded {
            match split_key(key) {
                Some((tag, field)) if tag == hash => {
                    invocation.arg(field).arg(*emission).arg(*tolerance)
                }
                _ => return Err(RedisCallError::Reply),
            };
        }
        // A connection found closed is dropped and the call goes to the next one (or to a fresh
        // one): a reset connection is not Redis failing. Each connection is tried once.
        let mut attempts = self.slots.len() + 1;
        let reply: Vec<i64> = loop {
            let (index, generation, mut connection) = self.connection().await?;
            match invocation.invoke_async(&mut connection).await {
                Ok(reply) => break reply,
                Err(error) if is_connection_error(&error) => {
                    self.connection_failed(index, generation);
                    attempts -= 1;
                    if attempts == 0 {
                        return Err(error.into());
                    }
                }
                Err(error) => return Err(error.into()),
            }
        };
        let [allowed, now, t1, t2, t3] = reply[..] else {
            return Err(RedisCallError::Reply);
        };
        let limits = padded.map(|(_, limit)| limit);
        ScriptReply::from_tats(allowed == 1, now, [t1, t2, t3], &limits)
            .ok_or(RedisCallError::Reply)
    }

    /// One `PING` over the decision connections (a breaker trial), connecting a slot first when
    /// none is up.
    pub(crate) async fn trial(self: &Arc<Self>) -> Result<(), RedisCallError> {
        let (index, generation, mut connection) = self.connection().await?;
        let result: Result<String, RedisError> =
            redis::cmd("PING").query_async(&mut connection).await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                if is_connection_error(&error) {
                    self.connection_failed(index, generation);
                }
                Err(error.into())
            }
        }
    }

    /// Announces instance `id` in the set `key` (members expire after `expiry_ms` without a
    /// heartbeat) and returns how many instances are live.
    pub(crate) async fn heartbeat(
        self: &Arc<Self>,
        key: &str,
        id: &str,
        expiry_ms: u64,
    ) -> Result<u32, RedisCallError> {
        let (index, generation, mut connection) = self.connection().await?;
        let result: Result<u32, RedisError> = self
            .heartbeat
            .key(key)
            .arg(id)
            .arg(expiry_ms)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = &result
            && is_connection_error(error)
        {
            self.connection_failed(index, generation);
        }
        Ok(result?)
    }

    /// One `PING` on the health check's own connection, made first when there is none; a failed
    /// connection is dropped so that the next probe connects afresh.
    pub(crate) async fn ping(&self) -> Result<(), RedisCallError> {
        let mut probe = self.probe.lock().await;
        let mut connection = match probe.as_ref() {
            Some(connection) => connection.clone(),
            None => {
                let connection = self.connect().await?;
                *probe = Some(connection.clone());
                connection
            }
        };
        let result: Result<String, RedisError> =
            redis::cmd("PING").query_async(&mut connection).await;
        if result.is_err() {
            *probe = None;
        }
        result.map(|_| ()).map_err(RedisCallError::from)
    }

    /// The cluster's `cluster_state` (`ok` or `fail`) from `CLUSTER INFO` of one node, on the
    /// health check's connection.
    pub(crate) async fn cluster_state(&self) -> Result<String, RedisCallError> {
        let mut probe = self.probe.lock().await;
        let mut connection = match probe.as_ref() {
            Some(connection) => connection.clone(),
            None => {
                let connection = self.connect().await?;
                *probe = Some(connection.clone());
                connection
            }
        };
        let result: Result<String, RedisError> = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut connection)
            .await;
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                *probe = None;
                return Err(error.into());
            }
        };
        info.lines()
            .find_map(|line| line.strip_prefix("cluster_state:"))
            .map(|state| state.trim().to_owned())
            .ok_or(RedisCallError::Reply)
    }

    /// A connection of the set to a single server, for the benchmark's raw baseline.
    pub(crate) async fn any_connection(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        match self.connection().await {
            Ok((_, _, Connection::Single(connection))) => Some(connection),
            _ => None,
        }
    }
}
