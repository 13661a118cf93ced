//! Every route and the front service around them.

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tower::Service;

use super::error::{ApiError, ErrorCode};
use super::logging::FrontService;
use super::routes::Routes;
use super::state::AppState;
use super::{
    auth, batch, environments, exec, instances, jobs, logging, modules, openapi, ops, playground, proxies, quota,
};

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

/// The whole API, ready to serve: the routes behind the front service
/// (`logging`); the body limit is not a layer but applied by the one body
/// reader (`extract::read_json`). The front runs before routing, so it
/// labels requests by route itself (`Metrics::route_label`).
pub struct Api {
    front: logging::Front,
    routed: Router,
}

impl Api {
    /// The service every connection's requests go to.
    pub fn into_service(
        self,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static
    {
        FrontService::new(self.front, self.routed)
    }
}

/// Builds the API over `state`.
pub fn router(
    state: AppState,
    tokens: auth::Tokens,
    rate_limits: quota::RateLimits,
    proxies: proxies::TrustedProxies,
) -> Api {
    let front = logging::Front {
        metrics: state.metrics.clone(),
        tokens,
        rate_limits,
        proxies,
    };
    let routed = routes()
        .into_router()
        .merge(openapi::docs_ui())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    Api { front, routed }
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such endpoint; see docs/API.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not take that method")
}
