//! `application/problem+json` errors (RFC 9457) carrying the request id.
//!
//! Handlers return [`Problem`]. Errors made outside the handlers (an unknown route, a wrong method,
//! a body over the limit, a timeout) are plain responses; [`problem_layer`] turns every error
//! response that is not already a problem, and not a handler's own JSON document (a 503 health
//! report), into one, so that every error the API gives has one shape.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The base of the problem `type` URIs this API defines; each kind appends its name
/// (`.../fenced`). Clients match on the last path segment.
pub const PROBLEM_TYPE_BASE: &str =
    "https://github.com/mainstay-rs/mainstay/blob/main/docs/problems";

/// A problem details object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id, as echoed in `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Headers to send with the problem (`WWW-Authenticate`, `Retry-After`).
    #[serde(skip)]
    pub headers: HeaderMap,
}

impl Problem {
    /// A problem with the status's reason phrase as title.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            request_id: None,
            headers: HeaderMap::new(),
        }
    }

    /// A problem of a kind this API defines: `type` is [`PROBLEM_TYPE_BASE`]`/<kind>`.
    pub fn typed(
        status: StatusCode,
        kind: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("{PROBLEM_TYPE_BASE}/{kind}"),
            title: title.into(),
            ..Self::new(status, detail)
        }
    }

    /// Adds a header to the response.
    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response.headers_mut().extend(self.headers);
        response
    }
}

/// Turns every error response into problem+json with the request id, keeping its status and
/// headers; fills in the request id of problems the handlers made.
pub async fn problem_layer(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    // A handler's own JSON answer (a 503 health report) is a deliberate body: keep it.
    if content_type.is_some_and(|value| value.starts_with(b"application/json")) {
        return response;
    }
    let is_problem = content_type.is_some_and(|value| value.starts_with(PROBLEM_JSON.as_bytes()));
    let (parts, body) = response.into_parts();
    let mut problem = if is_problem {
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut value) => {
                if let (Some(object), Some(id)) = (value.as_object_mut(), &request_id) {
                    object.insert("request_id".into(), serde_json::Value::String(id.clone()));
                }
                let mut response =
                    Response::from_parts(parts, axum::body::Body::from(value.to_string()));
                response.headers_mut().remove(header::CONTENT_LENGTH);
                return response;
            }
            Err(_) => Problem::new(status, "the service produced an unreadable error"),
        }
    } else {
        // Keep a short plain-text explanation (an extractor's rejection says which field was wrong).
        let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = std::str::from_utf8(&bytes).unwrap_or_default().trim();
        if text.is_empty() {
            Problem::new(status, default_detail(status))
        } else {
            Problem::new(status, text)
        }
    };
    problem.request_id = request_id;
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    problem.headers = headers;
    problem.into_response()
}

fn default_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no route matches this path; see /openapi.json for the routes",
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not accept this method; see the Allow header"
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than server.body_limit_bytes allows"
        }
        StatusCode::GATEWAY_TIMEOUT => {
            "the request took longer than server.request_timeout; its outcome is unknown (a write may or may not have been applied): retry it, writes are idempotent"
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            "the service is unavailable; retry later"
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "send the body as application/json",
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            "the request could not be read"
        }
        _ => "the request failed",
    }
}
