//! The one API error type and its JSON rendering.
//!
//! Every non-2xx response is `{"error": {"code", "message", ...}}` with a
//! stable `code`. Engine and registry errors are mapped here, exhaustively,
//! in one place. Server faults (5xx) answer with a fixed message and log
//! the cause, so that internals never leak to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::engine::{EngineError, ExecStats};
use crate::registry::RegistryError;

/// The stable error code of a response, kept as a response extension so the
/// request log line can show it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// An API error: status, stable code, message, and optional extra fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the error object (`trap`, `limit`, `stats`, ...).
    pub extra: Map<String, Value>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// `400 invalid_request`: the request body or path is malformed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// `413 payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// `503 overloaded`: the concurrent-execution cap is reached.
    pub fn overloaded(limit: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("the server is running its maximum of {limit} concurrent executions; retry shortly"),
        )
    }

    /// `500 internal`: logs `cause`, answers with a fixed message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; see the server log",
        )
    }

    /// Adds an extra member to the error object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds the execution's stats, when it got as far as running.
    pub fn with_stats(self, stats: &ExecStats) -> Self {
        match serde_json::to_value(stats) {
            Ok(v) => self.with("stats", v),
            Err(_) => self,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use StatusCode as S;
        match e {
            EngineError::InvalidModule(m) => ApiError::new(S::BAD_REQUEST, "invalid_module", m),
            EngineError::ModuleTooLarge { .. } => ApiError::payload_too_large(e.to_string()),
            EngineError::FunctionNotFound(m) => ApiError::new(S::NOT_FOUND, "function_not_found", m),
            EngineError::InvalidParams(m) => ApiError::new(S::BAD_REQUEST, "invalid_params", m),
            EngineError::Link(m) => ApiError::new(S::BAD_REQUEST, "link_error", m),
            EngineError::Trap { kind, message } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "trap", message).with("trap", kind)
            }
            EngineError::LimitExceeded { kind, message } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "limit_exceeded", message).with("limit", kind.as_str())
            }
            EngineError::MemoryAccess(m) => ApiError::new(S::BAD_REQUEST, "invalid_memory_access", m),
            EngineError::InvalidLimits(m) => ApiError::invalid_request(m),
            EngineError::Busy(m) => ApiError::new(S::SERVICE_UNAVAILABLE, "overloaded", m),
            EngineError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use StatusCode as S;
        match e {
            RegistryError::InvalidName(m) => ApiError::invalid_request(m),
            RegistryError::NotFound(_) => ApiError::new(S::NOT_FOUND, "module_not_found", e.to_string()),
            RegistryError::HostModuleNotFound(_) => ApiError::new(S::BAD_REQUEST, "link_error", e.to_string()),
            RegistryError::QuotaExceeded(m) => ApiError::new(S::FORBIDDEN, "quota_exceeded", m),
            RegistryError::Exists(_) => ApiError::new(S::CONFLICT, "module_exists", e.to_string()),
            RegistryError::InUse { ref dependents, .. } => {
                let dependents = dependents.clone();
                ApiError::new(S::CONFLICT, "module_in_use", e.to_string()).with("dependents", dependents)
            }
            RegistryError::Engine(inner) => inner.into(),
            RegistryError::Storage(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.extra);
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        // Overload and exhausted capacity are temporary: say when to retry.
        // (The rate limiter replaces this with its own figure.)
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}
