//! The OpenAPI document: served, 3.1, and in step with the router.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

/// `(METHOD, /path/{template})` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let served: BTreeSet<(String, String)> = wasm_exec_api::api::served_routes()
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
    assert!(unserved.is_empty(), "in /openapi.json but not served: {unserved:?}");
    assert!(served.len() >= 17, "the router lost routes: {served:?}");
}

#[tokio::test]
async fn every_documented_operation_answers_on_the_live_server() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    for (method, path) in documented(&doc) {
        let url = app.url(
            &path
                .replace("{name}", "nope")
                .replace("{id}", "nope")
                .replace("{file}", "app.js"),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), &url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        // Whatever the answer (404 for the missing module, 400 for the
        // empty body), it must come from the endpoint, not the fallback.
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        assert!(
            !matches!(code.as_deref(), Some("route_not_found" | "method_not_allowed")),
            "{method} {path} is documented but not routed: {status} {body}"
        );
        assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
    }
}

#[tokio::test]
async fn every_error_code_and_schema_is_documented() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("error code enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The codes the server can send, from docs/API.md's error table.
    let api_md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
    // Rows of the error table look like "| `code` | 400 | ...".
    let table_codes: BTreeSet<&str> = api_md
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.splitn(2, "` | ");
            let code = cells.next()?;
            let status = cells.next()?.get(..3)?;
            status.parse::<u16>().ok().map(|_| code)
        })
        .collect();
    for code in &table_codes {
        assert!(
            codes.contains(code),
            "error code `{code}` is in docs/API.md but not in the OpenAPI enum"
        );
    }
    for code in &codes {
        assert!(
            table_codes.contains(code),
            "error code `{code}` is in the OpenAPI enum but not in docs/API.md"
        );
    }
    // Every operation documents its success, and every error response it
    // documents has the ErrorBody schema.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status} has no ErrorBody schema"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn docs_page_is_served_without_a_cdn() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "the docs page must not load from a CDN"
    );
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert!(init.text().await.unwrap().contains("/openapi.json"));
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
}
