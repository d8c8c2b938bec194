//! Authentication of `/v1` callers by API key, and the caller identity later layers read.
//!
//! A caller presents its key as `Authorization: Bearer KEY` or `X-Api-Key: KEY`. Configured keys are
//! stored as SHA-256 hashes; the presented key is hashed and looked up. An unknown key is a 401,
//! never a fresh anonymous caller. With `auth.allow_anonymous` a caller without a key is anonymous
//! in the `public` organisation. The caller's identity goes into the request extensions as
//! [`Caller`]; its `principal` is an HMAC of the key hash or the client address under
//! `ratelimit.secret` (the rate limiter's hasher, so instances sharing the secret agree), so that
//! neither a key nor an address is ever stored or logged raw.
//!
//! Failed authentications (an unknown key, or a credential header that is not a key) are counted
//! per client network, the rate limiter's prefix identity of the client address after
//! `ratelimit.trusted_proxies`, through the limiter (on Redis when it has Redis). Past
//! `auth.failure_limit` they are answered 429 with `Retry-After` instead of 401, so keys cannot be
//! guessed at speed; a valid key is never throttled. Each failure is counted in
//! `auth_failures_total`, and a throttled network gets one warn line a minute.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use sha2::{Digest, Sha256};

use mainstay_ratelimit::{EventLimit, IdentityHasher, InProcessLimiter, LimitSpec, RateLimiter};

use crate::config::{AuthConfig, ConfigError, Plan, Tier, from_ratelimit};
use crate::problem::Problem;

/// The event name of failed authentications in the rate limiter (on Redis, the field
/// `e:auth-failure` of the client network's hash `PREFIX:{NETWORK}`; its decisions are counted
/// under `policy="event:auth-failure"`).
pub const AUTH_FAILURE_EVENT: &str = "auth-failure";

/// How many client networks the warn-line limiter remembers.
const WARNED_NETWORKS: usize = 10_000;

/// The organisation anonymous callers belong to.
pub const PUBLIC_ORGANISATION: &str = "public";

/// Who is calling: put on every authenticated `/v1` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Caller {
    /// The organisation the caller acts for.
    pub organisation: String,
    /// The caller's tier.
    #[schema(value_type = String, example = "api-key")]
    pub tier: Tier,
    /// The organisation's plan.
    #[schema(value_type = String, example = "free")]
    pub plan: Plan,
    /// A stable pseudonym of the key or client address (HMAC-SHA256 under `ratelimit.secret`,
    /// 32 hex digits), safe to log and to use as a rate-limit key.
    pub principal: String,
}

/// Labels of `auth_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    /// `unknown_key` or `malformed_key`.
    reason: &'static str,
    /// `rejected` (answered 401) or `throttled` (answered 429).
    outcome: &'static str,
}

/// The configured keys, by hash, the anonymous policy and the throttle of failed attempts.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<HashMap<[u8; 32], (String, Tier, Plan)>>,
    allow_anonymous: bool,
    hasher: IdentityHasher,
    limiter: RateLimiter,
    failures: EventLimit,
    /// One warn line per throttled network per minute.
    warned: Arc<InProcessLimiter>,
    failure_counts: Family<FailureLabels, Counter>,
    /// SHA-256 digests of the keys of erased organisations: answered 403 `.../organisation-erased`
    /// (see [`crate::erasure`]).
    erased_keys: Arc<parking_lot::RwLock<std::collections::HashSet<[u8; 32]>>>,
}

impl Authenticator {
    /// Builds the key table from validated configuration; failed attempts are counted through
    /// `limiter` and `auth_failures_total` is registered in `registry`.
    ///
    /// # Errors
    ///
    /// `auth.failure_limit` is not a valid limit.
    pub fn new(
        config: &AuthConfig,
        limiter: &RateLimiter,
        registry: &mut Registry,
    ) -> Result<Self, ConfigError> {
        let keys = config
            .api_keys
            .iter()
            .filter_map(|entry| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&entry.key_sha256, &mut hash).ok()?;
                Some((hash, (entry.organisation.clone(), entry.tier, entry.plan)))
            })
            .collect();
        let invalid = |error: mainstay_ratelimit::ConfigError| from_ratelimit(&error);
        let failures = limiter
            .event_limit(
                AUTH_FAILURE_EVENT,
                "auth.failure_limit",
                &config.failure_limit,
            )
            .map_err(invalid)?;
        let warned = InProcessLimiter::with_real_clock(
            &LimitSpec::new(1, Duration::from_secs(60)),
            WARNED_NETWORKS,
        )
        .map_err(invalid)?;
        let failure_counts = Family::<FailureLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Failed authentications of /v1 callers, by reason (unknown_key, malformed_key) and outcome (rejected: 401, throttled: 429)",
            failure_counts.clone(),
        );
        Ok(Self {
            keys: Arc::new(keys),
            allow_anonymous: config.allow_anonymous,
            hasher: limiter.hasher().clone(),
            limiter: limiter.clone(),
            failures,
            warned: Arc::new(warned),
            failure_counts,
            erased_keys: Arc::default(),
        })
    }

    /// The SHA-256 digests of the configured keys of `organisation`.
    #[must_use]
    pub fn key_hashes_of(&self, organisation: &str) -> Vec<[u8; 32]> {
        let mut hashes: Vec<[u8; 32]> = self
            .keys
            .iter()
            .filter(|(_, (owner, _, _))| owner == organisation)
            .map(|(hash, _)| *hash)
            .collect();
        hashes.sort_unstable();
        hashes
    }

    /// Refuses these keys (SHA-256 digests) from now on with 403 `.../organisation-erased`: the
    /// keys of an erased organisation. A key configured later for the organisation (a
    /// re-issued key) has another digest and is accepted.
    pub fn block_keys(&self, hashes: impl IntoIterator<Item = [u8; 32]>) {
        self.erased_keys.write().extend(hashes);
    }

    /// The pseudonym of a client address (what `client.address` of a server span holds: the raw
    /// address never leaves the process).
    #[must_use]
    pub fn address_pseudonym(&self, client: Option<SocketAddr>) -> String {
        let address = client
            .map(|client| client.ip().to_string())
            .unwrap_or_default();
        self.hasher.pseudonym(b"addr", address.as_bytes()).to_hex()
    }

    /// Identifies the caller of a request, or says why it may not call.
    ///
    /// # Errors
    ///
    /// The presented key is unknown or malformed, or none was presented and anonymous callers are
    /// not allowed.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Result<Caller, AuthError> {
        match presented_key(headers)? {
            Some(key) => {
                let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let Some((organisation, tier, plan)) = self.keys.get(&hash) else {
                    return Err(AuthError::UnknownKey);
                };
                if self.erased_keys.read().contains(&hash) {
                    return Err(AuthError::OrganisationErased);
                }
                Ok(Caller {
                    organisation: organisation.clone(),
                    tier: *tier,
                    plan: *plan,
                    principal: self.hasher.pseudonym(b"key", &hash).to_hex(),
                })
            }
            None if self.allow_anonymous => {
                let address = client
                    .map(|client| client.ip().to_string())
                    .unwrap_or_default();
                Ok(Caller {
                    organisation: PUBLIC_ORGANISATION.into(),
                    tier: Tier::Anonymous,
                    plan: Plan::Free,
                    principal: self.hasher.pseudonym(b"addr", address.as_bytes()).to_hex(),
                })
            }
            None => Err(AuthError::KeyRequired),
        }
    }

    /// Counts a failed authentication of a request from `peer` (with its `X-Forwarded-For`
    /// headers, honoured from `ratelimit.trusted_proxies`) and answers it: 401, or 429 with
    /// `Retry-After` once the client network is past `auth.failure_limit`.
    async fn refuse(
        &self,
        error: AuthError,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Response {
        let reason = match error {
            AuthError::UnknownKey => "unknown_key",
            AuthError::MalformedKey => "malformed_key",
            // Not an attempt at a key (or a valid key of an erased organisation): nothing to
            // count.
            AuthError::KeyRequired | AuthError::OrganisationErased => {
                return error.into_response();
            }
        };
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(HeaderValue::as_bytes);
        let client = self
            .limiter
            .trusted_proxies()
            .client_address(peer.map(|peer| peer.ip()), forwarded);
        let network = match client {
            Some(address) => self.limiter.client_identity(address),
            None => self.hasher.pseudonym(b"addr", b"unknown"),
        };
        let decision = self.failures.hit(&network).await;
        let outcome = if decision.allowed {
            "rejected"
        } else {
            "throttled"
        };
        self.failure_counts
            .get_or_create(&FailureLabels { reason, outcome })
            .inc();
        if decision.allowed {
            return error.into_response();
        }
        let retry_after = decision.retry_after_secs();
        if self.warned.check_key(&network).allowed {
            tracing::warn!(
                client_network = %network.to_hex(),
                retry_after_secs = retry_after,
                backend = decision.backend.as_str(),
                "failed authentications from one client network are past `auth.failure_limit`; answering 429 until they slow down"
            );
        }
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed authentications from this network; retry after {retry_after} s with a valid key"
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after))
        .into_response()
    }
}

/// The key the caller presented, if any; a credential header that holds no usable key is
/// [`AuthError::MalformedKey`] (it is never taken for an anonymous call).
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    if let Some(value) = headers.get("x-api-key") {
        return match value.to_str().map(str::trim) {
            Ok(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(AuthError::MalformedKey),
        };
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return match bearer_token(headers) {
            Some(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(AuthError::MalformedKey),
        };
    }
    Ok(None)
}

/// The token of an `Authorization: Bearer TOKEN` header, if any (the scheme in any case).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a caller may not call `/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The presented key is not configured.
    #[error("the API key is not known; check the key or ask for a new one")]
    UnknownKey,
    /// No key was presented and anonymous callers are not allowed.
    #[error("an API key is required: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`")]
    KeyRequired,
    /// A credential header holds no usable key (an empty or non-ASCII `X-Api-Key`, or an
    /// `Authorization` header that is not `Bearer KEY`).
    #[error(
        "the credentials are malformed: send `Authorization: Bearer KEY` or `X-Api-Key: KEY` with a key of visible ASCII characters"
    )]
    MalformedKey,
    /// The key belongs to an organisation that was erased; an operator removes it or issues a
    /// new one.
    #[error(
        "the organisation of this API key was erased; the key stays refused until an operator removes it or issues a new key"
    )]
    OrganisationErased,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if self == Self::OrganisationErased {
            return Problem::typed(
                StatusCode::FORBIDDEN,
                "organisation-erased",
                "organisation erased",
                self.to_string(),
            )
            .into_response();
        }
        Problem::new(StatusCode::UNAUTHORIZED, self.to_string())
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            .into_response()
    }
}

/// Middleware for `/v1`: authenticates the caller and puts [`Caller`] on the request.
pub async fn require_caller(
    State(authenticator): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address);
    mainstay_telemetry::http::set_client_pseudonym(|| authenticator.address_pseudonym(client));
    match authenticator.authenticate(request.headers(), client) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => authenticator.refuse(error, request.headers(), client).await,
    }
}
