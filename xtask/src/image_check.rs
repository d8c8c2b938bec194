//! `cargo xtask image-check`: what the container image will hold and how fast it starts, measured
//! on the host since no container engine runs here (decision 0103; figures in BENCHMARKS.md).
//!
//! Builds the release binary as the Dockerfile does (`cargo build --locked --release -p
//! mainstay-api`, then `strip --strip-debug`), reports its size as built, as the image ships it
//! and fully stripped, then starts the image's copy [`RUNS`] times on a fresh data directory and
//! reports the median time from the exec to the first 200 of `/health/startup`. A command, not a
//! CI step: the release build takes minutes.
//! That the binary runs as the image's unprivileged uid with only its data directory writable is
//! an end-to-end test (`tests/tests/it/unprivileged.rs`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Start-ups measured; the median is reported.
const RUNS: usize = 5;

/// How long one start-up may take before the measurement gives up.
const START_LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn run() -> Result<()> {
    crate::run_command(crate::cargo().args([
        "build",
        "--locked",
        "--release",
        "--package",
        "mainstay-api",
        "--bin",
        "mainstay-api",
    ]))?;
    let binary = crate::ci::target_directory()?.join("release/mainstay-api");
    let size = std::fs::metadata(&binary)
        .with_context(|| format!("no release binary at {}", binary.display()))?
        .len();
    let scratch = std::env::temp_dir().join(format!("mainstay-image-check-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let measured = (|| -> Result<(u64, u64, Vec<Duration>)> {
        // What the Dockerfile ships (symbols kept, line tables dropped), and the floor.
        let shipped = scratch.join("mainstay-api");
        let bare = scratch.join("mainstay-api.stripped");
        for (flag, out) in [("--strip-debug", &shipped), ("--strip-all", &bare)] {
            crate::run_command(
                Command::new("strip")
                    .arg(flag)
                    .arg(&binary)
                    .arg("-o")
                    .arg(out),
            )?;
        }
        let mut startups = Vec::new();
        for run in 0..RUNS {
            startups.push(startup(&shipped, &scratch.join(format!("run-{run}")))?);
        }
        Ok((
            std::fs::metadata(&shipped)?.len(),
            std::fs::metadata(&bare)?.len(),
            startups,
        ))
    })();
    std::fs::remove_dir_all(&scratch)?;
    let (shipped_size, bare_size, mut startups) = measured?;
    let shown: Vec<String> = startups
        .iter()
        .map(|elapsed| format!("{:.1}", elapsed.as_secs_f64() * 1000.0))
        .collect();
    startups.sort();
    let median = startups[RUNS / 2];
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!("release binary: {}", binary.display());
    println!(
        "size: {size} bytes ({:.1} MiB) as built; {shipped_size} bytes ({:.1} MiB) as the image ships it (strip --strip-debug); {bare_size} bytes ({:.1} MiB) fully stripped",
        mib(size),
        mib(shipped_size),
        mib(bare_size)
    );
    println!(
        "start-up of the image's copy, exec to /health/startup 200: median {:.1} ms of {RUNS} runs ({} ms)",
        median.as_secs_f64() * 1000.0,
        shown.join(", ")
    );
    Ok(())
}

/// Starts the binary on a fresh data directory under `dir` and returns how long it took from
/// the exec to the first 200 of `/health/startup`.
fn startup(binary: &Path, dir: &Path) -> Result<Duration> {
    std::fs::create_dir_all(dir.join("data"))?;
    // A free port now; the race with another process taking it first is harmless here.
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = std::fs::File::create(dir.join("api.log"))?;
    let mut command = Command::new(binary);
    command
        .current_dir(dir)
        .env_clear()
        .env("MAINSTAY_SERVER__ADDR", addr.to_string())
        .env("MAINSTAY_STORAGE__DATA_DIR", dir.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let outcome = loop {
        if startup_answers_200(addr) {
            break Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("api.log")).unwrap_or_default();
            break Err(anyhow::anyhow!(
                "mainstay-api exited with {status} before /health/startup answered 200:\n{log}"
            ));
        }
        if started.elapsed() > START_LIMIT {
            break Err(anyhow::anyhow!(
                "/health/startup did not answer 200 within {START_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Whether `GET /health/startup` on `addr` answers 200 now (a refused connection is a no).
fn startup_answers_200(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health/startup HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // The status line is in the first bytes of the answer: `HTTP/1.1 200 OK`.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
