//! `POST /` (run inline code) and `POST /execute` (run a registered module).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::Method;
use serde::Deserialize;
use utoipa::ToSchema;

use super::call::{
    self, Call, Encoding, ExecResponse, MemoryReadBody, MemoryWriteBody, ModulesRan, Ran, ResultFormat, WasiBody,
};
use super::checks::{Expected, RunsBody, Spread};
use super::client::ClientId;
use super::code::CodeFields;
use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use super::metrics::Endpoint;
use super::responses::{BodyErrors, ErrorBody, GuardedErrors, RunErrors};
use super::routes::Routes;
use super::state::AppState;
use crate::engine::{
    CacheOutcome, Code, CodeLabel, CompiledModule, ExecLimits, InlineWasm, KeptInstance, LimitOverrides, Now,
    Sha256Digest, WasiConfig, encode_hex, is_component,
};
use crate::registry::{Interpreted, LinkGraph, ResolvedComponent, Runnable};
use crate::resolve::{INLINE_LABEL, Resolved, Source, label, resolve, resolve_cached_inline, resolve_component};

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::POST, "/", run_inline)
        .add(Method::POST, "/execute", run_registered)
}

/// Body of `POST /`: inline code (exactly one of `wasm_hex`, `wasm_base64`,
/// `wat`) and the call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"wat": "(module (func (export \"double\") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))", "function_name": "double", "params": [2]}))]
pub struct RunInline {
    /// The module binary as hex (whitespace ignored).
    wasm_hex: Option<String>,
    /// The module binary as standard base64.
    wasm_base64: Option<String>,
    /// The module as WebAssembly text, compiled on the server.
    wat: Option<String>,
    /// The export to call; omit to run a WASI command's `_start`.
    function_name: Option<String>,
    /// Params in the function's order, typed by its signature: numbers or
    /// strings (`"NaN"`, `"-0"`, `"0x1p-3"`, exact i64 digits), or for a
    /// bytes param `{"utf8"|"hex"|"base64": …}`. For a component: JSON by
    /// its WIT types, or one string of WAVE text.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    params: super::call::Params,
    /// `wave`: a component's results as WAVE text instead of JSON.
    result_format: Option<ResultFormat>,
    /// Registered modules the code may import from (by module name).
    #[serde(default)]
    host_modules: Vec<String>,
    /// Lower the server's limits for this call.
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_writes: Vec<MemoryWriteBody>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_reads: Vec<MemoryReadBody>,
    result_encoding: Option<Encoding>,
    // `wasi` and `expected` are boxed: rarely sent, large, and a body is
    // moved whole on its way to running.
    #[serde(default, deserialize_with = "super::extract::object")]
    wasi: Option<Box<WasiBody>>,
    /// What the call should do; the response then says whether it did
    /// (`passed`, `diff`).
    #[serde(default, deserialize_with = "super::extract::object")]
    expected: Option<Box<Expected>>,
    /// Run the call this many times, each on a fresh instance, and report
    /// the runs' time and fuel (`runs` in the response).
    runs: Option<u32>,
}

/// Body of `POST /execute`: a registered module and the call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"module_name": "utils", "function_name": "double", "params": [21]}))]
pub struct RunRegistered {
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
    module_name: String,
    /// The export to call; omit to run a WASI command's `_start`.
    function_name: Option<String>,
    /// Params in the function's order, typed by its signature: numbers or
    /// strings (`"NaN"`, `"-0"`, `"0x1p-3"`, exact i64 digits), or for a
    /// bytes param `{"utf8"|"hex"|"base64": …}`. For a component: JSON by
    /// its WIT types, or one string of WAVE text.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    params: super::call::Params,
    /// `wave`: a component's results as WAVE text instead of JSON.
    result_format: Option<ResultFormat>,
    /// Lower the server's limits for this call.
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_writes: Vec<MemoryWriteBody>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_reads: Vec<MemoryReadBody>,
    result_encoding: Option<Encoding>,
    // `wasi` and `expected` are boxed: rarely sent, large, and a body is
    // moved whole on its way to running.
    #[serde(default, deserialize_with = "super::extract::object")]
    wasi: Option<Box<WasiBody>>,
    /// What the call should do; the response then says whether it did
    /// (`passed`, `diff`).
    #[serde(default, deserialize_with = "super::extract::object")]
    expected: Option<Box<Expected>>,
    /// Run the call this many times, each on a fresh instance, and report
    /// the runs' time and fuel (`runs` in the response).
    runs: Option<u32>,
}

#[utoipa::path(post, path = "/", tag = "execute", operation_id = "run_inline",
    request_body = RunInline,
    responses(
        (status = 200, description = "The call's typed results, stats, memory reads and WASI output", body = ExecResponse),
        (status = 404, description = "function_not_found: no such exported function", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn run_inline(
    State(app): State<AppState>,
    client: ClientId,
    JsonBody(req): JsonBody<RunInline>,
) -> ApiResult<ExecResponse> {
    let _permit = app.exec_permit(&client).await?;
    let mut ready = req
        .ready(&app, Instant::now(), None, app.engine.default_limits())
        .await?;
    match run_now(&app, &mut ready) {
        Some(answer) => answer,
        None => Box::pin(run(&app, ready, None)).await,
    }
}

/// A `POST /` or `/execute` call checked and ready to run: its code and
/// the rest ([`Checked`]).
pub(super) struct Ready {
    source: Source,
    checked: Checked,
    runs: Option<u32>,
    /// When the call began, for `stats.wall_time_us`.
    started: Instant,
    /// What [`run_now`] found out before it left the call to [`run`].
    found: Found,
}

/// What [`run_now`] found out of a call it could not make, so that
/// [`run`] need not find it out again.
#[derive(Default)]
struct Found {
    /// Inline code's lookup in the compile cache, by its SHA-256
    /// ([`crate::engine::WasmEngine::cached_inline`]).
    inline: Option<(Option<Arc<CompiledModule>>, Option<Sha256Digest>)>,
    /// A registered module found compiled, linking nothing
    /// ([`crate::registry::Registry::with_compiled_now`]).
    registered: Option<Arc<CompiledModule>>,
    /// When the call's budget was armed, if it began to run: run again, it
    /// keeps its time limit from then.
    armed_at: Option<Instant>,
}

/// What a call is, besides its code: where it came in, its limits, the call
/// and its WASI world. Runs borrow it, so that repeating a call, or a
/// batch's call running on what it resolved, copies none of it.
struct Checked {
    endpoint: Endpoint,
    limits: ExecLimits,
    call: Call,
    wasi: Option<WasiConfig>,
}

impl Ready {
    /// The call, with its WASI world built from `wasi` (the program named
    /// after `source`), the last check before it runs.
    fn new(
        endpoint: Endpoint,
        source: Source,
        limits: ExecLimits,
        call: Call,
        wasi: Option<Box<WasiBody>>,
        runs: Option<u32>,
        started: Instant,
    ) -> ApiResult<Ready> {
        let wasi = call::wasi_config(wasi.map(|w| *w), source.program())?;
        Ok(Ready {
            source,
            checked: Checked {
                endpoint,
                limits,
                call,
                wasi,
            },
            runs,
            started,
            found: Found::default(),
        })
    }
}

impl RunInline {
    /// This call ready to run: for its own request, in a batch (whose
    /// `deadline` caps its time limit) or in a job (whose `ceiling` is
    /// higher than a request's). `started` is when it began.
    pub(super) async fn ready(
        self,
        app: &AppState,
        started: Instant,
        deadline: Option<Instant>,
        ceiling: ExecLimits,
    ) -> ApiResult<Ready> {
        let req = self;
        let limits = within(ceiling.lowered_by(req.limits.as_ref())?, deadline, started);
        let call = Call::new(
            req.function_name,
            req.params,
            req.memory_writes,
            req.memory_reads,
            req.result_encoding,
            app.engine.settings().max_read_bytes,
        )?
        .with_result_format(req.result_format)
        .with_expected(req.expected);
        let code = CodeFields {
            wasm_hex: req.wasm_hex,
            wasm_base64: req.wasm_base64,
            wat: req.wat,
        };
        let source = Source::Inline {
            wasm: code.into_wasm(&app.engine).await?,
            host_modules: req.host_modules,
        };
        Ready::new(Endpoint::Inline, source, limits, call, req.wasi, req.runs, started)
    }
}

/// `limits` with the time limit cut to what is left before `deadline`, as
/// of `now`.
pub(super) fn within(mut limits: ExecLimits, deadline: Option<Instant>, now: Instant) -> ExecLimits {
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(now);
        limits.timeout_ms = limits.timeout_ms.min(left.as_millis() as u64).max(1);
    }
    limits
}

#[utoipa::path(post, path = "/execute", tag = "execute", operation_id = "run_registered",
    request_body = RunRegistered,
    responses(
        (status = 200, description = "The call's typed results, stats, memory reads and WASI output", body = ExecResponse),
        (status = 404, description = "module_not_found or function_not_found", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn run_registered(
    State(app): State<AppState>,
    client: ClientId,
    JsonBody(req): JsonBody<RunRegistered>,
) -> ApiResult<ExecResponse> {
    let _permit = app.exec_permit(&client).await?;
    let mut ready = req.ready(&app, Instant::now(), None, app.engine.default_limits())?;
    match run_now(&app, &mut ready) {
        Some(answer) => answer,
        None => Box::pin(run(&app, ready, None)).await,
    }
}

impl RunRegistered {
    /// This call ready to run (see [`RunInline::ready`]).
    pub(super) fn ready(
        self,
        app: &AppState,
        started: Instant,
        deadline: Option<Instant>,
        ceiling: ExecLimits,
    ) -> ApiResult<Ready> {
        let req = self;
        let limits = within(ceiling.lowered_by(req.limits.as_ref())?, deadline, started);
        let call = Call::new(
            req.function_name,
            req.params,
            req.memory_writes,
            req.memory_reads,
            req.result_encoding,
            app.engine.settings().max_read_bytes,
        )?
        .with_result_format(req.result_format)
        .with_expected(req.expected);
        let source = Source::Registered(req.module_name);
        Ready::new(Endpoint::Registered, source, limits, call, req.wasi, req.runs, started)
    }
}

/// How `stats.modules` names code sent with the request.
const INLINE_NAME: &str = "inline";

/// Runs a call once, or `runs` times (see [`run_repeated`]); the caller
/// holds the execution slot. In a batch, what is resolved goes into
/// `seen`, and a call whose code is there already runs on it
/// ([`Resolutions::plan`]) instead of coming here.
pub(super) async fn run(app: &AppState, ready: Ready, seen: Option<&mut Resolutions>) -> ApiResult<ExecResponse> {
    let Ready {
        source,
        checked,
        runs,
        started,
        found,
    } = ready;
    match runs {
        None => run_one_shot(app, source, &checked, started, found, seen).await,
        // Boxed, as a rarer path (see `run_one_shot`).
        Some(runs) => Box::pin(run_repeated(app, source, &checked, runs)).await,
    }
}

/// [`run`] without awaiting, for the common call that needs nothing
/// else: a single call, with no WASI world, of one module that is compiled
/// in memory and links nothing (see [`crate::engine::WasmEngine::run_now`]).
/// Awaiting nothing, it builds no future: a request's future holds every
/// future it awaits, and is copied whole into the box the router puts it
/// in. `None` when the call cannot run so; `ready` then carries what was
/// found out on the way, for [`run`].
fn run_now(app: &AppState, ready: &mut Ready) -> Option<ApiResult<ExecResponse>> {
    if ready.runs.is_some() || ready.checked.wasi.is_some() {
        return None;
    }
    // The module is borrowed for the call, not counted (see
    // `engine::hot`); only a call that goes on to `run` clones its `Arc`
    // into `found`.
    let Ready {
        source,
        checked,
        found,
        started,
        ..
    } = ready;
    match source {
        Source::Registered(name) => app.registry.with_compiled_now(name, |root| {
            call_now(app, root, Some(name), None, checked, found, *started)
        })?,
        Source::Inline { wasm, host_modules } => {
            match app
                .engine
                .with_cached_inline(wasm, |root, digest| match host_modules.is_empty() {
                    true => call_now(app, root, None, Some(digest), checked, found, *started),
                    false => call_linked_now(app, root, Some(digest), host_modules, checked, found, *started),
                }) {
                Ok(answer) => answer,
                Err(digest) => {
                    found.inline = Some((None, digest));
                    None
                }
            }
        }
        _ => None,
    }
}

/// [`run_now`] on the module it found, `root` (registered as `name`, or
/// inline code with this `digest`).
fn call_now(
    app: &AppState,
    root: &Arc<CompiledModule>,
    name: Option<&str>,
    digest: Option<Sha256Digest>,
    checked: &Checked,
    found: &mut Found,
    started: Instant,
) -> Option<ApiResult<ExecResponse>> {
    let Checked {
        endpoint,
        limits,
        call,
        wasi: _,
    } = checked;
    let spec = match call.spec(*limits) {
        Ok(spec) => spec,
        Err(error) => return Some(Err(error)),
    };
    let result = match app.engine.run_now(root, &CodeLabel(name), &spec) {
        Now::Done(result) => result,
        Now::Later(armed_at) => {
            found.armed_at = armed_at;
            match name {
                Some(_) => found.registered = Some(Arc::clone(root)),
                None => found.inline = Some((Some(Arc::clone(root)), digest)),
            }
            return None;
        }
    };
    let ran = Ran {
        compile: Some(CacheOutcome::Cached),
        modules: ModulesRan::of(name.unwrap_or(INLINE_NAME), root.sha256_hex(), []),
    };
    Some(call.respond(result, ran, started, &app.metrics, *endpoint))
}

/// [`run_now`] of inline code `root` (with this `digest`) linked to the
/// registered `hosts`: made without awaiting when the graph is in the
/// registry's index and compiled, the imports check (remembered per
/// thread, `engine::link`) passes, and the engine can make the call so
/// ([`crate::engine::WasmEngine::run_linked_now`]). Anything else, a
/// failed import check included, goes on to [`run`], which resolves the
/// code the usual way and answers its errors.
fn call_linked_now(
    app: &AppState,
    root: &Arc<CompiledModule>,
    digest: Option<Sha256Digest>,
    hosts: &[String],
    checked: &Checked,
    found: &mut Found,
    started: Instant,
) -> Option<ApiResult<ExecResponse>> {
    let answer = app
        .registry
        .with_link_graph_now(hosts, |graph| linked_now(app, root, graph, checked));
    let (result, modules) = match answer.flatten() {
        Some(Ok((Now::Done(result), modules))) => (result, modules),
        Some(Err(error)) => return Some(Err(error)),
        later => {
            if let Some(Ok((Now::Later(armed_at), _))) = later {
                found.armed_at = armed_at;
            }
            found.inline = Some((Some(Arc::clone(root)), digest));
            return None;
        }
    };
    let ran = Ran {
        compile: Some(CacheOutcome::Cached),
        modules,
    };
    Some(
        checked
            .call
            .respond(result, ran, started, &app.metrics, checked.endpoint),
    )
}

/// The engine's answer for [`call_linked_now`] on `graph`, with the
/// modules it ran; `None` when the imports check needs [`run`].
fn linked_now(
    app: &AppState,
    root: &CompiledModule,
    graph: &LinkGraph,
    checked: &Checked,
) -> Option<ApiResult<(Now, ModulesRan)>> {
    app.engine.check_imports(&label(None), root, &graph.direct).ok()?;
    let spec = match checked.call.spec(checked.limits) {
        Ok(spec) => spec,
        Err(error) => return Some(Err(error)),
    };
    let now = app.engine.run_linked_now(root, &graph.modules, &CodeLabel(None), &spec);
    let modules = ModulesRan::of(
        INLINE_NAME,
        root.sha256_hex(),
        graph.modules.iter().map(|h| (h.name.as_str(), h.compiled.sha256_hex())),
    );
    Some(Ok((now, modules)))
}

/// Runs the checked call `runs` times, each on a fresh instance of the
/// code, and answers the last run's response with the runs' time and fuel
/// summarized; the first failure ends the series and is the answer.
async fn run_repeated(app: &AppState, source: Source, checked: &Checked, runs: u32) -> ApiResult<ExecResponse> {
    let max = app.bounds.max_runs;
    if !(1..=max).contains(&runs) {
        return Err(ApiError::invalid_request(format!(
            "runs is 1 to {max} (--max-runs); got {runs}"
        )));
    }
    let runs = runs as usize;
    let (mut walls, mut fuels) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut last = None;
    for done in 0..runs {
        match run_one_shot(app, source.clone(), checked, Instant::now(), Found::default(), None).await {
            Ok(response) => {
                walls.push(response.stats.wall_time_us);
                fuels.push(response.stats.fuel_consumed);
                last = Some(response);
            }
            Err(error) => return Err(error.with("runs_completed", done)),
        }
    }
    let mut response = last.ok_or_else(|| ApiError::internal("no run was made"))?;
    response.runs = Some(RunsBody {
        count: runs,
        wall_time_us: Spread::of(walls),
        fuel_consumed: Spread::of(fuels),
    });
    Ok(response)
}

/// What a batch has resolved of the registered modules it calls, so that
/// later calls of a module skip the registry and may share a stateless
/// instance ([`crate::engine::WasmEngine::run`]). A batch resolves
/// each module once, at its first call that runs compiled code; a module
/// registered anew meanwhile is seen by the next batch.
#[derive(Default)]
pub(super) struct Resolutions {
    /// Hashed with foldhash (seeded per process): every call of a batch
    /// looks its module up here.
    plans: HashMap<String, Plan, foldhash::fast::RandomState>,
}

impl Resolutions {
    /// What an earlier call resolved of `ready`'s code, when it may run
    /// there: a registered module's single call (a series, `runs`, gets
    /// fresh instances by definition and takes the usual path).
    pub(super) fn plan(&mut self, ready: &Ready) -> Option<&mut Plan> {
        match (&ready.source, ready.runs) {
            (Source::Registered(name), None) => self.plans.get_mut(name),
            _ => None,
        }
    }
}

/// A registered module as a batch resolved it.
pub(super) struct Plan {
    code: Code,
    modules: ModulesRan,
    kept: KeptInstance,
}

impl Plan {
    /// Runs the call `ready` on the resolved code, as [`run`] would. Not
    /// an async fn: it hands back [`Plan::run`]'s future, so that a batch's
    /// call does not nest (and copy) one more future.
    pub(super) fn run_ready<'a>(
        &'a mut self,
        app: &'a AppState,
        ready: &'a Ready,
    ) -> impl Future<Output = ApiResult<ExecResponse>> + 'a {
        self.run(
            app,
            CacheOutcome::Cached,
            &ready.checked,
            ready.started,
            Some(ready.started),
        )
    }

    /// Runs `checked` on the resolved code, as [`run_one_shot`] would.
    /// `armed_at` is a clock read made just before (a batch's loop, for
    /// its later calls), from which a reused instance's budget may start;
    /// not `started` in general, which may be before a compile.
    async fn run(
        &mut self,
        app: &AppState,
        compile: CacheOutcome,
        checked: &Checked,
        started: Instant,
        armed_at: Option<Instant>,
    ) -> ApiResult<ExecResponse> {
        let Checked {
            endpoint,
            limits,
            call,
            wasi,
        } = checked;
        let mut spec = call.spec(*limits)?;
        spec.armed_at = armed_at;
        let result = app
            .engine
            .run(&self.code, *limits, wasi.as_ref(), spec, &mut self.kept)
            .await;
        let ran = Ran {
            compile: Some(compile),
            modules: self.modules.clone(),
        };
        call.respond(result, ran, started, &app.metrics, *endpoint)
    }
}

/// The part `POST /` and `/execute` share: resolve the code, run the call
/// on one budget, respond. In a batch, what is resolved goes into `seen`.
/// (The common call has run without this, in [`run_now`].)
async fn run_one_shot(
    app: &AppState,
    source: Source,
    checked: &Checked,
    started: Instant,
    found: Found,
    seen: Option<&mut Resolutions>,
) -> ApiResult<ExecResponse> {
    // The rarer paths' futures are boxed: each is large, and inline they
    // would make every call's future as large as the largest (and copied
    // as often as it is moved).
    let resolved = match source {
        // A registered module `run_now` found compiled, linking nothing
        // (the cache hit counted once, there).
        Source::Registered(name) if let Some(root) = found.registered => Resolved {
            root,
            compile: CacheOutcome::Cached,
            graph: Vec::new(),
            host_modules: Vec::new(),
            name: Some(name),
        },
        // Another registered module: where it runs is decided from one lookup.
        Source::Registered(name) => match Box::pin(app.registry.runnable(&name)).await? {
            Runnable::Compiled { root, compile, graph } => Resolved {
                root,
                compile,
                graph,
                host_modules: Vec::new(),
                name: Some(name),
            },
            Runnable::Component(component) => {
                return Box::pin(run_component(app, &name, component, checked, started)).await;
            }
            Runnable::Interpreted(it) => {
                if let Some(answer) = Box::pin(run_registered_interpreted(app, &name, it, checked, started)).await? {
                    return Ok(answer);
                }
                Box::pin(resolve(&app.engine, &app.registry, Source::Registered(name))).await?
            }
        },
        // Inline code: hashed and looked up in the compile cache once.
        Source::Inline { wasm, host_modules } => {
            match found.inline.unwrap_or_else(|| app.engine.cached_inline(&wasm)) {
                (Some(root), _) => {
                    Box::pin(resolve_cached_inline(&app.engine, &app.registry, root, host_modules)).await?
                }
                (None, sha) => {
                    let source = Source::Inline { wasm, host_modules };
                    if let Some(answer) = Box::pin(run_inline_elsewhere(app, &source, sha, checked, started)).await? {
                        return Ok(answer);
                    }
                    Box::pin(resolve(&app.engine, &app.registry, source)).await?
                }
            }
        }
        source => {
            if let Some(answer) = Box::pin(run_inline_elsewhere(app, &source, None, checked, started)).await? {
                return Ok(answer);
            }
            Box::pin(resolve(&app.engine, &app.registry, source)).await?
        }
    };
    let modules = ModulesRan::of(
        resolved.module(),
        resolved.root.sha256_hex(),
        resolved
            .graph
            .iter()
            .map(|h| (h.name.as_str(), h.compiled.sha256_hex())),
    );
    let mut plan = Plan {
        code: Code {
            root_label: resolved.label(),
            root: resolved.root,
            graph: resolved.graph,
        },
        modules,
        kept: KeptInstance::default(),
    };
    // Boxed: the compiled call's future is some 1,600 bytes, and inline it
    // would be copied into the box of every call that comes this way (a
    // never-seen module's included, which runs on the interpreter).
    let answer = Box::pin(plan.run(app, resolved.compile, checked, started, found.armed_at)).await;
    if let (Some(seen), Some(name)) = (seen, resolved.name) {
        seen.plans.insert(name, plan);
    }
    answer
}

/// Runs `call` where inline code is a component or runs on the
/// interpreter; `None` when it is a core module to run compiled. `sha` is
/// the code's SHA-256 if known.
async fn run_inline_elsewhere(
    app: &AppState,
    source: &Source,
    sha: Option<Sha256Digest>,
    checked: &Checked,
    started: Instant,
) -> ApiResult<Option<ExecResponse>> {
    // Components' futures are boxed, as the rarer path: inline, they would
    // make this future, boxed for every never-seen module, some 3 KB.
    let maybe_component = match source {
        Source::Inline { wasm, .. } => is_component(wasm),
        _ => true,
    };
    if maybe_component && let Some(component) = Box::pin(resolve_component(&app.engine, &app.registry, source)).await? {
        return Box::pin(run_component(app, INLINE_NAME, component, checked, started))
            .await
            .map(Some);
    }
    let Source::Inline { wasm, host_modules } = source else {
        return Ok(None);
    };
    let Checked {
        endpoint,
        limits,
        call,
        wasi,
    } = checked;
    let spec = call.spec(*limits)?;
    let graph = app.registry.interpreted_graph(host_modules);
    let interpreted = Box::pin(app.engine.run_interpreted(
        InlineWasm { bytes: wasm, sha },
        INLINE_LABEL,
        &spec,
        wasi.as_ref(),
        host_modules,
        graph,
    ))
    .await?;
    let Some((result, sha)) = interpreted else {
        return Ok(None);
    };
    let ran = Ran {
        compile: None,
        modules: ModulesRan::of(INLINE_NAME, &encode_hex(sha), []),
    };
    call.respond(result, ran, started, &app.metrics, *endpoint).map(Some)
}

/// Runs `checked` on the registered module `name`'s interpreter form and
/// graph; `None` when the call has values the interpreter does not
/// convert (it then runs compiled).
async fn run_registered_interpreted(
    app: &AppState,
    name: &str,
    it: Interpreted,
    checked: &Checked,
    started: Instant,
) -> ApiResult<Option<ExecResponse>> {
    let Checked {
        endpoint,
        limits,
        call,
        wasi,
    } = checked;
    let spec = call.spec(*limits)?;
    let modules = ModulesRan::of(
        name,
        &it.code.sha256,
        it.graph.iter().map(|(n, code)| (n.as_str(), code.sha256.as_str())),
    );
    let result = app
        .engine
        .run_code(
            &it.code,
            &label(Some(name)),
            &spec,
            wasi.as_ref(),
            &it.host_modules,
            &it.graph,
        )
        .await;
    let Some(result) = result else {
        return Ok(None);
    };
    let ran = Ran { compile: None, modules };
    call.respond(result, ran, started, &app.metrics, *endpoint).map(Some)
}

/// Runs `checked` on `component` (named `root_name` in `stats.modules`).
async fn run_component(
    app: &AppState,
    root_name: &str,
    component: ResolvedComponent,
    checked: &Checked,
    started: Instant,
) -> ApiResult<ExecResponse> {
    let Checked {
        endpoint,
        limits,
        call,
        wasi,
    } = checked;
    let component_call = call.component(*limits)?;
    let modules = ModulesRan::of(
        root_name,
        component.compiled.sha256_hex(),
        component
            .graph
            .iter()
            .map(|h| (h.name.as_str(), h.compiled.sha256_hex())),
    );
    let result = app
        .engine
        .run_component(component.compiled, &component.graph, &component_call, wasi.clone())
        .await;
    let ran = Ran {
        compile: Some(component.compile),
        modules,
    };
    call.respond(result, ran, started, &app.metrics, *endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_handlers_futures_stay_small() {
        // The router boxes a handler's future for every request, copying
        // it whole, and a future holds every future it awaits: the common
        // call runs without awaiting (`run_now`) and the rest is boxed, so
        // that this copy stays small. (Before: about 3,900 bytes.)
        let (registered, inline) = (future_size(&run_registered), future_size(&run_inline));
        assert!(registered <= 1_536, "POST /execute's future is {registered} bytes");
        assert!(inline <= 2_048, "POST /'s future is {inline} bytes");
    }
}
