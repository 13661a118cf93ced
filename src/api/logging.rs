//! The front of every request: an id per request and one log line per
//! request, around the token check (`auth`), the rate limit (`quota`) and
//! a handler's panic.
//!
//! These are one hand-written tower service ([`FrontService`]) and its
//! future ([`FrontFuture`]), not a stack of layers: each axum `from_fn`
//! layer clones the service stack beneath it into a boxed `Next` and boxes
//! its own future on every request, and tower-http's panic layer and
//! tokio's task-local scope each wrap the router's future once more.
//! Measured with callgrind, three `from_fn` layers cost about 8,000
//! instructions per request more than one; replacing the one with this
//! service, which allocates nothing of its own but the request id, took
//! `GET /healthz` from about 27,000 to 21,700 together with the smaller
//! changes made alongside (docs/BENCHMARKS.md, twelfth session).
//!
//! Everything logged while a request is handled (an internal error's
//! cause, a warning from the registry) runs with the request's id in scope
//! (`telemetry::in_request`), so its line carries the same
//! `request_id` as the request line.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use tower::Service;
use tracing::Level;

use super::auth::{self, Tokens};
use super::error::{ApiError, ErrorCode};
use super::metrics::Metrics;
use super::proxies::TrustedProxies;
use super::quota::{self, RateLimits};
use super::router_pool::LentRouter;
use crate::telemetry::{self, RequestLine};

/// The header carrying a request's id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

/// What the front middleware needs.
///
/// Aligned to 128 bytes so that the `Arc` it lives in keeps its counts on
/// a cache line of their own: each new connection writes them, and every
/// request reads these fields, which would otherwise be fetched again on
/// each core after every such write.
#[repr(align(128))]
pub struct Front {
    pub metrics: Arc<Metrics>,
    pub tokens: Tokens,
    pub rate_limits: RateLimits,
    pub proxies: TrustedProxies,
}

/// What one connection's requests share: the server's [`Front`] and the
/// address the connection came from. One per connection, so that the
/// count that every request's clone of the service writes is written by
/// the core serving the connection alone (see `AppState`).
pub struct Connection {
    front: Arc<Front>,
    peer: Option<ConnectInfo<SocketAddr>>,
    /// The connection's router, kept for a later connection when this
    /// one ends (`router_pool`); the requests use their own copies.
    _router: LentRouter,
}

impl Connection {
    pub fn new(front: Arc<Front>, peer: Option<SocketAddr>, router: LentRouter) -> Self {
        Connection {
            front,
            peer: peer.map(ConnectInfo),
            _router: router,
        }
    }
}

/// [`Front`] around `inner` (a connection's router): what every request
/// passes through first.
#[derive(Clone)]
pub struct FrontService<S> {
    connection: Arc<Connection>,
    inner: S,
}

impl<S> FrontService<S> {
    pub fn new(connection: Connection, inner: S) -> Self {
        FrontService {
            connection: Arc::new(connection),
            inner,
        }
    }
}

impl<S> Service<Request> for FrontService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Per request: a request id (the client's, else a new one) echoed in
    /// `x-request-id`, in scope for every line logged meanwhile; the
    /// connection's address (`ConnectInfo`), or the client's behind a
    /// trusted proxy; the token check, then the rate limit
    /// counted per caller; then the routes.
    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let connection = self.connection.clone();
        let front = &connection.front;
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let route = front.metrics.route_label(&path);
        let id = client_request_id(&request).unwrap_or_else(|| front.metrics.request_id());
        // The router is called in place, as `poll_ready` left it: the
        // future it returns owns what it needs. (Tower's usual exchange of
        // a clone for the service made ready is for a call made later, in
        // a future; here it only cost an increment and a decrement of the
        // router's count per request.)
        // Nothing here logs (the checks are plain functions, and routing
        // only builds the handler's future), so the id is put in scope
        // only when the future is polled.
        if let Some(peer) = connection.peer {
            request.extensions_mut().insert(peer);
        }
        front.proxies.apply(&mut request);
        let refused =
            auth::check_token(&front.tokens, &mut request).or_else(|| quota::check_rate(&front.rate_limits, &request));
        let answer = match refused {
            None => match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
                Ok(future) => Answer::Routed { future },
                Err(panic) => Answer::Ready {
                    response: Some(panic_response(panic)),
                },
            },
            Some(refusal) => Answer::Ready {
                response: Some(refusal),
            },
        };
        let id = Some(id);
        FrontFuture {
            answer,
            done: Some(Done {
                connection,
                started,
                method,
                path,
                route,
                id,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request on its way through the routes. One future of our own
    /// around the router's, rather than the usual stack of combinators
    /// (`from_fn`, a task-local scope, panic catching, `map`): each of
    /// those wraps and so moves the router's future again, which measured
    /// a few hundred instructions apiece per request.
    pub struct FrontFuture<F> {
        #[pin]
        answer: Answer<F>,
        done: Option<Done>,
    }
}

pin_project_lite::pin_project! {
    #[project = AnswerProjection]
    enum Answer<F> {
        /// Being answered by the routes.
        Routed { #[pin] future: F },
        /// Answered before routing (a refusal, a panic), taken once.
        Ready { response: Option<Response> },
    }
}

/// What the request line and the counters need once the answer is ready.
struct Done {
    connection: Arc<Connection>,
    started: Instant,
    method: Method,
    path: String,
    route: &'static str,
    id: Option<String>,
}

impl<F> Future for FrontFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    /// Polls the routes with the request's id in scope; a handler's panic
    /// is answered `500 internal` in the usual JSON shape instead of
    /// dropping the connection. Once answered: the request counter of
    /// `/metrics`, one log line (method, path, status, error code,
    /// duration) and the `x-request-id` header.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = this.answer;
        let done = this.done.as_mut().expect("FrontFuture polled after it answered");
        // One scope per poll: the routes' work and, once they answer, the
        // request line.
        let polled = telemetry::in_request(&mut done.id, || {
            let response = match answer.as_mut().project() {
                AnswerProjection::Ready { response } => response.take().expect("answered once"),
                AnswerProjection::Routed { future } => {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Ok(response))) => response,
                        Ok(Poll::Ready(Err(never))) => match never {},
                        Err(panic) => panic_response(panic),
                    }
                }
            };
            let micros = done.started.elapsed().as_micros() as u64;
            let status = response.status().as_u16();
            done.connection.front.metrics.request(&done.method, done.route, status);
            let code = response.extensions().get::<ErrorCode>().map(|c| c.as_str());
            // Written by the telemetry module directly, filtered by
            // `RUST_LOG` as this module's events are (see
            // `telemetry::request_line`).
            let (level, message, enabled) = match code {
                Some(_) if status >= 500 => (Level::ERROR, "request failed", tracing::enabled!(Level::ERROR)),
                Some(_) => (Level::INFO, "request refused", tracing::enabled!(Level::INFO)),
                None => (Level::INFO, "request served", tracing::enabled!(Level::INFO)),
            };
            if enabled {
                telemetry::request_line(&RequestLine {
                    level,
                    message,
                    method: done.method.as_str(),
                    path: &done.path,
                    status,
                    code,
                    micros,
                });
            }
            Poll::Ready(response)
        });
        let Poll::Ready(mut response) = polled else {
            return Poll::Pending;
        };
        // The id becomes the header once the line is written, without a
        // copy (`TryFrom<String>` keeps the string's buffer). It is always
        // a valid value: ours, or the client's checked one.
        let id = this.done.take().and_then(|done| done.id);
        if let Some(value) = id.and_then(|id| HeaderValue::try_from(id).ok()) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
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
