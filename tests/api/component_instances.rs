//! Components as live instances: state that carries from call to call,
//! resources handed out as `{"resource": N}` and passed back (borrowed or
//! given away), dropped with their destructors run, linking and WASI, and
//! the component model's rule that a trapped instance is not entered again.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::components::{CALC_WIT, b64, calc_component, component, wasi_command};
use crate::helpers::{TestApp, code, spawn_app};

const COUNTERS_WIT: &str = "package test:res;
interface counters {
  resource counter {
    constructor(start: u32);
    increment: func(by: u32) -> u32;
  }
  peek: func(c: borrow<counter>) -> u32;
  consume: func(c: counter) -> u32;
}
world res {
  export counters;
  export dropped: func() -> u32;
  export boom: func();
}";

/// A counter resource: its representation is the address of its count in
/// the core module's memory; the destructor counts how often it ran.
fn counters_component() -> Vec<u8> {
    component(
        COUNTERS_WIT,
        "res",
        r#"(module
          (import "[export]test:res/counters" "[resource-new]counter" (func $new (param i32) (result i32)))
          (import "[export]test:res/counters" "[resource-rep]counter" (func $rep (param i32) (result i32)))
          (import "[export]test:res/counters" "[resource-drop]counter" (func $drop (param i32)))
          (memory 1)
          (global $next (mut i32) (i32.const 16))
          (global $dropped (mut i32) (i32.const 0))
          (func (export "test:res/counters#[constructor]counter") (param i32) (result i32)
            (local $at i32)
            (local.set $at (global.get $next))
            (global.set $next (i32.add (global.get $next) (i32.const 4)))
            (i32.store (local.get $at) (local.get 0))
            (call $new (local.get $at)))
          (func (export "test:res/counters#[method]counter.increment") (param i32 i32) (result i32)
            (i32.store (local.get 0) (i32.add (i32.load (local.get 0)) (local.get 1)))
            (i32.load (local.get 0)))
          (func (export "test:res/counters#peek") (param i32) (result i32)
            (i32.load (local.get 0)))
          (func (export "test:res/counters#consume") (param i32) (result i32)
            (local $count i32)
            (local.set $count (i32.load (call $rep (local.get 0))))
            (call $drop (local.get 0))
            (local.get $count))
          (func (export "test:res/counters#[dtor]counter") (param i32)
            (global.set $dropped (i32.add (global.get $dropped) (i32.const 1))))
          (func (export "dropped") (result i32) (global.get $dropped))
          (func (export "boom") unreachable))"#,
    )
}

/// Creates a live instance from `body`, answering its id.
async fn create(app: &TestApp, body: Value) -> String {
    let (status, body) = app.post("/instances", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn call(app: &TestApp, id: &str, function: &str, params: Value) -> (StatusCode, Value) {
    app.post(
        &format!("/instances/{id}/call"),
        &json!({"function_name": function, "params": params}),
    )
    .await
}

/// Calls and expects success, answering the results.
async fn results(app: &TestApp, id: &str, function: &str, params: Value) -> Value {
    let (status, body) = call(app, id, function, params).await;
    assert_eq!(status, StatusCode::OK, "{function}: {body}");
    body["results"].clone()
}

#[tokio::test]
async fn resources_live_in_the_instance_and_cross_as_numbers() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/instances", &json!({"wasm_base64": b64(&counters_component())}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "component");
    assert_eq!(body["resources"], json!([]));
    assert_eq!(body["tier"], "compiled");
    let id = body["id"].as_str().unwrap().to_string();

    // A constructor's result is kept by the instance and named by number.
    let (status, body) = call(&app, &id, "counters#[constructor]counter", json!([5])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([{"resource": 1}]));
    assert_eq!(body["result_types"], json!(["own<resource>"]));
    // A method borrows it; its state carries from call to call.
    let increment = "test:res/counters#[method]counter.increment";
    assert_eq!(
        results(&app, &id, increment, json!([{"resource": 1}, 3])).await,
        json!([8])
    );
    assert_eq!(
        results(&app, &id, increment, json!([{"resource": 1}, 4])).await,
        json!([12])
    );
    assert_eq!(
        results(&app, &id, "counters.peek", json!([{"resource": 1}])).await,
        json!([12])
    );

    assert_eq!(
        results(&app, &id, "counters#[constructor]counter", json!([100])).await,
        json!([{"resource": 2}])
    );
    let (_, body) = app.get(&format!("/instances/{id}")).await;
    assert_eq!(body["resources"], json!([1, 2]));

    // Given away as `own`, it is the callee's: its number is gone, and the
    // guest's destructor ran when the callee dropped it.
    assert_eq!(
        results(&app, &id, "counters#consume", json!([{"resource": 2}])).await,
        json!([100])
    );
    assert_eq!(results(&app, &id, "dropped", json!([])).await, json!([1]));
    let (status, body) = call(&app, &id, "counters#peek", json!([{"resource": 2}])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("params[0]") && message.contains("no resource 2"),
        "{message}"
    );
    let (_, body) = app.get(&format!("/instances/{id}")).await;
    assert_eq!(body["resources"], json!([1]));

    // Not a resource where one is taken: the path and the shape are named.
    let (status, body) = call(&app, &id, "counters#peek", json!([1])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("params[0]: expected {\"resource\": N}"), "{message}");
    // A failed conversion gives nothing away.
    let (status, body) = call(&app, &id, "counters#consume", json!([{"resource": 1}, 2])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
    assert_eq!(
        results(&app, &id, "counters#peek", json!([{"resource": 1}])).await,
        json!([12])
    );

    // Dropped by the client, the destructor runs in the guest.
    let (status, body) = app.delete(&format!("/instances/{id}/resources/1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resource"], 1);
    assert!(body["stats"]["fuel_consumed"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(results(&app, &id, "dropped", json!([])).await, json!([2]));
    let (status, body) = app.delete(&format!("/instances/{id}/resources/1")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "resource_not_found"),
        "{body}"
    );
    let (status, body) = app.delete(&format!("/instances/{id}/resources/x")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "resource_not_found"),
        "{body}"
    );

    // WAVE cannot write resources; asking for it is refused up front.
    let (status, body) = app
        .post(
            &format!("/instances/{id}/call"),
            &json!({"function_name": "counters#[constructor]counter", "params": "7", "result_format": "wave"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
    // Numbers are never reused: the next resource is 3.
    assert_eq!(
        results(&app, &id, "counters#[constructor]counter", json!([0])).await,
        json!([{"resource": 3}])
    );
}

#[tokio::test]
async fn a_one_shot_call_refuses_resources_and_points_to_instances() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_base64": b64(&counters_component()), "function_name": "counters#[constructor]counter", "params": [1]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("POST /instances"), "{message}");
}

#[tokio::test]
async fn a_component_instance_that_trapped_is_not_entered_again() {
    let app = spawn_app().await;
    let id = create(&app, json!({"wasm_base64": b64(&counters_component())})).await;
    assert_eq!(results(&app, &id, "dropped", json!([])).await, json!([0]));
    let (status, body) = call(&app, &id, "boom", json!([])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    assert_eq!(body["error"]["trap"], "unreachable");
    let (status, body) = call(&app, &id, "dropped", json!([])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    assert_eq!(body["error"]["trap"], "cannot_enter_component");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("delete it and create another"), "{message}");
    let (status, _) = app.delete(&format!("/instances/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn registered_and_linked_components_live_as_instances() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/register",
            &json!({"module_name": "calc", "wasm_base64": b64(&calc_component())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = create(&app, json!({"module_name": "calc"})).await;
    assert_eq!(
        results(&app, &id, "math.add", json!(["18446744073709551614", 1])).await,
        json!([18446744073709551615u64])
    );
    let (status, body) = app
        .post(
            &format!("/instances/{id}/call"),
            &json!({"function_name": "is-even", "params": "42", "result_format": "wave"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!(["true"]));
    let (_, body) = app.get(&format!("/instances/{id}")).await;
    assert_eq!(body["module"], "calc");
    assert_eq!(body["kind"], "component");
    assert!(body["wit"].as_str().unwrap().contains("is-even"), "{body}");

    // Inline code linked to the registered component.
    let twice = b64(&component(
        CALC_WIT,
        "twice",
        r#"(module
          (import "test:calc/math@0.1.0" "add" (func $add (param i64 i64) (result i64)))
          (func (export "add-twice") (param i64 i64) (result i64)
            (call $add (call $add (local.get 0) (local.get 1)) (local.get 1))))"#,
    ));
    let linked = create(&app, json!({"wasm_base64": twice, "host_modules": ["calc"]})).await;
    assert_eq!(results(&app, &linked, "add-twice", json!([1, 10])).await, json!([21]));
    // Without it, the import nothing provides is named, and nothing is made.
    let (status, body) = app.post("/instances", &json!({"wasm_base64": twice})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("test:calc/math@0.1.0"),
        "{body}"
    );

    // What only core modules have is refused clearly.
    let (status, body) = app
        .post(
            &format!("/instances/{id}/call"),
            &json!({"function_name": "is-even", "params": [1], "memory_reads": [{"offset": 0, "length": 1}]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    let (status, body) = app.get(&format!("/instances/{id}/globals/g")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "global_not_found"),
        "{body}"
    );
}

#[tokio::test]
async fn a_wasi_command_instance_reports_each_call_own_output() {
    // Prints "tick" on every run of `wasi:cli/run`.
    let core = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 64) "tick\n")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 5))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap();
    let app = spawn_app().await;
    let id = create(&app, json!({"wasm_base64": b64(&wasi_command(&core))})).await;
    for _ in 0..2 {
        let (status, body) = app.post(&format!("/instances/{id}/call"), &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["stdout"].clone(), body["exit_code"].clone()),
            (json!("tick\n"), json!(0))
        );
    }
}

#[tokio::test]
async fn environments_take_core_modules_and_say_so() {
    let app = spawn_app().await;
    let (status, body) = app.post("/environments", &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let env = body["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/environments/{env}/instances"),
            &json!({"wasm_base64": b64(&calc_component())}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_module"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("this is a component") && message.contains("environments"),
        "{message}"
    );
}
