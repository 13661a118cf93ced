//! The request log: an id per request, a span that carries it, and one
//! line per request.
//!
//! Everything logged while a request is handled (an internal error's
//! cause, a warning from the registry) happens inside the request's span,
//! so its line carries the same `request_id` as the request line.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::ErrorCode;
use super::metrics::Metrics;

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
/// `x-request-id`, a `request` span carrying it, one log line (method, path,
/// status, error code, duration), and the request counter of `/metrics`.
pub async fn log_request(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = metrics.route_label(request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let id = client_request_id(&request).unwrap_or_else(|| metrics.request_id());
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(request).instrument(span.clone()).await;
    let micros = started.elapsed().as_micros() as u64;
    let status = response.status().as_u16();
    metrics.request(&method, route, status);
    let _entered = span.enter();
    match response.extensions().get::<ErrorCode>().map(|c| c.as_str()) {
        Some(code) if status >= 500 => {
            tracing::error!(%method, %path, status, code, micros, "request failed")
        }
        Some(code) => tracing::info!(%method, %path, status, code, micros, "request refused"),
        None => tracing::info!(%method, %path, status, micros, "request served"),
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
