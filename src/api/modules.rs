//! The registry endpoints: `POST /register`, `GET /modules`,
//! `GET|DELETE /modules/{name}`, `GET /modules/{name}/wasm`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Caller;
use super::code::CodeFields;
use super::error::ApiResult;
use super::extract::JsonBody;
use crate::engine::ModuleInterface;
use crate::registry::ModuleRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/modules", get(list))
        .route("/modules/{name}", get(describe).delete(delete))
        .route("/modules/{name}/wasm", get(binary))
}

/// Body of `POST /register`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    module_name: String,
    wasm_hex: Option<String>,
    wasm_base64: Option<String>,
    wat: Option<String>,
    #[serde(default)]
    host_modules: Vec<String>,
}

/// A module with its interface.
#[derive(Serialize)]
struct ModuleDetail {
    #[serde(flatten)]
    record: ModuleRecord,
    #[serde(flatten)]
    interface: ModuleInterface,
}

#[derive(Serialize)]
struct ModuleList {
    modules: Vec<ModuleRecord>,
}

async fn register(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<Register>,
) -> ApiResult<impl IntoResponse> {
    let _permit = app.exec_permit()?;
    let code = CodeFields {
        wasm_hex: req.wasm_hex,
        wasm_base64: req.wasm_base64,
        wat: req.wat,
    };
    let wasm = code.into_wasm(&app.engine).await?;
    let owner = caller.fingerprint();
    let (record, compiled) = app
        .registry
        .register(&req.module_name, wasm, req.host_modules, owner)
        .await?;
    let detail = ModuleDetail {
        record,
        interface: compiled.interface(),
    };
    Ok((StatusCode::CREATED, Json(detail)))
}

async fn list(State(app): State<AppState>) -> Json<ModuleList> {
    Json(ModuleList {
        modules: app.registry.list(),
    })
}

async fn describe(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<ModuleDetail>> {
    let record = app.registry.get(&name)?;
    let (compiled, _) = app.registry.compiled(&name).await?;
    Ok(Json(ModuleDetail {
        record,
        interface: compiled.interface(),
    }))
}

async fn binary(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    let wasm = app.registry.wasm(&name).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], wasm))
}

async fn delete(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    app.registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
