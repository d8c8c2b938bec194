//! The HTTP status of object-store responses, for classifying failed calls.
//!
//! object_store 0.14 keeps the error that carries a response's status (`RetryError`) in a private
//! module, so a 400 from an S3 server arrives as an opaque `Error::Generic`.
//! `HttpStatusConnector` (feature `aws`) wraps a store's HTTP client and writes the status of each response into
//! a recorder that [`observe`] scopes around one object-store call: a tokio task-local that is set
//! while that call's future is polled. object_store awaits the HTTP request inside the caller's
//! future (it spawns nothing between `ObjectStore::put_opts` and `HttpService::call`), so calls in
//! flight together, in one task or in many, each see only their own responses.
//!
//! S3 answers some conditions that pass when the request is sent again with a 400 and a
//! machine-readable error `<Code>` (`RequestTimeout`: the client sent the body too slowly;
//! `Throttling` on some S3-compatible servers). The AWS SDKs retry those by code, so the recorder
//! reads the code of a 400's (small) error body and records it as the status it stands for: 408
//! for a timeout, 429 for throttling. Only the documented code field is read, never a message.

use std::cell::Cell;
use std::future::Future;

#[cfg(feature = "aws")]
mod connector;

#[cfg(feature = "aws")]
pub use connector::HttpStatusConnector;

tokio::task_local! {
    /// The status of the last response of the current call when it was not a success; `None`
    /// while a request is in flight, after a success and after a transport error.
    static LAST_STATUS: Cell<Option<u16>>;
}

/// Runs one object-store call; returns its output and the status of its last HTTP response when
/// that was not a success (`None` as well for stores that are not built with
/// `HttpStatusConnector`).
pub(crate) async fn observe<F: Future>(call: F) -> (F::Output, Option<u16>) {
    LAST_STATUS
        .scope(Cell::new(None), async move {
            let output = call.await;
            let status = LAST_STATUS.try_with(Cell::get).ok().flatten();
            (output, status)
        })
        .await
}
