//! Access control: bearer tokens with `admin` and `execute` scopes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DOUBLE_HEX, TestApp, code, spawn_app_with, test_settings};

const ADMIN: &str = "admin-secret-0123456789";
const EXEC: &str = "exec-secret-0123456789";
const OTHER: &str = "other-secret-0123456789";

async fn app_with_tokens() -> TestApp {
    let mut settings = test_settings();
    settings.tokens = vec![
        format!("admin:{ADMIN}"),
        format!("execute:{EXEC}"),
        format!("execute:{OTHER}"),
    ];
    spawn_app_with(settings).await
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

fn run_double() -> Option<Value> {
    Some(json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [2]}))
}

#[tokio::test]
async fn without_a_valid_token_requests_are_401() {
    let app = app_with_tokens().await;
    let response = app
        .client
        .post(app.url("/"))
        .json(&run_double().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "unauthorized");
    let (status, body) = send(
        &app,
        reqwest::Method::POST,
        "/",
        Some("not-a-real-token-at-all"),
        run_double(),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, body) = send(&app, reqwest::Method::GET, "/modules", None, None).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
}

#[tokio::test]
async fn public_pages_and_probes_stay_open_and_the_rest_does_not() {
    let app = app_with_tokens().await;
    for path in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs/",
        "/assets/app.js",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} must be open");
    }
    // Paths that merely start like a public one are not public.
    for path in ["/modules", "/instances", "/metricsx", "/docsx"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} needs a token");
    }
    let response = app.client.post(app.url("/inspect")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_execute_token_runs_code_but_cannot_register_or_delete() {
    let app = app_with_tokens().await;
    let (status, body) = send(&app, reqwest::Method::POST, "/", Some(EXEC), run_double()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([4]));
    let register = Some(json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}));
    let (status, body) = send(&app, reqwest::Method::POST, "/register", Some(EXEC), register.clone()).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(body["error"]["message"].as_str().unwrap().contains("`admin` scope"));

    let (status, _) = send(&app, reqwest::Method::POST, "/register", Some(ADMIN), register).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = send(
        &app,
        reqwest::Method::POST,
        "/execute",
        Some(EXEC),
        Some(json!({"module_name": "utils", "function_name": "double", "params": [5]})),
    )
    .await;
    assert_eq!((status, body["results"].clone()), (StatusCode::OK, json!([10])));
    let (status, body) = send(&app, reqwest::Method::DELETE, "/modules/utils", Some(EXEC), None).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = send(&app, reqwest::Method::DELETE, "/modules/utils", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn instances_are_visible_only_to_their_token_and_admins() {
    let app = app_with_tokens().await;
    let wat = r#"(module (func (export "one") (result i32) i32.const 1))"#;
    let (status, created) = send(
        &app,
        reqwest::Method::POST,
        "/instances",
        Some(EXEC),
        Some(json!({"wat": wat})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let path = format!("/instances/{id}");

    let (_, mine) = send(&app, reqwest::Method::GET, "/instances", Some(EXEC), None).await;
    assert_eq!(mine["instances"].as_array().unwrap().len(), 1);
    let (_, theirs) = send(&app, reqwest::Method::GET, "/instances", Some(OTHER), None).await;
    assert_eq!(theirs["instances"], json!([]));
    let (status, body) = send(&app, reqwest::Method::GET, &path, Some(OTHER), None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "instance_not_found"));
    let call = Some(json!({"function_name": "one"}));
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/call"),
        Some(OTHER),
        call.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, reqwest::Method::DELETE, &path, Some(OTHER), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = send(&app, reqwest::Method::POST, &format!("{path}/call"), Some(EXEC), call).await;
    assert_eq!((status, body["results"].clone()), (StatusCode::OK, json!([1])));
    let (_, all) = send(&app, reqwest::Method::GET, "/instances", Some(ADMIN), None).await;
    assert_eq!(all["instances"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn each_token_has_its_own_storage_quota() {
    let mut settings = test_settings();
    settings.tokens = vec![format!("admin:{ADMIN}"), "admin:second-admin-0123456789".to_string()];
    settings.max_modules_per_token = 2;
    settings.max_bytes_per_token = 100;
    let app = spawn_app_with(settings).await;
    let register = |name: &str| Some(json!({"module_name": name, "wasm_hex": DOUBLE_HEX}));
    for name in ["a", "b"] {
        let (status, body) = send(&app, reqwest::Method::POST, "/register", Some(ADMIN), register(name)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = send(&app, reqwest::Method::POST, "/register", Some(ADMIN), register("c")).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "quota_exceeded"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registered 2 modules")
    );
    // Another token has its own quota; bytes count too (43 + 43 + 43 > 100).
    let second = "second-admin-0123456789";
    for (name, expected) in [
        ("d", StatusCode::CREATED),
        ("e", StatusCode::CREATED),
        ("f", StatusCode::FORBIDDEN),
    ] {
        let (status, body) = send(&app, reqwest::Method::POST, "/register", Some(second), register(name)).await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    // Deleting frees quota.
    assert_eq!(
        send(&app, reqwest::Method::DELETE, "/modules/a", Some(ADMIN), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&app, reqwest::Method::POST, "/register", Some(ADMIN), register("c"))
            .await
            .0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn environments_are_visible_only_to_their_token_and_admins() {
    let app = app_with_tokens().await;
    let (status, created) = send(
        &app,
        reqwest::Method::POST,
        "/environments",
        Some(EXEC),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/environments/{}", created["id"].as_str().unwrap());
    let add = Some(json!({"wat": r#"(module (func (export "one") (result i32) i32.const 1))"#}));
    let (status, body) = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/instances"),
        Some(OTHER),
        add.clone(),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "environment_not_found"));
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/instances"),
        Some(EXEC),
        add,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let call = Some(json!({"function_name": "one"}));
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("{path}/call"),
        Some(OTHER),
        call.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, reqwest::Method::DELETE, &path, Some(OTHER), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = send(&app, reqwest::Method::GET, "/environments", Some(OTHER), None).await;
    assert_eq!(theirs["environments"], json!([]));
    let (status, body) = send(&app, reqwest::Method::POST, &format!("{path}/call"), Some(EXEC), call).await;
    assert_eq!((status, body["results"].clone()), (StatusCode::OK, json!([1])));
    let (_, all) = send(&app, reqwest::Method::GET, "/environments", Some(ADMIN), None).await;
    assert_eq!(all["environments"].as_array().unwrap().len(), 1);
    let (status, _) = send(&app, reqwest::Method::POST, "/environments", None, Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
