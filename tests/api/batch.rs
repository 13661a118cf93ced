//! `POST /batch`: calls answered in order, each with its own body; fresh
//! instances unless the batch names one; a total time budget; bounds.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DOUBLE_HEX, code, spawn_app, spawn_app_with, spawn_compiled_app, test_settings};

const COUNTER: &str = r#"(module (global $n (export "n") (mut i32) (i32.const 0))
  (func (export "inc") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;

#[tokio::test]
async fn a_thousand_calls_answer_in_order() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let calls: Vec<Value> = (0..1000)
        .map(|i| json!({"module_name": "utils", "function_name": "double", "params": [i]}))
        .collect();
    let (status, body) = app.post("/batch", &json!({"calls": calls})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["results"], json!([2 * i]), "call {i}: {result}");
        assert_eq!(result["result_types"], json!(["i32"]));
    }
    assert_eq!(
        (
            body["stats"]["calls"].clone(),
            body["stats"]["succeeded"].clone(),
            body["stats"]["failed"].clone()
        ),
        (json!(1000), json!(1000), json!(0))
    );
}

#[tokio::test]
async fn each_call_answers_for_itself() {
    let app = spawn_app().await;
    app.post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    let calls = json!([
        {"module_name": "utils", "function_name": "double", "params": [21]},
        {"wat": "(module (func (export \"boom\") unreachable))", "function_name": "boom"},
        {"module_name": "utils", "function_name": "triple", "params": [1]},
        {"module_name": "nope", "function_name": "f"},
        {"module_name": "utils", "function": "double"},
        {"wat": COUNTER, "function_name": "inc"},
        {"wat": COUNTER, "function_name": "inc"},
    ]);
    let (status, body) = app.post("/batch", &json!({"calls": calls})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r[0]["results"], json!([42]));
    assert_eq!((code(&r[1]), &r[1]["error"]["trap"]), ("trap", &json!("unreachable")));
    assert_eq!(code(&r[2]), "function_not_found");
    assert_eq!(code(&r[3]), "module_not_found");
    assert_eq!(code(&r[4]), "invalid_request");
    assert!(
        r[4]["error"]["message"].as_str().unwrap().contains("function"),
        "{}",
        r[4]
    );
    // Each call has an instance of its own: the counter starts afresh.
    assert_eq!(
        (r[5]["results"].clone(), r[6]["results"].clone()),
        (json!([1]), json!([1]))
    );
    assert_eq!(
        (body["stats"]["succeeded"].clone(), body["stats"]["failed"].clone()),
        (json!(3), json!(4))
    );
    // A call that is not even an object makes the batch malformed.
    let (status, body) = app
        .post(
            "/batch",
            &json!({"calls": [{"wat": COUNTER, "function_name": "inc"}, [1, 2]]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("calls[1]"),
        "{body}"
    );
}

/// Registers each `(name, wat)` on `app` and answers a batch of `calls`,
/// whose answers it returns.
async fn registered_batch(app: &crate::helpers::TestApp, modules: &[(&str, &str)], calls: Value) -> Vec<Value> {
    for (name, wat) in modules {
        let (status, body) = app.post("/register", &json!({"module_name": name, "wat": wat})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app.post("/batch", &json!({"calls": calls})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["results"].as_array().unwrap().clone()
}

/// A module with nowhere to keep state: division (which can trap) and a
/// loop as long as asked (which can run out of fuel or time).
const PURE: &str = r#"(module
  (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "spin") (param i32) (result i32)
    (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))
    (local.get 0)))"#;

#[tokio::test]
async fn registered_modules_with_state_get_a_fresh_instance_for_every_call() {
    // Compiled code: the tier where a batch may share a stateless instance.
    let app = spawn_compiled_app().await;
    let memory_counter = r#"(module (memory 1)
      (func (export "inc") (result i32)
        (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
        (i32.load (i32.const 0))))"#;
    let hidden_global = r#"(module (global $n (mut i64) (i64.const 0))
      (func (export "inc") (result i64) (global.set $n (i64.add (global.get $n) (i64.const 1))) (global.get $n)))"#;
    let table_slot = r#"(module (table 1 funcref) (func $f) (elem declare func $f)
      (func (export "inc") (result i32)
        (if (result i32) (ref.is_null (table.get (i32.const 0)))
          (then (table.set (i32.const 0) (ref.func $f)) (i32.const 1))
          (else (i32.const 2)))))"#;
    let mut calls = Vec::new();
    for name in ["counter", "memory", "hidden", "table"] {
        for _ in 0..3 {
            calls.push(json!({"module_name": name, "function_name": "inc"}));
        }
    }
    let modules = [
        ("counter", COUNTER),
        ("memory", memory_counter),
        ("hidden", hidden_global),
        ("table", table_slot),
    ];
    let r = registered_batch(&app, &modules, json!(calls)).await;
    for (i, answer) in r.iter().enumerate() {
        assert_eq!(
            answer["results"],
            json!([1]),
            "call {i} saw an earlier call's state: {answer}"
        );
        assert_eq!(answer["stats"]["tier"], "compiled", "{answer}");
    }
}

/// A stateless module's instance outlives the request that made it: later
/// single requests take it instead of instantiating (`engine::spare`),
/// after a trap and after a time limit too, and each call still gets its
/// own budget. A module with state never shares one.
#[tokio::test]
async fn single_requests_take_a_stateless_instance_an_earlier_request_left() {
    let app = spawn_compiled_app().await;
    for (name, wat) in [("pure", PURE), ("counter", COUNTER)] {
        let (status, body) = app.post("/register", &json!({"module_name": name, "wat": wat})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let call = |function: &str, params: Value, limits: Value| json!({"module_name": "pure", "function_name": function, "params": params, "limits": limits});
    let (status, first) = app.post("/execute", &call("div", json!([7, 2]), json!({}))).await;
    assert_eq!((status, &first["results"]), (StatusCode::OK, &json!([3])), "{first}");
    let (status, body) = app.post("/execute", &call("div", json!([1, 0]), json!({}))).await;
    assert_eq!(
        (status, code(&body), &body["error"]["trap"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "trap",
            &json!("integer_divide_by_zero")
        ),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/execute",
            &call("spin", json!([2_000_000_000]), json!({"timeout_ms": 50})),
        )
        .await;
    assert_eq!(
        (status, code(&body), &body["error"]["limit"]),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", &json!("time")),
        "{body}"
    );
    let (status, body) = app.post("/execute", &call("div", json!([8, 4]), json!({}))).await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([2])), "{body}");
    // Taken, not made: no instantiation, and the call's own fuel only.
    assert_eq!(body["stats"]["instantiate_us"], 0, "{body}");
    assert_eq!(
        body["stats"]["fuel_consumed"], first["stats"]["fuel_consumed"],
        "{body}"
    );
    for _ in 0..3 {
        let (status, body) = app
            .post("/execute", &json!({"module_name": "counter", "function_name": "inc"}))
            .await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([1])), "{body}");
    }
}

#[tokio::test]
async fn a_stateless_module_serves_a_batch_from_one_instance_through_traps_and_limits() {
    let app = spawn_compiled_app().await;
    let calls = json!([
        {"module_name": "pure", "function_name": "div", "params": [7, 2]},
        {"module_name": "pure", "function_name": "div", "params": [1, 0]},
        {"module_name": "pure", "function_name": "div", "params": [-9, 3]},
        {"module_name": "pure", "function_name": "spin", "params": [1000000], "limits": {"fuel": 1000}},
        {"module_name": "pure", "function_name": "spin", "params": [10]},
        {"module_name": "pure", "function_name": "div", "params": [9, 3], "limits": {"fuel": 0}},
        {"module_name": "pure", "function_name": "div", "params": [8, 4]},
    ]);
    let r = registered_batch(&app, &[("pure", PURE)], calls).await;
    assert_eq!(r[0]["results"], json!([3]), "{}", r[0]);
    assert_eq!(
        (code(&r[1]), &r[1]["error"]["trap"]),
        ("trap", &json!("integer_divide_by_zero")),
        "{}",
        r[1]
    );
    assert_eq!(r[2]["results"], json!([-3]), "a trap leaves nothing behind: {}", r[2]);
    assert_eq!(
        (code(&r[3]), &r[3]["error"]["limit"]),
        ("limit_exceeded", &json!("fuel")),
        "{}",
        r[3]
    );
    // The next call gets its own full budget, whatever the last one spent.
    assert_eq!(r[4]["results"], json!([0]), "{}", r[4]);
    assert_eq!(
        (code(&r[5]), &r[5]["error"]["limit"]),
        ("limit_exceeded", &json!("fuel")),
        "{}",
        r[5]
    );
    assert_eq!(r[6]["results"], json!([2]), "{}", r[6]);
    // Fuel is each call's own: the same call costs the same on a kept
    // instance as on its first, fresh one.
    assert_eq!(r[2]["stats"]["fuel_consumed"], r[0]["stats"]["fuel_consumed"]);
    // Only the first call instantiated; the others reused its instance.
    for (i, answer) in r.iter().enumerate().skip(1).filter(|(_, a)| a.get("results").is_some()) {
        assert_eq!(answer["stats"]["instantiate_us"], 0, "call {i}: {answer}");
        assert_eq!(answer["stats"]["compile"], "cached", "call {i}: {answer}");
    }
    // A batch that asks for WASI output gets a fresh instance (and its
    // output) for every call: nothing is shared there.
    let calls = json!([
        {"module_name": "pure", "function_name": "div", "params": [4, 2], "wasi": {}},
        {"module_name": "pure", "function_name": "div", "params": [6, 2], "wasi": {}},
    ]);
    let (status, body) = app.post("/batch", &json!({"calls": calls})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["results"][0]["results"].clone(),
            body["results"][1]["results"].clone()
        ),
        (json!([2]), json!([3])),
        "{body}"
    );
}

#[tokio::test]
async fn a_batch_on_an_instance_shares_its_state() {
    let app = spawn_app().await;
    let (status, body) = app.post("/instances", &json!({"wat": COUNTER})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let calls: Vec<Value> = (0..5).map(|_| json!({"function_name": "inc"})).collect();
    let (status, body) = app.post("/batch", &json!({"calls": calls, "instance": id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counts: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["results"][0].clone())
        .collect();
    assert_eq!(counts, vec![json!(1), json!(2), json!(3), json!(4), json!(5)]);
    let (_, info) = app.get(&format!("/instances/{id}")).await;
    assert_eq!(info["calls"], 5);
    let (_, global) = app.get(&format!("/instances/{id}/globals/n")).await;
    assert_eq!(global["value"], 5, "{global}");
    // A module's call body on an instance is refused as that call, not the batch.
    let (status, body) = app
        .post(
            "/batch",
            &json!({"calls": [{"module_name": "x", "function_name": "inc"}], "instance": id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(code(&body["results"][0]), "invalid_request");
    let (status, body) = app
        .post(
            "/batch",
            &json!({"calls": [{"function_name": "inc"}], "instance": "nobody.0"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "instance_not_found"),
        "{body}"
    );
}

#[tokio::test]
async fn the_batch_time_budget_cuts_calls_and_stops_the_rest() {
    let mut settings = test_settings();
    settings.max_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    let spin = json!({"wat": "(module (func (export \"spin\") (loop (br 0))))", "function_name": "spin"});
    let double = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]});
    let (status, body) = app
        .post("/batch", &json!({"calls": [double, spin, double], "timeout_ms": 300}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r[0]["results"], json!([2]));
    // The loop's own time limit was cut to what the batch had left.
    assert_eq!(
        (code(&r[1]), &r[1]["error"]["limit"]),
        ("limit_exceeded", &json!("time")),
        "{}",
        r[1]
    );
    assert_eq!(
        (code(&r[2]), &r[2]["error"]["limit"]),
        ("limit_exceeded", &json!("batch_time")),
        "{}",
        r[2]
    );
}

#[tokio::test]
async fn batches_are_bounded() {
    let mut settings = test_settings();
    settings.max_batch_calls = 3;
    let app = spawn_app_with(settings).await;
    let call = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]});
    let (status, body) = app.post("/batch", &json!({"calls": []})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    let (status, body) = app.post("/batch", &json!({"calls": [call, call, call, call]})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("--max-batch-calls"),
        "{body}"
    );
    let (status, body) = app.post("/batch", &json!({"calls": [call, call, call]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
