//! How many requests threads push through the whole service together per
//! second, without sockets: the front (request id, token and rate checks,
//! metrics, the access log), the router, the handler (admission, lookup,
//! the call, the JSON answer).
//!
//! Each thread runs its own single-threaded runtime and sends its requests
//! one after another, as one worker of the server's runtime serves one
//! connection. With 1 thread it shows a request's own cost, without the
//! kernel's; with N threads on N cores, a path that writes nothing that
//! other cores also write makes N times the 1-thread total, and one that
//! does (a shared count, a lock) falls short of it. The HTTP benchmark
//! cannot show this on a 2-core machine, where wrk needs the second core.
//!
//! A bare axum router (one handler, no state, nothing around it) runs in
//! the same run, as the floor to compare with.
//!
//! `cargo run --release --example front_scaling -- [THREADS] [SECONDS] [ONLY] > /dev/null`
//! (figures go to stderr, the access log to stdout; default: one thread
//! per core, 3 s, every scenario; with `ONLY`, the scenarios whose name
//! contains it, for a profiler). Figures are in docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use clap::Parser;
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use wasm_exec_api::config::Settings;
use wasm_exec_api::startup::Application;

/// As the server's binary does (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOUBLE: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

// The origin's linking example: `utils` exports `double`, and the inline
// module's `double_twice` imports it and calls it twice.
#[path = "../tests/api/fixtures/origin.rs"]
mod origin;
use origin::{DOUBLE_HEX as UTILS_HEX, DOUBLE_TWICE_HEX};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(cores);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let only = args.next().unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());

    wasm_exec_api::telemetry::init();
    let settings = Settings::parse_from(["wasm-exec-api", "--memory", "--port", "0", "--tier", "compiled"]);
    let max_stack = settings.max_stack_bytes;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let peer: SocketAddr = ([127, 0, 0, 1], 40_000).into();
    let api = runtime.block_on(async {
        let api = Application::build(settings).await?.into_api();
        for (name, code) in [
            ("double", serde_json::json!({"wat": DOUBLE})),
            ("utils", serde_json::json!({"wasm_hex": UTILS_HEX})),
        ] {
            let mut body = code;
            body["module_name"] = name.into();
            let (status, text) = send(api.connection(Some(peer)), Method::POST, "/register", body.to_string()).await;
            anyhow::ensure!(status.is_success(), "registration of {name} failed: {status} {text}");
        }
        anyhow::Ok(api)
    })?;

    let bare = axum::Router::new().route("/healthz", axum::routing::get(|| async { r#"{"status":"ok"}"# }));
    let report = |what: &str, n: usize, per_second: f64| {
        eprintln!("{what}, {n} thread(s): {:.0} k requests/s in all", per_second / 1e3);
    };
    let what = "bare axum GET /healthz";
    for n in [1, threads].into_iter().filter(|_| wanted(what)) {
        // Per connection, as axum's own `serve` does.
        let connect = || bare.clone().with_state(());
        report(what, n, rate(n, seconds, max_stack, connect, |c| healthz(c.clone())));
    }
    // A client that opens a connection per request pays for the
    // connection's setup (its router and state) on every request.
    let what = "bare axum GET /healthz, a connection per request";
    for n in [1, threads].into_iter().filter(|_| wanted(what)) {
        let per_second = rate(n, seconds, max_stack, || (), |()| healthz(bare.clone().with_state(())));
        report(what, n, per_second);
    }
    let what = "GET /healthz, a connection per request";
    for n in [1, threads].into_iter().filter(|_| wanted(what)) {
        let per_second = rate(n, seconds, max_stack, || (), |()| healthz(api.connection(Some(peer))));
        report(what, n, per_second);
    }
    let execute = r#"{"module_name":"double","function_name":"double","params":[21]}"#;
    let inline = serde_json::json!({"wat": DOUBLE, "function_name": "double", "params": [21]}).to_string();
    let linking = serde_json::json!({
        "wasm_hex": DOUBLE_TWICE_HEX, "function_name": "double_twice", "params": [2], "host_modules": ["utils"]
    })
    .to_string();
    let requests: [(&str, Method, &str, &str); 4] = [
        ("GET /healthz", Method::GET, "/healthz", ""),
        ("POST /execute double", Method::POST, "/execute", execute),
        ("POST / cached inline double", Method::POST, "/", &inline),
        ("POST / linking example", Method::POST, "/", &linking),
    ];
    for (what, method, path, body) in requests {
        for n in [1, threads].into_iter().filter(|_| wanted(what)) {
            let connect = || api.connection(Some(peer));
            let per_second = rate(n, seconds, max_stack, connect, |connection| {
                let (service, method) = (connection.clone(), method.clone());
                async move {
                    let (status, text) = send(service, method, path, body.to_string()).await;
                    assert_eq!(status, StatusCode::OK, "{what}: {text}");
                }
            });
            report(what, n, per_second);
        }
    }
    Ok(())
}

/// `GET /healthz` through `service`, which must answer 200.
async fn healthz<S>(service: S)
where
    S: Service<Request, Response = axum::response::Response, Error = std::convert::Infallible>,
{
    let (status, text) = send(service, Method::GET, "/healthz", String::new()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

/// One request through `service` (a connection's).
async fn send<S>(service: S, method: Method, path: &str, body: String) -> (StatusCode, String)
where
    S: Service<Request, Response = axum::response::Response, Error = std::convert::Infallible>,
{
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a valid request");
    let response = service.oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("a whole body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// How many requests `n` threads make per second together in `seconds`,
/// each on a runtime of its own whose thread may run guest code
/// synchronously, as the server's workers do, over a connection of its
/// own (`connect`).
fn rate<C, M, F, Fut>(n: usize, seconds: u64, max_stack: usize, connect: M, request: F) -> f64
where
    M: Fn() -> C + Sync,
    F: Fn(&C) -> Fut + Sync,
    Fut: Future<Output = ()>,
{
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(wasm_exec_api::engine::WORKER_STACK_BYTES)
                    .spawn_scoped(scope, || {
                        wasm_exec_api::engine::allow_sync_calls(max_stack);
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime");
                        let connection = connect();
                        runtime.block_on(async {
                            let mut count = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                for _ in 0..64 {
                                    request(&connection).await;
                                }
                                count += 64;
                            }
                            count
                        })
                    })
                    .expect("a thread")
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}
