//! `/metrics`, `/readyz` and request ids, seen from a client.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, spawn_app, spawn_app_with, spawn_compiled_app, test_settings, without_stats};

/// The value of the sample `name` with exactly these labels (in the order
/// the server writes them), or `None`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn scrape(app: &crate::helpers::TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "exposition must end with # EOF");
    text
}

#[tokio::test]
async fn metrics_count_requests_executions_cache_and_state() {
    // Compiled tier: the compile cache's counters are part of what is checked.
    let app = spawn_compiled_app().await;
    let before = scrape(&app).await;
    assert_eq!(sample(&before, "wasm_exec_live_instances"), Some(0.0));
    assert_eq!(sample(&before, "wasm_exec_registered_modules"), Some(0.0));

    // One compile, then two cache hits; one trap.
    for _ in 0..3 {
        let (status, body) = app
            .post(
                "/",
                &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [2]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = app
        .run_wat("(module (func (export \"boom\") unreachable))", "boom", json!([]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.register_wat("m", "(module (func (export \"f\")))", &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.post("/instances", &json!({"module_name": "m"})).await;
    assert_eq!(status, StatusCode::CREATED);

    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"wasm_exec_http_requests_total{method="POST",route="/",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"wasm_exec_http_requests_total{method="POST",route="/",status="422"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wasm_exec_execution_duration_seconds_count{endpoint="inline",outcome="ok"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wasm_exec_execution_duration_seconds_count{endpoint="inline",outcome="trap"}"#
        ),
        Some(1.0)
    );
    // double(2) costs fuel; the exact amount is the engine's business.
    assert!(sample(&text, "wasm_exec_fuel_consumed_total").unwrap() > 0.0);
    assert!(sample(&text, "wasm_exec_compile_cache_hits_total").unwrap() >= 2.0);
    assert!(sample(&text, "wasm_exec_compile_cache_misses_total").unwrap() >= 3.0);
    assert_eq!(sample(&text, "wasm_exec_live_instances"), Some(1.0));
    assert_eq!(sample(&text, "wasm_exec_registered_modules"), Some(1.0));
    assert!(sample(&text, "wasm_exec_registered_module_bytes").unwrap() > 0.0);
    // The scrape before this one was counted under its route template.
    assert!(
        sample(
            &text,
            r#"wasm_exec_http_requests_total{method="GET",route="/metrics",status="200"}"#
        )
        .is_some()
    );
}

#[tokio::test]
async fn metrics_label_routes_by_template_not_raw_path() {
    let app = spawn_app().await;
    for name in ["a", "b", "c"] {
        let (status, _) = app.get(&format!("/modules/{name}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = app.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"wasm_exec_http_requests_total{method="GET",route="/modules/{name}",status="404"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"wasm_exec_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("/no/such/route"));
}

#[tokio::test]
async fn readyz_reports_the_store_answering() {
    let app = spawn_app().await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["modules"], 0);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_valid_client_id_is_kept() {
    let app = spawn_app().await;
    let first = app.client.get(app.url("/healthz")).send().await.unwrap();
    let second = app.client.post(app.url("/")).body("not json").send().await.unwrap();
    let a = first.headers()["x-request-id"].to_str().unwrap().to_string();
    let b = second.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "ids are unique per request");

    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-42.a:b_c")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-42.a:b_c");

    // An id that is too long or has characters unsafe for logs is replaced.
    for bad in ["x".repeat(129), "a b".to_string(), "<script>".to_string()] {
        let replaced = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = replaced.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert!(id.len() <= 128);
    }
}

/// The real binary's log line for a request carries the same id as the
/// response header, and the log is plain text when it is not a terminal.
#[tokio::test]
async fn the_log_line_carries_the_request_id() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-exec-api"))
        .args(["--memory", "--port", &port.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready, "server did not start");
    let response = client
        .get(format!("{base}/modules/nope"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let generated = client.get(format!("{base}/readyz")).send().await.unwrap();
    let generated_id = generated.headers()["x-request-id"].to_str().unwrap().to_string();

    let found = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (mut client_id_line, mut generated_line) = (None, None);
        while std::time::Instant::now() < deadline && (client_id_line.is_none() || generated_line.is_none()) {
            if let Ok(line) = lines_rx.recv_timeout(std::time::Duration::from_millis(100)) {
                if line.contains("request_id=trace-me-123") {
                    client_id_line = Some(line);
                } else if line.contains(&format!("request_id={generated_id}")) {
                    generated_line = Some(line);
                }
            }
        }
        (client_id_line, generated_line)
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let (client_id_line, generated_line) = found;
    let line = client_id_line.expect("no log line with the client's request id");
    assert!(
        line.contains("status=404") && line.contains("code=module_not_found") && line.contains("path=/modules/nope"),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "ANSI escapes in a non-terminal log: {line}");
    assert!(
        generated_line
            .expect("no log line with the generated id")
            .contains("path=/readyz")
    );
}

/// A module returning `n`; every `n` in 1000..=1009 gives the same code
/// size, so each weighs the same in the compile cache.
fn constant_module(n: u32) -> String {
    format!(r#"(module (func (export "get") (result i32) (i32.const {n})))"#)
}

async fn compile_state(app: &crate::helpers::TestApp, n: u32) -> String {
    let (status, body) = app.run_wat(&constant_module(n), "get", json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([n]));
    crate::helpers::stats_of(&body)["compile"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn compile_cache_stays_within_its_byte_bound() {
    // What one such module weighs, read off a server with the default bound.
    let probe = spawn_compiled_app().await;
    assert_eq!(compile_state(&probe, 1000).await, "compiled");
    let weight = sample(&scrape(&probe).await, "wasm_exec_compile_cache_bytes").unwrap();
    assert!(weight > 0.0, "a compiled module weighs something");

    // Room for two and a half: the third module drops the least recently used.
    let mut settings = test_settings();
    settings.tier = wasm_exec_api::engine::TierMode::Compiled;
    settings.cache_bytes = (weight * 2.5) as usize;
    let app = spawn_app_with(settings).await;
    for n in 1000..1005 {
        assert_eq!(compile_state(&app, n).await, "compiled");
    }
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "wasm_exec_compile_cache_entries"), Some(2.0), "{text}");
    let held = sample(&text, "wasm_exec_compile_cache_bytes").unwrap();
    assert!(held <= weight * 2.5, "{held} bytes held, bound {}", weight * 2.5);
    // The two most recent are kept; the first was dropped and compiles again.
    assert_eq!(compile_state(&app, 1004).await, "cached");
    assert_eq!(compile_state(&app, 1003).await, "cached");
    assert_eq!(compile_state(&app, 1000).await, "compiled");
}

/// Counts to its param: stateless (no memory, table, mutable global or
/// import), so its calls begin on the request's thread.
const COUNT_TO: &str = r#"(module (func (export "count") (param i32) (result i32) (local i32)
    (loop (local.set 1 (i32.add (local.get 1) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 1) (local.get 0))))
    (local.get 1)))"#;

#[tokio::test]
async fn a_stateless_call_that_runs_into_a_tick_is_run_again_with_the_same_answer() {
    // A call of a stateless module begins synchronously; one long enough to
    // meet an epoch tick (1 to 10 ms; this one runs for tens of
    // milliseconds) gives its thread back and runs again from the start on
    // a fiber. Its results and fuel are then those of one uninterrupted
    // call: the same as the same function's in a module with a memory,
    // which is stateful and so always called on a fiber.
    let app = spawn_compiled_app().await;
    let reruns = |text: &str| sample(text, "wasm_exec_sync_calls_rerun_total").expect("the counter is there");
    let before = reruns(&scrape(&app).await);
    let n = 50_000_000;
    let mut answers = Vec::new();
    for wat in [
        COUNT_TO.to_string(),
        COUNT_TO.replacen("(module ", "(module (memory 1) ", 1),
    ] {
        // A short call first leaves an instance for the long one, which is
        // then tried without awaiting (`WasmEngine::run_now`) before it
        // runs again on a fiber.
        let (status, body) = app.run_wat(&wat, "count", json!([10])).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([10])), "{body}");
        let (status, body) = app.run_wat(&wat, "count", json!([n])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([n]), "{body}");
        assert_eq!(body["stats"]["tier"], "compiled", "{body}");
        answers.push(body["stats"]["fuel_consumed"].as_u64().unwrap());
    }
    assert_eq!(
        answers[0], answers[1],
        "fuel of the rerun stateless call and of the stateful one"
    );
    // The counter is the process's: other tests' calls may add to it, so
    // only its growth is checked.
    assert!(reruns(&scrape(&app).await) > before, "the stateless call was run again");
}

#[tokio::test]
async fn a_linked_call_that_keeps_nothing_is_run_again_with_the_same_answer() {
    // A root that imports only a stateless host's function keeps nothing
    // anywhere either: its calls too begin synchronously, and a long one
    // runs again from the start on a fiber. Its answer and fuel are those
    // of the same graph with a memory in the root, which is always called
    // on a fiber.
    let app = spawn_compiled_app().await;
    let reruns = |text: &str| sample(text, "wasm_exec_sync_calls_rerun_total").expect("the counter is there");
    let (status, body) = app.register_wat("count_host", COUNT_TO, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let root = r#"(module (import "count_host" "count" (func $count (param i32) (result i32)))
        (func (export "count") (param i32) (result i32) (call $count (local.get 0))))"#;
    let call = |wat: &str, n: i64| json!({"wat": wat, "function_name": "count", "params": [n], "host_modules": ["count_host"]});
    let n = 50_000_000;
    let mut answers = Vec::new();
    for wat in [
        root.to_string(),
        root.replacen("(func (export", "(memory 1) (func (export", 1),
    ] {
        let (status, body) = app.post("/", &call(&wat, 10)).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([10])), "{body}");
        let before = reruns(&scrape(&app).await);
        let (status, body) = app.post("/", &call(&wat, n)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([n]), "{body}");
        assert_eq!(body["stats"]["tier"], "compiled", "{body}");
        answers.push((
            body["stats"]["fuel_consumed"].as_u64().unwrap(),
            reruns(&scrape(&app).await) > before,
        ));
    }
    assert_eq!(
        answers[0].0, answers[1].0,
        "fuel of the rerun linked call and of the stateful one"
    );
    // The counter is the process's: other tests' calls may add to it, so
    // only its growth over the stateless graph's call is checked.
    assert!(answers[0].1, "the linked call that keeps nothing was run again");
}

#[tokio::test]
async fn calls_made_without_awaiting_answer_as_the_first_call_did() {
    // The first call of a stateless module instantiates it and leaves the
    // instance behind; later calls are made on it without awaiting
    // (`WasmEngine::run_now`). Each answer, success or failure, is the
    // same on both paths but for the timings.
    let app = spawn_compiled_app().await;
    let wat = r#"(module
        (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
        (func (export "boom") (unreachable))
        (func (export "spin") (loop (br 0))))"#;
    let (status, body) = app.register_wat("at_once", wat, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let calls = [
        json!({"module_name": "at_once", "function_name": "double", "params": [21]}),
        json!({"module_name": "at_once", "function_name": "double", "params": ["-0x80000000"]}),
        json!({"module_name": "at_once", "function_name": "boom"}),
        json!({"module_name": "at_once", "function_name": "spin", "limits": {"fuel": 10000}}),
        json!({"module_name": "at_once", "function_name": "double", "params": [1.5]}),
        json!({"module_name": "at_once", "function_name": "nope"}),
    ];
    for call in calls {
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (status, body) = app.post("/execute", &call).await;
            // Timings differ from call to call.
            let timings = ["wall_time_us", "call_us", "instantiate_us"];
            answers.push((status, without_stats(body, &timings)));
        }
        assert_eq!(answers[0], answers[1], "{call}");
        assert_eq!(answers[1], answers[2], "{call}");
    }
}
