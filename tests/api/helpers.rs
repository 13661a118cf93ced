//! Test harness: a real server per test, on 127.0.0.1 port 0, with typed
//! helpers for each endpoint.
//!
//! The server runs on its own thread with its own multi-threaded tokio
//! runtime, as in production, so a hostile guest in one request cannot share
//! an executor with the test's client. Set `TEST_LOG=1` to see server logs.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wasm_exec_api::api::error::ErrorCode;
use wasm_exec_api::config::Settings;
use wasm_exec_api::registry::ModuleStore;
use wasm_exec_api::startup::Application;

#[path = "fixtures/origin.rs"]
mod origin;
pub use origin::{DOUBLE_HEX, DOUBLE_TWICE_HEX};

/// A module that keeps a count in a global: `bump` adds one and returns
/// it, so each call of a fresh instance answers 1.
pub const COUNTER: &str = r#"(module (global $n (mut i32) (i32.const 0))
    (func (export "bump") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Default test settings: port 0, registry in memory.
pub fn test_settings() -> Settings {
    Settings::parse_from(["wasm-exec-api", "--port", "0", "--memory"])
}

/// A server that always compiles before running (`--tier compiled`), for
/// tests of the compile path and its cache.
pub async fn spawn_compiled_app() -> TestApp {
    let mut settings = test_settings();
    settings.tier = wasm_exec_api::engine::TierMode::Compiled;
    spawn_app_with(settings).await
}

/// A server that runs everything it can on the interpreter
/// (`--tier interpreter`).
pub async fn spawn_interpreted_app() -> TestApp {
    let mut settings = test_settings();
    settings.tier = wasm_exec_api::engine::TierMode::Interpreter;
    spawn_app_with(settings).await
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

/// A server with `settings` (the port is forced to 0 and bind to loopback).
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_inner(settings, None).await
}

/// A server with `settings` over `store` instead of the one they name.
pub async fn spawn_app_with_store(settings: Settings, store: Arc<dyn ModuleStore>) -> TestApp {
    spawn_app_inner(settings, Some(store)).await
}

async fn spawn_app_inner(mut settings: Settings, store: Option<Arc<dyn ModuleStore>>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        wasm_exec_api::telemetry::init();
    }
    settings.port = 0;
    settings.bind = [127, 0, 0, 1].into();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = wasm_exec_api::startup::runtime_builder(&settings)
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let built = match store {
                Some(store) => Application::build_with_store(settings, store).await,
                None => Application::build(settings).await,
            };
            let app = match built {
                Ok(app) => app,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(app.port()));
            app.run_until(async {
                let _ = shutdown_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let port = ready_rx
        .await
        .expect("server thread died")
        .expect("server failed to start");
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
    };
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "server not ready");
    app
}

/// A server whose registry lives in `dir`.
pub async fn spawn_app_on(dir: &Path) -> TestApp {
    let mut settings = test_settings();
    settings.memory = false;
    settings.data_dir = Some(dir.to_path_buf());
    spawn_app_with(settings).await
}

impl TestApp {
    /// Stops the server gracefully and waits until its store is closed.
    pub async fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns status and raw body text.
    pub async fn post_text(&self, path: &str, body: &Value) -> (StatusCode, String) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request failed");
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// POSTs JSON; returns status and parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, text) = self.post_text(path, body).await;
        (status, parse(&text))
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request failed");
        response.text().await.expect("metrics body")
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("request failed");
        let status = response.status();
        (status, parse(&response.text().await.unwrap()))
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.delete(self.url(path)).send().await.expect("request failed");
        let status = response.status();
        (status, parse(&response.text().await.unwrap()))
    }

    /// `POST /` of a body that never finishes arriving (its first byte of a
    /// declared hundred); returns the raw HTTP response the server sends
    /// once it gives up on the body. Fails if it never does.
    pub async fn post_unfinished_body(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "the server kept waiting for the body");
        String::from_utf8_lossy(&response).into_owned()
    }

    /// `POST /` with WebAssembly text.
    pub async fn run_wat(&self, wat: &str, function: &str, params: Value) -> (StatusCode, Value) {
        self.post("/", &json!({ "wat": wat, "function_name": function, "params": params }))
            .await
    }

    /// `POST /` with WebAssembly text; raw body (for exact number checks).
    pub async fn run_wat_text(&self, wat: &str, function: &str, params: Value) -> (StatusCode, String) {
        self.post_text("/", &json!({ "wat": wat, "function_name": function, "params": params }))
            .await
    }

    /// `POST /register` with WebAssembly text.
    pub async fn register_wat(&self, name: &str, wat: &str, hosts: &[&str]) -> (StatusCode, Value) {
        self.post(
            "/register",
            &json!({ "module_name": name, "wat": wat, "host_modules": hosts }),
        )
        .await
    }

    /// `POST /execute`.
    pub async fn execute(&self, name: &str, function: &str, params: Value) -> (StatusCode, Value) {
        self.post(
            "/execute",
            &json!({ "module_name": name, "function_name": function, "params": params }),
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn parse(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
}

/// The `error.code` of an error body. Fails the test if the server sent a
/// code that [`ErrorCode`] (the one list of codes) does not have.
pub fn code(body: &Value) -> &str {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    if serde_json::from_value::<ErrorCode>(Value::String(code.to_string())).is_err() {
        panic!("the server sent error code `{code}`, which ErrorCode does not list: {body}");
    }
    code
}

/// A response's `stats`: the body's on success, its error's on failure.
pub fn stats_of(body: &Value) -> &Value {
    if body["stats"].is_object() {
        &body["stats"]
    } else {
        &body["error"]["stats"]
    }
}

/// `body` without `fields` in its `stats` (or its error's): what a test
/// comparing two identical calls' answers expects to differ between them.
pub fn without_stats(mut body: Value, fields: &[&str]) -> Value {
    for at in ["/stats", "/error/stats"] {
        if let Some(stats) = body.pointer_mut(at).and_then(|s| s.as_object_mut()) {
            for field in fields {
                stats.remove(*field);
            }
        }
    }
    body
}

/// `stats.tier` of a response, success or error.
pub fn tier_of(body: &Value) -> Option<String> {
    stats_of(body)["tier"].as_str().map(str::to_string)
}

/// Name → SHA-256 of every module in a `GET /modules` body.
pub fn digests_by_name(list: &Value) -> std::collections::BTreeMap<String, String> {
    list["modules"]
        .as_array()
        .expect("a module list")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// xorshift64*: a small generator with a fixed sequence for each seed, so
/// that a test made of random inputs reproduces its failure.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `choices`.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }
}
