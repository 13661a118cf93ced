//! The registry outlives the process.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{COUNTER, DOUBLE_HEX, spawn_app_on};

#[tokio::test]
async fn registered_modules_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    let (status, created) = app
        .post("/register", &json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.register_wat(
        "user",
        r#"(module (import "utils" "double" (func $d (param i32) (result i32))) (func (export "quad") (param i32) (result i32) (call $d (call $d (local.get 0)))))"#,
        &["utils"],
    )
    .await;
    let (status, body) = app.register_wat("tally", COUNTER, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // They are compiled in the background, which keeps their artifacts;
    // wait for that before stopping.
    for (name, function, params) in [
        ("utils", "double", json!([1])),
        ("user", "quad", json!([1])),
        ("tally", "bump", json!([])),
    ] {
        let mut compiled = false;
        for _ in 0..400 {
            let (_, body) = app.execute(name, function, params.clone()).await;
            if body["stats"]["tier"] == "compiled" {
                compiled = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(compiled, "{name} was never compiled");
    }
    app.stop().await;

    let app = spawn_app_on(dir.path()).await;
    let (_, list) = app.get("/modules").await;
    assert_eq!(list["modules"].as_array().unwrap().len(), 3);
    let (_, utils) = app.get("/modules/utils").await;
    assert_eq!(utils["sha256"], created["sha256"]);
    let (status, body) = app.execute("user", "quad", json!([3])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([12]));
    // Compiled artifacts were kept in the store: nothing is compiled again.
    assert_eq!(body["stats"]["compile"], "loaded", "{body}");
    let (_, body) = app.execute("utils", "double", json!([3])).await;
    assert_eq!(body["stats"]["compile"], "cached", "loaded once, then cached: {body}");

    // The artifacts kept what the binaries' headers said: the stateless
    // modules' instances serve later calls as before the restart (they
    // report no instantiation), and the module with a global still gets a
    // fresh instance for every call.
    for call in 0..3 {
        for (name, function, answer) in [("utils", "double", 6), ("user", "quad", 12)] {
            let (status, body) = app.execute(name, function, json!([3])).await;
            assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([answer])), "{body}");
            assert_eq!(body["stats"]["instantiate_us"], 0, "{name}, call {call}: {body}");
        }
        let (status, body) = app.execute("tally", "bump", json!([])).await;
        assert_eq!(
            (status, &body["results"]),
            (StatusCode::OK, &json!([1])),
            "call {call}: {body}"
        );
    }
}
