//! Instantiating a component, with the registered components it imports
//! from, and calling one of its exports under a request's limits.
//!
//! Every call gets a fresh store under the request's limits (the same store
//! and limiter core modules use), with a WASI 0.2 world built from the
//! request: arguments, environment and stdin in, capped stdout and stderr
//! out, no files, sockets or host environment. A component that imports an
//! interface a registered component exports is linked at run time: the
//! registered component is instantiated in the same store first, and each of
//! its functions is defined in the linker as a host function that calls it.

use std::time::Instant;

use serde_json::value::RawValue;
use wasmtime::Store;
use wasmtime::component::{Instance, Linker, Val};

use super::compiled::{CompiledComponent, LinkedComponent};
use super::json::{self, carries, type_name};
use super::world::{ComponentWorld, WorldFunction};
use crate::engine::classify;
use crate::engine::error::{EngineError, chain_text};
use crate::engine::exec::{CallFailure, CallOutcome, ExecStats, WasiResult, micros};
use crate::engine::limits::ExecLimits;
use crate::engine::store::{self, StoreState};
use crate::engine::wasi::{ComponentWasi, WasiConfig};

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
struct Prepared<'w> {
    target: &'w WorldFunction,
    args: Vec<Val>,
}

/// Checks the call against `world` and converts its params, before anything
/// is instantiated: a bad request costs no guest code.
fn prepare<'w>(world: &'w ComponentWorld, call: &ComponentCall<'_>) -> Result<Prepared<'w>, EngineError> {
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
            "`{}` {} takes or returns a {}, which a call over JSON cannot carry (resources, futures and \
             streams live inside one instance)",
            target.name,
            target.signature,
            type_name(ty)
        )));
    }
    let args = match call.params {
        ComponentParams::Json(params) => {
            if params.len() != target.param_types.len() {
                return Err(EngineError::InvalidParams(format!(
                    "`{}` {} takes {} params, got {}",
                    target.name,
                    target.signature,
                    target.param_types.len(),
                    params.len()
                )));
            }
            params
                .iter()
                .zip(&target.param_types)
                .enumerate()
                .map(|(i, (raw, ty))| json::from_json(raw, ty, &format!("params[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::InvalidParams(format!("{e} (`{}` {})", target.name, target.signature)))?
        }
        ComponentParams::Wave(text) => {
            use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
            let source = format!("f({text})");
            let parsed = UntypedFuncCall::parse(&source)
                .map_err(|e| EngineError::InvalidParams(format!("params: not valid WAVE: {e}")))?;
            parsed.to_wasm_params::<Val>(target.param_types.iter()).map_err(|e| {
                EngineError::InvalidParams(format!("params: {e} (`{}` {})", target.name, target.signature))
            })?
        }
    };
    Ok(Prepared { target, args })
}

/// Checks that every import of `root` is provided, by WASI 0.2 or by an
/// interface one of `hosts` exports, naming what is missing.
pub fn check_imports(root: &CompiledComponent, hosts: &[LinkedComponent]) -> Result<(), EngineError> {
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

/// Instantiates `root` (linked to `hosts`, dependencies first) and makes one
/// call, on one fuel and time budget for both.
pub(crate) async fn run(
    engine: &wasmtime::Engine,
    wasi_linker: &Linker<StoreState>,
    root: &CompiledComponent,
    hosts: &[LinkedComponent],
    call: &ComponentCall<'_>,
    wasi: Option<WasiConfig>,
    output_cap: usize,
) -> Result<CallOutcome, CallFailure> {
    let prepared = prepare(root.world(), call)?;
    check_imports(root, hosts)?;
    let limits = call.limits;
    let reports_wasi = wasi.is_some() || root.world().imports_wasi();
    let mut store = store::new_store(engine, &limits, None);
    store.data_mut().component_wasi = Some(Box::new(ComponentWasi::new(wasi.unwrap_or_default(), output_cap)));
    store::arm(&mut store, &limits);

    let started = Instant::now();
    let instance = instantiate(&mut store, wasi_linker, root, hosts).await;
    let mut stats = ExecStats {
        instantiate_us: micros(started.elapsed()),
        ..Default::default()
    };
    let outcome = match instance {
        Ok(instance) => {
            let started = Instant::now();
            let result = call_export(&mut store, instance, &prepared).await;
            stats.call_us = micros(started.elapsed());
            result
        }
        Err(e) => Err(e),
    };
    stats.fuel_consumed = store::fuel_used(&store);
    stats.limits_hit = store.data_mut().take_limits_hit();
    let output = store.data().component_wasi.as_ref().map(|w| w.take_output());
    let output = output.filter(|_| reports_wasi);

    let (results, exit_code) = match outcome {
        Ok(results) => (results, None),
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            // `wasi:cli/exit` ends the program normally with a status.
            Some(exit) if output.is_some() => (Vec::new(), Some(exit.0)),
            _ => {
                return Err(CallFailure {
                    error: classify::runtime_error(e, &limits),
                    stats: Some(stats),
                    memory: Vec::new(),
                    wasi: output,
                });
            }
        },
    };
    let is_command = call.function.is_none();
    let exit_code = exit_code.or_else(|| {
        // A command's `run` returns `result`: `err` is exit status 1, as
        // `wasmtime run` reports it.
        is_command.then(|| match results.first() {
            Some(Val::Result(Err(_))) => 1,
            _ => 0,
        })
    });
    let exited = exit_code.is_some() && results.is_empty();
    let mut shown = Vec::with_capacity(results.len());
    for (val, ty) in results.iter().zip(&prepared.target.result_types) {
        let text = if call.wave_results {
            let wave = val
                .to_wave()
                .map_err(|e| EngineError::Internal(format!("cannot write a result as WAVE: {}", chain_text(&e))))?;
            serde_json::Value::String(wave).to_string()
        } else {
            json::to_json(val, ty)
        };
        shown.push(RawValue::from_string(text).map_err(|e| EngineError::Internal(e.to_string()))?);
    }
    Ok(CallOutcome {
        results: shown,
        result_types: if exited {
            Vec::new()
        } else {
            prepared.target.results.clone()
        },
        result_bytes: None,
        memory: Vec::new(),
        wasi: output.map(|output| WasiResult {
            exit_code: exit_code.unwrap_or(0),
            output,
        }),
        stats,
    })
}

/// Instantiates the hosts, dependencies first, each linked to WASI and the
/// hosts before it, then the root.
async fn instantiate(
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

/// Calls the prepared export of `instance`.
async fn call_export(
    store: &mut Store<StoreState>,
    instance: Instance,
    prepared: &Prepared<'_>,
) -> wasmtime::Result<Vec<Val>> {
    let target = prepared.target;
    let index = match &target.interface {
        Some(interface) => {
            let parent = instance.get_export_index(&mut *store, None, interface);
            parent.and_then(|p| instance.get_export_index(&mut *store, Some(&p), &target.function))
        }
        None => instance.get_export_index(&mut *store, None, &target.function),
    };
    let func = index
        .and_then(|i| instance.get_func(&mut *store, i))
        .ok_or_else(|| wasmtime::Error::msg(format!("export `{}` vanished after instantiation", target.name)))?;
    let mut results = vec![Val::Bool(false); target.result_types.len()];
    func.call_async(&mut *store, &prepared.args, &mut results).await?;
    Ok(results)
}
