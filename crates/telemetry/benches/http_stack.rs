//! Cost of the full telemetry stack on an HTTP service, against bare axum, in one run.
//!
//! The same trivial handler is served twice on loopback: bare axum, and behind
//! `RequestIdLayer` → `TraceLayer` → router with `HttpMetricsLayer` (bunyan JSON logs at info
//! written to a file, 10% sampling, batch export to a local OTLP/HTTP receiver this bench
//! starts). A load generator drives each with `CONNECTIONS` keep-alive HTTP/1.1 connections for
//! a fixed number of requests and prints throughput, p50 and p99 per variant, the throughput
//! ratio (overall and the median of the rounds' ratios) and the added p50/p99. Variants alternate
//! over `ROUNDS` rounds after a warm-up; the log writer and the exporter are flushed after every
//! round, so that one variant's logging and export never run in the other's round. A
//! second, unloaded run (one connection, one request at a time) shows the latency the stack
//! adds to a single request when the CPU is not saturated.
//!
//! Run: `cargo bench -p mainstay-telemetry --bench http_stack`

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::MatchedPath;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mainstay_telemetry::TelemetryConfig;
use mainstay_telemetry::http::{HttpMetrics, HttpMetricsLayer, RequestIdLayer, TraceLayer};
use prometheus_client::registry::Registry;
use tower::ServiceBuilder;

/// Concurrent keep-alive connections of the load generator.
const CONNECTIONS: usize = 32;
/// Requests per measured run of one variant.
const REQUESTS: usize = 30_000;
/// Requests per variant before measuring.
const WARM_UP: usize = 5_000;
/// Requests per variant of the unloaded latency run (one connection, one request at a time).
const SEQUENTIAL: usize = 5_000;
/// Measured runs per variant, alternating bare and full.
const ROUNDS: usize = 3;

/// One variant's measurements over all its rounds.
#[derive(Debug, Default)]
struct Figures {
    latencies: Vec<Duration>,
    elapsed: Duration,
    requests: usize,
}

impl Figures {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, percent: usize) -> Duration {
        self.latencies.sort_unstable();
        let index =
            (self.latencies.len() * percent / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

async fn hello() -> &'static str {
    "hello"
}

async fn serve<S>(service: S) -> SocketAddr
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the server");
    let addr = listener.local_addr().expect("server address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, tower::make::Shared::new(service)).await;
    });
    addr
}

/// A local OTLP/HTTP receiver that accepts every export; counts the export requests.
async fn otlp_receiver(exports: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let exports = Arc::clone(&exports);
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let exports = Arc::clone(&exports);
                    async move {
                        let _ = request.into_body().collect().await?;
                        exports.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            Bytes::new(),
                        )))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends `requests` GETs over `connections` keep-alive connections; returns each latency and
/// the wall time.
async fn load(addr: SocketAddr, connections: usize, requests: usize) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let share = requests / connections + usize::from(connection < requests % connections);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, driver) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(driver);
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let request = http::Request::builder()
                    .uri("/hello")
                    .header("host", "127.0.0.1")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let sent = Instant::now();
                sender.ready().await.expect("connection ready");
                let response = sender.send_request(request).await.expect("response");
                assert_eq!(response.status(), 200);
                let _ = response.into_body().collect().await.expect("body");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.expect("load task"));
    }
    (latencies, started.elapsed())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_path = log_dir.path().join("access.log");
    let exports = Arc::new(AtomicU64::new(0));

    let (bare, full, guard) = runtime.block_on(async {
        let receiver = otlp_receiver(Arc::clone(&exports)).await;
        let config = TelemetryConfig {
            sampling_ratio: 0.1,
            otlp_endpoint: Some(format!("http://{receiver}")),
            log_filter: "info".into(),
            ..TelemetryConfig::default()
        };
        let file = std::fs::File::create(&log_path).expect("log file");
        // As the app does: global subscriber, propagator, log lines through the writer thread.
        let guard = mainstay_telemetry::init_with_writer(&config, std::sync::Mutex::new(file))
            .expect("telemetry");

        let bare = serve(Router::new().route("/hello", get(hello))).await;
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let router = Router::new()
            .route("/hello", get(hello))
            .layer(HttpMetricsLayer::new(metrics, |extensions| {
                extensions
                    .get::<MatchedPath>()
                    .map(|path| path.as_str().to_owned())
            }));
        let full = serve(
            ServiceBuilder::new()
                .layer(RequestIdLayer::new())
                .layer(TraceLayer::new())
                .service(router),
        )
        .await;
        (bare, full, guard)
    });

    let mut figures = [Figures::default(), Figures::default()];
    let mut sequential = [Figures::default(), Figures::default()];
    // The full stack's log lines and spans are written and exported before the next round starts,
    // so that none of its work lands in the bare variant's round.
    let flush = || {
        guard
            .force_flush()
            .expect("flush the log writer and the exporter")
    };
    runtime.block_on(async {
        load(bare, CONNECTIONS, WARM_UP).await;
        load(full, CONNECTIONS, WARM_UP).await;
    });
    flush();
    let mut round_ratios = Vec::new();
    for _ in 0..ROUNDS {
        let mut throughput = [0.0; 2];
        for ((slot, addr), rate) in figures.iter_mut().zip([bare, full]).zip(&mut throughput) {
            let (latencies, elapsed) = runtime.block_on(load(addr, CONNECTIONS, REQUESTS));
            flush();
            slot.latencies.extend(latencies);
            slot.elapsed += elapsed;
            slot.requests += REQUESTS;
            *rate = REQUESTS as f64 / elapsed.as_secs_f64();
        }
        round_ratios.push(throughput[1] / throughput[0]);
    }
    for (slot, addr) in sequential.iter_mut().zip([bare, full]) {
        let (latencies, elapsed) = runtime.block_on(load(addr, 1, SEQUENTIAL));
        flush();
        slot.latencies.extend(latencies);
        slot.elapsed += elapsed;
        slot.requests += SEQUENTIAL;
    }
    round_ratios.sort_by(f64::total_cmp);
    let flush = guard.shutdown();
    let log_lines = std::fs::read_to_string(&log_path)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    let full_requests = WARM_UP + ROUNDS * REQUESTS + SEQUENTIAL;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "http_stack: same handler, bare axum vs full telemetry stack, loopback, one process"
    );
    for (title, [mut bare, mut full]) in [
        (
            format!(
                "saturated: {CONNECTIONS} keep-alive connections, {ROUNDS} x {REQUESTS} requests per variant"
            ),
            figures,
        ),
        (
            format!("unloaded: 1 connection, {SEQUENTIAL} sequential requests per variant"),
            sequential,
        ),
    ] {
        let (bare_p50, bare_p99) = (bare.percentile(50), bare.percentile(99));
        let (full_p50, full_p99) = (full.percentile(50), full.percentile(99));
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
        let _ = writeln!(out, "{title}");
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>10} {:>10}",
            "variant", "req/s", "p50 us", "p99 us"
        );
        for (name, figures, p50, p99) in [
            ("bare", &bare, bare_p50, bare_p99),
            ("full", &full, full_p50, full_p99),
        ] {
            let _ = writeln!(
                out,
                "  {name:<8} {:>10.0} {:>10.1} {:>10.1}",
                figures.throughput(),
                micros(p50),
                micros(p99)
            );
        }
        let _ = writeln!(
            out,
            "  throughput ratio full/bare: {:.3}; added p50: {:.1} us; added p99: {:.1} us",
            full.throughput() / bare.throughput(),
            micros(full_p50) - micros(bare_p50),
            micros(full_p99) - micros(bare_p99)
        );
    }
    let _ = writeln!(
        out,
        "throughput ratio full/bare per round (sorted): {}; median {:.3}",
        round_ratios
            .iter()
            .map(|ratio| format!("{ratio:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        round_ratios[round_ratios.len() / 2]
    );
    let _ = writeln!(
        out,
        "log lines: {log_lines} for {full_requests} full-stack requests ({:.2} per request); \
         OTLP exports received: {}; final flush: {}",
        log_lines as f64 / full_requests as f64,
        exports.load(Ordering::Relaxed),
        if flush.is_ok() { "ok" } else { "failed" }
    );
}
