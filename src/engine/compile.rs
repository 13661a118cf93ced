//! Compiling modules, and the compile cache keyed by SHA-256 of the binary.
//!
//! Compilation is the expensive step (Cranelift code generation), so a module
//! is compiled once per process and found again by the hash of its bytes:
//! sending the same inline module twice, or calling a registered module, does
//! not compile again. This file holds the blocking steps and the cache; the
//! front door (`WasmEngine::compile` in `mod.rs`) runs them on tokio's
//! blocking pool behind the cache's semaphore, so a large module never
//! stalls the reactor and only a bounded number of compiles compete for the
//! CPU at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module, ModuleExport};

use super::error::{EngineError, LimitKind, chain_text};
use super::spare::Spares;
use super::store::{StoreState, SyncFirst};
use super::types::{ModuleInterface, signature};
use super::values::encode_hex;
use super::wasi::WASI_MODULE;
use super::weighed::WeighedLru;
use crate::per_thread::Memo;

/// A SHA-256 digest of a module binary.
pub type Sha256Digest = [u8; 32];

/// What a compiled module or component costs to keep in memory, in bytes,
/// as the compile caches count it: its compiled `image` (machine code and
/// data) plus its binary's size (for its own tables of types, exports and
/// the like, which grow with it).
pub(crate) fn compiled_weight(image: std::ops::Range<*const u8>, binary_bytes: usize) -> usize {
    (image.end as usize).saturating_sub(image.start as usize) + binary_bytes
}

/// A validated, compiled module, shared by every execution that uses it.
///
/// Aligned to 128 bytes, so that the counts of the `Arc` it is shared in,
/// which a call writes when its thread did not call the module last (the
/// memo's `Weak` upgraded; see `engine::hot`), are on a line of their own,
/// away from the fields every call reads.
#[repr(align(128))]
pub struct CompiledModule {
    sha256: Sha256Digest,
    /// `sha256` as lowercase hex, made once: every response names it.
    sha256_hex: String,
    size: usize,
    module: Module,
    /// Ready-to-instantiate form for modules without imports other than
    /// WASI, which skips import resolution on every call (the hot case).
    pre: Option<InstancePre<StoreState>>,
    /// Whether the module imports WASI (and so needs a WASI context).
    imports_wasi: bool,
    /// Whether an instance of it keeps nothing from one call to the next
    /// (see [`Headers::stateless`]).
    stateless: bool,
    /// Whether it keeps nothing either when it imports functions from
    /// modules that keep nothing (see [`Headers::stateless_when_linked`]).
    stateless_when_linked: bool,
    /// Each exported function's type and export index, looked up once:
    /// wasmtime makes a new `FuncType` (registering its signature) and
    /// searches the export names on every lookup by name. Hashed with
    /// foldhash (seeded per process): every call looks its function up
    /// here, and SipHash was most of the lookup.
    functions: HashMap<Box<str>, (FuncType, ModuleExport), foldhash::fast::RandomState>,
    /// Instances of a stateless module that one-shot calls left behind,
    /// for later ones to take (see `engine::spare`).
    spares: Spares,
    /// What its binary's section headers say, kept with its artifact
    /// (`engine::artifact`).
    headers: Headers,
    /// Whether its calls begin synchronously (stateless modules, and
    /// roots of link graphs that keep nothing).
    sync_first: SyncFirst,
}

impl CompiledModule {
    /// How its calls begin, when they may begin synchronously (see
    /// `store::call`): `None` unless it is stateless.
    pub(crate) fn sync_first(&self) -> Option<&SyncFirst> {
        self.stateless.then_some(&self.sync_first)
    }

    /// [`Self::sync_first`] for a call of an instance linked into a graph
    /// that keeps nothing anywhere (see `exec::keeps_nothing`): such a
    /// call may be run again from the start as safely as a stateless
    /// module's. `None` unless it is [`Self::stateless_when_linked`].
    pub(crate) fn sync_first_when_linked(&self) -> Option<&SyncFirst> {
        self.stateless_when_linked.then_some(&self.sync_first)
    }

    /// Instances kept for later one-shot calls (stateless modules only).
    pub(crate) fn spares(&self) -> &Spares {
        &self.spares
    }

    /// SHA-256 of the module binary.
    pub fn sha256(&self) -> &Sha256Digest {
        &self.sha256
    }

    /// SHA-256 of the module binary as lowercase hex.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// Whether an instance of this module keeps nothing from one call to
    /// the next, so that calls which each promise a fresh instance may
    /// share one (see [`Headers::stateless`]). A module loaded from an
    /// artifact kept without its headers counts as stateful.
    pub fn stateless(&self) -> bool {
        self.stateless
    }

    /// Whether an instance of this module, linked to host modules that
    /// are all so too, keeps nothing from one call to the next: as
    /// [`Self::stateless`], but it may import functions (see
    /// [`Headers::stateless_when_linked`]).
    pub fn stateless_when_linked(&self) -> bool {
        self.stateless_when_linked
    }

    /// What the module binary's section headers say.
    pub(crate) fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Size of the module binary in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// What keeping it in memory costs, in bytes, as the compile cache
    /// counts it (see [`compiled_weight`]).
    pub(crate) fn weight(&self) -> usize {
        compiled_weight(self.module.image_range(), self.size)
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
    pub(crate) fn function_type(&self, name: &str) -> Option<&FuncType> {
        self.functions.get(name).map(|(ty, _)| ty)
    }

    /// Where the exported function `name` is in an instance of this module.
    pub(crate) fn function_export(&self, name: &str) -> Option<&ModuleExport> {
        self.functions.get(name).map(|(_, at)| at)
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
        ModuleInterface::of(&self.module)
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
    entries: Mutex<WeighedLru<Sha256Digest, Arc<CompiledModule>>>,
    /// Each thread's last few modules found in `entries`, so that a hot
    /// module's call takes no lock every core writes, nor reorders the
    /// LRU list every core reads (see [`crate::per_thread`]). Weak, so
    /// that a module dropped from `entries` is not kept alive by a thread
    /// that remembers it. Forgotten whenever an entry leaves `entries`:
    /// a module a thread remembers is then found under the lock again,
    /// which marks it recently used, so a hot module still stays in the
    /// cache (it is marked at least once between two evictions).
    recent: Memo<Sha256Digest, Weak<CompiledModule>>,
    /// One per compile allowed at once.
    pub(crate) permits: Arc<Semaphore>,
    counters: CacheCounters,
}

/// Running totals of how modules were obtained, for `/metrics`.
#[derive(Default)]
struct CacheCounters {
    /// Per thread: every cached call counts one.
    hits: crate::per_thread::Counter,
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
    /// What they weigh together (see [`CompiledModule::weight`]).
    pub bytes: u64,
}

impl CompileCache {
    pub(crate) fn new(entries: usize, bytes: usize, compile_threads: usize) -> Self {
        CompileCache {
            entries: Mutex::new(WeighedLru::new(entries, bytes)),
            recent: Memo::default(),
            permits: Arc::new(Semaphore::new(compile_threads.max(1))),
            counters: CacheCounters::default(),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let (entries, bytes) = {
            let kept = self.lock();
            (kept.len(), kept.bytes())
        };
        CacheStats {
            hits: self.counters.hits.total(),
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            loaded: self.counters.loaded.load(Ordering::Relaxed),
            entries: entries as u64,
            bytes: bytes as u64,
        }
    }

    pub(crate) fn hit(&self, module: Option<Arc<CompiledModule>>) -> Option<Arc<CompiledModule>> {
        if module.is_some() {
            self.count_hit();
        }
        module
    }

    pub(crate) fn count_hit(&self) {
        self.count_hits(1);
    }

    pub(crate) fn count_hits(&self, n: u64) {
        self.counters.hits.add(n);
    }

    /// Changes whenever an entry is added or leaves: read it before
    /// [`Self::get`], to know later whether what it found is still current.
    pub(crate) fn version(&self) -> u64 {
        self.recent.version()
    }

    pub(crate) fn get(&self, sha: &Sha256Digest) -> Option<Arc<CompiledModule>> {
        self.recent.answer(
            sha,
            |known| known.upgrade(),
            || {
                let found = self.lock().get(sha).cloned()?;
                let kept = Arc::downgrade(&found);
                Some((found, kept))
            },
        )
    }

    pub(crate) fn count_compiled(&self) {
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_loaded(&self) {
        self.counters.loaded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn insert(&self, module: Arc<CompiledModule>) {
        let weight = module.weight();
        let dropped = {
            let mut entries = self.lock();
            let before = entries.len();
            entries.put(module.sha256, module, weight);
            // Fewer or as many entries after a put: it replaced or
            // dropped one.
            entries.len() <= before
        };
        if dropped {
            self.recent.changed();
        }
    }

    fn lock(&self) -> MutexGuard<'_, WeighedLru<Sha256Digest, Arc<CompiledModule>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A `Hasher` feeding SHA-256, to turn wasmtime's `impl Hash` engine
/// fingerprint into a digest that is stable across processes (std's
/// `DefaultHasher` makes no such promise).
#[derive(Default)]
pub struct DigestHasher(Sha256);

impl DigestHasher {
    pub fn hex(self) -> String {
        encode_hex(self.0.finalize())
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

/// Turns WebAssembly text into a binary.
pub(crate) fn parse_wat(text: &str) -> Result<Vec<u8>, EngineError> {
    wat::parse_str(text).map_err(|e| EngineError::InvalidModule(format!("invalid WebAssembly text: {e}")))
}

/// How many memories and tables a module may define; the server's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DefinedCaps {
    pub memories: usize,
    pub tables: usize,
}

/// What a module's section headers say, read without parsing its code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Headers {
    pub memories: usize,
    pub tables: usize,
    pub imports: usize,
    /// It imports something other than a function of another module: a
    /// memory, table, global or tag, or a WASI function (whose host state
    /// an instance could reach).
    pub imports_state: bool,
    pub has_start: bool,
    /// It defines a mutable global.
    pub mutable_globals: bool,
    /// Its type section declares a struct or array type (GC).
    pub gc_types: bool,
    /// The headers could not be read; the module is left to the engines,
    /// whose error messages say what is wrong.
    pub malformed: bool,
}

impl Headers {
    /// Whether an instance of the module can keep nothing from one call to
    /// the next: it has no memory, table or mutable global to hold state,
    /// imports nothing (whose state it could reach), has no start function
    /// (which every fresh instance would run), and declares no GC types
    /// (whose objects a later call could not reach, but which would pile
    /// up in the store). Its instance after a call, even a trapped one, is
    /// then indistinguishable from a fresh one.
    pub fn stateless(&self) -> bool {
        self.stateless_when_linked() && self.imports == 0
    }

    /// [`Self::stateless`] but for imports, which may be functions of
    /// other modules. A graph of such modules linked together keeps
    /// nothing anywhere: an imported function is another such module's
    /// code, with nowhere to keep state either. The instances of a whole
    /// graph may then be shared by calls that each promise fresh ones.
    pub fn stateless_when_linked(&self) -> bool {
        !self.malformed
            && self.memories == 0
            && self.tables == 0
            && !self.imports_state
            && !self.has_start
            && !self.mutable_globals
            && !self.gc_types
    }
}

/// Reads the section headers of `wasm`, stopping where the code starts.
pub(crate) fn headers(wasm: &[u8]) -> Headers {
    read_headers(wasm, true)
}

/// [`headers`] without reading the type section: `gc_types` is left
/// false. Reading each type allocates (about 2,000 instructions for a
/// one-type module), and the interpreter, which asks this of every module
/// it is sent, refuses GC types when it parses anyway.
pub(crate) fn headers_but_types(wasm: &[u8]) -> Headers {
    read_headers(wasm, false)
}

fn read_headers(wasm: &[u8], read_types: bool) -> Headers {
    let mut h = Headers::default();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::MemorySection(reader)) => h.memories += reader.count() as usize,
            Ok(wasmparser::Payload::TableSection(reader)) => h.tables += reader.count() as usize,
            Ok(wasmparser::Payload::ImportSection(reader)) => {
                h.imports += reader.count() as usize;
                for import in reader.into_imports() {
                    match import {
                        Ok(i) => {
                            h.imports_state |= i.module == WASI_MODULE
                                || !matches!(i.ty, wasmparser::TypeRef::Func(_) | wasmparser::TypeRef::FuncExact(_))
                        }
                        Err(_) => h.malformed = true,
                    }
                }
            }
            Ok(wasmparser::Payload::StartSection { .. }) => h.has_start = true,
            Ok(wasmparser::Payload::GlobalSection(reader)) => {
                for global in reader {
                    match global {
                        Ok(g) => h.mutable_globals |= g.ty.mutable,
                        Err(_) => h.malformed = true,
                    }
                }
            }
            Ok(wasmparser::Payload::TypeSection(reader)) if read_types => {
                for group in reader {
                    match group {
                        Ok(group) => {
                            h.gc_types |= group
                                .types()
                                .any(|t| !matches!(t.composite_type.inner, wasmparser::CompositeInnerType::Func(_)))
                        }
                        Err(_) => h.malformed = true,
                    }
                }
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) => break,
            Err(_) => {
                h.malformed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    h
}

/// Refuses a valid module that defines more memories or tables than the
/// server allows, naming the setting, before wasmtime (whose pooling
/// allocator has the same caps) would refuse it as if it were malformed.
/// A malformed module is left to wasmtime.
pub(crate) fn check_defined_counts(headers: &Headers, caps: DefinedCaps) -> Result<(), EngineError> {
    let (memories, tables) = (headers.memories, headers.tables);
    let refuse = |kind, what: &str, n: usize, cap: usize, flag: &str| {
        Err(EngineError::LimitExceeded {
            kind,
            message: format!("the module defines {n} {what}; the server allows {cap} per module ({flag})"),
        })
    };
    if memories > caps.memories {
        return refuse(
            LimitKind::Memories,
            "memories",
            memories,
            caps.memories,
            "--max-memories-per-module",
        );
    }
    if tables > caps.tables {
        return refuse(
            LimitKind::Tables,
            "tables",
            tables,
            caps.tables,
            "--max-tables-per-module",
        );
    }
    Ok(())
}

/// Validates and compiles `wasm` (blocking: run it off the reactor).
pub(crate) fn compile_blocking(
    engine: &wasmtime::Engine,
    linker: &Linker<StoreState>,
    caps: DefinedCaps,
    sha: Sha256Digest,
    wasm: &[u8],
) -> Result<CompiledModule, EngineError> {
    let headers = headers(wasm);
    check_defined_counts(&headers, caps)?;
    let module = Module::from_binary(engine, wasm)
        .map_err(|e| EngineError::InvalidModule(format!("invalid WebAssembly module: {}", chain_text(&e))))?;
    finish(linker, sha, wasm.len(), module, &headers)
}

/// Loads a module from `code` made by `Module::serialize` (blocking), with
/// the section headers its binary had (see `engine::artifact`).
///
/// # Safety contract
/// Artifacts come only from this server's own store, keyed by the engine's
/// compatibility hash; wasmtime also checks their header and refuses one
/// from another engine configuration. Bytes from clients never reach here.
pub(crate) fn deserialize_blocking(
    engine: &wasmtime::Engine,
    linker: &Linker<StoreState>,
    sha: Sha256Digest,
    size: usize,
    code: &[u8],
    headers: &Headers,
) -> Result<CompiledModule, EngineError> {
    // SAFETY: see the contract above; that is what `deserialize` asks for.
    let module = unsafe { Module::deserialize(engine, code) }
        .map_err(|e| EngineError::Internal(format!("cannot load artifact: {e}")))?;
    finish(linker, sha, size, module, headers)
}

/// Wraps a validated module, pre-linking it when it needs only WASI.
fn finish(
    linker: &Linker<StoreState>,
    sha: Sha256Digest,
    size: usize,
    module: Module,
    headers: &Headers,
) -> Result<CompiledModule, EngineError> {
    let imports_wasi = module.imports().any(|i| i.module() == WASI_MODULE);
    let pre = if module.imports().all(|i| i.module() == WASI_MODULE) {
        // Resolving WASI imports here also reports an unknown WASI
        // function once, at compile time, naming it.
        Some(
            linker
                .instantiate_pre(&module)
                .map_err(|e| EngineError::Link(chain_text(&e)))?,
        )
    } else {
        None
    };
    let functions = module
        .exports()
        .filter_map(|e| match e.ty() {
            ExternType::Func(ty) => Some((Box::from(e.name()), (ty, module.get_export_index(e.name())?))),
            _ => None,
        })
        .collect();
    Ok(CompiledModule {
        functions,
        sha256: sha,
        sha256_hex: encode_hex(sha),
        size,
        module,
        pre,
        imports_wasi,
        stateless: headers.stateless(),
        stateless_when_linked: headers.stateless_when_linked(),
        headers: *headers,
        spares: Spares::default(),
        sync_first: SyncFirst::default(),
    })
}

/// A module returning `n` from its export `f`, compiled for a unit test.
#[cfg(test)]
pub(crate) fn returning(engine: &wasmtime::Engine, n: i32) -> Arc<CompiledModule> {
    from_wat(
        engine,
        &format!(r#"(module (func (export "f") (result i32) (i32.const {n})))"#),
    )
}

/// The module `wat`, compiled for a unit test.
#[cfg(test)]
pub(crate) fn from_wat(engine: &wasmtime::Engine, wat: &str) -> Arc<CompiledModule> {
    let wasm = wat::parse_str(wat).unwrap();
    let module = Module::new(engine, &wasm).unwrap();
    Arc::new(finish(&Linker::new(engine), sha256(&wasm), wasm.len(), module, &headers(&wasm)).unwrap())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{CompileCache, headers, headers_but_types, returning};

    fn stateless(wat: &str) -> bool {
        headers(&wat::parse_str(wat).unwrap()).stateless()
    }

    #[test]
    fn only_a_module_with_nowhere_to_keep_state_is_stateless() {
        assert!(stateless(
            r#"(module (global i32 (i32.const 7)) (func (export "f") (param i32) (result i32) (local.get 0)))"#
        ));
        for wat in [
            "(module (memory 1))",
            "(module (table 1 funcref))",
            "(module (global (mut i32) (i32.const 0)))",
            r#"(module (import "m" "f" (func)))"#,
            "(module (func $s) (start $s))",
            "(module (type (struct (field i32))))",
            "(module (type (array i8)))",
        ] {
            assert!(!stateless(wat), "{wat} counts as stateless");
        }
        // Unreadable headers are never taken for stateless.
        assert!(!headers(b"\0asm\x01\0\0\0\x06\x05").stateless());
    }

    /// Importing functions keeps a module stateless when linked, and only
    /// then; importing anything else, or from WASI, never does.
    #[test]
    fn a_module_importing_only_functions_is_stateless_when_linked() {
        let linked = |wat: &str| {
            let h = headers(&wat::parse_str(wat).unwrap());
            (h.stateless(), h.stateless_when_linked())
        };
        let calls_utils = r#"(module (import "utils" "double" (func $d (param i32) (result i32)))
            (func (export "f") (param i32) (result i32) (call $d (local.get 0))))"#;
        assert_eq!(linked(calls_utils), (false, true));
        assert_eq!(linked(r#"(module (func (export "f")))"#), (true, true));
        for wat in [
            r#"(module (import "m" "mem" (memory 1)))"#,
            r#"(module (import "m" "t" (table 1 funcref)))"#,
            r#"(module (import "m" "g" (global i32)))"#,
            r#"(module (import "m" "g" (global (mut i32))))"#,
            r#"(module (import "wasi_snapshot_preview1" "sched_yield" (func (result i32))))"#,
            r#"(module (import "m" "f" (func)) (memory 1))"#,
            r#"(module (import "m" "f" (func)) (global (mut i32) (i32.const 0)))"#,
            r#"(module (import "m" "f" (func)) (start 0))"#,
        ] {
            assert_eq!(linked(wat), (false, false), "{wat} counts as stateless when linked");
        }
    }

    /// Skipping the type section changes nothing but `gc_types`.
    #[test]
    fn headers_but_types_reads_all_but_the_types() {
        let wasm = wat::parse_str(
            r#"(module (type (struct (field i32))) (import "m" "f" (func)) (memory 1) (table 2 funcref)
                 (global (mut i32) (i32.const 0)) (func $s) (start $s))"#,
        )
        .unwrap();
        let (all, but_types) = (headers(&wasm), headers_but_types(&wasm));
        assert!(all.gc_types && !but_types.gc_types);
        for h in [all, but_types] {
            assert_eq!((h.memories, h.tables, h.imports), (1, 1, 1));
            assert!(h.has_start && h.mutable_globals && !h.malformed);
        }
    }

    /// A module that left the cache is not found there, though a call
    /// still holds it and this thread remembers finding it; put back, it
    /// is found again.
    #[test]
    fn a_module_dropped_from_the_cache_is_not_found_though_remembered() {
        let engine = wasmtime::Engine::default();
        let (a, b) = (returning(&engine, 1), returning(&engine, 2));
        let cache = CompileCache::new(1, usize::MAX, 1);
        cache.insert(a.clone());
        for _ in 0..2 {
            assert!(Arc::ptr_eq(&cache.get(&a.sha256).unwrap(), &a));
        }
        // One entry at most: `b` drops `a`, which `a` here keeps alive.
        cache.insert(b.clone());
        assert!(cache.get(&a.sha256).is_none(), "a dropped module was found");
        assert!(Arc::ptr_eq(&cache.get(&b.sha256).unwrap(), &b));
        cache.insert(a.clone());
        assert!(Arc::ptr_eq(&cache.get(&a.sha256).unwrap(), &a));
        assert!(cache.get(&b.sha256).is_none(), "a dropped module was found");
    }
}
