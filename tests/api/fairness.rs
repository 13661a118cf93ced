//! Fair sharing of the execution slots: one client's flood of endless loops
//! takes at most its share, the rest of its flood waits in its own short
//! queue or is told `429 concurrency_limit`, and another client's calls are
//! all served meanwhile. Clients are told apart by token, else by address
//! (here 127.0.0.1 and 127.0.0.2, both loopback).

use std::net::{IpAddr, Ipv4Addr};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DOUBLE_HEX, TestApp, code, spawn_app_with, test_settings};

const SPIN: &str = r#"(module (func (export "spin") (loop (br 0))))"#;

/// A client of `app` whose requests come from `ip`.
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

/// Sends `n` endless loops at once, each stopped by its time limit of
/// `ms`, answering each one's status, `Retry-After` and body when all are
/// done. Where a test checks that something happened while loops ran, their
/// limit is several seconds: the suite runs many tests at once on a couple
/// of cores, and the check must not depend on how quickly it is served.
fn flood(
    app: &TestApp,
    client: reqwest::Client,
    token: Option<&'static str>,
    n: usize,
    ms: u64,
) -> tokio::task::JoinHandle<Vec<(StatusCode, Option<String>, Value)>> {
    let url = app.url("/");
    tokio::spawn(async move {
        let spins = (0..n).map(|_| {
            let body = json!({"wat": SPIN, "function_name": "spin", "limits": {"timeout_ms": ms}});
            let mut request = client.post(&url).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.unwrap();
                let retry = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (response.status(), retry, response.json::<Value>().await.unwrap())
            }
        });
        futures::future::join_all(spins).await
    })
}

/// Waits (bounded) until `slots` executions are in flight.
async fn until_in_flight(app: &TestApp, slots: usize) {
    for _ in 0..500 {
        if app
            .metrics()
            .await
            .contains(&format!("wasm_exec_executions_in_flight {slots}\n"))
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{slots} executions never ran at once");
}

/// The flood's answers: the loops that ran hit their time limit; the ones
/// over the client's share and queue were refused with `429
/// concurrency_limit` and `Retry-After`; none was `503`.
fn check_flood(outcomes: &[(StatusCode, Option<String>, Value)], ran: usize, refused: usize) {
    let stopped = outcomes
        .iter()
        .filter(|(s, _, b)| *s == StatusCode::UNPROCESSABLE_ENTITY && b["error"]["limit"] == "time")
        .count();
    let limited: Vec<_> = outcomes
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((stopped, limited.len()), (ran, refused), "{outcomes:?}");
    for (_, retry, body) in limited {
        assert_eq!(
            (code(body), retry.as_deref()),
            ("concurrency_limit", Some("1")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("--client-share"), "{message}");
    }
}

/// 8 slots: each client may hold 4 and queue 4 more (the defaults: half
/// the slots, and a queue as long as the share).
async fn eight_slot_server(tokens: Vec<String>) -> TestApp {
    let mut settings = test_settings();
    settings.max_concurrency = 8;
    settings.max_fuel = u64::MAX / 2;
    settings.tokens = tokens;
    spawn_app_with(settings).await
}

#[tokio::test]
async fn a_flood_of_loops_from_one_address_leaves_the_others_served() {
    let app = eight_slot_server(Vec::new()).await;
    // Two waves of 4 s loops: the flood holds its share for 8 s.
    let flooding = flood(&app, client_from(Ipv4Addr::new(127, 0, 0, 2)), None, 16, 4000);
    until_in_flight(&app, 4).await;
    // The flood holds its share; every call of the other client is served.
    let polite = client_from(Ipv4Addr::LOCALHOST);
    for i in 0..20 {
        let body = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [i]});
        let response = polite.post(app.url("/")).json(&body).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([2 * i])), "{body}");
    }
    assert!(
        !flooding.is_finished(),
        "the other client was served while the loops ran"
    );
    // 4 ran, 4 waited their turn and ran, 8 were refused.
    check_flood(&flooding.await.unwrap(), 8, 8);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("wasm_exec_admission_refusals_total{reason=\"client_queue_full\"} 8\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_tokens_are_two_clients_even_from_one_address() {
    const LOUD: &str = "loud-secret-0123456789";
    const QUIET: &str = "quiet-secret-0123456789";
    let app = eight_slot_server(vec![format!("execute:{LOUD}"), format!("execute:{QUIET}")]).await;
    let flooding = flood(&app, app.client.clone(), Some(LOUD), 12, 2000);
    until_in_flight(&app, 4).await;
    // The quiet token's own loops get slots of their own at once.
    let quiet = flood(&app, app.client.clone(), Some(QUIET), 2, 1000);
    until_in_flight(&app, 6).await;
    check_flood(&quiet.await.unwrap(), 2, 0);
    check_flood(&flooding.await.unwrap(), 8, 4);
}

#[tokio::test]
async fn freed_slots_go_round_robin_to_the_clients_waiting() {
    // One slot, one per client at a time: while A's loop runs, A queues
    // three more and B then queues one. When the slot frees, B's request
    // (queued last) goes before A's second and third: turns go by client,
    // not by arrival.
    let mut settings = test_settings();
    settings.max_concurrency = 1;
    settings.client_queue_depth = Some(3);
    settings.max_fuel = u64::MAX / 2;
    let app = spawn_app_with(settings).await;
    let (a, b) = (
        client_from(Ipv4Addr::new(127, 0, 0, 2)),
        client_from(Ipv4Addr::LOCALHOST),
    );
    let first = flood(&app, a.clone(), None, 1, 1000);
    until_in_flight(&app, 1).await;
    let more_of_a = flood(&app, a, None, 3, 3000);
    for _ in 0..500 {
        if app.metrics().await.contains("wasm_exec_executions_queued 3\n") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let body = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [21]});
    let response = b.post(app.url("/")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // B waited for A's running loop only, not for A's queued ones: it was
    // answered before A's second loop (3 s) had ended.
    assert!(!more_of_a.is_finished(), "B was served before A's queued loops");
    check_flood(&first.await.unwrap(), 1, 0);
    check_flood(&more_of_a.await.unwrap(), 3, 0);
}

#[tokio::test]
async fn one_client_cannot_take_every_live_instance_or_its_memory() {
    let mut settings = test_settings();
    settings.max_instances = 4;
    settings.max_instance_memory_bytes = 64 << 20;
    let app = spawn_app_with(settings).await;
    let (greedy, polite) = (
        client_from(Ipv4Addr::new(127, 0, 0, 2)),
        client_from(Ipv4Addr::LOCALHOST),
    );
    let create = |client: &reqwest::Client, memory: u64| {
        let request = client
            .post(app.url("/instances"))
            .json(&json!({"wat": "(module (memory 1))", "limits": {"memory_bytes": memory}}));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    // Memory-heavy: half the table's memory in one instance is all one
    // client may reserve.
    let (status, body) = create(&greedy, 32 << 20).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = create(&greedy, 1 << 20).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-instance-memory-per-client"),
        "{body}"
    );
    // Still refused, however small: the greedy client's memory share is spent.
    let (status, body) = create(&greedy, 1 << 20).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // The other client has the rest, and many small instances: half the
    // table's count is all one client may hold.
    for _ in 0..2 {
        let (status, body) = create(&polite, 8 << 20).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = create(&polite, 1 << 20).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-instances-per-client"),
        "{body}"
    );
}
