//! Instances that live across calls: state kept, calls serialized per
//! instance, caps, idle expiry, and traps that leave the instance usable.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, code, spawn_app, spawn_app_with, test_settings};

const COUNTER: &str = r#"(module (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "inc") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n))
  (func (export "peek") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "boom") unreachable)
  (func (export "spin") (loop (br 0)))
  (func (export "work") (param i32) (result i32) (local i32)
    (loop (local.set 1 (i32.add (local.get 1) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 1) (local.get 0))))
    (local.get 1)))"#;

async fn create(app: &TestApp, body: Value) -> String {
    let (status, created) = app.post("/instances", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_string()
}

async fn call(app: &TestApp, id: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/instances/{id}/call"), &body).await
}

#[tokio::test]
async fn a_counter_lives_across_a_hundred_calls() {
    let app = spawn_app().await;
    app.register_wat("counter", COUNTER, &[]).await;
    let id = create(&app, json!({"module_name": "counter"})).await;
    let other = create(&app, json!({"module_name": "counter"})).await;
    // NODE.RANDOM: the node's name, then 128 random bits in hex.
    let (node, random) = id.split_once('.').expect("an id names its node");
    assert!(!node.is_empty() && node == other.split('.').next().unwrap());
    assert_eq!(random.len(), 32, "{id}");
    assert_ne!(id, other);
    for expected in 1..=100 {
        let (status, body) = call(&app, &id, json!({"function_name": "inc"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([expected]));
    }
    // Another instance of the same module has its own state.
    let (_, body) = call(&app, &other, json!({"function_name": "inc"})).await;
    assert_eq!(body["results"], json!([1]));
    let (status, info) = app.get(&format!("/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["calls"], 100);
    assert_eq!(info["module"], "counter");
    assert_eq!(info["memory_bytes"], 65536);
    assert!(info["exports"].as_array().unwrap().iter().any(|e| e["name"] == "inc"));
}

#[tokio::test]
async fn memory_written_in_one_call_is_read_in_the_next() {
    let app = spawn_app().await;
    let id = create(&app, json!({"wat": COUNTER})).await;
    let (status, _) = call(
        &app,
        &id,
        json!({"function_name": "inc", "memory_writes": [{"offset": 8, "hex": "2a000000"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = call(
        &app,
        &id,
        json!({"function_name": "peek", "params": [8], "memory_reads": [{"offset": 8, "length": 4}]}),
    )
    .await;
    assert_eq!(body["results"], json!([42]));
    assert_eq!(body["memory"][0]["data"], "2a000000");
}

#[tokio::test]
async fn a_trap_leaves_the_instance_usable_with_its_state() {
    let app = spawn_app().await;
    let id = create(&app, json!({"wat": COUNTER})).await;
    call(&app, &id, json!({"function_name": "inc"})).await;
    let (status, body) = call(&app, &id, json!({"function_name": "boom"})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "trap"));
    let (status, body) = call(&app, &id, json!({"function_name": "inc"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([2]));
}

#[tokio::test]
async fn fuel_is_refilled_for_every_call() {
    let app = spawn_app().await;
    let id = create(&app, json!({"wat": COUNTER, "limits": {"fuel": 5000}})).await;
    for _ in 0..3 {
        let (status, body) = call(&app, &id, json!({"function_name": "work", "params": [400]})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = call(&app, &id, json!({"function_name": "work", "params": [100000]})).await;
    assert_eq!(body["error"]["limit"], "fuel", "{status} {body}");
    let (status, _) = call(&app, &id, json!({"function_name": "work", "params": [400]})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deleted_instances_are_gone() {
    let app = spawn_app().await;
    let id = create(&app, json!({"wat": COUNTER})).await;
    let (_, list) = app.get("/instances").await;
    assert_eq!(list["instances"][0]["id"], id.as_str());
    assert_eq!(app.delete(&format!("/instances/{id}")).await.0, StatusCode::NO_CONTENT);
    let (status, body) = call(&app, &id, json!({"function_name": "inc"})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "instance_not_found"));
    let (status, body) = app.get(&format!("/instances/{id}")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "instance_not_found"));
}

#[tokio::test]
async fn live_instances_are_capped_in_number_and_memory() {
    let mut settings = test_settings();
    settings.max_instances = 2;
    settings.max_instance_memory_bytes = 3 << 20;
    // One client here: it may take the whole table.
    settings.max_instances_per_client = Some(2);
    settings.max_instance_memory_per_client = Some(3 << 20);
    let app = spawn_app_with(settings).await;
    let small = json!({"wat": COUNTER, "limits": {"memory_bytes": 1 << 20}});
    create(&app, small.clone()).await;
    let (status, body) = app.post("/instances", &json!({"wat": COUNTER})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity"),
        "default memory limit exceeds the budget"
    );
    create(&app, small.clone()).await;
    let (status, body) = app.post("/instances", &small).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 2 live instances")
    );
}

#[tokio::test]
async fn idle_instances_expire() {
    let mut settings = test_settings();
    settings.instance_idle_secs = 1;
    let app = spawn_app_with(settings).await;
    let id = create(&app, json!({"wat": COUNTER})).await;
    // Poll for expiry (bounded), rather than sleeping a guessed duration.
    let mut gone = false;
    for _ in 0..100 {
        if app.get(&format!("/instances/{id}")).await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "an instance idle past the timeout should be dropped");
}

#[tokio::test]
async fn calls_on_one_instance_wait_while_other_instances_run() {
    let mut settings = test_settings();
    settings.max_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    let busy = create(&app, json!({"wat": COUNTER})).await;
    let free = create(&app, json!({"wat": COUNTER})).await;
    let spin = {
        let (client, url) = (app.client.clone(), app.url(&format!("/instances/{busy}/call")));
        tokio::spawn(async move {
            let body = json!({"function_name": "spin", "limits": {"timeout_ms": 3000}});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Wait (bounded) until the spin holds the busy instance: its memory size
    // is then unknown. The test means nothing unless it does.
    let mut held = false;
    for _ in 0..400 {
        let (_, info) = app.get(&format!("/instances/{busy}")).await;
        if info["memory_bytes"].is_null() {
            held = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(held, "the spinning call never took the busy instance");
    for expected in 1..=5 {
        let (status, body) = call(&app, &free, json!({"function_name": "inc"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([expected]));
    }
    assert!(
        !spin.is_finished(),
        "the other instance answered while this one was still spinning"
    );
    // A call on the busy instance waits its turn, then runs normally.
    let (status, body) = call(&app, &busy, json!({"function_name": "inc"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(spin.is_finished());
    assert_eq!(spin.await.unwrap()["error"]["limit"], "time");
}

#[tokio::test]
async fn a_wasi_instance_reports_each_calls_output() {
    let app = spawn_app().await;
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "tick\n")
      (func (export "tick")
        (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 5))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let id = create(&app, json!({"wat": wat, "wasi": {}})).await;
    for _ in 0..2 {
        let (status, body) = call(&app, &id, json!({"function_name": "tick"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stdout"], "tick\n");
    }
}

#[tokio::test]
async fn instance_requests_are_validated() {
    let app = spawn_app().await;
    let (status, body) = app.post("/instances", &json!({})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (status, body) = app.post("/instances", &json!({"module_name": "nope"})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    let id = create(&app, json!({"wat": COUNTER})).await;
    let (status, body) = call(
        &app,
        &id,
        json!({"function_name": "inc", "limits": {"memory_bytes": 1}}),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (status, body) = call(&app, &id, json!({"function_name": "nope"})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "function_not_found"));
}

/// `GET /instances/{id}/globals/{name}` reads an exported global as it is
/// between calls, exactly and in its own type, on either tier.
#[tokio::test]
async fn an_exported_global_is_read_between_calls_on_either_tier() {
    let wat = r#"(module
      (global $n (export "n") (mut i32) (i32.const 0))
      (global (export "big") i64 (i64.const 9007199254740993))
      (global (export "nan") f32 (f32.const nan:0x200000))
      (global (export "neg_zero") f64 (f64.const -0))
      (func (export "inc") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;
    let mut compiled = test_settings();
    compiled.tier = wasm_exec_api::engine::TierMode::Compiled;
    let mut interpreter = test_settings();
    interpreter.tier = wasm_exec_api::engine::TierMode::Interpreter;
    for (tier, settings) in [("compiled", compiled), ("interpreter", interpreter)] {
        let app = spawn_app_with(settings).await;
        let id = create(&app, json!({ "wat": wat })).await;
        let (_, info) = app.get(&format!("/instances/{id}")).await;
        assert_eq!(info["tier"], tier, "{info}");
        for _ in 0..3 {
            call(&app, &id, json!({"function_name": "inc"})).await;
        }
        let global = |name: &str| {
            let path = format!("/instances/{id}/globals/{name}");
            let app = &app;
            async move { app.get(&path).await }
        };
        let (status, n) = global("n").await;
        assert_eq!(status, StatusCode::OK, "{n}");
        assert_eq!(
            n,
            json!({"name": "n", "type": "i32", "mutable": true, "value": 3}),
            "{tier}"
        );
        let (_, big) = global("big").await;
        assert_eq!(big["value"], json!(9_007_199_254_740_993_i64), "{tier}: i64 exactly");
        assert_eq!(big["mutable"], false);
        let (_, nan) = global("nan").await;
        assert_eq!(
            (&nan["type"], &nan["value"]),
            (&json!("f32"), &json!("nan:0x200000")),
            "{tier}"
        );
        let (_, zero) = global("neg_zero").await;
        assert_eq!(zero["value"], json!(-0.0), "{tier}");
        let (status, body) = global("inc").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "global_not_found"),
            "{tier}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("its exported globals: big, n, nan, neg_zero"),
            "{message}"
        );
    }
}
