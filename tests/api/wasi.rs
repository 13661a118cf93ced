//! WASI preview 1 programs: stdin in, stdout and stderr out, exit codes,
//! arguments and environment from the request, nothing from the host.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{code, spawn_app, spawn_app_with, test_settings};

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Copies stdin to stdout until end of file.
const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.load (i32.const 8))) (then (return)))
      (i32.store (i32.const 4) (i32.load (i32.const 8)))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
      (br $again))))"#;

const EXIT_3: &str = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

#[tokio::test]
async fn a_command_runs_start_when_no_function_is_named() {
    let app = spawn_app().await;
    let (status, body) = app.post("/", &json!({"wat": HELLO})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "hello\n");
    assert_eq!(body["stderr"], "");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["stdout_truncated"], false);
}

#[tokio::test]
async fn stdin_reaches_the_program_and_ends_in_eof() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/", &json!({"wat": CAT, "wasi": {"stdin": "one\ntwo\n"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "one\ntwo\n");
    let (_, body) = app
        .post("/", &json!({"wat": CAT, "wasi": {"stdin": {"base64": "AAEC"}}}))
        .await;
    assert_eq!(body["stdout"], "\u{0}\u{1}\u{2}");
    // No stdin given: the program reads end of file at once.
    let (_, body) = app.post("/", &json!({"wat": CAT})).await;
    assert_eq!(
        (body["stdout"].as_str(), body["exit_code"].as_i64()),
        (Some(""), Some(0))
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_a_normal_result() {
    let app = spawn_app().await;
    let (status, body) = app.post("/", &json!({"wat": EXIT_3})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["exit_code"], 3);
}

#[tokio::test]
async fn output_beyond_the_cap_is_truncated_and_flagged() {
    let mut settings = test_settings();
    settings.max_output_bytes = 5;
    let app = spawn_app_with(settings).await;
    let (status, body) = app
        .post("/", &json!({"wat": CAT, "wasi": {"stdin": "0123456789"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "01234");
    assert_eq!(body["stdout_truncated"], true);
}

/// A process may exit with any status; 126 and above are no exception
/// (wasmtime's own command line refuses them).
#[tokio::test]
async fn any_exit_status_is_reported_as_given() {
    let app = spawn_app().await;
    for status in [125, 126, 200, 255, 256, -1] {
        let wat = format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (call $exit (i32.const {status}))))"#
        );
        let (status_code, body) = app.post("/", &json!({"wat": wat})).await;
        assert_eq!(status_code, StatusCode::OK, "{body}");
        assert_eq!(body["exit_code"], status, "{body}");
    }
}

#[tokio::test]
async fn a_reactor_is_initialized_before_its_exports_run() {
    let app = spawn_app().await;
    let wat = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (global $ready (mut i32) (i32.const 0))
      (func (export "_initialize") (global.set $ready (i32.const 41)))
      (func (export "ready") (result i32) (i32.add (global.get $ready) (i32.const 1))))"#;
    let (status, body) = app.run_wat(wat, "ready", json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([42]));
}

#[tokio::test]
async fn a_wasi_program_obeys_the_time_limit() {
    let app = spawn_app().await;
    let wat = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (func (export "_start") (loop (br 0))))"#;
    let (status, body) = app.post("/", &json!({"wat": wat, "limits": {"timeout_ms": 100}})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded")
    );
    assert_eq!(body["error"]["limit"], "time");
}

#[tokio::test]
async fn an_unknown_wasi_function_is_a_link_error() {
    let app = spawn_app().await;
    let wat = r#"(module (import "wasi_snapshot_preview1" "no_such_call" (func)) (func (export "_start")))"#;
    let (status, body) = app.post("/", &json!({"wat": wat})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "link_error"));
    assert!(
        body["error"]["message"].as_str().unwrap().contains("no_such_call"),
        "{body}"
    );
}

/// Compiles `fixtures/upcase.c` with Debian's clang and wasi-libc, which
/// `.ci/run` installs. Fails loudly when they are missing.
pub fn compile_c_fixture(out: &Path) -> Vec<u8> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/upcase.c");
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(out)
        .arg(&source)
        .status()
        .expect("clang is needed for this test: run `bash .ci/run` or `apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`");
    assert!(status.success(), "clang failed to build {}", source.display());
    std::fs::read(out).unwrap()
}

#[tokio::test]
#[ignore = "needs Debian clang, lld, wasi-libc and libclang-rt-14-dev-wasm32; `scripts/test` installs them and runs it"]
async fn a_c_program_built_for_wasi_reads_stdin_and_writes_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = compile_c_fixture(&dir.path().join("upcase.wasm"));
    let app = spawn_app().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let request = json!({"wasm_base64": b64, "wasi": {"args": ["a", "b c"], "env": {"GREETING": "hi"}, "stdin": "line one\nline two\n"}});
    let (status, body) = app.post("/", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["stdout"],
        "args:3 main a b c\nGREETING=hi HOME=(none)\nhost file: denied\nLINE ONE\nLINE TWO\n"
    );
    assert_eq!(body["stderr"], "done\n");
    assert_eq!(body["exit_code"], 7);

    // Registered, it runs the same through /execute, with its name as argv[0].
    let (status, _) = app
        .post("/register", &json!({"module_name": "upcase", "wasm_base64": b64}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app
        .post("/execute", &json!({"module_name": "upcase", "wasi": {"stdin": "x\n"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["stdout"].as_str().unwrap().starts_with("args:1 upcase\n"),
        "{body}"
    );
    assert!(body["stdout"].as_str().unwrap().ends_with("X\n"), "{body}");
}

#[tokio::test]
async fn a_ten_megabyte_module_is_accepted_inline_and_registered() {
    // A tiny command followed by a 10 MiB data segment: within the default
    // limits, sent as base64 (about 14 MB of JSON). The segment goes at
    // address 256, where `_start` prints three bytes of it from.
    let mut wasm = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 200)
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 256)) (i32.store (i32.const 4) (i32.const 3))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap();
    let payload_len = 10 * 1024 * 1024;
    let mut segment = Vec::new();
    leb128(&mut segment, 1); // one segment
    segment.push(0); // active, memory 0
    segment.extend_from_slice(&[0x41, 0x80, 0x02, 0x0b]); // (i32.const 256) end
    leb128(&mut segment, payload_len as u64);
    segment.extend(std::iter::repeat_n(b'a', payload_len));
    wasm.push(11); // data section id
    leb128(&mut wasm, segment.len() as u64);
    wasm.extend(segment);
    assert!(wasm.len() > payload_len);

    let b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let app = spawn_app().await;
    let (status, body) = app.post("/", &json!({"wasm_base64": b64})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "aaa");
    let (status, body) = app
        .post("/register", &json!({"module_name": "big", "wasm_base64": b64}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["size"], wasm.len());
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[tokio::test]
async fn proc_exit_from_a_reactor_export_returns_no_results() {
    let app = spawn_app().await;
    let wat = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "quit") (result i32) (call $exit (i32.const 5)) (i32.const 1)))"#;
    let (status, body) = app.run_wat(wat, "quit", json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["results"].clone(), body["result_types"].clone()),
        (json!([]), json!([]))
    );
    assert_eq!(body["exit_code"], 5);
}

/// A pointer a WASI call cannot use traps, as WASI specifies: out of
/// bounds, or misaligned for what it points to. (It was once reported as a
/// link error.)
#[tokio::test]
async fn a_bad_pointer_passed_to_wasi_traps() {
    let app = crate::helpers::spawn_app().await;
    for (iovs, kind) in [(65532, "out_of_bounds_memory_access"), (1, "misaligned_memory_access")] {
        let wat = format!(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
               (memory (export "memory") 1)
               (func (export "_start") (drop (call $w (i32.const 1) (i32.const {iovs}) (i32.const 2) (i32.const 0)))))"#
        );
        let (status, body) = app.post("/", &serde_json::json!({"wat": wat})).await;
        assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "trap", "{body}");
        assert_eq!(body["error"]["trap"], kind, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("WASI call"),
            "{body}"
        );
    }
}

/// The C program gives the same output, errors and exit status on both
/// tiers: wasi-libc's start-up (arguments, environment, preopen scan,
/// `fdstat` of stdio), a refused `fopen`, buffered reads and writes.
#[tokio::test]
#[ignore = "needs Debian clang, lld, wasi-libc and libclang-rt-14-dev-wasm32; `scripts/test` installs them and runs it"]
async fn a_c_program_answers_alike_on_both_tiers() {
    use wasm_exec_api::engine::TierMode;
    let dir = tempfile::tempdir().unwrap();
    let wasm = compile_c_fixture(&dir.path().join("upcase.wasm"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let stdin = "first line\n".repeat(40) + "ÿ last line without a newline";
    let request = json!({"wasm_base64": b64, "wasi": {"args": ["x", ""], "env": {"HOME": "/nowhere", "GREETING": "hello"}, "stdin": stdin}});
    let mut answers = Vec::new();
    for (tier, name) in [(TierMode::Interpreter, "interpreter"), (TierMode::Compiled, "compiled")] {
        let mut settings = crate::helpers::test_settings();
        settings.tier = tier;
        let app = crate::helpers::spawn_app_with(settings).await;
        let (status, body) = app.post("/", &request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stats"]["tier"], name, "{body}");
        answers.push(json!([
            body["stdout"],
            body["stderr"],
            body["exit_code"],
            body["results"]
        ]));
    }
    assert_eq!(answers[0], answers[1], "the tiers disagree");
    assert_eq!(answers[0][2], 7);
    assert!(
        answers[0][0]
            .as_str()
            .unwrap()
            .contains("GREETING=hello HOME=/nowhere\nhost file: denied\n")
    );
}
