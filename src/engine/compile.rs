//! Compiling modules, and the compile cache keyed by SHA-256 of the binary.
//!
//! Compilation is the expensive step (Cranelift code generation), so a module
//! is compiled once per process and found again by the hash of its bytes:
//! sending the same inline module twice, or calling a registered module, does
//! not compile again. Compiles run on tokio's blocking pool behind a
//! semaphore, so a large module never stalls the reactor and only a bounded
//! number of compiles compete for the CPU at once.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::{ExternType, FuncType, InstancePre, Module, Mutability};

use super::exec::StoreState;
use super::values::{signature, type_name};
use super::wasi::WASI_MODULE;
use super::{EngineError, WasmEngine};

/// A SHA-256 digest of a module binary.
pub type Sha256Digest = [u8; 32];

/// Text of at most this size is turned into a binary on the calling thread;
/// larger text is parsed on the blocking pool like a compile.
const INLINE_WAT_BYTES: usize = 16 * 1024;

/// A validated, compiled module, shared by every execution that uses it.
pub struct CompiledModule {
    sha256: Sha256Digest,
    size: usize,
    module: Module,
    /// Ready-to-instantiate form for modules without imports other than
    /// WASI, which skips import resolution on every call (the hot case).
    pre: Option<InstancePre<StoreState>>,
    /// Whether the module imports WASI (and so needs a WASI context).
    imports_wasi: bool,
}

impl CompiledModule {
    /// SHA-256 of the module binary.
    pub fn sha256(&self) -> &Sha256Digest {
        &self.sha256
    }

    /// SHA-256 of the module binary as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Size of the module binary in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the module imports `wasi_snapshot_preview1`.
    pub fn imports_wasi(&self) -> bool {
        self.imports_wasi
    }

    pub(crate) fn module(&self) -> &Module {
        &self.module
    }

    pub(crate) fn pre(&self) -> Option<&InstancePre<StoreState>> {
        self.pre.as_ref()
    }

    /// The type of the exported function `name`, if there is one.
    pub(crate) fn function_type(&self, name: &str) -> Option<FuncType> {
        match self.module.get_export(name) {
            Some(ExternType::Func(ty)) => Some(ty),
            _ => None,
        }
    }

    /// Names and signatures of every exported function, for error messages.
    pub fn exported_functions(&self) -> Vec<String> {
        self.module
            .exports()
            .filter_map(|e| match e.ty() {
                ExternType::Func(ty) => Some(format!("{} {}", e.name(), signature(&ty))),
                _ => None,
            })
            .collect()
    }

    /// The module's exports and imports with their types.
    pub fn interface(&self) -> ModuleInterface {
        ModuleInterface {
            exports: self
                .module
                .exports()
                .map(|e| ExternDesc::new(None, e.name(), &e.ty()))
                .collect(),
            imports: self
                .module
                .imports()
                .map(|i| ExternDesc::new(Some(i.module()), i.name(), &i.ty()))
                .collect(),
        }
    }
}

/// A module's exports and imports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModuleInterface {
    pub exports: Vec<ExternDesc>,
    pub imports: Vec<ExternDesc>,
}

/// One export or import and its type.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExternDesc {
    /// The module an import comes from (absent for exports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    pub name: String,
    /// `func`, `memory`, `table`, `global` or `tag`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// For functions, `(i32, i32) -> (i64)`; for others a short description.
    #[serde(rename = "type")]
    pub ty: String,
    /// For functions, the param types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    /// For functions, the result types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<String>>,
}

impl ExternDesc {
    fn new(module: Option<&str>, name: &str, ty: &ExternType) -> Self {
        let (kind, text, params, results) = match ty {
            ExternType::Func(f) => (
                "func",
                signature(f),
                Some(f.params().map(|t| type_name(&t)).collect()),
                Some(f.results().map(|t| type_name(&t)).collect()),
            ),
            ExternType::Memory(m) => ("memory", describe_limits(m.minimum(), m.maximum(), "pages"), None, None),
            ExternType::Table(t) => (
                "table",
                format!(
                    "{} {}",
                    type_name(&wasmtime::ValType::Ref(t.element().clone())),
                    describe_limits(t.minimum(), t.maximum(), "elements")
                ),
                None,
                None,
            ),
            ExternType::Global(g) => {
                let mutability = match g.mutability() {
                    Mutability::Var => "mut ",
                    Mutability::Const => "",
                };
                ("global", format!("{mutability}{}", type_name(g.content())), None, None)
            }
            ExternType::Tag(_) => ("tag", "tag".into(), None, None),
        };
        ExternDesc {
            module: module.map(str::to_string),
            name: name.to_string(),
            kind,
            ty: text,
            params,
            results,
        }
    }
}

fn describe_limits(min: u64, max: Option<u64>, unit: &str) -> String {
    match max {
        Some(max) => format!("{min}..{max} {unit}"),
        None => format!("{min}.. {unit}"),
    }
}

/// Whether a module came from the cache or was compiled for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Found compiled in the cache.
    Cached,
    /// Loaded from a compiled artifact kept in the store (after a restart).
    Loaded,
    /// Compiled now; the duration is how long compiling took.
    Compiled(Duration),
}

/// Bounded LRU map from module hash to compiled module, plus the permits
/// that bound concurrent compiles.
pub(crate) struct CompileCache {
    entries: Mutex<LruCache<Sha256Digest, Arc<CompiledModule>>>,
    permits: Arc<Semaphore>,
    counters: CacheCounters,
}

/// Running totals of how modules were obtained, for `/metrics`.
#[derive(Default)]
struct CacheCounters {
    hits: AtomicU64,
    compiled: AtomicU64,
    loaded: AtomicU64,
}

/// A snapshot of the compile cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served by a module already compiled in memory.
    pub hits: u64,
    /// Modules compiled (cache misses with no stored artifact).
    pub compiled: u64,
    /// Modules loaded from a stored artifact instead of compiling.
    pub loaded: u64,
    /// Modules held in memory now.
    pub entries: u64,
}

impl CompileCache {
    pub(crate) fn new(entries: usize, compile_threads: usize) -> Self {
        let capacity = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        CompileCache {
            entries: Mutex::new(LruCache::new(capacity)),
            permits: Arc::new(Semaphore::new(compile_threads.max(1))),
            counters: CacheCounters::default(),
        }
    }

    fn stats(&self) -> CacheStats {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner()).len();
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            loaded: self.counters.loaded.load(Ordering::Relaxed),
            entries: entries as u64,
        }
    }

    fn hit(&self, module: Option<Arc<CompiledModule>>) -> Option<Arc<CompiledModule>> {
        if module.is_some() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
        }
        module
    }

    fn get(&self, sha: &Sha256Digest) -> Option<Arc<CompiledModule>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(sha).cloned()
    }

    fn insert(&self, module: Arc<CompiledModule>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(module.sha256, module);
    }
}

/// A `Hasher` feeding SHA-256, to turn wasmtime's `impl Hash` engine
/// fingerprint into a digest that is stable across processes (std's
/// `DefaultHasher` makes no such promise).
#[derive(Default)]
pub struct DigestHasher(Sha256);

impl DigestHasher {
    pub fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Unused: `hex` is the output. A hasher must still answer.
        0
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256::digest(bytes).into()
}

impl WasmEngine {
    /// Turns WebAssembly text into a binary, off the reactor when it is large.
    pub async fn wat_to_wasm(&self, text: String) -> Result<Vec<u8>, EngineError> {
        let small = text.len() <= INLINE_WAT_BYTES;
        let parse = move || {
            wat::parse_str(&text).map_err(|e| EngineError::InvalidModule(format!("invalid WebAssembly text: {e}")))
        };
        if small {
            return parse();
        }
        tokio::task::spawn_blocking(parse)
            .await
            .map_err(|e| EngineError::Internal(format!("text parser task failed: {e}")))?
    }

    /// The compiled module with this hash, if the cache has it.
    pub fn cached(&self, sha: &Sha256Digest) -> Option<Arc<CompiledModule>> {
        self.inner.cache.hit(self.inner.cache.get(sha))
    }

    /// The compile cache's counters since start.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Returns the compiled form of `wasm`, compiling it only if the cache
    /// does not have it yet.
    pub async fn compile(&self, wasm: Vec<u8>) -> Result<(Arc<CompiledModule>, CacheOutcome), EngineError> {
        let limit = self.inner.settings.max_module_bytes;
        if wasm.len() > limit {
            return Err(EngineError::ModuleTooLarge {
                size: wasm.len(),
                limit,
            });
        }
        let sha = sha256(&wasm);
        if let Some(hit) = self.cached(&sha) {
            return Ok((hit, CacheOutcome::Cached));
        }
        let permit = self
            .inner
            .cache
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Internal("compile pool closed".into()))?;
        // Another request may have compiled it while we waited for a permit.
        if let Some(hit) = self.inner.cache.get(&sha) {
            return Ok((hit, CacheOutcome::Cached));
        }
        let engine = self.clone();
        let started = Instant::now();
        // Wasmtime cannot interrupt a compile. The task owns the permit and
        // caches its result itself, so a request that stops waiting (compile
        // time limit) neither frees a compile slot early nor wastes the work.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let compiled = Arc::new(engine.compile_blocking(sha, &wasm)?);
            engine.inner.cache.counters.compiled.fetch_add(1, Ordering::Relaxed);
            engine.inner.cache.insert(compiled.clone());
            Ok::<_, EngineError>(compiled)
        });
        let limit = self.inner.settings.compile_timeout;
        let compiled = tokio::time::timeout(limit, task)
            .await
            .map_err(|_| EngineError::LimitExceeded {
                kind: super::LimitKind::CompileTime,
                message: format!("compiling the module took longer than {} ms", limit.as_millis()),
            })?
            .map_err(|e| EngineError::Internal(format!("compile task failed: {e}")))??;
        Ok((compiled, CacheOutcome::Compiled(started.elapsed())))
    }

    fn compile_blocking(&self, sha: Sha256Digest, wasm: &[u8]) -> Result<CompiledModule, EngineError> {
        let module = Module::from_binary(self.wasmtime(), wasm).map_err(|e| {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            EngineError::InvalidModule(format!("invalid WebAssembly module: {}", chain.join(": ")))
        })?;
        self.finish(sha, wasm.len(), module)
    }

    /// Serializes a compiled module for the store (see [`Self::load_artifact`]).
    pub async fn artifact(&self, module: &Arc<CompiledModule>) -> Result<Vec<u8>, EngineError> {
        let module = module.clone();
        tokio::task::spawn_blocking(move || module.module.serialize())
            .await
            .map_err(|e| EngineError::Internal(format!("serialize task failed: {e}")))?
            .map_err(|e| EngineError::Internal(format!("cannot serialize module: {e}")))
    }

    /// Loads a module from an artifact made by [`Self::artifact`], skipping
    /// compilation, and caches it under `sha`.
    ///
    /// Artifacts come only from this server's own store, keyed by
    /// [`Self::compatibility_hash`]; wasmtime also checks their header and
    /// refuses one from another engine configuration.
    pub async fn load_artifact(
        &self,
        sha: Sha256Digest,
        size: usize,
        artifact: Vec<u8>,
    ) -> Result<Arc<CompiledModule>, EngineError> {
        let engine = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            // SAFETY: `artifact` was produced by `Module::serialize` on an
            // engine with the same compatibility hash and read back from our
            // own store; that is the contract `deserialize` asks for. Bytes
            // from clients never reach this function.
            let module = unsafe { Module::deserialize(engine.wasmtime(), &artifact) }
                .map_err(|e| EngineError::Internal(format!("cannot load artifact: {e}")))?;
            engine.finish(sha, size, module)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("artifact task failed: {e}")))??;
        let loaded = Arc::new(loaded);
        self.inner.cache.counters.loaded.fetch_add(1, Ordering::Relaxed);
        self.inner.cache.insert(loaded.clone());
        Ok(loaded)
    }

    /// Wraps a validated module, pre-linking it when it needs only WASI.
    fn finish(&self, sha: Sha256Digest, size: usize, module: Module) -> Result<CompiledModule, EngineError> {
        let imports_wasi = module.imports().any(|i| i.module() == WASI_MODULE);
        let pre = if module.imports().all(|i| i.module() == WASI_MODULE) {
            // Resolving WASI imports here also reports an unknown WASI
            // function once, at compile time, naming it.
            Some(self.base_linker().instantiate_pre(&module).map_err(|e| {
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                EngineError::Link(chain.join(": "))
            })?)
        } else {
            None
        };
        Ok(CompiledModule {
            sha256: sha,
            size,
            module,
            pre,
            imports_wasi,
        })
    }
}
