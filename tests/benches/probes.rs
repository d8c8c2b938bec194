//! Health probes under loopback load, beside a bare handler, in one run.
//!
//! Serves the real `mainstay-api` router (every layer: request id, trace span and JSON access log
//! to a file, metrics, problem+json, timeout) and a bare axum handler, and drives `/hello` (bare),
//! `/health/live` and a cached `/health/ready` with the same load: `CONNECTIONS` keep-alive
//! connections, `ROUNDS` alternating rounds of `REQUESTS` each after a warm-up, the log writer
//! flushed after each. Logging goes through the app's own path (`mainstay_telemetry::init`: the
//! global subscriber and the non-blocking writer thread), to a file. Prints
//! throughput, p50 and p99 per target and the ratios.
//!
//! Run: `cargo xtask bench probes` (or `cargo bench -p mainstay-tests --bench probes`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use mainstay_api::config::Config;
use mainstay_tests::load::{Figures, run};

const CONNECTIONS: usize = 32;
const REQUESTS: usize = 20_000;
const WARM_UP: usize = 2_000;
const ROUNDS: usize = 3;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_file = std::fs::File::create(log_dir.path().join("access.log")).expect("log file");
    let (targets, guard) = runtime.block_on(async {
        let mut config = Config::default();
        config.telemetry.sampling_ratio = 0.1;
        // The app's own log path (`mainstay_telemetry::init`): the global subscriber and the
        // non-blocking writer thread, writing to a file instead of stdout.
        let guard =
            mainstay_telemetry::init_with_writer(&config.telemetry, log_file).expect("telemetry");
        config.storage.data_dir = log_dir.path().join("data");
        let app = mainstay_api::app::build(config).await.expect("app");
        app.health.mark_started();
        let api = serve(app.router).await;
        let bare =
            serve(Router::new().route("/hello", get(|| async { "{\"status\":\"healthy\"}" })))
                .await;
        let targets = [
            ("bare /hello", bare, "/hello"),
            ("/health/live", api, "/health/live"),
            ("/health/ready (cached)", api, "/health/ready"),
        ];
        (targets, guard)
    });
    let mut figures: Vec<Figures> = vec![Figures::default(); targets.len()];
    // Each target's log lines are written before the next target's round starts.
    let flush = || guard.force_flush().expect("flush the log writer");
    for (_, addr, path) in &targets {
        runtime
            .block_on(run(*addr, path, CONNECTIONS, WARM_UP, 200))
            .expect("warm-up");
        flush();
    }
    for _ in 0..ROUNDS {
        for (index, (_, addr, path)) in targets.iter().enumerate() {
            let round = runtime
                .block_on(run(*addr, path, CONNECTIONS, REQUESTS, 200))
                .expect("load");
            flush();
            figures[index].absorb(round);
        }
    }
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "probes: {CONNECTIONS} keep-alive connections, {ROUNDS} x {REQUESTS} requests per target"
    );
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>10}",
        "target", "req/s", "p50 us", "p99 us"
    );
    let mut summary = Vec::new();
    for ((name, _, _), figures) in targets.iter().zip(figures.iter_mut()) {
        let (p50, p99) = (figures.percentile(50), figures.percentile(99));
        let _ = writeln!(
            out,
            "{name:<24} {:>10.0} {:>10.1} {:>10.1}",
            figures.throughput(),
            micros(p50),
            micros(p99)
        );
        summary.push((figures.throughput(), p99));
    }
    if let [bare, live, ready] = summary[..] {
        let _ = writeln!(
            out,
            "live/bare throughput {:.3}, p99 {:.2}x; ready/live throughput {:.3}, p99 {:.2}x; live p99 {:.0} us (goal < 1000 us)",
            live.0 / bare.0,
            micros(live.1) / micros(bare.1),
            ready.0 / live.0,
            micros(ready.1) / micros(live.1),
            micros(live.1),
        );
    }
}
