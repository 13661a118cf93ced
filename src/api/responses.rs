//! The documented error responses: the body every error has, and the
//! groups of error statuses operations share, for the OpenAPI document.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

use super::error::ErrorCode;

/// Every error response: `{"error": {"code", "message", ...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The error object. Besides `code` and `message` it may carry `trap`
/// (trap kind), `limit` (which limit), `stats`, `memory`, `dependents`, and
/// a WASI program's `stdout`/`stderr`.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    code: ErrorCode,
    /// What went wrong, for a person: names the import, signature or limit.
    message: String,
}

/// Responses by status, as `IntoResponses` returns them.
type Responses = BTreeMap<String, RefOr<utoipa::openapi::Response>>;

/// Error responses whose body is [`ErrorBody`].
fn error_responses(list: &[(&str, &str)]) -> Responses {
    list.iter()
        .map(|(status, description)| {
            let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", body)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
}

/// 401, 403, 429: every endpoint behind the token check and the rate limit.
/// Listed once here so that each operation does not repeat them.
pub struct GuardedErrors;

impl IntoResponses for GuardedErrors {
    fn responses() -> Responses {
        error_responses(&[
            (
                "401",
                "unauthorized: the server needs a bearer token and none, or an unknown one, was sent",
            ),
            (
                "403",
                "forbidden: the token lacks the scope; or quota_exceeded (POST /register): the token's module or byte cap is reached",
            ),
            (
                "429",
                "rate_limited: over this client's request rate; concurrency_limit (endpoints that run code): this client holds its share of the execution slots and its queue is full; or instance_capacity (POST /instances): the live-instance caps are reached. See Retry-After",
            ),
        ])
    }
}

/// 408, 413, 415: every endpoint that reads a JSON body.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> Responses {
        error_responses(&[
            ("408", "request_timeout: the body did not arrive in time"),
            ("413", "payload_too_large: the body or the module is over its limit"),
            ("415", "unsupported_media_type: the body is not JSON"),
        ])
    }
}

/// 400, 422, 503: every endpoint that compiles or runs code.
pub struct RunErrors;

impl IntoResponses for RunErrors {
    fn responses() -> Responses {
        error_responses(&[
            (
                "400",
                "invalid_request, invalid_module, invalid_params, link_error or invalid_memory_access",
            ),
            (
                "422",
                "trap, or limit_exceeded (fuel, time, memory, table_elements, instances, exposed_exports, memories, tables, compile_time)",
            ),
            (
                "503",
                "overloaded: no execution slot came this request's turn: the queues are full or the deadline passed; see Retry-After",
            ),
        ])
    }
}
