//! Every route and the front service around them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::http::Method;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tower::Service;

use super::error::{ApiError, ErrorCode};
use super::logging::FrontService;
use super::router_pool::{LentRouter, RouterPool};
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
///
/// Each connection gets a router and a state of its own
/// ([`Api::connection`]), so that the counts a request writes (the
/// router's, the state's, the front's) are written by the one core that
/// serves the connection and not by every core (see [`AppState`]).
#[derive(Clone)]
pub struct Api {
    front: Arc<logging::Front>,
    routes: Router<AppState>,
    state: AppState,
    /// Routers of ended connections, for the next ones.
    kept: Arc<RouterPool>,
}

impl Api {
    /// The service one connection's requests go to; `peer` is the
    /// address it came from (none for callers in process).
    ///
    /// Building a connection's router turns every route into a service
    /// with its state; a router whose connection has ended is kept and
    /// taken again instead (`router_pool`).
    pub fn connection(&self, peer: Option<SocketAddr>) -> ConnectionService {
        let routed = self
            .kept
            .take()
            .unwrap_or_else(|| self.routes.clone().with_state(self.state.for_connection()));
        let lent = LentRouter::new(routed.clone(), self.kept.clone());
        FrontService::new(logging::Connection::new(self.front.clone(), peer, lent), routed)
    }

    /// What `axum::serve` asks for a service per accepted connection.
    pub fn into_make_service(self) -> MakeConnection {
        MakeConnection(self)
    }
}

/// The service of one connection: the front around its router.
pub type ConnectionService = FrontService<Router>;

/// Makes each accepted connection's service ([`Api::connection`]).
#[derive(Clone)]
pub struct MakeConnection(Api);

impl<'a> Service<IncomingStream<'a, TcpListener>> for MakeConnection {
    type Response = ConnectionService;
    type Error = Infallible;
    type Future = std::future::Ready<Result<ConnectionService, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, TcpListener>) -> Self::Future {
        std::future::ready(Ok(self.0.connection(Some(*stream.remote_addr()))))
    }
}

/// Builds the API over `state`.
pub fn router(
    state: AppState,
    tokens: auth::Tokens,
    rate_limits: quota::RateLimits,
    proxies: proxies::TrustedProxies,
) -> Api {
    let front = Arc::new(logging::Front {
        metrics: state.metrics.clone(),
        tokens,
        rate_limits,
        proxies,
    });
    let routes = routes()
        .into_router()
        .merge(openapi::docs_ui())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Api {
        front,
        routes,
        state,
        kept: Arc::default(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such endpoint; see docs/API.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not take that method")
}
