//! Data in and out of linear memory: writes before the call, reads after
//! it, bytes params placed through the guest's allocator, and memories
//! shared through linking.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{code, spawn_app, spawn_app_with, test_settings};

/// Sums `len` bytes at `ptr`.
const SUM: &str = r#"(module (memory (export "memory") 1)
  (func (export "sum") (param $ptr i32) (param $len i32) (result i32) (local $acc i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $len)))
      (local.set $acc (i32.add (local.get $acc) (i32.load8_u (local.get $ptr))))
      (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
      (local.set $len (i32.sub (local.get $len) (i32.const 1)))
      (br $next)))
    (local.get $acc))
  (func (export "boom") (i32.store (i32.const 0) (i32.const 0x64636261)) unreachable))"#;

/// A bump allocator and an ASCII upper-casing function returning (ptr, len).
pub const UPPER: &str = r#"(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $size i32) (result i32) (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $p))
  (func (export "upper") (param $ptr i32) (param $len i32) (result i32 i32) (local $i i32) (local $c i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
        (then (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $ptr) (local.get $len)))"#;

#[tokio::test]
async fn memory_writes_land_before_the_call_and_reads_come_back_after() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": SUM, "function_name": "sum", "params": [16, 4],
                "memory_writes": [{"offset": 16, "hex": "01020304"}, {"offset": 100, "utf8": "hi"}],
                "memory_reads": [{"offset": 16, "length": 4}, {"offset": 100, "length": 2, "encoding": "utf8"},
                                 {"offset": 16, "length": 4, "encoding": "base64"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([10]));
    assert_eq!(
        body["memory"],
        json!([
            {"offset": 16, "length": 4, "encoding": "hex", "data": "01020304"},
            {"offset": 100, "length": 2, "encoding": "utf8", "data": "hi"},
            {"offset": 16, "length": 4, "encoding": "base64", "data": "AQIDBA=="}
        ])
    );
}

#[tokio::test]
async fn a_string_goes_in_through_alloc_and_comes_back_as_text() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wat": UPPER, "function_name": "upper", "params": [{"utf8": "hello, wasm"}], "result_encoding": "utf8"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!(["HELLO, WASM"]));
    assert_eq!(body["result_types"], json!(["utf8"]));

    let (_, body) = app
        .post(
            "/",
            &json!({"wat": UPPER, "function_name": "upper", "params": [{"hex": "616263"}], "result_encoding": "hex"}),
        )
        .await;
    assert_eq!(body["results"], json!(["414243"]));
    // Without result_encoding the raw (ptr, len) pair comes back.
    let (_, body) = app
        .post(
            "/",
            &json!({"wat": UPPER, "function_name": "upper", "params": [{"base64": "YQ=="}]}),
        )
        .await;
    assert_eq!(body["results"], json!([1024, 1]));
}

#[tokio::test]
async fn bytes_params_need_an_allocator_and_an_i32_pair() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": SUM, "function_name": "sum", "params": [{"utf8": "x"}]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));
    assert!(
        body["error"]["message"].as_str().unwrap().contains("allocator"),
        "{body}"
    );
    let wat = r#"(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 8)
        (func (export "f") (param i64)))"#;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": wat, "function_name": "f", "params": [{"utf8": "x"}]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));
    assert!(
        body["error"]["message"].as_str().unwrap().contains("two i32 params"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": SUM, "function_name": "sum", "params": [1, 2], "result_encoding": "utf8"}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_params"));
}

#[tokio::test]
async fn out_of_range_access_is_a_400_stating_the_memory_size() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wat": SUM, "function_name": "sum", "params": [0, 0], "memory_writes": [{"offset": 65535, "hex": "0102"}]}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_memory_access")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("which is 65536 bytes (1 pages)"),
        "{body}"
    );
    let (status, body) = app
        .post("/", &json!({"wat": SUM, "function_name": "sum", "params": [0, 0], "memory_reads": [{"offset": 70000, "length": 1}]}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_memory_access")
    );
    let (status, body) = app
        .post("/", &json!({"wat": SUM, "function_name": "sum", "params": [0, 0], "memory_reads": [{"memory": "nope", "offset": 0, "length": 1}]}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_memory_access")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no exported memory named `nope`")
    );
}

#[tokio::test]
async fn reads_are_returned_when_the_call_traps() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wat": SUM, "function_name": "boom", "memory_reads": [{"offset": 0, "length": 4, "encoding": "utf8"}]}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "trap"));
    assert_eq!(
        body["error"]["memory"],
        json!([{"offset": 0, "length": 4, "encoding": "utf8", "data": "abcd"}])
    );
}

#[tokio::test]
async fn reads_count_against_the_read_limit() {
    let mut settings = test_settings();
    settings.max_read_bytes = 1000;
    let app = spawn_app_with(settings).await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": SUM, "function_name": "sum", "params": [0, 0],
            "memory_reads": [{"offset": 0, "length": 600}, {"offset": 0, "length": 600}]}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1200 bytes in all; the limit is 1000")
    );
}

#[tokio::test]
async fn a_host_modules_memory_is_written_by_one_module_and_read_by_another() {
    let app = spawn_app().await;
    app.register_wat("mem", r#"(module (memory (export "memory") 1))"#, &[])
        .await;
    let (status, body) = app
        .register_wat(
            "writer",
            r#"(module (import "mem" "memory" (memory 1))
                (func (export "put") (param i32 i32) (i32.store (local.get 0) (local.get 1))))"#,
            &["mem"],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reader = r#"(module (import "mem" "memory" (memory 1)) (import "writer" "put" (func $put (param i32 i32)))
        (func (export "put_then_get") (param i32) (result i32 i32)
          (call $put (i32.const 64) (local.get 0))
          (i32.load (i32.const 64)) (i32.load (i32.const 128))))"#;
    let (status, body) = app
        .post(
            "/",
            &json!({"wat": reader, "function_name": "put_then_get", "params": [777], "host_modules": ["mem", "writer"],
                "memory_writes": [{"memory": "mem:memory", "offset": 128, "hex": "2a000000"}],
                "memory_reads": [{"memory": "mem:memory", "offset": 64, "length": 4}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([777, 42]));
    assert_eq!(body["memory"][0]["data"], "09030000");
    assert_eq!(body["memory"][0]["memory"], "mem:memory");
}
