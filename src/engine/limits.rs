//! Execution limits: the server's ceilings, per-request overrides, and the
//! `ResourceLimiter` that enforces memory and table limits inside a store.
//!
//! Every execution gets all of them (see `store.rs` for how they are armed);
//! a request can only lower them. What each limit means and its default are
//! said once, at its setting in `src/config.rs`.

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

/// Enforces [`ExecLimits`] on memory and table growth inside one store.
///
/// A memory or table being created (`current` is 0) beyond our limit fails
/// instantiation with a [`LimitHit`]: the module cannot start at all, and the
/// error says which limit. Growth of an existing memory or table beyond our
/// limit, or beyond the module's own declared maximum, fails the WebAssembly
/// way: `memory.grow` and `table.grow` return -1 and the guest decides what
/// to do (a C program's `malloc` returns NULL; QuickJS reports "out of
/// memory" and exits). Hitting our limit is recorded and reported in the
/// response's `stats.limits_hit`, so the client still learns why.
#[derive(Debug)]
pub struct StoreLimiter {
    memory_bytes: u64,
    table_elements: u64,
    /// Bytes of linear memory granted so far, across every memory in the
    /// store, so that a graph of modules shares one budget.
    memory_in_use: u64,
    /// Our limits that refused a grow since the last arming.
    hits: Vec<LimitKind>,
}

impl StoreLimiter {
    pub fn new(limits: &ExecLimits) -> Self {
        StoreLimiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_in_use: 0,
            hits: Vec::new(),
        }
    }

    /// Bytes of linear memory granted so far, across the store.
    pub fn memory_in_use(&self) -> u64 {
        self.memory_in_use
    }

    /// The limits that refused a grow since the last call, each once.
    pub fn take_hits(&mut self) -> Vec<LimitKind> {
        std::mem::take(&mut self.hits)
    }

    /// Past our limit: a memory or table being created (`current` is 0)
    /// fails instantiation with `message`; a grow returns -1 to the guest
    /// and the hit is recorded.
    fn over_limit(
        &mut self,
        current: usize,
        kind: LimitKind,
        message: impl FnOnce() -> String,
    ) -> Result<bool, LimitHit> {
        if current == 0 {
            return Err(LimitHit {
                kind,
                message: message(),
            });
        }
        if !self.hits.contains(&kind) {
            self.hits.push(kind);
        }
        Ok(false)
    }

    /// Whether a memory may grow (or be created, from 0) to `desired`
    /// bytes: the one rule both tiers' limiters apply.
    pub(crate) fn grant_memory(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimitHit> {
        // The module's maximum first: wasmi asks no limiter for a grow
        // past it, so our limit is not what refused it.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let in_use = self.memory_in_use.saturating_add((desired - current) as u64);
        if in_use > self.memory_bytes {
            let limit = self.memory_bytes;
            return self.over_limit(current, LimitKind::Memory, || {
                format!(
                    "a linear memory of {desired} bytes ({in_use} bytes in all) cannot be created; the limit is {limit} bytes (limits.memory_bytes, --max-memory-bytes)"
                )
            });
        }
        self.memory_in_use = in_use;
        Ok(true)
    }

    /// Whether memories of `sizes` bytes could be created now, one after
    /// another, without creating them: the first refusal
    /// [`Self::grant_memory`] would give. The interpreter asks it before
    /// each instantiation, because wasmtime creates a module's memories
    /// before its tables and wasmi its tables first: a module over both
    /// limits must be refused for its memory on both tiers.
    pub(crate) fn check_memories(&self, sizes: &[u64]) -> Result<(), LimitHit> {
        let mut trial = StoreLimiter {
            memory_bytes: self.memory_bytes,
            table_elements: self.table_elements,
            memory_in_use: self.memory_in_use,
            hits: Vec::new(),
        };
        for &size in sizes {
            trial.grant_memory(0, usize::try_from(size).unwrap_or(usize::MAX), None)?;
        }
        Ok(())
    }

    /// Whether a table may grow (or be created, from 0) to `desired`
    /// elements: the one rule both tiers' limiters apply.
    pub(crate) fn grant_table(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimitHit> {
        // Our limit before the table's maximum, as both engines ask the
        // limiter first for a table (wasmtime's pooling allocator passes
        // its slot's size as `maximum`, which is not the module's). A grow
        // to 2^32 elements or more, which wasmi refuses without asking, is
        // past any table's size, not our limit's doing.
        if current > 0 && desired as u64 >= 1 << 32 {
            return Ok(false);
        }
        if desired as u64 > self.table_elements {
            let limit = self.table_elements;
            return self.over_limit(current, LimitKind::TableElements, || {
                format!(
                    "a table of {desired} elements cannot be created; the limit is {limit} elements (limits.table_elements, --max-table-elements)"
                )
            });
        }
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grant_memory(current, desired, maximum)
            .map_err(wasmtime::Error::new)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grant_table(current, desired, maximum)
            .map_err(wasmtime::Error::new)
    }

    // Counts are checked before wasmtime sees them, with messages naming the
    // setting: instances per link graph in `exec::check_counts`, memories
    // and tables per module at compile time. The store adds no second cap
    // (wasmtime's default of 10,000 could refuse a graph those checks
    // accept, with an error nothing classifies).
    fn instances(&self) -> usize {
        usize::MAX
    }

    fn tables(&self) -> usize {
        usize::MAX
    }

    fn memories(&self) -> usize {
        usize::MAX
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

    /// The dry run refuses what creating would, with the same message, and
    /// grants nothing: the memory in use after it is what it was.
    #[test]
    fn checking_memories_refuses_as_creating_would_and_grants_nothing() {
        let mut limiter = StoreLimiter::new(&SERVER);
        assert!(limiter.grant_memory(0, 32768, None).unwrap());
        assert!(limiter.check_memories(&[16384, 16384]).is_ok());
        let checked = limiter.check_memories(&[16384, 16385]).unwrap_err();
        assert_eq!(limiter.memory_in_use(), 32768);
        limiter.grant_memory(0, 16384, None).unwrap();
        let created = limiter.grant_memory(0, 16385, None).unwrap_err();
        assert_eq!((checked.kind, checked.message), (created.kind, created.message));
    }
}
