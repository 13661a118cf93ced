//! Random and mutated modules and request bodies on the register and run
//! paths: whatever the bytes, the answer is a 2xx or a 4xx/422, never a 5xx
//! or a dead server.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, Rng, spawn_app};

/// Random bytes, or the `double` module with a few bytes flipped, cut or
/// inserted, which reaches deeper into the parser than noise does.
fn candidate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        1 => {
            let mut m = valid.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            m
        }
        2 => valid[..rng.below(valid.len())].to_vec(),
        _ => {
            let mut m = valid.to_vec();
            let i = rng.below(m.len());
            m.insert(i, rng.next() as u8);
            m
        }
    }
}

#[tokio::test]
async fn random_and_mutated_modules_never_cause_a_server_error() {
    let app = spawn_app().await;
    let valid = hex::decode(DOUBLE_HEX).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..400 {
        let wasm = candidate(&mut rng, &valid);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
        let (status, body) = if i % 2 == 0 {
            app.post(
                "/register",
                &json!({"module_name": format!("fuzz{i}"), "wasm_base64": b64}),
            )
            .await
        } else {
            app.post(
                "/",
                &json!({"wasm_base64": b64, "function_name": "double", "params": [3]}),
            )
            .await
        };
        assert!(
            status.is_success() || status.is_client_error() || status == 422,
            "input {i} ({}) got {status} {body}",
            hex::encode(&wasm)
        );
    }
    let (status, body) = app
        .post(
            "/",
            &json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [3]}),
        )
        .await;
    assert_eq!((status.as_u16(), body["results"].clone()), (200, json!([6])));
}

/// A valid request body with a few bytes changed, cut or inserted, or noise.
fn body_candidate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    match rng.below(3) {
        0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        1 => {
            let mut b = valid.to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len());
                b[i] = b" {}[]\",:0123456789-.eE\\tfnu"[rng.below(27)];
            }
            b
        }
        _ => valid[..rng.below(valid.len())].to_vec(),
    }
}

#[tokio::test]
async fn random_and_mutated_request_bodies_never_cause_a_server_error() {
    let app = spawn_app().await;
    let valid = [
        format!(r#"{{"wasm_hex":"{DOUBLE_HEX}","function_name":"double","params":[2],"limits":{{"fuel":1000}}}}"#),
        format!(r#"{{"module_name":"m","wasm_hex":"{DOUBLE_HEX}","host_modules":[]}}"#),
        r#"{"wat":"(module (memory (export \"memory\") 1) (func (export \"f\")))","function_name":"f","memory_reads":[{"offset":0,"length":4}],"memory_writes":[{"offset":0,"utf8":"hi"}]}"#.to_string(),
    ];
    let paths = ["/", "/register", "/"];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..600 {
        let which = rng.below(valid.len());
        let body = body_candidate(&mut rng, valid[which].as_bytes());
        let response = app
            .client
            .post(app.url(paths[which]))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success() || status.is_client_error() || status == 422,
            "body {i} ({:?}) got {status}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(app.get("/healthz").await.0.as_u16(), 200);
}
