//! The engine's error type and the classification of wasmtime failures.
//!
//! Failures are classified by type (`wasmtime::Trap`, our own [`LimitHit`]),
//! never by comparing message strings, so that a wasmtime upgrade that
//! rewords a message cannot silently change an API error code (see
//! `classify.rs`).

use std::fmt;

use wasmtime::Trap;

/// Which execution limit stopped a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The fuel budget (roughly, WebAssembly instructions) ran out.
    Fuel,
    /// The wall-clock timeout passed.
    Time,
    /// Linear memory would have grown past the byte limit.
    Memory,
    /// A table would have grown past the element limit.
    TableElements,
    /// The link graph has more instances than `--max-link-instances`.
    Instances,
    /// An environment would expose more exports than it may.
    ExposedExports,
    /// A module defines more memories than `--max-memories-per-module`.
    Memories,
    /// A module defines more tables than `--max-tables-per-module`.
    Tables,
    /// Compiling the module took longer than the compile time limit.
    CompileTime,
}

impl LimitKind {
    /// The stable name used in API error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Fuel => "fuel",
            LimitKind::Time => "time",
            LimitKind::Memory => "memory",
            LimitKind::TableElements => "table_elements",
            LimitKind::Instances => "instances",
            LimitKind::ExposedExports => "exposed_exports",
            LimitKind::Memories => "memories",
            LimitKind::Tables => "tables",
            LimitKind::CompileTime => "compile_time",
        }
    }
}

/// Raised from inside a store (limiter, epoch callback) when a limit is hit;
/// it travels through wasmtime as the error's root and is recovered by
/// downcasting in `classify::runtime_error`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LimitHit {
    pub kind: LimitKind,
    pub message: String,
}

impl LimitHit {
    /// The fuel budget ran out (on either tier).
    pub fn fuel(fuel: u64) -> Self {
        LimitHit {
            kind: LimitKind::Fuel,
            message: format!("fuel exhausted: the execution used all {fuel} units of fuel (limits.fuel, --max-fuel)"),
        }
    }

    /// The wall-clock limit passed (on either tier).
    pub fn time(timeout_ms: u64) -> Self {
        LimitHit {
            kind: LimitKind::Time,
            message: format!("execution exceeded the time limit of {timeout_ms} ms"),
        }
    }
}

impl From<LimitHit> for EngineError {
    fn from(hit: LimitHit) -> Self {
        EngineError::LimitExceeded {
            kind: hit.kind,
            message: hit.message,
        }
    }
}

/// The kind of a WebAssembly trap, named as in the API.
pub fn trap_name(trap: Trap) -> &'static str {
    match trap {
        Trap::UnreachableCodeReached => "unreachable",
        Trap::IntegerDivisionByZero => "integer_divide_by_zero",
        Trap::IntegerOverflow => "integer_overflow",
        Trap::BadConversionToInteger => "bad_conversion_to_integer",
        Trap::MemoryOutOfBounds => "out_of_bounds_memory_access",
        Trap::HeapMisaligned => "misaligned_memory_access",
        Trap::TableOutOfBounds => "out_of_bounds_table_access",
        Trap::IndirectCallToNull => "indirect_call_to_null",
        Trap::BadSignature => "indirect_call_type_mismatch",
        Trap::StackOverflow => "stack_overflow",
        Trap::NullReference => "null_reference",
        Trap::ArrayOutOfBounds => "out_of_bounds_array_access",
        Trap::AllocationTooLarge => "allocation_too_large",
        Trap::CastFailure => "cast_failure",
        Trap::AtomicWaitNonSharedMemory => "atomic_wait_non_shared_memory",
        Trap::CannotEnterComponent => "cannot_enter_component",
        _ => "other",
    }
}

/// One frame of a trap's WebAssembly call stack.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TrapFrame {
    /// The module's name (its name section), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The function's index in its module.
    pub func_index: u32,
    /// The function's name (name section), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub func_name: Option<String>,
    /// The byte offset of the instruction in the module's code section,
    /// when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
}

/// Everything that can go wrong below the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bytes or text are not a valid WebAssembly module.
    #[error("{0}")]
    InvalidModule(String),
    /// The module is larger than the configured maximum.
    #[error("module is {size} bytes; the limit is {limit} bytes")]
    ModuleTooLarge { size: usize, limit: usize },
    /// The requested export does not exist or is not a function.
    #[error("{0}")]
    FunctionNotFound(String),
    /// An environment has no instance of the requested name.
    #[error("{0}")]
    MemberNotFound(String),
    /// The requested export does not exist or is not a global.
    #[error("{0}")]
    GlobalNotFound(String),
    /// A live component instance holds no resource of that number.
    #[error("{0}")]
    ResourceNotFound(String),
    /// Params do not match the function's signature.
    #[error("{0}")]
    InvalidParams(String),
    /// An import cannot be satisfied by the listed host modules.
    #[error("{0}")]
    Link(String),
    /// The guest trapped. `frames` is the WebAssembly call stack, innermost
    /// first, where the tier records one (the compiled tier does).
    #[error("{message}")]
    Trap {
        kind: &'static str,
        message: String,
        frames: Vec<TrapFrame>,
    },
    /// The guest hit an execution limit.
    #[error("{message}")]
    LimitExceeded { kind: LimitKind, message: String },
    /// A memory read or write names a missing memory or leaves its bounds.
    #[error("{0}")]
    MemoryAccess(String),
    /// Per-request limits asked for more than the server allows.
    #[error("{0}")]
    InvalidLimits(String),
    /// The server's room for instances that outlive a request is used up.
    #[error("{0}")]
    Capacity(String),
    /// Every pre-reserved instance slot is in use; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// A bug or an environment failure; details are logged, not returned.
    #[error("{0}")]
    Internal(String),
}

/// A wasmtime error with its causes, as one line: `outer: inner: root`.
pub(crate) fn chain_text(error: &wasmtime::Error) -> String {
    error.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
