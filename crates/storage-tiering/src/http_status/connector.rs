//! [`HttpStatusConnector`]: the HTTP client wrapper that records response statuses for
//! [`observe`](super::observe) (feature `aws`).

use std::sync::Arc;

use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
    ReqwestConnector,
};

use super::LAST_STATUS;

/// S3 error codes sent with a 400 that mean the request timed out: retried like a 408.
const TIMEOUT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
];
/// S3 error codes sent with a 400 that mean throttling: retried like a 429.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
];
/// The largest 400 body whose error code is read; a larger one is passed on unread.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// An object_store [`HttpConnector`] that lets the store classify failed calls by the HTTP status
/// of the response: 408, 429 and 5xx (but 501 and 505) are retried, other 4xx go to the DLQ at
/// once.
///
/// Stores opened from an `s3://` URL use it already. Build a store you pass to
/// `StoreBuilder::object_store` with it too, otherwise a status that object_store reports only as
/// `Error::Generic` (400, 405, 411, 413, 416, 501, ...) counts as transient:
///
/// ```no_run
/// use mainstay_storage_tiering::HttpStatusConnector;
///
/// # fn main() -> Result<(), object_store::Error> {
/// let s3 = object_store::aws::AmazonS3Builder::from_env()
///     .with_bucket_name("bucket")
///     .with_http_connector(HttpStatusConnector::default())
///     .build()?;
/// # Ok(()) }
/// ```
///
/// Outside the store's own calls it only passes requests through.
#[derive(Debug, Clone)]
pub struct HttpStatusConnector {
    inner: Arc<dyn HttpConnector>,
}

impl HttpStatusConnector {
    /// Records the statuses of the clients that `inner` makes (for instance object_store's
    /// `SpawnedReqwestConnector`).
    #[must_use]
    pub fn new(inner: impl HttpConnector) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl Default for HttpStatusConnector {
    /// Over object_store's default `reqwest` client.
    fn default() -> Self {
        Self::new(ReqwestConnector::default())
    }
}

impl HttpConnector for HttpStatusConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = self.inner.connect(options)?;
        Ok(HttpClient::new(Recording { inner }))
    }
}

/// An HTTP client that records the status of each response it returns.
#[derive(Debug)]
struct Recording {
    inner: HttpClient,
}

#[async_trait::async_trait]
impl HttpService for Recording {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        // A new request makes the previous one's status stale (a 404 of a read-back, a 403 of a
        // metadata token request that fell back): only the last response of a call counts.
        record(None);
        let response = self.inner.execute(request).await?;
        let status = response.status();
        // Outside a store call (no recorder) there is nothing to learn: pass it through.
        if status.is_success() || LAST_STATUS.try_with(|_| ()).is_err() {
            return Ok(response);
        }
        if status.as_u16() != 400 || !small_body(&response) {
            record(Some(status.as_u16()));
            return Ok(response);
        }
        // Read the error body to learn its code, then hand object_store the same bytes.
        let (parts, body) = response.into_parts();
        let bytes = body.bytes().await?;
        record(Some(status_of_400(&bytes)));
        Ok(HttpResponse::from_parts(
            parts,
            HttpResponseBody::from(bytes),
        ))
    }
}

/// Whether a response says its body is at most [`MAX_ERROR_BODY`] bytes.
fn small_body(response: &HttpResponse) -> bool {
    response
        .headers()
        .get("content-length")
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|length| length <= MAX_ERROR_BODY)
}

/// The status a 400 stands for, from the `<Code>` of its S3 error body.
fn status_of_400(body: &[u8]) -> u16 {
    match s3_error_code(body) {
        Some(code) if TIMEOUT_CODES.contains(&code) => 408,
        Some(code) if THROTTLING_CODES.contains(&code) => 429,
        _ => 400,
    }
}

/// The content of the first `<Code>` element of an S3 error document.
fn s3_error_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let length = text.get(start..)?.find("</Code>")?;
    text.get(start..start + length).map(str::trim)
}

fn record(status: Option<u16>) {
    // Outside `observe` (a store used directly) there is no recorder, and nothing to do.
    let _outside = LAST_STATUS.try_with(|last| last.set(status));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_status::observe;
    use object_store::client::{HttpRequestBody, HttpResponseBody};

    /// Answers each request with the status given in its path (`/503`), after yielding once so
    /// that calls joined in one task interleave.
    #[derive(Debug)]
    struct ByPath;

    #[async_trait::async_trait]
    impl HttpService for ByPath {
        async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
            tokio::task::yield_now().await;
            let code: u16 = request
                .uri()
                .path()
                .trim_start_matches('/')
                .parse()
                .unwrap_or(200);
            let mut response = HttpResponse::new(HttpResponseBody::from(Vec::new()));
            *response.status_mut() = TryFrom::try_from(code).expect("a valid status");
            Ok(response)
        }
    }

    fn client() -> HttpClient {
        HttpClient::new(Recording {
            inner: HttpClient::new(ByPath),
        })
    }

    fn request(path: &str) -> HttpRequest {
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.uri_mut() = path.parse().expect("a valid uri");
        request
    }

    #[tokio::test]
    async fn calls_in_flight_together_in_one_task_see_their_own_status() {
        let client = client();
        // Like object_store, which reads an error response's body after the request returned.
        let call = |path| {
            let client = client.clone();
            async move {
                let response = client.execute(request(path)).await;
                tokio::task::yield_now().await;
                response
            }
        };
        let (a, b) = tokio::join!(observe(call("/400")), observe(call("/503")));
        assert_eq!((a.1, b.1), (Some(400), Some(503)));
    }

    #[tokio::test]
    async fn only_the_last_response_of_a_call_counts() {
        let client = client();
        let (_, status) = observe(async {
            let _ = client.execute(request("/404")).await;
            client.execute(request("/200")).await
        })
        .await;
        assert_eq!(status, None, "a success after a 404");
        let (_, status) = observe(async {
            let _ = client.execute(request("/200")).await;
            client.execute(request("/413")).await
        })
        .await;
        assert_eq!(status, Some(413));
    }

    #[tokio::test]
    async fn outside_a_scope_requests_pass_through() {
        let response = client().execute(request("/500")).await.expect("a response");
        assert_eq!(response.status().as_u16(), 500);
    }

    /// Answers 400 with an S3 error document whose code is the request's path (`/RequestTimeout`).
    #[derive(Debug)]
    struct S3Error400;

    #[async_trait::async_trait]
    impl HttpService for S3Error400 {
        async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
            let code = request.uri().path().trim_start_matches('/').to_owned();
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>m</Message></Error>"
            );
            let length = body.len();
            let mut response = HttpResponse::new(HttpResponseBody::from(body));
            *response.status_mut() = TryFrom::try_from(400u16).expect("a valid status");
            response
                .headers_mut()
                .insert("content-length", length.into());
            Ok(response)
        }
    }

    #[tokio::test]
    async fn a_400_that_is_a_timeout_or_throttling_by_its_s3_code_counts_as_408_or_429() {
        let client = HttpClient::new(Recording {
            inner: HttpClient::new(S3Error400),
        });
        for (code, expected) in [
            ("RequestTimeout", 408),
            ("SlowDown", 429),
            ("Throttling", 429),
            ("InvalidArgument", 400),
            ("", 400),
        ] {
            let (response, status) = observe(client.execute(request(&format!("/{code}")))).await;
            assert_eq!(status, Some(expected), "{code}");
            // object_store still gets the whole error document.
            let body = response
                .expect("a response")
                .into_body()
                .bytes()
                .await
                .expect("the body");
            assert!(
                body.ends_with(b"<Message>m</Message></Error>"),
                "{code}: {body:?}"
            );
        }
    }

    #[test]
    fn the_code_is_read_from_the_code_element_only() {
        assert_eq!(
            s3_error_code(
                b"<Error><Message>RequestTimeout</Message><Code> SlowDown </Code></Error>"
            ),
            Some("SlowDown")
        );
        assert_eq!(s3_error_code(b"<Error><Code>unterminated"), None);
        assert_eq!(s3_error_code(&[0xff, 0xfe]), None);
        assert_eq!(
            status_of_400(b"<Error><Message>RequestTimeout</Message></Error>"),
            400
        );
    }
}
