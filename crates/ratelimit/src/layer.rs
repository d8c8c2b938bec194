//! A tower layer over `http` types that limits requests (feature `tower`).
//!
//! The layer knows nothing of the application's router or auth: it takes callbacks for the route
//! template, the caller and the peer address (all read from the request extensions, where the
//! router and the auth layer put them), and a hook that renders a rejection. Every limited
//! response carries `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (delta
//! seconds) and the IETF draft-10 fields `RateLimit-Policy: "NAME";q=REQUESTS;w=SECONDS` and
//! `RateLimit: "NAME";r=REMAINING;t=SECONDS`. A denial is a 429 with an integer `Retry-After` of at
//! least 1 (waiting that long succeeds). Callers whose tier bypasses limits get no headers. The
//! layer never answers 5xx itself: Redis failures go to the fallback, malformed headers are ignored.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Extensions, HeaderMap, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::identity::CallerIdentity;
use crate::limiter::{Decision, LimitRequest, RateLimiter};

/// The media type of the default rejection body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (delta seconds).
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

type RouteFn = Arc<dyn Fn(&Extensions) -> Option<String> + Send + Sync>;
type IdentityFn = Arc<dyn Fn(&Extensions) -> Option<CallerIdentity> + Send + Sync>;
type PeerFn = Arc<dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync>;
type RenderFn<B> = Arc<dyn Fn(&Rejection) -> Response<B> + Send + Sync>;

/// A denied request, handed to the rendering hook. The layer adds the rate-limit headers and
/// `Retry-After` to whatever the hook returns, and forces the status to 429.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The decision that denied the request.
    pub decision: Decision,
    /// The request's `x-request-id`, when it had a readable one.
    pub request_id: Option<String>,
}

impl Rejection {
    /// The `Retry-After` the response carries: whole seconds, at least 1.
    #[must_use]
    pub fn retry_after_secs(&self) -> u64 {
        self.decision.retry_after_secs()
    }

    /// What went wrong and what to do, for a problem's `detail`.
    #[must_use]
    pub fn detail(&self) -> String {
        let policy = self
            .decision
            .policy
            .as_ref()
            .map_or("rate limit", |policy| &policy.name);
        format!(
            "too many requests for {policy}: retry after {} s",
            self.retry_after_secs()
        )
    }

    /// The default body: an RFC 9457 problem with the request id.
    #[must_use]
    pub fn problem_json(&self) -> String {
        let mut problem = serde_json::json!({
            "type": "about:blank",
            "title": "Too Many Requests",
            "status": 429,
            "detail": self.detail(),
        });
        if let (Some(id), Some(object)) = (&self.request_id, problem.as_object_mut()) {
            object.insert("request_id".into(), id.clone().into());
        }
        problem.to_string()
    }
}

/// The default rendering: [`Rejection::problem_json`] as `application/problem+json`.
pub fn problem_response<B: From<String>>(rejection: &Rejection) -> Response<B> {
    let mut response = Response::new(B::from(rejection.problem_json()));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Sets the rate-limit headers of `decision` (nothing when no limit applied).
pub fn set_headers(headers: &mut HeaderMap, decision: &Decision) {
    let Some(policy) = &decision.policy else {
        return;
    };
    let reset = decision.reset_secs();
    let period = decision_period_secs(policy.period);
    let number = |value: u64| HeaderValue::from(value);
    headers.insert(X_RATELIMIT_LIMIT, number(u64::from(policy.requests)));
    headers.insert(X_RATELIMIT_REMAINING, number(u64::from(decision.remaining)));
    headers.insert(X_RATELIMIT_RESET, number(reset));
    // Policy names are configuration names (validated to `[A-Za-z0-9._-]` plus the `kind:`
    // prefix), so they are valid sf-strings and header values.
    if let Ok(value) = HeaderValue::from_str(&format!(
        "\"{}\";q={};w={period}",
        policy.name, policy.requests
    )) {
        headers.insert(RATELIMIT_POLICY, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!(
        "\"{}\";r={};t={reset}",
        policy.name, decision.remaining
    )) {
        headers.insert(RATELIMIT, value);
    }
    if !decision.allowed {
        headers.insert(RETRY_AFTER, number(decision.retry_after_secs()));
    }
}

fn decision_period_secs(period: std::time::Duration) -> u64 {
    (period.as_secs() + u64::from(period.subsec_nanos() > 0)).max(1)
}

/// Collects the callbacks of a [`RateLimitLayer`].
#[must_use]
pub struct RateLimitLayerBuilder {
    limiter: RateLimiter,
    route: RouteFn,
    identity: IdentityFn,
    peer: PeerFn,
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RateLimitLayerBuilder")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    /// The route template of a request (axum's `MatchedPath`, for instance). Default: none (every
    /// route is of the default class).
    pub fn route_template(
        mut self,
        route: impl Fn(&Extensions) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route = Arc::new(route);
        self
    }

    /// The caller, converted from what the application's auth layer put in the extensions.
    /// Default: none (every caller anonymous).
    pub fn identity(
        mut self,
        identity: impl Fn(&Extensions) -> Option<CallerIdentity> + Send + Sync + 'static,
    ) -> Self {
        self.identity = Arc::new(identity);
        self
    }

    /// The TCP peer's address (axum's `ConnectInfo`, for instance). Only a peer in
    /// `ratelimit.trusted_proxies` may name another client with `X-Forwarded-For`.
    pub fn peer_address(
        mut self,
        peer: impl Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(peer);
        self
    }

    /// Finishes the layer with the application's rendering of a rejection.
    pub fn render<B>(
        self,
        render: impl Fn(&Rejection) -> Response<B> + Send + Sync + 'static,
    ) -> RateLimitLayer<B> {
        RateLimitLayer {
            shared: Arc::new(Shared {
                limiter: self.limiter,
                route: self.route,
                identity: self.identity,
                peer: self.peer,
                render: Arc::new(render),
            }),
        }
    }

    /// Finishes the layer with the default rendering, [`problem_response`].
    pub fn build<B: From<String> + 'static>(self) -> RateLimitLayer<B> {
        self.render(problem_response::<B>)
    }
}

struct Shared<B> {
    limiter: RateLimiter,
    route: RouteFn,
    identity: IdentityFn,
    peer: PeerFn,
    render: RenderFn<B>,
}

/// Limits the requests of the services it wraps. See the module documentation.
///
/// ```
/// use mainstay_ratelimit::layer::RateLimitLayer;
/// use mainstay_ratelimit::{CallerIdentity, RateLimitConfig, RateLimiter};
///
/// # fn main() -> Result<(), mainstay_ratelimit::BuildError> {
/// let limiter = RateLimiter::builder(RateLimitConfig::default()).build()?;
/// let layer = RateLimitLayer::builder(limiter)
///     .route_template(|extensions| extensions.get::<String>().cloned())
///     .identity(|extensions| extensions.get::<CallerIdentity>().cloned())
///     .peer_address(|extensions| extensions.get::<std::net::SocketAddr>().map(|peer| peer.ip()))
///     .build::<String>();
/// # let _ = layer;
/// # Ok(()) }
/// ```
pub struct RateLimitLayer<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for RateLimitLayer<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B> fmt::Debug for RateLimitLayer<B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RateLimitLayer")
            .field("limiter", &self.shared.limiter)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer<()> {
    /// A builder around `limiter`.
    pub fn builder(limiter: RateLimiter) -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            limiter,
            route: Arc::new(|_| None),
            identity: Arc::new(|_| None),
            peer: Arc::new(|_| None),
        }
    }
}

impl<S, B> Layer<S> for RateLimitLayer<B> {
    type Service = RateLimit<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of a [`RateLimitLayer`].
pub struct RateLimit<S, B> {
    inner: S,
    shared: Arc<Shared<B>>,
}

impl<S: Clone, B> Clone for RateLimit<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, B> fmt::Debug for RateLimit<S, B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for RateLimit<S, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            if !shared.limiter.enabled() {
                return inner.call(request).await;
            }
            let extensions = request.extensions();
            let caller = (shared.identity)(extensions);
            let peer = (shared.peer)(extensions);
            let forwarded = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .map(HeaderValue::as_bytes);
            let client = shared
                .limiter
                .trusted_proxies()
                .client_address(peer, forwarded);
            let route = (shared.route)(extensions)
                .map(|template| format!("{} {template}", request.method()));
            let decision = shared
                .limiter
                .check(&LimitRequest {
                    caller: caller.as_ref(),
                    client,
                    route: route.as_deref(),
                })
                .await;
            if decision.allowed {
                let mut response = inner.call(request).await?;
                set_headers(response.headers_mut(), &decision);
                return Ok(response);
            }
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let rejection = Rejection {
                decision,
                request_id,
            };
            let mut response = (shared.render)(&rejection);
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            set_headers(response.headers_mut(), &rejection.decision);
            Ok(response)
        })
    }
}
