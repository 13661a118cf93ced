//! The WebAssembly engine: the only part of the crate that knows wasmtime.
//!
//! [`WasmEngine`], defined here, is the front door: everything outside
//! `engine/` goes through it and the types re-exported below. It owns the
//! wasmtime `Engine`, the epoch ticker thread and the compile cache. It knows
//! nothing of HTTP or of how modules are stored: callers hand it bytes and
//! module graphs. The files below never import this one; they import each
//! other in one direction, leaves first:
//!
//! - [`error`] — [`EngineError`] and [`LimitKind`]; [`types`] — how types are
//!   shown; [`wasi`] — WASI preview 1 contexts with in-memory stdio.
//! - [`limits`] — [`ExecLimits`] and the resource limiter; [`values`] — exact
//!   JSON ⇄ WebAssembly values; [`classify`] — wasmtime failures into
//!   [`EngineError`]s, by trap code.
//! - [`epoch`] — the epoch ticker thread, fast only while a guest runs long;
//!   [`store`] — a store under limits: host state, the epoch callback, and
//!   arming a request's one fuel and time budget.
//! - [`compile`] — bytes → [`CompiledModule`] and the cache by SHA-256;
//!   [`link`] — import checks with messages that name the import;
//!   [`memory`] — guest memory reads and writes.
//! - [`exec`] — instantiating a module graph and calls on it.
//! - [`interp`] — the interpreter tier (wasmi) for code not compiled yet,
//!   and [`interp_engines`], its engines, replaced as they fill up;
//!   [`tier`] — the tier setting and when code is worth compiling.
//! - [`instance`] — a [`LiveInstance`] on either tier, behind one type;
//!   [`environment`] — many instances in one store, linked live.
//! - [`component`] — components (WIT-typed imports and exports), called
//!   with JSON or WAVE values, with WASI 0.2.
//! - [`settings`] — [`EngineSettings`] and the wasmtime configuration;
//!   [`fncache`] — the store of wasmtime's incremental compilation cache.

pub mod artifact;
pub mod classify;
pub mod compile;
pub mod component;
pub mod environment;
pub mod epoch;
pub mod error;
pub mod exec;
pub mod fncache;
pub mod funcs;
mod hot;
mod inline_hash;
pub mod instance;
pub mod interp;
pub mod interp_engines;
pub mod interp_types;
pub mod interp_wasi;
pub mod limits;
pub mod link;
pub mod memory;
pub mod settings;
pub mod spare;
pub mod store;
pub mod tier;
pub mod types;
pub mod values;
pub mod wasi;
pub mod weighed;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub use compile::{CacheOutcome, CacheStats, CompiledModule, Sha256Digest};
pub use component::{
    CodeInterface, CompiledComponent, ComponentCall, ComponentInstance, ComponentParams, ComponentWorld,
    LinkedComponent, check_imports as check_component_imports, is_component,
};
pub use environment::{Environment, Member, MemberSpec};
pub use error::{EngineError, LimitKind};
pub use exec::{
    CallFailure, CallOutcome, CallSpec, Code, CodeLabel, ExecStats, GlobalRead, INLINE_LABEL, InstanceSpec, Now, Tier,
    WasiResult,
};
pub use instance::LiveInstance;

pub use limits::{ExecLimits, LimitOverrides};
pub use link::LinkedModule;
pub use memory::{MemoryRead, MemoryWrite};
pub use settings::EngineSettings;
pub use store::{WORKER_STACK_BYTES, allow_sync_calls, sync_reruns};
pub use values::{decode_hex, encode_hex};

/// Inline code, with its SHA-256 when the caller has worked it out
/// ([`WasmEngine::cached_inline`]), so that a call hashes it once.
#[derive(Clone, Copy)]
pub struct InlineWasm<'a> {
    pub bytes: &'a [u8],
    pub sha: Option<Sha256Digest>,
}
pub use tier::TierMode;
pub use types::{ExternDesc, ModuleInterface};
pub use wasi::{WasiConfig, WasiOutput};

/// Text of at most this size is turned into a binary on the calling thread;
/// larger text is parsed on the blocking pool like a compile.
const INLINE_WAT_BYTES: usize = 16 * 1024;

/// An interpreted call that used this much fuel (tens of milliseconds of
/// interpreting) has its module compiled in the background at once, rather
/// than at its second sighting: its next call should not be as slow.
const HOT_FUEL: u64 = 20_000_000;

/// A module of at most this size is parsed for the interpreter on the
/// calling thread; larger ones on the blocking pool.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// The shared engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: wasmtime::Engine,
    /// Tells this engine's modules from other engines' in a thread's
    /// [`hot`] hold.
    id: hot::EngineId,
    settings: EngineSettings,
    cache: compile::CompileCache,
    /// Hex SHA-256 of the engine's compatibility hash: artifacts made by an
    /// engine with another value cannot be loaded by this one.
    compatibility_hash: String,
    /// Host definitions shared by every store: WASI preview 1 and nothing
    /// else. Cloned per request when a graph needs a linker of its own.
    base_linker: wasmtime::Linker<store::StoreState>,
    interpreter: interp::Interpreter,
    sightings: tier::Sightings,
    /// Registered modules parsed for the interpreter, not compiled yet.
    registered: tier::Parsed<Arc<InterpretedCode>>,
    /// The instances all environments may hold together.
    environment_budget: Arc<environment::Budget>,
    /// WASI 0.2, for components.
    component_linker: wasmtime::component::Linker<store::StoreState>,
    /// Compiled components by SHA-256 (core modules have `cache`).
    components: tier::Parsed<Arc<CompiledComponent>>,
}

impl WasmEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(settings: EngineSettings) -> Result<Self, EngineError> {
        let engine = settings::wasmtime_engine(&settings)?;
        epoch::spawn_epoch_ticker(&engine, settings.epoch_tick)?;
        let cache = compile::CompileCache::new(settings.cache_entries, settings.cache_bytes, settings.compile_threads);
        let mut base_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut base_linker, |s: &mut store::StoreState| s.wasi_ctx())
            .and_then(|()| wasi::define_proc_exit(&mut base_linker))
            .map_err(|e| EngineError::Internal(format!("cannot define WASI: {e}")))?;
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(|e| EngineError::Internal(format!("cannot define WASI 0.2: {e}")))?;
        let compatibility_hash = {
            use std::hash::Hash;
            let mut hasher = compile::DigestHasher::default();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.hex()
        };
        let interpreter = interp::Interpreter::new(&engine, settings.max_output_bytes);
        let (cache_entries, cache_bytes) = (settings.cache_entries, settings.cache_bytes);
        let settings_max_env = settings.max_environment_instances;
        // Background compiles beyond what the compile pool runs at once would
        // only queue; a module refused now is compiled at a later sighting.
        let sightings = tier::Sightings::new(settings.cache_entries, settings.compile_threads.max(1) * 2);
        Ok(WasmEngine {
            inner: Arc::new(Inner {
                engine,
                id: hot::EngineId::new(),
                settings,
                cache,
                compatibility_hash,
                base_linker,
                interpreter,
                sightings,
                registered: tier::Parsed::new(cache_entries, cache_bytes),
                environment_budget: environment::Budget::new(settings_max_env),
                component_linker,
                components: tier::Parsed::new(cache_entries, cache_bytes),
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

    fn runtime(&self) -> exec::Runtime<'_> {
        exec::Runtime {
            engine: &self.inner.engine,
            linker: &self.inner.base_linker,
            output_cap: self.inner.settings.max_output_bytes,
            max_link_instances: self.inner.settings.max_link_instances,
        }
    }

    fn defined_caps(&self) -> compile::DefinedCaps {
        compile::DefinedCaps {
            memories: self.inner.settings.max_memories_per_module,
            tables: self.inner.settings.max_tables_per_module,
        }
    }

    /// Turns WebAssembly text into a binary, off the reactor when it is large.
    pub async fn wat_to_wasm(&self, text: String) -> Result<Vec<u8>, EngineError> {
        if text.len() <= INLINE_WAT_BYTES {
            return compile::parse_wat(&text);
        }
        tokio::task::spawn_blocking(move || compile::parse_wat(&text))
            .await
            .map_err(|e| EngineError::Internal(format!("text parser task failed: {e}")))?
    }

    /// The compiled module with this hash, if the cache has it.
    pub fn cached(&self, sha: &Sha256Digest) -> Option<Arc<CompiledModule>> {
        self.inner.cache.hit(self.inner.cache.get(sha))
    }

    /// `f` of the compiled module with this hash, if the cache has it (a
    /// hit, counted as one): the call path's [`Self::cached`], which
    /// borrows the module from the thread's hold when the thread called
    /// it last, so that a hot module's calls write no count every core
    /// calling it writes (see [`hot`]).
    pub fn with_cached<R>(&self, sha: &Sha256Digest, f: impl FnOnce(&Arc<CompiledModule>) -> R) -> Option<R> {
        let cache = &self.inner.cache;
        // Read before the cache is looked up (see `hot::with`).
        let version = cache.version();
        let answer = hot::with(self.inner.id, version, sha, || cache.get(sha), f)?;
        cache.count_hit();
        Some(answer)
    }

    /// [`Self::cached`] without counting a hit: for a caller that counts
    /// each use of what it found itself ([`Self::count_cache_hits`]).
    pub fn cached_uncounted(&self, sha: &Sha256Digest) -> Option<Arc<CompiledModule>> {
        self.inner.cache.get(sha)
    }

    /// Counts `n` hits of the compile cache: uses of modules a caller found
    /// there earlier and held (a thread's link graph, `registry::graph`).
    pub fn count_cache_hits(&self, n: u64) {
        self.inner.cache.count_hits(n);
    }

    /// Changes whenever a module is added to the compile cache or leaves
    /// it: read it before looking modules up, to know later whether what
    /// was found is still what the cache holds.
    pub fn cache_version(&self) -> u64 {
        self.inner.cache.version()
    }

    /// Whether the compile cache holds the module with this hash (without
    /// counting a hit).
    pub fn is_compiled(&self, sha: &Sha256Digest) -> bool {
        self.cached_uncounted(sha).is_some()
    }

    /// The compile cache's counters since start.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Returns the compiled form of `wasm`, compiling it only if the cache
    /// does not have it yet.
    pub async fn compile(&self, wasm: Vec<u8>) -> Result<(Arc<CompiledModule>, CacheOutcome), EngineError> {
        self.check_size(&wasm)?;
        if component::is_component(&wasm) {
            return Err(EngineError::InvalidModule(
                "this is a component; components run through `POST /`, `/execute`, `/instances` and `/inspect` \
                 (environments and core modules' host_modules take core modules)"
                    .into(),
            ));
        }
        let sha = compile::sha256(&wasm);
        if let Some(hit) = self.cached(&sha) {
            return Ok((hit, CacheOutcome::Cached));
        }
        let engine = self.clone();
        self.on_compile_pool(move || {
            let inner = &engine.inner;
            // Another request may have compiled it while this one waited.
            if let Some(hit) = inner.cache.get(&sha) {
                return Ok((hit, CacheOutcome::Cached));
            }
            let started = Instant::now();
            let compiled =
                compile::compile_blocking(&inner.engine, &inner.base_linker, engine.defined_caps(), sha, &wasm)?;
            let compiled = Arc::new(compiled);
            inner.cache.count_compiled();
            inner.cache.insert(compiled.clone());
            Ok((compiled, CacheOutcome::Compiled(started.elapsed())))
        })
        .await
    }

    /// Refuses a binary over `--max-module-bytes` before anything is done
    /// with it.
    fn check_size(&self, wasm: &[u8]) -> Result<(), EngineError> {
        let limit = self.inner.settings.max_module_bytes;
        if wasm.len() > limit {
            return Err(EngineError::ModuleTooLarge {
                size: wasm.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Runs `compile` on the blocking pool under a compile permit, waiting
    /// at most `--compile-timeout-ms`. Wasmtime cannot interrupt a compile:
    /// the task owns the permit and caches its result itself, so a request
    /// that stops waiting neither frees a compile slot early nor wastes the
    /// work.
    async fn on_compile_pool<T: Send + 'static>(
        &self,
        compile: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let permit = self
            .inner
            .cache
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Internal("compile pool closed".into()))?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            compile()
        });
        let limit = self.inner.settings.compile_timeout;
        tokio::time::timeout(limit, task)
            .await
            .map_err(|_| EngineError::LimitExceeded {
                kind: LimitKind::CompileTime,
                message: format!(
                    "compiling the module took longer than {} ms (--compile-timeout-ms)",
                    limit.as_millis()
                ),
            })?
            .map_err(|e| EngineError::Internal(format!("compile task failed: {e}")))?
    }

    /// The compiled component of `wasm` (a component binary: see
    /// [`component::is_component`]), compiling it only if the cache does
    /// not have it yet.
    pub async fn compile_component(
        &self,
        wasm: Vec<u8>,
    ) -> Result<(Arc<CompiledComponent>, CacheOutcome), EngineError> {
        self.check_size(&wasm)?;
        let sha = compile::sha256(&wasm);
        if let Some(hit) = self.cached_component(&sha) {
            return Ok((hit, CacheOutcome::Cached));
        }
        let engine = self.clone();
        self.on_compile_pool(move || {
            let inner = &engine.inner;
            if let Some(hit) = engine.cached_component(&sha) {
                return Ok((hit, CacheOutcome::Cached));
            }
            let started = Instant::now();
            let compiled = component::compile_blocking(&inner.engine, &inner.component_linker, sha, &wasm)?;
            let compiled = Arc::new(compiled);
            inner.cache.count_compiled();
            let weight = compiled.weight();
            inner.components.put(sha, compiled.clone(), weight);
            Ok((compiled, CacheOutcome::Compiled(started.elapsed())))
        })
        .await
    }

    /// The compiled component with this hash, if the cache has it.
    pub fn cached_component(&self, sha: &Sha256Digest) -> Option<Arc<CompiledComponent>> {
        self.inner.components.get(sha)
    }

    /// Instantiates the component `root`, linked to `hosts` (registered
    /// components, dependencies first), and makes one call, on one fuel and
    /// time budget (see [`component::instance::run_once`]).
    pub async fn run_component(
        &self,
        root: Arc<CompiledComponent>,
        hosts: &[LinkedComponent],
        call: &ComponentCall<'_>,
        wasi: Option<WasiConfig>,
    ) -> Result<CallOutcome, CallFailure> {
        component::instance::run_once(self.component_setup(wasi), root, hosts, call).await
    }

    /// Instantiates the component `root`, linked to `hosts`, as a live
    /// instance under `limits` (memory and tables for its life, fuel and
    /// time for instantiation).
    pub async fn instantiate_component(
        &self,
        root: Arc<CompiledComponent>,
        hosts: Vec<LinkedComponent>,
        limits: ExecLimits,
        wasi: Option<WasiConfig>,
    ) -> Result<LiveInstance, CallFailure> {
        component::check_imports(&root, &hosts)?;
        let live = ComponentInstance::new(self.component_setup(wasi), root, &hosts, &limits).await?;
        Ok(live.into())
    }

    fn component_setup(&self, wasi: Option<WasiConfig>) -> component::instance::Setup<'_> {
        let inner = &self.inner;
        component::instance::Setup {
            engine: &inner.engine,
            wasi_linker: &inner.component_linker,
            wasi,
            output_cap: inner.settings.max_output_bytes,
        }
    }

    /// Serializes a compiled module for the store (see [`Self::load_artifact`]).
    pub async fn artifact(&self, module: &Arc<CompiledModule>) -> Result<Vec<u8>, EngineError> {
        let module = module.clone();
        tokio::task::spawn_blocking(move || Ok(artifact::encode(module.headers(), &module.module().serialize()?)))
            .await
            .map_err(|e| EngineError::Internal(format!("serialize task failed: {e}")))?
            .map_err(|e: wasmtime::Error| EngineError::Internal(format!("cannot serialize module: {e}")))
    }

    /// Loads a module from an artifact made by [`Self::artifact`], skipping
    /// compilation, and caches it under `sha`. Artifacts come only from this
    /// server's own store, keyed by [`Self::compatibility_hash`].
    pub async fn load_artifact(
        &self,
        sha: Sha256Digest,
        size: usize,
        artifact: Vec<u8>,
    ) -> Result<Arc<CompiledModule>, EngineError> {
        let engine = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let inner = &engine.inner;
            let (headers, code) = artifact::decode(&artifact);
            compile::deserialize_blocking(&inner.engine, &inner.base_linker, sha, size, code, &headers)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("artifact task failed: {e}")))??;
        let loaded = Arc::new(loaded);
        self.inner.cache.count_loaded();
        self.inner.cache.insert(loaded.clone());
        Ok(loaded)
    }

    /// Checks that every import of `module` (called `who` in messages) is
    /// satisfied by an export of one of `hosts` (see [`link::check_imports`]).
    pub fn check_imports(&self, who: &str, module: &CompiledModule, hosts: &[LinkedModule]) -> Result<(), EngineError> {
        link::check_imports(who, module, hosts)
    }

    /// Instances all environments hold now (for `/metrics`).
    pub fn environment_instances(&self) -> usize {
        self.inner.environment_budget.held()
    }

    /// An empty environment (see [`environment`]) under `limits`: memory
    /// and tables for its whole life, fuel and time the most a request on
    /// it may have. `wasi` is the world of the WASI programs in it.
    pub fn environment(&self, limits: &ExecLimits, wasi: Option<WasiConfig>) -> Environment {
        Environment::new(
            &self.runtime(),
            limits,
            wasi,
            self.inner.settings.max_link_instances,
            self.inner.environment_budget.clone(),
        )
    }

    /// Instantiates `spec` under its limits, arming the budget that the
    /// instantiation (and, for a one-shot run, the call) spends.
    pub async fn instantiate(&self, spec: InstanceSpec) -> Result<LiveInstance, CallFailure> {
        exec::instantiate(&self.runtime(), spec).await.map(LiveInstance::from)
    }

    /// Whether the tier setting lets the interpreter run code at all, and
    /// `wasm` is of a size and shape it runs (see [`interp::eligible`]).
    fn may_interpret(&self, wasm: &[u8]) -> bool {
        let settings = &self.inner.settings;
        settings.tier != TierMode::Compiled
            && wasm.len() <= settings.max_module_bytes
            && interp::eligible(wasm, self.defined_caps())
    }

    /// The compiled form of inline `wasm` when its call runs compiled code
    /// from the cache (`auto` or `compiled` mode, and a cache hit, counted
    /// as one), and its SHA-256 when worked out (not in `interpreter`
    /// mode). A cached module is so hashed and looked up once for the
    /// whole call; on a miss the hash goes on to
    /// [`Self::run_interpreted`].
    pub fn cached_inline(&self, wasm: &[u8]) -> (Option<Arc<CompiledModule>>, Option<Sha256Digest>) {
        if self.inner.settings.tier == TierMode::Interpreter {
            return (None, None);
        }
        // Hashing is most of a cached inline call's own work on a CPU
        // without SHA instructions: a thread sent the same small code
        // lately compares it instead (see `inline_hash`).
        let (sha, recalled) = inline_hash::hash(wasm);
        let cached = self.cached(&sha);
        if cached.is_some() && !recalled {
            inline_hash::remember(wasm, sha);
        }
        (cached, Some(sha))
    }

    /// [`Self::cached_inline`] for the call path: `f` of the compiled form
    /// of inline `wasm` and its SHA-256, borrowed as [`Self::with_cached`]
    /// does; on a miss, the hash when it was worked out.
    pub fn with_cached_inline<R>(
        &self,
        wasm: &[u8],
        f: impl FnOnce(&Arc<CompiledModule>, Sha256Digest) -> R,
    ) -> Result<R, Option<Sha256Digest>> {
        if self.inner.settings.tier == TierMode::Interpreter {
            return Err(None);
        }
        let (sha, recalled) = inline_hash::hash(wasm);
        let answer = self.with_cached(&sha, |root| f(root, sha)).ok_or(Some(sha))?;
        if !recalled {
            inline_hash::remember(wasm, sha);
        }
        Ok(answer)
    }

    /// Whether the tier setting and the code send inline `wasm` (whose
    /// hash may be `known`) to the interpreter: `None` means compile it as
    /// usual. In `auto` mode that is when the module is compiled already; a
    /// module seen for the second time is compiled in the background
    /// meanwhile (see [`tier`]). The hash is `Some` in `auto` mode.
    async fn for_interpreter(
        &self,
        wasm: &[u8],
        known: Option<Sha256Digest>,
    ) -> Option<(interp::InterpModule, Option<Sha256Digest>)> {
        if !self.may_interpret(wasm) {
            return None;
        }
        let settings = &self.inner.settings;
        // Only code the interpreter could run is hashed here: a module it
        // cannot run (a WASI program, say) is hashed once, by `compile`.
        let sha = (settings.tier == TierMode::Auto).then(|| known.unwrap_or_else(|| compile::sha256(wasm)));
        if let Some(sha) = sha {
            if self.inner.cache.get(&sha).is_some() {
                return None;
            }
            if self.inner.sightings.seen_again(sha) {
                self.compile_in_background(sha, wasm.to_vec());
            }
        }
        Some((self.parse_for_interpreter(wasm).await?, sha))
    }

    /// Parses `wasm` for the interpreter, off the reactor when it is large.
    async fn parse_for_interpreter(&self, wasm: &[u8]) -> Option<interp::InterpModule> {
        let interpreter = &self.inner.interpreter;
        let module = if wasm.len() <= INLINE_PARSE_BYTES {
            interpreter.parse(wasm.into())
        } else {
            let (engine, wasm) = (self.clone(), wasm.into());
            tokio::task::spawn_blocking(move || engine.inner.interpreter.parse(wasm))
                .await
                .ok()?
        };
        // The engine that filled up is freed once nothing made in it is
        // left: registered modules parsed in it are parsed again, from the
        // store, when next called.
        if interpreter.take_retired() {
            self.inner
                .registered
                .retain(|code| interpreter.is_current(&code.module));
        }
        module
    }

    /// Runs a one-shot call of `wasm` on the interpreter, if
    /// [`Self::for_interpreter`] says so: `Ok(None)` means the caller
    /// compiles and runs it as usual. `graph` gives the interpreter's form
    /// of every registered module it links, dependencies first (`None`
    /// when one is not code the interpreter runs), and is awaited only once
    /// the module itself is to be interpreted: a compiled module's calls do
    /// not look its graph up twice. `direct` names the modules it imports
    /// from itself (its `host_modules`); its imports are checked against
    /// them with the compiled tier's rules and messages. The answer comes
    /// with the module's SHA-256, for the response's `stats.modules`.
    pub async fn run_interpreted<E>(
        &self,
        InlineWasm { bytes: wasm, sha }: InlineWasm<'_>,
        label: &str,
        call: &CallSpec<'_>,
        wasi: Option<&WasiConfig>,
        direct: &[String],
        graph: impl Future<Output = Result<Option<Vec<(String, Arc<InterpretedCode>)>>, E>>,
    ) -> Result<Option<(Result<CallOutcome, CallFailure>, Sha256Digest)>, E> {
        let Some((module, sha)) = self.for_interpreter(wasm, sha).await else {
            return Ok(None);
        };
        let Some(graph) = graph.await? else {
            return Ok(None);
        };
        if module.needs_hosts() && graph.is_empty() {
            return Ok(None);
        }
        let Some(result) = self
            .run_graph(Arc::new(module), label, call, wasi, direct, &graph)
            .await
        else {
            return Ok(None);
        };
        let fuel = match &result {
            Ok(outcome) => outcome.stats.fuel_consumed,
            Err(failure) => failure.stats.as_ref().map_or(0, |s| s.fuel_consumed),
        };
        if let Some(sha) = sha
            && fuel >= HOT_FUEL
            && self.inner.sightings.ran_long(sha)
        {
            self.compile_in_background(sha, wasm.to_vec());
        }
        // `auto` mode hashed it already; otherwise it is hashed once, here.
        let sha = sha.unwrap_or_else(|| compile::sha256(wasm));
        Ok(Some((result, sha)))
    }

    /// Inline `wasm` ready to be made a live instance on the interpreter, if
    /// [`Self::for_interpreter`] says so and every call the instance could
    /// be asked for runs there; `None` means compile it as usual.
    pub async fn interpretable(&self, wasm: &[u8]) -> Option<Arc<InterpretedCode>> {
        let (module, sha) = self.for_interpreter(wasm, None).await?;
        if !module.whole() {
            return None;
        }
        let digest = sha.unwrap_or_else(|| compile::sha256(wasm));
        Some(Arc::new(InterpretedCode::new(module, digest)))
    }

    /// Parses a module being registered (or registered, and compiled
    /// neither in memory nor in the store) for the interpreter, so that its
    /// calls need not wait for its compile, and keeps it for
    /// [`Self::parsed_code`]. `None` with `--tier compiled`, and for code
    /// the interpreter does not run: that is compiled at once.
    pub async fn interpret_registered(&self, wasm: &[u8]) -> Option<Arc<InterpretedCode>> {
        if !self.may_interpret(wasm) {
            return None;
        }
        let module = self.parse_for_interpreter(wasm).await?;
        let code = Arc::new(InterpretedCode::new(module, compile::sha256(wasm)));
        // Weighed by its binary: wasmi keeps the code bodies it parsed.
        self.inner.registered.put(code.digest, code.clone(), wasm.len());
        Some(code)
    }

    /// The interpreter's form of a registered module, made by
    /// [`Self::interpret_registered`], whether or not it is compiled too
    /// (a link graph run on the interpreter needs every module's; whether a
    /// module's own calls run there is the caller's decision). `None` with
    /// `--tier compiled`.
    pub fn parsed_code(&self, sha: &Sha256Digest) -> Option<Arc<InterpretedCode>> {
        match self.inner.settings.tier {
            TierMode::Compiled => None,
            _ => self.inner.registered.get(sha),
        }
    }

    /// Runs a one-shot call of `code` on the interpreter; `None` when the
    /// call has values this tier does not convert (the caller runs it
    /// compiled).
    pub async fn run_code(
        &self,
        code: &InterpretedCode,
        label: &str,
        call: &CallSpec<'_>,
        wasi: Option<&WasiConfig>,
        direct: &[String],
        graph: &[(String, Arc<InterpretedCode>)],
    ) -> Option<Result<CallOutcome, CallFailure>> {
        self.run_graph(code.module.clone(), label, call, wasi, direct, graph)
            .await
    }

    /// Checks `module`'s graph (see [`Self::check_graph`]), then
    /// instantiates it and makes one call, on the interpreter.
    async fn run_graph(
        &self,
        module: Arc<interp::InterpModule>,
        label: &str,
        call: &CallSpec<'_>,
        wasi: Option<&WasiConfig>,
        direct: &[String],
        graph: &[(String, Arc<InterpretedCode>)],
    ) -> Option<Result<CallOutcome, CallFailure>> {
        if let Err(error) = self.check_graph(label, &module, direct, graph) {
            return Some(Err(error.into()));
        }
        let hosts = interp_hosts(graph);
        self.inner
            .interpreter
            .run(module, &hosts, label, call, wasi.cloned())
            .await
    }

    /// Instantiates `code` on the interpreter, with `graph` (checked by
    /// [`Self::check_interpreted_graph`]), under `limits`, arming the budget
    /// that instantiation spends.
    pub async fn instantiate_interpreted(
        &self,
        code: &InterpretedCode,
        graph: &[(String, Arc<InterpretedCode>)],
        label: String,
        limits: ExecLimits,
        wasi: Option<WasiConfig>,
    ) -> Result<LiveInstance, CallFailure> {
        let hosts = interp_hosts(graph);
        self.inner
            .interpreter
            .instantiate(code.module.clone(), &hosts, label, limits, wasi)
            .await
            .map(LiveInstance::from)
    }

    /// The checks a graph passes before it is instantiated, as on the
    /// compiled tier: the number of instances, then the root's imports
    /// against its direct host modules.
    pub fn check_interpreted_graph(
        &self,
        label: &str,
        code: &InterpretedCode,
        direct: &[String],
        graph: &[(String, Arc<InterpretedCode>)],
    ) -> Result<(), EngineError> {
        self.check_graph(label, &code.module, direct, graph)
    }

    fn check_graph(
        &self,
        label: &str,
        module: &interp::InterpModule,
        direct: &[String],
        graph: &[(String, Arc<InterpretedCode>)],
    ) -> Result<(), EngineError> {
        if !graph.is_empty() {
            exec::check_instance_count(label, graph.len(), self.inner.settings.max_link_instances)?;
        }
        let hosts: Vec<(&str, &dyn link::Linkable)> = graph
            .iter()
            .filter(|(name, _)| direct.contains(name))
            .map(|(name, code)| (name.as_str(), &*code.module as &dyn link::Linkable))
            .collect();
        link::check_linkable(label, module, &hosts)
    }

    /// Compiles `wasm` (whose hash is `sha`) into the cache without anyone
    /// waiting for it.
    fn compile_in_background(&self, sha: Sha256Digest, wasm: Vec<u8>) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.compile(wasm).await {
                tracing::debug!(error = %e, "background compile failed");
            }
            engine.inner.sightings.finished(&sha);
        });
    }

    /// Instantiates `code` under `limits` (with `wasi`, the WASI world it
    /// asks for) and makes one call: a one-shot execution, with one fuel
    /// and time budget for both. The call is checked before anything is
    /// instantiated, so a bad request costs no guest code.
    ///
    /// For one of many one-shot calls in a row (a batch's), `kept` carries
    /// an instance from one to the next: when no module of the code keeps
    /// state (one stateless module, see [`CompiledModule::stateless`], or a
    /// graph of modules each [`CompiledModule::stateless_when_linked`])
    /// and the call needs no WASI world, the instances are kept there and
    /// serve the next such call of the same code with a fresh budget. Each call still sees exactly
    /// what a fresh instance would show it; only instantiation is saved
    /// (`stats.instantiate_us` is 0 for the calls that reuse it).
    pub async fn run(
        &self,
        code: &Code,
        limits: ExecLimits,
        wasi: Option<&WasiConfig>,
        call: CallSpec<'_>,
        kept: &mut KeptInstance,
    ) -> Result<CallOutcome, CallFailure> {
        let reusable = wasi.is_none() && exec::keeps_nothing(&code.root, &code.graph);
        if reusable && kept.0.is_none() {
            // An instance an earlier one-shot call left (`engine::spare`).
            kept.0 = (code.root.spares().take(|spare| exec::links(spare, &code.graph)))
                .map(|spare| exec::CompiledInstance::from_spare(spare, code.root.clone(), code.root_label.clone()));
        }
        if reusable && let Some(live) = kept.0.as_mut().filter(|live| live.runs(&code.root)) {
            live.set_idle(false);
            let result = live.call(call).await;
            live.set_idle(true);
            return result;
        }
        // Boxed: instantiation's future is large, and the reused path above
        // should not carry it (a future built inline takes room in its
        // caller's, and is copied whole at every level).
        Box::pin(async move {
            let spec = InstanceSpec {
                root: code.root.clone(),
                root_label: code.root_label.clone(),
                graph: code.graph.clone(),
                limits,
                wasi: wasi.cloned(),
            };
            let prepared = exec::prepare(&*code.root, &code.root_label, &call)?;
            let mut live = exec::instantiate(&self.runtime(), spec).await?;
            // Owned here until the call ends: a call cut short drops it.
            let result = live.call_on_same_budget(prepared, call, Instant::now()).await;
            if reusable {
                kept.0 = Some(live);
            }
            result
        })
        .await
    }

    /// [`Self::run`] of a call of `root` alone (named `label` in messages)
    /// with no WASI world, made without awaiting when it can be: `root` is
    /// stateless, an earlier call left an instance of it (`engine::spare`),
    /// the call passes only numbers and this thread may run guest code
    /// synchronously. Such a call needs nothing a future would hold, so the
    /// request that makes it need not build one; [`Now::Later`] sends it the
    /// usual way.
    pub fn run_now(&self, root: &CompiledModule, label: &(dyn std::fmt::Display + Sync), call: &CallSpec<'_>) -> Now {
        run_spare_now(root, root.sync_first(), |spare| spare.hosts.is_empty(), label, call)
    }

    /// [`Self::run_now`] of a call of `root` linked to `graph` (whose
    /// imports the caller has checked): made without awaiting when no
    /// module of the graph keeps state and an earlier call left the
    /// graph's instances (`engine::spare`), linking exactly these hosts.
    pub fn run_linked_now(
        &self,
        root: &CompiledModule,
        graph: &[LinkedModule],
        label: &(dyn std::fmt::Display + Sync),
        call: &CallSpec<'_>,
    ) -> Now {
        if !exec::keeps_nothing(root, graph) {
            return Now::Later(call.armed_at);
        }
        run_spare_now(
            root,
            root.sync_first_when_linked(),
            |spare| exec::links(spare, graph),
            label,
            call,
        )
    }
}

/// The call of [`WasmEngine::run_now`] and [`WasmEngine::run_linked_now`]
/// on a spare of `root` that `fits`, when `sync` lets it begin so.
fn run_spare_now(
    root: &CompiledModule,
    sync: Option<&store::SyncFirst>,
    fits: impl FnOnce(&spare::Spare) -> bool,
    label: &(dyn std::fmt::Display + Sync),
    call: &CallSpec<'_>,
) -> Now {
    if !sync.is_some_and(store::SyncFirst::now) {
        return Now::Later(call.armed_at);
    }
    let Some(mut spare) = root.spares().take(fits) else {
        return Now::Later(call.armed_at);
    };
    // Kept again whatever the call did: a stateless instance (or graph) is
    // as good as new after any call, and a call made without awaiting
    // cannot be cut short midway.
    let now = exec::call_spare_now(&mut spare, root, label, call);
    root.spares().keep(spare);
    now
}

/// The instance a run of one-shot calls may share (see
/// [`WasmEngine::run`]); empty until a stateless module runs. When the
/// run is over (a request, a batch), the instance is kept for later
/// one-shot calls of its module (`engine::spare`).
#[derive(Default)]
pub struct KeptInstance(Option<exec::CompiledInstance>);

impl Drop for KeptInstance {
    fn drop(&mut self) {
        if let Some(live) = self.0.take() {
            live.into_spare();
        }
    }
}

/// A module the interpreter has parsed, with what the instance table and
/// the registry show of it.
pub struct InterpretedCode {
    module: Arc<interp::InterpModule>,
    digest: Sha256Digest,
    /// SHA-256 of the binary, lowercase hex.
    pub sha256: String,
    pub interface: ModuleInterface,
    /// Whether every exported function's values are numbers, so that a
    /// live instance can answer any call on the interpreter.
    whole: bool,
}

impl InterpretedCode {
    fn new(module: interp::InterpModule, digest: Sha256Digest) -> Self {
        InterpretedCode {
            sha256: encode_hex(digest),
            interface: module.interface(),
            whole: module.whole(),
            module: Arc::new(module),
            digest,
        }
    }

    /// The binary's SHA-256.
    pub fn digest(&self) -> &Sha256Digest {
        &self.digest
    }

    /// Whether a live instance of it can run on the interpreter: every
    /// exported function's values are numbers.
    pub fn whole(&self) -> bool {
        self.whole
    }
}

/// The interpreter's modules of a graph, under their names.
fn interp_hosts(graph: &[(String, Arc<InterpretedCode>)]) -> Vec<(String, Arc<interp::InterpModule>)> {
    graph
        .iter()
        .map(|(name, code)| (name.clone(), code.module.clone()))
        .collect()
}
