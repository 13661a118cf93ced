//! A hostile corpus: modules and bodies meant to hurt the server. Each must
//! end in its own clear 4xx or 422 while a healthy client, calling all the
//! while, keeps getting correct answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use wasm_exec_api::engine::TierMode;

use crate::helpers::{DOUBLE_HEX, TestApp, spawn_app_with, test_settings};

/// One hostile request and the status and error code it must get.
struct Case {
    name: &'static str,
    body: Body,
    status: StatusCode,
    code: &'static str,
}

enum Body {
    Json(Value),
    Raw { content_type: &'static str, bytes: Vec<u8> },
}

fn wat_case(name: &'static str, wat: &str, function: &str, status: StatusCode, code: &'static str) -> Case {
    Case {
        name,
        body: Body::Json(json!({"wat": wat, "function_name": function, "limits": {"timeout_ms": 2000}})),
        status,
        code,
    }
}

fn bytes_case(name: &'static str, wasm: &[u8]) -> Case {
    let b64 = base64::engine::general_purpose::STANDARD.encode(wasm);
    Case {
        name,
        body: Body::Json(json!({"wasm_base64": b64, "function_name": "f"})),
        status: StatusCode::BAD_REQUEST,
        code: "invalid_module",
    }
}

/// A WASI program that passes `fd_write` an iovec array at `iovs`.
fn wasi_write(iovs: u32) -> String {
    format!(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
           (memory (export "memory") 1)
           (func (export "_start") (drop (call $w (i32.const 1) (i32.const {iovs}) (i32.const 2) (i32.const 0)))))"#
    )
}

fn corpus() -> Vec<Case> {
    let limit = StatusCode::UNPROCESSABLE_ENTITY;
    let header = b"\0asm\x01\0\0\0".to_vec();
    let mut truncated = header.clone();
    truncated.extend_from_slice(&[1, 0x10, 1]); // type section claiming 16 bytes, holding 1
    let mut bad_leb = header.clone();
    bad_leb.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]); // section size LEB128 too long
    let many_functions = format!("(module {})", "(func)".repeat(20_000)) + "";
    let many_functions = many_functions.replacen("(module ", "(module (func (export \"f\")) ", 1);
    let deep_nesting = format!(
        "(module (func (export \"f\") {}{}))",
        "(block ".repeat(5_000),
        ")".repeat(5_000)
    );
    let big_data = format!(
        r#"(module (memory 200) (data (i32.const 0) "{}") (func (export "f")))"#,
        "x".repeat(8 << 20)
    );
    vec![
        wat_case(
            "infinite loop",
            "(module (func (export \"f\") (loop (br 0))))",
            "f",
            limit,
            "limit_exceeded",
        ),
        wat_case(
            "loop with calls",
            "(module (func $g) (func (export \"f\") (loop (call $g) (br 0))))",
            "f",
            limit,
            "limit_exceeded",
        ),
        wat_case(
            // memory.grow returns -1 at the limit; a guest that ignores it and
            // keeps asking is stopped by the time limit.
            "memory.grow forever",
            "(module (memory 1) (func (export \"f\") (loop (drop (memory.grow (i32.const 1))) (br 0))))",
            "f",
            limit,
            "limit_exceeded",
        ),
        wat_case(
            "huge initial memory",
            "(module (memory 60000) (func (export \"f\")))",
            "f",
            limit,
            "limit_exceeded",
        ),
        wat_case(
            "table.grow bomb",
            "(module (table 1 funcref) (func (export \"f\") (loop (drop (table.grow (ref.null func) (i32.const 100000))) (br 0))))",
            "f",
            limit,
            "limit_exceeded",
        ),
        wat_case(
            "runaway recursion",
            "(module (func $f (export \"f\") (call $f)))",
            "f",
            limit,
            "trap",
        ),
        wat_case(
            "deep block nesting",
            &deep_nesting,
            "nope",
            StatusCode::NOT_FOUND,
            "function_not_found",
        ),
        wat_case(
            "twenty thousand functions",
            &many_functions,
            "nope",
            StatusCode::NOT_FOUND,
            "function_not_found",
        ),
        wat_case(
            "8 MB data segment",
            &big_data,
            "nope",
            StatusCode::NOT_FOUND,
            "function_not_found",
        ),
        wat_case(
            "WASI write from a pointer past the end of memory",
            &wasi_write(65532),
            "_start",
            limit,
            "trap",
        ),
        wat_case(
            "WASI write from a misaligned pointer",
            &wasi_write(1),
            "_start",
            limit,
            "trap",
        ),
        bytes_case("truncated section", &truncated),
        bytes_case("invalid LEB128", &bad_leb),
        bytes_case("not wasm at all", b"MZ\x90\0this is not a module"),
        Case {
            name: "deeply nested JSON",
            body: Body::Raw {
                content_type: "application/json",
                bytes: format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            },
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
        },
        Case {
            name: "100k params",
            body: Body::Json(json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": vec![1; 100_000]})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_params",
        },
        Case {
            name: "huge numeric string",
            body: Body::Json(
                json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": ["9".repeat(1_000_000)]}),
            ),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_params",
        },
        Case {
            name: "body over the limit",
            body: Body::Raw {
                content_type: "application/json",
                bytes: vec![b' '; 13 << 20],
            },
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
        },
        Case {
            name: "wrong content type",
            body: Body::Raw {
                content_type: "text/plain",
                bytes: b"{}".to_vec(),
            },
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
        },
        Case {
            name: "not UTF-8",
            body: Body::Raw {
                content_type: "application/json",
                bytes: vec![b'{', 0xff, 0xfe, b'}'],
            },
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
        },
    ]
}

/// Sends a case. `None` when the server closed the connection while the body
/// was still being uploaded.
async fn send(app: &TestApp, case: &Case) -> Option<(StatusCode, Value)> {
    // A fresh connection per hostile request: the server may close one after
    // refusing a body, and a pooled client would reuse it for the next case.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let request = client.post(app.url("/"));
    let request = match &case.body {
        Body::Json(v) => request.json(v),
        Body::Raw { content_type, bytes } => request.header("content-type", *content_type).body(bytes.clone()),
    };
    let response = request.send().await.ok()?;
    let status = response.status();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// The corpus on the interpreter tier (which runs every case it can: those
/// without imports or a start function) gets the same codes as on the
/// compiled tier.
#[tokio::test]
async fn every_hostile_input_gets_a_clear_error_on_the_interpreter_tier() {
    hostile_corpus_on(TierMode::Interpreter).await;
}

#[tokio::test]
async fn every_hostile_input_gets_a_clear_error_on_the_compiled_tier() {
    hostile_corpus_on(TierMode::Compiled).await;
}

/// Sends every case while a healthy client keeps calling; each case must
/// get its status and code, and the healthy client must keep being served.
async fn hostile_corpus_on(tier: TierMode) {
    let mut settings = test_settings();
    settings.tier = tier;
    // Room for the 8 MB data segment, not for the 13 MiB body.
    settings.max_body_bytes = 12 << 20;
    settings.max_memory_bytes = 64 << 20;
    let app = spawn_app_with(settings).await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let healthy = {
        let (client, url, stop, served) = (app.client.clone(), app.url("/"), stop.clone(), served.clone());
        tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [i]});
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "a healthy request failed");
                let value: Value = response.json().await.unwrap();
                assert_eq!(value["results"], json!([2 * i]));
                served.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let mut failures = Vec::new();
    for case in corpus() {
        let before = served.load(Ordering::Relaxed);
        match send(&app, &case).await {
            Some((status, body)) => {
                let code = body["error"]["code"].as_str().unwrap_or("(no JSON error)");
                if (status, code) != (case.status, case.code) {
                    failures.push(format!(
                        "{}: expected {} {}, got {status} {body}",
                        case.name, case.status, case.code
                    ));
                }
            }
            // The server answers an oversized body with 413 and closes without
            // reading the rest; the client may hit the closed socket while
            // still uploading and never read the answer. That is a refusal
            // too (the 413 itself is tested with a small body in limits.rs).
            None if case.status == StatusCode::PAYLOAD_TOO_LARGE => {}
            None => failures.push(format!("{}: the connection failed", case.name)),
        }
        // The healthy client made progress while (or right after) this ran.
        for _ in 0..200 {
            if served.load(Ordering::Relaxed) > before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if served.load(Ordering::Relaxed) == before {
            failures.push(format!("{}: the healthy client made no progress", case.name));
        }
    }
    stop.store(true, Ordering::Relaxed);
    healthy.await.expect("the healthy client saw a failure");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(app.get("/healthz").await.0 == StatusCode::OK);
}
