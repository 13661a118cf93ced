//! Stateful instances: `POST /instances`, `GET /instances`,
//! `GET|DELETE /instances/{id}`, `POST /instances/{id}/call`, and for a
//! component's resources `DELETE /instances/{id}/resources/{number}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::auth::Caller;
use super::call::{
    self, Call, Encoding, ExecResponse, MemoryReadBody, MemoryWriteBody, ModulesRan, Ran, ResultFormat, WasiBody,
};
use super::checks::Expected;
use super::client::ClientId;
use super::code::CodeFields;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::JsonBody;
use super::metrics::Endpoint;
use super::responses::{BodyErrors, ErrorBody, GuardedErrors, RunErrors};
use super::routes::Routes;
use super::state::AppState;
use crate::engine::{CodeInterface, ExecLimits, ExecStats, GlobalRead, LimitOverrides, LiveInstance, Tier};
use crate::instances::{Held, InstanceSlot, NewInstance, Slot};
use crate::registry::RegistryError;
use crate::resolve::{Source, label, resolve, resolve_component};

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::POST, "/instances", create)
        .add(Method::GET, "/instances", list)
        .add(Method::GET, "/instances/{id}", describe)
        .add(Method::DELETE, "/instances/{id}", delete)
        .add(Method::POST, "/instances/{id}/call", call_instance)
        .add(Method::GET, "/instances/{id}/globals/{name}", read_global)
        .add(Method::DELETE, "/instances/{id}/resources/{number}", drop_resource)
}

/// `GET /instances/{id}/globals/{name}`: an exported global's value now.
#[derive(Serialize, ToSchema)]
pub struct GlobalBody {
    name: String,
    /// The global's value type (`i32`, `i64`, `f32`, `f64`, `v128`, ...).
    #[serde(rename = "type")]
    ty: String,
    mutable: bool,
    /// Encoded as a result of that type is (exact i64, bit-exact floats,
    /// NaN with its payload and infinities as strings).
    #[schema(value_type = Object)]
    value: Box<RawValue>,
}

impl GlobalBody {
    pub(super) fn new(name: String, read: GlobalRead) -> Self {
        GlobalBody {
            name,
            ty: read.ty,
            mutable: read.mutable,
            value: read.value,
        }
    }
}

/// Body of `POST /instances`: a registered module (`module_name`) or inline
/// code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"wat": "(module (global $n (mut i32) (i32.const 0)) (func (export \"inc\") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"}))]
pub struct CreateInstance {
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
    module_name: Option<String>,
    /// The module binary as hex (whitespace ignored).
    wasm_hex: Option<String>,
    /// The module binary as standard base64.
    wasm_base64: Option<String>,
    /// The module as WebAssembly text, compiled on the server.
    wat: Option<String>,
    /// With inline code: registered modules it imports from.
    #[serde(default)]
    host_modules: Vec<String>,
    /// The instance's limits: memory and tables for its life, fuel and
    /// time per call.
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
    #[serde(default, deserialize_with = "super::extract::object")]
    wasi: Option<WasiBody>,
}

/// Body of `POST /instances/{id}/call`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"function_name": "inc"}))]
pub struct CallInstance {
    /// The export to call; omit to run a WASI command's `_start`.
    function_name: Option<String>,
    /// Params in the function's order, typed by its signature: numbers or
    /// strings (`"NaN"`, `"-0"`, `"0x1p-3"`, exact i64 digits), or for a
    /// bytes param `{"utf8"|"hex"|"base64": …}`.
    #[serde(default)]
    #[schema(value_type = Vec<serde_json::Value>)]
    params: super::call::Params,
    /// Lower `fuel` or `timeout_ms` for this call.
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_writes: Vec<MemoryWriteBody>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_reads: Vec<MemoryReadBody>,
    result_encoding: Option<Encoding>,
    /// `wave`: a component's results as WAVE text instead of JSON.
    result_format: Option<ResultFormat>,
    /// What the call should do; the response then says whether it did
    /// (`passed`, `diff`).
    #[serde(default, deserialize_with = "super::extract::object")]
    expected: Option<Box<Expected>>,
}

/// An instance as `GET /instances/{id}` shows it.
#[derive(Serialize, ToSchema)]
pub struct InstanceBody {
    id: String,
    module: String,
    sha256: String,
    created: String,
    age_ms: u64,
    idle_ms: u64,
    calls: u64,
    /// The tier that runs this instance's calls, for its whole life.
    tier: Tier,
    /// Current size of the default memory; absent while a call is running
    /// or when the module exports no memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<usize>,
    limits: ExecLimits,
    idle_timeout_ms: u64,
    /// The numbers of the resources a component instance holds for its
    /// client (`{"resource": N}` in params and results); absent for core
    /// modules, and while a call is running.
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Vec<u64>>,
    #[serde(flatten)]
    interface: CodeInterface,
    /// Instantiation's stats, on creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<ExecStats>,
}

/// `GET /instances`.
#[derive(Serialize, ToSchema)]
pub struct InstanceList {
    instances: Vec<InstanceBody>,
}

/// The token a new instance belongs to.
pub(super) fn owner_of(caller: &Caller) -> Option<usize> {
    match caller {
        Caller::Token { id, .. } => Some(*id),
        Caller::Anonymous => None,
    }
}

/// The slot `id` of kind `T` (an instance or an environment), if
/// `caller` may use it. Another token's is reported as not found, so ids
/// cannot be probed for existence; one that another node of a shared
/// registry handed out is reported with its node (see [`elsewhere`]).
pub(super) async fn visible<T: Held>(
    app: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Arc<Slot<T, T::Info>>, ApiError> {
    let slot = match app.instances.get::<T>(id) {
        Ok(slot) => slot,
        Err(e) => match app.instances.other_node(id).filter(|_| app.registry.is_shared()) {
            Some(node) => return Err(elsewhere::<T>(app, id, node).await),
            None => return Err(e.into()),
        },
    };
    if caller.sees_all() || slot.owner == owner_of(caller) {
        Ok(slot)
    } else {
        Err(T::not_found(id).into())
    }
}

/// `421 instance_on_other_node` for an instance or environment of node
/// `node`, naming the address it advertised in the shared store.
async fn elsewhere<T: Held>(app: &AppState, id: &str, node: &str) -> ApiError {
    let url = app.registry.node_url(node).await.ok().flatten();
    let noun = T::NOUN;
    let whereto = match &url {
        Some(url) => format!("; send the call to {url}, or route /{noun}s/{node}.* there (sticky routing)"),
        None => " (which has not advertised an address)".to_string(),
    };
    let mut error = ApiError::new(
        ErrorCode::InstanceOnOtherNode,
        format!("{noun} `{id}` lives on node `{node}`{whereto}"),
    );
    error.extra.insert("node".into(), node.into());
    if let Some(url) = url {
        error.extra.insert("owner_url".into(), url.into());
    }
    error
}

/// `201` with `Location` naming the new instance.
fn created(app: &AppState, slot: &InstanceSlot, stats: ExecStats) -> impl IntoResponse + use<> {
    let location = [(header::LOCATION, format!("/instances/{}", slot.id))];
    (
        StatusCode::CREATED,
        location,
        Json(describe_slot(app, slot, Some(stats))),
    )
}

pub(super) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn describe_slot(app: &AppState, slot: &InstanceSlot, stats: Option<ExecStats>) -> InstanceBody {
    let (memory_bytes, resources) = match slot.live.try_lock() {
        Ok(mut live) => (live.memory_size(), live.component().map(|c| c.resources())),
        Err(_) => (None, None),
    };
    InstanceBody {
        id: slot.id.clone(),
        module: slot.info.module.clone(),
        sha256: slot.info.sha256.clone(),
        created: humantime::format_rfc3339_seconds(slot.created).to_string(),
        age_ms: millis(slot.age()),
        idle_ms: millis(slot.idle()),
        calls: slot.calls(),
        tier: slot.info.tier,
        memory_bytes,
        resources,
        limits: slot.limits,
        idle_timeout_ms: millis(app.instances.settings().idle_timeout),
        interface: slot.info.interface.clone(),
        stats,
    }
}

#[utoipa::path(post, path = "/instances", tag = "instances", operation_id = "create_instance",
    request_body = CreateInstance,
    responses(
        (status = 201, description = "Created; the instance, its limits and interface, and instantiation stats; `Location` is its path", body = InstanceBody,
            headers(("Location" = String, description = "/instances/{id}"))),
        (status = 404, description = "module_not_found", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn create(
    State(app): State<AppState>,
    client: ClientId,
    caller: Caller,
    JsonBody(req): JsonBody<CreateInstance>,
) -> ApiResult<impl IntoResponse> {
    let _permit = app.exec_permit(&client).await?;
    let limits = app.engine.default_limits().lowered_by(req.limits.as_ref())?;
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let source = match (req.module_name, code.is_present()) {
        (Some(_), _) if !req.host_modules.is_empty() => {
            return Err(ApiError::invalid_request(
                "`host_modules` goes with inline code; a registered module links the host modules it was registered with",
            ));
        }
        (Some(name), false) => Source::Registered(name),
        (None, true) => Source::Inline {
            wasm: code.into_wasm(&app.engine).await?,
            host_modules: req.host_modules,
        },
        _ => {
            return Err(ApiError::invalid_request(
                "send either `module_name` or one of `wasm_hex`, `wasm_base64`, `wat`",
            ));
        }
    };
    let wasi = call::wasi_config(req.wasi, source.program())?;
    let owner = owner_of(&caller);
    if let Some(component) = resolve_component(&app.engine, &app.registry, &source).await? {
        let new = NewInstance {
            module: module_label(&source),
            sha256: component.compiled.sha256_hex().to_string(),
            interface: CodeInterface::Component(component.compiled.world().clone()),
            limits,
        };
        let instantiate = app
            .engine
            .instantiate_component(component.compiled, component.graph, limits, wasi);
        let (slot, stats) = app.instances.create(new, owner, &client.tenant(), instantiate).await?;
        return Ok(created(&app, &slot, stats));
    }
    // Code the interpreter runs may live there, with its whole link graph.
    let interpreted = match &source {
        // The module first: its graph is looked up only if it is to be
        // interpreted.
        Source::Inline { wasm, host_modules } => match app.engine.interpretable(wasm).await {
            Some(code) => app
                .registry
                .interpreted_graph(host_modules)
                .await?
                .map(|graph| (code, host_modules.clone(), graph)),
            None => None,
        },
        Source::Registered(name) => app
            .registry
            .interpreted(name)
            .await
            .map(|it| (it.code, it.host_modules, it.graph)),
        _ => None,
    };
    if let Some((code, direct, graph)) = interpreted.filter(|(code, ..)| code.whole()) {
        let name = match &source {
            Source::Registered(name) => Some(name.as_str()),
            _ => None,
        };
        app.engine
            .check_interpreted_graph(&label(name), &code, &direct, &graph)
            .map_err(RegistryError::from)?;
        let new = NewInstance {
            module: module_label(&source),
            sha256: code.sha256.clone(),
            interface: CodeInterface::Module(code.interface.clone()),
            limits,
        };
        let instantiate = app
            .engine
            .instantiate_interpreted(&code, &graph, label(name), limits, wasi.clone());
        let (slot, stats) = app.instances.create(new, owner, &client.tenant(), instantiate).await?;
        return Ok(created(&app, &slot, stats));
    }
    let resolved = resolve(&app.engine, &app.registry, source).await?;
    let new = NewInstance {
        module: resolved.module().to_string(),
        sha256: resolved.root.sha256_hex().to_string(),
        interface: CodeInterface::Module(resolved.root.interface()),
        limits,
    };
    let instantiate = app.engine.instantiate(resolved.into_spec(limits, wasi));
    let (slot, stats) = app.instances.create(new, owner, &client.tenant(), instantiate).await?;
    Ok(created(&app, &slot, stats))
}

/// How an instance names its code: the registered module's name, or
/// `inline`.
fn module_label(source: &Source) -> String {
    match source {
        Source::Registered(name) => name.clone(),
        _ => "inline".to_string(),
    }
}

#[utoipa::path(get, path = "/instances", tag = "instances", operation_id = "list_instances",
    responses(
        (status = 200, description = "The caller's live instances", body = InstanceList),
        GuardedErrors,
    ))]
async fn list(State(app): State<AppState>, caller: Caller) -> Json<InstanceList> {
    let owner = owner_of(&caller);
    let instances = app
        .instances
        .list::<LiveInstance>()
        .iter()
        .filter(|s| caller.sees_all() || s.owner == owner)
        .map(|s| describe_slot(&app, s, None))
        .collect();
    Json(InstanceList { instances })
}

#[utoipa::path(get, path = "/instances/{id}/globals/{name}", tag = "instances", operation_id = "read_instance_global",
    params(("id" = String, Path, description = "Instance id"), ("name" = String, Path, description = "Exported global")),
    responses(
        (status = 200, description = "The global's type, mutability and current value", body = GlobalBody),
        (status = 404, description = "instance_not_found or global_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors,
    ))]
async fn read_global(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<GlobalBody>> {
    let slot = visible::<LiveInstance>(&app, &caller, &id).await?;
    // Waits for a call in progress: a read sees the state between calls.
    let read = slot.live.lock().await.global(&name)?;
    slot.touch();
    Ok(Json(GlobalBody::new(name, read)))
}

#[utoipa::path(get, path = "/instances/{id}", tag = "instances", operation_id = "describe_instance",
    params(("id" = String, Path, description = "Instance id")),
    responses(
        (status = 200, description = "The instance", body = InstanceBody),
        (status = 404, description = "instance_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors,
    ))]
async fn describe(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceBody>> {
    let slot = visible::<LiveInstance>(&app, &caller, &id).await?;
    Ok(Json(describe_slot(&app, &slot, None)))
}

#[utoipa::path(delete, path = "/instances/{id}", tag = "instances", operation_id = "delete_instance",
    params(("id" = String, Path, description = "Instance id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "instance_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors,
    ))]
async fn delete(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    visible::<LiveInstance>(&app, &caller, &id).await?;
    app.instances.remove::<LiveInstance>(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/instances/{id}/call", tag = "instances", operation_id = "call_instance",
    params(("id" = String, Path, description = "Instance id")),
    request_body = CallInstance,
    responses(
        (status = 200, description = "The call's typed results and stats; the instance keeps its state", body = ExecResponse),
        (status = 404, description = "instance_not_found or function_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn call_instance(
    State(app): State<AppState>,
    caller: Caller,
    client: ClientId,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CallInstance>,
) -> ApiResult<ExecResponse> {
    let slot = visible::<LiveInstance>(&app, &caller, &id).await?;
    // Calls on one instance take turns; the lock is held for the call only.
    // The instance first, then an execution slot: a call waiting its turn
    // holds no slot other clients could use.
    let mut live = slot.live.lock().await;
    let _permit = app.exec_permit(&client).await?;
    call_locked(&app, &slot, &mut live, req, None).await
}

/// One call on a live instance whose lock (and an execution slot) the
/// caller holds: for its own request, or in a batch on the instance (whose
/// `deadline` caps its time limit).
pub(super) async fn call_locked(
    app: &AppState,
    slot: &InstanceSlot,
    live: &mut LiveInstance,
    req: CallInstance,
    deadline: Option<Instant>,
) -> ApiResult<ExecResponse> {
    let started = Instant::now();
    call::per_request_limits(req.limits.as_ref(), "instance (set them in POST /instances)")?;
    let limits = super::exec::within(slot.limits.lowered_by(req.limits.as_ref())?, deadline, started);
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
    slot.touch();
    let result = match live.component() {
        Some(component) => component.call(&call.component(limits)?).await,
        None => live.call(call.spec(limits)?).await,
    };
    let ran = Ran {
        compile: None,
        modules: ModulesRan::of(&slot.info.module, &slot.info.sha256, []),
    };
    call.respond(result, ran, started, &app.metrics, Endpoint::Instance)
}

/// `DELETE /instances/{id}/resources/{number}`: what dropping a resource
/// did.
#[derive(Serialize, ToSchema)]
pub struct DroppedResource {
    resource: u64,
    /// The destructor's fuel and time (zero when the resource has none).
    stats: ExecStats,
}

#[utoipa::path(delete, path = "/instances/{id}/resources/{number}", tag = "instances", operation_id = "drop_instance_resource",
    params(("id" = String, Path, description = "Instance id"), ("number" = u64, Path, description = "The resource's number, as a call returned it: `{\"resource\": N}`")),
    responses(
        (status = 200, description = "Dropped; its destructor ran in the guest under the instance's limits", body = DroppedResource),
        (status = 404, description = "instance_not_found or resource_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors, RunErrors,
    ))]
async fn drop_resource(
    State(app): State<AppState>,
    client: ClientId,
    caller: Caller,
    Path((id, number)): Path<(String, String)>,
) -> ApiResult<Json<DroppedResource>> {
    let slot = visible::<LiveInstance>(&app, &caller, &id).await?;
    let number: u64 = number.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::ResourceNotFound,
            format!("`{number}` is not a resource number; calls return resources as {{\"resource\": N}}"),
        )
    })?;
    let mut live = slot.live.lock().await;
    let Some(component) = live.component() else {
        return Err(ApiError::new(
            ErrorCode::ResourceNotFound,
            format!("instance `{id}` runs a core module, which holds no resources"),
        ));
    };
    let _permit = app.exec_permit(&client).await?;
    slot.touch();
    let stats = component.drop_resource(number, &slot.limits).await?;
    Ok(Json(DroppedResource {
        resource: number,
        stats,
    }))
}
