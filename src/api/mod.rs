//! The HTTP API: routing, shared state, request logging. Handlers only
//! decode, call the engine or registry, and encode; see `docs/API.md`.

pub mod auth;
pub mod call;
pub mod code;
pub mod error;
pub mod exec;
pub mod extract;
pub mod instances;
pub mod metrics;
pub mod modules;
pub mod openapi;
pub mod playground;
pub mod quota;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::catch_panic::CatchPanicLayer;

use crate::engine::WasmEngine;
use crate::instances::Instances;
use crate::registry::Registry;
use error::{ApiError, ErrorCode};
use openapi::{ErrorBody, Health};
use routes::Routes;

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
    pub metrics: Arc<metrics::Metrics>,
    /// One permit per execution (or registration) in flight. Requests over
    /// the cap are refused at once with 503 rather than queued, so a flood
    /// cannot build an unbounded backlog of memory-hungry work.
    exec_permits: Arc<Semaphore>,
    max_concurrency: usize,
    body_timeout: extract::BodyTimeout,
}

impl axum::extract::FromRef<AppState> for extract::BodyTimeout {
    fn from_ref(state: &AppState) -> Self {
        state.body_timeout
    }
}

impl AppState {
    pub fn new(
        engine: WasmEngine,
        registry: Arc<Registry>,
        instances: Arc<Instances>,
        max_concurrency: usize,
        body_timeout: std::time::Duration,
    ) -> Self {
        let max_concurrency = max_concurrency.max(1);
        AppState(Arc::new(Shared {
            engine,
            registry,
            instances,
            metrics: Arc::new(metrics::Metrics::new()),
            exec_permits: Arc::new(Semaphore::new(max_concurrency)),
            max_concurrency,
            body_timeout: extract::BodyTimeout(body_timeout),
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

/// Every endpoint, with the method and path of each.
pub fn routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/", playground::index)
        .add(Method::GET, "/assets/{file}", playground::asset)
        .add(Method::GET, "/healthz", healthz)
        .add(Method::GET, "/readyz", readyz)
        .add(Method::GET, "/metrics", metrics::metrics)
        .add(Method::GET, "/openapi.json", openapi::openapi_json)
        .merge(exec::routes())
        .merge(modules::routes())
        .merge(instances::routes())
}

/// The `(method, path template)` of every endpoint, collected once: the
/// metrics' route labels and the JSON index read it.
pub fn served_routes() -> &'static [(Method, &'static str)] {
    static SERVED: std::sync::OnceLock<Vec<(Method, &'static str)>> = std::sync::OnceLock::new();
    SERVED.get_or_init(|| routes().served().to_vec())
}

/// The whole API.
pub fn router(state: AppState, max_body_bytes: usize, tokens: auth::Tokens, rate_limits: quota::RateLimits) -> Router {
    routes()
        .into_router()
        .merge(openapi::docs_ui())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // A bug that panics in a handler answers 500 in the usual JSON shape
        // (and is logged) instead of dropping the connection.
        .layer(CatchPanicLayer::custom(panic_response))
        // Layers run outside-in: the log line, then the token check (which
        // records the caller), then the rate limit counted per caller.
        .layer(middleware::from_fn_with_state(rate_limits, quota::limit_rate))
        .layer(middleware::from_fn_with_state(Arc::new(tokens), auth::require_token))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), log_request))
        .with_state(state)
}

/// Liveness: answers once the server is accepting requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses((status = 200, description = "The server is up", body = Health)))]
async fn healthz() -> Json<openapi::Health> {
    Json(openapi::Health {
        status: "ok",
        modules: None,
    })
}

/// Readiness: the store answers a read. `503 not_ready` when it does not,
/// so a load balancer stops sending work this node cannot do.
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses(
        (status = 200, description = "The store answers; ready for work", body = Health),
        (status = 503, description = "not_ready: the store does not answer", body = ErrorBody),
    ))]
async fn readyz(State(app): State<AppState>) -> Result<Json<openapi::Health>, ApiError> {
    match app.registry.check_store().await {
        Ok(()) => Ok(Json(openapi::Health {
            status: "ready",
            modules: Some(app.registry.len()),
        })),
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the module store does not answer; see the server log",
            ))
        }
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such endpoint; see docs/API.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The header carrying a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The client's own request id, if it is one we can safely log and echo:
/// at most 128 characters of letters, digits and `-_.:`.
fn client_request_id(request: &Request) -> Option<String> {
    let value = request.headers().get(REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| value.to_string())
}

/// Per request: a request id (the client's, else a new one) echoed in
/// `x-request-id`, one log line (id, method, path, status, error code,
/// duration), and the request counter of `/metrics`.
async fn log_request(State(metrics): State<Arc<metrics::Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = metrics.route_label(request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let id = client_request_id(&request).unwrap_or_else(|| metrics.request_id());
    let mut response = next.run(request).await;
    let micros = started.elapsed().as_micros() as u64;
    let status = response.status().as_u16();
    metrics.request(&method, route, status);
    match response.extensions().get::<ErrorCode>() {
        Some(ErrorCode(code)) if status >= 500 => {
            tracing::error!(request_id = %id, %method, %path, status, code, micros, "request failed")
        }
        Some(ErrorCode(code)) => {
            tracing::info!(request_id = %id, %method, %path, status, code, micros, "request refused")
        }
        None => tracing::info!(request_id = %id, %method, %path, status, micros, "request served"),
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
