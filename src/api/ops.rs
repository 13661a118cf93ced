//! The operator's endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorCode};
use super::metrics::Gauges;
use super::responses::ErrorBody;
use super::state::AppState;
use crate::engine::{Environment, LiveInstance};

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (the store answers).
    pub status: &'static str,
    /// Registered modules (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<usize>,
}

/// Liveness: answers once the server is accepting requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn healthz() -> Response {
    // Always the same answer, so written once rather than serialized per
    // probe (a probe is polled often, and this is most of its work).
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        HEALTHY,
    )
        .into_response()
}

/// `GET /healthz`'s body: [`Health`] with `status: "ok"`.
const HEALTHY: &str = r#"{"status":"ok"}"#;

/// Readiness: the store answers a read. `503 not_ready` when it does not,
/// so a load balancer stops sending work this node cannot do.
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses(
        (status = 200, description = "The store answers; ready for work", body = Health),
        (status = 503, description = "not_ready: the store does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    match app.registry.check_store().await {
        Ok(()) => Ok(Json(Health {
            status: "ready",
            modules: Some(app.registry.len()),
        })),
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            Err(ApiError::new(
                ErrorCode::NotReady,
                "the module store does not answer; see the server log",
            ))
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Counters, histograms and gauges in the OpenMetrics text format (Prometheus scrapes it)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let refusals = app.admission.refusals();
    let (jobs_queued, jobs_running) = app.jobs.counts();
    let gauges = Gauges {
        cache: app.engine.cache_stats(),
        live_instances: app.instances.count::<LiveInstance>(),
        environments: app.instances.count::<Environment>(),
        environment_instances: app.engine.environment_instances(),
        in_flight: app.in_flight(),
        queued: app.queued(),
        refused_client_queue: refusals.client_queue_full.load(Ordering::Relaxed),
        refused_queue_full: refusals.queue_full.load(Ordering::Relaxed),
        refused_queue_timeout: refusals.queue_timeout.load(Ordering::Relaxed),
        sync_reruns: crate::engine::sync_reruns(),
        jobs_queued,
        jobs_running,
        registered_modules: app.registry.len(),
        registered_bytes: app.registry.total_bytes(),
        store_file_bytes: app.registry.store_size_on_disk(),
        artifacts_rejected: app.registry.artifacts_rejected(),
    };
    match app.metrics.render(&gauges) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("cannot encode metrics: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    /// The fixed liveness body is what serializing its [`super::Health`]
    /// writes.
    #[test]
    fn the_liveness_body_is_a_serialized_health() {
        let health = super::Health {
            status: "ok",
            modules: None,
        };
        assert_eq!(super::HEALTHY, serde_json::to_string(&health).unwrap());
    }
}
