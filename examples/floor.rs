//! The floor the benchmark measures us against: the least server that can
//! answer our benchmark's requests, written to know what HTTP plus a
//! wasmtime call cost with nothing else. Not part of the product.
//!
//! `cargo run --release --example floor -- PORT`, then:
//! - `GET /healthz`: a bare JSON endpoint.
//! - `POST /execute` with `{"module_name", "function_name", "params"}`: calls
//!   `double` or `fib` (compiled at start; cached `InstancePre`, a fresh
//!   `Store` per request, the call made inline in the handler), with the
//!   same wasmtime settings that matter for the guest's speed as the real
//!   server: fuel, epoch interruption with a ticker thread (the deadline is
//!   far away), NaN canonicalization. The call is synchronous, on the
//!   handler's thread. No limits beyond fuel, no logging, no metrics.
//! - `POST /` with `{"wasm_hex", "function_name", "params"}`: compiles the
//!   module on every request (what a server without a cache or interpreter
//!   does), then calls it.
//!
//! Params and results are i32 only: the floor parses no types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Val};

const DOUBLE_WAT: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

const FIB_WAT: &str = r#"(module (func $fib (export "fib") (param i32) (result i32)
  (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
    (then (local.get 0))
    (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1))) (call $fib (i32.sub (local.get 0) (i32.const 2))))))))"#;

const FUEL: u64 = 1_000_000_000_000;

struct Floor {
    engine: Engine,
    linker: Linker<()>,
    modules: HashMap<&'static str, InstancePre<()>>,
}

type Shared = State<Arc<Floor>>;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true);
    let engine = Engine::new(&config).expect("engine");
    let ticker = engine.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(10));
            ticker.increment_epoch();
        }
    });
    let linker = Linker::new(&engine);
    let mut modules = HashMap::new();
    for (name, wat) in [("double", DOUBLE_WAT), ("fib", FIB_WAT)] {
        let module = Module::new(&engine, wat::parse_str(wat).expect("wat")).expect("compile");
        modules.insert(name, linker.instantiate_pre(&module).expect("pre"));
    }
    let floor = Arc::new(Floor {
        engine,
        linker,
        modules,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/execute", post(execute))
        .route("/", post(compile_and_run))
        .with_state(floor);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        println!("listening on {}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

type Answer = Result<Json<Value>, (StatusCode, String)>;

fn bad(message: impl ToString) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.to_string())
}

async fn execute(State(floor): Shared, Json(body): Json<Value>) -> Answer {
    let name = body["module_name"].as_str().unwrap_or_default();
    let pre = floor.modules.get(name).ok_or_else(|| bad("no such module"))?;
    let instance = {
        let mut store = new_store(&floor.engine);
        let instance = pre.instantiate(&mut store).map_err(bad)?;
        (store, instance)
    };
    call(instance, &body)
}

async fn compile_and_run(State(floor): Shared, Json(body): Json<Value>) -> Answer {
    let wasm = hex::decode(body["wasm_hex"].as_str().unwrap_or_default()).map_err(bad)?;
    let module = Module::new(&floor.engine, wasm).map_err(bad)?;
    let mut store = new_store(&floor.engine);
    let instance = floor.linker.instantiate_async(&mut store, &module).await.map_err(bad)?;
    call((store, instance), &body)
}

fn new_store(engine: &Engine) -> Store<()> {
    let mut store = Store::new(engine, ());
    store.set_fuel(FUEL).unwrap();
    store.set_epoch_deadline(1_000_000);
    store
}

fn call((mut store, instance): (Store<()>, wasmtime::Instance), body: &Value) -> Answer {
    let function = body["function_name"].as_str().unwrap_or_default();
    let func = instance
        .get_func(&mut store, function)
        .ok_or_else(|| bad("no such function"))?;
    let params: Vec<Val> = body["params"]
        .as_array()
        .map(|a| a.iter().map(|v| Val::I32(v.as_i64().unwrap_or(0) as i32)).collect())
        .unwrap_or_default();
    let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
    func.call(&mut store, &params, &mut results).map_err(bad)?;
    let results: Vec<Value> = results.iter().map(|v| json!(v.unwrap_i32())).collect();
    Ok(Json(json!({ "results": results })))
}
