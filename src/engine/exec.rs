//! Running one call: a fresh store under limits, the module graph
//! instantiated into it, one export called with converted params.
//!
//! Guest code runs on the async reactor through wasmtime's async support:
//! every epoch tick the guest yields back to tokio, so a long-running guest
//! shares a worker thread instead of holding it, and no per-call hop to a
//! blocking pool is needed (such a hop halved throughput when measured).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use wasmtime::{Instance, Linker, Store, UpdateDeadline, Val};

use super::compile::CompiledModule;
use super::error::{LimitHit, LimitKind, classify_runtime_error};
use super::limits::{ExecLimits, StoreLimiter};
use super::link::LinkedModule;
use super::values::{json_to_val, signature, type_name, val_to_json};
use super::{EngineError, WasmEngine};

/// Per-store host state: only what limits need. Guests get no host access.
pub struct StoreState {
    limiter: StoreLimiter,
    deadline: Instant,
    timeout_ms: u64,
}

/// One call to run.
pub struct CallRequest<'a> {
    /// The module whose export is called.
    pub root: Arc<CompiledModule>,
    /// How the root is named in messages (`module \`a\`` or `the module`).
    pub root_label: String,
    /// Every registered module the root depends on, directly or not, each
    /// once, dependencies before their dependents.
    pub graph: Vec<LinkedModule>,
    pub function: &'a str,
    pub params: &'a [Box<RawValue>],
    pub limits: ExecLimits,
}

/// What a successful call returns.
#[derive(Debug)]
pub struct CallOutcome {
    /// Each result as JSON text (see `values::val_to_json`).
    pub results: Vec<String>,
    pub result_types: Vec<String>,
    pub stats: ExecStats,
}

/// Measurements of one execution.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecStats {
    /// Fuel used by instantiation (start functions) and the call.
    pub fuel_consumed: u64,
    /// Time to instantiate the module graph, in microseconds.
    pub instantiate_us: u64,
    /// Time spent in the call itself, in microseconds.
    pub call_us: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl WasmEngine {
    /// Runs `request`. On failure the error says which limit, trap, param or
    /// import was at fault; fuel used so far is returned alongside.
    pub async fn call(
        &self,
        request: CallRequest<'_>,
    ) -> Result<CallOutcome, (EngineError, Option<ExecStats>)> {
        let no_stats = |e| (e, None);
        let ty = request
            .root
            .function_type(request.function)
            .ok_or_else(|| {
                let available = request.root.exported_functions();
                no_stats(EngineError::FunctionNotFound(format!(
                    "{} has no exported function `{}`; it exports: {}",
                    request.root_label,
                    request.function,
                    if available.is_empty() {
                        "no functions".to_string()
                    } else {
                        available.join(", ")
                    }
                )))
            })?;
        let params = convert_params(request.function, &ty, request.params).map_err(no_stats)?;

        let mut store = self.new_store(&request.limits);
        let started = Instant::now();
        let instance = instantiate(&mut store, &request).await;
        let instantiated = Instant::now();
        let mut stats = ExecStats {
            instantiate_us: micros(instantiated - started),
            ..Default::default()
        };
        let instance = match instance {
            Ok(instance) => instance,
            Err(e) => {
                stats.fuel_consumed = fuel_used(&store, &request.limits);
                return Err((classify_runtime_error(e, &request.limits), Some(stats)));
            }
        };
        let func = instance
            .get_func(&mut store, request.function)
            .ok_or_else(|| {
                (
                    EngineError::Internal("export vanished after instantiation".into()),
                    None,
                )
            })?;
        let mut results = vec![Val::I32(0); ty.results().len()];
        let outcome = func.call_async(&mut store, &params, &mut results).await;
        stats.call_us = micros(instantiated.elapsed());
        stats.fuel_consumed = fuel_used(&store, &request.limits);
        if let Err(e) = outcome {
            return Err((classify_runtime_error(e, &request.limits), Some(stats)));
        }
        Ok(CallOutcome {
            results: results.iter().map(val_to_json).collect(),
            result_types: ty.results().map(|t| type_name(&t)).collect(),
            stats,
        })
    }

    fn new_store(&self, limits: &ExecLimits) -> Store<StoreState> {
        let state = StoreState {
            limiter: StoreLimiter::new(limits),
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
            timeout_ms: limits.timeout_ms,
        };
        let mut store = Store::new(self.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        // Fuel is enabled engine-wide, so setting it cannot fail.
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if Instant::now() >= state.deadline {
                return Err(wasmtime::Error::new(LimitHit {
                    kind: LimitKind::Time,
                    message: format!(
                        "execution exceeded the time limit of {} ms",
                        state.timeout_ms
                    ),
                }));
            }
            // Let other requests run on this worker thread, then go on.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }
}

/// Fuel used so far. Compiled code keeps its fuel counter in a register and
/// writes it back at calls and returns; when the time limit interrupts a
/// tight loop the last write-back may be old, so after a timeout this can
/// undercount (documented in docs/API.md).
fn fuel_used(store: &Store<StoreState>, limits: &ExecLimits) -> u64 {
    limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0))
}

fn convert_params(
    function: &str,
    ty: &wasmtime::FuncType,
    params: &[Box<RawValue>],
) -> Result<Vec<Val>, EngineError> {
    let expected = ty.params().len();
    if params.len() != expected {
        return Err(EngineError::InvalidParams(format!(
            "`{function}` expects {}; got {} param{}",
            signature(ty),
            params.len(),
            if params.len() == 1 { "" } else { "s" }
        )));
    }
    ty.params()
        .zip(params)
        .enumerate()
        .map(|(i, (param_ty, raw))| {
            json_to_val(raw, &param_ty).map_err(|reason| {
                EngineError::InvalidParams(format!(
                    "param {i} of `{function}` {} must be {}: {reason}",
                    signature(ty),
                    type_name(&param_ty)
                ))
            })
        })
        .collect()
}

/// Instantiates the dependency graph in order, then the root, all in one
/// store, so that a module reached twice (a diamond) exists once and its
/// memory and globals are shared by everyone who imports them.
async fn instantiate(
    store: &mut Store<StoreState>,
    request: &CallRequest<'_>,
) -> wasmtime::Result<Instance> {
    if request.graph.is_empty()
        && let Some(pre) = request.root.pre()
    {
        return pre.instantiate_async(&mut *store).await;
    }
    let mut linker = Linker::new(store.engine());
    for node in &request.graph {
        let instance = match node.compiled.pre() {
            Some(pre) => pre.instantiate_async(&mut *store).await?,
            None => {
                linker
                    .instantiate_async(&mut *store, node.compiled.module())
                    .await?
            }
        };
        linker.instance(&mut *store, &node.name, instance)?;
    }
    linker
        .instantiate_async(&mut *store, request.root.module())
        .await
}
