//! The client behind a trusted proxy (`--trusted-proxy`): its address is
//! read from `X-Forwarded-For`, so per-client limits count it, not the
//! proxy; from any other peer the header is ignored.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_exec_api::api::proxies::parse_network;

use crate::helpers::{DOUBLE_HEX, TestApp, code, spawn_app_with, test_settings};

/// A module with state, so that it runs as a live instance.
const STATEFUL: &str = r#"(module (global (mut i32) (i32.const 0)) (func (export "f")))"#;

async fn create_instance(app: &TestApp, forwarded_for: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/instances"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"wat": STATEFUL}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// One live instance per client: the test server's peer is 127.0.0.1.
fn one_instance_each(trusted: &[&str]) -> wasm_exec_api::config::Settings {
    let mut settings = test_settings();
    settings.max_instances_per_client = Some(1);
    settings.trusted_proxies = trusted.iter().map(|net| parse_network(net).unwrap()).collect();
    settings
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_share() {
    let app = spawn_app_with(one_instance_each(&["127.0.0.0/8"])).await;
    // The address the client wrote itself (left) is not believed; the one
    // the proxy appended is.
    let (status, body) = create_instance(&app, "203.0.113.9, 192.0.2.1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = create_instance(&app, "198.51.100.7, 192.0.2.1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "instance_capacity")
    );
    assert!(message(&body).contains("this client (192.0.2.1)"), "{body}");
    let (status, body) = create_instance(&app, "192.0.2.2").await;
    assert_eq!(status, StatusCode::CREATED, "another client behind the proxy: {body}");
}

#[tokio::test]
async fn from_an_untrusted_peer_the_header_is_ignored() {
    for trusted in [&[][..], &["10.0.0.0/8"][..]] {
        let app = spawn_app_with(one_instance_each(trusted)).await;
        let (status, body) = create_instance(&app, "192.0.2.1").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = create_instance(&app, "192.0.2.2").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::TOO_MANY_REQUESTS, "instance_capacity"),
            "trusting {trusted:?}: {body}"
        );
        assert!(message(&body).contains("this client (127.0.0.1)"), "{body}");
    }
}

/// The rate limit, checked in front of the routes, counts the forwarded
/// client too.
#[tokio::test]
async fn the_rate_limit_counts_the_forwarded_client() {
    let mut settings = one_instance_each(&["127.0.0.1"]);
    settings.rate_limit = 1; // bursts of 2
    let app = spawn_app_with(settings).await;
    let body = json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [1]});
    let send = |client: &'static str| {
        app.client
            .post(app.url("/"))
            .header("x-forwarded-for", client)
            .json(&body)
            .send()
    };
    let mut limited = false;
    for _ in 0..10 {
        if send("192.0.2.1").await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "ten requests at once should pass a burst of two");
    // A client that has sent nothing has its whole burst.
    assert_eq!(send("192.0.2.2").await.unwrap().status(), StatusCode::OK);
}
