//! The registry endpoints: register, list, describe, download, delete, and
//! the rules that keep names immutable and dependencies intact.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, code, spawn_app, spawn_compiled_app};

#[tokio::test]
async fn a_registered_module_is_listed_described_downloaded_and_executed() {
    let app = spawn_app().await;
    let (status, created) = app
        .post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let sha = created["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(created["size"], 43);

    let (status, list) = app.get("/modules").await;
    assert_eq!(status, StatusCode::OK);
    let listed = &list["modules"][0];
    assert_eq!(
        (listed["name"].as_str(), listed["sha256"].as_str()),
        (Some("utils"), Some(sha.as_str()))
    );
    assert_eq!(listed["host_modules"], json!([]));
    assert!(listed["created"].as_str().unwrap().ends_with('Z'));

    let (status, detail) = app.get("/modules/utils").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["exports"],
        json!([{"name": "double", "kind": "func", "type": "(i32) -> (i32)", "params": ["i32"], "results": ["i32"]}])
    );
    assert_eq!(detail["imports"], json!([]));

    let response = app.client.get(app.url("/modules/utils/wasm")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/wasm");
    assert_eq!(
        response.bytes().await.unwrap().to_vec(),
        hex::decode(DOUBLE_HEX).unwrap()
    );

    let (status, body) = app.execute("utils", "double", json!([21])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([42]));
    // Compiled in the background since registration: until that lands the
    // interpreter answers, compiling nothing; after, the compiled module.
    match body["stats"]["tier"].as_str() {
        Some("compiled") => assert_eq!(body["stats"]["compile"], "cached", "{body}"),
        _ => assert!(body["stats"].get("compile").is_none(), "{body}"),
    }
}

#[tokio::test]
async fn deleting_a_module_removes_it() {
    let app = spawn_app().await;
    app.post("/register", &json!({"module_name": "gone", "wasm_hex": DOUBLE_HEX}))
        .await;
    let (status, _) = app.delete("/modules/gone").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/modules/gone").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    let (status, body) = app.delete("/modules/gone").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    let (status, body) = app.execute("gone", "double", json!([1])).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
}

/// A name's module is remembered per thread on the hot path
/// (`Registry::with_compiled_now`); deleting the name, or registering other
/// code under it, is seen by the very next call, though the old code stays
/// compiled in memory.
#[tokio::test]
async fn a_name_deleted_or_registered_again_runs_what_it_names_now() {
    let app = spawn_compiled_app().await;
    let constant = |n: i32| format!(r#"(module (func (export "f") (result i32) i32.const {n}))"#);
    assert_eq!(app.register_wat("m", &constant(1), &[]).await.0, StatusCode::CREATED);
    for _ in 0..3 {
        let (status, body) = app.execute("m", "f", json!([])).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([1])), "{body}");
    }
    assert_eq!(app.delete("/modules/m").await.0, StatusCode::NO_CONTENT);
    let (status, body) = app.execute("m", "f", json!([])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "module_not_found"),
        "{body}"
    );

    assert_eq!(app.register_wat("m", &constant(2), &[]).await.0, StatusCode::CREATED);
    for _ in 0..3 {
        let (status, body) = app.execute("m", "f", json!([])).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([2])), "{body}");
    }
}

#[tokio::test]
async fn a_taken_name_is_module_exists() {
    let app = spawn_app().await;
    app.post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    let (status, body) = app
        .post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "module_exists"));
}

#[tokio::test]
async fn a_module_others_depend_on_is_module_in_use() {
    let app = spawn_app().await;
    app.register_wat(
        "base",
        r#"(module (func (export "one") (result i32) i32.const 1))"#,
        &[],
    )
    .await;
    let (status, _) = app
        .register_wat(
            "user",
            r#"(module (import "base" "one" (func (result i32))))"#,
            &["base"],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.delete("/modules/base").await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "module_in_use"));
    assert_eq!(body["error"]["dependents"], json!(["user"]));
    assert_eq!(app.delete("/modules/user").await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.delete("/modules/base").await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn invalid_names_and_modules_are_refused_at_registration() {
    let app = spawn_app().await;
    for name in ["", "a/b", "wasi_snapshot_preview1", ".x"] {
        let (status, body) = app
            .post("/register", &json!({"module_name": name, "wasm_hex": DOUBLE_HEX}))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{name:?}"
        );
    }
    let (status, body) = app
        .post("/register", &json!({"module_name": "bad", "wasm_hex": "00"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_module"));
    assert_eq!(app.get("/modules").await.1["modules"], json!([]));
}

#[tokio::test]
async fn of_concurrent_registrations_of_one_name_exactly_one_wins() {
    let app = spawn_app().await;
    let attempts = (0..16).map(|i| {
        let wat = format!(r#"(module (func (export "n") (result i32) i32.const {i}))"#);
        let app = &app;
        async move { app.register_wat("contested", &wat, &[]).await }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let winners: Vec<_> = outcomes.iter().filter(|(s, _)| *s == StatusCode::CREATED).collect();
    let losers = outcomes
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "module_exists")
        .count();
    assert_eq!((winners.len(), losers), (1, 15), "{outcomes:?}");
    let (_, stored) = app.get("/modules/contested").await;
    assert_eq!(stored["sha256"], winners[0].1["sha256"]);
}

#[tokio::test]
async fn inspect_lists_a_modules_interface_without_running_or_storing_it() {
    let app = crate::helpers::spawn_app().await;
    let wat = r#"(module
        (import "env" "log" (func (param i64)))
        (memory (export "mem") 1)
        (func (export "add") (param i64 f32) (result f64) (f64.const 0))
        (func (export "_start") (unreachable)))"#;
    let (status, body) = app.post("/inspect", &serde_json::json!({"wat": wat})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["sha256"].as_str().unwrap().len(), 64);
    assert!(body["size"].as_u64().unwrap() > 0);
    let add = body["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "add")
        .unwrap();
    assert_eq!(add["type"], "(i64, f32) -> (f64)");
    assert_eq!(add["params"], serde_json::json!(["i64", "f32"]));
    assert_eq!(body["imports"][0]["module"], "env");
    assert_eq!(body["exports"][0]["kind"], "memory");
    // Nothing ran (the start export traps) and nothing was stored.
    let (_, list) = app.get("/modules").await;
    assert_eq!(list["modules"], serde_json::json!([]));

    let (status, body) = app.post("/inspect", &serde_json::json!({"wat": "(module"})).await;
    assert_eq!((status.as_u16(), crate::helpers::code(&body)), (400, "invalid_module"));
}
