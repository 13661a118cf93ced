//! Where a never-seen module's time goes: compiles 1,450 tiny unique
//! modules (the benchmark's `double` with a unique constant) under several
//! engine configurations, one at a time on one thread, and prints the mean
//! time per compile and per compile + instantiate + call.
//!
//! `cargo run --release --example cold_compile`. With `PROFILE=1` it runs
//! only one configuration, short enough for
//! `valgrind --tool=callgrind`. Figures are in docs/BENCHMARKS.md.

use std::time::Instant;

use wasmtime::{Config, Engine, Instance, Module, OptLevel, Store};

fn module(i: u32) -> Vec<u8> {
    wat::parse_str(format!(
        "(module (func (export \"double\") (param i32) (result i32) (i32.add (i32.mul (local.get 0) (i32.const 2)) (i32.const {i}))))"
    ))
    .unwrap()
}

fn base() -> Config {
    let mut c = Config::new();
    c.consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true);
    c
}

fn run(name: &str, config: Config, n: u32) {
    // The first 50 compiles warm up allocator and caches and are not timed.
    let engine = Engine::new(&config).unwrap();
    let mods: Vec<Vec<u8>> = (0..n).map(|i| module(i + 1_000_000 * name.len() as u32)).collect();
    for m in mods.iter().take(50) {
        let _ = Module::from_binary(&engine, m).unwrap();
    }
    let t = Instant::now();
    let mut keep = Vec::new();
    for m in &mods[50..] {
        keep.push(Module::from_binary(&engine, m).unwrap());
        if keep.len() > 100 {
            keep.clear();
        }
    }
    let compile = t.elapsed().as_secs_f64() / (n - 50) as f64 * 1e6;
    // full: compile + instantiate + call
    let t = Instant::now();
    for m in &mods[50..] {
        let module = Module::from_binary(&engine, m).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_fuel(1_000_000).unwrap();
        store.set_epoch_deadline(1000);
        let inst = Instance::new(&mut store, &module, &[]).unwrap();
        let f = inst.get_typed_func::<i32, i32>(&mut store, "double").unwrap();
        assert!(f.call(&mut store, 2).unwrap() > 0);
    }
    let full = t.elapsed().as_secs_f64() / (n - 50) as f64 * 1e6;
    println!("{name:<40} compile {compile:7.1} us   compile+instantiate+call {full:7.1} us");
}

/// An in-memory store for wasmtime's incremental compilation cache: it keeps
/// each compiled function by a hash of its input, so functions identical
/// across modules (trampolines for the same signature) compile once.
#[derive(Debug, Default)]
struct MemoryCacheStore(std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>);

impl wasmtime::CacheStore for MemoryCacheStore {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.0.lock().unwrap().get(key).cloned().map(std::borrow::Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.0.lock().unwrap().insert(key.to_vec(), value);
        true
    }
}

fn main() {
    if std::env::var_os("PROFILE").is_some() {
        let mut c = base();
        c.parallel_compilation(false);
        run("native, no parallel", c, 300);
        return;
    }
    let n = 1500;
    run("native (our settings until 2026-11-30)", base(), n);
    let mut c = base();
    c.parallel_compilation(false);
    run("native, no parallel", c, n);
    let mut c = base();
    c.parallel_compilation(false)
        .generate_address_map(false)
        .debug_info(false);
    run("native, no parallel, no addr map", c, n);
    let mut c = base();
    c.parallel_compilation(false).cranelift_opt_level(OptLevel::None);
    run("native, no parallel, opt none", c, n);
    let mut c = base();
    c.native_unwind_info(false);
    run("native, no unwind info", c, n);
    let mut c = base();
    c.enable_incremental_compilation(std::sync::Arc::new(MemoryCacheStore::default()))
        .unwrap();
    run("native, incremental cache (ours now)", c, n);
    let mut c = base();
    c.parallel_compilation(false)
        .enable_incremental_compilation(std::sync::Arc::new(MemoryCacheStore::default()))
        .unwrap();
    run("native, no parallel, incremental cache", c, n);
}
