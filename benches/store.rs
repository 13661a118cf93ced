//! The module store's operations, timed: `cargo bench --bench store`.
//!
//! The same calls on the embedded redb file and on PostgreSQL (`BENCH_PG`,
//! default the local server; a schema of its own, dropped after), through
//! the `ModuleStore` trait as the registry makes them (sqlx's pool, blocking
//! on the runtime), beside the driver floor: the same record lookup as a
//! prepared statement on one bare tokio-postgres connection. This is how the
//! client library was chosen (docs/DESIGN.md): what the pool and sqlx add
//! over the wire protocol's own round trip.

use std::sync::Arc;
use std::time::Instant;

use wasm_exec_api::registry::{ModuleRecord, ModuleStore, PgStore, RedbStore, TokenQuota};

const LOOKUPS: usize = 5_000;
const INSERTS: usize = 500;

fn record(i: usize) -> (ModuleRecord, Vec<u8>) {
    let wasm = format!("binary {i}").into_bytes();
    let record = ModuleRecord {
        name: format!("m{i}"),
        sha256: format!("{i:064x}"),
        size: wasm.len() as u64,
        host_modules: Vec::new(),
        created: "2026-11-30T00:00:00Z".into(),
        owner: Some("bench".into()),
    };
    (record, wasm)
}

/// Microseconds per call of `f`, over `n` calls.
fn per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn measure(name: &str, store: Arc<dyn ModuleStore>) -> Vec<(String, f64)> {
    let quota = TokenQuota {
        max_modules: usize::MAX,
        max_bytes: u64::MAX,
    };
    let insert = per_call(INSERTS, |i| {
        let (record, wasm) = record(i);
        store.insert(&record, &wasm, Some(&quota)).unwrap();
    });
    let lookup = per_call(LOOKUPS, |i| {
        assert!(store.record(&format!("m{}", i % INSERTS)).unwrap().is_some());
    });
    let version = store.version().unwrap();
    let sync = per_call(LOOKUPS, |_| {
        store.changes_since(version).unwrap();
    });
    let list = per_call(50, |_| {
        assert_eq!(store.list().unwrap().len(), INSERTS);
    });
    vec![
        (format!("{name}: insert (quota checked)"), insert),
        (format!("{name}: record lookup"), lookup),
        (format!("{name}: changes since (nothing new)"), sync),
        (format!("{name}: list {INSERTS} records"), list),
    ]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let schema = format!("bench_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let mut rows = measure(
        "redb file",
        Arc::new(RedbStore::open(&dir.path().join("registry.redb"), 64 << 20).unwrap()),
    );

    let (pg, client) = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at BENCH_PG");
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let url = format!("{admin}?options=-c%20search_path%3D{schema}");
        (PgStore::connect(&url).await.unwrap(), client)
    });
    rows.extend(measure("PostgreSQL via sqlx pool", Arc::new(pg)));

    // The floor: one connection, one prepared statement, the same query
    // shape as the store's lookup (one row with its host list).
    let floor = runtime.block_on(async {
        let statement = client
            .prepare(&format!(
                "SELECT m.name, m.sha256, m.size, m.created, m.owner,
                        COALESCE(array_agg(h.host ORDER BY h.position) FILTER (WHERE h.host IS NOT NULL), '{{}}') AS hosts
                 FROM {schema}.modules m LEFT JOIN {schema}.module_hosts h ON h.name = m.name
                 WHERE m.name = $1 GROUP BY m.name"
            ))
            .await
            .unwrap();
        let start = Instant::now();
        for i in 0..LOOKUPS {
            let name = format!("m{}", i % INSERTS);
            assert!(client.query_opt(&statement, &[&name]).await.unwrap().is_some());
        }
        start.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64
    });
    rows.push((
        "PostgreSQL, bare tokio-postgres connection: record lookup".into(),
        floor,
    ));
    // sqlx's pool from async code, set as the store sets it: what the
    // store's blocking bridge adds.
    let pooled = runtime.block_on(async {
        let url = format!("{admin}?options=-c%20search_path%3D{schema}");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .test_before_acquire(false)
            .connect(&url)
            .await
            .unwrap();
        let query = "SELECT m.name, m.sha256, m.size, m.created, m.owner,
                COALESCE(array_agg(h.host ORDER BY h.position) FILTER (WHERE h.host IS NOT NULL), '{}') AS hosts
             FROM modules m LEFT JOIN module_hosts h ON h.name = m.name
             WHERE m.name = $1 GROUP BY m.name";
        let start = Instant::now();
        for i in 0..LOOKUPS {
            let row = sqlx::query(query)
                .bind(format!("m{}", i % INSERTS))
                .fetch_optional(&pool)
                .await
                .unwrap();
            assert!(row.is_some());
        }
        start.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64
    });
    rows.push(("PostgreSQL, sqlx pool from async code: record lookup".into(), pooled));
    runtime.block_on(async {
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });

    println!();
    println!("| operation | µs per call |");
    println!("|---|---:|");
    for (name, us) in rows {
        println!("| {name} | {us:.1} |");
    }
}
