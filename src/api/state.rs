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
///
/// Aligned to 128 bytes, so that the `Arc`'s counts, which axum's clone of
/// the state writes on every request on every core, are not on the line
/// (or its neighbour, which x86 fetches along) that every handler reads
/// these fields from.
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
        AppState(Arc::new(Shared {
            engine,
            registry,
            instances,
            metrics: Arc::new(Metrics::new(served)),
            served,
            admission,
            bounds,
            jobs,
            body_rules,
        }))
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
