//! The steps of a component call: checking a call against the world and
//! converting its params, checking imports, instantiating with the
//! registered components it imports from, and calling one export.
//! [`super::instance`] puts them together, for one call or many.
//!
//! A component that imports an interface a registered component exports is
//! linked at run time: the registered component is instantiated in the same
//! store first, and each of its functions is defined in the linker as a host
//! function that calls it.

use serde_json::value::RawValue;
use wasmtime::Store;
use wasmtime::component::{Func, Instance, Linker, Type, Val};

use super::compiled::{CompiledComponent, LinkedComponent};
use super::json::{self, carries, holds_resources, type_name};
use super::resources::Handles;
use super::world::{ComponentWorld, WorldFunction};
use crate::engine::error::EngineError;
use crate::engine::limits::ExecLimits;
use crate::engine::store::StoreState;

/// How a request gives a component call's params.
#[derive(Debug, Clone, Copy)]
pub enum ComponentParams<'a> {
    /// One JSON value per param, converted by its WIT type.
    Json(&'a [Box<RawValue>]),
    /// The params as WAVE text, as between the parentheses of
    /// `wasmtime run --invoke 'f(1, "x")'`.
    Wave(&'a str),
}

/// One call of a component export.
#[derive(Debug, Clone, Copy)]
pub struct ComponentCall<'a> {
    /// The export (see [`ComponentWorld::find`]); `None` runs a WASI
    /// command's `wasi:cli/run`.
    pub function: Option<&'a str>,
    pub params: ComponentParams<'a>,
    /// Give each result as WAVE text instead of JSON.
    pub wave_results: bool,
    pub limits: ExecLimits,
}

/// The export a call names, and its params converted.
pub(crate) struct Prepared<'w> {
    pub target: &'w WorldFunction,
    pub args: Vec<Val>,
}

/// Whether a call may pass and return resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resources {
    /// A live instance's call: its resources are kept between calls.
    Held,
    /// A one-shot call: no store outlives it to keep one in.
    Refused,
}

/// Checks a one-shot call against `world` and converts its params by the
/// world's types (it carries no resources).
pub(crate) fn prepare<'w>(world: &'w ComponentWorld, call: &ComponentCall<'_>) -> Result<Prepared<'w>, EngineError> {
    let target = target(world, call, Resources::Refused)?;
    let args = convert(target, &target.param_types, call, &mut Handles::default())?;
    Ok(Prepared { target, args })
}

/// The export `call` names in `world`, if a call over JSON can carry its
/// params and results (resources only when `resources` says so).
pub(crate) fn target<'w>(
    world: &'w ComponentWorld,
    call: &ComponentCall<'_>,
    resources: Resources,
) -> Result<&'w WorldFunction, EngineError> {
    let target = match call.function {
        Some(name) => world.find(name)?,
        None => world.command().ok_or_else(|| {
            EngineError::FunctionNotFound(format!(
                "no function_name was given and the component is not a WASI command (it does not export \
                 `wasi:cli/run`); it exports {}",
                world.listing()
            ))
        })?,
    };
    let unsupported = target
        .param_types
        .iter()
        .chain(&target.result_types)
        .find(|t| !carries(t));
    if let Some(ty) = unsupported {
        return Err(EngineError::InvalidParams(format!(
            "`{}` {} takes or returns a {}, which a call over JSON cannot carry (futures and streams need a \
             call that stays open)",
            target.name,
            target.signature,
            type_name(ty)
        )));
    }
    let with_resources = target
        .param_types
        .iter()
        .chain(&target.result_types)
        .any(holds_resources);
    if with_resources && resources == Resources::Refused {
        return Err(EngineError::InvalidParams(format!(
            "`{}` {} takes or returns a resource, which lives in the instance that made it: create a live \
             instance (POST /instances) and call it there, where resources are kept between calls as \
             {{\"resource\": N}}",
            target.name, target.signature
        )));
    }
    if with_resources && call.wave_results {
        return Err(EngineError::InvalidParams(format!(
            "`{}` {} takes or returns a resource, which WAVE cannot write; ask for JSON results",
            target.name, target.signature
        )));
    }
    Ok(target)
}

/// Converts `call`'s params to values of `types`: the world's types for a
/// one-shot call, the live instance's own for a live one (a resource type
/// is the instance's: the same resource in another instance is another
/// type). Resources come from `handles`.
pub(crate) fn convert(
    target: &WorldFunction,
    types: &[Type],
    call: &ComponentCall<'_>,
    handles: &mut Handles,
) -> Result<Vec<Val>, EngineError> {
    Ok(match call.params {
        ComponentParams::Json(params) => {
            if params.len() != types.len() {
                return Err(EngineError::InvalidParams(format!(
                    "`{}` {} takes {} params, got {}",
                    target.name,
                    target.signature,
                    types.len(),
                    params.len()
                )));
            }
            params
                .iter()
                .zip(types)
                .enumerate()
                .map(|(i, (raw, ty))| json::from_json(raw, ty, &format!("params[{i}]"), handles))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::InvalidParams(format!("{e} (`{}` {})", target.name, target.signature)))?
        }
        ComponentParams::Wave(text) => {
            use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
            let source = format!("f({text})");
            let parsed = UntypedFuncCall::parse(&source)
                .map_err(|e| EngineError::InvalidParams(format!("params: not valid WAVE: {e}")))?;
            parsed.to_wasm_params::<Val>(types.iter()).map_err(|e| {
                EngineError::InvalidParams(format!("params: {e} (`{}` {})", target.name, target.signature))
            })?
        }
    })
}

/// Checks that every import of `root` is provided, by WASI 0.2 or by an
/// interface one of `hosts` exports, naming what is missing.
pub fn check_imports(root: &CompiledComponent, hosts: &[LinkedComponent]) -> Result<(), EngineError> {
    if let Some(gap) = root.wasi_gap() {
        return Err(EngineError::Link(format!(
            "the component imports WASI interfaces this server does not provide (it has WASI 0.2's cli, \
             clocks, filesystem, io, random and sockets, with no host access): {gap}"
        )));
    }
    let missing: Vec<String> = root
        .world()
        .imports
        .iter()
        .filter(|i| !i.is_wasi())
        .filter(|i| !hosts.iter().any(|h| exports_interface(h, &i.name)))
        .map(|i| format!("`{}` ({})", i.name, i.kind))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let offered = if hosts.is_empty() {
        "no registered components were given in host_modules".to_string()
    } else {
        let names: Vec<String> = hosts.iter().map(|h| format!("`{}`", h.name)).collect();
        format!("host_modules {} do not export it", names.join(", "))
    };
    Err(EngineError::Link(format!(
        "the component imports {}, which WASI 0.2 does not provide and {offered}",
        missing.join(", ")
    )))
}

fn exports_interface(host: &LinkedComponent, name: &str) -> bool {
    host.compiled
        .world()
        .exports
        .iter()
        .any(|f| f.interface.as_deref() == Some(name))
}

/// Instantiates the hosts, dependencies first, each linked to WASI and the
/// hosts before it, then the root.
pub(crate) async fn instantiate(
    store: &mut Store<StoreState>,
    wasi_linker: &Linker<StoreState>,
    root: &CompiledComponent,
    hosts: &[LinkedComponent],
) -> wasmtime::Result<Instance> {
    if hosts.is_empty()
        && let Some(pre) = root.pre()
    {
        return pre.instantiate_async(&mut *store).await;
    }
    let mut linker = wasi_linker.clone();
    for host in hosts {
        let instance = linker.instantiate_async(&mut *store, host.compiled.component()).await?;
        define_exports(store, &mut linker, instance, &host.compiled)?;
    }
    linker.instantiate_async(&mut *store, root.component()).await
}

/// Defines every function `instance` exports from its interfaces in
/// `linker`, under the interface's name, as a host function that calls it.
fn define_exports(
    store: &mut Store<StoreState>,
    linker: &mut Linker<StoreState>,
    instance: Instance,
    compiled: &CompiledComponent,
) -> wasmtime::Result<()> {
    // A later registered component's interface shadows an earlier one's.
    linker.allow_shadowing(true);
    let mut interfaces: Vec<&str> = compiled
        .world()
        .exports
        .iter()
        .filter_map(|f| f.interface.as_deref())
        .collect();
    interfaces.dedup();
    for interface in interfaces {
        let mut defined = linker.instance(interface)?;
        let Some(parent) = instance.get_export_index(&mut *store, None, interface) else {
            continue;
        };
        for f in compiled
            .world()
            .exports
            .iter()
            .filter(|f| f.interface.as_deref() == Some(interface))
        {
            let func = instance
                .get_export_index(&mut *store, Some(&parent), &f.function)
                .and_then(|index| instance.get_func(&mut *store, index))
                .ok_or_else(|| wasmtime::Error::msg(format!("export `{}` vanished", f.name)))?;
            defined.func_new_async(&f.function, move |mut store, _ty, params, results| {
                Box::new(async move { func.call_async(&mut store, params, results).await })
            })?;
        }
    }
    Ok(())
}

/// The function `target` names in `instance`.
pub(crate) fn export_func(
    store: &mut Store<StoreState>,
    instance: Instance,
    target: &WorldFunction,
) -> wasmtime::Result<Func> {
    let index = match &target.interface {
        Some(interface) => {
            let parent = instance.get_export_index(&mut *store, None, interface);
            parent.and_then(|p| instance.get_export_index(&mut *store, Some(&p), &target.function))
        }
        None => instance.get_export_index(&mut *store, None, &target.function),
    };
    index
        .and_then(|i| instance.get_func(&mut *store, i))
        .ok_or_else(|| wasmtime::Error::msg(format!("export `{}` vanished after instantiation", target.name)))
}

/// Calls the prepared export of `instance`.
pub(crate) async fn call_export(
    store: &mut Store<StoreState>,
    instance: Instance,
    prepared: &Prepared<'_>,
) -> wasmtime::Result<Vec<Val>> {
    let func = export_func(store, instance, prepared.target)?;
    let mut results = vec![Val::Bool(false); prepared.target.result_types.len()];
    func.call_async(&mut *store, &prepared.args, &mut results).await?;
    Ok(results)
}
