//! The client subcommands of the binary, run as a user would, against a
//! real server: output, and the exit codes scripts rely on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::helpers::spawn_app;

const DOUBLE_WAT: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

fn fixture(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs the binary with `args` and `stdin`, off the test's runtime.
async fn cli(args: Vec<String>, stdin: &'static [u8]) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-exec-api"))
            .args(&args)
            .env_remove("WASM_EXEC_SERVER")
            .env_remove("WASM_EXEC_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn call_prints_results_and_json_on_request() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let wat = fixture(dir.path(), "double.wat", DOUBLE_WAT.as_bytes());
    let wasm = fixture(
        dir.path(),
        "double.wasm",
        &hex::decode(crate::helpers::DOUBLE_HEX).unwrap(),
    );
    let server = app.base.as_str();

    let out = cli(
        args(&["call", wat.to_str().unwrap(), "double", "2", "--server", server]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "4\n");

    // A binary file is sent as binary; negative numbers are params, not flags.
    let out = cli(
        args(&["call", wasm.to_str().unwrap(), "double", "-21", "--server", server]),
        b"",
    )
    .await;
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "-42\n".to_string()));

    let out = cli(
        args(&[
            "call",
            "--json",
            "--server",
            server,
            wat.to_str().unwrap(),
            "double",
            "5",
        ]),
        b"",
    )
    .await;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["results"], serde_json::json!([10]));
    assert_eq!(body["result_types"], serde_json::json!(["i32"]));

    // i64 keeps every digit; non-JSON params go as strings; `--` lets a
    // param start with `-`.
    let i64_wat = fixture(
        dir.path(),
        "id.wat",
        br#"(module (func (export "id") (param i64) (result i64) local.get 0)
                    (func (export "neg") (param f64) (result f64) (f64.neg (local.get 0))))"#,
    );
    let out = cli(
        args(&[
            "call",
            "--server",
            server,
            i64_wat.to_str().unwrap(),
            "id",
            "9007199254740993",
        ]),
        b"",
    )
    .await;
    assert_eq!(text(&out.stdout), "9007199254740993\n");
    let out = cli(
        args(&["call", "--server", server, i64_wat.to_str().unwrap(), "neg", "NaN"]),
        b"",
    )
    .await;
    assert_eq!(text(&out.stdout), "-NaN\n");
    let out = cli(
        args(&[
            "call",
            "--server",
            server,
            i64_wat.to_str().unwrap(),
            "neg",
            "--",
            "-Infinity",
        ]),
        b"",
    )
    .await;
    assert_eq!(text(&out.stdout), "Infinity\n");
}

#[tokio::test]
async fn failures_are_one_line_with_distinct_exit_codes() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let server = app.base.as_str();
    let trap = fixture(
        dir.path(),
        "trap.wat",
        br#"(module (func (export "boom") unreachable))"#,
    );

    // The server refused or the guest trapped: 1, one line naming the code.
    let out = cli(args(&["call", "--server", server, trap.to_str().unwrap(), "boom"]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: trap [unreachable] (422)"), "{err}");

    // A file that cannot be read: 2.
    let out = cli(args(&["call", "--server", server, "/no/such/file.wat", "f"]), b"").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /no/such/file.wat"));

    // Bad usage: 2 (clap's own message).
    let out = cli(args(&["call"]), b"").await;
    assert_eq!(out.status.code(), Some(2));

    // Nothing listening: 3. Port 9 (discard) on loopback is closed here.
    let out = cli(args(&["modules", "--server", "http://127.0.0.1:9"]), b"").await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("error: cannot reach http://127.0.0.1:9"));
}

#[tokio::test]
async fn register_then_modules_lists_it_in_a_table() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let server = app.base.as_str();
    let utils = fixture(dir.path(), "utils.wat", DOUBLE_WAT.as_bytes());
    let twice = fixture(
        dir.path(),
        "twice.wasm",
        &hex::decode(crate::helpers::DOUBLE_TWICE_HEX).unwrap(),
    );

    let out = cli(
        args(&["register", "utils", utils.to_str().unwrap(), "--server", server]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("registered utils (43 bytes, sha256 "));
    assert!(text(&out.stdout).contains("export func double (i32) -> (i32)"));

    let out = cli(
        args(&[
            "register",
            "twice",
            twice.to_str().unwrap(),
            "--host-module",
            "utils",
            "--server",
            server,
        ]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Registering the same name again is the server's refusal: 1.
    let out = cli(
        args(&["register", "utils", utils.to_str().unwrap(), "--server", server]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: module_exists (409)"));

    let out = cli(args(&["modules", "--server", server]), b"").await;
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("HOST MODULES"));
    assert!(lines[1].starts_with("twice ") && lines[1].contains("utils"));
    assert!(lines[2].starts_with("utils "));

    // The linked module is callable through `call` with --host-module.
    let out = cli(
        args(&[
            "call",
            twice.to_str().unwrap(),
            "double_twice",
            "3",
            "--host-module",
            "utils",
            "--server",
            server,
        ]),
        b"",
    )
    .await;
    assert_eq!(text(&out.stdout), "12\n", "{}", text(&out.stderr));
}

#[tokio::test]
async fn run_pipes_stdin_args_and_exit_code_of_a_wasi_program() {
    let app = spawn_app().await;
    let server = app.base.as_str();
    let cat = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/cat.wat");
    let out = cli(
        args(&["run", "--server", server, cat, "--", "a", "b"]),
        b"piped through\n",
    )
    .await;
    assert_eq!(text(&out.stdout), "piped through\n", "{}", text(&out.stderr));
    // The program calls proc_exit(7).
    assert_eq!(out.status.code(), Some(7));

    // A program that traps: 125, and the error on one line.
    let dir = tempfile::tempdir().unwrap();
    let trap = fixture(
        dir.path(),
        "trap.wat",
        br#"(module (func (export "_start") unreachable))"#,
    );
    let out = cli(args(&["run", "--server", server, trap.to_str().unwrap()]), b"").await;
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).starts_with("error: trap [unreachable]"));
}

/// The worked example of docs/API.md through the client: two modules
/// sharing one memory in an environment.
#[tokio::test]
async fn env_commands_share_a_memory_between_two_modules() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let writer = fixture(
        dir.path(),
        "writer.wat",
        br#"(module (memory (export "mem") 1) (func (export "put") (param i32 i32) (i32.store (local.get 0) (local.get 1))))"#,
    );
    let reader = fixture(
        dir.path(),
        "reader.wat",
        br#"(module (import "shared" "mem" (memory 1)) (func (export "get") (param i32) (result i32) (i32.load (local.get 0))))"#,
    );
    let server = app.base.as_str();
    let out = cli(args(&["env", "create", "--server", server]), b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let env = text(&out.stdout).trim().to_string();
    assert!(env.contains('.'), "an environment id: {env}");

    let add = |file: &Path, extra: &[&str]| {
        let mut list = args(&["env", "add", &env, file.to_str().unwrap(), "--server", server]);
        list.extend(extra.iter().map(|s| s.to_string()));
        list
    };
    let out = cli(add(&writer, &["--name", "writer", "--as", "shared"]), b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("instance #0 `writer` of inline, exposed as shared\n"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(add(&reader, &["--name", "reader"]), b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let call = |list: &[&str]| {
        let mut all = args(&["env", "call", &env]);
        all.extend(list.iter().map(|s| s.to_string()));
        all.extend(args(&["--server", server]));
        all
    };
    let out = cli(call(&["put", "16", "42", "--instance", "writer"]), b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(call(&["get", "16", "--instance", "reader"]), b"").await;
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("42\n", Some(0)),
        "{}",
        text(&out.stderr)
    );
    let out = cli(call(&["get", "16", "--instance", "nobody"]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("instance_not_found"),
        "{}",
        text(&out.stderr)
    );

    let out = cli(args(&["env", "show", &env, "--server", server]), b"").await;
    assert_eq!(
        text(&out.stdout),
        "INDEX  NAME    MODULE  EXPOSED AS\n0      writer  inline  shared\n1      reader  inline  -\n"
    );
    let out = cli(args(&["env", "delete", &env, "--server", server]), b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(args(&["env", "show", &env, "--server", server]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("environment_not_found"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn call_takes_a_component_with_json_or_wave_params() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = crate::components::component(
        "package test:cli;\nworld w { record point { x: s64, y: s64 }\n export flip: func(p: point) -> point; }",
        "w",
        r#"(module (memory (export "memory") 1)
          (func (export "flip") (param i64 i64) (result i32)
            (i64.store (i32.const 0) (local.get 1)) (i64.store (i32.const 8) (local.get 0)) (i32.const 0)))"#,
    );
    let file = fixture(dir.path(), "flip.wasm", &wasm);
    let server = app.base.as_str();
    let out = cli(
        args(&[
            "call",
            file.to_str().unwrap(),
            "flip",
            r#"{"x": -9223372036854775808, "y": 2}"#,
            "--server",
            server,
        ]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"x\":2,\"y\":-9223372036854775808}\n");
    let out = cli(
        args(&[
            "call",
            file.to_str().unwrap(),
            "flip",
            "{x: 1, y: 2}",
            "--wave",
            "--server",
            server,
        ]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{x: 2, y: 1}\n");
}

#[tokio::test]
async fn job_commands_submit_watch_status_and_cancel() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let wat = fixture(dir.path(), "double.wat", DOUBLE_WAT.as_bytes());
    let server = app.base.as_str();
    let out = cli(
        args(&[
            "job",
            "submit",
            wat.to_str().unwrap(),
            "double",
            "21",
            "--server",
            server,
        ]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert!(id.contains('.'), "an id: {id}");
    // `watch` follows the job to its end and prints its results.
    let out = cli(args(&["job", "watch", &id, "--server", server]), b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
    assert!(text(&out.stderr).contains("done"), "{}", text(&out.stderr));
    let out = cli(args(&["job", "status", &id, "--server", server]), b"").await;
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "42\n".to_string()));

    // A long job, cancelled: `watch` then says so with exit code 1.
    let spin = fixture(
        dir.path(),
        "spin.wat",
        br#"(module (func (export "spin") (loop (br 0))))"#,
    );
    let out = cli(
        args(&[
            "job",
            "submit",
            spin.to_str().unwrap(),
            "spin",
            "--timeout-ms",
            "60000",
            "--server",
            server,
        ]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let out = cli(args(&["job", "cancel", &id, "--server", server]), b"").await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "cancelled\n".to_string()),
        "{}",
        text(&out.stderr)
    );
    let out = cli(args(&["job", "watch", &id, "--server", server]), b"").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cancelled"), "{}", text(&out.stderr));
    // An unknown job: one line, exit code 1.
    let out = cli(args(&["job", "status", "nobody.0", "--server", server]), b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("job_not_found"), "{}", text(&out.stderr));
}
