//! Execution limits: the server's ceilings, per-request overrides, and the
//! `ResourceLimiter` that enforces memory and table limits inside a store.
//!
//! Fuel bounds the work a guest does, the epoch deadline bounds wall-clock
//! time (fuel alone cannot: a guest may be slow for reasons that cost no
//! fuel), and the limiter bounds what it allocates. Every execution gets all
//! three; a request can only lower them.

use serde::{Deserialize, Serialize};

use super::error::{EngineError, LimitHit, LimitKind};

/// The limits that apply to one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ExecLimits {
    /// Fuel units (about one per WebAssembly instruction).
    pub fuel: u64,
    /// Wall-clock time for instantiation plus the call, in milliseconds.
    pub timeout_ms: u64,
    /// Bytes of linear memory, all memories of the execution together.
    pub memory_bytes: u64,
    /// Elements, per table.
    pub table_elements: u64,
}

/// Optional per-request limits; each may only lower the server's ceiling.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, deserialize_with = "crate::json_int::opt_u64")]
    pub fuel: Option<u64>,
    #[serde(default, deserialize_with = "crate::json_int::opt_u64")]
    pub timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "crate::json_int::opt_u64")]
    pub memory_bytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::json_int::opt_u64")]
    pub table_elements: Option<u64>,
}

impl ExecLimits {
    /// Applies a request's overrides, refusing any that would raise a limit.
    pub fn lowered_by(self, overrides: Option<&LimitOverrides>) -> Result<ExecLimits, EngineError> {
        let Some(o) = overrides else { return Ok(self) };
        let pick = |name: &str, asked: Option<u64>, max: u64| match asked {
            None => Ok(max),
            Some(v) if v <= max => Ok(v),
            Some(v) => Err(EngineError::InvalidLimits(format!(
                "limits.{name} = {v} exceeds the server maximum of {max}; requests may only lower limits"
            ))),
        };
        Ok(ExecLimits {
            fuel: pick("fuel", o.fuel, self.fuel)?,
            timeout_ms: pick("timeout_ms", o.timeout_ms, self.timeout_ms)?,
            memory_bytes: pick("memory_bytes", o.memory_bytes, self.memory_bytes)?,
            table_elements: pick("table_elements", o.table_elements, self.table_elements)?,
        })
    }
}

/// Most instances, memories and tables one execution's module graph may
/// create. Generous for real graphs, small enough to stop a fan-out bomb.
const MAX_INSTANCES: usize = 1000;

/// Enforces [`ExecLimits`] on memory and table growth inside one store.
///
/// Growth beyond a module's own declared maximum fails the WebAssembly way
/// (`memory.grow` returns -1), since that is the module's contract with
/// itself. Growth beyond *our* limit traps with a [`LimitHit`], so that a
/// request that needs more memory than allowed ends with an error that says
/// so instead of an unexplained -1 deep inside the guest.
#[derive(Debug)]
pub struct StoreLimiter {
    memory_bytes: u64,
    table_elements: u64,
    /// Bytes of linear memory granted so far, across every memory in the
    /// store, so that a graph of modules shares one budget.
    memory_in_use: u64,
}

impl StoreLimiter {
    pub fn new(limits: &ExecLimits) -> Self {
        StoreLimiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_in_use: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let in_use = self.memory_in_use.saturating_add((desired - current) as u64);
        if in_use > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitHit {
                kind: LimitKind::Memory,
                message: format!(
                    "linear memory would grow from {current} to {desired} bytes ({in_use} bytes in all); the limit is {} bytes",
                    self.memory_bytes
                ),
            }));
        }
        self.memory_in_use = in_use;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if desired as u64 > self.table_elements {
            return Err(wasmtime::Error::new(LimitHit {
                kind: LimitKind::TableElements,
                message: format!(
                    "a table would grow from {current} to {desired} elements; the limit is {} elements",
                    self.table_elements
                ),
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ExecLimits = ExecLimits {
        fuel: 100,
        timeout_ms: 1000,
        memory_bytes: 65536,
        table_elements: 10,
    };

    #[test]
    fn overrides_lower_limits() {
        let o = LimitOverrides {
            fuel: Some(5),
            ..Default::default()
        };
        assert_eq!(SERVER.lowered_by(Some(&o)).unwrap(), ExecLimits { fuel: 5, ..SERVER });
        assert_eq!(SERVER.lowered_by(None).unwrap(), SERVER);
    }

    #[test]
    fn overrides_cannot_raise_limits() {
        let o = LimitOverrides {
            timeout_ms: Some(5000),
            ..Default::default()
        };
        let err = SERVER.lowered_by(Some(&o)).unwrap_err().to_string();
        assert!(
            err.contains("limits.timeout_ms = 5000 exceeds the server maximum of 1000"),
            "{err}"
        );
    }
}
