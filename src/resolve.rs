//! Where code comes from, resolved once.
//!
//! Every endpoint that runs, inspects or registers code names it as a
//! [`Source`] and calls [`resolve`], which returns everything a call needs:
//! the compiled root, the link graph of registered modules it imports from
//! (checked against its imports, with messages that name the import), and
//! its name, from which messages' label follows; `argv[0]` for WASI follows
//! from the source itself ([`Source::program`]). Handlers then only decode,
//! resolve, run and respond.

use std::sync::Arc;

use crate::engine::{
    CacheOutcome, CodeInterface, CodeLabel, CompiledModule, ExecLimits, InstanceSpec, LinkedModule, WasiConfig,
    WasmEngine, check_component_imports, is_component,
};
use crate::registry::{ModuleRecord, Registry, RegistryError, ResolvedComponent};

/// `argv[0]` of an inline WASI program.
pub const INLINE_PROGRAM: &str = "main";

pub use crate::engine::INLINE_LABEL;

/// Where the code of a request comes from.
#[derive(Clone)]
pub enum Source {
    /// A registered module, linked to the host modules it was registered with.
    Registered(String),
    /// Code sent with the request, importing from `host_modules`.
    Inline { wasm: Vec<u8>, host_modules: Vec<String> },
    /// Code to be registered under `name` (see [`register`], which checks
    /// the name and the caller's quota first): checked like inline code,
    /// named in messages. (The caller keeps its own copy of the binary to
    /// store.)
    ToRegister {
        name: String,
        wasm: Vec<u8>,
        host_modules: Vec<String>,
    },
    /// Code only to be looked at (`/inspect`): compiled, not linked, so a
    /// module whose imports nothing provides can still be inspected.
    Unlinked(Vec<u8>),
}

impl Source {
    /// `argv[0]` of a WASI program run from this code: the module name, or
    /// `main` for inline code. Known before anything is compiled, so a
    /// request's WASI fields are checked first.
    pub fn program(&self) -> &str {
        match self {
            Source::Registered(name) | Source::ToRegister { name, .. } => name,
            Source::Inline { .. } | Source::Unlinked(_) => INLINE_PROGRAM,
        }
    }
}

/// What a call, an instance or a registration needs, resolved.
pub struct Resolved {
    pub root: Arc<CompiledModule>,
    /// How the root was obtained (`stats.compile`).
    pub compile: CacheOutcome,
    /// Every registered module the root depends on, directly or not, each
    /// once, dependencies first.
    pub graph: Vec<LinkedModule>,
    /// The host modules sent with inline code or a registration, without
    /// repeats, in the order given; empty for a registered module (its
    /// record has them).
    pub host_modules: Vec<String>,
    /// The module's registry name; `None` for inline code.
    pub name: Option<String>,
}

impl Resolved {
    /// How messages name the root: "module `name`" or "the module".
    pub fn label(&self) -> String {
        label(self.name.as_deref())
    }

    /// The module's name, or `inline`.
    pub fn module(&self) -> &str {
        self.name.as_deref().unwrap_or("inline")
    }

    /// The instantiation of this code under `limits`, with `wasi` as the
    /// WASI world when the request has one.
    pub fn into_spec(self, limits: ExecLimits, wasi: Option<WasiConfig>) -> InstanceSpec {
        InstanceSpec {
            root_label: self.label(),
            root: self.root,
            graph: self.graph,
            limits,
            wasi,
        }
    }
}

/// How messages name code: "module `name`" for a registered module, "the
/// module" for inline code.
pub fn label(name: Option<&str>) -> String {
    CodeLabel(name).to_string()
}

/// Resolves `source` into everything a call needs (see the module docs).
pub async fn resolve(engine: &WasmEngine, registry: &Registry, source: Source) -> Result<Resolved, RegistryError> {
    match source {
        Source::Registered(name) => {
            let (root, compile, graph) = registry.resolve_registered(&name).await?;
            Ok(Resolved {
                root,
                compile,
                graph,
                host_modules: Vec::new(),
                name: Some(name),
            })
        }
        Source::Inline { wasm, host_modules } => link_inline(engine, registry, None, wasm, host_modules).await,
        Source::ToRegister {
            name,
            wasm,
            host_modules,
        } => link_inline(engine, registry, Some(name), wasm, host_modules).await,
        Source::Unlinked(wasm) => {
            let (root, compile) = engine.compile(wasm).await?;
            Ok(Resolved {
                root,
                compile,
                graph: Vec::new(),
                host_modules: Vec::new(),
                name: None,
            })
        }
    }
}

/// The compiled code of a module to instantiate in an environment, and its
/// name (`inline` for inline code). It is not linked here: an environment
/// resolves imports against its own instances first (see
/// `engine::environment`), then [`registered_hosts`].
pub async fn environment_member(
    engine: &WasmEngine,
    registry: &Registry,
    source: Source,
) -> Result<(Arc<CompiledModule>, String), RegistryError> {
    match source {
        Source::Registered(name) => {
            let (compiled, _) = registry.compiled(&name).await?;
            Ok((compiled, name))
        }
        Source::Inline { wasm, .. } | Source::ToRegister { wasm, .. } | Source::Unlinked(wasm) => {
            let (compiled, _) = engine.compile(wasm).await?;
            Ok((compiled, "inline".to_string()))
        }
    }
}

/// The registered modules among `names`, with every module they import
/// from, each once, dependencies first. A name no module has is left out:
/// the environment's import check then names the import nothing provides.
pub async fn registered_hosts(registry: &Registry, names: &[String]) -> Result<Vec<LinkedModule>, RegistryError> {
    let mut known = Vec::with_capacity(names.len());
    for name in names {
        match registry.get(name).await {
            Ok(_) => known.push(name.clone()),
            Err(RegistryError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    registry.link_graph(&known).await
}

/// Registers `wasm` under `name`, importing from `host_modules`, and
/// returns its record and interface. Code the interpreter can run (its
/// graph too) is stored once the interpreter has validated it and checked
/// its imports, and compiled in the background: its calls run on the
/// interpreter until then (see `Registry::interpreted`). Other code is
/// compiled and linked first. Either way a registration that answers 201
/// links.
pub async fn register(
    engine: &WasmEngine,
    registry: &Arc<Registry>,
    name: String,
    wasm: Vec<u8>,
    host_modules: Vec<String>,
    owner: Option<String>,
) -> Result<(ModuleRecord, CodeInterface), RegistryError> {
    let host_modules = dedup(host_modules);
    registry.check_new(&name, wasm.len() as u64, owner.as_deref())?;
    if is_component(&wasm) {
        let resolved = link_component(engine, registry, wasm.clone(), &host_modules).await?;
        let digest = *resolved.compiled.sha256();
        let record = registry.insert(&name, wasm, digest, None, host_modules, owner).await?;
        return Ok((record, CodeInterface::Component(resolved.compiled.world().clone())));
    }
    // The module first: its graph is looked up only if it is to be
    // interpreted.
    if let Some(code) = engine.interpret_registered(&wasm).await
        && let Some(graph) = registry.interpreted_graph(&host_modules).await?
    {
        engine.check_interpreted_graph(&label(Some(&name)), &code, &host_modules, &graph)?;
        let record = registry
            .insert(&name, wasm, *code.digest(), None, host_modules, owner)
            .await?;
        registry.compile_later(&name);
        return Ok((record, CodeInterface::Module(code.interface.clone())));
    }
    // The engine consumes its copy; this one is stored.
    let source = Source::ToRegister {
        name: name.clone(),
        wasm: wasm.clone(),
        host_modules,
    };
    let resolved = resolve(engine, registry, source).await?;
    let root = &resolved.root;
    let record = registry
        .insert(&name, wasm, *root.sha256(), Some(root), resolved.host_modules, owner)
        .await?;
    Ok((record, CodeInterface::Module(root.interface())))
}

/// Compiles code sent with a request and links it to `host_modules`,
/// checking every import against them.
async fn link_inline(
    engine: &WasmEngine,
    registry: &Registry,
    name: Option<String>,
    wasm: Vec<u8>,
    host_modules: Vec<String>,
) -> Result<Resolved, RegistryError> {
    let host_modules = dedup(host_modules);
    let graph = registry.link_graph(&host_modules).await?;
    let (root, compile) = engine.compile(wasm).await?;
    linked(engine, name, root, compile, graph, host_modules)
}

/// Links inline code whose compiled form the caller has from the cache
/// (`WasmEngine::cached_inline`) to `host_modules`, as [`resolve`] would
/// link [`Source::Inline`], without hashing and looking it up again.
pub async fn resolve_cached_inline(
    engine: &WasmEngine,
    registry: &Registry,
    root: Arc<CompiledModule>,
    host_modules: Vec<String>,
) -> Result<Resolved, RegistryError> {
    let host_modules = dedup(host_modules);
    let graph = registry.link_graph(&host_modules).await?;
    linked(engine, None, root, CacheOutcome::Cached, graph, host_modules)
}

/// `root` with its `graph`, its imports checked against its own
/// `host_modules` there.
fn linked(
    engine: &WasmEngine,
    name: Option<String>,
    root: Arc<CompiledModule>,
    compile: CacheOutcome,
    graph: Vec<LinkedModule>,
    host_modules: Vec<String>,
) -> Result<Resolved, RegistryError> {
    let direct = Registry::direct_hosts(&graph, &host_modules);
    engine.check_imports(&label(name.as_deref()), &root, &direct)?;
    Ok(Resolved {
        root,
        compile,
        graph,
        host_modules,
        name,
    })
}

/// The component `source` carries or names, resolved: compiled, with the
/// registered components it imports from, its imports checked against
/// them; `None` when the code is a core module (resolved by [`resolve`]).
/// Inline code is told apart by its binary's header, registered code by
/// the registry.
pub async fn resolve_component(
    engine: &WasmEngine,
    registry: &Registry,
    source: &Source,
) -> Result<Option<ResolvedComponent>, RegistryError> {
    match source {
        Source::Registered(name) => registry.component(name).await,
        Source::Inline { wasm, host_modules } | Source::ToRegister { wasm, host_modules, .. } => {
            if !is_component(wasm) {
                return Ok(None);
            }
            let host_modules = dedup(host_modules.clone());
            link_component(engine, registry, wasm.clone(), &host_modules)
                .await
                .map(Some)
        }
        Source::Unlinked(wasm) => {
            if !is_component(wasm) {
                return Ok(None);
            }
            let (compiled, compile) = engine.compile_component(wasm.clone()).await?;
            Ok(Some(ResolvedComponent {
                compiled,
                compile,
                graph: Vec::new(),
            }))
        }
    }
}

/// Compiles the component `wasm` and checks its imports against WASI 0.2
/// and the registered components `host_modules` (and theirs).
async fn link_component(
    engine: &WasmEngine,
    registry: &Registry,
    wasm: Vec<u8>,
    host_modules: &[String],
) -> Result<ResolvedComponent, RegistryError> {
    let graph = registry.component_graph(host_modules).await?;
    let (compiled, compile) = engine.compile_component(wasm).await?;
    check_component_imports(&compiled, &graph)?;
    Ok(ResolvedComponent {
        compiled,
        compile,
        graph,
    })
}

/// `names` without repeats, first occurrence kept.
fn dedup(names: Vec<String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}
