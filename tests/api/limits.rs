//! Every limit in pairs, `_obeyed` and `_violated`, and the promise that a
//! hostile request never starves a healthy one.

use reqwest::StatusCode;
use serde_json::{Value, json};

use wasm_exec_api::engine::TierMode;

use crate::helpers::{DOUBLE_HEX, TestApp, code, spawn_app, spawn_app_with, test_settings};

const COUNT_TO: &str = r#"(module (func (export "count") (param i32) (result i32) (local i32)
    (loop (local.set 1 (i32.add (local.get 1) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 1) (local.get 0))))
    (local.get 1)))"#;
const SPIN: &str = r#"(module (func (export "spin") (loop (br 0))))"#;
const GROW_MEMORY: &str =
    r#"(module (memory 1) (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#;
const GROW_TABLE: &str = r#"(module (table 1 funcref) (func (export "grow") (param i32) (result i32) (table.grow (ref.null func) (local.get 0))))"#;

async fn run_limited(app: &TestApp, wat: &str, function: &str, params: Value, limits: Value) -> (StatusCode, Value) {
    app.post(
        "/",
        &json!({"wat": wat, "function_name": function, "params": params, "limits": limits}),
    )
    .await
}

fn assert_limit(status: StatusCode, body: &Value, limit: &str) {
    assert_eq!(
        (status, code(body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], limit, "{body}");
}

#[tokio::test]
async fn fuel_limit_obeyed() {
    let app = spawn_app().await;
    let (status, body) = run_limited(&app, COUNT_TO, "count", json!([100]), json!({"fuel": 10_000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["stats"]["fuel_consumed"].as_u64().unwrap() <= 10_000);
}

#[tokio::test]
async fn fuel_limit_violated() {
    for tier in [TierMode::Compiled, TierMode::Interpreter] {
        let mut settings = test_settings();
        settings.tier = tier;
        let app = spawn_app_with(settings).await;
        let (status, body) = run_limited(&app, COUNT_TO, "count", json!([1_000_000]), json!({"fuel": 10_000})).await;
        assert_limit(status, &body, "fuel");
        let used = body["error"]["stats"]["fuel_consumed"].as_u64().unwrap();
        match tier {
            // Compiled code stops when its counter runs out: all of it used.
            TierMode::Compiled => assert_eq!(used, 10_000, "{body}"),
            // The interpreter stops before an instruction it cannot pay
            // for, so up to one instruction's fuel is left over.
            _ => assert!((9_990..=10_000).contains(&used), "{body}"),
        }
        assert_eq!(body["error"]["stats"]["tier"], tier_name(tier), "{body}");
    }
}

fn tier_name(tier: TierMode) -> &'static str {
    match tier {
        TierMode::Interpreter => "interpreter",
        _ => "compiled",
    }
}

#[tokio::test]
async fn time_limit_obeyed() {
    // The clock starts when a request starts, not when the instance was
    // made: an instance idle for longer than its per-call timeout still
    // gets its whole timeout for the next call.
    let app = spawn_app().await;
    let (status, created) = app
        .post("/instances", &json!({"wat": COUNT_TO, "limits": {"timeout_ms": 400}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, body) = app
        .post(
            &format!("/instances/{id}/call"),
            &json!({"function_name": "count", "params": [1000]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([1000]));
}

#[tokio::test]
async fn the_default_fuel_outlasts_the_default_timeout() {
    // `--help` says time is the usual bound: a guest that never stops is
    // ended by the 10 s default timeout, not by running out of fuel first.
    let app = spawn_app().await;
    let (status, body) = app.run_wat(SPIN, "spin", json!([])).await;
    assert_limit(status, &body, "time");
}

#[tokio::test]
async fn time_limit_violated() {
    let app = spawn_app().await;
    let sent = std::time::Instant::now();
    let (status, body) = run_limited(&app, SPIN, "spin", json!([]), json!({"timeout_ms": 100})).await;
    assert_limit(status, &body, "time");
    assert!(body["error"]["message"].as_str().unwrap().contains("100 ms"));
    // The limit covers instantiation and the call together (API.md,
    // `--timeout-ms`), so neither part alone need reach it (the call's
    // own time fell short of it in CI); the request as a whole cannot be
    // answered before it.
    assert!(sent.elapsed() >= std::time::Duration::from_millis(100), "{body}");
    assert!(body["error"]["stats"]["call_us"].as_u64().unwrap() > 0, "{body}");
}

#[tokio::test]
async fn memory_limit_obeyed() {
    let app = spawn_app().await;
    let (status, body) = run_limited(
        &app,
        GROW_MEMORY,
        "grow",
        json!([3]),
        json!({"memory_bytes": 4 * 65536}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([1]));
    assert!(body["stats"].get("limits_hit").is_none(), "no limit was hit: {body}");
}

#[tokio::test]
async fn memory_limit_violated_by_growth() {
    // Growth past the server's limit fails the WebAssembly way: memory.grow
    // returns -1 and the guest goes on; the response says the limit was hit.
    let app = spawn_app().await;
    let (status, body) = run_limited(
        &app,
        GROW_MEMORY,
        "grow",
        json!([4]),
        json!({"memory_bytes": 4 * 65536}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([-1]), "{body}");
    assert_eq!(body["stats"]["limits_hit"], json!(["memory"]), "{body}");
}

#[tokio::test]
async fn memory_limit_violated_by_an_initial_memory() {
    // A memory that cannot even be created refuses the module with 422.
    let app = spawn_app().await;
    let wat = r#"(module (memory 8) (func (export "f") (result i32) (memory.size)))"#;
    let (status, body) = run_limited(&app, wat, "f", json!([]), json!({"memory_bytes": 4 * 65536})).await;
    assert_limit(status, &body, "memory");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("the limit is 262144 bytes"), "{message}");
}

#[tokio::test]
async fn memory_limit_violated_by_initial_size() {
    let app = spawn_app().await;
    let wat = r#"(module (memory 100) (func (export "f")))"#;
    let (status, body) = run_limited(&app, wat, "f", json!([]), json!({"memory_bytes": 65536})).await;
    assert_limit(status, &body, "memory");
}

#[tokio::test]
async fn growth_past_a_modules_own_maximum_returns_minus_one() {
    let app = spawn_app().await;
    let wat = r#"(module (memory 1 2) (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#;
    let (status, body) = app.run_wat(wat, "grow", json!([5])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([-1]));
}

#[tokio::test]
async fn table_limit_obeyed() {
    let app = spawn_app().await;
    let (status, body) = run_limited(&app, GROW_TABLE, "grow", json!([10]), json!({"table_elements": 100})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([1]));
}

#[tokio::test]
async fn table_limit_violated() {
    let app = spawn_app().await;
    let (status, body) = run_limited(&app, GROW_TABLE, "grow", json!([1000]), json!({"table_elements": 100})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([-1]), "{body}");
    assert_eq!(body["stats"]["limits_hit"], json!(["table_elements"]), "{body}");
}

#[tokio::test]
async fn table_limit_violated_by_an_initial_table() {
    let app = spawn_app().await;
    let wat = r#"(module (table 1000 funcref) (func (export "f") (result i32) (table.size)))"#;
    let (status, body) = run_limited(&app, wat, "f", json!([]), json!({"table_elements": 100})).await;
    assert_limit(status, &body, "table_elements");
}

#[tokio::test]
async fn requests_cannot_raise_limits() {
    let mut settings = test_settings();
    settings.max_fuel = 1000;
    let app = spawn_app_with(settings).await;
    let (status, body) = run_limited(&app, COUNT_TO, "count", json!([1]), json!({"fuel": 1001})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the server maximum of 1000")
    );
    let (status, body) = run_limited(&app, COUNT_TO, "count", json!([1]), json!({"fuel": 1000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_payload_too_large() {
    let mut settings = test_settings();
    settings.max_body_bytes = 1024;
    let app = spawn_app_with(settings).await;
    let (status, body) = app
        .post("/", &json!({"wasm_hex": "00".repeat(2048), "function_name": "f"}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

#[tokio::test]
async fn a_module_over_the_limit_is_payload_too_large() {
    let mut settings = test_settings();
    settings.max_module_bytes = 40;
    let app = spawn_app_with(settings).await;
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 40 bytes")
    );
    let (status, body) = app
        .post("/register", &json!({"module_name": "big", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

/// Two spinning requests against one slot: the second waits in the queue.
/// Returns each one's status, `Retry-After` and body, the refused first.
async fn two_spins_on_one_slot(settings: wasm_exec_api::config::Settings) -> Vec<(StatusCode, Option<String>, Value)> {
    let app = spawn_app_with(settings).await;
    let spins = (0..2).map(|_| {
        let (client, url) = (app.client.clone(), app.url("/"));
        async move {
            let body = json!({"wat": SPIN, "function_name": "spin", "limits": {"timeout_ms": 1000}});
            let response = client.post(url).json(&body).send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status(), retry_after, response.json::<Value>().await.unwrap())
        }
    });
    let mut outcomes = futures::future::join_all(spins).await;
    outcomes.sort_by_key(|(status, _, _)| std::cmp::Reverse(*status));
    outcomes
}

/// The second of two spins was refused with `503 overloaded` and
/// `Retry-After: 1`, by a message naming `flag`; the first ran to its limit.
fn assert_one_refused_naming(outcomes: &[(StatusCode, Option<String>, Value)], flag: &str) {
    let (refused, ran) = (&outcomes[0], &outcomes[1]);
    assert_limit(ran.0, &ran.2, "time");
    assert_eq!(
        (refused.0, code(&refused.2)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{outcomes:?}"
    );
    let message = refused.2["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(flag), "{outcomes:?}");
    assert_eq!(refused.1.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_request_queued_past_the_queue_deadline_gets_503() {
    let mut settings = test_settings();
    settings.max_concurrency = 1;
    settings.queue_timeout_ms = 200;
    let outcomes = two_spins_on_one_slot(settings).await;
    assert_one_refused_naming(&outcomes, "--queue-timeout-ms");
}

#[tokio::test]
async fn a_request_finding_the_queue_full_gets_503_at_once() {
    let mut settings = test_settings();
    settings.max_concurrency = 1;
    settings.queue_depth = 0;
    let outcomes = two_spins_on_one_slot(settings).await;
    assert_one_refused_naming(&outcomes, "--queue-depth");
}

#[tokio::test]
async fn a_request_queued_within_the_deadline_is_served_when_a_slot_frees() {
    let mut settings = test_settings();
    settings.max_concurrency = 1;
    let outcomes = two_spins_on_one_slot(settings).await;
    // Both ran to their own time limit: the second waited, then ran.
    for (status, _, body) in &outcomes {
        assert_limit(*status, body, "time");
    }
}

#[tokio::test]
async fn healthy_requests_are_served_while_hostile_ones_spin() {
    let mut settings = test_settings();
    // Enough fuel that the wall-clock limit, not fuel, stops the spinners.
    settings.max_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    // Two spinning guests: as many as the server has worker threads.
    let hostile: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/"));
            tokio::spawn(async move {
                let body = json!({"wat": SPIN, "function_name": "spin", "limits": {"timeout_ms": 4000}});
                let response = client.post(url).json(&body).send().await.unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for i in 0..20 {
        let (status, body) = app
            .post(
                "/",
                &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [i]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"], json!([2 * i]));
    }
    assert!(
        hostile.iter().all(|h| !h.is_finished()),
        "healthy requests should finish while the hostile ones still spin"
    );
    for h in hostile {
        let (status, body) = h.await.unwrap();
        assert_limit(status, &body, "time");
    }
}

#[tokio::test]
async fn an_initial_memory_over_the_server_limit_is_a_memory_limit_error() {
    let app = spawn_app().await;
    // 5000 pages is 327 MB, over the 256 MiB default (and the pool's slot size).
    let wat = r#"(module (memory 5000) (func (export "f")))"#;
    let (status, body) = app.run_wat(wat, "f", json!([])).await;
    assert_limit(status, &body, "memory");
}

#[tokio::test]
async fn an_initial_table_over_the_limit_is_a_table_limit_error() {
    let app = spawn_app().await;
    let wat = r#"(module (table 200000 funcref) (func (export "f")))"#;
    let (status, body) = app.run_wat(wat, "f", json!([])).await;
    assert_limit(status, &body, "table_elements");
}

#[tokio::test]
async fn a_client_over_the_rate_limit_gets_429_with_retry_after() {
    let mut settings = test_settings();
    settings.rate_limit = 2; // 2 per second, bursts of 4
    let app = spawn_app_with(settings).await;
    let body = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]});
    let mut limited = None;
    let mut served = 0;
    for _ in 0..10 {
        let response = app.client.post(app.url("/")).json(&body).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        served += 1;
    }
    let limited = limited.expect("ten requests at once should pass a burst of four");
    assert!(served >= 4, "the burst is served first ({served})");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    // Probes, metrics and the playground's files are never counted.
    for _ in 0..10 {
        for path in ["/healthz", "/readyz", "/metrics", "/assets/app.js"] {
            let response = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408() {
    let mut settings = test_settings();
    settings.body_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let text = app.post_unfinished_body().await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
}

#[tokio::test]
async fn a_compile_over_the_time_limit_is_refused_and_still_cached() {
    let mut settings = test_settings();
    settings.tier = TierMode::Compiled;
    settings.compile_timeout_ms = 1;
    let app = spawn_app_with(settings).await;
    let wat = format!(
        "(module {} (func (export \"f\") (result i32) i32.const 7))",
        "(func (result i32) i32.const 1)".repeat(5000)
    );
    let (status, body) = app.run_wat(&wat, "f", json!([])).await;
    assert_limit(status, &body, "compile_time");
    // The compile ran on to the end and was cached: a retry succeeds.
    let mut ok = false;
    for _ in 0..200 {
        let (status, body) = app.run_wat(&wat, "f", json!([])).await;
        if status == StatusCode::OK {
            assert_eq!(body["results"], json!([7]));
            assert_eq!(body["stats"]["compile"], "cached");
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ok, "the background compile never landed in the cache");
}
