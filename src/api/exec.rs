//! `POST /` (run inline code) and `POST /execute` (run a registered module).

use std::time::Instant;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::AppState;
use super::call::{self, Call, Encoding, ExecResponse, MemoryReadBody, MemoryWriteBody, WasiBody};
use super::code::CodeFields;
use super::error::ApiResult;
use super::extract::JsonBody;
use super::metrics::Endpoint;
use crate::engine::link::check_imports;
use crate::engine::{InstanceSpec, LimitOverrides};
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
    function_name: Option<String>,
    #[serde(default)]
    params: Vec<Box<RawValue>>,
    #[serde(default)]
    host_modules: Vec<String>,
    limits: Option<LimitOverrides>,
    #[serde(default)]
    memory_writes: Vec<MemoryWriteBody>,
    #[serde(default)]
    memory_reads: Vec<MemoryReadBody>,
    result_encoding: Option<Encoding>,
    wasi: Option<WasiBody>,
}

/// Body of `POST /execute`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRegistered {
    module_name: String,
    function_name: Option<String>,
    #[serde(default)]
    params: Vec<Box<RawValue>>,
    limits: Option<LimitOverrides>,
    #[serde(default)]
    memory_writes: Vec<MemoryWriteBody>,
    #[serde(default)]
    memory_reads: Vec<MemoryReadBody>,
    result_encoding: Option<Encoding>,
    wasi: Option<WasiBody>,
}

/// `argv[0]` of an inline WASI program.
const INLINE_PROGRAM: &str = "main";

async fn run_inline(State(app): State<AppState>, JsonBody(req): JsonBody<RunInline>) -> ApiResult<Json<ExecResponse>> {
    let _permit = app.exec_permit()?;
    let started = Instant::now();
    let limits = app.engine.default_limits().lowered_by(req.limits.as_ref())?;
    let max_read = app.engine.settings().max_read_bytes;
    let call = Call::new(
        req.function_name,
        req.params,
        req.memory_writes,
        req.memory_reads,
        req.result_encoding,
        max_read,
    )?;
    let wasi = call::wasi_config(req.wasi, INLINE_PROGRAM)?;
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let wasm = code.into_wasm(&app.engine).await?;
    let (root, compiled) = app.engine.compile(wasm).await?;
    let graph = app.registry.link_graph(&req.host_modules).await?;
    check_imports("the module", &root, &Registry::direct_hosts(&graph, &req.host_modules))?;
    let output_cap = app.engine.settings().max_output_bytes;
    let spec = InstanceSpec {
        root,
        root_label: "the module".into(),
        graph,
        limits,
        wasi,
        output_cap,
    };
    let result = app.engine.run(spec, call.spec(limits)).await;
    call.respond(result, Some(compiled), started, (&app.metrics, Endpoint::Inline))
}

async fn run_registered(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RunRegistered>,
) -> ApiResult<Json<ExecResponse>> {
    let _permit = app.exec_permit()?;
    let started = Instant::now();
    let limits = app.engine.default_limits().lowered_by(req.limits.as_ref())?;
    let max_read = app.engine.settings().max_read_bytes;
    let call = Call::new(
        req.function_name,
        req.params,
        req.memory_writes,
        req.memory_reads,
        req.result_encoding,
        max_read,
    )?;
    let wasi = call::wasi_config(req.wasi, &req.module_name)?;
    let (root, compiled, graph) = app.registry.resolve_for_call(&req.module_name).await?;
    let root_label = format!("module `{}`", req.module_name);
    let output_cap = app.engine.settings().max_output_bytes;
    let spec = InstanceSpec {
        root,
        root_label,
        graph,
        limits,
        wasi,
        output_cap,
    };
    let result = app.engine.run(spec, call.spec(limits)).await;
    call.respond(result, Some(compiled), started, (&app.metrics, Endpoint::Registered))
}
