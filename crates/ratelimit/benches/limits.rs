//! Benchmarks of mainstay-ratelimit against its peers, in one run (`cargo bench -p
//! mainstay-ratelimit --bench limits`):
//!
//! 1. in process: governor's raw keyed `check_key` vs [`InProcessLimiter::check_key`] (goal: within
//!    1.5x), plus the full [`RateLimiter::check`] (HMAC of the identities, three limits) for scale;
//! 2. on Redis, 64 concurrent callers against a private `redis-server` the bench starts: a raw
//!    EVALSHA of a minimal one-key GCRA script through the limiter's own pool vs the full Redis
//!    decision (goals: at least 70% of the raw throughput, p99 within 1.2x of the raw p99), with
//!    a raw EVALSHA of the crate's script and of the script before decision 0093 (three keys) for
//!    scale, and the Redis thread's time per EVALSHA of each (`INFO commandstats`).
//!
//! Prints its own table; `BENCH_SECONDS` sets the number of interleaved one-second Redis rounds
//! per contender (default 5).

use std::hint::black_box;
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter as Governor};
use mainstay_ratelimit::{
    CallerIdentity, InProcessLimiter, LimitRequest, LimitSpec, RateLimitConfig, RateLimiter,
    Secret, TierConfig,
};
use redis::{self, Script};

const CALLERS: usize = 64;
const KEYS: usize = 1_024;

/// A one-key GCRA on Redis time: the least a Redis rate limiter can do per decision.
const MINIMAL_GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
if tat - now > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%d', tat + ARGV[1]), 'PX', math.ceil((tat - now + ARGV[1]) / 1000))
return 1
";

fn keys() -> Vec<mainstay_ratelimit::Pseudonym> {
    (0..KEYS)
        .map(|index| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(index as u64).to_le_bytes());
            mainstay_ratelimit::Pseudonym(key)
        })
        .collect()
}

/// Nanoseconds per call of `check` over `iterations` calls, best of 5 rounds.
fn per_call(iterations: usize, mut check: impl FnMut(usize)) -> f64 {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for index in 0..iterations {
                check(index);
            }
            started.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn in_process() {
    let keys = keys();
    let quota = Quota::per_second(NonZeroU32::new(1_000_000).unwrap());
    let governor = Governor::keyed(quota);
    let ours = InProcessLimiter::with_real_clock(
        &LimitSpec::new(1_000_000, Duration::from_secs(1)),
        100_000,
    )
    .unwrap();
    let iterations = 2_000_000;
    let raw = per_call(iterations, |index| {
        let _ = black_box(governor.check_key(&keys[index % KEYS]));
    });
    let mine = per_call(iterations, |index| {
        black_box(ours.check_key(&keys[index % KEYS]));
    });
    println!("in-process, one thread, {KEYS} keys");
    println!("  governor check_key          {raw:>8.1} ns/decision");
    println!(
        "  InProcessLimiter::check_key {mine:>8.1} ns/decision   ratio {:.2}x (goal <= 1.5x)",
        mine / raw
    );
    // The whole limiter: three HMACs' worth of identities and three limits per decision.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let limiter = RateLimiter::builder(generous(RateLimitConfig::default()))
        .build()
        .unwrap();
    let callers: Vec<CallerIdentity> = (0..KEYS)
        .map(|index| CallerIdentity::new(format!("org-{index}"), "api-key", "pro", "key"))
        .collect();
    let full = per_call(200_000, |index| {
        let request = LimitRequest {
            caller: Some(&callers[index % KEYS]),
            client: None,
            route: None,
        };
        black_box(runtime.block_on(limiter.check(&request)));
    });
    println!("  RateLimiter::check (3 limits, identities hashed) {full:>8.1} ns/decision");
}

/// Every limit far above what the bench sends, so every decision runs the whole script.
fn generous(mut config: RateLimitConfig) -> RateLimitConfig {
    let huge = LimitSpec::new(1_000_000, Duration::from_secs(1));
    config
        .tiers
        .insert("api-key".into(), TierConfig::limited(huge.clone()));
    for class in config.route_classes.values_mut() {
        *class = huge.clone();
    }
    for plan in config.plans.values_mut() {
        *plan = huge.clone();
    }
    config
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private redis-server on a free port, ready.
fn start_redis(dir: &std::path::Path) -> (Server, String) {
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let mut child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (Server(child), format!("redis://127.0.0.1:{port}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no redis-server could start");
}

/// The decisions and their latencies of `CALLERS` tasks running `call` for `length`.
async fn load<F, Fut>(length: Duration, call: Arc<F>) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    call(caller).await;
                    latencies.push(begun.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (started.elapsed(), latencies)
}

/// Accumulated rounds of one contender.
#[derive(Default)]
struct Tally {
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// EVALSHAs Redis counted, and the microseconds it spent in them.
    server_calls: u64,
    server_usec: u64,
}

impl Tally {
    /// Adds the `cmdstat_evalsha` line of an `INFO commandstats` reply.
    fn add_server(&mut self, stats: &str) {
        let Some(line) = stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        else {
            return;
        };
        for field in line.split(',') {
            match field.split_once('=') {
                Some(("calls", value)) => self.server_calls += value.parse::<u64>().unwrap_or(0),
                Some(("usec", value)) => self.server_usec += value.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }

    /// Microseconds of the Redis thread per EVALSHA.
    fn server_us(&self) -> f64 {
        self.server_usec as f64 / self.server_calls.max(1) as f64
    }

    fn add(&mut self, (elapsed, latencies): (Duration, Vec<Duration>)) {
        self.elapsed += elapsed;
        self.latencies.extend(latencies);
    }

    /// Decisions per second, p50, p99.
    fn summary(&mut self) -> (f64, Duration, Duration) {
        self.latencies.sort_unstable();
        let count = self.latencies.len();
        let at =
            |quantile: f64| self.latencies[((count as f64 * quantile) as usize).min(count - 1)];
        (count as f64 / self.elapsed.as_secs_f64(), at(0.5), at(0.99))
    }
}

fn on_redis() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("mainstay-ratelimit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_server, url) = start_redis(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let config = RateLimitConfig {
            secret: Some(Secret::new("bench-secret-0123456789")),
            // Generous: the bench measures throughput, not the fallback.
            redis_timeout: Duration::from_secs(1),
            ..generous(RateLimitConfig::default())
        };
        let limiter = RateLimiter::builder(config).redis_url(&url).build().unwrap();
        // The raw baseline uses one of the limiter's multiplexed connections.
        let connection = limiter.redis_connection().await.unwrap();
        let script = Arc::new(Script::new(MINIMAL_GCRA));
        let raw = {
            let connection = connection.clone();
            let script = script.clone();
            move |caller: usize| {
                let mut connection = connection.clone();
                let script = script.clone();
                async move {
                    let allowed: i64 = script
                        .key(format!("raw:{{{caller}}}:t"))
                        .arg(1u64)
                        .arg(1_000_000u64)
                        .invoke_async(&mut connection)
                        .await
                        .unwrap();
                    black_box(allowed);
                }
            }
        };
        // The crate's own script with precomputed keys and arguments: the Redis side of a full
        // decision without its client side (one hash per hash tag, three fields).
        let full_script = Arc::new(Script::new(include_str!("../src/gcra.lua")));
        let raw_full = {
            let connection = connection.clone();
            move |caller: usize| {
                let mut connection = connection.clone();
                let script = full_script.clone();
                async move {
                    let mut invocation = script.prepare_invoke();
                    invocation.key(format!("raw:{{{caller}}}")).arg("");
                    for field in ["t:api-key:p", "c:default:p", "q:pro"] {
                        invocation.arg(field).arg(1u64).arg(1_000_000u64);
                    }
                    let reply: Vec<i64> = invocation.invoke_async(&mut connection).await.unwrap();
                    black_box(reply);
                }
            }
        };
        // The script before decision 0093 (three keys, one `MGET`, three `SET PX`), for the A/B of
        // the two layouts in one run.
        let three_keys_script = Arc::new(Script::new(include_str!("gcra_three_keys.lua")));
        let raw_three_keys = {
            let connection = connection.clone();
            move |caller: usize| {
                let mut connection = connection.clone();
                let script = three_keys_script.clone();
                async move {
                    let mut invocation = script.prepare_invoke();
                    for kind in ["t", "c", "q"] {
                        invocation.key(format!("raw3:{{{caller}}}:{kind}"));
                    }
                    invocation.arg("");
                    for _ in 0..3 {
                        invocation.arg(1u64).arg(1_000_000u64);
                    }
                    let reply: Vec<i64> = invocation.invoke_async(&mut connection).await.unwrap();
                    black_box(reply);
                }
            }
        };
        let callers: Arc<Vec<CallerIdentity>> = Arc::new(
            (0..CALLERS)
                .map(|index| CallerIdentity::new(format!("org-{index}"), "api-key", "pro", "k"))
                .collect(),
        );
        let ours = {
            let limiter = limiter.clone();
            move |caller: usize| {
                let limiter = limiter.clone();
                let callers = callers.clone();
                async move {
                    let decision = limiter
                        .check(&LimitRequest {
                            caller: callers.get(caller),
                            client: None,
                            route: None,
                        })
                        .await;
                    assert_eq!(decision.backend, mainstay_ratelimit::Backend::Redis);
                    black_box(decision);
                }
            }
        };
        let (raw, ours, raw_full, raw_three_keys) = (
            Arc::new(raw),
            Arc::new(ours),
            Arc::new(raw_full),
            Arc::new(raw_three_keys),
        );
        // Warm up (script loads, connection, allocator).
        let _ = load(Duration::from_millis(500), raw.clone()).await;
        let _ = load(Duration::from_millis(500), ours.clone()).await;
        let _ = load(Duration::from_millis(500), raw_full.clone()).await;
        let _ = load(Duration::from_millis(500), raw_three_keys.clone()).await;
        // Interleaved one-second rounds, so that a change in the machine's load (it is shared)
        // weighs on every contender alike. After each round, Redis says how long its one thread
        // spent in the round's EVALSHAs (`INFO commandstats`).
        let mut tallies: [Tally; 4] = Default::default();
        let round = Duration::from_secs(1);
        let mut info = connection.clone();
        for _ in 0..seconds {
            for (index, tally) in tallies.iter_mut().enumerate() {
                let _: () = redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .query_async(&mut info)
                    .await
                    .unwrap();
                tally.add(match index {
                    0 => load(round, raw.clone()).await,
                    1 => load(round, ours.clone()).await,
                    2 => load(round, raw_full.clone()).await,
                    _ => load(round, raw_three_keys.clone()).await,
                });
                let stats: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(&mut info)
                    .await
                    .unwrap();
                tally.add_server(&stats);
            }
        }
        let [raw_tally, our_tally, full_tally, three_tally] = &mut tallies;
        let (raw_rate, raw_p50, raw_p99) = raw_tally.summary();
        let (our_rate, our_p50, our_p99) = our_tally.summary();
        let (full_rate, full_p50, full_p99) = full_tally.summary();
        let (three_rate, three_p50, three_p99) = three_tally.summary();
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut connection.clone())
            .await
            .unwrap();
        println!(
            "redis, {CALLERS} concurrent callers, {seconds} interleaved 1 s rounds each, one private redis-server"
        );
        println!("  (server: microseconds the Redis thread spent per EVALSHA, from INFO commandstats)");
        for (name, rate, p50, p99, tally) in [
            ("raw EVALSHA (1 key)", raw_rate, raw_p50, raw_p99, &*raw_tally),
            ("RateLimiter::check (3 limits)", our_rate, our_p50, our_p99, &*our_tally),
            ("raw EVALSHA of the crate's script", full_rate, full_p50, full_p99, &*full_tally),
            ("raw EVALSHA of the 3-key script", three_rate, three_p50, three_p99, &*three_tally),
        ] {
            println!(
                "  {name:<34} {rate:>9.0} decisions/s  p50 {p50:>9.1?}  p99 {p99:>9.1?}  server {:>5.2} us",
                tally.server_us()
            );
        }
        println!(
            "  throughput {:.0}% of raw (goal >= 70%), p99 {:.2}x raw (goal <= 1.2x)",
            100.0 * our_rate / raw_rate,
            our_p99.as_secs_f64() / raw_p99.as_secs_f64()
        );
        println!(
            "  against the raw EVALSHA of the crate's script: throughput {:.0}%, p99 {:.2}x",
            100.0 * our_rate / full_rate,
            our_p99.as_secs_f64() / full_p99.as_secs_f64()
        );
        println!(
            "  the crate's script against the 3-key script (raw): throughput {:.2}x, server time {:.2}x",
            full_rate / three_rate,
            full_tally.server_us() / three_tally.server_us()
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: do nothing then.
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    in_process();
    on_redis();
}
