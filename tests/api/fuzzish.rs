//! Random and mutated inputs on the register and run paths: whatever the
//! bytes, the answer is a 2xx or a 4xx/422, never a 5xx or a dead server.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, spawn_app};

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

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
