//! The HTTP API; see `docs/API.md`. Handlers only decode, resolve
//! (`crate::resolve`), run (`crate::engine`) and respond.
//!
//! The files, from the outside in; none imports this one, and none imports
//! a file above it in this list:
//! - [`router`] — every route, the front service around them, fallbacks.
//! - [`openapi`] — the OpenAPI document, built from the handlers.
//! - [`exec`], [`modules`], [`instances`], [`environments`], [`ops`],
//!   [`playground`] — the
//!   handlers, by resource.
//! - [`call`], [`code`] — the request parts handlers share: the call and
//!   its response, and the code fields.
//! - [`logging`], [`auth`], [`quota`], [`proxies`] — middleware: request
//!   log and span, tokens, rate limits, the client behind a trusted proxy.
//! - [`router_pool`] — connection routers kept for later connections.
//! - [`state`], [`admission`], [`routes`], [`metrics`], [`extract`], [`responses`] — shared
//!   state, the route recorder, counters, the JSON body extractor, the
//!   documented error responses.
//! - `sharded` — counters and histograms kept per thread, added up when
//!   scraped.
//! - [`error`] — [`ApiError`](error::ApiError), the one
//!   [`ErrorCode`](error::ErrorCode) enum, and every conversion into them.

pub mod admission;
pub mod auth;
pub mod batch;
pub mod call;
mod call_json;
pub mod checks;
pub mod client;
pub mod code;
pub mod environments;
pub mod error;
pub mod exec;
pub mod extract;
pub mod instances;
pub mod job_table;
pub mod jobs;
mod json_text;
pub mod logging;
pub mod metrics;
pub mod modules;
pub mod openapi;
pub mod ops;
pub mod playground;
pub mod proxies;
pub mod quota;
pub mod responses;
pub mod router;
pub mod router_pool;
pub mod routes;
mod sharded;
pub mod state;

pub use router::{Api, ConnectionService, MakeConnection, router, served_routes};
pub use state::AppState;
