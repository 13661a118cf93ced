//! The registry outlives the process.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DOUBLE_HEX, spawn_app_on};

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
    // Both are compiled in the background, which keeps their artifacts;
    // wait for that before stopping.
    for (name, function) in [("utils", "double"), ("user", "quad")] {
        let mut compiled = false;
        for _ in 0..400 {
            let (_, body) = app.execute(name, function, json!([1])).await;
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
    assert_eq!(list["modules"].as_array().unwrap().len(), 2);
    let (_, utils) = app.get("/modules/utils").await;
    assert_eq!(utils["sha256"], created["sha256"]);
    let (status, body) = app.execute("user", "quad", json!([3])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([12]));
    // Compiled artifacts were kept in the store: nothing is compiled again.
    assert_eq!(body["stats"]["compile"], "loaded", "{body}");
    let (_, body) = app.execute("utils", "double", json!([3])).await;
    assert_eq!(body["stats"]["compile"], "cached", "loaded once, then cached: {body}");
}
