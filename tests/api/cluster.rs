//! Several nodes on one PostgreSQL registry: what one node changes the
//! others see (at once for a new module, within a second for a deletion,
//! by versions after an outage), compiled artifacts shared under the
//! cluster key and never loaded when their seal fails, instances that live
//! on one node and are named from the others.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wasm_exec_api::config::Settings;

use crate::helpers::{TestApp, code, spawn_app_with, stats_of, test_settings};
use crate::pg::{Cable, drop_schema, fresh_schema, pg_url};

const DOUBLE: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

const KEY: &str = "cluster-key-0123456789abcdef";

/// A node on the registry at `url`, with `tweak` applied to its settings.
async fn node(url: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    settings.store = Some(url.to_string());
    // Several nodes live at once here, beside other tests' servers: each
    // pooling allocator reserves terabytes of address space, and together
    // they can pass the process's 128 TiB. These tests are about the
    // shared registry, not the allocator.
    settings.pooling = false;
    tweak(&mut settings);
    spawn_app_with(settings).await
}

/// Runs `sql` in `schema` of the test database.
async fn sql(schema: &str, sql: &str) {
    let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    sqlx::raw_sql(&format!("SET search_path TO {schema}; {sql}"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Rows of `table` in `schema`.
async fn count(schema: &str, table: &str) -> i64 {
    let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.{table}"))
        .fetch_one(&admin)
        .await
        .unwrap()
}

/// Polls `check` every 20 ms until it holds or `limit` has passed; how long
/// it took, or `None`.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn compile_of(body: &Value) -> &str {
    stats_of(body)["compile"].as_str().unwrap_or("")
}

/// A metric's value as the node reports it.
async fn metric(app: &TestApp, name: &str) -> String {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_string()
}

#[tokio::test]
async fn nodes_share_a_postgres_registry() {
    let (schema, url) = fresh_schema("node").await;
    let node = |url: String| async move {
        let mut settings = test_settings();
        settings.store = Some(url);
        spawn_app_with(settings).await
    };
    let (a, b) = tokio::join!(node(url.clone()), node(url.clone()));
    let double = r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;
    let (status, body) = a.register_wat("utils", double, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b.register_wat("utils", double, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("module_exists")),
        "the database decides, not B's index: {body}"
    );
    let c = node(url).await;
    let (_, list) = c.get("/modules").await;
    assert_eq!(list["modules"][0]["name"], "utils", "{list}");
    let (status, body) = c.execute("utils", "double", json!([21])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([42]));
    let (status, _) = c.delete("/modules/utils").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        count(&schema, "artifacts").await,
        0,
        "without an artifact key, no machine code is shared"
    );
    drop((a, b, c));
    drop_schema(&schema).await;
}

/// The database goes away and comes back: modules the node has loaded keep
/// running, registry changes answer `503 store_unavailable`, `/readyz`
/// turns `503`, and the node recovers by itself, without a restart.
#[tokio::test]
async fn a_node_rides_out_a_database_outage() {
    let (schema, url) = fresh_schema("outage").await;
    let cable = Cable::to_postgres().await;
    let mut settings = test_settings();
    settings.store = Some(cable.carry(&url));
    let node = spawn_app_with(settings).await;
    let double = r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;
    let (status, body) = node.register_wat("before", double, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    cable.cut();
    let (status, body) = node.execute("before", "double", json!([21])).await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([42])), "{body}");
    let (status, body) = node.register_wat("during", double, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
        "{body}"
    );
    let (status, _) = node.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    cable.mend();
    let mut recovered = false;
    for _ in 0..50 {
        let (status, _) = node.register_wat("after", double, &[]).await;
        if status == StatusCode::CREATED {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the node never registered again after the database came back"
    );
    let (status, _) = node.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = node.get("/modules").await;
    let names: Vec<&str> = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["after", "before"]);
    drop(node);
    drop_schema(&schema).await;
}

/// A node re-reads records when it syncs, its own registrations among
/// them (a registration does not move the node's version). A record read
/// again unchanged keeps what the node knew of the module: a call of a
/// module on the interpreter (never compiled here) still needs nothing of
/// the store, so it runs while the database is cut off.
#[tokio::test]
async fn a_synced_module_runs_without_the_database() {
    let (schema, url) = fresh_schema("resynced").await;
    let cable = Cable::to_postgres().await;
    let cabled = cable.carry(&url);
    let interpreter = |s: &mut Settings| s.tier = wasm_exec_api::engine::TierMode::Interpreter;
    let (a, b) = tokio::join!(node(&cabled, interpreter), node(&url, |_| {}));
    let (status, body) = a.register_wat("mine", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Once A lists B's module, A has synced past its own registration,
    // reading `mine` again.
    let (status, body) = b.register_wat("theirs", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let synced = within(Duration::from_secs(15), || async {
        let (_, list) = a.get("/modules").await;
        list["modules"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    assert!(synced.is_some(), "A never saw B's module");

    cable.cut();
    let (status, body) = a.execute("mine", "double", json!([21])).await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([42])), "{body}");
    assert_eq!(stats_of(&body)["tier"], "interpreter", "{body}");
    cable.mend();
    drop((a, b));
    drop_schema(&schema).await;
}

/// B started before A registered anything: a module registered on A runs on
/// B at once (its host module comes with it), and A's deletions reach B
/// within a second.
#[tokio::test]
async fn a_change_on_one_node_is_seen_on_another() {
    let (schema, url) = fresh_schema("coherent").await;
    let (a, b) = tokio::join!(node(&url, |_| {}), node(&url, |_| {}));
    let (status, body) = a.register_wat("utils", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let twice = r#"(module (import "utils" "double" (func $d (param i32) (result i32)))
        (func (export "quad") (param i32) (result i32) (call $d (call $d (local.get 0)))))"#;
    let (status, body) = a.register_wat("twice", twice, &["utils"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = b.execute("twice", "quad", json!([5])).await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([20])), "{body}");
    let (status, body) = b.execute("utils", "double", json!([4])).await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([8])), "{body}");

    assert_eq!(a.delete("/modules/twice").await.0, StatusCode::NO_CONTENT);
    assert_eq!(a.delete("/modules/utils").await.0, StatusCode::NO_CONTENT);
    let gone = within(Duration::from_secs(1), || async {
        let (status, body) = b.execute("utils", "double", json!([4])).await;
        status == StatusCode::NOT_FOUND && code(&body) == "module_not_found"
    })
    .await;
    assert!(gone.is_some(), "B still ran a module deleted on A a second later");
    let (status, body) = b.execute("twice", "quad", json!([5])).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    let (_, list) = b.get("/modules").await;
    assert_eq!(list["modules"], json!([]), "{list}");
    drop((a, b));
    drop_schema(&schema).await;
}

/// Notifications are hints: B, cut off while A deleted a module it had run
/// and the change log lost those entries, reads the registry again by
/// versions when it gets back, without a restart.
#[tokio::test]
async fn a_node_that_missed_changes_catches_up_by_versions() {
    let (schema, url) = fresh_schema("resync").await;
    let cable = Cable::to_postgres().await;
    let cabled = cable.carry(&url);
    let (a, b) = tokio::join!(node(&url, |_| {}), node(&cabled, |_| {}));
    let (status, body) = a.register_wat("old", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b.execute("old", "double", json!([1])).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    cable.cut();
    assert_eq!(a.delete("/modules/old").await.0, StatusCode::NO_CONTENT);
    let (status, body) = a.register_wat("new", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    sql(&schema, "DELETE FROM registry_changes").await;
    cable.mend();

    let caught_up = within(Duration::from_secs(15), || async {
        let (_, list) = b.get("/modules").await;
        list["modules"]
            .as_array()
            .is_some_and(|m| m.len() == 1 && m[0]["name"] == "new")
    })
    .await;
    assert!(caught_up.is_some(), "B never caught up with the registry");
    let (status, body) = b.execute("old", "double", json!([1])).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "module_not_found"));
    drop((a, b));
    drop_schema(&schema).await;
}

/// Nodes holding the cluster key load each other's compiled artifacts; a
/// row whose seal does not verify (changed in the database, or sealed
/// under another key) is never loaded: the node compiles, counts it and
/// mends the row.
#[tokio::test]
async fn artifacts_are_shared_under_the_key_and_a_tampered_one_never_runs() {
    let (schema, url) = fresh_schema("artifacts").await;
    let keyed = |key: &'static str| {
        move |s: &mut Settings| {
            s.tier = wasm_exec_api::engine::TierMode::Compiled;
            s.artifact_key = Some(key.to_string());
        }
    };
    let a = node(&url, keyed(KEY)).await;
    let (status, body) = a.register_wat("m", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(count(&schema, "artifacts").await, 1);

    let b = node(&url, keyed(KEY)).await;
    let (status, body) = b.execute("m", "double", json!([21])).await;
    assert_eq!((status, compile_of(&body)), (StatusCode::OK, "loaded"), "{body}");
    assert_eq!(body["results"], json!([42]));

    // One bit of the machine code flipped in the database.
    sql(
        &schema,
        "UPDATE artifacts SET artifact = set_byte(artifact, length(artifact) - 1, get_byte(artifact, length(artifact) - 1) # 1)",
    )
    .await;
    let c = node(&url, keyed(KEY)).await;
    let (status, body) = c.execute("m", "double", json!([21])).await;
    assert_eq!((status, compile_of(&body)), (StatusCode::OK, "compiled"), "{body}");
    assert_eq!(
        metric(&c, "wasm_exec_compile_cache_artifacts_rejected_total").await,
        "1"
    );
    let d = node(&url, keyed(KEY)).await;
    let (status, body) = d.execute("m", "double", json!([21])).await;
    assert_eq!(
        (status, compile_of(&body)),
        (StatusCode::OK, "loaded"),
        "the compile mended the row: {body}"
    );

    // A node under another key neither trusts the row nor is trusted.
    let stranger = node(&url, keyed("another-key-0123456789abcdef")).await;
    let (status, body) = stranger.execute("m", "double", json!([21])).await;
    assert_eq!((status, compile_of(&body)), (StatusCode::OK, "compiled"), "{body}");
    assert_eq!(
        metric(&stranger, "wasm_exec_compile_cache_artifacts_rejected_total").await,
        "1"
    );
    drop((a, b, c, d, stranger));
    drop_schema(&schema).await;
}

/// Artifacts are kept per engine: with the only row made by another
/// engine version (the row's engine hash changed to stand for one), a node
/// compiles and keeps its own beside it, and the next node loads that.
#[tokio::test]
async fn a_node_of_another_engine_version_keeps_its_own_artifact() {
    let (schema, url) = fresh_schema("engines").await;
    let keyed = |s: &mut Settings| {
        s.tier = wasm_exec_api::engine::TierMode::Compiled;
        s.artifact_key = Some(KEY.to_string());
    };
    let a = node(&url, keyed).await;
    let (status, body) = a.register_wat("m", DOUBLE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    sql(&schema, "UPDATE artifacts SET engine = 'an-engine-of-another-version'").await;
    let b = node(&url, keyed).await;
    let (status, body) = b.execute("m", "double", json!([21])).await;
    assert_eq!((status, compile_of(&body)), (StatusCode::OK, "compiled"), "{body}");
    assert_eq!(count(&schema, "artifacts").await, 2, "one artifact per engine");
    assert_eq!(
        metric(&b, "wasm_exec_compile_cache_artifacts_rejected_total").await,
        "0"
    );
    let c = node(&url, keyed).await;
    let (status, body) = c.execute("m", "double", json!([21])).await;
    assert_eq!((status, compile_of(&body)), (StatusCode::OK, "loaded"), "{body}");
    drop((a, b, c));
    drop_schema(&schema).await;
}

/// An instance lives on the node that made it; another node answers a
/// call for it with `421` naming that node and its advertised address.
#[tokio::test]
async fn an_instance_call_on_another_node_names_the_owner() {
    let (schema, url) = fresh_schema("owners").await;
    let alpha = node(&url, |s| {
        s.node_id = Some("alpha".into());
        s.advertise_url = Some("http://alpha.internal:8000".into());
    })
    .await;
    let beta = node(&url, |s| s.node_id = Some("beta".into())).await;
    let (status, created) = alpha.post("/instances", &json!({"wat": DOUBLE})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("alpha."), "{id}");

    let call = json!({"function_name": "double", "params": [21]});
    let (status, body) = beta.post(&format!("/instances/{id}/call"), &call).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
    assert_eq!(code(&body), "instance_on_other_node");
    assert_eq!(body["error"]["node"], "alpha");
    assert_eq!(body["error"]["owner_url"], "http://alpha.internal:8000");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("http://alpha.internal:8000"), "{message}");

    let (status, body) = alpha.post(&format!("/instances/{id}/call"), &call).await;
    assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([42])), "{body}");
    let (status, body) = beta.get("/instances/beta.0123").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "instance_not_found"));

    // An environment likewise.
    let (status, created) = alpha.post("/environments", &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let env = created["id"].as_str().unwrap();
    assert!(env.starts_with("alpha."), "{env}");
    let (status, body) = beta.post(&format!("/environments/{env}/call"), &call).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::MISDIRECTED_REQUEST, "instance_on_other_node"),
        "{body}"
    );
    assert_eq!(body["error"]["owner_url"], "http://alpha.internal:8000");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("environment `alpha.") && message.contains("/environments/alpha.*"),
        "{message}"
    );
    drop((alpha, beta));
    drop_schema(&schema).await;
}

/// Each node announces its address at start (and every minute after); a
/// node not heard from for a day is forgotten, so names of nodes started
/// without `--node-id` do not pile up.
#[tokio::test]
async fn nodes_not_heard_from_for_a_day_are_forgotten() {
    let (schema, url) = fresh_schema("nodes").await;
    let first = node(&url, |s| s.node_id = Some("first".into())).await;
    sql(
        &schema,
        "INSERT INTO nodes (id, url, seen) VALUES ('gone', 'http://gone.internal', now() - interval '2 days')",
    )
    .await;
    let second = node(&url, |s| s.node_id = Some("second".into())).await;
    let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar(&format!("SELECT id FROM {schema}.nodes ORDER BY id"))
        .fetch_all(&admin)
        .await
        .unwrap();
    assert_eq!(ids, ["first", "second"]);
    drop((first, second));
    drop_schema(&schema).await;
}
