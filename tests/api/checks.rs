//! Checks for graders: `expected` outcomes answered with `passed` and a
//! short `diff` (inline, registered, on an instance, in a batch), and
//! `runs`, one call repeated on fresh instances with its time and fuel
//! summarized.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DOUBLE_HEX, code, spawn_app};

/// Prints "hello\nworld\n" and exits with status 3.
const GREETER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\nworld\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 12))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const 3))))"#;

fn double(n: i64, expected: Value) -> Value {
    json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [n], "expected": expected})
}

#[tokio::test]
async fn expected_results_say_passed_or_what_differed() {
    let app = spawn_app().await;
    let (status, body) = app.post("/", &double(21, json!({"results": [42]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["passed"], true, "{body}");
    assert!(body.get("diff").is_none(), "{body}");
    let (status, body) = app.post("/", &double(21, json!({"results": [43]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["passed"].clone(), body["diff"].clone()),
        (json!(false), json!(["results[0]: expected 43, got 42"]))
    );
    // Without `expected`, nothing is said.
    let (_, body) = app
        .post(
            "/",
            &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]}),
        )
        .await;
    assert!(body.get("passed").is_none(), "{body}");
    // An unknown field in `expected` is refused, as everywhere.
    let (status, body) = app.post("/", &double(1, json!({"result": [2]}))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
}

#[tokio::test]
async fn expected_output_and_exit_code_of_a_wasi_program() {
    let app = spawn_app().await;
    let run = |expected: Value| json!({"wat": GREETER, "expected": expected});
    let (status, body) = app
        .post("/", &run(json!({"stdout": "hello\nworld\n", "exit_code": 3})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["passed"], true, "{body}");
    let (_, body) = app
        .post("/", &run(json!({"stdout": "hello\nWorld\n", "exit_code": 0})))
        .await;
    assert_eq!(body["passed"], false, "{body}");
    assert_eq!(
        body["diff"],
        json!([
            "exit_code: expected 0, got 3",
            "stdout line 2: expected \"World\", got \"world\""
        ])
    );
}

#[tokio::test]
async fn an_expected_failure_passes_when_the_call_fails_so() {
    let app = spawn_app().await;
    let boom = |expected: Value| json!({"wat": "(module (func (export \"boom\") unreachable))", "function_name": "boom", "expected": expected});
    let (status, body) = app.post("/", &boom(json!({"error": "trap"}))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    assert_eq!(body["error"]["passed"], true, "{body}");
    let (_, body) = app.post("/", &boom(json!({"results": []}))).await;
    assert_eq!(body["error"]["passed"], false, "{body}");
    assert_eq!(body["error"]["diff"], json!(["the call failed with `trap`"]));
}

#[tokio::test]
async fn checks_work_on_instances_and_in_batches() {
    let app = spawn_app().await;
    let (_, body) = app
        .post(
            "/instances",
            &json!({"wat": "(module (global $n (mut i32) (i32.const 0)) (func (export \"inc\") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"}),
        )
        .await;
    let id = body["id"].as_str().unwrap();
    for (n, passed) in [(1, true), (3, false)] {
        let (status, body) = app
            .post(
                &format!("/instances/{id}/call"),
                &json!({"function_name": "inc", "expected": {"results": [n]}}),
            )
            .await;
        assert_eq!(
            (status, body["passed"].clone()),
            (StatusCode::OK, json!(passed)),
            "{body}"
        );
    }
    let (status, body) = app
        .post(
            "/batch",
            &json!({"calls": [double(1, json!({"results": [2]})), double(2, json!({"results": [5]}))]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["passed"], true);
    assert_eq!(body["results"][1]["diff"], json!(["results[0]: expected 5, got 4"]));
}

#[tokio::test]
async fn runs_repeat_a_call_on_fresh_instances() {
    let app = spawn_app().await;
    app.post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    let (status, body) = app
        .post(
            "/execute",
            &json!({"module_name": "utils", "function_name": "double", "params": [4], "runs": 5, "expected": {"results": [8]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["results"].clone(), body["passed"].clone()),
        (json!([8]), json!(true))
    );
    let runs = &body["runs"];
    assert_eq!(runs["count"], 5, "{body}");
    for spread in [&runs["wall_time_us"], &runs["fuel_consumed"]] {
        let (min, median, max) = (
            spread["min"].as_u64().unwrap(),
            spread["median"].as_u64().unwrap(),
            spread["max"].as_u64().unwrap(),
        );
        assert!(min <= median && median <= max, "{body}");
    }
    // The same code does the same work every run.
    assert_eq!(runs["fuel_consumed"]["min"], runs["fuel_consumed"]["max"], "{body}");
    // Each run is a fresh instance: a counter is 1 every time.
    let counter = r#"(module (global $n (mut i32) (i32.const 0)) (func (export "inc") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;
    let (_, body) = app
        .post("/", &json!({"wat": counter, "function_name": "inc", "runs": 3}))
        .await;
    assert_eq!(
        (body["results"].clone(), body["runs"]["count"].clone()),
        (json!([1]), json!(3)),
        "{body}"
    );
    for runs in [0, 101] {
        let (status, body) = app
            .post(
                "/",
                &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1], "runs": runs}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn stats_give_the_peak_memory_on_both_tiers() {
    let grow =
        r#"(module (memory (export "memory") 1) (func (export "grow") (result i32) (memory.grow (i32.const 2))))"#;
    for app in [
        crate::helpers::spawn_compiled_app().await,
        crate::helpers::spawn_interpreted_app().await,
    ] {
        let (status, body) = app.run_wat(grow, "grow", json!([])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([1]));
        assert_eq!(body["stats"]["memory_peak_bytes"], 3 * 65536, "{body}");
    }
}

#[tokio::test]
async fn a_trap_carries_its_webassembly_frames() {
    let app = crate::helpers::spawn_compiled_app().await;
    let wat = r#"(module $grader
      (func $inner (unreachable))
      (func $outer (export "run") (call $inner)))"#;
    let (status, body) = app.run_wat(wat, "run", json!([])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    let frames = body["error"]["frames"].as_array().expect("frames");
    let names: Vec<(&str, &str, u64)> = frames
        .iter()
        .map(|f| {
            (
                f["module"].as_str().unwrap(),
                f["func_name"].as_str().unwrap(),
                f["func_index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, vec![("grader", "inner", 0), ("grader", "outer", 1)], "{body}");
    assert!(frames[0]["offset"].as_u64().is_some(), "{body}");
}

#[tokio::test]
async fn stats_name_every_module_that_ran_by_its_sha256() {
    let app = spawn_app().await;
    let (_, utils) = app
        .post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    let utils_sha = utils["sha256"].as_str().unwrap().to_string();
    let (_, twice) = app
        .post(
            "/register",
            &json!({"module_name": "twice", "wasm_hex": crate::helpers::DOUBLE_TWICE_HEX, "host_modules": ["utils"]}),
        )
        .await;
    let twice_sha = twice["sha256"].as_str().unwrap().to_string();
    let expected = json!([{"name": "twice", "sha256": twice_sha}, {"name": "utils", "sha256": utils_sha}]);
    // On both tiers: the first call interprets, later ones run compiled.
    for _ in 0..3 {
        let (status, body) = app
            .post(
                "/execute",
                &json!({"module_name": "twice", "function_name": "double_twice", "params": [3]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stats"]["modules"], expected, "{body}");
    }
    // Inline code is `inline`; a failed call's stats name it too.
    let wat = "(module (func (export \"boom\") unreachable))";
    let (_, body) = app.post("/", &json!({"wat": wat, "function_name": "boom"})).await;
    let modules = &body["error"]["stats"]["modules"];
    assert_eq!(modules[0]["name"], "inline", "{body}");
    assert_eq!(modules[0]["sha256"].as_str().unwrap().len(), 64, "{body}");
}
