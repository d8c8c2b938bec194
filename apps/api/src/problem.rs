//! `application/problem+json` errors (RFC 9457) carrying the request id.
//!
//! Handlers return [`Problem`]. Errors made outside the handlers (an unknown route, a wrong method,
//! a body over the limit, a timeout) are plain responses; [`problem_layer`] turns every error
//! response that is not already a problem, and not a handler's own JSON document (a 503 health
//! report), into one, so that every error the API gives has one shape. Handlers read their input
//! through [`Json`], [`Query`] and [`Path`], whose rejections are problems with the statuses the
//! OpenAPI document lists (415, 422), never axum's plain-text 400 (decision 0091).

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

/// Whether the request says its body is JSON (`application/json` or a `+json` type).
#[must_use]
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .is_some_and(|media| media == "application/json" || media.ends_with("+json"))
}

/// The 415 problem for a body that is not declared as JSON.
#[must_use]
pub fn not_json() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send the body as application/json (Content-Type: application/json)",
    )
}

/// A JSON body read like every other input of this API: 415 when it is not declared as JSON,
/// 422 when it does not parse or does not match the type (never axum's plain-text 400).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(request.headers()) {
            return Err(not_json());
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))?;
        json_object(&bytes).map(Json).map_err(|problem| *problem)
    }
}

/// Reads a JSON object into `T`: a 422 problem when the body does not parse, is not an object
/// (serde would take an array for a struct's fields in order) or does not match `T`.
///
/// # Errors
///
/// The 422 problem.
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Box<Problem>> {
    let unreadable = |error: &dyn std::fmt::Display| {
        Box::new(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body could not be read: {error}"),
        ))
    };
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value @ serde_json::Value::Object(_)) => {
            serde_json::from_value(value).map_err(|error| unreadable(&error))
        }
        Ok(_) => Err(unreadable(&"expected a JSON object")),
        Err(error) => Err(unreadable(&error)),
    }
}

/// A query string read into `T`; a 422 problem naming the field when it does not fit.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text())
            })
    }
}

/// Path parameters read into `T`; a 422 problem when a segment does not fit (not UTF-8 once
/// percent-decoded, not a number).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for Path<T>
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                let status = if rejection.status().is_server_error() {
                    rejection.status()
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                Problem::new(status, rejection.body_text())
            })
    }
}
