//! A bounded loopback load generator for benchmarks: keep-alive HTTP/1.1 connections, a fixed
//! number of requests, every latency recorded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Every request's latency, sorted once [`percentile`](Self::percentile) is called.
    pub latencies: Vec<Duration>,
    /// Wall time of the runs.
    pub elapsed: Duration,
}

impl Figures {
    /// Requests per second.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The `percent` percentile latency.
    pub fn percentile(&mut self, percent: usize) -> Duration {
        self.latencies.sort_unstable();
        let index =
            (self.latencies.len() * percent / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(index).copied().unwrap_or_default()
    }

    /// Adds another run's figures.
    pub fn absorb(&mut self, other: Figures) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }
}

/// Sends `requests` GETs of `path` to `addr` over `connections` keep-alive connections; every
/// answer must have status `expected`.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    requests: usize,
    expected: u16,
) -> Result<Figures> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let share = requests / connections + usize::from(connection < requests % connections);
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .context("connect")?;
            stream.set_nodelay(true)?;
            let (mut sender, driver) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(driver);
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let request = hyper::Request::builder()
                    .uri(path.as_str())
                    .header("host", "127.0.0.1")
                    .body(Empty::<Bytes>::new())?;
                let sent = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                latencies.push(sent.elapsed());
                if status != expected {
                    bail!("{path} answered {status}, expected {expected}");
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut figures = Figures::default();
    for task in tasks {
        figures.latencies.extend(task.await??);
    }
    figures.elapsed = started.elapsed();
    Ok(figures)
}
