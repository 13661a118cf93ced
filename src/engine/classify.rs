//! Turning a wasmtime failure from instantiation or a call into an
//! [`EngineError`], by type and trap code, never by message text.
//!
//! The order matters: a trap code decides first (an out-of-bounds
//! `memory.copy` is a trap whatever the fuel counter reads afterwards),
//! then our own limit errors, then resource exhaustion of the pool.

use wasmtime::Trap;

use super::error::{EngineError, LimitHit, TrapFrame, chain_text, trap_name};
use super::limits::ExecLimits;

/// Classifies `error`, which ended an instantiation or a call run under
/// `limits`.
pub fn runtime_error(error: wasmtime::Error, limits: &ExecLimits) -> EngineError {
    // Our own errors raised inside a call (a bad memory access, a param the
    // allocator could not place) come back unchanged.
    let error = match error.downcast::<EngineError>() {
        Ok(ours) => return ours,
        Err(other) => other,
    };
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let trap = *trap;
        return match trap {
            Trap::OutOfFuel => LimitHit::fuel(limits.fuel).into(),
            Trap::Interrupt => LimitHit::time(limits.timeout_ms).into(),
            other => EngineError::Trap {
                kind: trap_name(other),
                message: describe_trap(&error, other),
                frames: frames(&error),
            },
        };
    }
    // An exception no handler caught ends the call, as a trap does.
    if error.downcast_ref::<wasmtime::ThrownException>().is_some() {
        return EngineError::Trap {
            frames: frames(&error),
            kind: "uncaught_exception",
            message: "a WebAssembly exception was thrown and no handler caught it".into(),
        };
    }
    // A WASI call handed a pointer or value it could not use: it traps.
    if let Some(guest) = error.downcast_ref::<wiggle::GuestError>() {
        return guest_error_trap(guest);
    }
    if let Some(hit) = error.downcast_ref::<LimitHit>() {
        return hit.clone().into();
    }
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return EngineError::Busy(
            "every pre-reserved instance slot is in use by other executions and instances; retry shortly".into(),
        );
    }
    // Instantiation failures that are none of the above are the module's
    // doing (an import wasmtime refused after our checks passed, a data
    // segment out of bounds at instantiation is a trap and handled above).
    EngineError::Link(chain_text(&error))
}

/// The trap for a WASI call given what it cannot use (wiggle's checks): a
/// pointer out of bounds (or overflowing), a pointer misaligned for the
/// type it points to, or an enum or flags value outside its type.
pub(crate) fn guest_error_trap(mut guest: &wiggle::GuestError) -> EngineError {
    // Where the error arose (which function, which param) is wiggle's
    // wrapping; the error itself is inside.
    while let wiggle::GuestError::InFunc { err, .. } = guest {
        guest = err;
    }
    let (kind, what) = match guest {
        wiggle::GuestError::PtrNotAligned { .. } => (trap_name(Trap::HeapMisaligned), "a pointer it cannot use"),
        wiggle::GuestError::PtrOutOfBounds { .. } | wiggle::GuestError::PtrOverflow => {
            (trap_name(Trap::MemoryOutOfBounds), "a pointer it cannot use")
        }
        _ => ("invalid_wasi_argument", "an argument it does not accept"),
    };
    EngineError::Trap {
        kind,
        message: format!("a WASI call was passed {what}: {guest}"),
        frames: Vec::new(),
    }
}

/// The trap's WebAssembly call stack, innermost first, at most 32 frames.
fn frames(error: &wasmtime::Error) -> Vec<TrapFrame> {
    let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return Vec::new();
    };
    backtrace
        .frames()
        .iter()
        .take(32)
        .map(|f| TrapFrame {
            module: f.module().name().map(str::to_string),
            func_index: f.func_index(),
            func_name: f.func_name().map(str::to_string),
            offset: f.module_offset(),
        })
        .collect()
}

fn describe_trap(error: &wasmtime::Error, trap: Trap) -> String {
    let mut message = trap.to_string();
    if let Some(bt) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = bt
            .frames()
            .iter()
            .take(16)
            .map(|f| {
                let name = f
                    .func_name()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("func[{}]", f.func_index()));
                match f.module().name() {
                    Some(m) => format!("{m}!{name}"),
                    None => name,
                }
            })
            .collect();
        if !frames.is_empty() {
            message.push_str(&format!(" (in {})", frames.join(" <- ")));
        }
    }
    message
}
