//! The tower layer on an axum router inside the crate: headers, 429 bodies, bypass, proxies.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, put};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use mainstay_clock::ManualClock;
use mainstay_ratelimit::layer::{RateLimitLayer, problem_response};
use mainstay_ratelimit::{CallerIdentity, LimitSpec, RateLimitConfig, RateLimiter};
use tower::ServiceExt;

/// Puts the test's caller and peer where an application's auth layer and server would.
async fn inject(mut request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(tier) = header("x-test-tier") {
        let organisation = header("x-test-org").unwrap_or_else(|| "acme".into());
        let principal = header("x-test-principal");
        let caller = CallerIdentity {
            organisation,
            tier,
            plan: header("x-test-plan").unwrap_or_else(|| "free".into()),
            principal,
        };
        request.extensions_mut().insert(caller);
    }
    let peer: SocketAddr = header("x-test-peer")
        .and_then(|peer| peer.parse().ok())
        .unwrap_or_else(|| "192.0.2.1:40000".parse().unwrap());
    request.extensions_mut().insert(peer);
    next.run(request).await
}

pub(crate) fn app(limiter: RateLimiter) -> Router {
    let layer = RateLimitLayer::builder(limiter)
        .route_template(|extensions| {
            extensions
                .get::<MatchedPath>()
                .map(|path| path.as_str().to_owned())
        })
        .identity(|extensions| extensions.get::<CallerIdentity>().cloned())
        .peer_address(|extensions| extensions.get::<SocketAddr>().map(SocketAddr::ip))
        .build::<Body>();
    Router::new()
        .route(
            "/v1/collections/{collection}/records/{id}",
            put(|| async { "stored" }).get(|| async { "record" }),
        )
        .route("/v1/whoami", get(|| async { "me" }))
        .route_layer(layer)
        .layer(middleware::from_fn(inject))
}

/// A configuration where the tier limits speak (the route class is generous).
fn tier_config() -> RateLimitConfig {
    let mut config = RateLimitConfig::default();
    config
        .route_classes
        .insert("default".into(), LimitSpec::per_minute(1_000_000));
    config
}

fn limiter(config: RateLimitConfig, clock: &ManualClock) -> RateLimiter {
    RateLimiter::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap()
}

async fn call(router: &Router, headers: &[(&str, &[u8])]) -> Response {
    call_path(router, "GET", "/v1/whoami", headers).await
}

async fn call_path(
    router: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> Response {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn rate_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
        "retry-after",
    ]
    .iter()
    .filter_map(|name| {
        headers
            .get(*name)
            .map(|value| ((*name).to_owned(), value.to_str().unwrap().to_owned()))
    })
    .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[tokio::test]
async fn headers_and_429_bodies_are_exact_for_each_tier() {
    // (tier, principal, limit per minute, Retry-After after the burst)
    let tiers: [(&str, Option<&str>, u32); 3] = [
        ("anonymous", None, 100),
        ("api-key", Some("key-a"), 1_000),
        ("premium", Some("key-p"), 5_000),
    ];
    for (tier, principal, limit) in tiers {
        let clock = ManualClock::new();
        let router = app(limiter(tier_config(), &clock));
        // The enterprise quota (100,000/h) stays out of the way of the tier limits.
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("x-test-tier", tier.as_bytes()),
            ("x-test-plan", b"enterprise"),
        ];
        if let Some(principal) = principal {
            headers.push(("x-test-principal", principal.as_bytes()));
        }
        let first = call(&router, &headers).await;
        assert_eq!(first.status(), StatusCode::OK);
        let name = format!("tier:{tier}");
        let remaining = (limit - 1).to_string();
        assert_eq!(
            rate_headers(first.headers()),
            pairs(&[
                ("x-ratelimit-limit", &limit.to_string()),
                ("x-ratelimit-remaining", &remaining),
                ("x-ratelimit-reset", "1"),
                ("ratelimit-policy", &format!("\"{name}\";q={limit};w=60")),
                ("ratelimit", &format!("\"{name}\";r={remaining};t=1")),
            ]),
            "{tier}"
        );
        for _ in 1..limit {
            assert_eq!(call(&router, &headers).await.status(), StatusCode::OK);
        }
        headers.push(("x-request-id", b"req-42"));
        let denied = call(&router, &headers).await;
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS, "{tier}");
        assert_eq!(
            rate_headers(denied.headers()),
            pairs(&[
                ("x-ratelimit-limit", &limit.to_string()),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "60"),
                ("ratelimit-policy", &format!("\"{name}\";q={limit};w=60")),
                ("ratelimit", &format!("\"{name}\";r=0;t=60")),
                ("retry-after", "1"),
            ]),
            "{tier}"
        );
        assert_eq!(denied.headers()["content-type"], "application/problem+json");
        let body = denied.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "about:blank",
                "title": "Too Many Requests",
                "status": 429,
                "detail": format!("too many requests for {name}: retry after 1 s"),
                "request_id": "req-42",
            })
        );
        // Waiting the Retry-After succeeds.
        clock.advance(Duration::from_secs(1));
        assert_eq!(call(&router, &headers).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn route_templates_pick_the_route_class() {
    let clock = ManualClock::new();
    let router = app(limiter(RateLimitConfig::default(), &clock));
    let headers: [(&str, &[u8]); 2] = [("x-test-tier", b"api-key"), ("x-test-principal", b"k")];
    let path = "/v1/collections/things/records/7";
    let write = call_path(&router, "PUT", path, &headers).await;
    assert_eq!(
        write.headers()["ratelimit-policy"],
        "\"class:writes\";q=60;w=60"
    );
    let read = call_path(&router, "GET", path, &headers).await;
    assert_eq!(
        read.headers()["ratelimit-policy"],
        "\"class:default\";q=100;w=60"
    );
    // The write class is its own bucket: 20 writes at once (19 more), then a denial.
    for _ in 0..19 {
        assert_eq!(
            call_path(&router, "PUT", path, &headers).await.status(),
            StatusCode::OK
        );
    }
    let denied = call_path(&router, "PUT", path, &headers).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        call_path(&router, "GET", path, &headers).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_callers_bypass_every_limit() {
    let clock = ManualClock::new();
    let mut config = tier_config();
    config.plans.insert("free".into(), LimitSpec::per_hour(1));
    let router = app(limiter(config, &clock));
    let headers: [(&str, &[u8]); 2] = [("x-test-tier", b"admin"), ("x-test-principal", b"root")];
    for _ in 0..50 {
        let response = call(&router, &headers).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(rate_headers(response.headers()).is_empty());
    }
    // The same organisation's ordinary key is still limited by the plan.
    let ordinary: [(&str, &[u8]); 2] = [("x-test-tier", b"api-key"), ("x-test-principal", b"k")];
    assert_eq!(call(&router, &ordinary).await.status(), StatusCode::OK);
    assert_eq!(
        call(&router, &ordinary).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let clock = ManualClock::new();
    let mut config = tier_config();
    config.trusted_proxies = vec!["10.0.0.0/8".into()];
    let router = app(limiter(config, &clock));
    let remaining = |response: &Response| {
        response.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // From an untrusted peer, every forged address lands in the peer's own bucket.
    for (index, forged) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let response = call(
            &router,
            &[
                ("x-test-peer", b"203.0.113.5:1234"),
                ("x-forwarded-for", forged.as_bytes()),
            ],
        )
        .await;
        assert_eq!(remaining(&response), (99 - index).to_string());
    }
    // Through a trusted proxy, each client has its own bucket.
    for client in ["198.51.100.1", "198.51.100.2"] {
        let response = call(
            &router,
            &[
                ("x-test-peer", b"10.1.1.1:1234"),
                ("x-forwarded-for", client.as_bytes()),
            ],
        )
        .await;
        assert_eq!(remaining(&response), "99");
    }
}

#[tokio::test]
async fn malformed_headers_never_cause_a_server_error() {
    let clock = ManualClock::new();
    let mut config = tier_config();
    config.trusted_proxies = vec!["0.0.0.0/0".into()];
    config.tiers.insert(
        "anonymous".into(),
        mainstay_ratelimit::TierConfig::limited(LimitSpec::per_minute(2)),
    );
    let router = app(limiter(config, &clock));
    let garbage: [&[u8]; 5] = [b"\xff\xfe\xfd", b"", b",,,", b"1.2.3.4, [::1", b"999.1.1.1"];
    for value in garbage {
        for _ in 0..3 {
            let response = call(
                &router,
                &[("x-forwarded-for", value), ("x-request-id", b"\xff\xfe")],
            )
            .await;
            assert!(
                response.status() == StatusCode::OK
                    || response.status() == StatusCode::TOO_MANY_REQUESTS,
                "{value:?}: {}",
                response.status()
            );
        }
    }
    // A rejection with an unreadable request id has no `request_id`.
    let denied = call(&router, &[("x-request-id", b"\xff\xfe")]).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = denied.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(body.get("request_id").is_none());
}

#[tokio::test]
async fn the_application_renders_rejections_and_the_layer_adds_the_headers() {
    let clock = ManualClock::new();
    let mut config = tier_config();
    config.tiers.insert(
        "anonymous".into(),
        mainstay_ratelimit::TierConfig::limited(LimitSpec::per_minute(1)),
    );
    let layer = RateLimitLayer::builder(limiter(config, &clock)).render(|rejection| {
        let mut response = problem_response::<Body>(rejection);
        response
            .headers_mut()
            .insert("x-rendered-by", HeaderValue::from_static("app"));
        // Even a wrong status from the hook ends up a 429.
        *response.status_mut() = StatusCode::OK;
        response
    });
    let router = Router::new()
        .route("/v1/whoami", get(|| async { "me" }))
        .route_layer(layer);
    assert_eq!(call(&router, &[]).await.status(), StatusCode::OK);
    let denied = call(&router, &[]).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["x-rendered-by"], "app");
    assert_eq!(denied.headers()["retry-after"], "60");
}

#[tokio::test]
async fn disabled_limits_pass_everything_without_headers() {
    let clock = ManualClock::new();
    let config = RateLimitConfig {
        enabled: false,
        ..tier_config()
    };
    let router = app(limiter(config, &clock));
    for _ in 0..150 {
        let response = call(&router, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(rate_headers(response.headers()).is_empty());
    }
}
