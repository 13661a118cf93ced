//! The browser playground: `GET /` (HTML for browsers, a JSON index for
//! other clients) and its two assets, all compiled into the binary so the
//! page works offline and a deployment is one file.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ErrorCode};
use super::responses::ErrorBody;
use super::state::AppState;

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

/// The page loads nothing but its own two assets and talks only to this
/// server; a policy that says so blunts any injected markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the client asked for HTML (a browser) rather than JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `GET /`: the playground for browsers, a JSON index for everything else
/// (curl, scripts), so neither has to guess a second address.
#[utoipa::path(get, path = "/", tag = "operations", operation_id = "index",
    responses((status = 200, description = "The playground (when the client accepts text/html), else a JSON index of the API",
        content((Object = "application/json"), (String = "text/html")))))]
pub async fn index(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if wants_html(&headers) {
        return (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            INDEX_HTML,
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json_index(app.served),
    )
        .into_response()
}

/// The JSON index, built once from the served routes.
fn json_index(served: &[(Method, &'static str)]) -> &'static str {
    static INDEX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let index = json!({
        "name": "wasm-exec-api",
        "version": env!("CARGO_PKG_VERSION"),
        "about": "Run WebAssembly over HTTP: POST a module, a function name and JSON params.",
        "endpoints": served
            .iter()
            .map(|(method, path)| format!("{method} {path}"))
            .collect::<Vec<_>>(),
        "example": {
            "wat": "(module (func (export \"double\") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))",
            "function_name": "double",
            "params": [2]
        },
        "playground": "open / in a browser",
        "openapi": "/openapi.json",
        "docs": "/docs/"
        });
        index.to_string()
    })
}

/// `GET /assets/{file}`: the playground's script and style sheet.
#[utoipa::path(get, path = "/assets/{file}", tag = "operations", operation_id = "playground_asset",
    params(("file" = String, Path, description = "`app.js` or `style.css`")),
    responses(
        (status = 200, description = "The asset", content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "route_not_found: no such asset", body = ErrorBody),
    ))]
pub async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => {
            return ApiError::new(ErrorCode::RouteNotFound, format!("no asset named `{file}`")).into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
