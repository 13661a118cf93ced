//! How many lookups, and calls, of a hot registered module threads make
//! per second together, each thread in a loop on the same module:
//! - `lookup`: `Registry::with_compiled_now`, the name-to-compiled-module
//!   step of every `/execute`. It used to write cache lines every core
//!   shares (the index's read lock, the compile cache's mutex and LRU
//!   list), then read a memo per thread (`per_thread::Memo`) but still
//!   wrote the module's count, and now borrows the module the thread
//!   called last (`engine::hot`);
//! - `call`: that step and the call itself, as `/execute` makes it without
//!   awaiting (`WasmEngine::run_now` of `double(21)` on a kept instance).
//!
//! With 1 thread it shows a step's own cost; with N threads on N cores, a
//! step that writes nothing shared makes N times the 1-thread total, and
//! one that does falls short of it.
//!
//! `cargo run --release --example hot_lookup -- [THREADS] [SECONDS]`
//! (default: one thread per core, 3 s). Figures are in docs/BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use wasm_exec_api::config::Settings;
use wasm_exec_api::engine::{CallSpec, Code, CodeLabel, KeptInstance, Now, WasmEngine, allow_sync_calls};
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
    anyhow::ensure!(
        registry.with_compiled_now("double", |_| ()).is_some(),
        "not compiled in memory"
    );

    let lookup = || {
        std::hint::black_box(registry.with_compiled_now(std::hint::black_box("double"), |m| m.sha256()[0]));
    };
    let params = [serde_json::value::to_raw_value(&21)?];
    let limits = settings.engine().limits;
    let spec = || CallSpec {
        function: Some("double"),
        params: &params,
        writes: &[],
        reads: &[],
        result_as_bytes: false,
        limits,
        armed_at: None,
    };
    // Calls that found no instance kept on their thread to run on, and ran
    // the usual way (on a fiber, leaving one kept): a thread's first call.
    let later = AtomicU64::new(0);
    let call = || {
        registry
            .with_compiled_now("double", |root| {
                let outcome = match engine.run_now(root, &CodeLabel(Some("double")), &spec()) {
                    Now::Done(done) => done,
                    Now::Later(_) => {
                        later.fetch_add(1, Ordering::Relaxed);
                        let code = Code {
                            root: root.clone(),
                            root_label: "module `double`".into(),
                            graph: Vec::new(),
                        };
                        let mut kept = KeptInstance::default();
                        futures::executor::block_on(engine.run(&code, limits, None, spec(), &mut kept))
                    }
                };
                match outcome {
                    Ok(outcome) => assert_eq!(outcome.results[0].get(), "42"),
                    Err(failure) => panic!("the call failed: {:?}", failure.error),
                }
            })
            .expect("compiled");
    };
    let steps: [(&str, &(dyn Fn() + Sync)); 2] = [("lookups", &lookup), ("calls", &call)];
    for (what, step) in steps {
        for n in [1, threads] {
            let per_second = rate(n, seconds, step, settings.max_stack_bytes);
            println!("{n} thread(s): {:.2} M {what}/s in all", per_second / 1e6);
        }
    }
    println!("calls made on a fiber instead: {}", later.load(Ordering::Relaxed));
    Ok(())
}

/// How many times `n` threads make `step` per second together, in
/// `seconds`. Each thread may run guest code synchronously, as the
/// server's workers do.
fn rate(n: usize, seconds: u64, step: &(dyn Fn() + Sync), max_stack: usize) -> f64 {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    allow_sync_calls(max_stack);
                    let mut count = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            step();
                        }
                        count += 256;
                    }
                    count
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}
