//! The `ModuleStore` contract, one test body run against each backend: the
//! embedded redb file and PostgreSQL (a real server on 127.0.0.1:5432, each
//! test in a schema of its own; `scripts/test` installs and starts
//! PostgreSQL where none runs). The races are run for real: threads
//! inserting one name at once, a removal racing an insert that needs it.

use std::sync::Arc;

use wasm_exec_api::registry::{ModuleRecord, ModuleStore, RedbStore, StoreError, TokenQuota};

use crate::pg::{drop_schema, fresh_schema};

async fn redb_store() -> Arc<dyn ModuleStore> {
    Arc::new(RedbStore::in_memory().unwrap())
}

/// Runs `body` on the blocking pool, as the registry calls stores.
async fn on_blocking(store: Arc<dyn ModuleStore>, body: fn(Arc<dyn ModuleStore>)) {
    tokio::task::spawn_blocking(move || body(store)).await.unwrap();
}

/// One `#[tokio::test]` per backend for each contract body.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_blocking(super::redb_store().await, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (schema, url) = super::fresh_schema("contract").await;
                    let store = wasm_exec_api::registry::PgStore::connect(&url).await.expect("connect the store");
                    super::on_blocking(std::sync::Arc::new(store), super::$name).await;
                    super::drop_schema(&schema).await;
                }
            )*
        }
    };
}

contract!(
    records_round_trip_in_name_order,
    a_name_registers_once,
    host_modules_must_exist,
    a_module_with_dependents_cannot_be_removed,
    a_shared_binary_outlives_one_of_its_records,
    of_many_concurrent_inserts_of_one_name_exactly_one_wins,
    a_removal_racing_an_insert_that_needs_it_leaves_the_registry_whole,
    the_store_answers_a_check,
    a_token_quota_holds_under_concurrent_inserts,
    artifacts_are_kept_per_engine_and_go_with_their_binary,
);

fn record(name: &str, sha: &str, hosts: &[&str]) -> ModuleRecord {
    ModuleRecord {
        name: name.into(),
        sha256: sha.into(),
        size: 3,
        host_modules: hosts.iter().map(|h| h.to_string()).collect(),
        created: "2026-11-30T00:00:00Z".into(),
        owner: Some("token-a".into()),
    }
}

fn records_round_trip_in_name_order(store: Arc<dyn ModuleStore>) {
    store.insert(&record("b", "s1", &[]), b"one", None).unwrap();
    store.insert(&record("a", "s2", &[]), b"two", None).unwrap();
    store.insert(&record("c", "s1", &["b", "a"]), b"one", None).unwrap();
    let listed = store.list().unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(listed[2], record("c", "s1", &["b", "a"]), "host order kept");
    assert_eq!(store.wasm("s1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.wasm("nope").unwrap(), None);
}

fn a_name_registers_once(store: Arc<dyn ModuleStore>) {
    store.insert(&record("x", "s1", &[]), b"one", None).unwrap();
    let again = store.insert(&record("x", "s2", &[]), b"two", None);
    assert!(matches!(again, Err(StoreError::Exists(ref n)) if n == "x"), "{again:?}");
    assert_eq!(store.list().unwrap()[0].sha256, "s1", "the first stays");
}

fn host_modules_must_exist(store: Arc<dyn ModuleStore>) {
    let missing = store.insert(&record("user", "s1", &["ghost"]), b"one", None);
    assert!(
        matches!(missing, Err(StoreError::MissingHostModule(ref h)) if h == "ghost"),
        "{missing:?}"
    );
    assert!(store.list().unwrap().is_empty(), "nothing half-stored");
    assert_eq!(store.wasm("s1").unwrap(), None, "no orphan binary");
}

fn a_module_with_dependents_cannot_be_removed(store: Arc<dyn ModuleStore>) {
    store.insert(&record("lib", "s1", &[]), b"one", None).unwrap();
    store.insert(&record("app1", "s2", &["lib"]), b"two", None).unwrap();
    store.insert(&record("app2", "s3", &["lib"]), b"three", None).unwrap();
    let refused = store.remove("lib");
    match refused {
        Err(StoreError::InUse { name, dependents }) => {
            assert_eq!(name, "lib");
            assert_eq!(dependents, ["app1", "app2"]);
        }
        other => panic!("expected in use, got {other:?}"),
    }
    store.remove("app1").unwrap();
    store.remove("app2").unwrap();
    store.remove("lib").unwrap();
    assert!(matches!(store.remove("lib"), Err(StoreError::NotFound(_))));
    assert!(store.list().unwrap().is_empty());
}

fn a_shared_binary_outlives_one_of_its_records(store: Arc<dyn ModuleStore>) {
    store.insert(&record("one", "same", &[]), b"bytes", None).unwrap();
    store.insert(&record("two", "same", &[]), b"bytes", None).unwrap();
    store.remove("one").unwrap();
    assert_eq!(store.wasm("same").unwrap().as_deref(), Some(&b"bytes"[..]));
    store.remove("two").unwrap();
    assert_eq!(store.wasm("same").unwrap(), None, "the last record takes it");
}

fn artifacts_are_kept_per_engine_and_go_with_their_binary(store: Arc<dyn ModuleStore>) {
    store.insert(&record("a", "aa", &[]), b"abc", None).unwrap();
    store.put_artifact("aa", "engine1", b"code").unwrap();
    assert_eq!(store.artifact("aa", "engine1").unwrap().unwrap(), b"code");
    assert!(store.artifact("aa", "engine2").unwrap().is_none());
    store.remove("a").unwrap();
    assert!(
        store.artifact("aa", "engine1").unwrap().is_none(),
        "artifacts go with their binary"
    );
    store.put_artifact("aa", "engine1", b"code").unwrap();
    assert!(
        store.artifact("aa", "engine1").unwrap().is_none(),
        "no artifact for a deleted binary"
    );
}

fn of_many_concurrent_inserts_of_one_name_exactly_one_wins(store: Arc<dyn ModuleStore>) {
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || store.insert(&record("contested", &format!("s{i}"), &[]), b"x", None))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Exists(_))))
        .count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
    assert_eq!(store.list().unwrap().len(), 1);
}

fn a_removal_racing_an_insert_that_needs_it_leaves_the_registry_whole(store: Arc<dyn ModuleStore>) {
    for round in 0..20 {
        let host = format!("host{round}");
        store.insert(&record(&host, "shared", &[]), b"bytes", None).unwrap();
        let (a, b) = (store.clone(), store.clone());
        let user = format!("user{round}");
        let host2 = host.clone();
        let insert = std::thread::spawn(move || a.insert(&record(&user, "shared", &[&host2]), b"bytes", None));
        let remove = std::thread::spawn(move || b.remove(&host));
        let (inserted, removed) = (insert.join().unwrap(), remove.join().unwrap());
        // Either order is fine; a registry with a dangling host, or a record
        // whose binary is gone, is not.
        assert!(
            inserted.is_ok() != removed.is_ok(),
            "exactly one of them wins: {inserted:?} {removed:?}"
        );
        let records = store.list().unwrap();
        for r in &records {
            for h in &r.host_modules {
                assert!(
                    records.iter().any(|o| &o.name == h),
                    "dangling host {h} in round {round}"
                );
            }
            assert!(store.wasm(&r.sha256).unwrap().is_some(), "binary of {} gone", r.name);
        }
        for r in records {
            if r.name.starts_with("user") {
                store.remove(&r.name).unwrap();
            }
        }
        let _ = store.remove(&format!("host{round}"));
    }
}

fn the_store_answers_a_check(store: Arc<dyn ModuleStore>) {
    store.check().unwrap();
}

/// Two servers (nodes) started at once on one fresh database both come up
/// (the schema is applied once, under the migrator's lock), and a module
/// registered through one is listed and runs on a node started after it.
fn a_token_quota_holds_under_concurrent_inserts(store: Arc<dyn ModuleStore>) {
    let quota = TokenQuota {
        max_modules: 3,
        max_bytes: 1 << 20,
    };
    // Another token's module counts for nothing here.
    let mut other = record("theirs", "s0", &[]);
    other.owner = Some("token-b".into());
    store.insert(&other, b"x", Some(&quota)).unwrap();
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.insert(&record(&format!("m{i}"), &format!("s{i}"), &[]), b"x", Some(&quota))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<&String> = results
        .iter()
        .filter_map(|r| match r {
            Err(StoreError::QuotaExceeded(why)) => Some(why),
            _ => None,
        })
        .collect();
    assert_eq!((won, refused.len()), (3, 7), "{results:?}");
    assert!(
        refused[0].contains("its maximum (--max-modules-per-token)"),
        "{}",
        refused[0]
    );
    let mine = store
        .list()
        .unwrap()
        .iter()
        .filter(|r| r.owner.as_deref() == Some("token-a"))
        .count();
    assert_eq!(mine, 3);
    // Bytes count too.
    let tight = TokenQuota {
        max_modules: 100,
        max_bytes: 3 * 3 + 2,
    };
    let over = store.insert(&record("big", "s9", &[]), b"x", Some(&tight));
    assert!(
        matches!(over, Err(StoreError::QuotaExceeded(ref why)) if why.contains("--max-bytes-per-token")),
        "{over:?}"
    );
}
