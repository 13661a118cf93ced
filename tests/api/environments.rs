//! Environments: many instances in one store, linked live. Shared memory,
//! tables and globals between instances, `register` after calls changed
//! state, imports resolved to exposed names before registered modules,
//! the spec's failure semantics, limits across the environment, access,
//! caps and expiry, WASI, and externref values.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, code, spawn_app, spawn_app_with, test_settings};

/// One instance exports a memory and writes to it.
const WRITER: &str = r#"(module
  (memory (export "mem") 1)
  (func (export "put") (param i32 i32) (i32.store (local.get 0) (local.get 1))))"#;

/// Another imports that memory and reads from it.
const READER: &str = r#"(module
  (import "shared" "mem" (memory 1))
  (func (export "get") (param i32) (result i32) (i32.load (local.get 0))))"#;

/// Counts up to its param: as long a call as a test needs.
const SPIN: &str = r#"(module (func (export "spin") (param i32) (result i32) (local i32)
  (loop (local.set 1 (i32.add (local.get 1) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 1) (local.get 0))))
  (local.get 1)))"#;

/// Waits (bounded) until a call holds the environment `env`: while one
/// does, its description has no instance list.
async fn wait_until_busy(app: &TestApp, env: &str) {
    for _ in 0..200 {
        let (_, info) = app.get(&format!("/environments/{env}")).await;
        if info.get("instances").is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the long call never started");
}

async fn new_env(app: &TestApp, body: Value) -> String {
    let (status, created) = app.post("/environments", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["instances"], json!([]));
    created["id"].as_str().unwrap().to_string()
}

async fn add(app: &TestApp, env: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/environments/{env}/instances"), &body).await
}

async fn added(app: &TestApp, env: &str, body: Value) -> Value {
    let (status, member) = add(app, env, body).await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    member
}

async fn call(app: &TestApp, env: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/environments/{env}/call"), &body).await
}

async fn results(app: &TestApp, env: &str, body: Value) -> Value {
    let (status, answer) = call(app, env, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["results"].clone()
}

#[tokio::test]
async fn two_instances_share_one_memory_one_writes_the_other_reads() {
    let app = spawn_app().await;
    // No body at all is an environment with the server's limits; its path
    // is in `Location`.
    let response = app.client.post(app.url("/environments")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let made: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/environments/{}", made["id"].as_str().unwrap()));
    let (status, _) = app.post("/environments", &Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "a null body is no body");
    let (status, body) = app.post("/environments", &json!([null, null])).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    let env = new_env(&app, json!({})).await;
    let writer = added(&app, &env, json!({"wat": WRITER, "name": "writer", "as": "shared"})).await;
    assert_eq!(
        (writer["index"].clone(), writer["exposed_as"].clone()),
        (json!(0), json!(["shared"]))
    );
    assert_eq!(writer["stats"]["tier"], "compiled");
    let reader = added(&app, &env, json!({"wat": READER, "name": "reader"})).await;
    assert_eq!(reader["imports"][0]["module"], "shared");

    results(
        &app,
        &env,
        json!({"instance": "writer", "function_name": "put", "params": [16, 42]}),
    )
    .await;
    let got = results(
        &app,
        &env,
        json!({"instance": "reader", "function_name": "get", "params": [16]}),
    )
    .await;
    assert_eq!(got, json!([42]));
    // Without `instance`, the latest instance is called.
    assert_eq!(
        results(&app, &env, json!({"function_name": "get", "params": [16]})).await,
        json!([42])
    );
    // The memory is one: a write through the reader's request lands in the
    // writer's memory, named `NAME:export`.
    let (status, body) = call(
        &app,
        &env,
        json!({"instance": "reader", "function_name": "get", "params": [0],
               "memory_writes": [{"memory": "writer:mem", "offset": 0, "hex": "07000000"}],
               "memory_reads": [{"memory": "shared:mem", "offset": 16, "length": 4, "encoding": "hex"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([7]));
    assert_eq!(body["memory"][0]["data"], "2a000000");

    let (status, info) = app.get(&format!("/environments/{env}")).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["memory_bytes"], 65536, "one memory, counted once");
    let names: Vec<&str> = info["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["writer", "reader"]);
    let (_, listed) = app.get("/environments").await;
    assert_eq!(listed["environments"].as_array().unwrap().len(), 3);

    let (status, _) = app.delete(&format!("/environments/{env}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(&app, &env, json!({"function_name": "get", "params": [0]})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "environment_not_found"));
}

/// The spec's `register` after calls: an importer links to the memory as
/// it has grown, the global as it was set, and the table as it was written.
#[tokio::test]
async fn register_exposes_a_running_instance_with_the_state_calls_gave_it() {
    let app = spawn_app().await;
    let env = new_env(&app, json!({})).await;
    let state = r#"(module
      (memory (export "mem") 1)
      (global (export "g") (mut i32) (i32.const 0))
      (table (export "tab") 1 funcref)
      (func $seven (result i32) i32.const 7)
      (elem declare func $seven)
      (func (export "grow") (result i32) (memory.grow (i32.const 1)))
      (func (export "set") (param i32) (global.set 0 (local.get 0)))
      (func (export "fill") (table.set (i32.const 0) (ref.func $seven))))"#;
    added(&app, &env, json!({"wat": state, "name": "$S"})).await;
    results(&app, &env, json!({"function_name": "grow"})).await;
    results(&app, &env, json!({"function_name": "set", "params": [99]})).await;
    results(&app, &env, json!({"function_name": "fill"})).await;
    // An import needing 2 pages does not link before the registration...
    let importer = r#"(module
      (import "S" "mem" (memory 2))
      (import "S" "g" (global (mut i32)))
      (import "S" "tab" (table 1 funcref))
      (type $t (func (result i32)))
      (func (export "pages") (result i32) (memory.size))
      (func (export "g") (result i32) (global.get 0))
      (func (export "bump") (global.set 0 (i32.add (global.get 0) (i32.const 1))))
      (func (export "call0") (result i32) (call_indirect (type $t) (i32.const 0))))"#;
    let (status, body) = add(&app, &env, json!({"wat": importer})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("`S`.`mem`"),
        "{body}"
    );

    let (status, exposed) = app
        .post(
            &format!("/environments/{env}/register"),
            &json!({"instance": "$S", "as": "S"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{exposed}");
    assert_eq!(exposed["exposed_as"], json!(["S"]));
    // ... and after it, the grown memory (2 pages now) fits.
    added(&app, &env, json!({"wat": importer, "name": "$I"})).await;
    assert_eq!(results(&app, &env, json!({"function_name": "pages"})).await, json!([2]));
    assert_eq!(results(&app, &env, json!({"function_name": "g"})).await, json!([99]));
    assert_eq!(results(&app, &env, json!({"function_name": "call0"})).await, json!([7]));
    // A global set through the importer is the exporter's global.
    results(&app, &env, json!({"function_name": "bump"})).await;
    let (status, global) = app.get(&format!("/environments/{env}/globals/g?instance=%24S")).await;
    assert_eq!(status, StatusCode::OK, "{global}");
    assert_eq!(global["value"], 100);
    assert_eq!(global["mutable"], true);
    let (status, body) = app
        .get(&format!("/environments/{env}/globals/nope?instance=%24S"))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "global_not_found"));
}

/// Imports resolve to exposed names first, then to registered modules,
/// each instantiated once per environment and shared by its importers.
#[tokio::test]
async fn registered_modules_are_instantiated_once_per_environment() {
    let app = spawn_app().await;
    let counter = r#"(module (global $n (mut i32) (i32.const 0))
      (func (export "next") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;
    let (status, body) = app.register_wat("counter", counter, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user = r#"(module (import "counter" "next" (func $next (result i32)))
      (func (export "next") (result i32) (call $next)))"#;
    let env = new_env(&app, json!({})).await;
    added(&app, &env, json!({"wat": user, "name": "a"})).await;
    added(&app, &env, json!({"wat": user, "name": "b"})).await;
    assert_eq!(
        results(&app, &env, json!({"instance": "a", "function_name": "next"})).await,
        json!([1])
    );
    assert_eq!(
        results(&app, &env, json!({"instance": "b", "function_name": "next"})).await,
        json!([2])
    );
    // A registered module added by name is an instance of its own.
    added(&app, &env, json!({"module_name": "counter", "name": "own"})).await;
    assert_eq!(
        results(&app, &env, json!({"instance": "own", "function_name": "next"})).await,
        json!([1])
    );
    let (_, info) = app.get(&format!("/environments/{env}")).await;
    assert_eq!(info["registered_modules"], json!(["counter"]));

    // Another environment has its own copy.
    let other = new_env(&app, json!({})).await;
    added(&app, &other, json!({"wat": user})).await;
    assert_eq!(
        results(&app, &other, json!({"function_name": "next"})).await,
        json!([1])
    );

    // An exposed name hides a registered module of the same name.
    let fake = r#"(module (func (export "next") (result i32) i32.const 1000))"#;
    added(&app, &other, json!({"wat": fake, "as": "counter"})).await;
    added(&app, &other, json!({"wat": user, "name": "c"})).await;
    assert_eq!(
        results(&app, &other, json!({"instance": "c", "function_name": "next"})).await,
        json!([1000])
    );
}

/// A trap leaves the environment usable; a failed instantiation adds no
/// instance, but what its start function wrote into an imported memory
/// before trapping stays, as the spec says.
#[tokio::test]
async fn failures_leave_the_environment_as_the_spec_says() {
    let app = spawn_app().await;
    let env = new_env(&app, json!({})).await;
    added(&app, &env, json!({"wat": WRITER, "name": "w", "as": "shared"})).await;
    let trapping_start = r#"(module (import "shared" "mem" (memory 1))
      (func $start (i32.store (i32.const 32) (i32.const 5)) unreachable)
      (start $start))"#;
    let (status, body) = add(&app, &env, json!({"wat": trapping_start, "name": "bad"})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    assert_eq!(body["error"]["trap"], "unreachable");
    let (_, info) = app.get(&format!("/environments/{env}")).await;
    assert_eq!(info["instances"].as_array().unwrap().len(), 1, "{info}");
    let (status, body) = call(&app, &env, json!({"instance": "bad", "function_name": "f"})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "instance_not_found"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("named instances: w"),
        "{body}"
    );

    added(&app, &env, json!({"wat": READER})).await;
    assert_eq!(
        results(&app, &env, json!({"function_name": "get", "params": [32]})).await,
        json!([5])
    );
    let (status, body) = call(&app, &env, json!({"function_name": "get", "params": [65535]})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "trap"));
    assert_eq!(
        results(&app, &env, json!({"function_name": "get", "params": [32]})).await,
        json!([5])
    );

    // Link errors name the import and what would have provided it.
    let (status, body) = add(
        &app,
        &env,
        json!({"wat": r#"(module (import "elsewhere" "f" (func)))"#}),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`elsewhere`.`f`") && message.contains("no module named `elsewhere`"),
        "{message}"
    );
    let (status, body) = add(
        &app,
        &env,
        json!({"wat": r#"(module (import "shared" "put" (func (param i64))))"#}),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("instance `w` (exposed as `shared`) exports `put` as func (i32, i32)"),
        "{message}"
    );
    let (status, body) = call(&app, &env, json!({"instance": "w", "function_name": "nope"})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "function_not_found"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("instance `w` has no"),
        "{body}"
    );
}

#[tokio::test]
async fn memory_limits_count_the_whole_environment() {
    let app = spawn_app().await;
    let env = new_env(&app, json!({"limits": {"memory_bytes": 131072}})).await;
    let one_page = r#"(module (memory 1) (func (export "grow") (result i32) (memory.grow (i32.const 1))))"#;
    added(&app, &env, json!({"wat": one_page, "name": "a"})).await;
    added(&app, &env, json!({"wat": one_page, "name": "b"})).await;
    // Two pages in use of two allowed: a grow returns -1 and says why.
    let (status, body) = call(&app, &env, json!({"instance": "a", "function_name": "grow"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([-1]));
    assert_eq!(body["stats"]["limits_hit"], json!(["memory"]));
    let (status, body) = add(&app, &env, json!({"wat": one_page})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "memory");
    // Memory and table limits belong to the environment, not a request.
    let (status, body) = call(
        &app,
        &env,
        json!({"function_name": "grow", "limits": {"memory_bytes": 1}}),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    // Fuel is per request.
    let spin = r#"(module (func (export "spin") (loop (br 0))))"#;
    added(&app, &env, json!({"wat": spin})).await;
    let (status, body) = call(&app, &env, json!({"function_name": "spin", "limits": {"fuel": 10000}})).await;
    assert_eq!(
        (status, body["error"]["limit"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("fuel"))
    );
}

#[tokio::test]
async fn an_environment_holds_at_most_max_link_instances() {
    let mut settings = test_settings();
    settings.max_link_instances = 2;
    let app = spawn_app_with(settings).await;
    let env = new_env(&app, json!({})).await;
    let empty = json!({"wat": "(module)"});
    added(&app, &env, empty.clone()).await;
    added(&app, &env, empty.clone()).await;
    let (status, body) = add(&app, &env, empty).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "instances");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-link-instances"),
        "{body}"
    );
}

#[tokio::test]
async fn environments_share_the_instance_caps_and_expire_when_idle() {
    let mut settings = test_settings();
    settings.max_instances = 2;
    settings.max_instances_per_client = Some(2);
    settings.instance_idle_secs = 1;
    let app = spawn_app_with(settings).await;
    let env = new_env(&app, json!({})).await;
    let (status, _) = app.post("/instances", &json!({"wat": "(module)"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.post("/environments", &json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity")
    );
    // Poll for expiry (bounded), rather than sleeping a guessed duration.
    let mut gone = false;
    for _ in 0..100 {
        if app.get(&format!("/environments/{env}")).await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "an environment idle past the timeout should be dropped");
}

/// A long call holds its own environment only: another environment's
/// calls run meanwhile, and the busy one shows no instance list until the
/// call ends.
#[tokio::test]
async fn a_call_holds_its_environment_and_no_other() {
    let mut settings = test_settings();
    settings.timeout_ms = 60_000;
    settings.max_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    let busy = new_env(&app, json!({})).await;
    let free = new_env(&app, json!({})).await;
    added(&app, &busy, json!({"wat": SPIN})).await;
    added(&app, &free, json!({"wat": SPIN})).await;
    let long = {
        let (client, url) = (app.client.clone(), app.url(&format!("/environments/{busy}/call")));
        tokio::spawn(async move {
            let body = json!({"function_name": "spin", "params": [2_000_000_000u32]});
            client.post(url).json(&body).send().await.unwrap().status()
        })
    };
    wait_until_busy(&app, &busy).await;
    assert_eq!(
        results(&app, &free, json!({"function_name": "spin", "params": [10]})).await,
        json!([10])
    );
    let (_, info) = app.get(&format!("/environments/{busy}")).await;
    assert!(
        info.get("instances").is_none(),
        "the long call ended before the other environment's call: {info}"
    );
    app.delete(&format!("/environments/{busy}")).await;
    long.abort();
}

#[tokio::test]
async fn wasi_programs_in_an_environment_share_its_world() {
    let app = spawn_app().await;
    let env = new_env(&app, json!({"wasi": {"args": ["one", "two"], "stdin": "in"}})).await;
    let hello = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "hi\n")
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 3))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    added(&app, &env, json!({"wat": hello, "name": "hello"})).await;
    let (status, body) = call(&app, &env, json!({"instance": "hello"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "hi\n");
    assert_eq!(body["exit_code"], 0);
    // Each call reports its own output.
    let (_, body) = call(&app, &env, json!({"instance": "hello"})).await;
    assert_eq!(body["stdout"], "hi\n");
    // The host's WASI name cannot be taken over.
    let (status, body) = app
        .post(
            &format!("/environments/{env}/register"),
            &json!({"as": "wasi_snapshot_preview1"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_params"),
        "{body}"
    );
}

/// `{"externref": N}` goes in as a host reference and comes out as the
/// same number, through a table and a global, in environments and in the
/// other endpoints.
#[tokio::test]
async fn externref_values_round_trip() {
    let app = spawn_app().await;
    let wat = r#"(module
      (table $t 4 externref)
      (global (export "last") (mut externref) (ref.null extern))
      (func (export "put") (param i32 externref) (table.set $t (local.get 0) (local.get 1)) (global.set 0 (local.get 1)))
      (func (export "get") (param i32) (result externref) (table.get $t (local.get 0)))
      (func (export "id") (param externref) (result externref) (local.get 0)))"#;
    let env = new_env(&app, json!({})).await;
    added(&app, &env, json!({"wat": wat})).await;
    results(
        &app,
        &env,
        json!({"function_name": "put", "params": [1, {"externref": 4_000_000_000u32}]}),
    )
    .await;
    let got = results(&app, &env, json!({"function_name": "get", "params": [1]})).await;
    assert_eq!(got, json!([{"externref": 4_000_000_000u32}]));
    assert_eq!(
        results(&app, &env, json!({"function_name": "get", "params": [0]})).await,
        json!([null])
    );
    let (_, global) = app.get(&format!("/environments/{env}/globals/last")).await;
    assert_eq!(global["value"], json!({"externref": 4_000_000_000u32}));

    let (status, body) = app.run_wat(wat, "id", json!([{"externref": 0}])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([{"externref": 0}]));
    assert_eq!(body["result_types"], json!(["externref"]));
    for bad in [json!([{"externref": -1}]), json!([{"externref": 1, "hex": "00"}])] {
        let (status, body) = app.run_wat(wat, "id", bad).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_params"),
            "{body}"
        );
    }
    let (status, body) = app.run_wat(wat, "get", json!([{"externref": 1}])).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("fits only an externref param, not i32"), "{message}");
}

/// Environments have their own share of instance slots: past it, adding an
/// instance anywhere is `429 instance_capacity`, other requests still run,
/// and deleting an environment gives its share back.
#[tokio::test]
async fn all_environments_together_hold_at_most_max_environment_instances() {
    let mut settings = test_settings();
    settings.max_environment_instances = 3;
    let app = spawn_app_with(settings).await;
    let first = new_env(&app, json!({})).await;
    let second = new_env(&app, json!({})).await;
    let empty = json!({"wat": "(module)"});
    added(&app, &first, empty.clone()).await;
    added(&app, &first, empty.clone()).await;
    added(&app, &second, empty.clone()).await;
    let (status, body) = add(&app, &second, empty.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-environment-instances"),
        "{body}"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("wasm_exec_environment_instances 3"), "{metrics}");
    assert!(metrics.contains("wasm_exec_environments 2"), "{metrics}");
    let (status, _) = app.run_wat(r#"(module (func (export "f")))"#, "f", json!([])).await;
    assert_eq!(status, StatusCode::OK, "other requests do not use environments' slots");
    app.delete(&format!("/environments/{first}")).await;
    added(&app, &second, empty).await;
}

/// GC values say what they are, host references come back as `anyref`, and
/// an exception no handler catches is a trap that leaves the environment
/// usable.
#[tokio::test]
async fn gc_values_and_uncaught_exceptions() {
    let app = spawn_app().await;
    let wat = r#"(module
      (type $pair (struct (field i32) (field i32)))
      (tag $oops (param i32))
      (func (export "i31") (param i32) (result i31ref) (ref.i31 (local.get 0)))
      (func (export "pair") (result anyref) (struct.new $pair (i32.const 1) (i32.const 2)))
      (func (export "same") (param anyref) (result anyref) (local.get 0))
      (func (export "throw") (throw $oops (i32.const 7)))
      (func (export "one") (result i32) i32.const 1))"#;
    let env = new_env(&app, json!({})).await;
    added(&app, &env, json!({"wat": wat})).await;
    assert_eq!(
        results(&app, &env, json!({"function_name": "i31", "params": [-5]})).await,
        json!([{"i31": -5}])
    );
    assert_eq!(
        results(&app, &env, json!({"function_name": "pair"})).await,
        json!([{"ref": "struct"}])
    );
    let same = results(&app, &env, json!({"function_name": "same", "params": [{"anyref": 9}]})).await;
    assert_eq!(same, json!([{"anyref": 9}]));
    let (status, body) = call(&app, &env, json!({"function_name": "throw"})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
        "{body}"
    );
    assert_eq!(body["error"]["trap"], "uncaught_exception");
    assert_eq!(results(&app, &env, json!({"function_name": "one"})).await, json!([1]));
    // The same through a one-shot call.
    let (status, body) = app.run_wat(wat, "throw", json!([])).await;
    assert_eq!(
        (status, body["error"]["trap"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("uncaught_exception"))
    );
}

/// Every `as` and `register` defines all of an instance's exports under a
/// name for the environment's life; the total is bounded.
#[tokio::test]
async fn exposures_are_bounded() {
    let app = spawn_app().await;
    let exports: String = (0..1000).map(|i| format!(r#"(export "e{i}" (func $f))"#)).collect();
    let wat = format!("(module (func $f) {exports})");
    let env = new_env(&app, json!({})).await;
    added(&app, &env, json!({"wat": wat, "name": "wide", "as": "n0"})).await;
    for i in 1..100 {
        let (status, body) = app
            .post(
                &format!("/environments/{env}/register"),
                &json!({"instance": "wide", "as": format!("n{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{i}: {body}");
    }
    let (status, body) = app
        .post(&format!("/environments/{env}/register"), &json!({"as": "one-too-many"}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], "exposed_exports");
    let (status, body) = add(&app, &env, json!({"wat": wat, "as": "also-too-many"})).await;
    assert_eq!(
        (status, body["error"]["limit"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("exposed_exports"))
    );
    // Refused before instantiating: no instance was added.
    let (_, info) = app.get(&format!("/environments/{env}")).await;
    assert_eq!(info["instances"].as_array().unwrap().len(), 1);
    // The environment still works.
    let importer = r#"(module (import "n99" "e5" (func)) (func (export "ok") (result i32) i32.const 1))"#;
    added(&app, &env, json!({"wat": importer})).await;
    assert_eq!(results(&app, &env, json!({"function_name": "ok"})).await, json!([1]));
}

/// Requests waiting their turn on a busy environment hold no execution
/// slot: with two slots, one long call and three calls queued behind it on
/// the same environment, another environment's call still runs.
#[tokio::test]
async fn requests_waiting_on_a_busy_environment_hold_no_execution_slot() {
    let mut settings = test_settings();
    settings.max_concurrency = 2;
    // One client (this test) uses both slots.
    settings.client_share = Some(2);
    settings.timeout_ms = 60_000;
    settings.max_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    let busy = new_env(&app, json!({})).await;
    let free = new_env(&app, json!({})).await;
    added(&app, &busy, json!({"wat": SPIN})).await;
    added(&app, &free, json!({"wat": SPIN})).await;
    let send = |n: u32| {
        let (client, url) = (app.client.clone(), app.url(&format!("/environments/{busy}/call")));
        tokio::spawn(async move {
            let body = json!({"function_name": "spin", "params": [n]});
            client.post(url).json(&body).send().await.map(|r| r.status())
        })
    };
    let long = send(2_000_000_000);
    wait_until_busy(&app, &busy).await;
    let queued: Vec<_> = (0..3).map(|_| send(10)).collect();
    // Let the queued calls reach the environment's lock.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        results(&app, &free, json!({"function_name": "spin", "params": [10]})).await,
        json!([10])
    );
    let (_, info) = app.get(&format!("/environments/{busy}")).await;
    assert!(info.get("instances").is_none(), "the long call ended first: {info}");
    app.delete(&format!("/environments/{busy}")).await;
    long.abort();
    for q in queued {
        q.abort();
    }
}
