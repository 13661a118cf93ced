//! The state every handler shares.

use std::sync::Arc;

use axum::http::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::extract::BodyTimeout;
use super::metrics::Metrics;
use crate::engine::WasmEngine;
use crate::instances::Instances;
use crate::registry::Registry;

/// State shared by every handler: one `Arc`, because axum clones the state
/// for every request and a struct of several `Arc`s costs an atomic
/// increment and decrement per field per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub engine: WasmEngine,
    pub registry: Arc<Registry>,
    pub instances: Arc<Instances>,
    pub metrics: Arc<Metrics>,
    /// Every `(method, path template)` served, for the JSON index.
    pub served: &'static [(Method, &'static str)],
    /// One permit per execution (or registration) in flight. Requests over
    /// the cap are refused at once with 503 rather than queued, so a flood
    /// cannot build an unbounded backlog of memory-hungry work.
    exec_permits: Arc<Semaphore>,
    max_concurrency: usize,
    body_timeout: BodyTimeout,
}

impl axum::extract::FromRef<AppState> for BodyTimeout {
    fn from_ref(state: &AppState) -> Self {
        state.body_timeout
    }
}

impl AppState {
    /// `served` is the router's list of routes (`api::served_routes()`).
    pub fn new(
        engine: WasmEngine,
        registry: Arc<Registry>,
        instances: Arc<Instances>,
        max_concurrency: usize,
        body_timeout: std::time::Duration,
        served: &'static [(Method, &'static str)],
    ) -> Self {
        let max_concurrency = max_concurrency.max(1);
        AppState(Arc::new(Shared {
            engine,
            registry,
            instances,
            metrics: Arc::new(Metrics::new(served.iter().map(|(_, path)| *path))),
            served,
            exec_permits: Arc::new(Semaphore::new(max_concurrency)),
            max_concurrency,
            body_timeout: BodyTimeout(body_timeout),
        }))
    }

    /// Executions (and registrations) running now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrency - self.exec_permits.available_permits()
    }

    /// Takes an execution slot, or fails fast with `503 overloaded`.
    pub fn exec_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.exec_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded(self.max_concurrency))
    }
}
