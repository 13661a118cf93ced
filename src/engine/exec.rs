//! Running guest code: a store under limits, the module graph instantiated
//! into it ([`CompiledInstance`]), and calls with memory I/O around them.
//!
//! One-shot executions instantiate, call once and drop; stateful instances
//! keep the [`CompiledInstance`] and call it again. Both take the same path.
//!
//! Guest code runs on the async reactor through wasmtime's async support:
//! every epoch tick the guest yields back to tokio, so a long-running guest
//! shares a worker thread instead of holding it, and no per-call hop to a
//! blocking pool is needed (such a hop halved throughput when measured).

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use wasmtime::{
    AnyRef, AsContext, AsContextMut, ExternRef, Func, FuncType, Instance, Linker, RootScope, Store, Val, ValType,
};

use super::classify;
use super::compile::{CompiledModule, Sha256Digest};
use super::error::{EngineError, LimitKind};
use super::funcs::Funcs;
use super::limits::ExecLimits;
use super::link::{self, LinkedModule};
use super::memory::{self, MemoryRead, MemoryWrite};
use super::spare::Spare;
use super::store::{self, StoreState, SyncFirst};
use super::types::{signature, type_name, value_type_name};
use super::values::{
    AnyKind, Arg, HostRef, RefKind, anyref_json, classify_args, externref_json, json_to_val, result_json,
};
use super::wasi::{WasiConfig, WasiOutput, WasiState};

/// What instantiation needs from the engine: the wasmtime engine, the
/// linker with WASI, and two settings.
pub(crate) struct Runtime<'a> {
    pub engine: &'a wasmtime::Engine,
    pub linker: &'a Linker<StoreState>,
    /// Most bytes kept of a WASI program's stdout, and of its stderr.
    pub output_cap: usize,
    /// Most instances one link graph may create (`--max-link-instances`).
    pub max_link_instances: usize,
}

/// What to instantiate.
pub struct InstanceSpec {
    /// The module whose exports are called.
    pub root: Arc<CompiledModule>,
    /// How the root is named in messages (`module \`a\`` or `the module`).
    pub root_label: String,
    /// Every registered module the root depends on, directly or not, each
    /// once, dependencies before their dependents.
    pub graph: Vec<LinkedModule>,
    pub limits: ExecLimits,
    /// The WASI world, for graphs that import WASI.
    pub wasi: Option<WasiConfig>,
}

/// The code of one-shot executions, as a run of them shares it: what
/// [`InstanceSpec`] holds but the limits and the WASI world, which are each
/// call's own.
pub struct Code {
    pub root: Arc<CompiledModule>,
    /// How the root is named in messages.
    pub root_label: String,
    /// As in [`InstanceSpec::graph`].
    pub graph: Vec<LinkedModule>,
}

/// One call on a live instance.
pub struct CallSpec<'a> {
    /// The export to call; `None` runs a WASI command's `_start`.
    pub function: Option<&'a str>,
    pub params: &'a [Box<RawValue>],
    pub writes: &'a [MemoryWrite],
    pub reads: &'a [MemoryRead],
    /// Read a `(ptr, len)` result back as bytes.
    pub result_as_bytes: bool,
    pub limits: ExecLimits,
    /// The clock read the caller made just before this call (a batch's
    /// loop, a microsecond earlier): a reused instance's budget starts from
    /// it instead of from another read. `None` reads the clock.
    pub armed_at: Option<Instant>,
}

/// A call tried without awaiting ([`crate::WasmEngine::run_now`]): its
/// answer, or that it has to run the usual way, on a fiber; then, if it
/// began, the moment its budget was armed, from which the time limit of
/// the call run again goes on ([`CallSpec::armed_at`]). Not boxed: it is
/// returned once per call, and a box would cost the hot path an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Now {
    Done(Result<CallOutcome, CallFailure>),
    Later(Option<Instant>),
}

/// Measurements of one execution.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ExecStats {
    /// Fuel used by instantiation (start functions) and the call.
    pub fuel_consumed: u64,
    /// Limits the guest ran into and survived: a `memory.grow` (`memory`)
    /// or `table.grow` (`table_elements`) that returned -1 because of the
    /// server's limit. Absent when none was hit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub limits_hit: Vec<&'static str>,
    /// Time to instantiate the module graph, in microseconds.
    pub instantiate_us: u64,
    /// Time spent in the call itself, in microseconds.
    pub call_us: u64,
    /// Which tier ran the code.
    pub tier: Tier,
    /// Bytes of linear memory at the end, all memories of the store
    /// together: the peak, since linear memory never shrinks.
    pub memory_peak_bytes: u64,
}

/// Which tier ran a call: `interpreter` (wasmi, no compile) or `compiled`
/// (Cranelift machine code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Interpreter,
    #[default]
    Compiled,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Interpreter => "interpreter",
            Tier::Compiled => "compiled",
        }
    }
}

/// A WASI program's exit status and output.
#[derive(Debug, Clone, Default)]
pub struct WasiResult {
    pub exit_code: i32,
    pub output: WasiOutput,
}

/// What a successful call returns.
#[derive(Debug, Default)]
pub struct CallOutcome {
    /// Each result as ready JSON (see `values::val_to_json`).
    pub results: Vec<Box<RawValue>>,
    pub result_types: Vec<Cow<'static, str>>,
    /// The `(ptr, len)` result's bytes, when asked for.
    pub result_bytes: Option<Vec<u8>>,
    /// One entry per requested read, in order.
    pub memory: Vec<Vec<u8>>,
    pub wasi: Option<WasiResult>,
    pub stats: ExecStats,
    /// The clock read that ended the call's timing, when one did: the
    /// response's wall time is measured to it instead of reading the clock
    /// again (a batched call read it four times, 6% of its time).
    pub ended: Option<Instant>,
}

/// An exported global's current value, as a read of a live instance
/// returns it (the spec scripts' `get`).
#[derive(Debug)]
pub struct GlobalRead {
    /// As a result of that type is encoded (see `values::val_to_json`).
    pub value: Box<RawValue>,
    pub ty: String,
    pub mutable: bool,
}

/// How messages name inline code (a registered module is "module `name`").
pub const INLINE_LABEL: &str = "the module";

/// How messages name the module a request calls: "module `name`" for a
/// registered one, [`INLINE_LABEL`] for inline code. Written out only when
/// a message is: the label was a `String` formatted on every call, and
/// read by no call that succeeded.
#[derive(Clone, Copy)]
pub struct CodeLabel<'a>(pub Option<&'a str>);

impl std::fmt::Display for CodeLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(name) => write!(f, "module `{name}`"),
            None => f.write_str(INLINE_LABEL),
        }
    }
}

/// No exported global `name` in `label`, naming the ones there are.
pub(crate) fn no_global(label: &dyn Display, name: &str, mut globals: Vec<String>) -> EngineError {
    globals.sort();
    let there = if globals.is_empty() {
        "it exports no globals".to_string()
    } else {
        format!("its exported globals: {}", globals.join(", "))
    };
    EngineError::GlobalNotFound(format!("{label} has no exported global `{name}`; {there}"))
}

/// A failed call, with whatever could still be observed.
#[derive(Debug)]
pub struct CallFailure {
    pub error: EngineError,
    /// Present once guest code ran.
    pub stats: Option<ExecStats>,
    /// Requested reads, taken after a trap to help debugging.
    pub memory: Vec<Vec<u8>>,
    pub wasi: Option<WasiOutput>,
}

impl From<EngineError> for CallFailure {
    fn from(error: EngineError) -> Self {
        CallFailure {
            error,
            stats: None,
            memory: Vec::new(),
            wasi: None,
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A module graph instantiated into its own store, ready for calls.
pub(crate) struct CompiledInstance {
    store: Store<StoreState>,
    root: Instance,
    root_module: Arc<CompiledModule>,
    root_label: String,
    /// Host module instances by name, for `host:export` memory access.
    hosts: Vec<(String, Instance)>,
    /// The SHA-256 of each host module, in the order of `hosts`, when no
    /// module of the graph keeps state (see [`keeps_nothing`]): such an
    /// instance may be kept for later one-shot calls linking the same
    /// graph. `None` otherwise.
    stateless_graph: Option<Box<[Sha256Digest]>>,
    /// Fuel and time spent instantiating, reported with the first call.
    pending: Option<ExecStats>,
    /// The root's functions called so far, by export name.
    funcs: Funcs,
    /// Whether no call is under way: a call whose future was dropped
    /// midway leaves this false, and such an instance is never kept for
    /// another call ([`CompiledInstance::into_spare`]).
    idle: bool,
}

/// Instantiates `spec` under `spec.limits`: the graph in order, then the
/// root, then a reactor's `_initialize`. The request's budget is armed here
/// and goes on to the first call ([`CompiledInstance::call_on_same_budget`]).
pub(crate) async fn instantiate(rt: &Runtime<'_>, mut spec: InstanceSpec) -> Result<CompiledInstance, CallFailure> {
    check_counts(rt, &spec)?;
    // A graph that imports WASI always gets a context: the request's, or
    // an empty world (no args, no env, empty stdin).
    let needs_wasi = spec.root.imports_wasi() || spec.graph.iter().any(|m| m.compiled.imports_wasi());
    // Kept for later calls only without a WASI world of the request's.
    let stateless_graph = (spec.wasi.is_none() && keeps_nothing(&spec.root, &spec.graph))
        .then(|| spec.graph.iter().map(|node| *node.compiled.sha256()).collect());
    let config = spec.wasi.take().or_else(|| needs_wasi.then(WasiConfig::default));
    let wasi = config.map(|config| WasiState::new(config, rt.output_cap));
    let mut store = store::new_store(rt.engine, &spec.limits, wasi);
    let started = store::arm(&mut store, &spec.limits);
    let result = instantiate_graph(rt, &mut store, &spec).await;
    let stats = ExecStats {
        instantiate_us: micros(started.elapsed()),
        fuel_consumed: store::fuel_used(&store),
        ..Default::default()
    };
    let (root, hosts) = match result {
        Ok(instances) => instances,
        Err(e) => {
            let wasi = store.data().wasi.as_deref().map(WasiState::take_output);
            return Err(CallFailure {
                error: classify::runtime_error(e, &spec.limits),
                stats: Some(stats),
                memory: Vec::new(),
                wasi,
            });
        }
    };
    Ok(CompiledInstance {
        store,
        root,
        root_module: spec.root,
        root_label: spec.root_label,
        hosts,
        stateless_graph,
        pending: Some(stats),
        funcs: Funcs::default(),
        idle: true,
    })
}

/// Whether no module of `root`'s link `graph` keeps anything from one call
/// to the next (see `CompiledModule::stateless_when_linked`), so that the
/// graph's instances, as a call leaves them, are as good as fresh ones.
pub(crate) fn keeps_nothing(root: &CompiledModule, graph: &[LinkedModule]) -> bool {
    if graph.is_empty() {
        root.stateless()
    } else {
        root.stateless_when_linked() && graph.iter().all(|node| node.compiled.stateless_when_linked())
    }
}

/// Whether the kept instance `spare` was linked to exactly `graph`: the
/// same host modules, by name and code, in the same order.
pub(crate) fn links(spare: &Spare, graph: &[LinkedModule]) -> bool {
    let linked = spare.hosts.iter().zip(&*spare.graph);
    link::same_graph(linked.map(|((name, _), sha)| (name.as_str(), sha)), graph)
}

/// Refuses a graph with more instances than the server allows, before any
/// of it is instantiated.
fn check_counts(rt: &Runtime<'_>, spec: &InstanceSpec) -> Result<(), EngineError> {
    check_instance_count(&spec.root_label, spec.graph.len(), rt.max_link_instances)
}

/// Refuses a root linking `hosts` host modules when that makes more
/// instances than `max` (`--max-link-instances`); both tiers use it.
pub(crate) fn check_instance_count(root_label: &str, hosts: usize, max: usize) -> Result<(), EngineError> {
    let instances = hosts + 1;
    if instances > max {
        return Err(EngineError::LimitExceeded {
            kind: LimitKind::Instances,
            message: format!(
                "{root_label} links {hosts} host modules, {instances} instances in all; the server allows {max} per execution (--max-link-instances)"
            ),
        });
    }
    Ok(())
}

async fn instantiate_graph(
    rt: &Runtime<'_>,
    store: &mut Store<StoreState>,
    spec: &InstanceSpec,
) -> wasmtime::Result<(Instance, Vec<(String, Instance)>)> {
    let root = if spec.graph.is_empty()
        && let Some(pre) = spec.root.pre()
    {
        (pre.instantiate_async(&mut *store).await?, Vec::new())
    } else {
        let mut linker: Linker<StoreState> = rt.linker.clone();
        let mut hosts = Vec::with_capacity(spec.graph.len());
        for node in &spec.graph {
            let instance = match node.compiled.pre() {
                Some(pre) => pre.instantiate_async(&mut *store).await?,
                None => linker.instantiate_async(&mut *store, node.compiled.module()).await?,
            };
            linker.instance(&mut *store, &node.name, instance)?;
            initialize(store, instance).await?;
            hosts.push((node.name.clone(), instance));
        }
        (linker.instantiate_async(&mut *store, spec.root.module()).await?, hosts)
    };
    initialize(store, root.0).await?;
    Ok(root)
}

/// Runs a WASI reactor's `_initialize`, as the reactor ABI requires before
/// any other export is called.
pub(crate) async fn initialize(store: &mut Store<StoreState>, instance: Instance) -> wasmtime::Result<()> {
    if let Some(init) = instance.get_func(&mut *store, "_initialize") {
        init.call_async(&mut *store, &[], &mut []).await?;
    }
    Ok(())
}

/// Names of the guest allocators tried, in order, for byte arguments.
pub(crate) const ALLOCATORS: &[&str] = &["alloc", "malloc"];

/// The module exports no allocator for a bytes param of `function`.
pub(crate) fn no_allocator(function: &str) -> EngineError {
    EngineError::InvalidParams(format!(
        "a bytes param of `{function}` needs the module to export an allocator `alloc(i32) -> i32` or `malloc(i32) -> i32`"
    ))
}

/// A bytes param's length as the allocator's `i32` argument.
pub(crate) fn bytes_len(bytes: &[u8]) -> Result<i32, EngineError> {
    i32::try_from(bytes.len()).map_err(|_| EngineError::InvalidParams("a bytes param is larger than 2 GiB".into()))
}

/// The guest allocator returned null for a `len`-byte param of `function`.
pub(crate) fn allocator_returned_null(len: i32, function: &str) -> EngineError {
    EngineError::InvalidParams(format!(
        "the guest allocator returned null for a {len}-byte param of `{function}`"
    ))
}

impl CompiledInstance {
    /// A kept instance of the stateless module `root` (and of the graph it
    /// links), named `root_label` in messages (see `engine::spare`). Its
    /// calls report no instantiation: none was made for them.
    pub(crate) fn from_spare(spare: Spare, root_module: Arc<CompiledModule>, root_label: String) -> Self {
        let Spare {
            store,
            root,
            funcs,
            hosts,
            graph,
        } = spare;
        CompiledInstance {
            store,
            root,
            root_module,
            root_label,
            hosts,
            stateless_graph: Some(graph),
            pending: None,
            funcs,
            idle: true,
        }
    }

    /// Keeps this instance for a later one-shot call of its module, when
    /// no module of its graph keeps state, it has no WASI world and no
    /// call of it was cut short; otherwise it is dropped.
    pub(crate) fn into_spare(self) {
        let CompiledInstance {
            store,
            root,
            root_module,
            hosts,
            stateless_graph,
            idle,
            funcs,
            ..
        } = self;
        if idle && let Some(graph) = stateless_graph {
            let spare = Spare {
                store,
                root,
                funcs,
                hosts,
                graph,
            };
            root_module.spares().keep(spare);
        }
    }

    /// Marks a call as under way (`false`) or finished (`true`).
    pub(crate) fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }

    /// The fuel and time instantiation took; afterwards calls report only
    /// their own (for live instances, which report instantiation on creation).
    pub fn take_instantiation_stats(&mut self) -> ExecStats {
        let mut stats = self.pending.take().unwrap_or_default();
        (stats.limits_hit, stats.memory_peak_bytes) = self.store.data_mut().limit_report();
        stats
    }

    /// Whether this is an instance of `module`.
    pub(crate) fn runs(&self, module: &Arc<CompiledModule>) -> bool {
        Arc::ptr_eq(&self.root_module, module)
    }

    fn target(&mut self) -> Target<'_> {
        Target {
            store: &mut self.store,
            root: self.root,
            module: &self.root_module,
            label: &self.root_label,
            hosts: &self.hosts,
            funcs: Some(&mut self.funcs),
            sync: match self.stateless_graph {
                Some(_) => self.root_module.sync_first_when_linked(),
                None => self.root_module.sync_first(),
            },
        }
    }

    /// The current value of the root's exported global `name`.
    pub fn global(&mut self, name: &str) -> Result<GlobalRead, EngineError> {
        self.target().global(name)
    }

    /// Current size in bytes of the root's default memory, if it has one.
    pub fn memory_size(&mut self) -> Option<usize> {
        self.target().memory_size()
    }

    /// Calls one export of a live instance as a request of its own, with a
    /// fresh budget: memory writes, byte arguments, the call, then reads.
    pub async fn call(&mut self, spec: CallSpec<'_>) -> Result<CallOutcome, CallFailure> {
        let module = self.root_module.clone();
        let prepared = prepare(&*module, &self.root_label, &spec)?;
        let armed = store::arm_at(
            &mut self.store,
            &spec.limits,
            spec.armed_at.unwrap_or_else(Instant::now),
        );
        self.call_on_same_budget(prepared, spec, armed).await
    }

    /// Runs a call whose arguments [`prepare`] has already checked, on the
    /// budget armed last (by instantiation, for a one-shot execution), its
    /// time counted from `started`. `stats.fuel_consumed` is then
    /// everything the request used. Not an async fn: it hands back
    /// [`Target::call`]'s future, so that a call path does not nest (and
    /// copy) one more future.
    pub(crate) fn call_on_same_budget<'a>(
        &'a mut self,
        prepared: Prepared<'a>,
        spec: CallSpec<'a>,
        started: Instant,
    ) -> impl Future<Output = Result<CallOutcome, CallFailure>> + 'a {
        let stats = self.pending.take().unwrap_or_default();
        self.target().call(prepared, spec, stats, started)
    }
}

/// A call of the kept instance `spare` of the stateless module `module`
/// (see `engine::spare`) without awaiting, for a caller that
/// `store::SyncFirst::now` let begin so, when the call passes only numbers
/// and writes no memory (see [`Target::call_now`]): [`Now::Later`] when it
/// has to run on a fiber, with the moment its budget was armed if it began
/// here. No instance is made around the spare, so its calls report no
/// instantiation; and the module is borrowed, not cloned into one: every
/// clone and drop of its `Arc` writes a count that the calls of that
/// module on every core write too.
pub(crate) fn call_spare_now(
    spare: &mut Spare,
    module: &CompiledModule,
    label: &(dyn Display + Sync),
    spec: &CallSpec<'_>,
) -> Now {
    let prepared = match prepare(module, label, spec) {
        Ok(prepared) => prepared,
        Err(error) => return Now::Done(Err(error.into())),
    };
    let plain = spec.writes.is_empty() && prepared.args.iter().all(|a| matches!(a, PreparedArg::Value(_)));
    if !plain {
        return Now::Later(spec.armed_at);
    }
    let armed = store::arm_at(
        &mut spare.store,
        &spec.limits,
        spec.armed_at.unwrap_or_else(Instant::now),
    );
    let target = Target {
        store: &mut spare.store,
        root: spare.root,
        module,
        label,
        hosts: &spare.hosts,
        funcs: Some(&mut spare.funcs),
        // A spare's graph keeps nothing (`keeps_nothing`), and for a module
        // alone that means it is stateless, so this is its `sync_first` too.
        sync: module.sync_first_when_linked(),
    };
    match target.call_now(prepared, spec, ExecStats::default(), armed) {
        Some(done) => Now::Done(done),
        None => Now::Later(Some(armed)),
    }
}

/// What a call returned: each result as JSON, and the first two as a
/// `(ptr, len)` pair when they are two `i32`s (for `result_encoding`).
#[derive(Default)]
struct Returned {
    json: Vec<Box<RawValue>>,
    pair: Option<(u64, u64)>,
}

/// A call's `results` as [`Returned`], inside the call's root scope.
fn returned(scope: &mut RootScope<&mut Store<StoreState>>, results: &[Val]) -> Returned {
    let pair = match results {
        [Val::I32(ptr), Val::I32(len)] => Some((*ptr as u32 as u64, *len as u32 as u64)),
        _ => None,
    };
    let json = results.iter().map(|v| value_json(&mut *scope, v)).collect();
    Returned { json, pair }
}

/// A value as JSON: a host reference a request made shows its number again
/// (`{"externref": N}`, `{"anyref": N}`), an `anyref` says what it is
/// (`{"i31": N}`, `{"ref": "struct"}`, ...; see `values::anyref_json`);
/// everything else as `result_json` has it.
fn value_json(store: &mut impl AsContextMut, val: &Val) -> Box<RawValue> {
    let text = match val {
        Val::ExternRef(Some(r)) => {
            let data = r.data(store.as_context()).ok().flatten();
            externref_json(data.and_then(|d| d.downcast_ref::<HostRef>()))
        }
        Val::AnyRef(Some(r)) => {
            let mut store = store.as_context_mut();
            let kind = if let Ok(Some(i31)) = r.as_i31(&store) {
                AnyKind::I31(i31.get_i32())
            } else if r.is_struct(&store).unwrap_or(false) {
                AnyKind::Struct
            } else if r.is_array(&store).unwrap_or(false) {
                AnyKind::Array
            } else {
                let host = ExternRef::convert_any(&mut store, *r).ok().and_then(|e| {
                    e.data(&store)
                        .ok()
                        .flatten()
                        .and_then(|d| d.downcast_ref::<HostRef>().copied())
                });
                match host {
                    Some(HostRef(n)) => AnyKind::Host(n),
                    None => AnyKind::Other,
                }
            };
            anyref_json(kind)
        }
        _ => return result_json(val),
    };
    RawValue::from_string(text).unwrap_or_else(|_| result_json(val))
}

/// One instance of a store as a call sees it: the instance whose exports
/// are called, its module, and the other instances whose memories a request
/// may name as `host:export`. A live instance and an environment's member
/// are both called through it.
pub(crate) struct Target<'a> {
    pub store: &'a mut Store<StoreState>,
    pub root: Instance,
    pub module: &'a CompiledModule,
    /// How messages name the instance.
    pub label: &'a (dyn Display + Sync),
    pub hosts: &'a [(String, Instance)],
    /// Where the instance keeps the functions it was called through, if it
    /// lives on after this call.
    pub funcs: Option<&'a mut Funcs>,
    /// How its calls begin, when they may begin synchronously and run
    /// again from the start (see `store::call`): when nothing the call can
    /// reach keeps state.
    pub sync: Option<&'a SyncFirst>,
}

impl Target<'_> {
    /// The current value of the exported global `name`.
    pub fn global(&mut self, name: &str) -> Result<GlobalRead, EngineError> {
        let Some(global) = self.root.get_global(&mut *self.store, name) else {
            let globals = self
                .module
                .module()
                .exports()
                .filter(|e| matches!(e.ty(), wasmtime::ExternType::Global(_)))
                .map(|e| e.name().to_string())
                .collect();
            return Err(no_global(self.label, name, globals));
        };
        let ty = global.ty(&*self.store);
        let mut scope = RootScope::new(&mut *self.store);
        let value = global.get(&mut scope);
        Ok(GlobalRead {
            value: value_json(&mut scope, &value),
            ty: type_name(ty.content()),
            mutable: ty.mutability() == wasmtime::Mutability::Var,
        })
    }

    /// Current size in bytes of the default memory, if there is one.
    pub fn memory_size(&mut self) -> Option<usize> {
        memory::resolve(self.store, self.root, self.hosts, None)
            .ok()
            .map(|(_, m)| m.data_size(&*self.store))
    }

    /// Runs a call whose arguments [`prepare`] has checked, on the budget
    /// armed last; `stats` holds what that budget paid for before (an
    /// instantiation's fuel and time, for a one-shot execution). `started`
    /// is when the call's time began: the clock read that armed its budget,
    /// when it was armed just before.
    pub async fn call(
        mut self,
        prepared: Prepared<'_>,
        spec: CallSpec<'_>,
        stats: ExecStats,
        started: Instant,
    ) -> Result<CallOutcome, CallFailure> {
        let Prepared { name, ty, args } = prepared;
        let func = self.func(name)?;
        let outcome = self.call_inner(name, func, &ty, args, &spec).await;
        self.finish(outcome, &ty, &spec, stats, started)
    }

    /// [`Self::call`] run synchronously, for a call whose arguments are all
    /// numbers and that writes no memory, by a caller that may run it again
    /// from the start (see [`store::call_now`]): `None` when it must be.
    pub fn call_now(
        mut self,
        prepared: Prepared<'_>,
        spec: &CallSpec<'_>,
        stats: ExecStats,
        started: Instant,
    ) -> Option<Result<CallOutcome, CallFailure>> {
        if !spec.writes.is_empty() {
            return None;
        }
        let Prepared { name, ty, args } = prepared;
        let func = match self.func(name) {
            Ok(func) => func,
            Err(error) => return Some(Err(error.into())),
        };
        let params: Vec<Val> = (args.into_iter())
            .map(|arg| match arg {
                PreparedArg::Value(val) => Some(val),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let mut scope = RootScope::new(&mut *self.store);
        let mut results = vec![Val::I32(0); ty.results().len()];
        let sync = self.sync?;
        let outcome = match store::call_now(&mut scope, func, Some(&ty), &params, &mut results, sync)? {
            Ok(()) => Ok(returned(&mut scope, &results)),
            Err(e) => {
                store::drop_uncaught(&mut scope, &e);
                Err(e)
            }
        };
        drop(scope);
        Some(self.finish(outcome, &ty, spec, stats, started))
    }

    /// The exported function `name` of the root instance.
    fn func(&mut self, name: &str) -> Result<Func, EngineError> {
        if let Some(func) = self.funcs.as_deref().and_then(|funcs| funcs.get(name)) {
            return Ok(func);
        }
        let func = (self.module.function_export(name))
            .and_then(|at| self.root.get_module_export(&mut *self.store, at))
            .or_else(|| self.root.get_export(&mut *self.store, name))
            .and_then(wasmtime::Extern::into_func)
            .ok_or_else(|| EngineError::Internal(format!("export `{name}` vanished after instantiation")))?;
        if let Some(funcs) = self.funcs.as_deref_mut() {
            funcs.keep(name, func);
        }
        Ok(func)
    }

    /// What a call that ended with `outcome` answers: its stats, WASI
    /// output and memory reads, or its failure with them. (The result the
    /// async calls return too, moved once to the one caller.)
    #[allow(clippy::result_large_err)]
    fn finish(
        &mut self,
        outcome: wasmtime::Result<Returned>,
        ty: &FuncType,
        spec: &CallSpec<'_>,
        mut stats: ExecStats,
        started: Instant,
    ) -> Result<CallOutcome, CallFailure> {
        let ended = Instant::now();
        stats.call_us = micros(ended.saturating_duration_since(started));
        stats.fuel_consumed = store::fuel_used(self.store);
        (stats.limits_hit, stats.memory_peak_bytes) = self.store.data_mut().limit_report();
        let wasi_output = self.store.data().wasi.as_deref().map(WasiState::take_output);

        let outcome = match outcome {
            Ok(returned) => Ok((returned, None)),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                // `proc_exit` ends the program normally with a status; the
                // function returns nothing, whatever its signature says.
                Some(exit) if wasi_output.is_some() => Ok((Returned::default(), Some(exit.0))),
                _ => Err(e),
            },
        };
        // Reads happen after traps too: the memory at the trap helps debugging.
        let reads = self.read_all(spec.reads);
        let (values, exited) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                return Err(CallFailure {
                    error: classify::runtime_error(e, &spec.limits),
                    stats: Some(stats),
                    memory: reads.unwrap_or_default(),
                    wasi: wasi_output,
                });
            }
        };
        let memory = reads.map_err(|error| CallFailure {
            error,
            stats: Some(stats.clone()),
            memory: Vec::new(),
            wasi: None,
        })?;
        let result_bytes = if spec.result_as_bytes
            && let Some((ptr, len)) = values.pair
        {
            Some(
                self.read_one(&MemoryRead {
                    memory: None,
                    offset: ptr,
                    length: len,
                })
                .map_err(CallFailure::from)?,
            )
        } else {
            None
        };
        // Reads after the call take their own time, which the wall time
        // must include: then the response reads the clock itself.
        let ended = (spec.reads.is_empty() && result_bytes.is_none()).then_some(ended);
        Ok(CallOutcome {
            results: values.json,
            result_types: match exited {
                Some(_) => Vec::new(),
                None => ty.results().map(|t| value_type_name(&t)).collect(),
            },
            result_bytes,
            memory,
            wasi: wasi_output.map(|output| WasiResult {
                exit_code: exited.unwrap_or(0),
                output,
            }),
            stats,
            ended,
        })
    }

    /// Memory writes, byte arguments, then the call. Host references are
    /// made, and results turned to JSON, inside a root scope, so that the
    /// references a call makes or returns are unrooted when it ends (a
    /// long-lived store does not accumulate them).
    async fn call_inner(
        &mut self,
        name: &str,
        func: Func,
        ty: &FuncType,
        args: Vec<PreparedArg>,
        spec: &CallSpec<'_>,
    ) -> wasmtime::Result<Returned> {
        for write in spec.writes {
            let (shown, mem) = memory::resolve(self.store, self.root, self.hosts, write.memory.as_deref())?;
            memory::write(&mut *self.store, &shown, mem, write.offset, &write.data)?;
        }
        let mut params = Vec::with_capacity(ty.params().len());
        let mut host_refs = Vec::new();
        for arg in args {
            match arg {
                PreparedArg::Value(val) => params.push(val),
                PreparedArg::HostRef(kind, n) => {
                    // Made below, inside the call's root scope.
                    host_refs.push((params.len(), kind, n));
                    params.push(Val::ExternRef(None));
                }
                PreparedArg::Bytes(bytes) => {
                    // Boxed, as a rarer path: inline, its future would
                    // take room in every call's.
                    let ptr = Box::pin(self.place_bytes(name, &bytes)).await?;
                    params.push(Val::I32(ptr as i32));
                    params.push(Val::I32(bytes.len() as i32));
                }
            }
        }
        let mut scope = RootScope::new(&mut *self.store);
        for (at, kind, n) in host_refs {
            let host = ExternRef::new(&mut scope, HostRef(n))?;
            params[at] = match kind {
                RefKind::Any => Val::AnyRef(Some(AnyRef::convert_extern(&mut scope, host)?)),
                RefKind::Extern => Val::ExternRef(Some(host)),
            };
        }
        let mut results = vec![Val::I32(0); ty.results().len()];
        if let Err(e) = store::call(&mut scope, func, &params, &mut results, self.sync).await {
            store::drop_uncaught(&mut scope, &e);
            return Err(e);
        }
        Ok(returned(&mut scope, &results))
    }

    /// Copies a byte argument into memory the guest allocated for it.
    async fn place_bytes(&mut self, function: &str, bytes: &[u8]) -> wasmtime::Result<u32> {
        let alloc = ALLOCATORS
            .iter()
            .find_map(|n| self.root.get_typed_func::<i32, i32>(&mut *self.store, n).ok())
            .ok_or_else(|| no_allocator(function))?;
        let len = bytes_len(bytes)?;
        let ptr = alloc.call_async(&mut *self.store, len).await? as u32;
        if ptr == 0 && !bytes.is_empty() {
            return Err(allocator_returned_null(len, function).into());
        }
        let (shown, mem) = memory::resolve(self.store, self.root, self.hosts, None)?;
        memory::write(&mut *self.store, &shown, mem, ptr as u64, bytes)?;
        Ok(ptr)
    }

    fn read_one(&mut self, read: &MemoryRead) -> Result<Vec<u8>, EngineError> {
        let (shown, mem) = memory::resolve(self.store, self.root, self.hosts, read.memory.as_deref())?;
        memory::read(&*self.store, &shown, mem, read.offset, read.length)
    }

    fn read_all(&mut self, reads: &[MemoryRead]) -> Result<Vec<Vec<u8>>, EngineError> {
        reads.iter().map(|r| self.read_one(r)).collect()
    }
}

/// What a call needs to know of a module's exported functions, whichever
/// tier runs it: the compiled module, or the interpreter's.
pub(crate) trait Exports {
    /// The type of the exported function `name`, if there is one; borrowed
    /// where the module keeps it (a copy of a wasmtime type is a reference
    /// count taken and given back on every call).
    fn function_type(&self, name: &str) -> Option<Cow<'_, FuncType>>;
    /// Names and signatures of every exported function, for error messages.
    fn exported_functions(&self) -> Vec<String>;
}

impl Exports for CompiledModule {
    fn function_type(&self, name: &str) -> Option<Cow<'_, FuncType>> {
        CompiledModule::function_type(self, name).map(Cow::Borrowed)
    }

    fn exported_functions(&self) -> Vec<String> {
        CompiledModule::exported_functions(self)
    }
}

/// A call whose function exists and whose arguments fit its signature.
pub(crate) struct Prepared<'a> {
    pub(crate) name: &'a str,
    pub(crate) ty: Cow<'a, FuncType>,
    pub(crate) args: Vec<PreparedArg>,
}

pub(crate) enum PreparedArg {
    Value(Val),
    /// A host reference carrying the number, made at call time (it lives
    /// in the store's GC heap).
    HostRef(RefKind, u32),
    /// Placed in guest memory at call time; fills a `(ptr, len)` pair.
    Bytes(Vec<u8>),
}

/// Everything about a call that can be checked without a store: the
/// function exists, the arguments fill its signature and convert to their
/// types. Done before instantiation, so a bad request costs no guest code.
pub(crate) fn prepare<'a>(
    module: &'a dyn Exports,
    label: &dyn Display,
    spec: &CallSpec<'a>,
) -> Result<Prepared<'a>, EngineError> {
    let name = match spec.function {
        Some(name) => name,
        None if module.function_type("_start").is_some() => "_start",
        None => {
            return Err(EngineError::FunctionNotFound(format!(
                "no `function_name` was given and {label} is not a WASI command (it exports no `_start`); it exports: {}",
                list_or_none(module.exported_functions())
            )));
        }
    };
    let ty = module.function_type(name).ok_or_else(|| {
        EngineError::FunctionNotFound(format!(
            "{label} has no exported function `{name}`; it exports: {}",
            list_or_none(module.exported_functions())
        ))
    })?;
    let args = classify_args(spec.params).map_err(EngineError::InvalidParams)?;
    check_arity(name, &ty, &args)?;
    if spec.result_as_bytes && !returns_ptr_len(&ty) {
        return Err(EngineError::InvalidParams(format!(
            "`{name}` {} does not return (i32, i32), so its result cannot be read as bytes",
            signature(&ty)
        )));
    }
    let mut types = ty.params();
    let mut prepared = Vec::with_capacity(args.len());
    for (i, arg) in args.into_iter().enumerate() {
        match arg {
            Arg::Json(raw) => {
                let param_ty = types.next().unwrap_or(ValType::I32);
                let val = json_to_val(raw, &param_ty).map_err(|reason| {
                    EngineError::InvalidParams(format!(
                        "param {i} of `{name}` {} must be {}: {reason}",
                        signature(&ty),
                        type_name(&param_ty)
                    ))
                })?;
                prepared.push(PreparedArg::Value(val));
            }
            Arg::Bytes(bytes) => {
                types.next();
                types.next();
                prepared.push(PreparedArg::Bytes(bytes));
            }
            Arg::HostRef(kind, n) => {
                let param_ty = types.next().unwrap_or(ValType::I32);
                if !kind.fits(&param_ty) {
                    let field = kind.field();
                    return Err(EngineError::InvalidParams(format!(
                        "param {i} of `{name}` {} is {{\"{field}\": {n}}}, which fits only an {field} param, not {}",
                        signature(&ty),
                        type_name(&param_ty)
                    )));
                }
                prepared.push(PreparedArg::HostRef(kind, n));
            }
        }
    }
    drop(types);
    Ok(Prepared {
        name,
        ty,
        args: prepared,
    })
}

fn returns_ptr_len(ty: &FuncType) -> bool {
    let results: Vec<ValType> = ty.results().collect();
    results.len() == 2 && results.iter().all(|t| matches!(t, ValType::I32))
}

fn list_or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "no functions".to_string()
    } else {
        items.join(", ")
    }
}

/// Checks that the arguments fill the signature: a JSON value fills one
/// param, a bytes object fills an `(i32, i32)` pair (pointer, length).
fn check_arity(name: &str, ty: &FuncType, args: &[Arg<'_>]) -> Result<(), EngineError> {
    // The types are listed only where a bytes argument needs its pair.
    let types: Vec<ValType> = match args.iter().any(|a| matches!(a, Arg::Bytes(_))) {
        true => ty.params().collect(),
        false => Vec::new(),
    };
    let mut at = 0usize;
    for (i, arg) in args.iter().enumerate() {
        match arg {
            Arg::Json(_) | Arg::HostRef(..) => at += 1,
            Arg::Bytes(_) => {
                let pair = types.get(at..at + 2);
                if !pair.is_some_and(|p| p.iter().all(|t| matches!(t, ValType::I32))) {
                    return Err(EngineError::InvalidParams(format!(
                        "param {i} of `{name}` {} is bytes, which fills two i32 params (pointer, length), but the signature has no i32 pair at position {at}",
                        signature(ty)
                    )));
                }
                at += 2;
            }
        }
    }
    if at != ty.params().len() {
        return Err(EngineError::InvalidParams(format!(
            "`{name}` expects {}; got {} param{}",
            signature(ty),
            args.len(),
            if args.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}
