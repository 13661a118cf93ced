//! Every error code the API has is produced by a real request to a real
//! server, with the status the code promises.
//!
//! The scenarios are an exhaustive `match` over [`ErrorCode`]: a new code
//! without a scenario does not compile, and a code the server sends that
//! the enum lacks fails `helpers::code` in every test that reads one. The
//! two codes that need a broken store (`not_ready`, `internal`) run over a
//! real redb store wrapped so that its reads fail on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_exec_api::api::error::ErrorCode;
use wasm_exec_api::registry::{ModuleRecord, ModuleStore, RedbStore, StoreError, TokenQuota};

use crate::helpers::{DOUBLE_HEX, TestApp, code, spawn_app_with, spawn_app_with_store, test_settings};

/// The embedded store, whose reads fail while `failing` is set, as a disk
/// or a database connection can, and whose writes find it unreachable while
/// `unreachable` is set, as a networked database's can.
struct FlakyStore {
    inner: RedbStore,
    failing: AtomicBool,
    unreachable: AtomicBool,
    /// Claims to be shared by other nodes, one of which holds instances.
    shared: AtomicBool,
}

impl FlakyStore {
    fn fail_if_asked(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected read failure".into()));
        }
        Ok(())
    }
}

impl ModuleStore for FlakyStore {
    fn put_job(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.inner.put_job(id, record)
    }

    fn job(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.fail_if_asked()?;
        self.inner.job(id)
    }

    fn jobs(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.jobs()
    }

    fn remove_job(&self, id: &str) -> Result<(), StoreError> {
        self.inner.remove_job(id)
    }

    fn list(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        self.inner.list()
    }
    fn insert(&self, record: &ModuleRecord, wasm: &[u8], quota: Option<&TokenQuota>) -> Result<(), StoreError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: the store cannot be reached".into()));
        }
        self.inner.insert(record, wasm, quota)
    }
    fn wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.fail_if_asked()?;
        self.inner.wasm(sha256)
    }
    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.artifact(sha256, engine)
    }
    fn put_artifact(&self, sha256: &str, engine: &str, artifact: &[u8]) -> Result<(), StoreError> {
        self.inner.put_artifact(sha256, engine, artifact)
    }
    fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.inner.remove(name)
    }
    fn check(&self) -> Result<(), StoreError> {
        self.fail_if_asked()?;
        self.inner.check()
    }
    fn size_on_disk(&self) -> Option<u64> {
        self.inner.size_on_disk()
    }
    fn shared(&self) -> bool {
        self.shared.load(Ordering::SeqCst)
    }
    fn node_url(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok((id == "other").then(|| "http://other.example:8000".to_string()))
    }
}

const ADMIN: &str = "admin-0123456789abcdef";
const EXEC: &str = "execute-0123456789abcdef";
const FLOOD: &str = "flood-0123456789abcdef";

struct Servers {
    /// Small module and body limits, no room for instances, a flaky store.
    plain: TestApp,
    store: Arc<FlakyStore>,
    /// Tokens, a per-token quota of zero modules, one request a second.
    guarded: TestApp,
    /// One execution at a time.
    busy: TestApp,
    /// One execution at a time per client, no waiting for one, no jobs.
    crowded: TestApp,
}

/// Settings for one of the scenarios' servers. Several live at once, beside
/// other tests' servers: with the pooling allocator each reserves terabytes
/// of address space, and together they can pass the process's 128 TiB.
/// No scenario here is about the allocator.
fn unpooled() -> wasm_exec_api::config::Settings {
    let mut settings = test_settings();
    settings.pooling = false;
    settings
}

async fn servers() -> Servers {
    let store = Arc::new(FlakyStore {
        inner: RedbStore::in_memory().unwrap(),
        failing: AtomicBool::new(false),
        unreachable: AtomicBool::new(false),
        shared: AtomicBool::new(false),
    });
    let mut settings = unpooled();
    settings.max_module_bytes = 1000;
    settings.body_timeout_ms = 300;
    settings.max_instances = 0;
    let plain = spawn_app_with_store(settings, store.clone()).await;
    let mut settings = unpooled();
    settings.tokens = vec![
        format!("admin:{ADMIN}"),
        format!("execute:{EXEC}"),
        format!("execute:{FLOOD}"),
    ];
    settings.max_modules_per_token = 0;
    settings.rate_limit = 1;
    let guarded = spawn_app_with(settings).await;
    let mut settings = unpooled();
    settings.max_concurrency = 1;
    settings.queue_depth = 0;
    let busy = spawn_app_with(settings).await;
    let mut settings = unpooled();
    settings.max_concurrency = 2;
    settings.client_share = Some(1);
    settings.client_queue_depth = Some(0);
    settings.max_jobs_per_client = 0;
    let crowded = spawn_app_with(settings).await;
    Servers {
        plain,
        store,
        guarded,
        busy,
        crowded,
    }
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request failed");
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /register` on the guarded server with `token`.
async fn register_as(guarded: &TestApp, token: &str) -> (StatusCode, Value) {
    let body = json!({"module_name": "x", "wasm_hex": DOUBLE_HEX});
    send(
        guarded
            .client
            .post(guarded.url("/register"))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

fn inline(wat: &str, function: &str, extra: Value) -> Value {
    let mut body = json!({"wat": wat, "function_name": function});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

/// A request that gets `code`, made against whichever server it needs.
async fn produce(code: ErrorCode, s: &Servers) -> (StatusCode, Value) {
    let plain = &s.plain;
    let guarded = &s.guarded;
    let client = &plain.client;
    match code {
        ErrorCode::InvalidRequest => plain.post("/", &json!({"function_name": "f"})).await,
        ErrorCode::InvalidModule => {
            plain
                .post("/", &json!({"wasm_hex": "0061736d", "function_name": "f"}))
                .await
        }
        ErrorCode::InvalidParams => {
            plain
                .post(
                    "/",
                    &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": ["x"]}),
                )
                .await
        }
        ErrorCode::InvalidMemoryAccess => {
            let wat = r#"(module (memory (export "memory") 1) (func (export "f")))"#;
            let reads = json!({"memory_reads": [{"offset": 70000, "length": 1}]});
            plain.post("/", &inline(wat, "f", reads)).await
        }
        ErrorCode::LinkError => {
            let wat = r#"(module (import "nowhere" "f" (func)) (func (export "f")))"#;
            plain.post("/", &inline(wat, "f", json!({}))).await
        }
        ErrorCode::Unauthorized => send(guarded.client.get(guarded.url("/modules"))).await,
        ErrorCode::Forbidden => register_as(guarded, EXEC).await,
        ErrorCode::QuotaExceeded => register_as(guarded, ADMIN).await,
        ErrorCode::FunctionNotFound => {
            plain
                .post("/", &json!({"wasm_hex": DOUBLE_HEX, "function_name": "triple"}))
                .await
        }
        ErrorCode::ModuleNotFound => plain.execute("nope", "f", json!([])).await,
        ErrorCode::InstanceNotFound => plain.get("/instances/nope").await,
        ErrorCode::EnvironmentNotFound => plain.get("/environments/nope").await,
        ErrorCode::JobNotFound => plain.get("/jobs/nope").await,
        ErrorCode::TooManyJobs => {
            let call = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]});
            s.crowded.post("/jobs", &json!({"call": call})).await
        }
        ErrorCode::GlobalNotFound => {
            let (_, created) = s.busy.post("/instances", &json!({"wasm_hex": DOUBLE_HEX})).await;
            let id = created["id"].as_str().unwrap_or("none");
            s.busy.get(&format!("/instances/{id}/globals/g")).await
        }
        ErrorCode::ResourceNotFound => {
            let (_, created) = s.busy.post("/instances", &json!({"wasm_hex": DOUBLE_HEX})).await;
            let id = created["id"].as_str().unwrap_or("none");
            s.busy.delete(&format!("/instances/{id}/resources/1")).await
        }
        ErrorCode::InstanceOnOtherNode => {
            s.store.shared.store(true, Ordering::SeqCst);
            let answer = plain.get("/instances/other.0123").await;
            s.store.shared.store(false, Ordering::SeqCst);
            answer
        }
        ErrorCode::RouteNotFound => plain.get("/nope").await,
        ErrorCode::MethodNotAllowed => plain.delete("/healthz").await,
        ErrorCode::RequestTimeout => slow_body(plain).await,
        ErrorCode::ModuleExists => {
            plain
                .post("/register", &json!({"module_name": "m", "wasm_hex": DOUBLE_HEX}))
                .await
        }
        ErrorCode::ModuleInUse => plain.delete("/modules/m").await,
        ErrorCode::PayloadTooLarge => {
            plain
                .post("/", &json!({"wasm_hex": "00".repeat(1100), "function_name": "f"}))
                .await
        }
        ErrorCode::UnsupportedMediaType => {
            send(
                client
                    .post(plain.url("/"))
                    .header("content-type", "text/plain")
                    .body("{}"),
            )
            .await
        }
        ErrorCode::Trap => {
            plain
                .run_wat(r#"(module (func (export "f") unreachable))"#, "f", json!([]))
                .await
        }
        ErrorCode::LimitExceeded => {
            let wat = r#"(module (func (export "f") (loop (br 0))))"#;
            plain
                .post("/", &inline(wat, "f", json!({"limits": {"fuel": 1000}})))
                .await
        }
        ErrorCode::RateLimited => {
            let mut last = (StatusCode::OK, Value::Null);
            for _ in 0..10 {
                last = send(guarded.client.get(guarded.url("/modules")).bearer_auth(FLOOD)).await;
                if last.0 == StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            last
        }
        ErrorCode::InstanceCapacity => plain.post("/instances", &json!({"wasm_hex": DOUBLE_HEX})).await,
        ErrorCode::Internal => {
            s.store.failing.store(true, Ordering::SeqCst);
            let answer = plain.get("/modules/m/wasm").await;
            s.store.failing.store(false, Ordering::SeqCst);
            answer
        }
        ErrorCode::Overloaded => overload(&s.busy, StatusCode::SERVICE_UNAVAILABLE).await,
        ErrorCode::ConcurrencyLimit => overload(&s.crowded, StatusCode::TOO_MANY_REQUESTS).await,
        ErrorCode::NotReady => {
            s.store.failing.store(true, Ordering::SeqCst);
            let answer = plain.get("/readyz").await;
            s.store.failing.store(false, Ordering::SeqCst);
            answer
        }
        ErrorCode::StoreUnavailable => {
            s.store.unreachable.store(true, Ordering::SeqCst);
            let answer = plain
                .post("/register", &json!({"module_name": "later", "wasm_hex": DOUBLE_HEX}))
                .await;
            s.store.unreachable.store(false, Ordering::SeqCst);
            answer
        }
    }
}

/// A body that never finishes arriving, as status and JSON body.
async fn slow_body(app: &TestApp) -> (StatusCode, Value) {
    let text = app.post_unfinished_body().await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Holds the only execution slot with a spinning guest, then asks for
/// another until refused (bounded).
async fn overload(app: &TestApp, refused: StatusCode) -> (StatusCode, Value) {
    let (client, url) = (app.client.clone(), app.url("/"));
    let spin = tokio::spawn(async move {
        let body = inline(
            r#"(module (func (export "f") (loop (br 0))))"#,
            "f",
            json!({"limits": {"timeout_ms": 3000}}),
        );
        client.post(url).json(&body).send().await.map(|r| r.status())
    });
    // Wait (bounded) until the spin holds the slot, as /metrics shows.
    for _ in 0..300 {
        let metrics = app.metrics().await;
        if metrics.contains("wasm_exec_executions_in_flight 1") || spin.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..300 {
        last = app
            .post(
                "/",
                &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]}),
            )
            .await;
        if last.0 == refused || spin.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = spin.await;
    last
}

#[tokio::test]
async fn every_error_code_is_produced_with_its_status() {
    let s = servers().await;
    // What the scenarios stand on: `m` registered, `uses_m` importing it.
    let (status, body) = s
        .plain
        .post("/register", &json!({"module_name": "m", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let uses = r#"(module (import "m" "double" (func (param i32) (result i32))))"#;
    let (status, body) = s.plain.register_wat("uses_m", uses, &["m"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut failures = Vec::new();
    for &expected in ErrorCode::ALL {
        let (status, body) = produce(expected, &s).await;
        let got = body["error"]["code"].as_str().map(|_| code(&body).to_string());
        if got.as_deref() != Some(expected.as_str()) || status != expected.status() {
            failures.push(format!(
                "{}: expected {} {}, got {status} {body}",
                expected.as_str(),
                expected.status(),
                expected.as_str()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The store recovered: the server is ready again.
    assert_eq!(s.plain.get("/readyz").await.0, StatusCode::OK);
}
