//! Values in and out: every type, inferred from the export's signature, and
//! the edges where a careless JSON path loses bits.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, DOUBLE_TWICE_HEX, spawn_app, spawn_compiled_app};

const IDENTITY_I64: &str = r#"(module (func (export "id") (param i64) (result i64) local.get 0))"#;
const IDENTITY_I32: &str = r#"(module (func (export "id") (param i32) (result i32) local.get 0))"#;
const IDENTITY_F32: &str = r#"(module (func (export "id") (param f32) (result f32) local.get 0))"#;
const IDENTITY_F64: &str = r#"(module (func (export "id") (param f64) (result f64) local.get 0))"#;

#[tokio::test]
async fn the_origin_double_example_returns_4() {
    let app = spawn_app().await;
    let (status, text) = app
        .post_text(
            "/",
            &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [2]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["results"], json!([4]));
    assert_eq!(body["result_types"], json!(["i32"]));
    // Never seen before: the interpreter ran it, nothing was compiled.
    assert_eq!(body["stats"]["tier"], "interpreter");
    assert!(body["stats"].get("compile").is_none(), "{body}");
    assert!(body["stats"]["fuel_consumed"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn repeating_an_inline_module_uses_the_compile_cache() {
    let app = spawn_compiled_app().await;
    let body = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [21]});
    let (_, first) = app.post("/", &body).await;
    let (status, second) = app.post("/", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["stats"]["compile"], "compiled");
    assert_eq!(second["stats"]["compile"], "cached");
    assert_eq!(second["results"], json!([42]));
}

#[tokio::test]
async fn the_origin_linking_example_returns_8() {
    let app = spawn_app().await;
    let (status, _) = app
        .post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_hex": DOUBLE_TWICE_HEX, "function_name": "double_twice", "params": [2], "host_modules": ["utils"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([8]));
}

#[tokio::test]
async fn base64_and_text_modules_run_like_hex() {
    use base64::Engine as _;
    let app = spawn_app().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(DOUBLE_HEX).unwrap());
    let (_, body) = app
        .post(
            "/",
            &json!({"wasm_base64": b64, "function_name": "double", "params": [5]}),
        )
        .await;
    assert_eq!(body["results"], json!([10]));
    let (_, body) = app.run_wat(IDENTITY_I32, "id", json!([7])).await;
    assert_eq!(body["results"], json!([7]));
}

#[tokio::test]
async fn i64_values_are_exact_at_every_edge() {
    let app = spawn_app().await;
    let cases = [
        (json!(9223372036854775807i64), "9223372036854775807"),
        (json!(-9223372036854775808i64), "-9223372036854775808"),
        (json!(9007199254740993i64), "9007199254740993"),
        (json!("9007199254740993"), "9007199254740993"),
        (json!("18446744073709551615"), "-1"),
        (json!(18446744073709551615u64), "-1"),
        (json!("-0x8000000000000000"), "-9223372036854775808"),
    ];
    for (param, expected) in cases {
        let (status, text) = app.run_wat_text(IDENTITY_I64, "id", json!([param])).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(
            text.starts_with(&format!("{{\"results\":[{expected}],\"result_types\":[\"i64\"]")),
            "{param} -> {text}"
        );
    }
}

#[tokio::test]
async fn i32_unsigned_inputs_wrap_to_twos_complement() {
    let app = spawn_app().await;
    for (param, expected) in [
        (json!(4294967295u64), -1),
        (json!(2147483648u64), -2147483648i64),
        (json!("-1"), -1),
    ] {
        let (_, body) = app.run_wat(IDENTITY_I32, "id", json!([param])).await;
        assert_eq!(body["results"], json!([expected]), "{param}");
    }
}

#[tokio::test]
async fn f32_point_one_round_trips_as_its_shortest_text() {
    let app = spawn_app().await;
    let (status, text) = app.run_wat_text(IDENTITY_F32, "id", json!([0.1])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with(r#"{"results":[0.1],"result_types":["f32"]"#), "{text}");
    let (_, text) = app.run_wat_text(IDENTITY_F32, "id", json!(["3.4028235e38"])).await;
    assert!(text.starts_with(r#"{"results":[3.4028235e38]"#), "{text}");
}

#[tokio::test]
async fn negative_zero_nan_and_infinities_survive() {
    let app = spawn_app().await;
    for wat in [IDENTITY_F32, IDENTITY_F64] {
        for (param, expected) in [
            (json!(-0.0), "-0.0"),
            (json!("-0.0"), "-0.0"),
            (json!("NaN"), r#""NaN""#),
            (json!("-NaN"), r#""-NaN""#),
            (json!("Infinity"), r#""Infinity""#),
            (json!("-Infinity"), r#""-Infinity""#),
            (json!("nan:0x1"), r#""nan:0x1""#),
        ] {
            let (status, text) = app.run_wat_text(wat, "id", json!([param])).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            assert!(
                text.starts_with(&format!("{{\"results\":[{expected}]")),
                "{param} -> {text}"
            );
        }
    }
}

#[tokio::test]
async fn arithmetic_nans_come_out_canonical() {
    let app = spawn_app().await;
    let wat = r#"(module (func (export "div") (param f64 f64) (result f64) (f64.div (local.get 0) (local.get 1))))"#;
    let (_, text) = app.run_wat_text(wat, "div", json!([0, 0])).await;
    assert!(text.starts_with(r#"{"results":["NaN"]"#), "{text}");
}

#[tokio::test]
async fn multi_value_results_keep_each_type() {
    let app = spawn_app().await;
    let wat = r#"(module (func (export "mix") (param i32 i64 f32 f64) (result f64 f32 i64 i32)
        local.get 3 local.get 2 local.get 1 local.get 0))"#;
    let (status, text) = app
        .run_wat_text(wat, "mix", json!([-1, "-9223372036854775808", 0.1, 1e300]))
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.starts_with(r#"{"results":[1e300,0.1,-9223372036854775808,-1],"result_types":["f64","f32","i64","i32"]"#),
        "{text}"
    );
}

#[tokio::test]
async fn v128_values_use_hex_or_lanes() {
    let app = spawn_app().await;
    let wat =
        r#"(module (func (export "add") (param v128 v128) (result v128) (i32x4.add (local.get 0) (local.get 1))))"#;
    let (status, body) = app
        .run_wat(
            wat,
            "add",
            json!(["i32x4 1 2 3 4", "0x00000001000000010000000100000001"]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!(["0x00000005000000040000000300000002"]));
    assert_eq!(body["result_types"], json!(["v128"]));
}

#[tokio::test]
async fn reference_params_take_null_and_results_show_null() {
    let app = spawn_app().await;
    let wat =
        r#"(module (func (export "id") (param funcref externref) (result externref funcref) local.get 1 local.get 0))"#;
    let (status, body) = app.run_wat(wat, "id", json!([null, null])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([null, null]));
    assert_eq!(body["result_types"], json!(["externref", "funcref"]));
}

#[tokio::test]
async fn a_function_without_params_may_omit_them() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wat": r#"(module (func (export "answer") (result i32) i32.const 42))"#, "function_name": "answer"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"], json!([42]));
}
