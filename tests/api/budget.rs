//! One fuel and time budget per request, limits that name their setting,
//! and traps classified by the spec's rules before any fuel arithmetic.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, code, spawn_app, spawn_app_with, test_settings};

/// A start function and an export that each burn about 1,000 units of fuel.
const BURN_TWICE: &str = r#"(module
  (func $burn (local i32)
    (loop (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 0) (i32.const 200)))))
  (start $burn)
  (func (export "f") (call $burn)))"#;

async fn run(app: &TestApp, wat: &str, limits: Value) -> (StatusCode, Value) {
    app.post("/", &json!({"wat": wat, "function_name": "f", "limits": limits}))
        .await
}

#[tokio::test]
async fn instantiation_and_the_call_share_one_fuel_budget_obeyed() {
    let app = spawn_app().await;
    let (status, body) = run(&app, BURN_TWICE, json!({"fuel": 5000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let used = body["stats"]["fuel_consumed"].as_u64().unwrap();
    assert!((1600..5000).contains(&used), "both halves are counted: {body}");
}

#[tokio::test]
async fn instantiation_and_the_call_share_one_fuel_budget_violated() {
    // Each half fits in 1,100 units alone; together they do not.
    let app = spawn_app().await;
    let (status, body) = run(&app, BURN_TWICE, json!({"fuel": 1100})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "fuel", "{body}");
    assert_eq!(body["error"]["stats"]["fuel_consumed"], 1100, "{body}");
}

#[tokio::test]
async fn an_out_of_bounds_bulk_copy_on_a_64_bit_memory_traps() {
    // The spec testsuite's bulk64.wast: a copy of 2^64-1 bytes is out of
    // bounds, a trap, whatever fuel remains.
    let app = spawn_app().await;
    for op in [
        "(memory.copy (i64.const 0) (i64.const 0) (i64.const -1))",
        "(memory.fill (i64.const 0) (i32.const 0) (i64.const -1))",
    ] {
        let wat = format!(r#"(module (memory i64 1) (func (export "f") {op}))"#);
        let (status, body) = run(&app, &wat, json!({})).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
            "{op}: {body}"
        );
        assert_eq!(body["error"]["trap"], "out_of_bounds_memory_access", "{body}");
        let fuel = body["error"]["stats"]["fuel_consumed"].as_u64().unwrap();
        assert!(fuel < 1000, "a trap is not fuel exhaustion: {body}");
    }
}

/// A server allowing `max` instances per link graph, with `a` and `b`
/// registered: `ROOT` imports from `b`, which imports from `a`, three
/// instances in all.
async fn chain_app(max: usize) -> TestApp {
    let mut settings = test_settings();
    settings.max_link_instances = max;
    let app = spawn_app_with(settings).await;
    let a = r#"(module (func (export "one") (result i32) (i32.const 1)))"#;
    let b = r#"(module (import "a" "one" (func $one (result i32))) (func (export "two") (result i32) (i32.add (call $one) (call $one))))"#;
    assert_eq!(app.register_wat("a", a, &[]).await.0, StatusCode::CREATED);
    assert_eq!(app.register_wat("b", b, &["a"]).await.0, StatusCode::CREATED);
    app
}

const ROOT: &str =
    r#"(module (import "b" "two" (func $two (result i32))) (func (export "f") (result i32) (call $two)))"#;

#[tokio::test]
async fn link_instance_limit_obeyed() {
    let app = chain_app(3).await;
    let (status, body) = app
        .post("/", &json!({"wat": ROOT, "function_name": "f", "host_modules": ["b"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([2]));
}

#[tokio::test]
async fn link_instance_limit_violated() {
    let app = chain_app(2).await;
    let (status, body) = app
        .post("/", &json!({"wat": ROOT, "function_name": "f", "host_modules": ["b"]}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "instances", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-link-instances"), "{message}");
    // An instance of the same graph is refused the same way.
    let (status, body) = app
        .post("/instances", &json!({"wat": ROOT, "host_modules": ["b"]}))
        .await;
    assert_eq!(
        (status, body["error"]["limit"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("instances")),
        "{body}"
    );
}

fn memories(n: usize) -> String {
    format!(
        r#"(module {} (func (export "f") (result i32) (i32.const 7)))"#,
        "(memory 1) ".repeat(n)
    )
}

#[tokio::test]
async fn memories_per_module_limit_obeyed() {
    // Five memories (as in the spec testsuite's address.wast, which the pool's
    // old cap of four refused as an invalid module) run with the defaults.
    let app = spawn_app().await;
    let (status, body) = app.run_wat(&memories(5), "f", json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([7]));
}

#[tokio::test]
async fn memories_per_module_limit_violated() {
    let mut settings = test_settings();
    settings.max_memories_per_module = 2;
    let app = spawn_app_with(settings).await;
    let (status, body) = app.run_wat(&memories(3), "f", json!([])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "memories", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("defines 3 memories") && message.contains("--max-memories-per-module"),
        "{message}"
    );
}

#[tokio::test]
async fn tables_per_module_limit_violated() {
    let mut settings = test_settings();
    settings.max_tables_per_module = 1;
    let app = spawn_app_with(settings).await;
    let wat = r#"(module (table 1 funcref) (table 1 funcref) (func (export "f")))"#;
    let (status, body) = app.run_wat(wat, "f", json!([])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "tables", "{body}");
}

#[tokio::test]
async fn a_wasi_program_that_runs_out_of_memory_keeps_its_output() {
    // memory.grow past the limit returns -1; the program reports it on
    // stderr and exits 1, as it would under `wasmtime -W max-memory-size`.
    let app = spawn_app().await;
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "out of memory\n")
      (func (export "_start")
        (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1))
          (then
            (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 14))
            (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $exit (i32.const 1))))))"#;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": wat, "wasi": {}, "limits": {"memory_bytes": 4 * 65536}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["exit_code"], 1, "{body}");
    assert_eq!(body["stderr"], "out of memory\n", "{body}");
    assert_eq!(body["stats"]["limits_hit"], json!(["memory"]), "{body}");
}
