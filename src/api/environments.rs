//! Environments: many instances in one store, linked live.
//! `POST /environments`, `GET /environments`, `GET|DELETE /environments/{id}`,
//! `POST /environments/{id}/instances`, `POST /environments/{id}/register`,
//! `POST /environments/{id}/call`, `GET /environments/{id}/globals/{name}`.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::call::{self, Call, Encoding, ExecResponse, MemoryReadBody, MemoryWriteBody, Ran, WasiBody};
use super::client::ClientId;
use super::code::CodeFields;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ObjectOrNull};
use super::instances::{GlobalBody, millis, owner_of, visible};
use super::metrics::Endpoint;
use super::responses::{BodyErrors, ErrorBody, GuardedErrors, RunErrors};
use super::routes::Routes;
use super::state::AppState;
use crate::engine::{Environment, ExecLimits, ExecStats, LimitOverrides, MemberSpec, ModuleInterface};
use crate::instances::EnvironmentSlot;
use crate::resolve::{Source, environment_member, registered_hosts};

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::POST, "/environments", create)
        .add(Method::GET, "/environments", list)
        .add(Method::GET, "/environments/{id}", describe)
        .add(Method::DELETE, "/environments/{id}", delete)
        .add(Method::POST, "/environments/{id}/instances", add_instance)
        .add(Method::POST, "/environments/{id}/register", register)
        .add(Method::POST, "/environments/{id}/call", call_environment)
        .add(Method::GET, "/environments/{id}/globals/{name}", read_global)
}

/// Longest instance name, in bytes.
const MAX_NAME_BYTES: usize = 128;

/// Longest name an instance may be exposed under, in bytes (an import's
/// module name may be any string).
const MAX_EXPOSED_BYTES: usize = 1024;

/// Body of `POST /environments`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"limits": {"memory_bytes": 16777216}}))]
pub struct CreateEnvironment {
    /// The environment's limits, for its whole life: linear memory for all
    /// its instances together, elements for each table; fuel and time the
    /// most any one request on it may use.
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
    /// The world of the WASI programs in it (args, env, stdin), shared by
    /// all its instances.
    #[serde(default, deserialize_with = "super::extract::object")]
    wasi: Option<WasiBody>,
}

/// Body of `POST /environments/{id}/instances`: a registered module
/// (`module_name`) or inline code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"wat": "(module (memory (export \"mem\") 1))", "name": "$M", "as": "M"}))]
pub struct AddInstance {
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
    module_name: Option<String>,
    /// The module binary as hex (whitespace ignored).
    wasm_hex: Option<String>,
    /// The module binary as standard base64.
    wasm_base64: Option<String>,
    /// The module as WebAssembly text, compiled on the server.
    wat: Option<String>,
    /// A name to address the instance by in later requests (any string of
    /// 1 to 128 bytes; a later instance of the same name takes it over).
    name: Option<String>,
    /// Expose the instance's exports under this import module name: later
    /// instances of the environment that import from it link to its live
    /// exports.
    #[serde(rename = "as")]
    expose_as: Option<String>,
    /// Lower `fuel` or `timeout_ms` for the instantiation (start functions).
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
}

/// Body of `POST /environments/{id}/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"instance": "$M", "as": "M"}))]
pub struct RegisterInstance {
    /// The instance's name; the latest instance when absent.
    instance: Option<String>,
    /// The import module name to expose its exports under.
    #[serde(rename = "as")]
    expose_as: String,
}

/// Body of `POST /environments/{id}/call`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"instance": "$M", "function_name": "inc"}))]
pub struct CallEnvironment {
    /// The instance's name; the latest instance when absent.
    instance: Option<String>,
    /// The export to call; omit to run a WASI command's `_start`.
    function_name: Option<String>,
    /// Params in the function's order, typed by its signature, as for
    /// `/instances/{id}/call`.
    #[serde(default)]
    #[schema(value_type = Vec<serde_json::Value>)]
    params: super::call::Params,
    /// Lower `fuel` or `timeout_ms` for this call.
    #[serde(default, deserialize_with = "super::extract::object")]
    limits: Option<LimitOverrides>,
    /// Memories are named as for instances; `NAME:export` is an export of
    /// the instance named, or exposed as, `NAME`, or of a registered
    /// module instantiated in the environment.
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_writes: Vec<MemoryWriteBody>,
    #[serde(default, deserialize_with = "super::extract::objects")]
    memory_reads: Vec<MemoryReadBody>,
    result_encoding: Option<Encoding>,
}

/// `?instance=NAME` of `GET /environments/{id}/globals/{name}`.
#[derive(Deserialize)]
pub struct GlobalQuery {
    instance: Option<String>,
}

/// An instance of an environment.
#[derive(Serialize, ToSchema)]
pub struct MemberBody {
    /// Its place in the environment, from 0, in the order instances were made.
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// The registered module it was made from, or `inline`.
    module: String,
    sha256: String,
    /// The names its exports are exposed under.
    exposed_as: Vec<String>,
    #[serde(flatten)]
    interface: ModuleInterface,
    /// The instantiation's stats, when it was just made.
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<ExecStats>,
}

/// An environment as `GET /environments/{id}` shows it.
#[derive(Serialize, ToSchema)]
pub struct EnvironmentBody {
    id: String,
    created: String,
    age_ms: u64,
    idle_ms: u64,
    /// Requests that ran guest code or changed it (instantiations,
    /// registrations, calls).
    calls: u64,
    limits: ExecLimits,
    idle_timeout_ms: u64,
    /// Linear memory its instances hold together; absent while a request
    /// is running on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    /// Its instances, oldest first; absent while a request is running on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<Vec<MemberBody>>,
    /// Registered modules instantiated in it (each once, at first import).
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_modules: Option<Vec<String>>,
}

/// `GET /environments`.
#[derive(Serialize, ToSchema)]
pub struct EnvironmentList {
    environments: Vec<EnvironmentBody>,
}

fn member_body(env: &Environment, index: usize, stats: Option<ExecStats>) -> MemberBody {
    let member = &env.members()[index];
    MemberBody {
        index,
        name: member.name.clone(),
        module: member.module.clone(),
        sha256: member.compiled.sha256_hex().to_string(),
        exposed_as: env
            .exposed()
            .iter()
            .filter(|(_, i)| *i == index)
            .map(|(n, _)| n.clone())
            .collect(),
        interface: member.compiled.interface(),
        stats,
    }
}

fn describe_slot(app: &AppState, slot: &EnvironmentSlot) -> EnvironmentBody {
    let env = slot.live.try_lock().ok();
    EnvironmentBody {
        id: slot.id.clone(),
        created: humantime::format_rfc3339_seconds(slot.created).to_string(),
        age_ms: millis(slot.age()),
        idle_ms: millis(slot.idle()),
        calls: slot.calls(),
        limits: slot.limits,
        idle_timeout_ms: millis(app.instances.settings().idle_timeout),
        memory_bytes: env.as_ref().map(|e| e.memory_bytes()),
        instances: env
            .as_ref()
            .map(|e| (0..e.members().len()).map(|i| member_body(e, i, None)).collect()),
        registered_modules: env
            .as_ref()
            .map(|e| e.registered().into_iter().map(str::to_string).collect()),
    }
}

fn check_name(field: &str, name: &str, max: usize, may_be_empty: bool) -> ApiResult<()> {
    if name.len() > max || (name.is_empty() && !may_be_empty) {
        let least = if may_be_empty { 0 } else { 1 };
        return Err(ApiError::invalid_request(format!(
            "`{field}` must be {least} to {max} bytes long; it is {}",
            name.len()
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/environments", tag = "environments", operation_id = "create_environment",
    request_body(content = Option<CreateEnvironment>, description = "Optional: without a body, the server's limits and an empty WASI world"),
    responses(
        (status = 201, description = "Created, empty; `Location` is its path", body = EnvironmentBody,
            headers(("Location" = String, description = "/environments/{id}"))),
        (status = 400, description = "invalid_request: a malformed body, or limits above the server's", body = ErrorBody),
        GuardedErrors, BodyErrors,
    ))]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    client: ClientId,
    body: Option<JsonBody<ObjectOrNull<CreateEnvironment>>>,
) -> ApiResult<impl IntoResponse> {
    // No body, or `null`, is an environment with the server's limits.
    let req = body.and_then(|JsonBody(ObjectOrNull(b))| b).unwrap_or_default();
    let limits = app.engine.default_limits().lowered_by(req.limits.as_ref())?;
    let wasi = call::wasi_config(req.wasi, crate::resolve::INLINE_PROGRAM)?;
    let environment = app.engine.environment(&limits, wasi);
    let slot = app
        .instances
        .create_environment(limits, owner_of(&caller), &client.tenant(), environment)?;
    let location = [(header::LOCATION, format!("/environments/{}", slot.id))];
    Ok((StatusCode::CREATED, location, Json(describe_slot(&app, &slot))))
}

#[utoipa::path(get, path = "/environments", tag = "environments", operation_id = "list_environments",
    responses(
        (status = 200, description = "The caller's environments", body = EnvironmentList),
        GuardedErrors,
    ))]
async fn list(State(app): State<AppState>, caller: Caller) -> Json<EnvironmentList> {
    let owner = owner_of(&caller);
    let environments = app
        .instances
        .list::<Environment>()
        .iter()
        .filter(|s| caller.sees_all() || s.owner == owner)
        .map(|s| describe_slot(&app, s))
        .collect();
    Json(EnvironmentList { environments })
}

#[utoipa::path(get, path = "/environments/{id}", tag = "environments", operation_id = "describe_environment",
    params(("id" = String, Path, description = "Environment id")),
    responses(
        (status = 200, description = "The environment, its instances and exposed names", body = EnvironmentBody),
        (status = 404, description = "environment_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors,
    ))]
async fn describe(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EnvironmentBody>> {
    let slot = visible::<Environment>(&app, &caller, &id).await?;
    Ok(Json(describe_slot(&app, &slot)))
}

#[utoipa::path(delete, path = "/environments/{id}", tag = "environments", operation_id = "delete_environment",
    params(("id" = String, Path, description = "Environment id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "environment_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors,
    ))]
async fn delete(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    visible::<Environment>(&app, &caller, &id).await?;
    app.instances.remove::<Environment>(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/environments/{id}/instances", tag = "environments", operation_id = "add_environment_instance",
    params(("id" = String, Path, description = "Environment id")),
    request_body = AddInstance,
    responses(
        (status = 201, description = "Instantiated: the new instance, its interface and the instantiation's stats", body = MemberBody),
        (status = 404, description = "environment_not_found or module_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn add_instance(
    State(app): State<AppState>,
    client: ClientId,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddInstance>,
) -> ApiResult<impl IntoResponse> {
    let slot = visible::<Environment>(&app, &caller, &id).await?;
    call::per_request_limits(req.limits.as_ref(), "environment (set them in POST /environments)")?;
    let limits = slot.limits.lowered_by(req.limits.as_ref())?;
    if let Some(name) = &req.name {
        check_name("name", name, MAX_NAME_BYTES, false)?;
    }
    if let Some(name) = &req.expose_as {
        check_name("as", name, MAX_EXPOSED_BYTES, true)?;
    }
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let source = match (req.module_name, code.is_present()) {
        (Some(name), false) => Source::Registered(name),
        (None, true) => Source::Unlinked(code.into_wasm(&app.engine).await?),
        _ => {
            return Err(ApiError::invalid_request(
                "send either `module_name` or one of `wasm_hex`, `wasm_base64`, `wat`",
            ));
        }
    };
    let (root, module) = environment_member(&app.engine, &app.registry, source).await?;
    // One request at a time on an environment, from here to the answer;
    // the execution slot is taken once it is this request's turn.
    let mut env = slot.live.lock().await;
    let _permit = app.exec_permit(&client).await?;
    slot.touch();
    let graph = registered_hosts(&app.registry, &env.unresolved(&root)).await?;
    let spec = MemberSpec {
        root,
        module,
        name: req.name,
        expose_as: req.expose_as,
        graph,
        limits,
    };
    let (index, stats) = env.add(spec).await?;
    Ok((StatusCode::CREATED, Json(member_body(&env, index, Some(stats)))))
}

#[utoipa::path(post, path = "/environments/{id}/register", tag = "environments", operation_id = "register_environment_instance",
    params(("id" = String, Path, description = "Environment id")),
    request_body = RegisterInstance,
    responses(
        (status = 200, description = "Exposed: the instance, with the names it is exposed under", body = MemberBody),
        (status = 400, description = "invalid_request (a malformed body, a name too long) or invalid_params (the WASI module name)", body = ErrorBody),
        (status = 404, description = "environment_not_found or instance_not_found (no instance of that name)", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors, BodyErrors,
    ))]
async fn register(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RegisterInstance>,
) -> ApiResult<Json<MemberBody>> {
    let slot = visible::<Environment>(&app, &caller, &id).await?;
    check_name("as", &req.expose_as, MAX_EXPOSED_BYTES, true)?;
    let mut env = slot.live.lock().await;
    slot.touch();
    let index = env.expose(req.instance.as_deref(), req.expose_as)?;
    Ok(Json(member_body(&env, index, None)))
}

#[utoipa::path(post, path = "/environments/{id}/call", tag = "environments", operation_id = "call_environment",
    params(("id" = String, Path, description = "Environment id")),
    request_body = CallEnvironment,
    responses(
        (status = 200, description = "The call's typed results and stats; the environment keeps its state", body = ExecResponse),
        (status = 404, description = "environment_not_found, instance_not_found or function_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn call_environment(
    State(app): State<AppState>,
    client: ClientId,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CallEnvironment>,
) -> ApiResult<ExecResponse> {
    let started = Instant::now();
    let slot = visible::<Environment>(&app, &caller, &id).await?;
    call::per_request_limits(req.limits.as_ref(), "environment (set them in POST /environments)")?;
    let limits: ExecLimits = slot.limits.lowered_by(req.limits.as_ref())?;
    let call = Call::new(
        req.function_name,
        req.params,
        req.memory_writes,
        req.memory_reads,
        req.result_encoding,
        app.engine.settings().max_read_bytes,
    )?;
    // The environment first, then an execution slot: a request waiting its
    // turn on a busy environment holds no slot other clients could use.
    let mut env = slot.live.lock().await;
    let _permit = app.exec_permit(&client).await?;
    slot.touch();
    let result = env.call(req.instance.as_deref(), call.spec(limits)?).await;
    drop(env);
    call.respond(result, Ran::default(), started, &app.metrics, Endpoint::Environment)
}

#[utoipa::path(get, path = "/environments/{id}/globals/{name}", tag = "environments", operation_id = "read_environment_global",
    params(
        ("id" = String, Path, description = "Environment id"),
        ("name" = String, Path, description = "Exported global"),
        ("instance" = Option<String>, Query, description = "The instance's name; the latest instance when absent"),
    ),
    responses(
        (status = 200, description = "The global's type, mutability and current value", body = GlobalBody),
        (status = 404, description = "environment_not_found, instance_not_found or global_not_found", body = ErrorBody),
        (status = 421, description = "instance_on_other_node: another node of a shared registry holds it", body = ErrorBody),
        GuardedErrors,
    ))]
async fn read_global(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<GlobalQuery>,
) -> ApiResult<Json<GlobalBody>> {
    let slot = visible::<Environment>(&app, &caller, &id).await?;
    let read = slot.live.lock().await.global(query.instance.as_deref(), &name)?;
    slot.touch();
    Ok(Json(GlobalBody::new(name, read)))
}
