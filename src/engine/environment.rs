//! An environment: many instances in one store, linked live.
//!
//! Where a one-shot execution or a live instance instantiates its host
//! modules afresh, an environment keeps every instance it makes, and a
//! later instance imports the *running* exports of an earlier one (the
//! same memory, table, global and function, as the WebAssembly spec links
//! instances): one writes a memory, another reads it. This is the spec's
//! own model of a store, so its test scripts run through an environment
//! command for command (`register`, named modules, `module instance`).
//!
//! Imports resolve first to the names instances were exposed under here
//! (`as`, which a later exposure of the same name replaces), then to
//! registered modules, each instantiated once in the environment, at first
//! use, and kept there with its state. Everything runs in one store under
//! one limiter: the memory limit counts the whole environment, the table
//! limit bounds each table; fuel and time are armed per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::{Extern, ExternType, Instance, Linker, MemoryTypeBuilder, Store, TableType};

use super::classify;
use super::compile::CompiledModule;
use super::error::{EngineError, LimitKind};
use super::exec::{
    CallFailure, CallOutcome, CallSpec, ExecStats, GlobalRead, Runtime, Target, initialize, micros, prepare,
};
use super::limits::ExecLimits;
use super::link::{self, Linkable, LinkedModule, LiveExports};
use super::store::{self, StoreState};
use super::wasi::{WASI_MODULE, WasiConfig, WasiState};

/// An instance of an environment.
pub struct Member {
    /// The name the client gave it, if any; a later instance of the same
    /// name takes the name over.
    pub name: Option<String>,
    /// The registered module it was made from, or `inline`.
    pub module: String,
    pub compiled: Arc<CompiledModule>,
    instance: Instance,
}

impl Member {
    /// How messages name the instance at `index`.
    fn label(&self, index: usize) -> String {
        member_label(self.name.as_deref(), index)
    }
}

/// How messages name an instance called `name`, at `index`.
fn member_label(name: Option<&str>, index: usize) -> String {
    match name {
        Some(name) => format!("instance `{name}`"),
        None => format!("instance #{index}"),
    }
}

/// A module to instantiate in an environment.
pub struct MemberSpec {
    pub root: Arc<CompiledModule>,
    /// The registered module's name, or `inline`.
    pub module: String,
    pub name: Option<String>,
    /// Expose the new instance's exports under this import module name.
    pub expose_as: Option<String>,
    /// The registered modules among [`Environment::unresolved`] with
    /// everything they import from, dependencies first (those already
    /// instantiated here are skipped).
    pub graph: Vec<LinkedModule>,
    /// Fuel and time for the instantiation (start functions).
    pub limits: ExecLimits,
}

/// The instances all environments of a server may hold together: the pool
/// slots set aside for them (`--max-environment-instances`).
pub struct Budget {
    max: usize,
    held: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Budget {
            max,
            held: AtomicUsize::new(0),
        })
    }

    /// Takes `n` instances of the budget, or says it is spent.
    fn take(&self, n: usize) -> Result<(), EngineError> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&after| after <= self.max)
            })
            .map(|_| ())
            .map_err(|held| {
                EngineError::Capacity(format!(
                    "environments hold {held} instances on this server and this needs {n} more; they may hold {} together (--max-environment-instances): delete an environment or let idle ones expire",
                    self.max
                ))
            })
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Instances environments hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// A registered module instantiated in an environment.
struct Registered {
    name: String,
    instance: Instance,
}

/// Many instances in one store (see the module docs).
pub struct Environment {
    store: Store<StoreState>,
    /// WASI and the registered modules instantiated here, under their
    /// registry names: what registered modules link against.
    registered_linker: Linker<StoreState>,
    /// What members link against: WASI, the registered modules no exposed
    /// name hides, and the exposed names.
    linker: Linker<StoreState>,
    registered: Vec<Registered>,
    members: Vec<Member>,
    /// Exposed names, each with the member it stands for.
    exposed: Vec<(String, usize)>,
    output_cap: usize,
    /// Most instances (members and registered modules) it may hold.
    max_instances: usize,
    /// Exports defined by every exposure so far (see [`MAX_EXPOSED_EXPORTS`]).
    exposed_exports: usize,
    /// Instances it has made, or tried to: a failed instantiation may
    /// leave its instance in the store (its pool slot too) until the
    /// environment is dropped, so attempts count.
    made: usize,
    budget: Arc<Budget>,
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.budget.give_back(self.made);
    }
}

/// Most exports one environment may expose, counting every exposure (each
/// defines all of an instance's exports under a name, and the definitions
/// live as long as the environment): a bound on what `as` and `register`
/// can make it hold, which its memory limit does not count.
pub const MAX_EXPOSED_EXPORTS: usize = 100_000;

/// Refuses names that would hide the host's WASI functions.
fn check_exposed_name(name: &str) -> Result<(), EngineError> {
    if name == WASI_MODULE {
        return Err(EngineError::InvalidParams(format!(
            "`{WASI_MODULE}` is the host's WASI interface; expose the instance under another name"
        )));
    }
    Ok(())
}

impl Environment {
    /// An empty environment under `limits` (memory and tables for its
    /// whole life), with `wasi` as the world of the WASI programs in it.
    pub(crate) fn new(
        rt: &Runtime<'_>,
        limits: &ExecLimits,
        wasi: Option<WasiConfig>,
        max_instances: usize,
        budget: Arc<Budget>,
    ) -> Self {
        let wasi = wasi.map(|config| WasiState::new(config, rt.output_cap));
        let store = store::new_store(rt.engine, limits, wasi);
        let mut registered_linker = rt.linker.clone();
        registered_linker.allow_shadowing(true);
        let linker = registered_linker.clone();
        Environment {
            store,
            registered_linker,
            linker,
            registered: Vec::new(),
            members: Vec::new(),
            exposed: Vec::new(),
            output_cap: rt.output_cap,
            max_instances,
            made: 0,
            exposed_exports: 0,
            budget,
        }
    }

    /// The instances, oldest first (their index is their place here).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Exposed names and the index of the instance each stands for.
    pub fn exposed(&self) -> &[(String, usize)] {
        &self.exposed
    }

    /// The registered modules instantiated here, in the order they were.
    pub fn registered(&self) -> Vec<&str> {
        self.registered.iter().map(|r| r.name.as_str()).collect()
    }

    /// Bytes of linear memory the environment's instances hold together.
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().memory_in_use()
    }

    fn is_exposed(&self, name: &str) -> bool {
        self.exposed.iter().any(|(n, _)| n == name)
    }

    fn registered_instance(&self, name: &str) -> Option<Instance> {
        self.registered.iter().find(|r| r.name == name).map(|r| r.instance)
    }

    /// The module names `module` imports from that nothing here provides
    /// yet: neither an exposed name nor a registered module instantiated
    /// here. The caller looks them up among registered modules.
    pub fn unresolved(&self, module: &CompiledModule) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for import in module.module().imports() {
            let name = import.module();
            if name != WASI_MODULE
                && !self.is_exposed(name)
                && self.registered_instance(name).is_none()
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
        names
    }

    /// The member `name` (the latest of that name), or the latest member.
    fn find(&self, name: Option<&str>) -> Result<usize, EngineError> {
        let found = match name {
            Some(name) => self.members.iter().rposition(|m| m.name.as_deref() == Some(name)),
            None => self.members.len().checked_sub(1),
        };
        found.ok_or_else(|| {
            let named: Vec<&str> = self.members.iter().filter_map(|m| m.name.as_deref()).collect();
            let there = match (self.members.len(), named.is_empty()) {
                (0, _) => "it has no instances yet".to_string(),
                (n, true) => format!("its {n} instances are unnamed"),
                (_, false) => format!("its named instances: {}", named.join(", ")),
            };
            match name {
                Some(name) => {
                    EngineError::MemberNotFound(format!("the environment has no instance named `{name}`; {there}"))
                }
                None => EngineError::MemberNotFound(format!("the environment has no instance; {there}")),
            }
        })
    }

    /// What the exports of `instance` are now (see [`LiveExports`]).
    fn live_exports(&mut self, instance: Instance, label: String) -> LiveExports {
        let exports: Vec<(String, Extern)> = instance
            .exports(&mut self.store)
            .map(|e| (e.name().to_string(), e.into_extern()))
            .collect();
        let exports = exports
            .into_iter()
            .map(|(name, ext)| {
                let ty = live_type(&self.store, &ext);
                (name, ty)
            })
            .collect();
        LiveExports { label, exports }
    }

    /// Checks `spec.root`'s imports against what it would link to, so
    /// that a mismatch is a `link_error` naming the import and both types.
    fn check_imports(&mut self, label: &str, spec: &MemberSpec) -> Result<(), EngineError> {
        let mut live: Vec<(String, LiveExports)> = Vec::new();
        let mut declared: Vec<(String, Arc<CompiledModule>)> = Vec::new();
        for import in spec.root.module().imports() {
            let name = import.module();
            if name == WASI_MODULE || live.iter().any(|(n, _)| n == name) || declared.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(&(_, index)) = self.exposed.iter().find(|(n, _)| n == name) {
                let instance = self.members[index].instance;
                let label = format!("{} (exposed as `{name}`)", self.members[index].label(index));
                let exports = self.live_exports(instance, label);
                live.push((name.to_string(), exports));
            } else if let Some(instance) = self.registered_instance(name) {
                let exports = self.live_exports(instance, format!("registered module `{name}`"));
                live.push((name.to_string(), exports));
            } else if let Some(node) = spec.graph.iter().find(|m| m.name == name) {
                declared.push((name.to_string(), node.compiled.clone()));
            }
        }
        let mut hosts: Vec<(&str, &dyn Linkable)> = Vec::new();
        for (name, exports) in &live {
            hosts.push((name, exports));
        }
        for (name, compiled) in &declared {
            hosts.push((name, &**compiled));
        }
        let unlinked = |module: &str| {
            format!(
                "nothing in this environment is exposed as `{module}` and no module named `{module}` is registered; add an instance with \"as\": \"{module}\" first, or register a module of that name"
            )
        };
        link::check_linkable_with(label, &*spec.root, &hosts, &unlinked)
    }

    /// Refuses an instantiation that would make more instances than this
    /// environment may (all environments together: [`Budget`]).
    fn check_count(&self, new: usize) -> Result<(), EngineError> {
        let held = self.made;
        if held + new > self.max_instances {
            return Err(EngineError::LimitExceeded {
                kind: LimitKind::Instances,
                message: format!(
                    "the environment has made {held} instances and this needs {new} more; it may make {} (--max-link-instances)",
                    self.max_instances
                ),
            });
        }
        Ok(())
    }

    /// Instantiates `spec` here: registered modules it needs that are not
    /// here yet, then the module, then a reactor's `_initialize`. Returns
    /// the new member's index and the instantiation's stats. A failure
    /// adds no member; what a trapping start function wrote into shared
    /// memories and tables stays, as the spec says.
    pub async fn add(&mut self, spec: MemberSpec) -> Result<(usize, ExecStats), CallFailure> {
        if let Some(name) = &spec.expose_as {
            check_exposed_name(name)?;
            self.check_exposure(spec.root.module().exports().len())?;
        }
        let index = self.members.len();
        let label = member_label(spec.name.as_deref(), index);
        let new_hosts: Vec<&LinkedModule> = spec
            .graph
            .iter()
            .filter(|m| self.registered_instance(&m.name).is_none())
            .collect();
        let new = new_hosts.len() + 1;
        self.check_count(new)?;
        self.check_imports(&label, &spec)?;
        self.budget.take(new)?;
        self.made += new;
        let needs_wasi = spec.root.imports_wasi() || new_hosts.iter().any(|m| m.compiled.imports_wasi());
        if needs_wasi && self.store.data().wasi.is_none() {
            self.store.data_mut().wasi = Some(WasiState::new(WasiConfig::default(), self.output_cap));
        }
        let started = store::arm(&mut self.store, &spec.limits);
        let hosts: Vec<LinkedModule> = new_hosts.into_iter().cloned().collect();
        let result = self.instantiate(&hosts, &spec.root).await;
        let mut stats = ExecStats {
            instantiate_us: micros(started.elapsed()),
            fuel_consumed: store::fuel_used(&self.store),
            ..Default::default()
        };
        (stats.limits_hit, stats.memory_peak_bytes) = self.store.data_mut().limit_report();
        let instance = match result {
            Ok(instance) => instance,
            Err(e) => {
                store::drop_uncaught(&mut self.store, &e);
                let wasi = self.store.data().wasi.as_deref().map(WasiState::take_output);
                return Err(CallFailure {
                    error: classify::runtime_error(e, &spec.limits),
                    stats: Some(stats),
                    memory: Vec::new(),
                    wasi,
                });
            }
        };
        self.members.push(Member {
            name: spec.name,
            module: spec.module,
            compiled: spec.root,
            instance,
        });
        if let Some(name) = spec.expose_as {
            self.expose_member(index, name)?;
        }
        Ok((index, stats))
    }

    /// Instantiates the registered `hosts` (defining each under its name)
    /// and then `root`.
    async fn instantiate(&mut self, hosts: &[LinkedModule], root: &CompiledModule) -> wasmtime::Result<Instance> {
        for host in hosts {
            let instance = self
                .registered_linker
                .instantiate_async(&mut self.store, host.compiled.module())
                .await?;
            initialize(&mut self.store, instance).await?;
            self.registered_linker.instance(&mut self.store, &host.name, instance)?;
            if !self.is_exposed(&host.name) {
                self.linker.instance(&mut self.store, &host.name, instance)?;
            }
            self.registered.push(Registered {
                name: host.name.clone(),
                instance,
            });
        }
        let instance = self.linker.instantiate_async(&mut self.store, root.module()).await?;
        initialize(&mut self.store, instance).await?;
        Ok(instance)
    }

    /// Exposes the member `instance` (by name, else the latest) under
    /// `name`: later instances importing from `name` link to its exports
    /// as they are now and will be (the spec's `register`). Returns the
    /// member's index.
    pub fn expose(&mut self, instance: Option<&str>, name: String) -> Result<usize, EngineError> {
        check_exposed_name(&name)?;
        let index = self.find(instance)?;
        self.expose_member(index, name)?;
        Ok(index)
    }

    /// Refuses an exposure of `exports` more exports past
    /// [`MAX_EXPOSED_EXPORTS`].
    fn check_exposure(&self, exports: usize) -> Result<(), EngineError> {
        if self.exposed_exports + exports > MAX_EXPOSED_EXPORTS {
            return Err(EngineError::LimitExceeded {
                kind: LimitKind::ExposedExports,
                message: format!(
                    "the environment has exposed {} exports and this would expose {exports} more; it may expose {MAX_EXPOSED_EXPORTS} in all (every `as` and register counts)",
                    self.exposed_exports
                ),
            });
        }
        Ok(())
    }

    fn expose_member(&mut self, index: usize, name: String) -> Result<(), EngineError> {
        let exports = self.members[index].compiled.module().exports().len();
        self.check_exposure(exports)?;
        self.exposed_exports += exports;
        let instance = self.members[index].instance;
        self.linker
            .instance(&mut self.store, &name, instance)
            .map_err(|e| EngineError::Internal(format!("cannot define `{name}`: {e}")))?;
        self.exposed.retain(|(n, _)| *n != name);
        self.exposed.push((name, index));
        Ok(())
    }

    /// Every instance a request may name as `host:export` in a memory
    /// access: named members, exposed names and registered modules.
    fn memory_hosts(&self) -> Vec<(String, Instance)> {
        let mut hosts: Vec<(String, Instance)> = Vec::new();
        for (name, index) in &self.exposed {
            hosts.push((name.clone(), self.members[*index].instance));
        }
        for member in self.members.iter().rev() {
            if let Some(name) = &member.name {
                hosts.push((name.clone(), member.instance));
            }
        }
        for registered in &self.registered {
            hosts.push((registered.name.clone(), registered.instance));
        }
        hosts
    }

    /// Calls an export of the member `instance` (by name, else the latest)
    /// as a request of its own, with a fresh fuel and time budget.
    pub async fn call(&mut self, instance: Option<&str>, spec: CallSpec<'_>) -> Result<CallOutcome, CallFailure> {
        let index = self.find(instance)?;
        let member = &self.members[index];
        let label = member.label(index);
        let prepared = prepare(&*member.compiled, &label, &spec)?;
        let (root, module) = (member.instance, member.compiled.clone());
        // Only a request that names another instance's memory needs them.
        let names_host = |memory: &Option<String>| memory.as_deref().is_some_and(|m| m.contains(':'));
        let needs_hosts =
            spec.writes.iter().any(|w| names_host(&w.memory)) || spec.reads.iter().any(|r| names_host(&r.memory));
        let hosts = if needs_hosts { self.memory_hosts() } else { Vec::new() };
        let armed = store::arm(&mut self.store, &spec.limits);
        let target = Target {
            store: &mut self.store,
            root,
            module: &module,
            label: &label,
            hosts: &hosts,
            funcs: None,
            sync: module.sync_first(),
        };
        target.call(prepared, spec, ExecStats::default(), armed).await
    }

    /// The current value of the exported global `name` of the member
    /// `instance` (by name, else the latest).
    pub fn global(&mut self, instance: Option<&str>, name: &str) -> Result<GlobalRead, EngineError> {
        let index = self.find(instance)?;
        let member = &self.members[index];
        let label = member.label(index);
        let (root, module) = (member.instance, member.compiled.clone());
        let mut target = Target {
            store: &mut self.store,
            root,
            module: &module,
            label: &label,
            hosts: &[],
            funcs: None,
            sync: None,
        };
        target.global(name)
    }
}

/// The type of a live export as an import is matched against it: a memory
/// or table with its current size as its minimum.
fn live_type(store: &Store<StoreState>, ext: &Extern) -> ExternType {
    match ext {
        Extern::Memory(memory) => {
            let ty = memory.ty(store);
            let mut builder = MemoryTypeBuilder::new();
            builder
                .min(memory.size(store))
                .max(ty.maximum())
                .memory64(ty.is_64())
                .shared(ty.is_shared())
                .page_size_log2(ty.page_size_log2());
            builder
                .build()
                .map(ExternType::Memory)
                .unwrap_or(ExternType::Memory(ty))
        }
        Extern::Table(table) => {
            let ty = table.ty(store);
            let size = table.size(store);
            let live = if ty.is_64() {
                TableType::new64(ty.element().clone(), size, ty.maximum())
            } else {
                TableType::new(
                    ty.element().clone(),
                    u32::try_from(size).unwrap_or(u32::MAX),
                    ty.maximum().and_then(|m| u32::try_from(m).ok()),
                )
            };
            ExternType::Table(live)
        }
        other => other.ty(store),
    }
}
