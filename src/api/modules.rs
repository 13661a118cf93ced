//! The registry endpoints: `POST /register`, `GET /modules`,
//! `GET|DELETE /modules/{name}`, `GET /modules/{name}/wasm`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::client::ClientId;
use super::code::CodeFields;
use super::error::ApiResult;
use super::extract::JsonBody;
use super::responses::{BodyErrors, ErrorBody, GuardedErrors, RunErrors};
use super::routes::Routes;
use super::state::AppState;
use crate::engine::CodeInterface;
use crate::registry::ModuleRecord;
use crate::resolve::{Source, register as register_code, resolve, resolve_component};

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::POST, "/inspect", inspect)
        .add(Method::POST, "/register", register)
        .add(Method::GET, "/modules", list)
        .add(Method::GET, "/modules/{name}", describe)
        .add(Method::DELETE, "/modules/{name}", delete)
        .add(Method::GET, "/modules/{name}/wasm", binary)
}

/// Body of `POST /register`: a name and the code (exactly one of
/// `wasm_hex`, `wasm_base64`, `wat`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"module_name": "utils", "wat": "(module (func (export \"double\") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"}))]
pub struct Register {
    /// 1-128 characters of letters, digits, `_`, `-`, `.`; also the import
    /// module name dependents use.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
    module_name: String,
    /// The module binary as hex (whitespace ignored).
    wasm_hex: Option<String>,
    /// The module binary as standard base64.
    wasm_base64: Option<String>,
    /// The module as WebAssembly text, compiled on the server.
    wat: Option<String>,
    /// Registered modules this one imports from.
    #[serde(default)]
    host_modules: Vec<String>,
}

/// Body of `POST /inspect`: exactly one of `wasm_hex`, `wasm_base64`, `wat`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"wat": "(module (func (export \"double\") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"}))]
pub struct Inspect {
    /// The module binary as hex (whitespace ignored).
    wasm_hex: Option<String>,
    /// The module binary as standard base64.
    wasm_base64: Option<String>,
    /// The module as WebAssembly text, compiled on the server.
    wat: Option<String>,
}

/// What `POST /inspect` finds in a module.
#[derive(Serialize, ToSchema)]
pub struct Inspection {
    /// SHA-256 of the binary, lowercase hex.
    sha256: String,
    /// Size of the binary in bytes.
    size: u64,
    #[serde(flatten)]
    interface: CodeInterface,
}

/// A module with its interface.
#[derive(Serialize, ToSchema)]
pub struct ModuleDetail {
    #[serde(flatten)]
    record: ModuleRecord,
    #[serde(flatten)]
    interface: CodeInterface,
}

/// `GET /modules`.
#[derive(Serialize, ToSchema)]
pub struct ModuleList {
    modules: Vec<ModuleRecord>,
}

/// Validates and compiles a module (cached like any other) without running
/// or storing it, and lists its exports and imports: what a client needs to
/// offer a function picker with typed params.
#[utoipa::path(post, path = "/inspect", tag = "execute", operation_id = "inspect_module",
    request_body = Inspect,
    responses(
        (status = 200, description = "The module's hash, size, exports and imports with their types", body = Inspection),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn inspect(
    State(app): State<AppState>,
    client: ClientId,
    JsonBody(req): JsonBody<Inspect>,
) -> ApiResult<Json<Inspection>> {
    let _permit = app.exec_permit(&client).await?;
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let wasm = code.into_wasm(&app.engine).await?;
    let source = Source::Unlinked(wasm);
    if let Some(component) = resolve_component(&app.engine, &app.registry, &source).await? {
        let compiled = component.compiled;
        return Ok(Json(Inspection {
            sha256: compiled.sha256_hex().to_string(),
            size: compiled.size() as u64,
            interface: CodeInterface::Component(compiled.world().clone()),
        }));
    }
    let resolved = resolve(&app.engine, &app.registry, source).await?;
    Ok(Json(Inspection {
        sha256: resolved.root.sha256_hex().to_string(),
        size: resolved.root.size() as u64,
        interface: CodeInterface::Module(resolved.root.interface()),
    }))
}

#[utoipa::path(post, path = "/register", tag = "registry", operation_id = "register_module",
    request_body = Register,
    responses(
        (status = 201, description = "Registered; the record and the module's exports and imports", body = ModuleDetail),
        (status = 409, description = "module_exists: the name is taken", body = ErrorBody),
        GuardedErrors, BodyErrors, RunErrors,
    ))]
async fn register(
    State(app): State<AppState>,
    client: ClientId,
    caller: Caller,
    JsonBody(req): JsonBody<Register>,
) -> ApiResult<impl IntoResponse> {
    let _permit = app.exec_permit(&client).await?;
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let wasm = code.into_wasm(&app.engine).await?;
    let owner = caller.fingerprint();
    let (record, interface) = register_code(
        &app.engine,
        &app.registry,
        req.module_name,
        wasm,
        req.host_modules,
        owner,
    )
    .await?;
    let detail = ModuleDetail { record, interface };
    Ok((StatusCode::CREATED, Json(detail)))
}

#[utoipa::path(get, path = "/modules", tag = "registry", operation_id = "list_modules",
    responses(
        (status = 200, description = "Every registered module, in name order", body = ModuleList),
        GuardedErrors,
    ))]
async fn list(State(app): State<AppState>) -> Json<ModuleList> {
    Json(ModuleList {
        modules: app.registry.list(),
    })
}

#[utoipa::path(get, path = "/modules/{name}", tag = "registry", operation_id = "describe_module",
    params(("name" = String, Path, description = "Registered module name")),
    responses(
        (status = 200, description = "The record and the module's exports and imports with their types", body = ModuleDetail),
        (status = 404, description = "module_not_found", body = ErrorBody),
        GuardedErrors,
    ))]
async fn describe(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<ModuleDetail>> {
    let record = app.registry.get(&name).await?;
    let interface = match app.registry.component_alone(&name).await? {
        Some(compiled) => CodeInterface::Component(compiled.world().clone()),
        None => CodeInterface::Module(app.registry.interface(&name).await?),
    };
    Ok(Json(ModuleDetail { record, interface }))
}

#[utoipa::path(get, path = "/modules/{name}/wasm", tag = "registry", operation_id = "module_binary",
    params(("name" = String, Path, description = "Registered module name")),
    responses(
        (status = 200, description = "The module binary as registered", content_type = "application/wasm", body = Vec<u8>),
        (status = 404, description = "module_not_found", body = ErrorBody),
        GuardedErrors,
    ))]
async fn binary(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    let wasm = app.registry.wasm(&name).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], wasm))
}

#[utoipa::path(delete, path = "/modules/{name}", tag = "registry", operation_id = "delete_module",
    params(("name" = String, Path, description = "Registered module name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "module_not_found", body = ErrorBody),
        (status = 409, description = "module_in_use: other modules import from it (listed in `dependents`)", body = ErrorBody),
        GuardedErrors,
    ))]
async fn delete(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    app.registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
