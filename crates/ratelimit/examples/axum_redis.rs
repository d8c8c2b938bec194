//! A Redis-backed rate limiter in front of an axum router.
//!
//! The limiter decides on Redis (so every instance of a service counts together); its tower layer
//! wraps the routes of an axum router served on `127.0.0.1`. The example sends requests to its own
//! server until one is limited, printing each status with its rate-limit headers: the anonymous
//! caller may make three requests a minute, so the fourth is answered `429 Too Many Requests`
//! with a `Retry-After`.
//!
//! Run with `cargo run -p mainstay-ratelimit --example axum_redis --features tower,redis`, Redis
//! from `REDIS_URL` (default `redis://127.0.0.1:6379`). Its keys get a prefix of their own and
//! expire by themselves within a minute.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath};
use axum::routing::get;
use mainstay_ratelimit::layer::RateLimitLayer;
use mainstay_ratelimit::{FallbackMode, LimitSpec, RateLimitConfig, RateLimiter, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests the anonymous caller may make per minute.
const LIMIT: u32 = 3;

/// One `GET /hello` over a new connection: the status line and the rate-limit headers.
async fn get_hello(address: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET /hello HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = answer
        .lines()
        .filter(|line| {
            let line = line.to_ascii_lowercase();
            line.starts_with("x-ratelimit-remaining") || line.starts_with("retry-after")
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok((status, headers))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // A prefix of this run's own, so that it shares no key with anything else on that Redis.
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let key_prefix = format!("example-axum-redis-{}-{started}", std::process::id());

    // Anonymous callers: three requests a minute. Fail closed if Redis does not answer, so that
    // every answer below is Redis's.
    let mut config = RateLimitConfig {
        secret: Some(Secret::new("example-secret-of-32-bytes-long!")),
        key_prefix,
        fallback: FallbackMode::Deny,
        redis_timeout: Duration::from_secs(1),
        ..RateLimitConfig::default()
    };
    config
        .route_classes
        .insert(config.default_class.clone(), LimitSpec::per_minute(1_000));
    if let Some(anonymous) = config.tiers.get_mut(&config.anonymous_tier) {
        *anonymous = mainstay_ratelimit::TierConfig::limited(LimitSpec::per_minute(LIMIT));
    }
    let limiter = RateLimiter::builder(config).redis_url(&redis_url).build()?;
    let round_trip = limiter
        .ping_redis()
        .await?
        .ok_or("the limiter has no Redis")?;
    println!("redis at {redis_url} answers in {round_trip:?}");

    // The layer reads the route template and the peer address that axum puts in the request's
    // extensions; no caller identity here, so every request is anonymous.
    let layer = RateLimitLayer::builder(limiter.clone())
        .route_template(|extensions| {
            extensions
                .get::<MatchedPath>()
                .map(|path| path.as_str().to_owned())
        })
        .peer_address(|extensions| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip())
        })
        .build::<Body>();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route_layer(layer);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            eprintln!("server stopped: {error}");
        }
    });
    println!("serving on http://{address}");

    for request in 1..=LIMIT + 2 {
        let (status, headers) = get_hello(address).await?;
        println!("request {request}: {status} ({headers})");
        if status == 429 {
            if request != LIMIT + 1 {
                return Err(
                    format!("request {request} was limited, expected {}", LIMIT + 1).into(),
                );
            }
            if limiter.fallback_active() {
                return Err("the fallback decided, not Redis".into());
            }
            println!("limited after {LIMIT} requests, as configured");
            return Ok(());
        }
        if status != 200 {
            return Err(format!("unexpected status {status}").into());
        }
    }
    Err("no request was limited".into())
}
