//! The real binary as a process: killed without warning it loses nothing it
//! acknowledged; asked to stop, it finishes what it was doing and exits 0.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::digests_by_name;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Process {
    child: Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server binary on a free loopback port and waits for /healthz.
async fn start(dir: &Path) -> Process {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_wasm-exec-api"))
        .args(["--port", &port.to_string(), "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let process = Process {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{}/healthz", process.base)).send().await.is_ok() {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server did not become ready");
}

fn module(i: usize) -> Vec<u8> {
    wat::parse_str(format!(r#"(module (func (export "n") (result i32) i32.const {i}))"#)).unwrap()
}

#[tokio::test]
async fn a_sigkill_during_registrations_loses_nothing_acknowledged() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    // Register continuously from another task; record what was acknowledged.
    let writer = tokio::spawn({
        let client = client.clone();
        async move {
            let mut acknowledged = BTreeMap::new();
            for i in 0.. {
                let wasm = module(i);
                let body = json!({"module_name": format!("m{i}"), "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&wasm)});
                match client.post(format!("{base}/register")).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acknowledged.insert(format!("m{i}"), hex::encode(Sha256::digest(&wasm)));
                    }
                    _ => return acknowledged,
                }
            }
            acknowledged
        }
    });
    // Kill once a fair number are in, while registrations keep coming.
    loop {
        let list: Value = client
            .get(format!("{}/modules", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list["modules"].as_array().unwrap().len() >= 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() >= 25,
        "only {} registrations were acknowledged",
        acknowledged.len()
    );
    drop(server);

    let server = start(dir.path()).await;
    let list: Value = client
        .get(format!("{}/modules", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = digests_by_name(&list);
    for (name, sha) in &acknowledged {
        assert_eq!(
            stored.get(name),
            Some(sha),
            "acknowledged module {name} is missing or changed"
        );
    }
    // Nothing half-written: every stored module's binary matches its digest and runs.
    for (name, sha) in &stored {
        let wasm = client
            .get(format!("{}/modules/{name}/wasm", server.base))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&hex::encode(Sha256::digest(&wasm)), sha, "{name}");
        let body = json!({"module_name": name, "function_name": "n"});
        let r = client
            .post(format!("{}/execute", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
    }
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let client = reqwest::Client::new();
    // The call runs on a live instance, so we can see when it is in flight:
    // a busy instance does not report its memory size.
    let wat = r#"(module (memory (export "memory") 1) (func (export "spin") (loop (br 0))))"#;
    let created: Value = client
        .post(format!("{}/instances", server.base))
        .json(&json!({"wat": wat}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let instance = format!("{}/instances/{}", server.base, created["id"].as_str().unwrap());
    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), format!("{instance}/call"));
        async move {
            let body = json!({"function_name": "spin", "limits": {"timeout_ms": 1000}});
            let response = client.post(url).json(&body).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    });
    let mut busy = false;
    for _ in 0..400 {
        let info: Value = client.get(&instance).send().await.unwrap().json().await.unwrap();
        if info["memory_bytes"].is_null() {
            busy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(busy, "the call never started");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the in-flight call ran to its own end: {body}"
    );
    assert_eq!(body["error"]["limit"], "time");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
