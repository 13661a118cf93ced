//! Asynchronous jobs: submitted and polled, streamed as Server-Sent Events,
//! cancelled while running, kept across a restart, and hidden from other
//! tokens.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DOUBLE_HEX, TestApp, code, spawn_app, spawn_app_with, test_settings};

const SPIN: &str = r#"(module (func (export "spin") (loop (br 0))))"#;

fn double(n: i64) -> Value {
    json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [n]})
}

/// Submits `job`, answering its id.
async fn submit(app: &TestApp, job: Value) -> String {
    let response = app.client.post(app.url("/jobs")).json(&job).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/jobs/{id}"));
    id
}

/// Polls job `id` (bounded) until its status is one of `statuses`.
async fn until(app: &TestApp, id: &str, statuses: &[&str]) -> Value {
    for _ in 0..1000 {
        let (status, body) = app.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if statuses.iter().any(|s| body["status"] == *s) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never reached {statuses:?}");
}

#[tokio::test]
async fn a_job_runs_and_answers_what_the_call_would_have() {
    let app = spawn_app().await;
    let id = submit(&app, json!({"call": double(21)})).await;
    let job = until(&app, &id, &["done"]).await;
    assert_eq!(job["result"]["results"], json!([42]), "{job}");
    assert_eq!(job["result"]["result_types"], json!(["i32"]));
    assert!(job["started"].is_string() && job["finished"].is_string(), "{job}");
    // A failing call is a failed job with the call's own error body.
    let id = submit(
        &app,
        json!({"call": {"wat": "(module (func (export \"boom\") unreachable))", "function_name": "boom"}}),
    )
    .await;
    let job = until(&app, &id, &["failed"]).await;
    assert_eq!(job["result"]["error"]["code"], "trap", "{job}");
    // A bad job is refused at once.
    let (status, body) = app
        .post("/jobs", &json!({"call": double(1), "batch": {"calls": []}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    let (status, body) = app.post("/jobs", &json!({"batch": {"calls": []}})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{body}"
    );
    let (status, body) = app.get("/jobs/nobody.0").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "job_not_found"),
        "{body}"
    );
}

#[tokio::test]
async fn a_batch_job_streams_its_progress_as_server_sent_events() {
    let app = spawn_app().await;
    let calls: Vec<Value> = (0..50).map(double).collect();
    let id = submit(&app, json!({"batch": {"calls": calls}})).await;
    let response = app
        .client
        .get(app.url(&format!("/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The stream ends after the last event.
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.last(), Some(&"done"), "{text}");
    let last: Value = serde_json::from_str(
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["progress"], json!({"done": 50, "of": 50}), "{last}");
    let results = last["result"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 50);
    assert_eq!(results[49]["results"], json!([98]));
    // A finished job's stream is its one last event.
    let text = app
        .client
        .get(app.url(&format!("/jobs/{id}/events")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.matches("event: ").count(), 1, "{text}");
}

#[tokio::test]
async fn a_running_job_is_cancelled_and_its_call_stops() {
    let mut settings = test_settings();
    settings.max_job_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    // Longer than any request may run: jobs have their own ceiling.
    let spin = json!({"wat": SPIN, "function_name": "spin", "limits": {"timeout_ms": 120000}});
    let id = submit(&app, json!({"call": spin})).await;
    until(&app, &id, &["running"]).await;
    // The guest holds its execution slot (else "freed" below proves nothing).
    let mut holding = false;
    for _ in 0..500 {
        if app.metrics().await.contains("wasm_exec_executions_in_flight 1\n") {
            holding = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(holding, "the job's call never took its execution slot");
    let (status, body) = app.delete(&format!("/jobs/{id}")).await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("cancelled")),
        "{body}"
    );
    // The guest was interrupted: its execution slot is free again.
    let mut freed = false;
    for _ in 0..500 {
        if app.metrics().await.contains("wasm_exec_executions_in_flight 0\n") {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the cancelled call still holds its slot");
    let (_, body) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(body["status"], "cancelled", "{body}");
    // Cancelling again changes nothing.
    let (status, body) = app.delete(&format!("/jobs/{id}")).await;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("cancelled")));
}

#[tokio::test]
async fn jobs_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = || {
        let mut settings = test_settings();
        settings.memory = false;
        settings.data_dir = Some(dir.path().to_path_buf());
        settings.job_concurrency = 1;
        settings.max_job_fuel = u64::MAX / 2;
        settings
    };
    let app = spawn_app_with(on_disk()).await;
    let finished = submit(&app, json!({"call": double(5)})).await;
    until(&app, &finished, &["done"]).await;
    // One job runs (the only job slot), one waits behind it.
    let spin = json!({"wat": SPIN, "function_name": "spin", "limits": {"timeout_ms": 120000}});
    let running = submit(&app, json!({"call": spin})).await;
    until(&app, &running, &["running"]).await;
    let queued = submit(&app, json!({"call": double(7)})).await;
    let (_, body) = app.get(&format!("/jobs/{queued}")).await;
    assert_eq!(body["status"], "queued", "{body}");
    app.stop().await;

    let app = spawn_app_with(on_disk()).await;
    let (_, body) = app.get(&format!("/jobs/{finished}")).await;
    assert_eq!(
        (body["status"].clone(), body["result"]["results"].clone()),
        (json!("done"), json!([10])),
        "{body}"
    );
    let (_, body) = app.get(&format!("/jobs/{running}")).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("stopped while this job was running"),
        "{body}"
    );
    let body = until(&app, &queued, &["done"]).await;
    assert_eq!(body["result"]["results"], json!([14]), "{body}");
}

#[tokio::test]
async fn a_job_is_visible_only_to_the_token_that_made_it() {
    const MINE: &str = "mine-secret-0123456789";
    const THEIRS: &str = "theirs-secret-0123456789";
    let mut settings = test_settings();
    settings.tokens = vec![format!("execute:{MINE}"), format!("execute:{THEIRS}")];
    let app = spawn_app_with(settings).await;
    let response = app
        .client
        .post(app.url("/jobs"))
        .bearer_auth(MINE)
        .json(&json!({"call": double(1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (token, expected) in [(MINE, StatusCode::OK), (THEIRS, StatusCode::NOT_FOUND)] {
        for path in [format!("/jobs/{id}"), format!("/jobs/{id}/events")] {
            let response = app.client.get(app.url(&path)).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), expected, "{path} as {token}");
        }
        let response = app
            .client
            .delete(app.url(&format!("/jobs/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "DELETE as {token}");
    }
}

#[tokio::test]
async fn a_client_keeps_a_bounded_number_of_finished_jobs() {
    let mut settings = test_settings();
    settings.max_finished_jobs_per_client = 2;
    let app = spawn_app_with(settings).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = submit(&app, json!({"call": double(n)})).await;
        until(&app, &id, &["done"]).await;
        ids.push(id);
    }
    // The oldest goes early (just after the third finishes), to bound what
    // one client keeps stored.
    let mut gone = false;
    for _ in 0..500 {
        let (status, body) = app.get(&format!("/jobs/{}", ids[0])).await;
        if status == StatusCode::NOT_FOUND {
            assert_eq!(code(&body), "job_not_found");
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the oldest finished job is still kept");
    for id in &ids[1..] {
        let (status, _) = app.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK);
    }
}
