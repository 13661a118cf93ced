//! The WebAssembly engine: the only part of the crate that knows wasmtime.
//!
//! One [`WasmEngine`] is built at start-up and shared. It owns the wasmtime
//! `Engine` (configured for fuel, epoch interruption and a bounded stack),
//! the epoch ticker thread, and the compile cache. It knows nothing of HTTP
//! or of how modules are stored: callers hand it bytes and module graphs.
//!
//! - [`compile`] — bytes → [`CompiledModule`], cached by SHA-256, compiled off
//!   the async reactor on a bounded number of threads.
//! - [`link`] — checks that a module's imports are satisfied by its host
//!   modules' exports, with messages that name the import.
//! - [`exec`] — instantiates a module graph in a store under limits
//!   ([`LiveInstance`]) and calls its exports.
//! - [`memory`] — reads and writes of guest memory for requests.
//! - [`wasi`] — WASI preview 1 contexts with in-memory stdio.
//! - [`values`] — exact JSON ⇄ WebAssembly value conversion.
//! - [`limits`], [`error`]: limits and the classification of failures.

pub mod compile;
pub mod error;
pub mod exec;
pub mod limits;
pub mod link;
pub mod memory;
pub mod values;
pub mod wasi;

use std::sync::Arc;
use std::time::Duration;

pub use compile::{CacheOutcome, CacheStats, CompiledModule, ModuleInterface};
pub use error::{EngineError, LimitKind};
pub use exec::{CallFailure, CallOutcome, CallSpec, ExecStats, InstanceSpec, LiveInstance, WasiResult};
pub use limits::{ExecLimits, LimitOverrides};
pub use link::LinkedModule;
pub use memory::{MemoryRead, MemoryWrite};
pub use wasi::{WasiConfig, WasiOutput};

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
}

/// The shared engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: wasmtime::Engine,
    settings: EngineSettings,
    cache: compile::CompileCache,
    /// Hex SHA-256 of the engine's compatibility hash: artifacts made by an
    /// engine with another value cannot be loaded by this one.
    compatibility_hash: String,
    /// Host definitions shared by every store: WASI preview 1 and nothing
    /// else. Cloned per request when a graph needs a linker of its own.
    base_linker: wasmtime::Linker<exec::StoreState>,
}

impl WasmEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(settings: EngineSettings) -> Result<Self, EngineError> {
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(settings.max_stack_bytes)
            // The fiber stack holds the wasm stack plus host frames.
            .async_stack_size(settings.max_stack_bytes + (1 << 20))
            // Canonical NaNs make float results identical on every host CPU,
            // which a grader comparing outputs needs; it is within the spec.
            .cranelift_nan_canonicalization(true);
        if settings.pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling_config(&settings)));
        }
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| EngineError::Internal(format!("cannot configure wasmtime: {e}")))?;
        spawn_epoch_ticker(&engine, settings.epoch_tick)?;
        let cache = compile::CompileCache::new(settings.cache_entries, settings.compile_threads);
        let mut base_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut base_linker, |s: &mut exec::StoreState| s.wasi_ctx())
            .map_err(|e| EngineError::Internal(format!("cannot define WASI: {e}")))?;
        let compatibility_hash = {
            use std::hash::Hash;
            let mut hasher = compile::DigestHasher::default();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.hex()
        };
        Ok(WasmEngine {
            inner: Arc::new(Inner {
                engine,
                settings,
                cache,
                compatibility_hash,
                base_linker,
            }),
        })
    }

    /// The engine-wide settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Identifies the engine build and configuration that compiled
    /// artifacts belong to (stable across restarts of the same binary).
    pub fn compatibility_hash(&self) -> &str {
        &self.inner.compatibility_hash
    }

    /// The limits a request gets when it asks for none.
    pub fn default_limits(&self) -> ExecLimits {
        self.inner.settings.limits
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn base_linker(&self) -> &wasmtime::Linker<exec::StoreState> {
        &self.inner.base_linker
    }

    /// Instantiates `spec` and makes one call: a one-shot execution.
    /// The call is checked before anything is instantiated.
    pub async fn run(&self, spec: InstanceSpec, call: CallSpec<'_>) -> Result<CallOutcome, CallFailure> {
        let prepared = exec::prepare(&spec.root, &spec.root_label, &call)?;
        let mut live = self.instantiate(spec).await?;
        live.call_prepared(prepared, call).await
    }
}

/// Slots of the pooling allocator: enough for every concurrent execution
/// and live instance with room for linked graphs; past it, instantiation
/// fails with `PoolConcurrencyLimitError`, reported as `503 overloaded`.
const POOL_SLOTS: u32 = 1000;

/// The pooling allocator keeps memories, tables, instances and fiber stacks
/// in pre-reserved slots and reuses them, instead of an mmap/munmap pair for
/// each per call. Its per-slot maxima must be at least our limits, so that
/// our limiter, not the pool, decides (and reports) what is too big.
fn pooling_config(settings: &EngineSettings) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_core_instances(POOL_SLOTS)
        .total_memories(POOL_SLOTS)
        .total_tables(POOL_SLOTS)
        .total_stacks(POOL_SLOTS)
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
        .max_memories_per_module(4)
        .max_tables_per_module(8)
        // Room for the instance metadata of large real programs.
        .max_core_instance_size(4 << 20)
        // Keep a little of each reused memory resident: zeroing a few pages
        // is cheaper than faulting them in again.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    pool
}

/// Advances the engine's epoch every `tick` on one shared thread.
///
/// One ticker for the whole process: a ticker per request costs a thread
/// spawn per call. The thread holds only a weak handle, so it ends by itself
/// once the engine is dropped (in tests, many engines come and go).
fn spawn_epoch_ticker(engine: &wasmtime::Engine, tick: Duration) -> Result<(), EngineError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        // Without a ticker timeouts would never fire; refuse to run blind.
        .map_err(|e| EngineError::Internal(format!("cannot start the epoch ticker thread: {e}")))?;
    Ok(())
}
