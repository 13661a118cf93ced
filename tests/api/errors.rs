//! Every error code, with the status and message a client can act on.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, code, spawn_app, spawn_compiled_app};

const DOUBLE_WAT: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/"))
        .header("content-type", "application/json")
        .body("{\"wasm_hex\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("invalid JSON body"));
}

#[tokio::test]
async fn missing_duplicate_and_unknown_fields_are_invalid_request() {
    let app = spawn_app().await;
    let (status, body) = app.post("/", &json!({"function_name": "double"})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(body["error"]["message"].as_str().unwrap().contains("wasm_hex"));

    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_hex": DOUBLE_HEX, "wat": DOUBLE_WAT, "function_name": "double"}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(body["error"]["message"].as_str().unwrap().contains("exactly one"));

    let (status, body) = app
        .post("/", &json!({"wasm_hex": DOUBLE_HEX, "function": "double"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `function`")
    );

    let (status, body) = app
        .post("/", &json!({"wasm_hex": "zz", "function_name": "double"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
}

#[tokio::test]
async fn a_non_json_content_type_is_unsupported_media_type() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "unsupported_media_type");
}

#[tokio::test]
async fn bytes_that_are_not_wasm_are_invalid_module() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wasm_hex": "0061736d01000000ff", "function_name": "f"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_module"));
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": "(module (func (export \"f\") i32.add))", "function_name": "f"}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_module"));
    let (status, body) = app
        .post("/", &json!({"wat": "(module (fun", "function_name": "f"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_module"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid WebAssembly text")
    );
}

#[tokio::test]
async fn wrong_param_count_states_the_signature() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [2, 3]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));
    assert_eq!(
        body["error"]["message"],
        "`double` expects (i32) -> (i32); got 2 params"
    );
}

#[tokio::test]
async fn wrong_param_types_and_ranges_are_invalid_params() {
    let app = spawn_app().await;
    for (param, fragment) in [
        (json!("abc"), "not an i32"),
        (json!(1.5), "not an i32"),
        (json!(4294967296u64), "out of range for i32"),
        (json!(true), "boolean"),
        (json!([1]), "array"),
    ] {
        let (status, body) = app.run_wat(DOUBLE_WAT, "double", json!([param])).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_params"),
            "{param}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("param 0 of `double` (i32) -> (i32) must be i32") && message.contains(fragment),
            "{message}"
        );
    }
}

#[tokio::test]
async fn an_unknown_function_is_function_not_found_listing_exports() {
    let app = spawn_app().await;
    let (status, body) = app.run_wat(DOUBLE_WAT, "triple", json!([1])).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "function_not_found"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("double (i32) -> (i32)")
    );
}

/// The hot path of a compiled stateless module, a call made without
/// awaiting on an instance an earlier call kept (`WasmEngine::run_now`),
/// names the module in its messages as every other path does: its label
/// is written out only for a message.
#[tokio::test]
async fn a_hot_call_names_its_module_in_errors() {
    let app = spawn_compiled_app().await;
    assert_eq!(app.register_wat("twice", DOUBLE_WAT, &[]).await.0, StatusCode::CREATED);
    for call in 0..4 {
        let (status, body) = app.execute("twice", "double", json!([21])).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([42])), "{body}");
        if call > 0 {
            // Ran on a kept instance: none was made for it.
            assert_eq!(body["stats"]["instantiate_us"], 0, "call {call}: {body}");
        }
    }
    let (status, body) = app.execute("twice", "triple", json!([1])).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "function_not_found"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("module `twice` has no exported function `triple`; it exports: double"),
        "{message}"
    );

    for _ in 0..3 {
        assert_eq!(app.run_wat(DOUBLE_WAT, "double", json!([1])).await.0, StatusCode::OK);
    }
    let (status, body) = app.run_wat(DOUBLE_WAT, "triple", json!([1])).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "function_not_found"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the module has no exported function `triple`"),
        "{message}"
    );
}

#[tokio::test]
async fn traps_name_their_kind() {
    let app = spawn_app().await;
    let cases = [
        ("(func (export \"f\") unreachable)", "unreachable"),
        (
            "(func (export \"f\") (drop (i32.div_s (i32.const 1) (i32.const 0))))",
            "integer_divide_by_zero",
        ),
        (
            "(func (export \"f\") (drop (i32.div_s (i32.const 0x80000000) (i32.const -1))))",
            "integer_overflow",
        ),
        (
            "(func (export \"f\") (drop (i32.trunc_f32_s (f32.const nan))))",
            "bad_conversion_to_integer",
        ),
        (
            "(memory 1) (func (export \"f\") (drop (i32.load (i32.const 65536))))",
            "out_of_bounds_memory_access",
        ),
        (
            "(table 1 funcref) (func (export \"f\") (call_indirect (i32.const 0)))",
            "indirect_call_to_null",
        ),
        (
            "(table 1 funcref) (func (export \"f\") (call_indirect (i32.const 5)))",
            "out_of_bounds_table_access",
        ),
        ("(func $f (export \"f\") (call $f))", "stack_overflow"),
    ];
    for (body, kind) in cases {
        let wat = format!("(module {body})");
        let (status, response) = app.run_wat(&wat, "f", json!([])).await;
        assert_eq!(
            (status, code(&response)),
            (StatusCode::UNPROCESSABLE_ENTITY, "trap"),
            "{wat}: {response}"
        );
        assert_eq!(response["error"]["trap"], kind, "{wat}");
        assert!(response["error"]["stats"]["fuel_consumed"].is_u64());
    }
}

#[tokio::test]
async fn get_root_describes_the_api_and_healthz_answers() {
    let app = spawn_app().await;
    let (status, body) = app.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "wasm-exec-api");
    assert!(body["endpoints"].as_array().unwrap().contains(&json!("POST /execute")));
    // The example in the index runs as it stands.
    let (status, result) = app.post("/", &body["example"]).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["results"], json!([4]));
    assert_eq!(app.get("/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let (status, body) = app.get("/nope").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "route_not_found"));
    let (status, body) = app.get("/execute").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn nested_objects_must_be_objects_and_null_code_fields_count_as_absent() {
    let app = spawn_app().await;
    let base = json!({"wat": DOUBLE_WAT, "function_name": "double", "params": [2]});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    // Serde would read these arrays as the structs' fields in order; the
    // schema says object, and so does the server.
    for (key, value) in [
        ("limits", json!([1000, 100])),
        ("wasi", json!([[], {}])),
        ("memory_reads", json!([[0, 4]])),
        ("memory_writes", json!([[0, "00"]])),
    ] {
        let (status, body) = app.post("/", &with(key, value)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{key}: {body}"
        );
    }
    let (status, body) = app.post("/", &with("wasi", json!({"stdin": ["x"]}))).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(body["error"]["message"].as_str().unwrap().contains("wasi.stdin"));

    // Explicit nulls are the same as leaving a field out.
    let (status, body) = app.post("/", &with("wasm_hex", serde_json::Value::Null)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([4]));
    let (status, _) = app
        .post("/", &with("limits", json!({"fuel": 1000.0, "timeout_ms": null})))
        .await;
    assert_eq!(status, StatusCode::OK);
}
