//! The engine's settings, fixed at start-up, and the wasmtime configuration
//! they make (fuel, epochs, stack, NaN canonicalisation, pooling).

use std::time::Duration;

use super::error::EngineError;
use super::limits::ExecLimits;

/// Engine-wide settings, fixed at start-up.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Largest module binary accepted, in bytes.
    pub max_module_bytes: usize,
    /// Largest WebAssembly stack, in bytes; deeper recursion traps with
    /// `stack_overflow`. Engine-wide because wasmtime fixes it per engine.
    pub max_stack_bytes: usize,
    /// How many compiled modules the cache keeps (least recently used go).
    pub cache_entries: usize,
    /// How many bytes of compiled code the cache keeps, all modules
    /// together (see [`crate::engine::compile::CompiledModule::weight`]);
    /// compiled components and the interpreter's parsed registered
    /// modules are each kept within the same two bounds.
    pub cache_bytes: usize,
    /// How often the epoch advances: the granularity of the timeout and how
    /// long a guest can run before it yields the reactor thread.
    pub epoch_tick: Duration,
    /// How many modules may compile at once.
    pub compile_threads: usize,
    /// How long a request waits for its module to compile.
    pub compile_timeout: Duration,
    /// The ceilings for every execution.
    pub limits: ExecLimits,
    /// Most bytes kept of a WASI program's stdout, and of its stderr.
    pub max_output_bytes: usize,
    /// Most bytes a request may read out of guest memory, all reads together.
    pub max_read_bytes: u64,
    /// Use wasmtime's pooling allocator (see [`pooling_config`]).
    pub pooling: bool,
    /// Most memories one module may define.
    pub max_memories_per_module: usize,
    /// Most tables one module may define.
    pub max_tables_per_module: usize,
    /// Most instances one execution's link graph, or one environment, may
    /// create.
    pub max_link_instances: usize,
    /// Most instances all environments may hold together (pool slots of
    /// their own).
    pub max_environment_instances: usize,
    /// Which tier runs code (see [`super::tier`]).
    pub tier: super::tier::TierMode,
}

/// The wasmtime engine for `settings`.
pub(crate) fn wasmtime_engine(settings: &EngineSettings) -> Result<wasmtime::Engine, EngineError> {
    let mut config = wasmtime::Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(settings.max_stack_bytes)
        // The fiber stack holds the wasm stack plus host frames.
        .async_stack_size(settings.max_stack_bytes + (1 << 20))
        // Canonical NaNs make float results identical on every host CPU,
        // which a grader comparing outputs needs; it is within the spec.
        .cranelift_nan_canonicalization(true)
        // Relaxed SIMD's results may differ by host CPU; the deterministic
        // choice gives every host the same answer, as canonical NaNs do.
        .relaxed_simd_deterministic(true)
        .operator_cost(operator_cost());
    // Functions identical across modules (trampolines) compile once.
    config
        .enable_incremental_compilation(std::sync::Arc::new(super::fncache::FunctionCache::new()))
        .map_err(|e| EngineError::Internal(format!("cannot enable the function cache: {e}")))?;
    if settings.pooling {
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling_config(settings)));
    }
    wasmtime::Engine::new(&config).map_err(|e| EngineError::Internal(format!("cannot configure wasmtime: {e}")))
}

/// Fuel counts operators, one unit each (wasmtime's default table), with no
/// extra charge per byte or element of bulk operations. Wasmtime's default
/// charges a `memory.copy` its length in fuel *before* the bounds check, so a
/// copy of 2^64-1 bytes ran out of fuel instead of trapping out of bounds as
/// the spec requires. The work of a bulk operation is still bounded: by the
/// memory and table limits, and by the wall-clock timeout.
fn operator_cost() -> wasmtime::OperatorCost {
    let mut cost = wasmtime::OperatorCost::new();
    let variable = &mut cost.variable;
    variable.memory_copy_per_byte = 0;
    variable.memory_fill_per_byte = 0;
    variable.memory_init_per_byte = 0;
    variable.memory_grow_per_page = 0;
    variable.table_copy_per_element = 0;
    variable.table_fill_per_element = 0;
    variable.table_init_per_element = 0;
    variable.table_grow_per_element = 0;
    cost
}

/// Slots of the pooling allocator for executions and live instances:
/// enough for every concurrent execution and live instance with room for
/// linked graphs; past it, instantiation fails with
/// `PoolConcurrencyLimitError`, reported as `503 overloaded`. Environments
/// get `--max-environment-instances` more, which they cannot pass (see
/// `environment::Budget`), so they never take these.
const POOL_SLOTS: u32 = 1000;

/// The pooling allocator keeps memories, tables, instances and fiber stacks
/// in pre-reserved slots and reuses them, instead of an mmap/munmap pair for
/// each per call. Its per-slot maxima must be at least our limits, so that
/// our limiter, not the pool, decides (and reports) what is too big.
fn pooling_config(settings: &EngineSettings) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    let slots = POOL_SLOTS.saturating_add(u32::try_from(settings.max_environment_instances).unwrap_or(u32::MAX));
    pool.total_core_instances(slots)
        // A component's core instances take core slots too; this counts the
        // components themselves.
        .total_component_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        // The whole 32-bit range: each slot reserves 4 GiB of address space
        // anyway, and a slot smaller than a module's initial memory would
        // make wasmtime reject the module at compile time instead of our
        // limiter refusing it with a `memory` limit error.
        .max_memory_size(1 << 32)
        // At least 1M elements (8 MB of address space a slot), for the same
        // reason: our limiter should refuse oversized tables, not the pool.
        .table_elements(
            usize::try_from(settings.limits.table_elements)
                .unwrap_or(usize::MAX)
                .max(1 << 20),
        )
        // The same caps our compile step checks first (with a message that
        // names the setting), so the pool never refuses a module we accept.
        .max_memories_per_module(u32::try_from(settings.max_memories_per_module).unwrap_or(u32::MAX))
        .max_tables_per_module(u32::try_from(settings.max_tables_per_module).unwrap_or(u32::MAX))
        // Room for the instance metadata of large real programs.
        .max_core_instance_size(4 << 20)
        // Keep a little of each reused memory resident: zeroing a few pages
        // is cheaper than faulting them in again.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    pool
}
