//! Every route and the middleware stack around them.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use super::error::{ApiError, ErrorCode};
use super::routes::Routes;
use super::state::AppState;
use super::{auth, batch, environments, exec, instances, jobs, logging, modules, openapi, ops, playground, quota};

/// Every endpoint, with the method and path of each.
pub fn routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/", playground::index)
        .add(Method::GET, "/assets/{file}", playground::asset)
        .add(Method::GET, "/healthz", ops::healthz)
        .add(Method::GET, "/readyz", ops::readyz)
        .add(Method::GET, "/metrics", ops::metrics)
        .add(Method::GET, "/openapi.json", openapi::openapi_json)
        .merge(exec::routes())
        .merge(batch::routes())
        .merge(jobs::routes())
        .merge(modules::routes())
        .merge(instances::routes())
        .merge(environments::routes())
}

/// The `(method, path template)` of every endpoint, collected once: the
/// metrics' route labels and the JSON index read it.
pub fn served_routes() -> &'static [(Method, &'static str)] {
    static SERVED: std::sync::OnceLock<Vec<(Method, &'static str)>> = std::sync::OnceLock::new();
    SERVED.get_or_init(|| routes().served().to_vec())
}

/// The whole API.
///
/// The middleware wraps the router once, instead of each route as
/// `Router::layer` does: a layer added that way is cloned, with every boxed
/// service beneath it, for each request (axum's `from_fn` takes its inner
/// service out by cloning it), which was 13 allocations and about a
/// twentieth of a small call's work. Wrapped outside, a clone is the
/// router's reference count. The front middleware then runs before
/// routing, so it labels requests by route itself (`Metrics::route_label`).
pub fn router(state: AppState, max_body_bytes: usize, tokens: auth::Tokens, rate_limits: quota::RateLimits) -> Router {
    let front = Arc::new(logging::Front {
        metrics: state.metrics.clone(),
        tokens,
        rate_limits,
    });
    let routed = routes()
        .into_router()
        .merge(openapi::docs_ui())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    let service = ServiceBuilder::new()
        // The request id and log line, the token check (which records the
        // caller), then the rate limit counted per caller: one layer (see
        // `logging`).
        .layer(middleware::from_fn_with_state(front, logging::front))
        // A bug that panics in a handler answers 500 in the usual JSON shape
        // (and is logged) instead of dropping the connection.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .service(routed);
    Router::new().fallback_service(service)
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
    ApiError::new(ErrorCode::RouteNotFound, "no such endpoint; see docs/API.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not take that method")
}
