//! The routes of the API, one file per feature, and the builder that records every route added.
//!
//! Routes are only ever added through [`Routes`], which keeps a list of each method and path next to
//! the axum router. A test checks that list against the OpenAPI document, so a route cannot be served
//! without being documented.

pub mod admin;
pub mod backups;
pub mod breakers;
pub mod collections;
pub mod dlq;
pub mod handover;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod organisations;
pub mod runtime_config;
pub mod v1;
pub mod wal_damage;

use axum::Router;
use axum::routing::{MethodRouter, any};

use crate::app::AppState;

/// The path prefixes of the routes served only with a record store (`storage.enabled = true`);
/// a stateless instance answers them 404 of type `.../storage-disabled`. The OpenAPI document
/// marks the operations under them `x-mainstay-mode: stateful`.
pub const STORAGE_PATHS: &[&str] = &[
    "/v1/collections",
    "/admin/dlq",
    "/admin/collections/",
    "/admin/store/",
    "/admin/organisations/",
];

/// Whether `path` (a route template) is served only with a record store.
#[must_use]
pub fn needs_storage(path: &str) -> bool {
    STORAGE_PATHS.iter().any(|prefix| path.starts_with(prefix))
}

/// An axum router that records the method and path of every route it serves.
#[derive(Debug)]
pub struct Routes {
    router: Router<AppState>,
    served: Vec<(&'static str, String)>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    /// An empty set of routes.
    #[must_use]
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            served: Vec::new(),
        }
    }

    /// Adds a route for one method.
    #[must_use]
    pub fn route(
        mut self,
        method: &'static str,
        path: &str,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.served.push((method, path.to_owned()));
        self.router = self.router.route(path, handler);
        self
    }

    /// Answers every method on `path` with the `.../storage-disabled` problem, without recording
    /// it as served: the stateless mode's answer for the paths of the routes it leaves out.
    #[must_use]
    pub fn storage_disabled(mut self, path: &str) -> Self {
        self.router = self
            .router
            .route(path, any(|| async { crate::app::storage_disabled() }));
        self
    }

    /// Adds the routes of `other` under `prefix`, with `wrap` applied to them alone (an auth layer).
    #[must_use]
    pub fn nest(
        mut self,
        prefix: &str,
        other: Routes,
        wrap: impl FnOnce(Router<AppState>) -> Router<AppState>,
    ) -> Self {
        self.served.extend(
            other
                .served
                .into_iter()
                .map(|(method, path)| (method, format!("{prefix}{path}"))),
        );
        self.router = self.router.nest(prefix, wrap(other.router));
        self
    }

    /// Adds the routes of `other` at the same level.
    #[must_use]
    pub fn merge(mut self, other: Routes) -> Self {
        self.served.extend(other.served);
        self.router = self.router.merge(other.router);
        self
    }

    /// The method and path of every route, as added.
    #[must_use]
    pub fn served(&self) -> &[(&'static str, String)] {
        &self.served
    }

    /// The axum router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
