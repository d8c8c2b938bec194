//! Request ids: accept a safe incoming `x-request-id`, otherwise make one; echo it back.

#[cfg(feature = "tower")]
use std::future::Future;
#[cfg(feature = "tower")]
use std::pin::Pin;
#[cfg(feature = "tower")]
use std::task::{Context, Poll};

#[cfg(feature = "tower")]
use http::{HeaderValue, Request, Response};

/// The request id header, `x-request-id`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// [`REQUEST_ID_HEADER`] as a header name, so that it is not parsed on each request.
#[cfg(feature = "tower")]
const HEADER_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

/// Longest incoming request id that is accepted.
const MAX_LEN: usize = 128;

/// The id of the current request, in the request extensions once `RequestIdLayer` has run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is acceptable as an incoming request id: 1 to 128 characters from
    /// `A-Z a-z 0-9 - _ . :`. Anything else (empty, too long, spaces, quotes, control
    /// characters, non-ASCII) is replaced by a generated id.
    #[must_use]
    pub fn is_valid(candidate: &[u8]) -> bool {
        (1..=MAX_LEN).contains(&candidate.len())
            && candidate.iter().all(|byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':')
            })
    }

    /// A new random id: a ULID (26 characters, sortable by creation time).
    #[must_use]
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate().to_string())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(feature = "tower")]
/// Gives every request an id: the incoming `x-request-id` when [`RequestId::is_valid`] accepts
/// it, else a generated ULID. The id is set on the request header (so inner layers and
/// handlers read one trusted value), put in the request extensions as [`RequestId`], and echoed
/// on the response's `x-request-id` header.
///
/// Place it outermost, so that every inner layer and every log line sees the id.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

#[cfg(feature = "tower")]
impl RequestIdLayer {
    /// The layer.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

#[cfg(feature = "tower")]
impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[cfg(feature = "tower")]
/// The service made by [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

#[cfg(feature = "tower")]
impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RequestIdService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let incoming = request
            .headers()
            .get(&HEADER_NAME)
            .filter(|value| RequestId::is_valid(value.as_bytes()))
            .cloned();
        let (id, header) = match incoming {
            Some(header) => (
                RequestId(String::from_utf8_lossy(header.as_bytes()).into_owned()),
                header,
            ),
            None => {
                let mut text = [0; ulid::ULID_LEN];
                let id = RequestId(ulid::Ulid::generate().array_to_str(&mut text).to_owned());
                // A ULID is plain ASCII, always a valid header value. Its bytes sit in one
                // allocation shared by the request's header and the response's.
                let header = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
                (id, header)
            }
        };
        request.headers_mut().insert(HEADER_NAME, header.clone());
        request.extensions_mut().insert(id);
        RequestIdFuture {
            inner: self.inner.call(request),
            header: Some(header),
        }
    }
}

#[cfg(feature = "tower")]
pin_project_lite::pin_project! {
    /// The response future of [`RequestIdService`]: echoes the id on the response.
    #[derive(Debug)]
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        header: Option<HeaderValue>,
    }
}

#[cfg(feature = "tower")]
impl<F, ResBody, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(header) = this.header.take() {
            response.headers_mut().insert(HEADER_NAME, header);
        }
        Poll::Ready(Ok(response))
    }
}
