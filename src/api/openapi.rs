//! The OpenAPI 3.1 document (`GET /openapi.json`), generated from the
//! handlers' `#[utoipa::path]` annotations and the request and response
//! types' `ToSchema` derives, and the rendered docs at `/docs`.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorCode;
use super::responses::ErrorBody;
use super::{batch, call, environments, exec, instances, jobs, modules, ops, playground};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasm-exec-api",
        description = "Run WebAssembly over HTTP: POST a module (hex, base64 or text), a function name and JSON params; get typed JSON results. Modules can be registered, linked and kept as stateful instances. Every execution runs under fuel, time, memory, table and stack limits.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        playground::index,
        playground::asset,
        modules::inspect,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
        exec::run_inline,
        exec::run_registered,
        modules::register,
        modules::list,
        modules::describe,
        modules::binary,
        modules::delete,
        batch::run_batch,
        jobs::submit,
        jobs::status,
        jobs::cancel,
        jobs::events,
        instances::create,
        instances::list,
        instances::describe,
        instances::delete,
        instances::call_instance,
        instances::read_global,
        instances::drop_resource,
        environments::create,
        environments::list,
        environments::describe,
        environments::delete,
        environments::add_instance,
        environments::register,
        environments::call_environment,
        environments::read_global,
    ),
    components(schemas(call::Encoding, call::StdinBody, ErrorBody, ErrorCode)),
    modifiers(&BearerAuth),
    security((), ("bearer" = [])),
    tags(
        (name = "execute", description = "Run a function of inline code or a registered module"),
        (name = "registry", description = "Registered, persistent, linkable modules"),
        (name = "instances", description = "Instances whose memory and globals live across calls"),
        (name = "environments", description = "Many instances in one store, linked live: shared memories, tables, globals and functions"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Declares the optional bearer token (see `--token`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Needed only when the server runs with tokens: `execute` scope for calls, registry reads and instances; `admin` also for registering and deleting modules.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
        exactly_one_of(&mut doc, "RunInline", &["wasm_hex", "wasm_base64", "wat"]);
        exactly_one_of(&mut doc, "Register", &["wasm_hex", "wasm_base64", "wat"]);
        exactly_one_of(&mut doc, "Inspect", &["wasm_hex", "wasm_base64", "wat"]);
        exactly_one_of(
            &mut doc,
            "CreateInstance",
            &["module_name", "wasm_hex", "wasm_base64", "wat"],
        );
        let module_ops = ["describe_module", "module_binary", "delete_module"];
        link(&mut doc, "/register", "201", "name", &module_ops);
        let instance_ops = ["describe_instance", "call_instance", "delete_instance"];
        link(&mut doc, "/instances", "201", "id", &instance_ops);
        serde_json::to_string_pretty(&doc).expect("the OpenAPI document serializes")
    })
}

/// Adds OpenAPI links from a creating `POST`'s response to the operations
/// that take what it created (the body's `key`, which is also their path
/// parameter's name), so clients and stateful testers can follow them.
fn link(doc: &mut serde_json::Value, path: &str, status: &str, key: &str, targets: &[&str]) {
    let pointer = format!("/paths/{}/post/responses/{status}", path.replace('/', "~1"));
    let Some(response) = doc.pointer_mut(&pointer).and_then(|r| r.as_object_mut()) else {
        return;
    };
    let links: serde_json::Map<String, serde_json::Value> = targets
        .iter()
        .map(|op| {
            let link = serde_json::json!({
                "operationId": op,
                "parameters": { key: format!("$response.body#/{key}") },
            });
            (op.to_string(), link)
        })
        .collect();
    response.insert("links".into(), serde_json::Value::Object(links));
}

/// States in the schema `name` that exactly one of `fields` must be sent,
/// a rule the derive cannot express.
fn exactly_one_of(doc: &mut serde_json::Value, name: &str, fields: &[&str]) {
    // Each branch requires its field *as a string*: a field sent as `null`
    // counts as absent, which is how the server reads it.
    let one_of: Vec<serde_json::Value> = fields
        .iter()
        .map(|f| serde_json::json!({ "required": [f], "properties": { *f: { "type": "string" } } }))
        .collect();
    if let Some(schema) = doc
        .pointer_mut(&format!("/components/schemas/{name}"))
        .and_then(|s| s.as_object_mut())
    {
        schema.insert("oneOf".into(), serde_json::Value::Array(one_of));
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document(),
    )
        .into_response()
}

/// Swagger UI at `/docs`, its assets embedded in the binary (no CDN),
/// reading `/openapi.json`.
pub fn docs_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"]))
}
