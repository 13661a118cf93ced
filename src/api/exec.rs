//! `POST /` (run inline code) and `POST /execute` (run a registered module).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::AppState;
use super::code::CodeFields;
use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use crate::engine::link::check_imports;
use crate::engine::{CacheOutcome, CallRequest, CompiledModule, LimitOverrides, LinkedModule};
use crate::registry::Registry;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", post(run_inline))
        .route("/execute", post(run_registered))
}

/// Body of `POST /`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInline {
    wasm_hex: Option<String>,
    wasm_base64: Option<String>,
    wat: Option<String>,
    function_name: String,
    #[serde(default)]
    params: Vec<Box<RawValue>>,
    #[serde(default)]
    host_modules: Vec<String>,
    limits: Option<LimitOverrides>,
}

/// Body of `POST /execute`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRegistered {
    module_name: String,
    function_name: String,
    #[serde(default)]
    params: Vec<Box<RawValue>>,
    limits: Option<LimitOverrides>,
}

/// A successful execution.
#[derive(Serialize)]
pub struct ExecResponse {
    results: Vec<Box<RawValue>>,
    result_types: Vec<String>,
    stats: StatsBody,
}

/// `stats` of a response.
#[derive(Serialize)]
struct StatsBody {
    fuel_consumed: u64,
    /// `cached` or `compiled`.
    compile: &'static str,
    compile_us: u64,
    instantiate_us: u64,
    call_us: u64,
    wall_time_us: u64,
}

async fn run_inline(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RunInline>,
) -> ApiResult<Json<ExecResponse>> {
    let _permit = app.exec_permit()?;
    let started = Instant::now();
    let limits = app
        .engine
        .default_limits()
        .lowered_by(req.limits.as_ref())?;
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let wasm = code.into_wasm(&app.engine).await?;
    let (root, outcome) = app.engine.compile(wasm).await?;
    let graph = app.registry.link_graph(&req.host_modules).await?;
    check_imports(
        "the module",
        &root,
        &Registry::direct_hosts(&graph, &req.host_modules),
    )?;
    let call = Call {
        root,
        outcome,
        graph,
        label: "the module".into(),
        function: &req.function_name,
    };
    call.run(&app, &req.params, limits, started).await
}

async fn run_registered(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RunRegistered>,
) -> ApiResult<Json<ExecResponse>> {
    let _permit = app.exec_permit()?;
    let started = Instant::now();
    let limits = app
        .engine
        .default_limits()
        .lowered_by(req.limits.as_ref())?;
    let record = app.registry.get(&req.module_name)?;
    let (root, outcome) = app.registry.compiled(&req.module_name).await?;
    let graph = app.registry.link_graph(&record.host_modules).await?;
    let label = format!("module `{}`", req.module_name);
    let call = Call {
        root,
        outcome,
        graph,
        label,
        function: &req.function_name,
    };
    call.run(&app, &req.params, limits, started).await
}

/// What both endpoints have resolved before running.
struct Call<'a> {
    root: Arc<CompiledModule>,
    outcome: CacheOutcome,
    graph: Vec<LinkedModule>,
    label: String,
    function: &'a str,
}

impl Call<'_> {
    async fn run(
        self,
        app: &AppState,
        params: &[Box<RawValue>],
        limits: crate::engine::ExecLimits,
        started: Instant,
    ) -> ApiResult<Json<ExecResponse>> {
        let (compile, compile_us) = match self.outcome {
            CacheOutcome::Cached => ("cached", 0),
            CacheOutcome::Compiled(d) => {
                ("compiled", u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            }
        };
        let request = CallRequest {
            root: self.root,
            root_label: self.label,
            graph: self.graph,
            function: self.function,
            params,
            limits,
        };
        let outcome = app
            .engine
            .call(request)
            .await
            .map_err(|(e, stats)| match stats {
                Some(stats) => ApiError::from(e).with_stats(&stats),
                None => ApiError::from(e),
            })?;
        let results = outcome
            .results
            .into_iter()
            .map(RawValue::from_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::internal)?;
        let stats = StatsBody {
            fuel_consumed: outcome.stats.fuel_consumed,
            compile,
            compile_us,
            instantiate_us: outcome.stats.instantiate_us,
            call_us: outcome.stats.call_us,
            wall_time_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        Ok(Json(ExecResponse {
            results,
            result_types: outcome.result_types,
            stats,
        }))
    }
}
