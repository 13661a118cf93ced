//! A component instantiated into a store of its own, under a request's
//! limits: called once (a one-shot request) or many times (a live instance,
//! whose state and resources carry over from call to call).
//!
//! The store is the one core modules use, with the same limiter, fuel and
//! epoch deadline, and a WASI 0.2 world built from the request: arguments,
//! environment and stdin in, capped stdout and stderr out, no files, sockets
//! or host environment.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use wasmtime::Store;
use wasmtime::component::{Instance, Linker, Type, Val};

use super::compiled::{CompiledComponent, LinkedComponent};
use super::json;
use super::resources::Handles;
use super::run::{self, ComponentCall, Prepared, Resources};
use super::world::ComponentWorld;
use crate::engine::classify;
use crate::engine::error::{EngineError, chain_text};
use crate::engine::exec::{CallFailure, CallOutcome, ExecStats, WasiResult, micros};
use crate::engine::limits::ExecLimits;
use crate::engine::store::{self, StoreState};
use crate::engine::wasi::{ComponentWasi, WasiConfig, WasiOutput};

/// What every component store is made from: the engine, the linker with
/// WASI 0.2 in it, the request's WASI world and the output cap.
pub(crate) struct Setup<'a> {
    pub engine: &'a wasmtime::Engine,
    pub wasi_linker: &'a Linker<StoreState>,
    pub wasi: Option<WasiConfig>,
    pub output_cap: usize,
}

/// Instantiates `root` (linked to `hosts`, dependencies first) and makes one
/// call, on one fuel and time budget for both. The call is checked first, so
/// a bad request costs no guest code.
pub(crate) async fn run_once(
    setup: Setup<'_>,
    root: Arc<CompiledComponent>,
    hosts: &[LinkedComponent],
    call: &ComponentCall<'_>,
) -> Result<CallOutcome, CallFailure> {
    // A one-shot call has nowhere to keep a resource: none may cross it.
    let prepared = run::prepare(root.world(), call)?;
    run::check_imports(&root, hosts)?;
    let mut live = ComponentInstance::new(setup, root.clone(), hosts, &call.limits).await?;
    live.call_prepared(prepared, call).await
}

/// A component instance with its store, ready for calls.
pub struct ComponentInstance {
    store: Store<StoreState>,
    instance: Instance,
    root: Arc<CompiledComponent>,
    /// The resources calls have returned, for later calls to pass back.
    handles: Handles,
    /// Whether calls report stdout, stderr and an exit code.
    reports_wasi: bool,
    /// Instantiation's stats, until the first call or
    /// [`Self::take_instantiation_stats`] takes them.
    pending: Option<ExecStats>,
    /// Why the instance may not be entered again: a call trapped (or hit a
    /// limit) inside it, and the component model forbids re-entering an
    /// instance that trapped.
    trapped: Option<String>,
}

impl ComponentInstance {
    /// Instantiates `root`, linked to `hosts`, in a fresh store armed with
    /// `limits` (instantiation runs guest code: start functions).
    pub(crate) async fn new(
        setup: Setup<'_>,
        root: Arc<CompiledComponent>,
        hosts: &[LinkedComponent],
        limits: &ExecLimits,
    ) -> Result<Self, CallFailure> {
        let reports_wasi = setup.wasi.is_some() || root.world().imports_wasi();
        let mut store = store::new_store(setup.engine, limits, None);
        let wasi = ComponentWasi::new(setup.wasi.unwrap_or_default(), setup.output_cap);
        store.data_mut().component_wasi = Some(Box::new(wasi));
        let started = store::arm(&mut store, limits);
        let instance = run::instantiate(&mut store, setup.wasi_linker, &root, hosts).await;
        let stats = ExecStats {
            instantiate_us: micros(started.elapsed()),
            ..Default::default()
        };
        let mut live = match instance {
            Ok(instance) => ComponentInstance {
                store,
                instance,
                root,
                handles: Handles::default(),
                reports_wasi,
                pending: Some(stats),
                trapped: None,
            },
            Err(e) => {
                let mut stats = stats;
                stats.fuel_consumed = store::fuel_used(&store);
                (stats.limits_hit, stats.memory_peak_bytes) = store.data_mut().limit_report();
                let output = store.data().component_wasi.as_ref().map(|w| w.take_output());
                return Err(CallFailure {
                    error: classify::runtime_error(e, limits),
                    stats: Some(stats),
                    memory: Vec::new(),
                    wasi: output.filter(|_| reports_wasi),
                });
            }
        };
        if let Some(stats) = &mut live.pending {
            stats.fuel_consumed = store::fuel_used(&live.store);
        }
        Ok(live)
    }

    /// Its imports and exports.
    pub fn world(&self) -> &ComponentWorld {
        self.root.world()
    }

    /// The fuel and time instantiation took; afterwards calls report only
    /// their own.
    pub fn take_instantiation_stats(&mut self) -> ExecStats {
        let mut stats = self.pending.take().unwrap_or_default();
        (stats.limits_hit, stats.memory_peak_bytes) = self.store.data_mut().limit_report();
        stats
    }

    /// The numbers of the resources it holds for its client.
    pub fn resources(&self) -> Vec<u64> {
        self.handles.numbers()
    }

    /// Calls one export as a request of its own, with a fresh budget.
    pub async fn call(&mut self, call: &ComponentCall<'_>) -> Result<CallOutcome, CallFailure> {
        self.enterable()?;
        let root = self.root.clone();
        let target = run::target(root.world(), call, Resources::Held)?;
        // The instance's own types: its resource types are its own.
        let func = run::export_func(&mut self.store, self.instance, target)
            .map_err(|e| EngineError::Internal(chain_text(&e)))?;
        let types: Vec<Type> = func.ty(&self.store).params().map(|(_, ty)| ty).collect();
        let args = match run::convert(target, &types, call, &mut self.handles) {
            Ok(args) => args,
            Err(e) => {
                self.handles.kept();
                return Err(e.into());
            }
        };
        store::arm(&mut self.store, &call.limits);
        self.call_prepared(Prepared { target, args }, call).await
    }

    /// Drops the resource `number`, running its destructor in the guest
    /// under `limits`.
    pub async fn drop_resource(&mut self, number: u64, limits: &ExecLimits) -> Result<ExecStats, CallFailure> {
        self.enterable()?;
        let Some(resource) = self.handles.take(number) else {
            let held = self.handles.numbers();
            return Err(EngineError::ResourceNotFound(format!(
                "this instance holds no resource {number} (it holds {}); a resource passed as `own` belongs to \
                 the callee after that call",
                if held.is_empty() {
                    "none".to_string()
                } else {
                    held.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                }
            ))
            .into());
        };
        let started = store::arm(&mut self.store, limits);
        let result = resource.resource_drop_async(&mut self.store).await;
        let mut stats = ExecStats {
            call_us: micros(started.elapsed()),
            fuel_consumed: store::fuel_used(&self.store),
            ..Default::default()
        };
        (stats.limits_hit, stats.memory_peak_bytes) = self.store.data_mut().limit_report();
        match result {
            Ok(()) => Ok(stats),
            Err(e) => Err(self.failed(e, limits, stats)),
        }
    }

    /// Refuses a call into an instance that trapped.
    fn enterable(&self) -> Result<(), EngineError> {
        match &self.trapped {
            None => Ok(()),
            Some(why) => Err(EngineError::Trap {
                frames: Vec::new(),
                kind: "cannot_enter_component",
                message: format!(
                    "this component instance stopped in an earlier call ({why}), and the component model does \
                     not let an instance be entered again after a trap: delete it and create another"
                ),
            }),
        }
    }

    /// A failed call or drop: classified, with its stats and output; an
    /// instance the guest trapped in is marked so.
    fn failed(&mut self, e: wasmtime::Error, limits: &ExecLimits, stats: ExecStats) -> CallFailure {
        let error = classify::runtime_error(e, limits);
        if matches!(error, EngineError::Trap { .. } | EngineError::LimitExceeded { .. }) {
            self.trapped = Some(error.to_string());
        }
        CallFailure {
            error,
            stats: Some(stats),
            memory: Vec::new(),
            wasi: self.output(),
        }
    }

    /// What the guest wrote since the last call, when calls report it.
    fn output(&self) -> Option<WasiOutput> {
        let output = self.store.data().component_wasi.as_ref()?.take_output();
        self.reports_wasi.then_some(output)
    }

    /// Makes a call [`run::prepare`] checked, on the budget armed last (by
    /// instantiation, for a one-shot call).
    pub(crate) async fn call_prepared(
        &mut self,
        prepared: Prepared<'_>,
        call: &ComponentCall<'_>,
    ) -> Result<CallOutcome, CallFailure> {
        let limits = call.limits;
        let mut stats = self.pending.take().unwrap_or_default();
        let started = Instant::now();
        let outcome = run::call_export(&mut self.store, self.instance, &prepared).await;
        // Resources given as `own` are the callee's now, whatever it did.
        self.handles.moved();
        stats.call_us = micros(started.elapsed());
        stats.fuel_consumed = store::fuel_used(&self.store);
        (stats.limits_hit, stats.memory_peak_bytes) = self.store.data_mut().limit_report();

        let (results, exit_code) = match outcome {
            Ok(results) => (results, None),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                // `wasi:cli/exit` ends the program normally with a status.
                Some(exit) if self.reports_wasi => (Vec::new(), Some(exit.0)),
                _ => return Err(self.failed(e, &limits, stats)),
            },
        };
        let output = self.output();
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
                json::to_json(val, ty, &mut self.handles)
            };
            shown.push(RawValue::from_string(text).map_err(|e| EngineError::Internal(e.to_string()))?);
        }
        Ok(CallOutcome {
            results: shown,
            result_types: if exited {
                Vec::new()
            } else {
                prepared.target.results.iter().cloned().map(Cow::Owned).collect()
            },
            result_bytes: None,
            memory: Vec::new(),
            wasi: output.map(|output| WasiResult {
                exit_code: exit_code.unwrap_or(0),
                output,
            }),
            stats,
            ended: None,
        })
    }
}
