//! The state every handler shares.

use std::sync::Arc;

use axum::http::Method;

use super::admission::{Admission, ExecPermit};
use super::client::ClientId;
use super::error::ApiError;
use super::extract::BodyRules;
use super::job_table::Jobs;
use super::metrics::Metrics;
use crate::engine::WasmEngine;
use crate::instances::Instances;
use crate::registry::Registry;

/// Bounds on the ways one request makes many calls: a batch (see
/// `api::batch`) and `runs` (see `api::checks`).
#[derive(Debug, Clone, Copy)]
pub struct CallBounds {
    /// Most calls in one batch.
    pub max_batch_calls: usize,
    /// Longest a batch may run, all its calls together.
    pub batch_timeout: std::time::Duration,
    /// Most `runs` of one call.
    pub max_runs: u32,
}

/// State shared by every handler.
///
/// An `Arc` of an `Arc`: the outer one is a connection's own
/// ([`AppState::for_connection`]), the inner one the server's. axum
/// clones the state twice per request (the route's handler service, then
/// the `State` extractor); counting those in one count that every core
/// writes made the count's cache line travel between cores on every
/// request, which measured about a sixth of `GET /healthz`'s throughput on
/// two threads (docs/DESIGN.md). A connection's requests run on one
/// core at a time, so its own count stays in that core's cache; the
/// server's count is written only when a connection's router is built or
/// dropped (`router_pool` keeps routers between connections; a task that
/// outlives its request keeps the connection's count, not the server's).
#[derive(Clone)]
#[expect(
    clippy::redundant_allocation,
    reason = "the outer allocation is a connection's own count, the point of this type"
)]
pub struct AppState(Arc<Arc<Shared>>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
///
/// Aligned to 128 bytes, so that the `Arc`'s counts, which each new
/// connection writes, are not on the line (or its neighbour, which x86
/// fetches along) that every handler reads these fields from.
#[repr(align(128))]
pub struct Shared {
    pub engine: WasmEngine,
    pub registry: Arc<Registry>,
    pub instances: Arc<Instances>,
    pub metrics: Arc<Metrics>,
    /// Every `(method, path template)` served, for the JSON index.
    pub served: &'static [(Method, &'static str)],
    /// One slot per execution (or registration) in flight, shared fairly
    /// between clients, and the bounded queues in front of them.
    pub admission: Admission,
    /// Bounds on batches and `runs`.
    pub bounds: CallBounds,
    /// Asynchronous jobs known to this process.
    pub jobs: Jobs,
    body_rules: BodyRules,
}

impl axum::extract::FromRef<AppState> for BodyRules {
    fn from_ref(state: &AppState) -> Self {
        state.body_rules
    }
}

impl AppState {
    /// `served` is the router's list of routes (`api::served_routes()`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: WasmEngine,
        registry: Arc<Registry>,
        instances: Arc<Instances>,
        admission: Admission,
        bounds: CallBounds,
        jobs: Jobs,
        body_rules: BodyRules,
        served: &'static [(Method, &'static str)],
    ) -> Self {
        AppState(Arc::new(Arc::new(Shared {
            engine,
            registry,
            instances,
            metrics: Arc::new(Metrics::new(served)),
            served,
            admission,
            bounds,
            jobs,
            body_rules,
        })))
    }

    /// The same state under a count of its own, for one connection's
    /// requests (see [`AppState`]).
    pub fn for_connection(&self) -> Self {
        AppState(Arc::new(Arc::clone(&self.0)))
    }

    /// Executions (and registrations) running now.
    pub fn in_flight(&self) -> usize {
        self.admission.in_flight()
    }

    /// Requests waiting for an execution slot.
    pub fn queued(&self) -> usize {
        self.admission.queued()
    }

    /// Takes an execution slot for `client`, waiting its turn if none is
    /// free to it (see [`Admission::admit`]).
    pub async fn exec_permit<'a>(&'a self, client: &'a ClientId) -> Result<ExecPermit<'a>, ApiError> {
        self.admission.admit(client).await
    }
}
