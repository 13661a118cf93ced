//! `/metrics`, `/readyz` and request ids, seen from a client.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, spawn_app};

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
    let app = spawn_app().await;
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
