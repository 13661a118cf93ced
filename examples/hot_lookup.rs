//! How many lookups of a hot registered module threads make per second
//! together: `Registry::compiled_now`, the name-to-compiled-module step of
//! every `/execute`, called in a loop by each thread on the same module.
//! That step used to write cache lines every core shares (the index's read
//! lock, the compile cache's mutex and LRU list) and now reads a memo per
//! thread (`per_thread::Memo`). With 1 thread it shows the step's own
//! cost; with N threads on N cores, a step that writes nothing shared
//! makes N times the 1-thread total, and one that does falls short of it.
//!
//! `cargo run --release --example hot_lookup -- [THREADS] [SECONDS]`
//! (default: one thread per core, 3 s). Figures are in docs/BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use wasm_exec_api::config::Settings;
use wasm_exec_api::engine::WasmEngine;
use wasm_exec_api::registry::{ModuleStore, RedbStore, Registry, TokenQuota};

const DOUBLE: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(cores);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);

    let settings = Settings::parse_from(["wasm-exec-api", "--memory", "--tier", "compiled"]);
    let engine = WasmEngine::new(settings.engine())?;
    let store: Arc<dyn ModuleStore> = Arc::new(RedbStore::in_memory()?);
    let quota = TokenQuota {
        max_modules: 1,
        max_bytes: 1 << 20,
    };
    let registry = Registry::open(store, engine.clone(), quota, None).await?;
    let wasm = wat::parse_str(DOUBLE)?;
    let (compiled, _) = engine.compile(wasm.clone()).await?;
    registry
        .insert("double", wasm, *compiled.sha256(), Some(&compiled), Vec::new(), None)
        .await?;
    anyhow::ensure!(registry.compiled_now("double").is_some(), "not compiled in memory");

    for n in [1, threads] {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let counts: Vec<u64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..n)
                .map(|_| {
                    scope.spawn(|| {
                        let mut count = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..1024 {
                                std::hint::black_box(registry.compiled_now(std::hint::black_box("double")));
                            }
                            count += 1024;
                        }
                        count
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let total: u64 = counts.iter().sum();
        let per_second = total as f64 / started.elapsed().as_secs_f64();
        println!("{n} thread(s): {:.1} M lookups/s in all", per_second / 1e6);
    }
    Ok(())
}
