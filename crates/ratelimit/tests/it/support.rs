//! Private `redis-server` instances and configuration helpers for the tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mainstay_ratelimit::{LimitSpec, RateLimitConfig, Secret, TierConfig};
use mainstay_resilience::BreakerConfig;

/// A `redis-server` of its own: ephemeral port, temp dir, stopped by pid.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Arguments besides the port, directory and the test defaults.
    extra_args: Vec<String>,
}

/// A free TCP port on 127.0.0.1 (free when asked: a caller retries on a collision).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free port (retrying on a collision).
    pub(crate) fn start() -> Self {
        Self::start_with(|_| Vec::new())
    }

    /// Starts a server on a free port with the arguments `extra_args(port)` besides the test
    /// defaults (retrying on a collision).
    pub(crate) fn start_with(extra_args: impl Fn(u16) -> Vec<String>) -> Self {
        for _ in 0..20 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                dir: tempfile::tempdir().expect("a temp dir"),
                extra_args: extra_args(port),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // `DEBUG SLEEP` makes a loaded-but-healthy Redis on demand.
            .args(["--enable-debug-command", "yes"])
            .args(&self.extra_args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            if self
                .command("PING")
                .is_some_and(|reply| reply.starts_with("+PONG"))
            {
                return true;
            }
            // Polling for the process to come up, not waiting for a rule.
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }

    /// SIGSTOP: the server holds its connections and answers nothing.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub(crate) fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("a running server");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Sends one inline command and returns the raw reply (for assertions on keys).
    pub(crate) fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 65_536];
        loop {
            let read = stream.read(&mut buffer).ok()?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..read]);
            if complete(&reply) {
                break;
            }
        }
        String::from_utf8(reply).ok()
    }

    /// Every key, by `SCAN`.
    pub(crate) fn scan_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let reply = self
                .command(&format!("SCAN {cursor} COUNT 1000"))
                .expect("SCAN answers");
            let lines: Vec<&str> = reply.split("\r\n").collect();
            // *2, $n, cursor, *k, ($len, key)...
            cursor = lines[2].to_owned();
            keys.extend(
                lines[4..]
                    .iter()
                    .filter(|line| !line.starts_with('$') && !line.is_empty())
                    .map(|line| (*line).to_owned()),
            );
            if cursor == "0" {
                return keys;
            }
        }
    }

    /// Redis's clock (`TIME`), in microseconds since the epoch.
    pub(crate) fn time_micros(&self) -> u64 {
        let reply = self.command("TIME").expect("TIME answers");
        // *2, $n, seconds, $n, microseconds.
        let lines: Vec<&str> = reply.split("\r\n").collect();
        let seconds: u64 = lines[2].parse().expect("seconds");
        let micros: u64 = lines[4].parse().expect("microseconds");
        seconds * 1_000_000 + micros
    }

    /// `PTTL key`.
    pub(crate) fn pttl(&self, key: &str) -> i64 {
        let reply = self.command(&format!("PTTL {key}")).expect("PTTL answers");
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("an integer")
    }
}

/// Whether a RESP reply is complete (enough for the replies the tests read).
fn complete(reply: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(reply) else {
        return false;
    };
    match text.as_bytes().first() {
        Some(b'+' | b'-' | b':') => text.ends_with("\r\n"),
        Some(b'$') => text.split_once("\r\n").is_some_and(|(header, rest)| {
            // A bulk string (`CLUSTER INFO`): $len, then len bytes and CRLF; $-1 is nil.
            header[1..]
                .parse::<usize>()
                .map_or(true, |length| rest.len() >= length + 2)
        }),
        Some(b'*') => {
            // SCAN: *2 \r\n $len \r\n cursor \r\n *count \r\n then count bulk strings.
            let lines: Vec<&str> = text.split("\r\n").collect();
            if lines.len() < 5 {
                return false;
            }
            let count: usize = lines[3].trim_start_matches('*').parse().unwrap_or(0);
            lines.len() > 4 + 2 * count
        }
        _ => false,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A frozen server must be thawed to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
        self.kill();
    }
}

/// A shared secret for tests.
pub(crate) const SECRET: &str = "test-secret-of-32-bytes-length!!";

/// A configuration for Redis tests: a secret, millisecond-scaled breaker, generous timeout (the
/// machine is shared), no over-limit cache unless a test turns it on.
pub(crate) fn redis_config() -> RateLimitConfig {
    RateLimitConfig {
        secret: Some(Secret::new(SECRET)),
        redis_timeout: Duration::from_millis(250),
        redis_connect_timeout: Duration::from_millis(500),
        redis_response_timeout: Duration::from_millis(500),
        breaker: BreakerConfig {
            half_open_max_calls: 1,
            half_open_successes: 1,
            ..BreakerConfig::consecutive(3, Duration::from_secs(60))
        },
        over_limit_cache: false,
        ..RateLimitConfig::default()
    }
}

/// A configuration whose limits are `tier`, `class` (every route) and `plan` for every caller.
pub(crate) fn limits(
    mut config: RateLimitConfig,
    tier: LimitSpec,
    class: LimitSpec,
    plan: LimitSpec,
) -> RateLimitConfig {
    config
        .tiers
        .insert("anonymous".into(), TierConfig::limited(tier.clone()));
    config
        .tiers
        .insert("api-key".into(), TierConfig::limited(tier));
    config.routes.clear();
    config.route_classes.clear();
    config.route_classes.insert("default".into(), class);
    config.plans.insert("free".into(), plan);
    config
}

/// A limit that never speaks.
pub(crate) fn huge() -> LimitSpec {
    LimitSpec::new(1_000_000, Duration::from_secs(1))
}

/// A TCP proxy in front of a server, in the test's runtime: it can drop every connection it holds
/// and make new connections slow (each waits `connect_delay` before it reaches the server), which
/// is how a restarted load balancer or a congested network looks to a client.
pub(crate) struct FlakyProxy {
    port: u16,
    connect_delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    drop_all: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    /// A proxy to `127.0.0.1:target` on a free port.
    pub(crate) async fn start(target: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connect_delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (drop_all, generations) = tokio::sync::watch::channel(0u64);
        let delay = connect_delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let delay = Duration::from_millis(delay.load(Ordering::SeqCst));
                let mut generations = generations.clone();
                generations.borrow_and_update();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = generations.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            connect_delay_ms,
            drop_all,
            task,
        }
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every new connection waits `delay` before it reaches the server.
    pub(crate) fn slow_connects(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap();
        self.connect_delay_ms
            .store(millis, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection the proxy holds.
    pub(crate) fn drop_connections(&self) {
        self.drop_all.send_modify(|generation| *generation += 1);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (at most 10 s) until `limiter` decides on Redis, with decisions for an address no test
/// asserts on: the first decisions of a new limiter fall back while its connections come up (on
/// a loaded machine a cluster's slot discovery, or a TLS handshake, can take longer than the
/// decision's `redis_timeout`).
pub(crate) async fn until_on_redis(limiter: &mainstay_ratelimit::RateLimiter) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = limiter
            .check(&mainstay_ratelimit::LimitRequest {
                caller: None,
                client: Some(std::net::IpAddr::from([192, 0, 2, 250])),
                route: None,
            })
            .await;
        if decision.backend == mainstay_ratelimit::Backend::Redis {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no decision on redis within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
