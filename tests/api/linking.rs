//! Linking registered modules: chains, diamonds, shared state, and the
//! errors that name what is missing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{COUNTER, DOUBLE_HEX, DOUBLE_TWICE_HEX, code, spawn_app, spawn_compiled_app, without_stats};

#[tokio::test]
async fn a_three_deep_chain_links_recursively() {
    let app = spawn_app().await;
    app.register_wat(
        "c",
        r#"(module (func (export "inc") (param i32) (result i32) (i32.add (local.get 0) (i32.const 1))))"#,
        &[],
    )
    .await;
    let (status, body) = app
        .register_wat(
            "b",
            r#"(module (import "c" "inc" (func $inc (param i32) (result i32)))
                (func (export "inc2") (param i32) (result i32) (call $inc (call $inc (local.get 0)))))"#,
            &["c"],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.register_wat(
        "a",
        r#"(module (import "b" "inc2" (func $inc2 (param i32) (result i32)))
            (func (export "inc4") (param i32) (result i32) (call $inc2 (call $inc2 (local.get 0)))))"#,
        &["b"],
    )
    .await;
    let (status, body) = app.execute("a", "inc4", json!([10])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([14]));

    // Inline code can sit on top of the chain too.
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": r#"(module (import "a" "inc4" (func $f (param i32) (result i32)))
                (func (export "go") (result i32) (call $f (i32.const 0))))"#,
                "function_name": "go", "host_modules": ["a"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([4]));
}

#[tokio::test]
async fn a_diamond_instantiates_the_shared_module_once() {
    let app = spawn_app().await;
    // `counter` keeps state in a global; if `left` and `right` got separate
    // instances of it, the second bump would return 1 again.
    app.register_wat("counter", COUNTER, &[]).await;
    for side in ["left", "right"] {
        let (status, body) = app
            .register_wat(
                side,
                r#"(module (import "counter" "bump" (func $b (result i32))) (func (export "bump") (result i32) (call $b)))"#,
                &["counter"],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app
        .register_wat(
            "top",
            r#"(module (import "left" "bump" (func $l (result i32))) (import "right" "bump" (func $r (result i32)))
                (func (export "both") (result i32 i32) (call $l) (call $r)))"#,
            &["left", "right"],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.execute("top", "both", json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([1, 2]));
}

#[tokio::test]
async fn an_imported_memory_is_shared_between_modules() {
    let app = spawn_app().await;
    app.register_wat(
        "mem",
        r#"(module (memory (export "memory") 1)
            (func (export "read") (param i32) (result i32) (i32.load (local.get 0))))"#,
        &[],
    )
    .await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": r#"(module (import "mem" "memory" (memory 1)) (import "mem" "read" (func $read (param i32) (result i32)))
                (func (export "write_then_read") (result i32) (i32.store (i32.const 8) (i32.const 1234)) (call $read (i32.const 8))))"#,
                "function_name": "write_then_read", "host_modules": ["mem"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([1234]));
}

#[tokio::test]
async fn an_import_no_host_module_satisfies_is_a_link_error_naming_it() {
    let app = spawn_app().await;
    let wat = r#"(module (import "env" "print" (func (param i32))))"#;
    let (status, body) = app.post("/", &json!({"wat": wat, "function_name": "x"})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`env`.`print` (func (i32) -> ())") && message.contains("no host module named `env`"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_export_or_wrong_signature_is_a_link_error() {
    let app = spawn_app().await;
    app.register_wat(
        "utils",
        r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#,
        &[],
    )
    .await;

    let (status, body) = app
        .register_wat(
            "x",
            r#"(module (import "utils" "triple" (func (param i32) (result i32))))"#,
            &["utils"],
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no export named `triple` (it exports: double)")
    );

    let (status, body) = app
        .register_wat(
            "y",
            r#"(module (import "utils" "double" (func (param i64) (result i64))))"#,
            &["utils"],
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("(func (i64) -> (i64))") && message.contains("as func (i32) -> (i32)"),
        "{message}"
    );

    let (status, body) = app.register_wat("z", r#"(module)"#, &["nowhere"]).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("host module `nowhere` is not registered")
    );
    assert_eq!(app.get("/modules").await.1["modules"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_memory_import_larger_than_the_export_is_a_link_error_at_registration() {
    let app = spawn_app().await;
    app.register_wat("mem", r#"(module (memory (export "memory") 1 2))"#, &[])
        .await;
    let (status, body) = app
        .register_wat("big", r#"(module (import "mem" "memory" (memory 4)))"#, &["mem"])
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("(memory 4.. pages)") && message.contains("as memory 1..2 pages"),
        "{message}"
    );
    let (status, body) = app
        .register_wat("ok", r#"(module (import "mem" "memory" (memory 1 3)))"#, &["mem"])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A link graph in which no module keeps state (here the origin's
/// example: `double_twice` imports `utils.double`) serves one-shot calls
/// from instances an earlier call left, as a lone stateless module does:
/// later calls make none (`instantiate_us` 0). A host module registered
/// again with other code makes another graph, whose calls never run on
/// the old one's instances; a graph with state anywhere is never shared.
#[tokio::test]
async fn a_stateless_link_graph_is_reused_only_for_the_same_graph() {
    let app = spawn_compiled_app().await;
    let utils = json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX});
    assert_eq!(app.post("/register", &utils).await.0, StatusCode::CREATED);
    let linking = json!({"wasm_hex": DOUBLE_TWICE_HEX, "function_name": "double_twice", "params": [2], "host_modules": ["utils"]});
    for call in 0..4 {
        let (status, body) = app.post("/", &linking).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([8])), "{body}");
        if call > 0 {
            assert_eq!(body["stats"]["instantiate_us"], 0, "call {call}: {body}");
        }
    }

    // `utils.double` now triples: the same inline code links another graph.
    // While `utils` is gone, the graph the calls above resolved is not
    // used again: the call is a link error naming the missing module.
    let (status, body) = app.delete("/modules/utils").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.post("/", &linking).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("utils"), "{body}");
    let triple = r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3))))"#;
    assert_eq!(app.register_wat("utils", triple, &[]).await.0, StatusCode::CREATED);
    for call in 0..4 {
        let (status, body) = app.post("/", &linking).await;
        assert_eq!(
            (status, &body["results"]),
            (StatusCode::OK, &json!([18])),
            "call {call}: {body}"
        );
    }

    // A host that keeps a count: every call sees a fresh one.
    app.register_wat("counter", COUNTER, &[]).await;
    let (status, body) = app
        .register_wat(
            "bumper",
            r#"(module (import "counter" "bump" (func $bump (result i32))) (func (export "go") (result i32) (call $bump)))"#,
            &["counter"],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for call in 0..4 {
        let (status, body) = app.execute("bumper", "go", json!([])).await;
        assert_eq!(
            (status, &body["results"]),
            (StatusCode::OK, &json!([1])),
            "call {call}: {body}"
        );
    }
}

/// The later calls of a stateless link graph are made without awaiting,
/// on the graph's kept instances; each answer, success or failure, is the
/// first call's (which instantiated the graph) but for the timings and
/// for the first compile of the inline code.
#[tokio::test]
async fn a_linked_graphs_later_calls_answer_as_its_first_did() {
    let app = spawn_compiled_app().await;
    let host = r#"(module
        (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
        (func (export "boom") (unreachable))
        (func (export "spin") (loop (br 0))))"#;
    let (status, body) = app.register_wat("at_once_host", host, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let root = r#"(module
        (import "at_once_host" "double" (func $double (param i32) (result i32)))
        (import "at_once_host" "boom" (func $boom))
        (import "at_once_host" "spin" (func $spin))
        (func (export "double") (param i32) (result i32) (call $double (local.get 0)))
        (func (export "boom") (call $boom))
        (func (export "spin") (call $spin)))"#;
    let calls = [
        json!({"function_name": "double", "params": [21]}),
        json!({"function_name": "double", "params": ["-0x80000000"]}),
        json!({"function_name": "boom"}),
        json!({"function_name": "spin", "limits": {"fuel": 10000}}),
        json!({"function_name": "double", "params": [1.5]}),
        json!({"function_name": "nope"}),
    ];
    // Code of its own for each kind of call (an immutable global keeps it
    // stateless), so that its first call instantiates the graph.
    let code = |kind: usize| {
        let global = format!("(global i32 (i32.const {kind})) (func (export \"double\")");
        root.replacen("(func (export \"double\")", &global, 1)
    };
    for (kind, mut call) in calls.into_iter().enumerate() {
        call["wat"] = json!(code(kind));
        call["host_modules"] = json!(["at_once_host"]);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (status, body) = app.post("/", &call).await;
            // Timings, and how the code was found: the first call compiles.
            let differ = ["wall_time_us", "call_us", "instantiate_us", "compile", "compile_us"];
            answers.push((status, without_stats(body, &differ)));
        }
        assert_ne!(answers[0].1["error"]["code"], "invalid_module", "{call}");
        assert_eq!(answers[0], answers[1], "{call}");
        assert_eq!(answers[1], answers[2], "{call}");
    }
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": code(0), "host_modules": ["at_once_host"], "function_name": "double", "params": [4]}),
        )
        .await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([8])), "{body}");
    assert_eq!(body["stats"]["compile"], "cached", "{body}");
    assert_eq!(body["stats"]["instantiate_us"], 0, "{body}");
    assert_eq!(body["stats"]["modules"][1]["name"], "at_once_host", "{body}");
}
