//! The one API error type, the one list of error codes, and every
//! conversion into them.
//!
//! Every non-2xx response is `{"error": {"code", "message", ...}}` with a
//! stable `code` from [`ErrorCode`], whose HTTP status is fixed by the code.
//! Engine, registry and instance errors are mapped here, exhaustively, and
//! nowhere else. Server faults (5xx) answer with a fixed message and log the
//! cause inside the request's span, so the log line carries its request id
//! and internals never leak to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::engine::{CallFailure, EngineError, ExecStats, WasiOutput};
use crate::instances::InstanceError;
use crate::registry::RegistryError;

/// Declares [`ErrorCode`]: each variant with its wire name, its status and
/// what it means, so the three can never drift apart.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, $status:ident; )*) => {
        /// Every stable error code. The wire name is the snake_case of the
        /// variant; docs/API.md has a row for each (a test checks it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it appears in `error.code`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The HTTP status every response with this code has.
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)* }
            }
        }
    };
}

error_codes! {
    /// The request body, a path or a field is malformed or inconsistent.
    InvalidRequest = "invalid_request", BAD_REQUEST;
    /// The bytes or text are not a valid WebAssembly module.
    InvalidModule = "invalid_module", BAD_REQUEST;
    /// `params` do not fit the function's signature.
    InvalidParams = "invalid_params", BAD_REQUEST;
    /// A memory read or write names a missing memory or leaves its bounds.
    InvalidMemoryAccess = "invalid_memory_access", BAD_REQUEST;
    /// An import is not satisfied by the linked host modules.
    LinkError = "link_error", BAD_REQUEST;
    /// No token, or an unknown one, on a server with access control.
    Unauthorized = "unauthorized", UNAUTHORIZED;
    /// The token lacks the scope the endpoint needs.
    Forbidden = "forbidden", FORBIDDEN;
    /// The token's module count or byte cap is reached.
    QuotaExceeded = "quota_exceeded", FORBIDDEN;
    /// No such exported function.
    FunctionNotFound = "function_not_found", NOT_FOUND;
    /// The instance exports no global of this name.
    GlobalNotFound = "global_not_found", NOT_FOUND;
    /// A live component instance holds no resource of this number.
    ResourceNotFound = "resource_not_found", NOT_FOUND;
    /// No registered module has this name.
    ModuleNotFound = "module_not_found", NOT_FOUND;
    /// No live instance has this id (deleted, expired, or another token's),
    /// or an environment has no instance of this name.
    InstanceNotFound = "instance_not_found", NOT_FOUND;
    /// No job has this id (expired, or another token's).
    JobNotFound = "job_not_found", NOT_FOUND;
    /// No environment has this id (deleted, expired, or another token's).
    EnvironmentNotFound = "environment_not_found", NOT_FOUND;
    /// The instance lives on another node sharing this registry (`node`,
    /// and `owner_url` when that node advertised one): send the call there.
    /// Also a job to cancel that another node runs.
    InstanceOnOtherNode = "instance_on_other_node", MISDIRECTED_REQUEST;
    /// No such endpoint.
    RouteNotFound = "route_not_found", NOT_FOUND;
    /// The endpoint does not take this method.
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The body did not arrive within the body timeout.
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT;
    /// The name is taken; names are immutable.
    ModuleExists = "module_exists", CONFLICT;
    /// Other modules import from this one (listed in `dependents`).
    ModuleInUse = "module_in_use", CONFLICT;
    /// The body or the module is larger than allowed.
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    /// The body is not JSON.
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    /// The guest trapped (`trap` names the kind).
    Trap = "trap", UNPROCESSABLE_ENTITY;
    /// An execution limit stopped the guest or refused the module (`limit`
    /// names it).
    LimitExceeded = "limit_exceeded", UNPROCESSABLE_ENTITY;
    /// Over this client's request rate; see `Retry-After`.
    RateLimited = "rate_limited", TOO_MANY_REQUESTS;
    /// This client holds its share of the execution slots and its queue
    /// is full; see `Retry-After`.
    ConcurrencyLimit = "concurrency_limit", TOO_MANY_REQUESTS;
    /// This client has `--max-jobs-per-client` jobs queued or running.
    TooManyJobs = "too_many_jobs", TOO_MANY_REQUESTS;
    /// The live-instance caps are reached.
    InstanceCapacity = "instance_capacity", TOO_MANY_REQUESTS;
    /// A server fault; the cause is in the server log under the request id.
    Internal = "internal", INTERNAL_SERVER_ERROR;
    /// Every execution slot is busy; see `Retry-After`.
    Overloaded = "overloaded", SERVICE_UNAVAILABLE;
    /// The module store does not answer (`GET /readyz`).
    NotReady = "not_ready", SERVICE_UNAVAILABLE;
    /// The module store (a networked database) cannot be reached, so the
    /// registry cannot change now; calls of modules already loaded work.
    StoreUnavailable = "store_unavailable", SERVICE_UNAVAILABLE;
}

/// An API error: a stable code (which fixes the status), a message, and
/// optional extra fields.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra members of the error object (`trap`, `limit`, `stats`, ...).
    pub extra: Map<String, Value>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// The response status, fixed by the code.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// `400 invalid_request`: the request body or path is malformed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// `400 invalid_params`: the params do not fit the function.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }

    /// `413 payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    /// `503 overloaded`: every execution slot stayed busy and the queue in
    /// front of them is full or its deadline passed.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Overloaded, message)
    }

    /// `500 internal`: logs `cause` (in the request's span, so with its
    /// id), answers with a fixed message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "internal server error; see the server log")
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

    /// Adds a WASI program's output (`stdout`, `stderr`, `*_truncated`).
    pub fn with_output(mut self, output: &WasiOutput) -> Self {
        self.extra
            .insert("stdout".into(), String::from_utf8_lossy(&output.stdout).into());
        self.extra
            .insert("stderr".into(), String::from_utf8_lossy(&output.stderr).into());
        self.extra
            .insert("stdout_truncated".into(), output.stdout_truncated.into());
        self.extra
            .insert("stderr_truncated".into(), output.stderr_truncated.into());
        self
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use ErrorCode as C;
        match e {
            EngineError::InvalidModule(m) => ApiError::new(C::InvalidModule, m),
            EngineError::ModuleTooLarge { .. } => ApiError::payload_too_large(e.to_string()),
            EngineError::FunctionNotFound(m) => ApiError::new(C::FunctionNotFound, m),
            EngineError::GlobalNotFound(m) => ApiError::new(C::GlobalNotFound, m),
            EngineError::ResourceNotFound(m) => ApiError::new(C::ResourceNotFound, m),
            EngineError::MemberNotFound(m) => ApiError::new(C::InstanceNotFound, m),
            EngineError::InvalidParams(m) => ApiError::new(C::InvalidParams, m),
            EngineError::Link(m) => ApiError::new(C::LinkError, m),
            EngineError::Trap { kind, message, frames } => {
                let error = ApiError::new(C::Trap, message).with("trap", kind);
                match serde_json::to_value(frames) {
                    Ok(Value::Array(frames)) if !frames.is_empty() => error.with("frames", frames),
                    _ => error,
                }
            }
            EngineError::LimitExceeded { kind, message } => {
                ApiError::new(C::LimitExceeded, message).with("limit", kind.as_str())
            }
            EngineError::MemoryAccess(m) => ApiError::new(C::InvalidMemoryAccess, m),
            EngineError::InvalidLimits(m) => ApiError::invalid_request(m),
            EngineError::Busy(m) => ApiError::new(C::Overloaded, m),
            EngineError::Capacity(m) => ApiError::new(C::InstanceCapacity, m),
            EngineError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// A failed call: its error, plus the stats and WASI output it produced.
/// (Memory reads after a trap are added by the caller, which knows how
/// the client asked for them to be encoded.)
impl From<CallFailure> for ApiError {
    fn from(f: CallFailure) -> Self {
        let mut error = ApiError::from(f.error);
        if let Some(stats) = &f.stats {
            error = error.with_stats(stats);
        }
        if let Some(output) = &f.wasi {
            error = error.with_output(output);
        }
        error
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use ErrorCode as C;
        match e {
            RegistryError::InvalidName(m) => ApiError::invalid_request(m),
            RegistryError::NotFound(_) => ApiError::new(C::ModuleNotFound, e.to_string()),
            RegistryError::HostModuleNotFound(_) => ApiError::new(C::LinkError, e.to_string()),
            RegistryError::QuotaExceeded(m) => ApiError::new(C::QuotaExceeded, m),
            RegistryError::Exists(_) => ApiError::new(C::ModuleExists, e.to_string()),
            RegistryError::InUse { ref dependents, .. } => {
                let dependents = dependents.clone();
                ApiError::new(C::ModuleInUse, e.to_string()).with("dependents", dependents)
            }
            RegistryError::Engine(inner) => inner.into(),
            RegistryError::Storage(m) => ApiError::internal(m),
            RegistryError::Unavailable(m) => ApiError::new(C::StoreUnavailable, m),
        }
    }
}

impl From<InstanceError> for ApiError {
    fn from(e: InstanceError) -> Self {
        match e {
            InstanceError::NotFound(_) => ApiError::new(ErrorCode::InstanceNotFound, e.to_string()),
            InstanceError::EnvironmentNotFound(_) => ApiError::new(ErrorCode::EnvironmentNotFound, e.to_string()),
            InstanceError::Capacity(m) => ApiError::new(ErrorCode::InstanceCapacity, m),
            InstanceError::Instantiate(failure) => (*failure).into(),
        }
    }
}

impl ApiError {
    /// The body this error answers, written from it where it stands (see
    /// [`Self::into_body`]).
    pub fn body(&self) -> ErrorJson<'_> {
        ErrorJson { error: self }
    }

    /// The response body: `{"error": {"code", "message", …extra}}` (also
    /// a failed call's element in a batch).
    pub fn into_body(self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), self.code.as_str().into());
        error.insert("message".into(), self.message.into());
        error.extend(self.extra);
        json!({ "error": error })
    }
}

/// An error's body, `{"error": {"code", "message", ...extra}}`, as
/// [`ApiError::into_body`] builds it, written without building it.
#[derive(Serialize)]
pub struct ErrorJson<'a> {
    #[serde(serialize_with = "error_object")]
    error: &'a ApiError,
}

/// The members in the order, and with the values, `into_body`'s map has
/// them: sorted by key, an extra member replacing `code` or `message`.
fn error_object<S: serde::Serializer>(error: &&ApiError, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut own = [("code", error.code.as_str()), ("message", error.message.as_str())]
        .into_iter()
        .filter(|(key, _)| !error.extra.contains_key(*key))
        .peekable();
    let mut map = serializer.serialize_map(None)?;
    for (key, value) in &error.extra {
        while let Some((own_key, own_value)) = own.next_if(|(own_key, _)| *own_key < key.as_str()) {
            map.serialize_entry(own_key, own_value)?;
        }
        map.serialize_entry(key, value)?;
    }
    for (own_key, own_value) in own {
        map.serialize_entry(own_key, own_value)?;
    }
    map.end()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code;
        let mut response = (status, axum::Json(self.into_body())).into_response();
        // Overload and exhausted capacity are temporary: say when to retry.
        // (The rate limiter replaces this with its own figure.)
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The request log line shows the code.
        response.extensions_mut().insert(code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::{ApiError, ErrorCode};

    /// A batch writes its calls' errors with `body`; a request answers
    /// `into_body`. The two must be the same text, member order included.
    #[test]
    fn an_error_body_is_written_alike_either_way() {
        let errors = || {
            [
                ApiError::new(ErrorCode::Trap, "unreachable"),
                ApiError::new(ErrorCode::LimitExceeded, "out of fuel")
                    .with("limit", "fuel")
                    .with("stats", serde_json::json!({"fuel_consumed": 5}))
                    .with("aardvark", 1)
                    .with("diff", serde_json::json!(["a"])),
                // An extra member named like an own one replaces it.
                ApiError::new(ErrorCode::InvalidRequest, "bad").with("message", "replaced"),
                ApiError::new(ErrorCode::InvalidRequest, "bad")
                    .with("code", "replaced")
                    .with("zz", true),
            ]
        };
        for (error, twin) in errors().into_iter().zip(errors()) {
            let written = serde_json::to_string(&error.body()).unwrap();
            let built = serde_json::to_string(&twin.into_body()).unwrap();
            assert_eq!(written, built);
        }
    }

    #[test]
    fn wire_names_are_the_serde_names() {
        for code in ErrorCode::ALL {
            let serialized = serde_json::to_value(code).unwrap();
            assert_eq!(serialized, code.as_str(), "{code:?}");
        }
    }
}
