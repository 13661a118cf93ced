//! Where code comes from, resolved once.
//!
//! Every endpoint that runs, inspects or registers code names it as a
//! [`Source`] and calls [`resolve`], which returns everything a call needs:
//! the compiled root, the link graph of registered modules it imports from
//! (checked against its imports, with messages that name the import), how
//! messages name it, and `argv[0]` for WASI. Handlers then only decode,
//! resolve, run and respond.

use std::sync::Arc;

use crate::engine::{CacheOutcome, CompiledModule, ExecLimits, InstanceSpec, LinkedModule, WasiConfig, WasmEngine};
use crate::registry::{Registry, RegistryError};

/// `argv[0]` of an inline WASI program.
pub const INLINE_PROGRAM: &str = "main";

/// How messages name inline code (a registered module is "module `name`").
pub const INLINE_LABEL: &str = "the module";

/// Where the code of a request comes from.
pub enum Source {
    /// A registered module, linked to the host modules it was registered with.
    Registered(String),
    /// Code sent with the request, importing from `host_modules`.
    Inline { wasm: Vec<u8>, host_modules: Vec<String> },
    /// Code to be registered under `name`: checked like inline code, plus the
    /// name and the caller's quota before anything is compiled.
    ToRegister {
        name: String,
        wasm: Vec<u8>,
        host_modules: Vec<String>,
        owner: Option<String>,
    },
    /// Code only to be looked at (`/inspect`): compiled, not linked, so a
    /// module whose imports nothing provides can still be inspected.
    Unlinked(Vec<u8>),
}

/// What a call, an instance or a registration needs, resolved.
pub struct Resolved {
    pub root: Arc<CompiledModule>,
    /// How the root was obtained (`stats.compile`).
    pub compile: CacheOutcome,
    /// Every registered module the root depends on, directly or not, each
    /// once, dependencies first.
    pub graph: Vec<LinkedModule>,
    /// The root's direct host modules, without repeats, in the order given.
    pub host_modules: Vec<String>,
    /// How messages name the root: "module `name`" or "the module".
    pub label: String,
    /// `argv[0]` of a WASI program: the module name, or `main` inline.
    pub program: String,
    /// The module's name, or `inline`.
    pub module: String,
    /// The binary, kept only for [`Source::ToRegister`], which stores it.
    pub binary: Option<Vec<u8>>,
}

impl Resolved {
    /// The instantiation of this code under `limits`, with `wasi` as the
    /// WASI world when the request has one.
    pub fn into_spec(self, limits: ExecLimits, wasi: Option<WasiConfig>) -> InstanceSpec {
        InstanceSpec {
            root: self.root,
            root_label: self.label,
            graph: self.graph,
            limits,
            wasi,
        }
    }
}

/// Resolves `source` into everything a call needs (see the module docs).
pub async fn resolve(engine: &WasmEngine, registry: &Registry, source: Source) -> Result<Resolved, RegistryError> {
    match source {
        Source::Registered(name) => {
            let (root, compile, graph, host_modules) = registry.resolve_registered(&name).await?;
            Ok(Resolved {
                root,
                compile,
                graph,
                host_modules,
                label: format!("module `{name}`"),
                program: name.clone(),
                module: name,
                binary: None,
            })
        }
        Source::Inline { wasm, host_modules } => {
            let host_modules = dedup(host_modules);
            let graph = registry.link_graph(&host_modules).await?;
            let (root, compile) = engine.compile(wasm).await?;
            engine.check_imports(INLINE_LABEL, &root, &Registry::direct_hosts(&graph, &host_modules))?;
            Ok(Resolved {
                root,
                compile,
                graph,
                host_modules,
                label: INLINE_LABEL.into(),
                program: INLINE_PROGRAM.into(),
                module: "inline".into(),
                binary: None,
            })
        }
        Source::ToRegister {
            name,
            wasm,
            host_modules,
            owner,
        } => {
            registry.check_new(&name, wasm.len() as u64, owner.as_deref())?;
            let host_modules = dedup(host_modules);
            let graph = registry.link_graph(&host_modules).await?;
            let (root, compile) = engine.compile(wasm.clone()).await?;
            let label = format!("module `{name}`");
            engine.check_imports(&label, &root, &Registry::direct_hosts(&graph, &host_modules))?;
            Ok(Resolved {
                root,
                compile,
                graph,
                host_modules,
                label,
                program: name.clone(),
                module: name,
                binary: Some(wasm),
            })
        }
        Source::Unlinked(wasm) => {
            let (root, compile) = engine.compile(wasm).await?;
            Ok(Resolved {
                root,
                compile,
                graph: Vec::new(),
                host_modules: Vec::new(),
                label: INLINE_LABEL.into(),
                program: INLINE_PROGRAM.into(),
                module: "inline".into(),
                binary: None,
            })
        }
    }
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
