//! The store behind wasmtime's incremental compilation cache.
//!
//! Wasmtime compiles about eight functions for a one-function module: the
//! function, and trampolines that depend only on signatures, identical
//! across modules. With this cache each such function is compiled once per
//! process and found again by a hash of its input; measured with
//! `examples/cold_compile.rs`, compiling a never-seen tiny module took 30 to
//! 48% less time (docs/BENCHMARKS.md). The store is an LRU bounded in
//! entries, so a flood of unique modules cannot grow it without end.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Compiled functions kept.
const ENTRIES: usize = 8192;

/// Compiled functions by the hash wasmtime computes of their input.
#[derive(Debug)]
pub(crate) struct FunctionCache(Mutex<LruCache<Vec<u8>, Arc<[u8]>>>);

impl FunctionCache {
    pub(crate) fn new() -> Self {
        FunctionCache(Mutex::new(LruCache::new(
            NonZeroUsize::new(ENTRIES).unwrap_or(NonZeroUsize::MIN),
        )))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entry = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()?;
        Some(Cow::Owned(entry.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key.to_vec(), value.into());
        true
    }
}
