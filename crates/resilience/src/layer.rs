//! `tower` layers for the fallback, circuit breaker, retry, timeout and bulkhead (feature
//! `tower`), stacked in that order from the outside in like [`crate::Policy`].
//!
//! Errors are tower's [`tower::BoxError`]; downcast them to [`Rejected`], [`TimedOut`],
//! [`BulkheadError`] or [`RetryError`] to answer 503 or 504, or let a [`FallbackLayer`] turn them
//! into a response. The futures are boxed, as in most
//! tower stacks; the allocation-free path is [`CircuitBreaker::call`] and friends.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{BoxError, Layer, Service};

use crate::breaker::{CircuitBreaker, Outcome};
use crate::bulkhead::Bulkhead;
use crate::classify::Classify;
use crate::retry::{AttemptError, Retry, RetryError};
use crate::timeout::TimedOut;

#[cfg(doc)]
use crate::{breaker::Rejected, bulkhead::BulkheadError};

/// A boxed, sendable response future.
pub type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Puts every request through a [`CircuitBreaker`]; `classify` tells a failed response (a 5xx) or
/// error from a success.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classify: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer over `breaker`; `classify(result)` says whether the call failed.
    pub fn new(breaker: CircuitBreaker, classify: C) -> Self {
        Self { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C, Request> Service<Request> for CircuitBreakerService<S, C>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    C: Fn(Result<&S::Response, &S::Error>) -> Outcome + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = match self.breaker.try_acquire_owned() {
            Ok(permit) => permit,
            Err(rejected) => return Box::pin(std::future::ready(Err(rejected.into()))),
        };
        let response = self.inner.call(request);
        let classify = self.classify.clone();
        Box::pin(async move {
            let result = response.await;
            permit.record(classify(result.as_ref()));
            result.map_err(Into::into)
        })
    }
}

/// Cancels a request that takes longer than a limit, with a [`TimedOut`] error.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A layer with the time limit `limit`.
    #[must_use]
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    limit: Duration,
}

impl<S, Request> Service<Request> for TimeoutService<S>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let response = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, response).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(TimedOut { after: limit }.into()),
            }
        })
    }
}

/// Answers `fallback(error)` when the inner service ends in an error (a full bulkhead, an open
/// breaker, a timeout, retries spent): outermost in a stack, it turns every refusal into a
/// response, such as a 503 with `Retry-After` or a cached answer marked degraded. The fallback
/// sees the error, so it can downcast it to tell a [`Rejected`] from a [`TimedOut`]. Errors of
/// `poll_ready` pass through.
///
/// ```
/// use std::convert::Infallible;
/// use mainstay_resilience::layer::FallbackLayer;
/// use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let service = ServiceBuilder::new()
///     .layer(FallbackLayer::new(|_: BoxError| 503_u16))
///     .service(service_fn(|_: ()| async { Err::<u16, _>(BoxError::from("refused")) }));
/// assert_eq!(service.oneshot(()).await.ok(), Some(503));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
}

impl<F> FallbackLayer<F> {
    /// A layer answering `fallback(error)` for every failed request.
    pub fn new(fallback: F) -> Self {
        Self { fallback }
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = FallbackService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// The service of [`FallbackLayer`].
#[derive(Debug, Clone)]
pub struct FallbackService<S, F> {
    inner: S,
    fallback: F,
}

impl<S, F, Request> Service<Request> for FallbackService<S, F>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    F: Fn(BoxError) -> S::Response + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let fallback = self.fallback.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => Ok(response),
                Err(error) => {
                    let error = error.into();
                    tracing::warn!(%error, "request failed, answering with the fallback");
                    Ok(fallback(error))
                }
            }
        })
    }
}

/// Runs every request in a [`Bulkhead`] slot; a full bulkhead answers a [`BulkheadError`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer over `bulkhead`.
    #[must_use]
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Request> Service<Request> for BulkheadService<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    Request: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that runs the request, once it holds a slot.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let bulkhead = self.bulkhead.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let _slot = bulkhead.acquire().await?;
            poll_fn(|context| inner.poll_ready(context))
                .await
                .map_err(Into::into)?;
            inner.call(request).await.map_err(Into::into)
        })
    }
}

/// Retries requests whose error `classify` calls transient, with a [`Retry`] (and its budget).
/// Requests must be `Clone`.
#[derive(Debug, Clone)]
pub struct RetryLayer<C> {
    retry: Retry,
    classify: Arc<C>,
}

impl<C> RetryLayer<C> {
    /// A layer retrying with `retry`, classifying errors with `classify`.
    pub fn new(retry: Retry, classify: C) -> Self {
        Self {
            retry,
            classify: Arc::new(classify),
        }
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.retry.clone(),
            classify: Arc::clone(&self.classify),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug)]
pub struct RetryService<S, C> {
    inner: S,
    retry: Retry,
    classify: Arc<C>,
}

impl<S: Clone, C> Clone for RetryService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            retry: self.retry.clone(),
            classify: Arc::clone(&self.classify),
        }
    }
}

impl<S, C, Request> Service<Request> for RetryService<S, C>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    C: Classify<S::Error> + Send + Sync + 'static,
    Request: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for readiness on its own clone of the service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let retry = self.retry.clone();
        let classify = Arc::clone(&self.classify);
        let inner = self.inner.clone();
        Box::pin(async move {
            let result: Result<S::Response, RetryError<AttemptError<S::Error>>> = retry
                .run(&*classify, move |_attempt| {
                    let mut service = inner.clone();
                    let request = request.clone();
                    async move {
                        poll_fn(|context| service.poll_ready(context)).await?;
                        service.call(request).await
                    }
                })
                .await;
            result.map_err(Into::into)
        })
    }
}
