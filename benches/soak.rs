//! The soak: `cargo bench --bench soak` (`SOAK_SECONDS`, default 180).
//!
//! Starts the release server on loopback and runs mixed load against it for
//! a bounded time: healthy calls (inline and registered), registrations,
//! hostile modules (spinning, memory bombs, traps, garbage), and instance
//! churn. Prints a line every 10 s with the server's RSS and the healthy
//! calls' latency, then a summary. It fails (exit 1) if any healthy request
//! failed or if RSS at the end grew more than 20% over the first sample
//! taken after warm-up.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

#[path = "../tests/api/fixtures/origin.rs"]
mod origin;
use origin::DOUBLE_HEX;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Default)]
struct Counters {
    healthy_ok: AtomicU64,
    healthy_failed: AtomicU64,
    registrations: AtomicU64,
    hostile: AtomicU64,
    hostile_unexpected: AtomicU64,
    instance_calls: AtomicU64,
    instance_failed: AtomicU64,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let healthy_failed = runtime.block_on(soak(seconds));
    std::process::exit(if healthy_failed { 1 } else { 0 });
}

async fn soak(seconds: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_wasm-exec-api"))
        // Small compile and store caches fill during warm-up, so RSS growth
        // after it means a leak rather than a cache still filling.
        .args([
            "--port",
            &port.to_string(),
            "--cache-entries",
            "64",
            "--store-cache-bytes",
            "2097152",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let server = Server(child);
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    client
        .post(format!("{base}/register"))
        .json(&json!({"module_name": "double", "wasm_hex": DOUBLE_HEX}))
        .send()
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let mut tasks = Vec::new();

    // Healthy clients: the thing that must never fail.
    for worker in 0..4 {
        let (client, base, stop, counters, latencies) = (
            client.clone(),
            base.clone(),
            stop.clone(),
            counters.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let (path, body) = if (i + worker) % 2 == 0 {
                    (
                        "/execute",
                        json!({"module_name": "double", "function_name": "double", "params": [i]}),
                    )
                } else {
                    (
                        "/",
                        json!({"wasm_hex": DOUBLE_HEX, "function_name": "double", "params": [i]}),
                    )
                };
                let started = Instant::now();
                let ok = match client.post(format!("{base}{path}")).json(&body).send().await {
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .map(|v| v["results"] == json!([2 * i]))
                        .unwrap_or(false),
                    _ => false,
                };
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if ok {
                    counters.healthy_ok.fetch_add(1, Ordering::Relaxed);
                    latencies.lock().await.push(ms);
                } else {
                    counters.healthy_failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    // Registrations (unless SOAK_REGISTER=0): a new module every 200 ms (each compiled, stored, and
    // its artifact kept, so the store legitimately grows).
    if std::env::var("SOAK_REGISTER").as_deref() != Ok("0") {
        let (client, base, stop, counters) = (client.clone(), base.clone(), stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let wat = format!(r#"(module (func (export "n") (result i32) i32.const {i}))"#);
                let body = json!({"module_name": format!("soak{i}"), "wat": wat});
                if let Ok(r) = client.post(format!("{base}/register")).json(&body).send().await
                    && r.status().as_u16() == 201
                {
                    counters.registrations.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Hostile modules, one after another.
    {
        let (client, base, stop, counters) = (client.clone(), base.clone(), stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let corpus = [
                json!({"wat": "(module (func (export \"f\") (loop (br 0))))", "function_name": "f", "limits": {"timeout_ms": 200}}),
                json!({"wat": "(module (memory 1) (func (export \"f\") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))", "function_name": "f"}),
                json!({"wat": "(module (func $f (export \"f\") (call $f)))", "function_name": "f"}),
                json!({"wasm_hex": "0061736d01000000ffff", "function_name": "f"}),
                json!({"wat": "(module (memory 40000) (func (export \"f\")))", "function_name": "f"}),
            ];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = &corpus[i % corpus.len()];
                match client.post(format!("{base}/")).json(body).send().await {
                    Ok(r) if r.status().is_client_error() => {}
                    _ => {
                        counters.hostile_unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                counters.hostile.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    // Instance churn: create, call ten times, delete.
    {
        let (client, base, stop, counters) = (client.clone(), base.clone(), stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let wat = r#"(module (memory 1) (global $n (mut i32) (i32.const 0))
                (func (export "inc") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;
            while !stop.load(Ordering::Relaxed) {
                let created: Value = match client.post(format!("{base}/instances")).json(&json!({"wat": wat})).send().await {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                let Some(id) = created["id"].as_str() else {
                    counters.instance_failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                for expected in 1..=10 {
                    let body = json!({"function_name": "inc"});
                    let ok = match client.post(format!("{base}/instances/{id}/call")).json(&body).send().await {
                        Ok(r) => r.json::<Value>().await.map(|v| v["results"] == json!([expected])).unwrap_or(false),
                        Err(_) => false,
                    };
                    counters.instance_calls.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        counters.instance_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = client.delete(format!("{base}/instances/{id}")).send().await;
            }
        }));
    }

    println!("soak: {seconds} s of mixed load against the release server on loopback");
    println!();
    println!(
        "| t (s) | RSS MiB | healthy ok | healthy failed | healthy p50 ms | healthy p99 ms | registrations | hostile | instance calls |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let started = Instant::now();
    let mut baseline_rss = None;
    let mut last_rss = 0.0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(seconds).saturating_sub(started.elapsed())))
            .await;
        let rss = rss_mib(pid);
        let elapsed = started.elapsed().as_secs();
        // The first sample after 30 s of warm-up is the leak baseline.
        if baseline_rss.is_none() && elapsed >= 30 {
            baseline_rss = Some(rss);
        }
        last_rss = rss;
        let mut window = std::mem::take(&mut *latencies.lock().await);
        window.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "| {elapsed} | {rss:.1} | {} | {} | {:.2} | {:.2} | {} | {} | {} |",
            counters.healthy_ok.load(Ordering::Relaxed),
            counters.healthy_failed.load(Ordering::Relaxed),
            percentile(&window, 0.5),
            percentile(&window, 0.99),
            counters.registrations.load(Ordering::Relaxed),
            counters.hostile.load(Ordering::Relaxed),
            counters.instance_calls.load(Ordering::Relaxed),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let failed = counters.healthy_failed.load(Ordering::Relaxed);
    let growth = baseline_rss.map(|b| last_rss / b - 1.0);
    println!();
    println!(
        "healthy requests: {} ok, {failed} failed; hostile requests: {} ({} not answered with a 4xx); instance calls: {} ({} failed)",
        counters.healthy_ok.load(Ordering::Relaxed),
        counters.hostile.load(Ordering::Relaxed),
        counters.hostile_unexpected.load(Ordering::Relaxed),
        counters.instance_calls.load(Ordering::Relaxed),
        counters.instance_failed.load(Ordering::Relaxed),
    );
    match growth {
        Some(g) => println!(
            "RSS after warm-up: {:.1} MiB -> {last_rss:.1} MiB ({:+.1}%)",
            baseline_rss.unwrap_or(0.0),
            g * 100.0
        ),
        None => println!("RSS: run for more than 30 s to compare against a warmed-up baseline"),
    }
    let leaked = growth.is_some_and(|g| g > 0.20);
    if leaked {
        println!("FAIL: RSS grew more than 20% after warm-up");
    }
    failed > 0 || counters.instance_failed.load(Ordering::Relaxed) > 0 || leaked
}
