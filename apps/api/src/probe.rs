//! `mainstay-api probe live|ready|startup [--addr ADDR]`: a container health check that needs no
//! shell and no curl (decision 0103).
//!
//! One `GET` of the probe's path over HTTP/1.1, bounded by [`TIMEOUT`] from the start of the
//! connection to the end of the answer's first bytes of body. A 2xx is healthy; anything else is a
//! [`ProbeError`] that says what failed in one line. The address is `--addr` or the configured
//! `server.addr`, where a wildcard bind address (`0.0.0.0`, `[::]`) is probed on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

/// The whole probe's time limit: connection, request and answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How much of an unhealthy answer's body the error quotes.
const EXCERPT_BYTES: usize = 200;

/// Which health route to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Probe {
    /// `GET /health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    /// `GET /health/startup`.
    Startup,
}

impl Probe {
    /// The route this probe asks.
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Self::Live => "/health/live",
            Self::Ready => "/health/ready",
            Self::Startup => "/health/startup",
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No TCP connection: nothing listens there (connection refused), no route, ...
    #[error("GET http://{addr}{path}: could not connect: {source}")]
    Connect {
        /// The address probed.
        addr: SocketAddr,
        /// The route asked.
        path: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The connection opened but the request or its answer failed (closed early, not HTTP).
    #[error("GET http://{addr}{path}: {source}")]
    Http {
        /// The address probed.
        addr: SocketAddr,
        /// The route asked.
        path: &'static str,
        /// What went wrong in the exchange.
        source: hyper::Error,
    },
    /// No complete answer within the time limit.
    #[error("GET http://{addr}{path}: no answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The address probed.
        addr: SocketAddr,
        /// The route asked.
        path: &'static str,
        /// The limit that ran out.
        timeout: Duration,
    },
    /// The service answered with a status other than 2xx.
    #[error("GET http://{addr}{path}: {status}: {excerpt}")]
    Status {
        /// The address probed.
        addr: SocketAddr,
        /// The route asked.
        path: &'static str,
        /// The status of the answer.
        status: http::StatusCode,
        /// The start of the answer's body on one line.
        excerpt: String,
    },
}

/// The address to connect to for a service bound to `bind`: a wildcard address (`0.0.0.0`,
/// `[::]`) is reached on the loopback address of its family.
#[must_use]
pub fn target(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// Asks `probe`'s route on `addr` and succeeds on a 2xx answer within `timeout`.
pub async fn run(addr: SocketAddr, probe: Probe, timeout: Duration) -> Result<(), ProbeError> {
    let path = probe.path();
    match tokio::time::timeout(timeout, exchange(addr, path)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::Timeout {
            addr,
            path,
            timeout,
        }),
    }
}

async fn exchange(addr: SocketAddr, path: &'static str) -> Result<(), ProbeError> {
    let http = |source| ProbeError::Http { addr, path, source };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, path, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection task ends with the exchange: the process exits right after.
    tokio::spawn(connection);
    let mut request = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *request.uri_mut() = http::Uri::from_static(path);
    let headers = request.headers_mut();
    if let Ok(host) = http::HeaderValue::from_str(&addr.to_string()) {
        headers.insert(http::header::HOST, host);
    }
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("mainstay-api-probe"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // Only the first bytes are quoted: read frames until there are enough or the body ends.
    let mut body = response.into_body();
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    excerpt.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    Err(ProbeError::Status {
        addr,
        path,
        status,
        excerpt: one_line(&excerpt),
    })
}

/// The first [`EXCERPT_BYTES`] of `body` as one line of text (`(empty body)` when there is none).
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match (line.is_empty(), body.len() > EXCERPT_BYTES) {
        (true, _) => "(empty body)".to_owned(),
        (false, true) => format!("{line}..."),
        (false, false) => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_probed_on_loopback() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:9000", "[::1]:9000"),
            ("10.1.2.3:8080", "10.1.2.3:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[fe80::1]:80", "[fe80::1]:80"),
        ];
        for (bind, expected) in cases {
            let bind: SocketAddr = bind.parse().unwrap();
            assert_eq!(target(bind).to_string(), expected, "{bind}");
        }
    }

    #[test]
    fn an_excerpt_is_one_line_and_bounded() {
        assert_eq!(
            one_line(b"{\n  \"status\": \"unhealthy\"\n}\n"),
            "{ \"status\": \"unhealthy\" }"
        );
        assert_eq!(one_line(b""), "(empty body)");
        let long = vec![b'x'; 500];
        let excerpt = one_line(&long);
        assert_eq!(excerpt.len(), EXCERPT_BYTES + 3);
        assert!(excerpt.ends_with("..."));
    }
}
