//! Authentication of `/v1` callers by API key, and the caller identity later layers read.
//!
//! A caller presents its key as `Authorization: Bearer KEY` or `X-Api-Key: KEY`. Configured keys are
//! stored as SHA-256 hashes; the presented key is hashed and looked up. An unknown key is a 401,
//! never a fresh anonymous caller. With `auth.allow_anonymous` a caller without a key is anonymous
//! in the `public` organisation. The caller's identity goes into the request extensions as
//! [`Caller`]; its `principal` is an HMAC of the key hash or the client address under
//! `ratelimit.secret` (the rate limiter's hasher, so instances sharing the secret agree), so that
//! neither a key nor an address is ever stored or logged raw.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use mainstay_ratelimit::IdentityHasher;

use crate::config::{AuthConfig, Plan, Tier};
use crate::problem::Problem;

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

/// The configured keys, by hash, and the anonymous policy.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<HashMap<[u8; 32], (String, Tier, Plan)>>,
    allow_anonymous: bool,
    hasher: IdentityHasher,
}

impl Authenticator {
    /// Builds the key table from validated configuration.
    #[must_use]
    pub fn new(config: &AuthConfig, hasher: IdentityHasher) -> Self {
        let keys = config
            .api_keys
            .iter()
            .filter_map(|entry| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&entry.key_sha256, &mut hash).ok()?;
                Some((hash, (entry.organisation.clone(), entry.tier, entry.plan)))
            })
            .collect();
        Self {
            keys: Arc::new(keys),
            allow_anonymous: config.allow_anonymous,
            hasher,
        }
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
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Result<Caller, AuthError> {
        match presented_key(headers) {
            Some(key) => {
                let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let Some((organisation, tier, plan)) = self.keys.get(&hash) else {
                    return Err(AuthError::UnknownKey);
                };
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
}

/// The key the caller presented, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
    {
        return Some(value.trim());
    }
    bearer_token(headers)
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
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
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
        Err(error) => error.into_response(),
    }
}
