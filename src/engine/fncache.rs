//! The store behind wasmtime's incremental compilation cache.
//!
//! Wasmtime compiles about eight functions for a one-function module: the
//! function, and trampolines that depend only on signatures, identical
//! across modules. With this cache each such function is compiled once per
//! process and found again by a hash of its input; measured with
//! `examples/cold_compile.rs`, compiling a never-seen tiny module took 30 to
//! 48% less time (docs/BENCHMARKS.md). The store is an LRU bounded in
//! entries and in bytes, so a flood of unique modules, or of huge
//! functions, cannot grow it without end.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Compiled functions kept.
const ENTRIES: usize = 8192;

/// Bytes of compiled functions kept (keys and values): a few huge
/// functions, compiled once each, must not hold gigabytes either.
const BYTES: usize = 128 << 20;

/// Compiled functions by the hash wasmtime computes of their input.
#[derive(Debug)]
pub(crate) struct FunctionCache(Mutex<Kept>);

/// The functions, and the bytes they take.
#[derive(Debug)]
struct Kept {
    entries: LruCache<Vec<u8>, Arc<[u8]>>,
    bytes: usize,
    /// At most this many bytes are kept ([`BYTES`] outside tests).
    budget: usize,
}

impl FunctionCache {
    pub(crate) fn new() -> Self {
        Self::with_budget(ENTRIES, BYTES)
    }

    fn with_budget(entries: usize, budget: usize) -> Self {
        FunctionCache(Mutex::new(Kept {
            entries: LruCache::new(NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN)),
            bytes: 0,
            budget,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entry = self.lock().entries.get(key).cloned()?;
        Some(Cow::Owned(entry.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        let mut kept = self.lock();
        if size > kept.budget {
            return false;
        }
        // `push` hands back what it evicted or replaced, so the count of
        // bytes stays exact.
        if let Some((old_key, old_value)) = kept.entries.push(key.to_vec(), value.into()) {
            kept.bytes -= old_key.len() + old_value.len();
        }
        kept.bytes += size;
        while kept.bytes > kept.budget {
            let Some((old_key, old_value)) = kept.entries.pop_lru() else {
                break;
            };
            kept.bytes -= old_key.len() + old_value.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    /// The cache holds no more bytes than its budget, dropping the least
    /// recently used functions first, and refuses one larger than it all.
    #[test]
    fn the_cache_keeps_to_its_byte_budget() {
        let cache = FunctionCache::with_budget(100, 1000);
        for n in 0..10u8 {
            assert!(cache.insert(&[n], vec![n; 299]));
            assert!(cache.lock().bytes <= 1000, "{n}");
        }
        // 300 bytes each: the last three are kept.
        assert_eq!(cache.lock().entries.len(), 3);
        assert_eq!(cache.lock().bytes, 900);
        assert!(cache.get(&[9]).is_some() && cache.get(&[7]).is_some());
        assert!(cache.get(&[6]).is_none());
        // Replacing an entry counts its bytes once.
        assert!(cache.insert(&[9], vec![1; 99]));
        assert_eq!(cache.lock().bytes, 700);
        assert!(!cache.insert(&[42], vec![0; 1000]));
        assert!(cache.get(&[42]).is_none());
    }

    /// The entry bound still holds for small functions.
    #[test]
    fn the_cache_keeps_to_its_entry_count() {
        let cache = FunctionCache::with_budget(2, 1 << 20);
        for n in 0..5u8 {
            assert!(cache.insert(&[n], vec![n; 10]));
        }
        assert_eq!(cache.lock().entries.len(), 2);
        assert_eq!(cache.lock().bytes, 22);
    }
}
