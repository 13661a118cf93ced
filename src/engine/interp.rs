//! The interpreter tier: runs a module with wasmi, without compiling it.
//!
//! Compiling a never-seen module with Cranelift costs far more than running
//! a short call on it; wasmi validates the module and translates each
//! function lazily, on its first call, so a first call answers at once.
//! What runs here gives the same answers as the compiled tier (see
//! docs/DESIGN.md, "Two tiers"): the same values and types (canonical NaNs
//! through wasmi's `deterministic` feature), the same trap kinds and
//! messages (wasmi's trap codes are mapped to wasmtime's), the same limit
//! errors (one [`StoreLimiter`] rule for memories and tables) and the same
//! fuel limit. Fuel is handed out in slices: between slices the deadline is
//! checked and the task yields to tokio, which is how the time limit holds
//! and a long call shares its worker thread, as epochs do for compiled code.
//!
//! Only what this tier does exactly as the compiled one is sent here (see
//! [`eligible`] and [`Interpreter::run`]); everything else goes to the
//! compiled tier, which is always correct. Memory reads and writes and byte
//! params follow the compiled tier's rules and share its messages
//! (`memory::copy_in`/`copy_out` and the memory messages, `exec::no_allocator` and friends).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmi::{ResourceLimiter, TrapCode};
use wasmi_core::LimiterError;
use wasmtime::{ExternType, FuncType, GlobalType, MemoryType, Mutability, RefType, TableType, Trap, Val, ValType};

use super::compile::{DefinedCaps, check_defined_counts, headers_but_types};
use super::error::{EngineError, LimitHit, LimitKind, trap_name};
use super::exec::{
    ALLOCATORS, CallFailure, CallOutcome, CallSpec, ExecStats, Exports, GlobalRead, PreparedArg, Tier, WasiResult,
    allocator_returned_null, bytes_len, micros, no_allocator, no_global, prepare,
};
use super::interp_engines::{Engines, Generation};
use super::interp_types::{FuncTypes, to_wasmtime_type};
use super::interp_wasi::{self, Halt, HasWasi, WasiWorld};
use super::limits::{ExecLimits, StoreLimiter};
use super::link::Linkable;
use super::types::{ModuleInterface, signature, type_name};
use super::values::result_json;
use super::wasi::{WASI_MODULE, WasiConfig};

/// Fuel handed to the interpreter at a time. Between slices the deadline
/// is checked and other tasks run: a slice takes a few milliseconds.
const FUEL_SLICE: u64 = 1_000_000;

/// Deepest call nesting on the interpreter. Its stack lives on the heap;
/// the exact depth at which recursion overflows may differ between tiers
/// (the owner's decision), the `stack_overflow` trap may not.
const MAX_RECURSION_DEPTH: usize = 16 * 1024;

/// Bytes of wasm a wasmi engine parses before a new one takes over (see
/// `interp_engines`): what it keeps of them, translated or not, is freed
/// with it.
const GENERATION_BYTES: usize = 32 << 20;

/// The wasmi engines, configured to match the compiled tier.
pub(crate) struct Interpreter {
    /// Each with a linker that defines the WASI functions this tier
    /// provides (see `interp_wasi`).
    engines: Engines<Limited>,
    /// Most bytes kept of a WASI program's stdout, and of its stderr.
    output_cap: usize,
    /// Function types are shown and checked as wasmtime's, so that messages
    /// and argument conversion are the compiled tier's own.
    types: Arc<FuncTypes>,
}

/// A module parsed and validated by the interpreter.
pub(crate) struct InterpModule {
    module: wasmi::Module,
    /// The engine it was parsed in; a link graph runs in one.
    generation: Arc<Generation<Limited>>,
    /// Its binary, to parse it again in another engine (see
    /// [`Interpreter::in_generation_of`]).
    wasm: Arc<[u8]>,
    types: Arc<FuncTypes>,
    /// Export names in the binary's order, which wasmi does not keep: read
    /// from the binary when first asked for (a one-shot call never asks).
    export_order: OnceLock<Vec<String>>,
    /// The initial bytes of each memory it defines, in order, checked
    /// against the limit before it is instantiated (see
    /// `StoreLimiter::check_memories`).
    memory_bytes: Vec<u64>,
}

/// Whether `wasm` may be of the shape the interpreter runs: no start
/// function (which would run before the first fuel slice ends, beyond the
/// deadline's reach), and no more memories or tables than the server
/// allows. Its imports are checked when it is parsed: only the WASI
/// functions of `interp_wasi` (a link graph runs compiled, whole). Reads
/// section headers only; a malformed module is not eligible and gets the
/// compiled tier's error.
pub(crate) fn eligible(wasm: &[u8], caps: DefinedCaps) -> bool {
    let headers = headers_but_types(wasm);
    !headers.malformed && !headers.has_start && check_defined_counts(&headers, caps).is_ok()
}

impl Interpreter {
    pub(crate) fn new(types: &wasmtime::Engine, output_cap: usize) -> Self {
        Self::with_engine_bytes(types, output_cap, GENERATION_BYTES)
    }

    /// An interpreter whose engines each parse `engine_bytes` of wasm.
    fn with_engine_bytes(types: &wasmtime::Engine, output_cap: usize, engine_bytes: usize) -> Self {
        let mut config = wasmi::Config::default();
        config
            .consume_fuel(true)
            .set_max_recursion_depth(MAX_RECURSION_DEPTH)
            // Validate everything now, translate each function on first use:
            // an invalid function body is refused before anything runs, as
            // on the compiled tier.
            .compilation_mode(wasmi::CompilationMode::LazyTranslation)
            // No per-byte fuel for bulk operations and no fuel for
            // translation, as on the compiled tier (see settings.rs): an
            // out-of-bounds `memory.copy` traps, it does not run out of fuel.
            .fuel_cost(wasmi::CustomFuelCosts {
                bytes_copied_per_fuel: u32::MAX,
                fuel_per_bytes_translated: 0,
                fuel_per_bytes_validated: 0,
            })
            // Proposals the compiled tier does not enable stay off here, so
            // such a module gets the compiled tier's answer.
            .wasm_custom_page_sizes(false)
            .wasm_wide_arithmetic(false);
        Interpreter {
            engines: Engines::new(config, define_wasi, engine_bytes),
            output_cap,
            types: Arc::new(FuncTypes::new(types)),
        }
    }

    /// Parses and validates `wasm`; `None` if the interpreter refuses it
    /// (invalid, or a feature it lacks): the compiled tier then decides.
    pub(crate) fn parse(&self, wasm: Arc<[u8]>) -> Option<InterpModule> {
        self.parse_in(self.engines.current(), wasm)
    }

    /// Whether a wasmi engine was retired since the last call: modules
    /// kept parsed in it should be let go of (see `interp_engines`).
    pub(crate) fn take_retired(&self) -> bool {
        self.engines.take_retired()
    }

    /// Whether `module` was parsed in the engine new modules are parsed in.
    pub(crate) fn is_current(&self, module: &InterpModule) -> bool {
        self.engines.is_current(&module.generation)
    }

    /// [`Self::parse`] in the engine `generation`.
    fn parse_in(&self, generation: Arc<Generation<Limited>>, wasm: Arc<[u8]>) -> Option<InterpModule> {
        let parsed = wasmi::Module::new(&generation.engine, &wasm);
        self.engines.charge(&generation, wasm.len());
        let module = parsed.ok()?;
        if !interp_wasi::supports(&module) {
            return None;
        }
        // A reactor initializer that takes or returns values fails on the
        // compiled tier with wasmtime's own error; let it say so.
        if let Some(wasmi::ExternType::Func(init)) = module.get_export(INITIALIZE)
            && !(init.params().is_empty() && init.results().is_empty())
        {
            return None;
        }
        Some(InterpModule {
            module,
            generation,
            memory_bytes: defined_memory_bytes(&wasm),
            wasm,
            types: self.types.clone(),
            export_order: OnceLock::new(),
        })
    }

    /// `hosts`, each in `root`'s engine: one parsed in another (a newer
    /// engine took over between parsing the root and looking its graph up,
    /// say) is parsed again from its binary, for this graph only.
    fn in_generation_of(
        &self,
        root: &InterpModule,
        hosts: &[(String, Arc<InterpModule>)],
    ) -> Result<Vec<(String, Arc<InterpModule>)>, EngineError> {
        hosts
            .iter()
            .map(|(name, host)| {
                if Arc::ptr_eq(&host.generation, &root.generation) {
                    return Ok((name.clone(), host.clone()));
                }
                match self.parse_in(root.generation.clone(), host.wasm.clone()) {
                    Some(again) => Ok((name.clone(), Arc::new(again))),
                    None => Err(EngineError::Internal(format!(
                        "module `{name}` parsed once but not again"
                    ))),
                }
            })
            .collect()
    }

    /// Instantiates `module` under `limits` (and runs a reactor's
    /// `_initialize`, as the compiled tier does), arming a budget that the
    /// instantiation spends and, for a one-shot run, the call after it.
    pub(crate) async fn instantiate(
        &self,
        module: Arc<InterpModule>,
        hosts: &[(String, Arc<InterpModule>)],
        label: String,
        limits: ExecLimits,
        wasi: Option<WasiConfig>,
    ) -> Result<InterpInstance, CallFailure> {
        // A graph that imports WASI always gets a world: the request's, or
        // an empty one, as on the compiled tier.
        let needs_wasi = module.imports_wasi() || hosts.iter().any(|(_, h)| h.imports_wasi());
        let wasi = wasi
            .or_else(|| needs_wasi.then(WasiConfig::default))
            .map(|config| WasiWorld::new(config, self.output_cap));
        let hosts = self.in_generation_of(&module, hosts)?;
        // Boxed: a wasmi store is some 1,700 bytes, and by value it would
        // be copied into, and held by, every future and move on its way.
        let mut store = Box::new(wasmi::Store::new(
            &module.generation.engine,
            Limited {
                limiter: StoreLimiter::new(&limits),
                refused: None,
                wasi,
            },
        ));
        store.limiter(|state| state as &mut dyn ResourceLimiter);
        let mut budget = Budget::new(limits);
        budget.refill(&mut store, 0);
        let started = Instant::now();
        let mut stats = ExecStats {
            tier: Tier::Interpreter,
            ..Default::default()
        };
        let graph = self.instantiate_graph(&mut store, &module, &hosts, &mut budget).await;
        stats.instantiate_us = micros(started.elapsed());
        let (root, hosts) = match graph {
            Ok(graph) => graph,
            Err(error) => return Err(failure(&mut store, error, stats, &budget, Vec::new())),
        };
        Ok(InterpInstance {
            store,
            root,
            hosts,
            module,
            label,
            budget,
            pending: Some(stats),
        })
    }

    /// The hosts in order, each made importable under its name and
    /// initialized, then the root: the compiled tier's order, in one store,
    /// so a host imported twice is one instance.
    async fn instantiate_graph(
        &self,
        store: &mut wasmi::Store<Limited>,
        root: &InterpModule,
        hosts: &[(String, Arc<InterpModule>)],
        budget: &mut Budget,
    ) -> Result<(wasmi::Instance, Vec<(String, wasmi::Instance)>), EngineError> {
        let limits = budget.limits;
        // WASI's linker, copied only when hosts are defined in it.
        let mut linker = std::borrow::Cow::Borrowed(&root.generation.linker);
        let mut live = Vec::with_capacity(hosts.len());
        for (name, host) in hosts {
            check_memories(store, host)?;
            let instance = linker
                .instantiate_and_start(&mut *store, &host.module)
                .map_err(|e| classify(store, &e, &limits))?;
            linker
                .to_mut()
                .instance(&mut *store, name, instance)
                .map_err(|e| EngineError::Link(e.to_string()))?;
            initialize(store, instance, budget).await?;
            live.push((name.clone(), instance));
        }
        check_memories(store, root)?;
        let instance = linker
            .instantiate_and_start(&mut *store, &root.module)
            .map_err(|e| classify(store, &e, &limits))?;
        initialize(store, instance, budget).await?;
        Ok((instance, live))
    }

    /// Instantiates `module` and makes one call under `spec.limits`, one
    /// budget for both, with the request's memory writes before it, byte
    /// params placed by the guest's allocator, and memory reads after it
    /// (after a trap too), as on the compiled tier. `None` when the call
    /// has reference or `v128` values, which this tier does not convert;
    /// the caller then runs it compiled.
    pub(crate) async fn run(
        &self,
        module: Arc<InterpModule>,
        hosts: &[(String, Arc<InterpModule>)],
        label: &str,
        spec: &CallSpec<'_>,
        wasi: Option<WasiConfig>,
    ) -> Option<Result<CallOutcome, CallFailure>> {
        let prepared = match prepare(&*module, &label, spec) {
            Ok(prepared) => prepared,
            Err(e) => return Some(Err(e.into())),
        };
        let args = wasmi_args(prepared.args, &prepared.ty)?;
        let mut live = match self
            .instantiate(module.clone(), hosts, label.to_string(), spec.limits, wasi)
            .await
        {
            Ok(live) => live,
            Err(failure) => return Some(Err(failure)),
        };
        Some(live.call_on_same_budget(prepared.name, &prepared.ty, args, spec).await)
    }
}

/// Defines the WASI functions in a new engine's linker.
fn define_wasi(linker: &mut wasmi::Linker<Limited>) {
    // Names are distinct and signatures fixed: defining them cannot fail.
    if let Err(e) = interp_wasi::add_to_linker(linker) {
        tracing::error!(error = %e, "cannot define WASI for the interpreter");
    }
}

/// The name of a reactor's initializer, run after instantiation.
const INITIALIZE: &str = "_initialize";

/// Runs a reactor's `_initialize`, as the reactor ABI requires before any
/// other export is called (and as the compiled tier does).
async fn initialize(
    store: &mut wasmi::Store<Limited>,
    instance: wasmi::Instance,
    budget: &mut Budget,
) -> Result<(), EngineError> {
    let Some(init) = instance.get_func(&*store, INITIALIZE) else {
        return Ok(());
    };
    match run_sliced(store, init, &[], &mut [], budget).await? {
        None => Ok(()),
        // wasmtime reports an exit during instantiation as this.
        Some(code) => Err(EngineError::Link(format!("Exited with i32 exit status {code}"))),
    }
}

/// The call's arguments in wasmi's types; `None` when its signature has
/// reference or `v128` values, which this tier does not convert.
fn wasmi_args(args: Vec<PreparedArg>, ty: &FuncType) -> Option<Vec<Arg>> {
    if !numeric(ty) {
        return None;
    }
    args.into_iter()
        .map(|arg| match arg {
            PreparedArg::Value(val) => to_wasmi(&val).map(Arg::Value),
            PreparedArg::Bytes(bytes) => Some(Arg::Bytes(bytes)),
            PreparedArg::HostRef(..) => None,
        })
        .collect()
}

/// Whether every param and result of `ty` is a number.
fn numeric(ty: &FuncType) -> bool {
    let number = |t: ValType| matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64);
    ty.params().all(number) && ty.results().all(number)
}

/// A module instantiated on the interpreter: its own store, kept across
/// calls by a live instance.
pub(crate) struct InterpInstance {
    store: Box<wasmi::Store<Limited>>,
    root: wasmi::Instance,
    /// Host module instances by name, for `host:export` memory access.
    hosts: Vec<(String, wasmi::Instance)>,
    module: Arc<InterpModule>,
    label: String,
    /// The budget armed last: by instantiation, then by each call.
    budget: Budget,
    /// Fuel and time spent instantiating, reported with the first call.
    pending: Option<ExecStats>,
}

impl InterpInstance {
    fn live(&self) -> Live<'_> {
        Live {
            root: self.root,
            hosts: &self.hosts,
        }
    }

    /// The current value of the root's exported global `name`.
    pub(crate) fn global(&mut self, name: &str) -> Result<GlobalRead, EngineError> {
        let Some(global) = self.root.get_global(&*self.store, name) else {
            let globals = self
                .root
                .exports(&*self.store)
                .filter(|e| e.clone().into_extern().into_global().is_some())
                .map(|e| e.name().to_string())
                .collect();
            return Err(no_global(&self.label, name, globals));
        };
        let ty = global.ty(&*self.store);
        let value = global.get(&*self.store);
        if !matches!(
            value,
            wasmi::Val::I32(_) | wasmi::Val::I64(_) | wasmi::Val::F32(_) | wasmi::Val::F64(_)
        ) {
            return Err(EngineError::Internal(format!(
                "global `{name}` of {} holds a value this tier does not read",
                self.label
            )));
        }
        Ok(GlobalRead {
            value: result_json(&from_wasmi(&value)),
            ty: type_name(&to_wasmtime_type(&ty.content())),
            mutable: ty.mutability().is_mut(),
        })
    }

    /// The fuel and time instantiation took; afterwards calls report only
    /// their own.
    pub(crate) fn take_instantiation_stats(&mut self) -> ExecStats {
        let mut stats = self.pending.take().unwrap_or_default();
        self.budget.record(&mut self.store, &mut stats);
        stats
    }

    /// Current size in bytes of the default memory, if there is one.
    pub(crate) fn memory_size(&self) -> Option<usize> {
        resolve(&self.store, self.live(), None)
            .ok()
            .map(|(_, memory)| memory.data(&*self.store).len())
    }

    /// Calls one export as a request of its own, with a fresh budget.
    pub(crate) async fn call(&mut self, spec: CallSpec<'_>) -> Result<CallOutcome, CallFailure> {
        let module = self.module.clone();
        let prepared = prepare(&*module, &self.label, &spec)?;
        // Live instances are made on this tier only when every exported
        // function has a numeric signature (see `InterpModule::whole`).
        let args = wasmi_args(prepared.args, &prepared.ty).ok_or_else(|| {
            EngineError::Internal(format!(
                "`{}` has values the interpreter does not convert",
                prepared.name
            ))
        })?;
        // Fuel the last call left unspent is not this call's.
        let _ = self.store.set_fuel(0);
        self.budget = Budget::new(spec.limits);
        self.budget.refill(&mut self.store, 0);
        self.call_on_same_budget(prepared.name, &prepared.ty, args, &spec).await
    }

    /// Runs a checked call on the budget armed last.
    async fn call_on_same_budget(
        &mut self,
        name: &str,
        ty: &FuncType,
        args: Vec<Arg>,
        spec: &CallSpec<'_>,
    ) -> Result<CallOutcome, CallFailure> {
        let mut stats = self.pending.take().unwrap_or(ExecStats {
            tier: Tier::Interpreter,
            ..Default::default()
        });
        let started = Instant::now();
        let mut results = vec![wasmi::Val::I32(0); ty.results().len()];
        let instance = Live {
            root: self.root,
            hosts: &self.hosts,
        };
        let (store, budget) = (&mut *self.store, &mut self.budget);
        let outcome = call_inner(store, instance, name, args, &mut results, spec, budget).await;
        stats.call_us = micros(started.elapsed());
        let exited = *outcome.as_ref().unwrap_or(&None);
        // Reads happen after traps too: the memory at the trap helps debugging.
        let reads: Result<Vec<Vec<u8>>, EngineError> = spec
            .reads
            .iter()
            .map(|r| read(store, instance, r.memory.as_deref(), r.offset, r.length))
            .collect();
        if let Err(error) = outcome {
            return Err(failure(store, error, stats, budget, reads.unwrap_or_default()));
        }
        let memory = match reads {
            Ok(memory) => memory,
            Err(error) => return Err(failure(store, error, stats, budget, Vec::new())),
        };
        // `proc_exit` ends the program normally with a status; the function
        // returns nothing, whatever its signature says.
        let values: Vec<Val> = match exited {
            Some(_) => Vec::new(),
            None => results.iter().map(from_wasmi).collect(),
        };
        let result_bytes = if spec.result_as_bytes && values.len() == 2 {
            let (ptr, len) = (
                values[0].unwrap_i32() as u32 as u64,
                values[1].unwrap_i32() as u32 as u64,
            );
            match read(store, instance, None, ptr, len) {
                Ok(bytes) => Some(bytes),
                Err(error) => return Err(error.into()),
            }
        } else {
            None
        };
        budget.record(store, &mut stats);
        let wasi = store.data().wasi.as_ref().map(|world| WasiResult {
            exit_code: exited.unwrap_or(0),
            output: world.take_output(),
        });
        Ok(CallOutcome {
            results: values.iter().map(result_json).collect(),
            result_types: match exited {
                Some(_) => Vec::new(),
                None => ty.results().map(|t| super::types::value_type_name(&t)).collect(),
            },
            result_bytes,
            memory,
            wasi,
            stats,
            ended: None,
        })
    }
}

/// Memory writes, byte params, then the call: the compiled tier's order.
/// `Some(status)` when the program exited through WASI `proc_exit`.
async fn call_inner(
    store: &mut wasmi::Store<Limited>,
    instance: Live<'_>,
    name: &str,
    args: Vec<Arg>,
    results: &mut [wasmi::Val],
    spec: &CallSpec<'_>,
    budget: &mut Budget,
) -> Result<Option<i32>, EngineError> {
    for w in spec.writes {
        write(store, instance, w.memory.as_deref(), w.offset, &w.data)?;
    }
    let mut params = Vec::with_capacity(args.len());
    for arg in args {
        match arg {
            Arg::Value(val) => params.push(val),
            Arg::Bytes(bytes) => {
                let ptr = match place_bytes(store, instance, name, &bytes, budget).await? {
                    Placed::At(ptr) => ptr,
                    Placed::Exited(code) => return Ok(Some(code)),
                };
                params.push(wasmi::Val::I32(ptr as i32));
                params.push(wasmi::Val::I32(bytes.len() as i32));
            }
        }
    }
    let func = instance
        .root
        .get_func(&*store, name)
        .ok_or_else(|| EngineError::Internal(format!("export `{name}` vanished after instantiation")))?;
    run_sliced(store, func, &params, results, budget).await
}

/// Where a byte argument went: to this address, or nowhere because the
/// guest's allocator ended the program.
enum Placed {
    At(u32),
    Exited(i32),
}

/// Copies a byte argument into memory the guest allocated for it.
async fn place_bytes(
    store: &mut wasmi::Store<Limited>,
    instance: Live<'_>,
    function: &str,
    bytes: &[u8],
    budget: &mut Budget,
) -> Result<Placed, EngineError> {
    let alloc = ALLOCATORS
        .iter()
        .find_map(|n| {
            let func = instance.root.get_func(&*store, n)?;
            let ty = func.ty(&*store);
            (ty.params() == [wasmi::ValType::I32] && ty.results() == [wasmi::ValType::I32]).then_some(func)
        })
        .ok_or_else(|| no_allocator(function))?;
    let len = bytes_len(bytes)?;
    let mut out = [wasmi::Val::I32(0)];
    if let Some(code) = run_sliced(store, alloc, &[wasmi::Val::I32(len)], &mut out, budget).await? {
        return Ok(Placed::Exited(code));
    }
    let ptr = match out[0] {
        wasmi::Val::I32(p) => p as u32,
        _ => 0,
    };
    if ptr == 0 && !bytes.is_empty() {
        return Err(allocator_returned_null(len, function));
    }
    write(store, instance, None, ptr as u64, bytes)?;
    Ok(Placed::At(ptr))
}

/// Runs a call a fuel slice at a time until it finishes, traps, uses the
/// whole fuel budget, passes the deadline, or the program exits through
/// WASI (`Some(status)`).
async fn run_sliced(
    store: &mut wasmi::Store<Limited>,
    func: wasmi::Func,
    params: &[wasmi::Val],
    results: &mut [wasmi::Val],
    budget: &mut Budget,
) -> Result<Option<i32>, EngineError> {
    let mut call = func
        .call_resumable(&mut *store, params, results)
        .map_err(|e| classify(store, &e, &budget.limits))?;
    loop {
        match call {
            wasmi::ResumableCall::Finished => return Ok(None),
            // The only host functions are WASI's; they record why they
            // stopped the program.
            wasmi::ResumableCall::HostTrap(_) => {
                return match store.data_mut().wasi.as_mut().and_then(|w| w.halt.take()) {
                    Some(Halt::Exit(code)) => Ok(Some(code)),
                    Some(Halt::Failed(error)) => Err(error),
                    None => Err(EngineError::Internal("a host function stopped without a reason".into())),
                };
            }
            wasmi::ResumableCall::OutOfFuel(paused) => {
                if Instant::now() >= budget.deadline {
                    return Err(LimitHit::time(budget.limits.timeout_ms).into());
                }
                if !budget.refill(store, paused.required_fuel()) {
                    return Err(LimitHit::fuel(budget.limits.fuel).into());
                }
                // Let other requests run on this worker thread, then go on.
                tokio::task::yield_now().await;
                call = paused
                    .resume(&mut *store, results)
                    .map_err(|e| classify(store, &e, &budget.limits))?;
            }
        }
    }
}

/// A call argument in wasmi's types.
enum Arg {
    Value(wasmi::Val),
    /// Placed in guest memory at call time; fills a `(ptr, len)` pair.
    Bytes(Vec<u8>),
}

/// A failed call with what could still be observed.
fn failure(
    store: &mut wasmi::Store<Limited>,
    error: EngineError,
    mut stats: ExecStats,
    budget: &Budget,
    memory: Vec<Vec<u8>>,
) -> CallFailure {
    budget.record(store, &mut stats);
    CallFailure {
        error,
        stats: Some(stats),
        memory,
        wasi: store.data().wasi.as_ref().map(WasiWorld::take_output),
    }
}

/// A live graph's instances: the root, whose exports are called, and its
/// host modules' by name.
#[derive(Clone, Copy)]
struct Live<'a> {
    root: wasmi::Instance,
    hosts: &'a [(String, wasmi::Instance)],
}

/// Finds the memory a request names (the root's default memory, one of
/// its memories by name, or a host module's as `host:export`), with the
/// compiled tier's rules and messages (see `memory::resolve`).
fn resolve(
    store: &wasmi::Store<Limited>,
    instance: Live<'_>,
    name: Option<&str>,
) -> Result<(String, wasmi::Memory), EngineError> {
    match name {
        None => {
            if let Some(memory) = instance.root.get_memory(store, "memory") {
                return Ok(("memory".into(), memory));
            }
            let mut found = None;
            for export in instance.root.exports(store) {
                if let Some(memory) = export.clone().into_memory() {
                    if found.is_some() {
                        return Err(super::memory::no_default_memory());
                    }
                    found = Some((export.name().to_string(), memory));
                }
            }
            found.ok_or_else(super::memory::no_default_memory)
        }
        Some(name) => {
            let (owner, export) = match name.split_once(':') {
                Some((host, export)) => {
                    let owner = instance
                        .hosts
                        .iter()
                        .find(|(n, _)| n == host)
                        .map(|(_, i)| *i)
                        .ok_or_else(|| super::memory::not_a_host(host))?;
                    (owner, export)
                }
                None => (instance.root, name),
            };
            owner
                .get_memory(store, export)
                .map(|memory| (name.to_string(), memory))
                .ok_or_else(|| super::memory::no_memory_named(name))
        }
    }
}

/// Reads `length` bytes at `offset` of the memory `name`.
fn read(
    store: &wasmi::Store<Limited>,
    instance: Live<'_>,
    name: Option<&str>,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, EngineError> {
    let (shown, memory) = resolve(store, instance, name)?;
    super::memory::copy_out(&shown, memory.data(store), offset, length)
}

/// Writes `data` at `offset` of the memory `name`.
fn write(
    store: &mut wasmi::Store<Limited>,
    instance: Live<'_>,
    name: Option<&str>,
    offset: u64,
    data: &[u8],
) -> Result<(), EngineError> {
    let (shown, memory) = resolve(store, instance, name)?;
    super::memory::copy_in(&shown, memory.data_mut(&mut *store), offset, data)
}

/// A request's fuel and time, handed to the store a slice at a time.
struct Budget {
    limits: ExecLimits,
    deadline: Instant,
    /// Fuel not yet handed to the store.
    left: u64,
}

impl Budget {
    fn new(limits: ExecLimits) -> Self {
        Budget {
            limits,
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
            left: limits.fuel,
        }
    }

    /// Tops the store's fuel up by a slice (at least `required`, the fuel
    /// the next instruction needs); `false` if the budget cannot cover it.
    fn refill(&mut self, store: &mut wasmi::Store<Limited>, required: u64) -> bool {
        let have = store.get_fuel().unwrap_or(0);
        let want = FUEL_SLICE.max(required.saturating_sub(have));
        if required > have.saturating_add(self.left) {
            return false;
        }
        let give = want.min(self.left);
        if give == 0 && self.left == 0 && required > have {
            return false;
        }
        self.left -= give;
        // Fuel is enabled on this engine, so setting it cannot fail.
        let _ = store.set_fuel(have + give);
        true
    }

    /// Fuel the request has used so far.
    fn used(&self, store: &wasmi::Store<Limited>) -> u64 {
        let unspent = self.left.saturating_add(store.get_fuel().unwrap_or(0));
        self.limits.fuel.saturating_sub(unspent)
    }

    /// Puts the fuel used and the limits hit so far into `stats`.
    fn record(&self, store: &mut wasmi::Store<Limited>, stats: &mut ExecStats) {
        stats.fuel_consumed = self.used(store);
        let limiter = &mut store.data_mut().limiter;
        stats.limits_hit = limiter.take_hits().into_iter().map(LimitKind::as_str).collect();
        stats.memory_peak_bytes = limiter.memory_in_use();
    }
}

/// Store state: the limiter, and the limit error that refused creating a
/// memory or table (wasmi's limiter error carries no message of its own).
pub(crate) struct Limited {
    limiter: StoreLimiter,
    refused: Option<LimitHit>,
    /// The program's WASI world, when it imports WASI or the request gave one.
    wasi: Option<WasiWorld>,
}

impl HasWasi for Limited {
    fn wasi(&mut self) -> Option<&mut WasiWorld> {
        self.wasi.as_mut()
    }
}

impl Limited {
    fn answer(&mut self, granted: Result<bool, LimitHit>) -> Result<bool, LimiterError> {
        granted.map_err(|hit| {
            self.refused = Some(hit);
            LimiterError::ResourceLimiterDeniedAllocation
        })
    }
}

impl ResourceLimiter for Limited {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> Result<bool, LimiterError> {
        let granted = self.limiter.grant_memory(current, desired, maximum);
        self.answer(granted)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> Result<bool, LimiterError> {
        let granted = self.limiter.grant_table(current, desired, maximum);
        self.answer(granted)
    }

    // Counts were checked before the module got here (see `eligible`).
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

/// Refuses `module` for its memories, as wasmtime would, before wasmi
/// creates its tables (see `StoreLimiter::check_memories`).
fn check_memories(store: &wasmi::Store<Limited>, module: &InterpModule) -> Result<(), EngineError> {
    store
        .data()
        .limiter
        .check_memories(&module.memory_bytes)
        .map_err(EngineError::from)
}

/// The initial bytes of each memory `wasm` defines (not imports), in
/// order. Reads section headers up to the code; `wasm` is valid.
fn defined_memory_bytes(wasm: &[u8]) -> Vec<u64> {
    let mut bytes = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::MemorySection(section)) => {
                for memory in section.into_iter().flatten() {
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    bytes.push(memory.initial.saturating_mul(page));
                }
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    bytes
}

/// A wasmi failure as the compiled tier would report it: our limit first,
/// then the trap, by code, named and worded as wasmtime's.
fn classify(store: &mut wasmi::Store<Limited>, error: &wasmi::Error, limits: &ExecLimits) -> EngineError {
    if let Some(hit) = store.data_mut().refused.take() {
        return hit.into();
    }
    if let Some(Halt::Failed(error)) = store.data_mut().wasi.as_mut().and_then(|w| w.halt.take()) {
        return error;
    }
    // An active element segment that does not fit its table fails
    // instantiation with an error of its own; wasmtime traps.
    let code = error.as_trap_code().or_else(|| match error.kind() {
        wasmi::errors::ErrorKind::Instantiation(wasmi::errors::InstantiationError::ElementSegmentDoesNotFit {
            ..
        }) => Some(TrapCode::TableOutOfBounds),
        _ => None,
    });
    let trap = match code {
        Some(TrapCode::OutOfFuel) => return LimitHit::fuel(limits.fuel).into(),
        Some(TrapCode::UnreachableCodeReached) => Trap::UnreachableCodeReached,
        Some(TrapCode::MemoryOutOfBounds) => Trap::MemoryOutOfBounds,
        Some(TrapCode::TableOutOfBounds) => Trap::TableOutOfBounds,
        Some(TrapCode::IndirectCallToNull) => Trap::IndirectCallToNull,
        Some(TrapCode::IntegerDivisionByZero) => Trap::IntegerDivisionByZero,
        Some(TrapCode::IntegerOverflow) => Trap::IntegerOverflow,
        Some(TrapCode::BadConversionToInteger) => Trap::BadConversionToInteger,
        Some(TrapCode::StackOverflow) => Trap::StackOverflow,
        Some(TrapCode::BadSignature) => Trap::BadSignature,
        _ => return EngineError::Internal(format!("the interpreter failed: {error}")),
    };
    // wasmi keeps no WebAssembly call stack for a trap.
    EngineError::Trap {
        kind: trap_name(trap),
        message: trap.to_string(),
        frames: Vec::new(),
    }
}

fn to_wasmi(val: &Val) -> Option<wasmi::Val> {
    Some(match *val {
        Val::I32(v) => wasmi::Val::I32(v),
        Val::I64(v) => wasmi::Val::I64(v),
        Val::F32(bits) => wasmi::Val::F32(wasmi::F32::from_bits(bits)),
        Val::F64(bits) => wasmi::Val::F64(wasmi::F64::from_bits(bits)),
        _ => return None,
    })
}

fn from_wasmi(val: &wasmi::Val) -> Val {
    match val {
        wasmi::Val::I32(v) => Val::I32(*v),
        wasmi::Val::I64(v) => Val::I64(*v),
        wasmi::Val::F32(v) => Val::F32(v.to_bits()),
        wasmi::Val::F64(v) => Val::F64(v.to_bits()),
        // `run` sends only numeric signatures here.
        _ => Val::I32(0),
    }
}

impl InterpModule {
    fn func_type(&self, ty: &wasmi::FuncType) -> FuncType {
        self.types.get(ty)
    }

    /// Whether every call a live instance of this module could be asked
    /// for can run on this tier: every exported function's values are
    /// numbers. (A one-shot call is checked on its own signature instead.)
    pub(crate) fn whole(&self) -> bool {
        self.module.exports().all(|e| match e.ty() {
            wasmi::ExternType::Func(ty) => numeric(&self.func_type(ty)),
            _ => true,
        })
    }

    /// The module's exports and imports as the compiled tier shows them:
    /// exports in the binary's order.
    pub(crate) fn interface(&self) -> ModuleInterface {
        let exports = self
            .export_order()
            .iter()
            .filter_map(|name| Some((name.as_str(), self.extern_type(&self.module.get_export(name)?))))
            .collect();
        ModuleInterface::of_exports(exports, self.import_list())
    }

    /// Export names in the binary's order.
    fn export_order(&self) -> &[String] {
        self.export_order.get_or_init(|| {
            let mut names = Vec::new();
            for payload in wasmparser::Parser::new(0).parse_all(&self.wasm) {
                match payload {
                    Ok(wasmparser::Payload::ExportSection(section)) => {
                        names.extend(section.into_iter().flatten().map(|e| e.name.to_string()));
                        break;
                    }
                    // Exports come before code: stop at the code section.
                    Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => break,
                    _ => {}
                }
            }
            names
        })
    }

    /// Whether the module imports WASI.
    pub(crate) fn imports_wasi(&self) -> bool {
        self.module.imports().any(|i| i.module() == WASI_MODULE)
    }

    /// Whether the module imports from other modules (a link graph).
    pub(crate) fn needs_hosts(&self) -> bool {
        self.module.imports().any(|i| i.module() != WASI_MODULE)
    }

    fn extern_type(&self, ty: &wasmi::ExternType) -> ExternType {
        let ref_type = |r: wasmi::RefType| match r {
            wasmi::RefType::Func => RefType::FUNCREF,
            wasmi::RefType::Extern => RefType::EXTERNREF,
        };
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        match ty {
            wasmi::ExternType::Func(f) => self.func_type(f).into(),
            wasmi::ExternType::Global(g) => {
                let mutability = match g.mutability() {
                    wasmi::Mutability::Var => Mutability::Var,
                    wasmi::Mutability::Const => Mutability::Const,
                };
                GlobalType::new(to_wasmtime_type(&g.content()), mutability).into()
            }
            wasmi::ExternType::Memory(m) if m.is_64() => MemoryType::new64(m.minimum(), m.maximum()).into(),
            wasmi::ExternType::Memory(m) => MemoryType::new(narrow(m.minimum()), m.maximum().map(narrow)).into(),
            wasmi::ExternType::Table(t) if t.is_64() => {
                TableType::new64(ref_type(t.element()), t.minimum(), t.maximum()).into()
            }
            wasmi::ExternType::Table(t) => {
                TableType::new(ref_type(t.element()), narrow(t.minimum()), t.maximum().map(narrow)).into()
            }
        }
    }
}

impl Linkable for InterpModule {
    fn import_list(&self) -> Vec<(String, String, ExternType)> {
        self.module
            .imports()
            .map(|i| (i.module().to_string(), i.name().to_string(), self.extern_type(i.ty())))
            .collect()
    }

    fn export_type(&self, name: &str) -> Option<ExternType> {
        self.module.get_export(name).map(|ty| self.extern_type(&ty))
    }

    fn export_names(&self) -> Vec<String> {
        self.export_order().to_vec()
    }
}

impl Exports for InterpModule {
    fn function_type(&self, name: &str) -> Option<Cow<'_, FuncType>> {
        match self.module.get_export(name)? {
            wasmi::ExternType::Func(ty) => Some(Cow::Owned(self.func_type(&ty))),
            _ => None,
        }
    }

    /// In the binary's order, as wasmtime lists them (wasmi keeps them by
    /// name): a message naming them is the same on both tiers.
    fn exported_functions(&self) -> Vec<String> {
        self.export_order()
            .iter()
            .filter_map(|name| match self.module.get_export(name)? {
                wasmi::ExternType::Func(ty) => Some(format!("{name} {}", signature(&self.func_type(&ty)))),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(interpreter: &Interpreter, wat: &str) -> Arc<InterpModule> {
        let wasm = wat::parse_str(wat).unwrap();
        Arc::new(interpreter.parse(wasm.into()).unwrap())
    }

    /// A host parsed in an engine since retired still links: the graph
    /// runs in its root's engine, the host parsed again there.
    #[tokio::test]
    async fn a_graph_parsed_across_engines_runs_in_its_root_s() {
        let types = wasmtime::Engine::default();
        // Every module fills an engine: each is parsed in a new one.
        let interpreter = Interpreter::with_engine_bytes(&types, 1024, 1);
        let host = parse(
            &interpreter,
            r#"(module (func (export "seven") (result i32) i32.const 7))"#,
        );
        assert!(interpreter.take_retired());
        assert!(!interpreter.is_current(&host));
        let root = parse(
            &interpreter,
            r#"(module (import "host" "seven" (func $seven (result i32)))
                 (func (export "f") (result i32) call $seven i32.const 1 i32.add))"#,
        );
        assert!(!Arc::ptr_eq(&host.generation, &root.generation));
        let limits = ExecLimits {
            fuel: 1_000_000,
            timeout_ms: 5_000,
            memory_bytes: 1 << 20,
            table_elements: 1_000,
        };
        let spec = CallSpec {
            function: Some("f"),
            params: &[],
            writes: &[],
            reads: &[],
            result_as_bytes: false,
            limits,
            armed_at: None,
        };
        let hosts = [("host".to_string(), host)];
        let outcome = interpreter.run(root, &hosts, "inline", &spec, None).await;
        let outcome = outcome.expect("numbers only").expect("the call succeeds");
        assert_eq!(outcome.results.len(), 1);
        assert_eq!(outcome.results[0].get(), "8");
        assert_eq!(outcome.stats.tier, Tier::Interpreter);
    }

    /// Exports are listed in the binary's order (wasmi keeps them by
    /// name), read when first asked for.
    #[test]
    fn exports_are_listed_in_the_binary_s_order() {
        let types = wasmtime::Engine::default();
        let interpreter = Interpreter::new(&types, 1024);
        let module = parse(
            &interpreter,
            r#"(module (func (export "zeta")) (memory (export "mem") 1)
                 (func (export "alpha") (param i64) (result f32) f32.const 1))"#,
        );
        assert!(module.export_order.get().is_none());
        assert_eq!(module.export_names(), ["zeta", "mem", "alpha"]);
        let interface = module.interface();
        let names: Vec<&str> = interface.exports.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["zeta", "mem", "alpha"]);
    }
}
